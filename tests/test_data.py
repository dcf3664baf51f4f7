"""Loaders on fixtures of each official layout, malformed rows, translations, labels and encoding."""
import json

import pytest
import torch
from conftest import FIX, write

import common

INTENT_SLOT = [("mtop", "mtop"), ("mtod", "mtod"), ("matis", "matis"), ("massive", "massive")]
PAIRS = [("pawsx", "pawsx_xfinal"), ("pawsx", "pawsx_xtreme"), ("xnli", "xnli_v1"), ("xnli", "xnli_xtreme")]


@pytest.mark.parametrize("data,folder", INTENT_SLOT)
def test_intent_slot_loaders_read_every_split(data, folder):
    for lang in ("en", "de"):
        for split in ("train", "dev", "test"):
            exs = common.load_split(data, FIX / folder, lang, split)
            assert len(exs) == (3 if split == "train" else 2)
            for e in exs:
                assert len(e.words) == len(e.slots) > 0 and e.intent
                assert all(t == "O" or t[:2] in ("B-", "I-") for t in e.slots)
    assert common.languages(data, FIX / folder) == ["de"]


def test_known_rows_round_trip():
    mtop = common.load_split("mtop", FIX / "mtop", "en", "train")
    assert mtop[0].words == ["set", "an", "alarm", "for", "7", "am"]
    assert mtop[0].intent == "CREATE_ALARM"  # the IN: prefix is dropped
    assert mtop[0].slots == ["O", "O", "O", "B-DATE_TIME", "I-DATE_TIME", "I-DATE_TIME"]
    assert mtop[1].slots == ["O", "B-RECIPIENT", "O", "B-RECIPIENT"]  # two slots of one type
    assert mtop[2].slots == ["O", "O", "O"]  # empty slot column
    mtod = common.load_split("mtod", FIX / "mtod", "en", "train")
    assert mtod[0].slots[3:] == ["B-datetime", "I-datetime", "I-datetime"] and mtod[0].intent == "alarm/set_alarm"
    matis = common.load_split("matis", FIX / "matis", "en", "train")
    assert matis[1].intent == "atis_flight#atis_airfare"  # multi-intent labels are atomic classes
    assert matis[1].slots[5:7] == ["B-fromloc.city_name", "I-fromloc.city_name"]
    massive = common.load_split("massive", FIX / "massive", "de", "train")
    assert massive[0].words == ["weck", "mich", "um", "sechs", "uhr", "auf"]
    assert massive[0].slots == ["O", "O", "O", "B-time", "I-time", "O"]


def test_parse_annot_utt():
    words, tags = common.parse_annot_utt("wake me at [time : nine am] on [date : friday]", "x")
    assert words == ["wake", "me", "at", "nine", "am", "on", "friday"]
    assert tags == ["O", "O", "O", "B-time", "I-time", "O", "B-date"]
    with pytest.raises(common.DataError, match="unbalanced"):
        common.parse_annot_utt("wake me at [time : nine am", "f.jsonl:3")
    with pytest.raises(common.DataError, match=r"f.jsonl:3: slot \[time nine\]"):
        common.parse_annot_utt("wake me at [time nine]", "f.jsonl:3")


@pytest.mark.parametrize("data,folder", PAIRS)
def test_pair_loaders(data, folder):
    for lang in ("en", "de"):
        for split in ("dev", "test"):
            exs = common.load_split(data, FIX / folder, lang, split)
            assert len(exs) == 2 and all(e.label in common.PAIR_LABELS[data] for e in exs)
    assert len(common.load_split(data, FIX / folder, "en", "train")) == 3


def test_xnli_mt_label_contradictory_is_normalised():
    train = common.load_split("xnli", FIX / "xnli_v1", "en", "train")
    assert {e.label for e in train} <= set(common.PAIR_LABELS["xnli"])
    assert "contradictory" in (FIX / "xnli_v1/XNLI-MT-1.0/multinli/multinli.train.en.tsv").read_text()


# ----------------------------------------------------------------------------- malformed input


def test_mtop_wrong_column_count(tmp_path):
    good = (FIX / "mtop/en/train.txt").read_text().splitlines()
    f = write(tmp_path / "en/train.txt", "\n".join([good[0], "1\tIN:X\t\tonly four"]) + "\n")
    with pytest.raises(common.DataError, match=rf"{f}:2: expected 8 tab-separated columns .*found 4"):
        common.read_mtop(f)


def test_mtop_slot_outside_utterance(tmp_path):
    row = (FIX / "mtop/en/train.txt").read_text().splitlines()[0].split("\t")
    row[2] = "13:99:SL:DATE_TIME"
    f = write(tmp_path / "train.txt", "\t".join(row) + "\n")
    with pytest.raises(common.DataError, match=rf"{f}:1: slot '13:99:SL:DATE_TIME' lies outside the utterance"):
        common.read_mtop(f)


def test_mtop_seven_column_copies_are_read(tmp_path):
    row = (FIX / "mtop/en/train.txt").read_text().splitlines()[0].split("\t")
    f = write(tmp_path / "train.txt", "\t".join(row[1:]) + "\n")
    assert common.read_mtop(f)[0].slots[3] == "B-DATE_TIME"


def test_mtod_wrong_column_count(tmp_path):
    f = write(tmp_path / "train-en.conllu", "# intent: a/b\n1\tset\ta/b\tNoLabel\n2\talarm\ta/b\n\n")
    with pytest.raises(common.DataError, match=rf"{f}:3: expected 4 tab-separated columns, found 3"):
        common.read_mtod(f)


def test_matis_count_mismatch_is_skipped_and_reported(tmp_path):
    f = write(tmp_path / "train_FR.tsv", "id\tutterance\tslot_labels\tintent\n"
              "1\tvols de paris\tO O B-fromloc.city_name\tatis_flight\n"
              "2\tvols pour lyon demain\tO O B-toloc.city_name\tatis_flight\n")
    common.DATA_NOTES.clear()
    exs = common.read_matis(f)
    assert [e.id for e in exs] == ["1"]
    assert common.DATA_NOTES == [f"{f}: skipped 1 rows whose token and label counts differ (lines 3)"]
    common.DATA_NOTES.clear()


def test_matis_wrong_column_count(tmp_path):
    f = write(tmp_path / "dev_EN.tsv", "id\tutterance\tslot_labels\tintent\n1\tflights\tO\n")
    with pytest.raises(common.DataError, match=rf"{f}:2: expected 4 tab-separated columns, found 3"):
        common.read_matis(f)


def test_massive_bad_record(tmp_path):
    f = write(tmp_path / "data/en-US.jsonl", json.dumps({"id": "1", "partition": "train", "intent": "a"}) + "\n")
    with pytest.raises(common.DataError, match=rf"{f}:1: not a MASSIVE record .*annot_utt"):
        common.read_massive(f, "train")


def test_pair_bad_label_and_columns(tmp_path):
    f = write(tmp_path / "dev-de.tsv", "a\tb\t1\nc\td\tmaybe\n")
    with pytest.raises(common.DataError, match=rf"{f}:2: label 'maybe'"):
        common.read_pairs(f, 0, 1, 2, False, "pawsx")
    f = write(tmp_path / "test-de.tsv", "a\tb\n")
    with pytest.raises(common.DataError, match="hide their labels"):
        common.read_pairs(f, 0, 1, 2, False, "pawsx")


def test_missing_dataset_names_files_and_source(tmp_path):
    with pytest.raises(common.DataError, match=r"expects <data_dir>/<lang>/\{train,eval,test\}.txt.*mtop.zip"):
        common.resolve_langs("th", "mtop", tmp_path / "nothing")
    with pytest.raises(common.DataError, match="train_DE.tsv: file not found.*LDC2021T04"):
        common.load_split("matis", tmp_path, "de", "train")


# ----------------------------------------------------------------------------- translations


def test_translations_by_id_and_by_line():
    en = common.load_split("massive", FIX / "massive", "en", "train")
    assert common.load_translations("massive", FIX / "massive", "de", en)[0] == "weck mich um sechs uhr auf"
    en = common.load_split("matis", FIX / "matis", "en", "train")  # translate-train/de.txt wins over ids
    lines = (FIX / "matis/translate-train/de.txt").read_text(encoding="utf-8").splitlines()
    assert common.load_translations("matis", FIX / "matis", "de", en) == lines


def test_translation_count_mismatch_names_both_files(tmp_path):
    for f in (FIX / "mtod/en").iterdir():
        write(tmp_path / "en" / f.name, f.read_text(encoding="utf-8"))
    write(tmp_path / "translate-train/de.txt", "nur eine zeile\n")
    en = common.load_split("mtod", tmp_path, "en", "train")
    with pytest.raises(common.DataError, match=r"de.txt: 1 lines, but the English train set has 3 .*train-en.conllu"):
        common.load_translations("mtod", tmp_path, "de", en)


def test_missing_translation_is_none():
    en = common.load_split("massive", FIX / "massive", "en", "train") + [common.Example("nope", ["x"], "a", ["O"])]
    assert common.load_translations("massive", FIX / "massive", "de", en)[-1] is None


# ----------------------------------------------------------------------------- labels and encoding


def test_io_bio_round_trip():
    bio = ["O", "B-time", "I-time", "O", "B-date", "B-place", "I-place"]
    assert [common.strip_bio(t) for t in bio] == ["O", "time", "time", "O", "date", "place", "place"]
    assert common.io_to_bio([common.strip_bio(t) for t in bio]) == bio
    # adjacent spans of one type merge, as in the official evaluation
    assert common.io_to_bio(["B-x", "B-x", "O", "I-x"]) == ["B-x", "I-x", "O", "B-x"]


def test_encode_labels_first_subword_only(tmp_path):
    from transformers import AutoTokenizer
    tok_dir = tmp_path / "tok"
    texts = [" ".join(e.words) for e in common.load_split("massive", FIX / "massive", "en", "train")] * 20
    common.build_tiny(texts, tok_dir, 32, vocab_size=60)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    ex = common.Example("1", ["wake", "me", "up", "at", "six", "am"], "alarm_set", ["O", "O", "O", "O", "B-time", "I-time"])
    labels = common.Labels(["alarm_set"], ["O", "time"])
    it = common.encode(tok, ex, labels, 64)
    enc = tok(ex.words, is_split_into_words=True)
    wids, bare = enc.word_ids(), tok.convert_tokens_to_ids("▁")
    first = [wids.index(w) for w in range(6)]  # a lone '▁' first piece hands the label to the next
    assert it["starts"] == [p + (enc["input_ids"][p] == bare and wids[p + 1] == wids[p]) for p in first]
    assert [it["slot_labels"][p] for p in it["starts"]] == [0, 0, 0, 0, 1, 1]
    assert sum(x != -100 for x in it["slot_labels"]) == 6  # later subwords and specials ignored
    cut = common.encode(tok, ex, labels, 6, "here")  # too long: cut, counted, ends with </s>
    assert len(cut["input_ids"]) == 6 and cut["input_ids"][-1] == tok.sep_token_id and len(cut["starts"]) < 6
    assert "here: 1 inputs longer than --max_len were cut" in common.notes()
    b = common.collate([it, cut], tok.pad_token_id)
    assert b["input_ids"].shape == (2, len(it["input_ids"])) and b["attention_mask"][1].sum() == 6


def test_a_word_split_into_a_lone_boundary_piece_is_labelled_on_its_next_piece():
    """XLM-R tokenizes most Thai words as '▁' + the word: the label goes on the word's piece."""
    class Tok:  # ids: <s>=0 </s>=2 unk=3 '▁'=5; word 0 = ['▁', 'x'], word 1 = ['▁y'], word 2 = ['▁']
        unk_token_id = 3

        def convert_tokens_to_ids(self, t):
            return 5 if t == "▁" else 3

        def __call__(self, words, is_split_into_words):
            enc = {"input_ids": [0, 5, 9, 8, 5, 2]}
            enc_wids = [None, 0, 0, 1, 2, None]
            return type("Enc", (dict,), {"word_ids": lambda self: enc_wids})(enc)
    ex = common.Example("1", ["ab", "c", "d"], "i", ["B-t", "O", "B-t"])
    it = common.encode(Tok(), ex, common.Labels(["i"], ["O", "t"]), 64)
    assert it["starts"] == [2, 3, 4]  # word 0 on 'x', not on the lone '▁'; a word that is only '▁' keeps it
    assert [it["slot_labels"][p] for p in it["starts"]] == [1, 0, 1] and it["slot_labels"][1] == -100


def test_labels_from_train_io_and_unknown_eval_labels():
    train = common.load_split("mtop", FIX / "mtop", "en", "train")
    labels = common.Labels.from_train("mtop", train)
    assert labels.slots[0] == "O" and "DATE_TIME" in labels.slots and "B-DATE_TIME" not in labels.slots
    assert common._index(labels.intents, "NEVER_SEEN") == -1


def test_ddp_shards_are_disjoint():
    items = [{"input_ids": [0, i + 5, 2], "intent": 0} for i in range(10)]
    seen = []
    for rank in range(2):
        loader = common.make_loader(items, 2, 1, torch.Generator().manual_seed(3), shard=(rank, 2))
        seen.append([x for b in loader for x in (b["input_ids"][:, 1] - 5).tolist()])
    assert len(seen[0]) == len(seen[1]) == 5 and set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(10))


def test_loaders_leave_the_global_generator_alone():
    """A loader draws its order (and its per-pass base seed) from its own generator, shuffled or
    not: iterating it must not shift the random numbers of the run around it."""
    items = [{"input_ids": [0, i + 5, 2], "intent": 0} for i in range(6)]
    torch.manual_seed(1)
    want = torch.rand(3)
    for generator in (None, torch.Generator().manual_seed(3)):
        torch.manual_seed(1)
        order = [x for b in common.make_loader(items, 2, 1, generator) for x in b["input_ids"][:, 1].tolist()]
        assert torch.equal(torch.rand(3), want)
        assert (order == list(range(5, 11))) == (generator is None)  # in order unless shuffled


def test_task_model_trains_with_dropout_from_the_first_step():
    from transformers import XLMRobertaConfig, XLMRobertaModel
    enc = XLMRobertaModel(XLMRobertaConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32, max_position_embeddings=20)).eval()  # as from_pretrained
    model = common.TaskModel(enc, 3, 2)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts)


def test_dev_halves_keeps_evaluated_pairs_out_of_training(tmp_path):
    import argparse
    for lang in ("en", "de"):  # 12 row-parallel dev pairs; the German ones say which row they are
        write(tmp_path / f"dev-{lang}.tsv", "".join(f"{lang} a{i}\t{lang} b{i}\t{i % 2}\n" for i in range(12)))
    args = argparse.Namespace(data="pawsx", data_dir=str(tmp_path), train_lang="en", limit_train=0, dev_halves=True)
    train, trans, evals = common.load_data(args, ["de"], align=True)
    assert len(train) == 6 and [len(evals[x]["dev"]) for x in ("en", "de")] == [3, 3] and len(evals["de"]["test"]) == 3
    rows = lambda xs: {p.a.split()[1] for p in xs}  # noqa: E731
    assert rows(train) | rows(evals["en"]["dev"]) | rows(evals["en"]["test"]) == {f"a{i}" for i in range(12)}
    assert not rows(train) & (rows(evals["de"]["dev"]) | rows(evals["de"]["test"]))  # no evaluated pair trained on
    assert [t[0].split()[1] for t in trans["de"]] == [p.a.split()[1] for p in train]  # translations of the same rows
    assert rows(evals["de"]["test"]) == rows(evals["en"]["test"])  # the same pairs in every language
    assert any("--dev_halves" in n for n in common.DATA_NOTES)
    write(tmp_path / "dev-de.tsv", "de a\tde b\t0\n")
    with pytest.raises(common.DataError, match="row-parallel"):
        common.load_data(args, ["de"], align=True)
    for lang in ("en", "de"):  # too few pairs for non-empty dev and test quarters: a clear error, not a crash later
        write(tmp_path / f"dev-{lang}.tsv", "".join(f"{lang} a{i}\tb{i}\t0\n" for i in range(3)))
    with pytest.raises(common.DataError, match="has 3 pairs; --dev_halves needs at least 4"):
        common.load_data(args, ["de"], align=True)
