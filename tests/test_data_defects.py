"""Data defects that used to pass silently or crash deep inside a library: each is now a DataError
naming the file (and line), or a counted note in DATA_NOTES. Files are written per test."""
import argparse
import json
import re
from pathlib import Path

import pytest
from conftest import FIX, write

import common

BOM = "\ufeff"
MATIS_HEADER = "id\tutterance\tslot_labels\tintent\n"


def mtop_row(uid, intent, words, slots="", locale="en_XX"):
    """One MTOP line; uid None gives the old 7-column copy (no id column)."""
    spans, pos = [], 0
    for w in words:
        spans.append({"start": pos, "length": len(w)})
        pos += len(w) + 1
    toks = json.dumps({"tokens": words, "tokenSpans": spans}, separators=(",", ":"))
    cols = [uid, "IN:" + intent, slots, " ".join(words), "dom", locale, f"[IN:{intent} ]", toks]
    return "\t".join(cols if uid is not None else cols[1:])


def massive_row(uid, intent, annot, partition="train", locale="en-US"):
    return json.dumps({"id": uid, "locale": locale, "partition": partition, "intent": intent,
                       "utt": annot, "annot_utt": annot}, ensure_ascii=False)


def write_bytes(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run_args(data, data_dir, **kw):
    return argparse.Namespace(**{"data": data, "data_dir": str(data_dir), "train_lang": "en", "limit_train": 0, **kw})


@pytest.fixture(autouse=True)
def clean_notes():
    common.DATA_NOTES.clear()
    yield
    common.DATA_NOTES.clear()


# ----------------------------------------------------------------------------- 1. pairing by id


def test_mtop_seven_column_line_ids_never_pair_across_languages(tmp_path):
    """7-column MTOP has no ids; line numbers are not keys (MTOP is not parallel by line)."""
    for lang, words in (("en", ["set", "alarm"]), ("de", ["wetter", "heute"])):
        write(tmp_path / lang / "train.txt", mtop_row(None, "X", words) + "\n" + mtop_row(None, "Y", words) + "\n")
    en = common.load_split("mtop", tmp_path, "en", "train")
    assert [e.id for e in en] == ["train.txt:1", "train.txt:2"]  # the ids themselves are unchanged
    assert common.load_translations("mtop", tmp_path, "de", en) == [None, None]


def test_id_pairing_with_disagreeing_intents_is_an_error(tmp_path):
    en = write(tmp_path / "en/train.txt", "".join(mtop_row(str(i), "A", ["w", str(i)]) + "\n" for i in range(30)))
    de = write(tmp_path / "de/train.txt", "".join(mtop_row(str(i), "A" if i < 6 else "B", ["v", str(i)]) + "\n"
                                                  for i in range(30)))
    english = common.load_split("mtop", tmp_path, "en", "train")
    with pytest.raises(common.DataError, match=rf"^{en}, {de}: .*intent agrees on only 20.0% of 30 "):
        common.load_translations("mtop", tmp_path, "de", english)


def test_id_pairing_records_the_intent_agreement():
    en = common.load_split("massive", FIX / "massive", "en", "train")
    common.load_translations("massive", FIX / "massive", "de", en)
    assert any("paired 3 of 3 English training examples by id" in n and "intent agrees on 100.0%" in n
               for n in common.DATA_NOTES), common.DATA_NOTES


# ----------------------------------------------------------------------------- 2. alignment without pairs


def test_align_with_zero_translations_says_where_they_are_looked_for(tmp_path):
    write(tmp_path / "data/en-US.jsonl", massive_row("1", "a", "x") + "\n" + massive_row("1", "a", "y", "dev") + "\n"
          + massive_row("1", "a", "z", "test") + "\n")
    write(tmp_path / "data/de-DE.jsonl", massive_row("9", "a", "x", locale="de-DE") + "\n"
          + massive_row("9", "a", "y", "dev", "de-DE") + "\n" + massive_row("9", "a", "z", "test", "de-DE") + "\n")
    with pytest.raises(common.DataError, match=r"^.*: --lang de: no translations .*translate-train/de.txt.*de-DE.jsonl"):
        common.load_data(run_args("massive", tmp_path), ["de"], align=True)
    train, trans, _ = common.load_data(run_args("massive", tmp_path), ["de"], align=False)  # no alignment: fine
    assert len(train) == 1 and trans == {}


def test_align_with_zero_translations_among_the_limit_train_subset(tmp_path):
    for f in (FIX / "massive/data").iterdir():  # German lacks the translation of id 2, the one --limit_train 1 keeps
        rows = f.read_text(encoding="utf-8").splitlines()
        write(tmp_path / "data" / f.name, "\n".join(r for r in rows if not (f.name.startswith("de") and '"id": "2"' in r)))
    with pytest.raises(common.DataError, match=r"--lang de: no translations of the 1 training examples .*full training "
                                               r"set has 2 .*--limit_train"):
        common.load_data(run_args("massive", tmp_path, limit_train=1), ["de"], align=True)


def test_align_without_a_target_train_file_says_where_translations_are_looked_for():
    with pytest.raises(common.DataError, match=r"^.*pawsx_xtreme: --lang de: no translations .*translate-train/de.tsv"
                                               r".*train-de.tsv: file not found"):
        common.load_data(run_args("pawsx", FIX / "pawsx_xtreme"), ["de"], align=True)


# ----------------------------------------------------------------------------- 3. empty splits


def test_empty_mtop_test_file_is_a_load_time_error(tmp_path):
    for f in (FIX / "mtop").glob("*/*.txt"):
        write(tmp_path / f.parent.name / f.name, f.read_text(encoding="utf-8"))
    empty = write(tmp_path / "de/test.txt", "")
    with pytest.raises(common.DataError, match=rf"^{empty}: no examples"):
        common.load_data(run_args("mtop", tmp_path), ["de"], align=False)


def test_matis_header_only_file_is_an_error(tmp_path):
    f = write(tmp_path / "test_DE.tsv", MATIS_HEADER)
    with pytest.raises(common.DataError, match=rf"^{f}: no examples"):
        common.load_split("matis", tmp_path, "de", "test")


def test_massive_missing_partition_is_an_error_naming_the_partitions_found(tmp_path):
    f = write(tmp_path / "data/de-DE.jsonl", massive_row("1", "a", "x", locale="de-DE") + "\n"
              + massive_row("2", "a", "y", "dev", "de-DE") + "\n")
    with pytest.raises(common.DataError, match=rf"^{f}: no examples with partition 'test' "
                                               r"\(partitions found: dev, train\)"):
        common.load_split("massive", tmp_path, "de", "test")


def test_empty_train_split_is_an_error(tmp_path):
    f = write(tmp_path / "train-en.tsv", "\n")
    write(tmp_path / "dev-en.tsv", "a\tb\t0\n")
    write(tmp_path / "test-en.tsv", "a\tb\t0\n")
    with pytest.raises(common.DataError, match=rf"^{f}: no examples"):
        common.load_data(run_args("pawsx", tmp_path), [], align=False)


# ----------------------------------------------------------------------------- 4. byte-order marks


def test_bom_matis_header_is_still_skipped(tmp_path):
    f = write(tmp_path / "train_EN.tsv", BOM + MATIS_HEADER + "1\tflights\tO\tatis_flight\n")
    assert [e.id for e in common.read_matis(f)] == ["1"]


def test_bom_mtop_seven_and_eight_columns(tmp_path):
    f = write(tmp_path / "seven.txt", BOM + mtop_row(None, "CREATE_ALARM", ["set", "alarm"]) + "\n")
    assert common.read_mtop(f)[0].intent == "CREATE_ALARM"
    for lang in ("en", "de"):
        write(tmp_path / lang / "train.txt", (BOM if lang == "de" else "") + mtop_row("11", "A", [lang, "x"]) + "\n")
    en = common.load_split("mtop", tmp_path, "en", "train")
    assert common.load_translations("mtop", tmp_path, "de", en) == ["de x"]


def test_bom_mtod_parses(tmp_path):
    f = write(tmp_path / "train-en.conllu", BOM + "# text: hi\n# intent: a/b\n# slots: \n1\thi\ta/b\tNoLabel\n\n")
    exs = common.read_mtod(f)
    assert len(exs) == 1 and exs[0].words == ["hi"] and exs[0].intent == "a/b"


def test_bom_pairs_sts_and_translations_keep_no_mark(tmp_path):
    f = write(tmp_path / "dev-de.tsv", BOM + "a\tb\t1\n")
    assert common.read_pairs(f, 0, 1, 2, False, "pawsx")[0].a == "a"
    f = write(tmp_path / "XNLI-1.0/xnli.dev.tsv", BOM + "language\tgold_label\tsentence1\tsentence2\nde\tneutral\tp\th\n")
    assert common.read_pairs(f, "sentence1", "sentence2", "gold_label", True, "xnli", "de", "language")[0].a == "p"
    f = write(tmp_path / "korsts/sts-dev.tsv", BOM + "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2\n"
              "g\tf\t2012\t1\t2.5\tone\ttwo\n")
    assert [(p.a, p.key[0]) for p in common.read_sts(f)] == [("one", "g")]
    f = write(tmp_path / "stsbenchmark/sts-dev.csv", BOM + "g\tf\t2012\t1\t2.5\tone\ttwo\n")
    assert common.read_sts(f)[0].key[0] == "g"
    f = write(tmp_path / "stsb-multi-mt/stsb-de-dev.csv", BOM + "eins,zwei,2.5\n")
    assert common.read_sts(f)[0].a == "eins"
    a, b = write(tmp_path / "p.en", BOM + "hello\n"), write(tmp_path / "p.de", BOM + "hallo\n")
    assert common.read_parallel([a, b]) == [("hello", "hallo")]
    f = write(tmp_path / "squad.json", BOM + json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "q", "question": "?", "answers": [{"text": "c", "answer_start": 0}]}]}]}]}))
    assert common.read_squad(f)[0].id == "q"
    for f in (FIX / "mtod/en").iterdir():
        write(tmp_path / "mtod/en" / f.name, f.read_text(encoding="utf-8"))
    en = common.load_split("mtod", tmp_path / "mtod", "en", "train")
    write(tmp_path / "mtod/translate-train/de.txt", BOM + "eins\nzwei\ndrei\n")
    assert common.load_translations("mtod", tmp_path / "mtod", "de", en) == ["eins", "zwei", "drei"]


# ----------------------------------------------------------------------------- 5. bytes that are not UTF-8


BAD = b"abcd\xff rest"  # the bad byte is the 5th character of line 2


def _bad_file(tmp_path, name, first, rest=b"\n"):
    return write_bytes(tmp_path / name, first.encode() + b"\n" + BAD + rest)


@pytest.mark.parametrize("name,first,read", [
    ("en/train.txt", mtop_row("1", "A", ["x"]), common.read_mtop),
    ("train-en.conllu", "# intent: a/b", common.read_mtod),
    ("train_EN.tsv", MATIS_HEADER.strip(), common.read_matis),
    ("data/en-US.jsonl", massive_row("1", "a", "x"), lambda f: common.read_massive(f, "train")),
    ("dev-de.tsv", "a\tb\t1", lambda f: common.read_pairs(f, 0, 1, 2, False, "pawsx")),
    ("korsts/sts-dev.tsv", "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2", common.read_sts),
    ("stsb-de-dev.csv", "a,b,1.0", common.read_sts),
    ("squad.json", "{", common.read_squad),
    ("pairs.tsv", "a\tb", lambda f: common.read_parallel([f])),
])
def test_non_utf8_byte_names_file_line_and_column(tmp_path, name, first, read):
    f = _bad_file(tmp_path, name, first)
    with pytest.raises(common.DataError, match=rf"^{f}:2: not valid UTF-8 \(byte 0xff at column 5\)"):
        read(f)


def test_non_utf8_in_translations_and_language_listing(tmp_path):
    en = common.load_split("matis", FIX / "matis", "en", "train")
    for f in FIX.joinpath("matis").glob("*.tsv"):
        write(tmp_path / f.name, f.read_text(encoding="utf-8"))
    f = write_bytes(tmp_path / "translate-train/de.txt", b"eins\n" + BAD + b"\ndrei\n")
    with pytest.raises(common.DataError, match=rf"^{f}:2: not valid UTF-8"):
        common.load_translations("matis", tmp_path, "de", en)
    f = write_bytes(tmp_path / "xnli/XNLI-1.0/xnli.test.tsv", b"language\tgold_label\r\nde\tneutral\r\n" + BAD + b"\r\n")
    with pytest.raises(common.DataError, match=rf"^{f}:3: not valid UTF-8 \(byte 0xff at column 5\)"):
        common.languages("xnli", tmp_path / "xnli")


# ----------------------------------------------------------------------------- 6. merged or misaligned annotations


def test_mtod_missing_blank_line_between_utterances(tmp_path):
    f = write(tmp_path / "train-en.conllu", "# text: hi\n# intent: a/b\n# slots: \n1\thi\ta/b\tNoLabel\n"
              "# text: bye\n# intent: c/d\n# slots: \n1\tbye\tc/d\tNoLabel\n\n")
    with pytest.raises(common.DataError, match=rf"^{f}:5: .*blank line"):
        common.read_mtod(f)


def test_mtop_fewer_tokens_than_token_spans(tmp_path):
    cols = mtop_row("1", "A", ["set", "alarm"]).split("\t")
    toks = json.loads(cols[7])
    toks["tokens"] = toks["tokens"][:1]
    cols[7] = json.dumps(toks)
    f = write(tmp_path / "train.txt", mtop_row("0", "A", ["ok"]) + "\n" + "\t".join(cols) + "\n")
    with pytest.raises(common.DataError, match=rf"^{f}:2: 1 tokens but 2 tokenSpans"):
        common.read_mtop(f)


@pytest.mark.parametrize("slot,problem", [("5:9:SL:T", "does not start at a token"),  # 'larm' of 'alarm'
                                          ("4:7:SL:T", "ends inside the token 'alarm'"),
                                          ("3:9:SL:T", "does not start at a token")])  # the space before 'alarm'
def test_mtop_slot_off_token_boundaries(tmp_path, slot, problem):
    f = write(tmp_path / "train.txt", mtop_row("1", "A", ["set", "alarm", "now"], slot) + "\n")
    with pytest.raises(common.DataError, match=rf"^{f}:1: slot '{slot}' {problem}"):
        common.read_mtop(f)


def test_mtop_overlapping_and_repeated_spans_are_counted_later_span_wins(tmp_path):
    rows = [mtop_row("1", "A", ["set", "alarm", "now"], "4:13:SL:X,10:13:SL:Y"),  # overlap: 'now' is I-X then B-Y
            mtop_row("2", "A", ["set", "alarm", "now"], "0:3:SL:X,0:3:SL:X"),  # repeated
            mtop_row("3", "A", ["set", "alarm", "now"], "0:3:SL:X,4:9:SL:Y")]  # adjacent: fine
    f = write(tmp_path / "train.txt", "\n".join(rows) + "\n")
    exs = common.read_mtop(f)
    assert exs[0].slots == ["O", "B-X", "B-Y"] and exs[1].slots == ["B-X", "O", "O"]
    assert exs[2].slots == ["B-X", "B-Y", "O"]
    assert common.DATA_NOTES == [f"{f}: 2 slot spans overlap or repeat an earlier span of their row (lines 1, 2); "
                                 "on shared tokens the later span's tag wins"]


# ----------------------------------------------------------------------------- 7. CLI language lists, notes


def test_lang_list_with_an_empty_item_is_an_error():
    for spec in ("de,,es", "de,", ","):
        with pytest.raises(common.DataError, match=r"--lang .*empty"):
            common.resolve_langs(spec, "massive", FIX / "massive")


def test_unknown_language_lists_those_found():
    with pytest.raises(common.DataError, match=rf"^{FIX / 'massive'}: --lang xx: no xx data here \(found: de, en\)"):
        common.resolve_langs("de,xx", "massive", FIX / "massive")
    assert common.resolve_langs("de-DE", "massive", FIX / "massive") == ["de-DE"]  # a full locale still works
    assert common.resolve_langs("DE", "matis", FIX / "matis") == ["DE"]


def test_xnli_lang_all_on_test_files_only(tmp_path):
    write(tmp_path / "x/test-en.tsv", "a\tb\tneutral\n")
    write(tmp_path / "x/test-de.tsv", "a\tb\tneutral\n")
    assert common.resolve_langs("all", "xnli", tmp_path / "x") == ["de"]
    write(tmp_path / "v1/XNLI-1.0/xnli.dev.tsv", "language\tgold_label\tsentence1\tsentence2\nen\tneutral\ta\tb\n"
          "fr\tneutral\ta\tb\n")
    assert common.resolve_langs("all", "xnli", tmp_path / "v1") == ["fr"]


def test_blank_translate_train_lines_are_missing_and_counted(tmp_path):
    for f in (FIX / "mtod/en").iterdir():
        write(tmp_path / "en" / f.name, f.read_text(encoding="utf-8"))
    en = common.load_split("mtod", tmp_path, "en", "train")
    mt = write(tmp_path / "translate-train/de.txt", "eins\n  \ndrei\n")
    assert common.load_translations("mtod", tmp_path, "de", en) == ["eins", None, "drei"]
    assert common.DATA_NOTES == [f"{mt}: 1 blank lines (missing translations; lines 2)"]
    mt = write(tmp_path / "translate-train/de.tsv", "a\tb\n\nc\td\n")
    pairs = [common.Pair(str(i), "x", "y", "0") for i in range(3)]
    assert common.load_translations("pawsx", tmp_path, "de", pairs) == [("a", "b"), None, ("c", "d")]


def test_eval_labels_never_seen_in_training_are_counted():
    class Tok:  # one token per word
        unk_token_id = 3

        def convert_tokens_to_ids(self, t):
            return 3

        def __call__(self, words, is_split_into_words):
            enc = {"input_ids": [0] + [9] * len(words) + [2]}
            wids = [None, *range(len(words)), None]
            return type("Enc", (dict,), {"word_ids": lambda self: wids})(enc)
    labels = common.Labels(["a"], ["O", "t"])
    ex = [common.Example("1", ["x", "y", "z"], "a", ["B-t", "B-u", "I-u"]),
          common.Example("2", ["x"], "new", ["O"]), common.Example("3", ["x"], "new2", ["B-v"])]
    args = argparse.Namespace(data="mtop", max_len=64)
    common.encode_evals(Tok(), {"de": {"test": ex, "dev": ex[:1]}}, labels, args.max_len, args.data)
    assert common.DATA_NOTES == [
        "mtop/de/test: 2 of 3 examples have an intent never seen in training (new, new2); "
        "3 of 5 words have a slot type never seen in training (u, v)",
        "mtop/de/dev: 2 of 3 words have a slot type never seen in training (u)"]


def test_stsb_multi_mt_trailing_blank_line_is_skipped(tmp_path):
    f = write(tmp_path / "stsb-de-test.csv", "eins,zwei,2.5\n\n")
    assert len(common.read_sts(f)) == 1


# ------------------------------------------------------------ 8. rows that disagree with their file


def _massive(tmp_path, locale, rows):
    return write(tmp_path / "data" / f"{locale}.jsonl", "".join(r + "\n" for r in rows))


def test_massive_row_locale_must_match_the_file(tmp_path):
    f = _massive(tmp_path, "de-DE", [massive_row("1", "a", "x", locale="de-DE"),
                                     massive_row("2", "a", "y", locale="fr-FR")])
    with pytest.raises(common.DataError, match=rf"^{f}:2: locale 'fr-FR', but the file is de-DE"):
        common.load_split("massive", tmp_path, "de", "train")


def test_massive_duplicate_id_names_both_lines(tmp_path):
    rows = [massive_row(i, "a", w, locale="de-DE") for i, w in (("1", "x"), ("2", "y"), ("1", "z"))]
    f = _massive(tmp_path, "de-DE", rows)
    with pytest.raises(common.DataError, match=rf"^{f}:3: id '1' repeats the id of line 1"):
        common.load_split("massive", tmp_path, "de", "train")


def test_massive_unknown_partition_names_the_allowed_ones(tmp_path):
    f = _massive(tmp_path, "en-US", [massive_row("1", "a", "x"),
                                     massive_row("2", "a", "y", "Train")])
    with pytest.raises(common.DataError, match=rf"^{f}:2: partition 'Train' is not one of train, "
                                               r"dev, test"):
        common.load_split("massive", tmp_path, "en", "train")


def test_mtod_merged_utterance_without_blank_line_or_comments(tmp_path):
    first = "# text: hi\n# intent: a/b\n# slots: \n1\thi\ta/b\tNoLabel\n2\tthere\ta/b\tNoLabel\n"
    f = write(tmp_path / "train-en.conllu", first + "1\tbye\ta/b\tNoLabel\n\n")  # restarts at 1
    with pytest.raises(common.DataError, match=rf"^{f}:6: token number 1 inside the utterance that "
                                               r"begins at line 1"):
        common.read_mtod(f)
    f = write(tmp_path / "train-en.conllu", first + "3\tbye\tc/d\tNoLabel\n\n")  # another intent
    with pytest.raises(common.DataError, match=rf"^{f}:6: intent 'c/d' differs from 'a/b' of the "
                                               r"utterance that begins at line 1"):
        common.read_mtod(f)


def test_mtod_merge_in_english_train_names_the_english_file(tmp_path):
    for f in (FIX / "mtod").rglob("*.conllu"):
        write(tmp_path / f.relative_to(FIX / "mtod"), f.read_text(encoding="utf-8"))
    en = tmp_path / "en/train-en.conllu"
    blocks = en.read_text(encoding="utf-8").strip().split("\n\n")
    second = "\n".join(line for line in blocks[1].splitlines() if not line.startswith("#"))
    en.write_text(blocks[0] + "\n" + second + "\n\n" + "\n\n".join(blocks[2:]) + "\n\n",
                  encoding="utf-8")
    write(tmp_path / "translate-train/de.txt", "eins\nzwei\ndrei\n")
    with pytest.raises(common.DataError, match=rf"^{en}:\d+: token number 1 inside the utterance"):
        common.load_data(run_args("mtod", tmp_path), ["de"], align=True)


def test_matis_english_row_skipped_keeps_the_translations_aligned(tmp_path):
    en = write(tmp_path / "train_EN.tsv",
               MATIS_HEADER + "1\tone a\tO O\tx\n2\ttwo b\tO\ty\n3\tthree c\tO O\tz\n")
    for split in ("dev", "test"):
        write(tmp_path / f"{split}_EN.tsv", MATIS_HEADER + "1\tone\tO\tx\n")
    english = common.load_split("matis", tmp_path, "en", "train")
    mt = write(tmp_path / "translate-train/de.txt", "eins\nzwei\ndrei\n")
    assert common.load_translations("matis", tmp_path, "de", english) == ["eins", "drei"]
    assert any(n.startswith(f"{en}: skipped 1 rows") for n in common.DATA_NOTES), common.DATA_NOTES
    assert any(n.startswith(f"{mt}: 1 lines") and "line 3 of" in n
               for n in common.DATA_NOTES), common.DATA_NOTES


def test_empty_utterances_are_counted(tmp_path):
    rows = [massive_row(i, "a", w) for i, w in (("1", "x"), ("2", "  "), ("3", "z"))]
    f = _massive(tmp_path, "en-US", rows)
    assert [e.id for e in common.load_split("massive", tmp_path, "en", "train")] == ["1", "3"]
    assert common.DATA_NOTES == [f"{f}: skipped 1 rows with an empty utterance (lines 2)"]
    common.DATA_NOTES.clear()
    f = write(tmp_path / "dev-de.tsv", "a\tb\t1\n\tb\t0\nc\t \t1\n")
    assert len(common.read_pairs(f, 0, 1, 2, False, "pawsx")) == 3
    assert common.DATA_NOTES == [f"{f}: 2 pairs with an empty sentence (lines 2, 3), kept"]


def test_empty_sts_target_file_is_named(tmp_path):
    write(tmp_path / "stsbenchmark/sts-test.csv", "g\tf\t2012\t1\t2.5\tone\ttwo\n")
    f = write(tmp_path / "stsb-multi-mt/stsb-de-test.csv", "")
    with pytest.raises(common.DataError, match=rf"^{f}: no sentence pairs"):
        common.load_sts(tmp_path, "de", "test")


def test_parallel_empty_line_in_the_second_file_names_it(tmp_path):
    a, b = write(tmp_path / "p.en", "one\ntwo\n"), write(tmp_path / "p.de", "eins\n \n")
    with pytest.raises(common.DataError, match=rf"^{b}:2: empty sentence"):
        common.read_parallel([a, b])
    a, b = write(tmp_path / "p.en", "one\n\n"), write(tmp_path / "p.de", "eins\nzwei\n")
    with pytest.raises(common.DataError, match=rf"^{a}:2: empty sentence"):
        common.read_parallel([a, b])


def test_ear_neighbours_of_the_wrong_shape(tmp_path):
    import ear_push_pull as ear
    for bad in ([["set", "put"]], {"set": "put"}, {"set": [1]}, "set"):
        f = write(tmp_path / "nb.json", json.dumps(bad))
        with pytest.raises(SystemExit, match=r"^error: --neighbours .*nb.json: expected "
                                             r"\{word: \[neighbour, \.\.\.\]\}"):
            ear.load_neighbours(f)
    f = write(tmp_path / "nb.json", json.dumps({"set": ["put"], "the": []}))
    assert ear.load_neighbours(f) == {"set": ["put"]}


# ------------------------------------------------------------- 9. alignment targets, hints


def test_align_with_the_training_language_as_target_is_refused():
    for lang in ("en", "de,en"):
        with pytest.raises(common.DataError, match=r"--lang .*en.*alignment needs a target "
                                                   r"language other than"):
            common.load_task("massive", FIX / "massive", lang, align=True)
    assert common.load_task("massive", FIX / "massive", "en", align=False)[0] == ["en"]
    en = common.load_split("mtod", FIX / "mtod", "en", "train")
    with pytest.raises(common.DataError, match=r"alignment needs a target language other than"):
        common.load_translations("mtod", FIX / "mtod", "en", en)


def test_missing_translate_train_file_names_no_download(tmp_path):
    for f in (FIX / "mtod/en").iterdir():
        write(tmp_path / "en" / f.name, f.read_text(encoding="utf-8"))
    en = common.load_split("mtod", tmp_path, "en", "train")
    with pytest.raises(common.DataError, match=r"translate-train/es.txt: file not found") as e:
        common.load_translations("mtod", tmp_path, "es", en)
    assert "download.py" not in str(e.value) and "line-aligned" in str(e.value)


def test_two_column_rows_get_the_xtreme_hint_in_test_files_only(tmp_path):
    f = write(tmp_path / "dev-de.tsv", "a\tb\t1\na\tb\n")
    with pytest.raises(common.DataError, match=rf"^{f}:2: expected at least 3 tab-separated "
                                               r"columns, found 2$"):
        common.read_pairs(f, 0, 1, 2, False, "pawsx")
    f = write(tmp_path / "test-de.tsv", "a\tb\n")
    with pytest.raises(common.DataError, match="XTREME's test files hide their labels"):
        common.read_pairs(f, 0, 1, 2, False, "pawsx")


def test_mtop_row_with_an_id_and_a_missing_column_reports_the_count(tmp_path):
    cols = mtop_row("12345", "A", ["set", "alarm"]).split("\t")
    f = write(tmp_path / "train.txt", "\t".join(cols[:5] + cols[6:]) + "\n")  # no locale column
    with pytest.raises(common.DataError, match=rf"^{f}:1: expected 8 tab-separated columns "
                                               r".*found 7"):
        common.read_mtop(f)


@pytest.mark.parametrize("data,folder,inner", [("massive", "massive", "data"),
                                               ("mtod", "mtod", "en")])
def test_data_dir_one_level_too_deep_suggests_the_parent(data, folder, inner):
    deep = FIX / folder / inner
    with pytest.raises(common.DataError, match=rf"found: none.* {FIX / folder} has the {data} "
                                               r"layout"):
        common.resolve_langs("de", data, deep)
    with pytest.raises(common.DataError, match=rf"{FIX / folder} has the {data} layout"):
        common.resolve_langs("all", data, deep)


# ------------------------------------------------------------- 10. encoder folders and --max_len


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny XLM-R-shaped model saved as a local folder (64 + 4 positions: 66 usable subwords)."""
    out = tmp_path_factory.mktemp("enc")
    texts = ["set an alarm for seven am please and play some music"] * 40
    common.load_encoder("tiny", texts, out, 64)
    return out / "tiny_model"


def test_truncated_safetensors_is_a_one_line_error(tiny_folder, tmp_path):
    import shutil
    folder = Path(shutil.copytree(tiny_folder, tmp_path / "m"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SystemExit, match=rf"^error: --model {folder}: {weights} is damaged or "
                                         r"truncated") as e:
        common.load_encoder(str(folder))
    assert "\n" not in str(e.value)


def test_max_len_beyond_the_position_limit_or_too_small_is_refused(tiny_folder):
    with pytest.raises(SystemExit, match=r"--max_len 1000: .* at most 66 subwords"):
        common.load_encoder(str(tiny_folder), max_len=1000)
    assert common.load_encoder(str(tiny_folder), max_len=66)[0].config.max_position_embeddings == 68
    for small in (2, 7):
        with pytest.raises(SystemExit, match=rf"--max_len {small}: too small"):
            common.load_encoder(str(tiny_folder), max_len=small)


def test_model_load_error_points_to_an_existing_readme_section(tiny_folder, tmp_path):
    import re
    import shutil
    folder = Path(shutil.copytree(tiny_folder, tmp_path / "m"))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(SystemExit) as e:
        common.load_encoder(str(folder))
    readme = (Path(common.__file__).parent / "README.md").read_text(encoding="utf-8")
    sections = re.findall(r"^#+ (.+)$", readme, re.M)
    named = re.findall(r"README: '([^']+)'", str(e.value))
    assert all(s in sections for s in named), (named, sections)


# ---------------------------------------------------------------------------- a damaged-input round


MTOD_OK = ("# text: set an alarm\n# intent: alarm/set_alarm\n1\tset\talarm/set_alarm\tNoLabel\n"
           "2\tan\talarm/set_alarm\tNoLabel\n3\talarm\talarm/set_alarm\tB-datetime\n\n")


@pytest.mark.parametrize("row2,message", [
    ("2\tan\talarm/set_alarm\tQ-weird", "slot tag 'Q-weird' is not O, B-<type> or I-<type>"),
    ("3\tan\talarm/set_alarm\tNoLabel", "token number '3', expected 2"),
    ("2\tan\talarm/set_alarm\tNoLabel\n2\tan\talarm/set_alarm\tNoLabel", "token number '2', expected 3"),
    ("x2\tan\talarm/set_alarm\tNoLabel", "token number 'x2', expected 2"),
    ("2\t \talarm/set_alarm\tNoLabel", "an empty token (column 2)")])
def test_mtod_token_rows_are_checked(tmp_path, row2, message):
    """Each of these was read silently: a made-up tag became a slot type, numbering gaps and
    repeats passed, an empty token became a word."""
    lines = MTOD_OK.splitlines()
    text = "\n".join(lines[:3] + [row2] + lines[4:]) + "\n\n"
    f = write(tmp_path / "en/train-en.conllu", text)
    line = 4 + row2.count("\n")  # the row that breaks the rule
    with pytest.raises(common.DataError, match=f"^{re.escape(str(f))}:{line}: {re.escape(message)}"):
        common.read_mtod(f)


@pytest.mark.parametrize("row,message", [
    ("id\tutterance\tslot_labels\tintent", "the header row again"),
    ("3\tshow flights\tO O\t ", "an empty intent (column 4)"),
    ("3\tshow flights\tO Z\tatis_flight", "slot tag 'Z' is not O, B-<type> or I-<type>")])
def test_matis_rows_are_checked(tmp_path, row, message):
    """A repeated header was read as an example (and alignment then blamed the translation file);
    an empty intent became the class ''; labels outside O/B-/I- became slot types."""
    f = write(tmp_path / "train_EN.tsv", MATIS_HEADER + "1\thi there\tO O\tatis_x\n" + row + "\n")
    with pytest.raises(common.DataError, match=f":3: {message[:12]}"):
        common.read_matis(f)


@pytest.mark.parametrize("intent", [None, 7, ""])
def test_massive_intent_must_be_a_name(tmp_path, intent):
    """null and 7 were a TypeError traceback from sorting the labels."""
    f = write(tmp_path / "data/en-US.jsonl", massive_row("1", "alarm_set", "wake me") + "\n"
              + massive_row("2", intent, "wake me up") + "\n")
    with pytest.raises(common.DataError, match=rf"en-US\.jsonl:2: intent {intent!r} is not"):
        common.read_massive(f, "train")


def test_parallel_files_named_twice_or_three_are_refused(tmp_path):
    """X.eng,X.eng aligned English with itself; a,b,c blamed a column count in the first file."""
    a, b = write(tmp_path / "x.eng", "hello\n"), write(tmp_path / "x.deu", "hallo\n")
    with pytest.raises(common.DataError, match="named twice"):
        common.read_parallel([str(a), str(a)])
    with pytest.raises(common.DataError, match="3 files; give two line-aligned files"):
        common.read_parallel([str(a), str(b), str(b)])
    assert common.read_parallel([str(a), str(b)]) == [("hello", "hallo")]


def test_results_json_that_is_a_folder_stops_before_training(tmp_path):
    """With --overwrite it trained, then failed in os.replace: the run was lost."""
    (tmp_path / "results.json").mkdir()
    settings = {"out_dir": str(tmp_path), "overwrite": True}
    with pytest.raises(SystemExit, match="results.json: a folder or a broken link"):
        common.check_out_dir(settings, common.__file__)


def test_english_given_as_the_translations_is_refused(tmp_path):
    """translate-train/en.txt copied over de.txt, or XNLI's English dev file over the German one,
    were read as German."""
    import shutil
    shutil.copytree(FIX / "mtod", tmp_path / "mtod")
    en = common.load_split("mtod", tmp_path / "mtod", "en", "train")
    write(tmp_path / "mtod/translate-train/de.txt", "".join(" ".join(e.words) + "\n" for e in en))
    with pytest.raises(common.DataError, match=r"translate-train/de\.txt: \d+ of \d+ de texts are "
                       "identical to their English source"):
        common.load_data(run_args("mtod", tmp_path / "mtod"), ["de"], True)
    shutil.copytree(FIX / "xnli_xtreme", tmp_path / "xnli")
    (tmp_path / "xnli/dev-de.tsv").write_text((tmp_path / "xnli/dev-en.tsv").read_text())
    with pytest.raises(common.DataError, match=r"dev-de\.tsv: \d+ of \d+ de texts are identical"):
        common.load_data(run_args("xnli", tmp_path / "xnli"), ["de"], False)
    with pytest.raises(common.DataError, match=r"dev-de\.tsv: \d+ of \d+ de texts are identical"):
        common.load_data(run_args("xnli", tmp_path / "xnli", dev_halves=True), ["de"], True)
    en = (tmp_path / "mtod/translate-train/de.txt").read_text().splitlines()  # spacing, case aside
    write(tmp_path / "mtod/translate-train/de.txt", "".join(x.upper() + " \n" for x in en))
    with pytest.raises(common.DataError, match="identical to their English source"):
        common.load_data(run_args("mtod", tmp_path / "mtod"), ["de"], True)


def test_a_split_of_empty_utterances_says_so(tmp_path):
    """'no examples with partition train (partitions found: dev, test, train)' contradicted itself
    when every train row had an empty utterance."""
    f = write(tmp_path / "data/de-DE.jsonl", massive_row("1", "a", "", locale="de-DE") + "\n"
              + massive_row("2", "a", "x", "dev", locale="de-DE") + "\n")
    with pytest.raises(common.DataError, match=r"no examples with partition 'train' that can be "
                       r"used \(skipped 1 rows with an empty utterance"):
        common.load_split("massive", tmp_path, "de", "train")


def test_a_translation_file_in_another_script_is_refused(tmp_path):
    """Thai given as the Spanish translations (and Spanish as the Thai) was read as Spanish."""
    import shutil
    shutil.copytree(FIX / "mtod", tmp_path / "mtod")
    n = len(common.load_split("mtod", tmp_path / "mtod", "en", "train"))
    write(tmp_path / "mtod/translate-train/es.txt", "ตั้งนาฬิกาปลุก\n" * n)
    with pytest.raises(common.DataError, match=r"es\.txt: only 0 of \d+ es texts hold Latin letters"):
        common.load_data(run_args("mtod", tmp_path / "mtod"), ["es"], True)
    write(tmp_path / "mtod/translate-train/th.txt", "pon una alarma\n" * n)
    with pytest.raises(common.DataError, match=r"th\.txt: only 0 of \d+ th texts hold Thai letters"):
        common.load_data(run_args("mtod", tmp_path / "mtod"), ["th"], True)
