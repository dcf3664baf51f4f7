"""ppa_moco_tlm.py: MoCo loss, momentum keys and queue, TLM masking, the QA pieces in common.py, and
both stages end to end with --model tiny (align, then fine-tune the saved encoder), and the
retrieval probe of tools/align_probe.py."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import FIX, ROOT, write

import common
import ppa_moco_tlm as ppa


def test_moco_loss_hand_computed():
    q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # negatives with dot products 0 and -1
    # logits [1, 0, -1] / tau, tau = 1: -log(e / (e + 1 + e^-1))
    assert ppa.moco_loss(q, k, queue, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)))
    # tau = 0.5 doubles every logit: -log(e^2 / (e^2 + 1 + e^-2))
    assert ppa.moco_loss(q, k, queue, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-4)))


def test_momentum_update_and_queue_wrap_around():
    enc, proj = nn.Linear(3, 3), nn.Linear(3, 2)
    keys = ppa.MomentumKeys(enc, proj, size=5, dim=2, momentum=0.9)
    assert all(not p.requires_grad for p in keys.params())  # the optimizer never sees the key side
    before = keys.encoder.weight.clone()
    with torch.no_grad():
        enc.weight.add_(1.0)
    keys.update(enc, proj)
    assert torch.allclose(keys.encoder.weight, 0.9 * before + 0.1 * enc.weight)
    assert torch.allclose(keys.queue.norm(dim=1), torch.ones(5))  # starts as unit vectors
    a, b = torch.full((3, 2), 1.0), torch.full((3, 2), 2.0)
    keys.enqueue(a)
    assert keys.ptr == 3 and (keys.queue[:3] == 1.0).all()
    keys.enqueue(b)  # rows 3, 4 and then 0 (wrapping): FIFO overwrites the oldest
    assert keys.ptr == 1 and (keys.queue[[3, 4, 0]] == 2.0).all() and (keys.queue[1:3] == 1.0).all()
    # a loss through the query side leaves the key encoder without gradients
    loss = ppa.moco_loss(nn.functional.normalize(proj(enc(torch.randn(4, 3))), dim=-1),
                         nn.functional.normalize(keys.proj(keys.encoder(torch.randn(4, 3))), dim=-1), keys.queue)
    loss.backward()
    assert enc.weight.grad is not None and all(p.grad is None for p in keys.params())


def test_tlm_mask_statistics_and_determinism():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 250), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # <s>, </s>
    special[:, 200:] = True  # padding
    inputs, labels = ppa.tlm_mask(ids, special, mask_id=4, vocab_size=1000, prob=0.15, generator=torch.Generator().manual_seed(1))
    sel = labels != -100
    assert not sel[special].any()  # special tokens and padding are never selected
    assert sel[~special].float().mean().item() == pytest.approx(0.15, abs=0.005)
    assert (labels[sel] == ids[sel]).all()
    masked = (inputs[sel] == 4).float().mean().item()
    same = (inputs[sel] == ids[sel]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.01) and same == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)
    assert ((inputs[sel] != 4) & (inputs[sel] != ids[sel])).float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert (inputs[~sel] == ids[~sel]).all()
    again = ppa.tlm_mask(ids, special, 4, 1000, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_tlm_loss_counts_selected_positions_only():
    logits = torch.zeros(1, 3, 7)
    logits[0, 2, 5] = 100.0  # position 2 is not selected, whatever it predicts
    labels = torch.tensor([[3, -100, -100]])
    assert ppa.tlm_loss(logits, labels).item() == pytest.approx(math.log(7))
    assert ppa.tlm_loss(logits, torch.full((1, 3), -100)).item() == 0.0


@pytest.mark.parametrize("arch", ["xlm-roberta", "bert"])
def test_mlm_head_on_selected_positions_equals_the_full_forward(arch):
    """The align stage applies the MLM head to the selected positions only; the loss (and its
    gradient) must be what the model's own full forward gives."""
    from transformers import AutoConfig, AutoModelForMaskedLM
    cfg = AutoConfig.for_model(arch, vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=40)
    torch.manual_seed(0)
    mlm = AutoModelForMaskedLM.from_config(cfg).eval()
    ids = torch.randint(5, 50, (3, 9))
    inputs, labels = ppa.tlm_mask(ids, torch.zeros_like(ids, dtype=torch.bool), 4, 50, 0.3, torch.Generator().manual_seed(0))
    full = ppa.tlm_loss(mlm(input_ids=inputs).logits, labels)
    sel = labels != -100
    part = ppa.tlm_loss(common.mlm_head(mlm)(mlm.base_model(input_ids=inputs).last_hidden_state[sel]), labels[sel])
    assert sel.any() and part.item() == pytest.approx(full.item(), rel=1e-6)


# ---------------------------------------------------------------------------- QA (common.py)


def test_qa_normalisation_and_scores_per_language():
    assert common.qa_normalize("The  Eiffel Tower!", "en") == "eiffel tower"
    assert common.qa_normalize("Der Turm, in Paris.", "de") == "turm in paris"
    assert common.qa_normalize("the tower", "hi") == "the tower"  # no articles removed for hi
    assert common.qa_normalize("北京大学。", "zh") == "北 京 大 学"  # CJK split per character
    assert common.qa_scores("the cat sat", ["A cat sat down"], "en") == pytest.approx((80.0, 0.0))  # P 1, R 2/3
    assert common.qa_scores("Paris", ["London", "paris."], "en") == (100.0, 100.0)  # best over the answers
    assert common.qa_scores("", ["x"], "en") == (0.0, 0.0)


def test_best_span_respects_order_length_and_context():
    offsets = [None, (0, 3), (4, 7), (8, 11), None]
    start = [9.0, 1.0, 5.0, 0.0, 9.0]  # the best start logits are on non-context tokens
    end = [9.0, 0.0, 1.0, 4.0, 9.0]
    assert common.best_span(start, end, offsets) == (9.0, 4, 11)  # tokens 2..3
    assert common.best_span(start, end, offsets, max_answer_len=1) == (6.0, 4, 7)
    assert common.best_span(start, end, [None] * 5) is None


def squad(path, items):
    """Write a SQuAD-format file: items of (id, question, context, answer or None)."""
    qas = {}
    for qid, question, context, answer in items:
        ans = [{"text": answer, "answer_start": context.index(answer)}] if answer else []
        qas.setdefault(context, []).append({"id": qid, "question": question, "answers": ans})
    data = {"data": [{"title": "t", "paragraphs": [{"context": c, "qas": q} for c, q in qas.items()]}]}
    return write(path, json.dumps(data, ensure_ascii=False))


def test_qa_features_find_the_answer_tokens_in_every_window(tmp_path):
    from transformers import AutoTokenizer
    common.load_encoder("tiny", ["the capital of france is paris and it is big"] * 50, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tiny_model")
    context = "filler words here . " * 30 + "the capital of france is paris ."
    ex = common.read_squad(squad(tmp_path / "q.json", [("1", "what is the capital of france ?", context, "paris")]))[0]
    feats = common.qa_features(tok, [ex], max_len=48, stride=16)
    assert len(feats) > 1  # a long context becomes several windows
    hits = [f for f in feats if f["start"]]
    assert hits and all(ex.context[f["offsets"][f["start"]][0]:f["offsets"][f["end"]][1]] == "paris" for f in hits)
    assert all(f["start"] == f["end"] == 0 for f in feats if f not in hits)  # windows without the answer point at <s>


def test_read_squad_errors_and_notes(tmp_path):
    write(tmp_path / "bad.json", '{"data": [\n{"paragraphs": }]}')
    with pytest.raises(common.DataError, match=r"bad.json:2: not valid JSON"):
        common.read_squad(tmp_path / "bad.json")
    write(tmp_path / "nokey.json", json.dumps({"data": [{"paragraphs": [{"qas": [{"id": "1"}]}]}]}))
    with pytest.raises(common.DataError, match=r"data\[0\].paragraphs\[0\].qas\[0\]: missing or malformed field 'context'"):
        common.read_squad(tmp_path / "nokey.json")
    common.DATA_NOTES.clear()
    p = write(tmp_path / "off.json", json.dumps({"data": [{"paragraphs": [{"context": "abc def", "qas": [
        {"id": "1", "question": "q", "answers": [{"text": "def", "answer_start": 0}]}]}]}]}))
    assert common.read_squad(p)[0].answers == [] and "1 answers not found" in common.DATA_NOTES[-1]


# ---------------------------------------------------------------------------- end to end

ALIGN = ["--stage", "align", "--model", "tiny", "--parallel", f"massive:{ROOT / 'data/demo'}:de,es", "--min_len", "1",
         "--queue", "64", "--momentum", "0.9", "--lr", "3e-4", "--epochs", "4"]


def test_align_then_finetune_the_saved_encoder(tmp_path):
    history = ppa.main([*ALIGN, "--out_dir", str(tmp_path / "align")])
    assert history[-1]["tlm"] < history[0]["tlm"]  # the word-level objective learns
    # (a random tiny encoder gives nearly the same [CLS] state to every sentence, so MoCo has little to
    # learn from here: its behaviour is tested on the loss, the momentum update and the queue above)
    saved = tmp_path / "align" / "aligned"
    enc, _ = common.load_encoder(str(saved))  # a normal HF folder, loadable by every script
    assert enc.config.hidden_size == 64
    assert ppa.parse_args(["--model", str(saved), "--data", "demo"]).lr == ppa.PAPER["demo"]["lr"]  # tiny's, aligned or not
    final = ppa.main(["--stage", "finetune", "--model", str(saved), "--data", "demo", "--data_dir", str(ROOT / "data/demo"),
                      "--lang", "de", "--lr", "1e-3", "--epochs", "6", "--batch_size", "16", "--max_len", "64",
                      "--out_dir", str(tmp_path / "ft")])
    assert final["en"]["test"]["accuracy"] > 20.0  # 10 intents: chance is 10%
    res = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert res["method"] == "ppa" and "de" in res["metrics"]  # named after the alignment it fine-tunes


def test_adamw_groups_decay_and_head_lr():
    model = nn.Module()
    model.encoder, model.head = nn.Linear(3, 3), nn.Linear(3, 2)
    got = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in ppa.adamw(model, 1e-5, torch.device("cpu")).param_groups}
    assert got == {(1e-5, 0.01): {id(model.encoder.weight), id(model.head.weight)},
                   (1e-5, 0.0): {id(model.encoder.bias), id(model.head.bias)}}  # the paper: one lr, no decay on biases
    got = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]}
           for g in ppa.adamw(model, 1e-5, torch.device("cpu"), head_lr=1e-3).param_groups}
    assert got == {(1e-5, 0.01): {id(model.encoder.weight)}, (1e-5, 0.0): {id(model.encoder.bias)},
                   (1e-3, 0.01): {id(model.head.weight)}, (1e-3, 0.0): {id(model.head.bias)}}


def test_align_reads_both_sentences_of_the_dev_halves_training_pairs(tmp_path):
    """xnli:<dir>:<langs> with --dev_halves: the premise and the hypothesis of each training-half pair, each
    with its translation, and no sentence of the dev and test quarters (they are evaluated after alignment)."""
    rows = [(f"premise {i} .", f"hypothesis {i} .", "neutral") for i in range(8)]
    for lang in ("en", "de"):
        write(tmp_path / "xnli" / f"dev-{lang}.tsv",
              "".join(f"{lang} {a}\t{lang} {b}\t{y}\n" for a, b, y in rows))
    pairs, counts = common.load_parallel_specs([f"xnli:{tmp_path / 'xnli'}:de"], dev_halves=True)
    args = ppa.parse_args(["--data", "xnli", "--data_dir", str(tmp_path / "xnli"), "--lang", "de", "--dev_halves"])
    train, _, evals = common.load_data(args, ["de"], False)
    want = [(f"en {s}", f"de {s}") for e in train for s in (e.a[3:], e.b[3:])]
    assert pairs == want and counts == {"xnli/de": 8}  # 4 training pairs, 2 sentences each
    evaluated = {e.a for d in evals.values() for xs in d.values() for e in xs}
    assert not evaluated & {s for p in pairs for s in p}
    got = ppa.main(["--stage", "align", "--model", "tiny", "--parallel", f"xnli:{tmp_path / 'xnli'}:de", "--dev_halves",
                    "--min_len", "1", "--queue", "8", "--batch_size", "4", "--epochs", "1", "--out_dir", str(tmp_path / "a")])
    assert len(got) == 1 and got[0]["tlm"] > 0.0  # it trains on them


def test_ablation_flags_and_clear_errors(tmp_path):
    h = ppa.main([*ALIGN, "--epochs", "1", "--no_tlm", "--out_dir", str(tmp_path / "a")])
    assert h[0]["tlm"] == 0.0
    assert json.loads((tmp_path / "a" / "aligned" / "ppa_align.json").read_text())["variant"] == "ppa-no_tlm"
    h = ppa.main([*ALIGN, "--epochs", "1", "--mlm_instead_of_tlm", "--out_dir", str(tmp_path / "b")])
    assert h[0]["tlm"] > 0.0
    with pytest.raises(SystemExit):  # argparse error: the queue must hold whole batches
        ppa.parse_args(["--stage", "align", "--parallel", "x.tsv", "--queue", "100", "--batch_size", "64"])
    with pytest.raises(SystemExit):
        ppa.parse_args(["--stage", "finetune", "--code_switch"])
    with pytest.raises(SystemExit, match="error: .*nope.en: file not found"):
        ppa.main(["--stage", "align", "--parallel", str(tmp_path / "nope.en") + "," + str(tmp_path / "nope.de"),
                  "--model", "tiny", "--queue", "64", "--batch_size", "16", "--out_dir", str(tmp_path / "c")])


def test_code_switching_groups(tmp_path):
    for lang in ("en", "de"):  # the fixture's dev pairs twice over: --dev_halves needs at least 4
        lines = (FIX / "pawsx_xtreme" / f"dev-{lang}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        write(tmp_path / "pawsx" / f"dev-{lang}.tsv", "".join(lines * 2))
    args = ppa.parse_args(["--stage", "finetune", "--data", "pawsx", "--data_dir", str(tmp_path / "pawsx"), "--lang", "de",
                           "--model", "tiny", "--translate_train", "--code_switch", "--dev_halves", "--out_dir", str(tmp_path)])
    train, trans, evals = common.load_data(args, ["de"], True)
    _, tok = common.load_encoder("tiny", common.texts_of(train, trans, evals), tmp_path, 64)
    labels = common.Labels.from_train("pawsx", train, "io")
    groups = common.train_groups(tok, train, labels, trans, 64, "pawsx/en/train", code_switch=True)
    ex, (a_x, b_x) = train[0], trans["de"][0]
    want = [tok(ex.a, ex.b)["input_ids"], tok(a_x, b_x)["input_ids"], tok(a_x, ex.b)["input_ids"], tok(ex.a, b_x)["input_ids"]]
    assert [it["input_ids"] for it in groups[0]] == want  # English, translated, (a_x, b_en), (a_en, b_x)
    assert len({it["intent"] for it in groups[0]}) == 1  # all with the English label
    batches = common.group_batches(groups, 4, __import__("random").Random(0))
    assert all(len(b) % 4 == 0 for b in batches)  # groups of 4 are never split


def test_qa_end_to_end(tmp_path):
    ctx = "the river flows north . the tower is in paris . the bridge is old ."
    items = [(f"q{i}", q, ctx, a) for i, (q, a) in enumerate([("where is the tower ?", "paris"), ("what is old ?", "the bridge"),
                                                              ("where does the river flow ?", "north")] * 4)]
    squad(tmp_path / "train-v1.1.json", items)
    for split in ("dev", "test"):
        for lang in ("en", "de"):
            squad(tmp_path / "MLQA_V1" / split / f"{split}-context-{lang}-question-{lang}.json", items[:3])
    metrics = ppa.main(["--stage", "finetune", "--data", "mlqa", "--data_dir", str(tmp_path), "--lang", "de", "--model", "tiny",
                        "--max_len", "64", "--out_dir", str(tmp_path / "out")])
    assert set(metrics) == {"en", "de"} and {"f1", "exact_match", "n"} <= set(metrics["de"]["test"])
    assert json.loads((tmp_path / "out" / "results.json").read_text())["method"] == "finetune_qa"  # tiny: not aligned
    assert metrics["en"]["test"]["f1"] > 0.0  # it learnt to point at answer words of the training questions


def test_align_probe_retrieval_and_premise_rows(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import align_probe
    a = torch.eye(3)
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.1]])  # rows 1 and 2 point at each other's
    assert align_probe.r_at_1(a, b) == pytest.approx(100 / 3)  # 1 of 3 right in each direction
    en = ["p1\th1\tneutral", "p1\th2\tentailment", "p2\th3\tneutral", "p2\th4\tcontradiction", "p3\th5\tneutral",
          "p3\th6\tneutral", "p4\th7\tneutral", "p4\th8\tneutral"]
    write(tmp_path / "dev-en.tsv", "\n".join(en) + "\n")
    write(tmp_path / "dev-de.tsv", "\n".join(x.replace("p", "q") for x in en) + "\n")
    got = align_probe.premises(tmp_path, ["de"], 5)  # the second half (rows 4-7), each premise once
    assert got == {"en": ["p3", "p4"], "de": ["q3", "q4"]}


def test_qa_refuses_translate_train_and_code_switch(capsys):
    """QA trains on English SQuAD only: the data options are refused, not ignored and named in the run."""
    for flags in (["--translate_train"], ["--translate_train", "--code_switch"]):
        with pytest.raises(SystemExit):
            ppa.parse_args(["--stage", "finetune", "--data", "mlqa", *flags])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "error: --data mlqa" in err and "not implemented for QA" in err
    assert not ppa.parse_args(["--stage", "finetune", "--data", "mlqa"]).translate_train


def test_schedule_ends_at_the_last_step_taken(tmp_path, monkeypatch):
    """With translations each English example's group (4 items here) stays in one batch, so batches
    hold 8 items at --batch_size 6: the linear decay must plan the steps actually taken."""
    made = []
    schedule = ppa.schedule
    monkeypatch.setattr(ppa, "schedule", lambda opt, total, warmup: made.append((total, schedule(opt, total, warmup)))
                        or made[-1][1])
    ppa.main(["--stage", "finetune", "--data", "demo", "--data_dir", str(ROOT / "data/demo"), "--lang", "de,es,fr",
              "--model", "tiny", "--device", "cpu", "--translate_train", "--batch_size", "6", "--epochs", "2",
              "--out_dir", str(tmp_path), "--log_every", "1000"])
    res = json.loads((tmp_path / "results.json").read_text())
    (total, sched), = made
    assert res["steps"] == total == 2 * 100  # 200 groups of 4 items, two groups a batch
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # decayed to 0 at the last step


@pytest.mark.parametrize("stage", [[], ["--stage", "align"], ["--stage", "finetune"]])
def test_demo_is_one_command_from_any_directory(tmp_path, stage):
    """`--data demo --model tiny` alone runs both stages (or either) from another working directory: the
    demo data resolve in the repository, and the align stage reads the demo's translations as parallel
    data; the default fine-tunes the encoder stage 1 saved, with one line instead of load reports."""
    run = subprocess.run([sys.executable, str(ROOT / "ppa_moco_tlm.py"), "--data", "demo", "--model", "tiny", *stage,
                          "--out_dir", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "LOAD REPORT" not in run.stdout + run.stderr and "corrupted" not in run.stdout + run.stderr
    if stage == ["--stage", "align"]:
        assert res["method"] == "ppa_align" and res["pairs_kept"] == 200 and res["args"]["min_len"] == 1
        assert (tmp_path / "out" / "aligned" / "config.json").is_file()
        assert "MLM head: new, 6 tensors initialised (the encoder has none" in run.stdout
    elif stage:
        assert res["method"] == "finetune" and res["metrics"]["en"]["test"]["accuracy"] > 50
    else:  # stage 1 in out/align, stage 2 on its encoder in out
        one = json.loads((tmp_path / "out" / "align" / "results.json").read_text())
        assert one["method"] == "ppa_align" and res["method"] == "ppa"
        assert res["args"]["model"] == str(tmp_path / "out" / "align" / "aligned")
        assert res["history"][-1]["train_task_loss"] < res["history"][0]["train_task_loss"]
        assert res["metrics"]["en"]["test"]["accuracy"] > 50
        h = one["history"]  # MoCo's loss rises as real keys fill the queue, while acc@1 climbs
        assert h[-1]["moco"] > h[0]["moco"] and h[-1]["moco_acc"] > h[0]["moco_acc"]
        assert "the loss rises, while acc@1 still climbs" in run.stdout


# ---------------------------------------------------------------------------- segment ids (BERT)


def tiny_bert(folder, sentences):
    """A small random BERT (two token types) and a WordPiece tokenizer over the words of `sentences`."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast
    words = sorted({w for s in sentences for w in s.lower().split()})
    vocab = write(folder.parent / "vocab.txt", "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab))
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, type_vocab_size=2, max_position_embeddings=128)
    torch.manual_seed(0)
    BertForMaskedLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok


def spy_bert(monkeypatch):
    """Record the keyword tensors of every BertModel forward call."""
    from transformers.models.bert import modeling_bert
    calls, forward = [], modeling_bert.BertModel.forward

    def spy(self, *a, **kw):
        calls.append({k: v.detach().cpu().clone() for k, v in kw.items() if torch.is_tensor(v)})
        return forward(self, *a, **kw)
    monkeypatch.setattr(modeling_bert.BertModel, "forward", spy)
    return calls


def second_segment(ids, sep_id):
    """The token types of `[CLS] a [SEP] b [SEP] [PAD]...`: 1 on `b [SEP]`, 0 elsewhere."""
    is_sep = ids == sep_id
    seen = is_sep.long().cumsum(1)  # [SEP]s up to and including each position
    return ((seen == 1) & ~is_sep | (seen == 2) & is_sep).long()


def test_tlm_pairs_carry_segment_ids_for_bert(tmp_path, monkeypatch):
    train = common.load_split("demo", ROOT / "data/demo", "en", "train")
    de = common.load_translations("demo", ROOT / "data/demo", "de", train)
    folder, tok = tiny_bert(tmp_path / "bert", [" ".join(e.words) for e in train] + de)
    calls = spy_bert(monkeypatch)
    ppa.main(["--stage", "align", "--parallel", f"demo:{ROOT / 'data/demo'}:de", "--min_len", "1", "--model", str(folder),
              "--device", "cpu", "--batch_size", "8", "--queue", "16", "--max_len", "64", "--max_steps", "2",
              "--out_dir", str(tmp_path / "out")])
    assert len(calls) == 2 * 3  # per step: the query side, TLM on the pair (one forward), the key side
    for c in calls[0::3] + calls[2::3]:  # one sentence each: segment 0 throughout
        assert c["token_type_ids"].sum() == 0 and ((c["input_ids"] == tok.sep_token_id).sum(1) == 1).all()
    tlm = calls[1::3]
    for c in tlm:  # masking never selects [SEP]: the segments are those of the unmasked pair
        assert ((c["input_ids"] == tok.sep_token_id).sum(1) == 2).all()
        assert torch.equal(c["token_type_ids"], second_segment(c["input_ids"], tok.sep_token_id))
        assert c["token_type_ids"].sum() > 0
    from transformers import BertModel
    bert = BertModel.from_pretrained(folder).eval()
    c = tlm[0]
    with torch.no_grad():
        h = bert(input_ids=c["input_ids"], attention_mask=c["attention_mask"], token_type_ids=c["token_type_ids"])
        h0 = bert(input_ids=c["input_ids"], attention_mask=c["attention_mask"])
    assert not torch.allclose(h.last_hidden_state, h0.last_hidden_state, atol=1e-4)


def test_pair_fine_tuning_carries_segment_ids_for_bert(tmp_path, monkeypatch):
    rows = [("the cat sat on the mat", "a cat is on the mat", "1"), ("the dog ran home", "the cat sat down", "0")] * 4
    for name in ("train-en", "dev-en", "test-en", "dev-de", "test-de"):  # de: not English's text
        de = "der " * name.endswith("de")
        write(tmp_path / "pawsx" / f"{name}.tsv", "".join(f"{de}{a}\t{b}\t{y}\n" for a, b, y in rows))
    folder, tok = tiny_bert(tmp_path / "bert", ["der " + a + " " + b for a, b, _ in rows])
    calls = spy_bert(monkeypatch)
    ppa.main(["--stage", "finetune", "--data", "pawsx", "--data_dir", str(tmp_path / "pawsx"), "--lang", "de",
              "--model", str(folder), "--device", "cpu", "--batch_size", "4", "--epochs", "1", "--max_len", "64",
              "--out_dir", str(tmp_path / "out")])
    train = [c for c in calls if c["input_ids"].shape[0] == 4]  # the two training steps (evaluation: batches of 8)
    assert len(train) == 2
    for c in train:
        assert torch.equal(c["token_type_ids"], second_segment(c["input_ids"], tok.sep_token_id))
        assert c["token_type_ids"].sum() > 0


# ---------------------------------------------------------------------------- torchrun


def _ddp_align(tmp_path, name, model, procs, env):
    """Stage 1 on the demo's 200 German pairs, 3 steps of global batch 8 (queue 16: it wraps), in
    `procs` processes through tests/helpers/ddp_ppa.py; the state each process ends with."""
    helper = str(ROOT / "tests/helpers/ddp_ppa.py")
    flags = ["--stage", "align", "--data", "demo", "--lang", "de", "--model", model, "--device", "cpu",
             "--batch_size", "8", "--queue", "16", "--momentum", "0.9", "--epochs", "1", "--max_steps", "3",
             "--out_dir", str(tmp_path / name)]
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(procs)] if procs > 1 else []
    r = subprocess.run([sys.executable, *launch, helper, str(tmp_path / f"{name}.pt"), *flags],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return [torch.load(tmp_path / f"{name}.pt.{rank}") for rank in range(procs)]


def test_ppa_ddp_matches_single_process(tmp_path):
    """Stage 1 in two gloo processes (4 pairs each) against one process with the same global batch
    of 8 on the same pairs, dropout off: after 3 steps the MoCo queue (every process's keys
    gathered, in batch order) and the query and key weights agree to float tolerance, and both
    processes hold the same queue. Skipping the gather (each process queues its own keys) fails."""
    train = common.load_split("demo", ROOT / "data/demo", "en", "train")
    texts = [" ".join(e.words) for e in train] + common.load_translations("demo", ROOT / "data/demo", "de", train)
    model = common.build_tiny(texts, tmp_path / "tiny", 128)  # positions for --max_len 128
    cfg = json.loads((tmp_path / "tiny" / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # the two runs draw differently
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    [one] = _ddp_align(tmp_path, "one", model, 1, env)
    two = _ddp_align(tmp_path, "two", model, 2, env)

    def diffs(a, b):
        return ((a["queue"] - b["queue"]).abs().max().item(),
                max((x - y).abs().max().item() for x, y in zip(a["weights"], b["weights"])),
                max((x - y).abs().max().item() for x, y in zip(a["key_weights"], b["key_weights"])))
    queue, weights, key_weights = diffs(one, two[0])
    print(f"largest difference, 1 vs 2 processes: queue {queue:.2e}, query weights {weights:.2e}, "
          f"key weights {key_weights:.2e}")
    assert one["ptr"] == two[0]["ptr"] == 8  # 3 batches of 8 in a queue of 16: wrapped once
    assert len(one["weights"]) == len(two[0]["weights"]) > 10
    assert queue < 1e-6 and weights < 1e-6 and key_weights < 1e-6
    assert torch.equal(two[0]["queue"], two[1]["queue"])  # the same queue in every process
    res = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two")]
    assert [x["world_size"] for x in res] == [1, 2] and res[0]["steps"] == res[1]["steps"] == 3
    for k in ("moco", "tlm", "moco_acc"):  # logged over every process's pairs, as one process logs
        assert res[0]["history"][0][k] == pytest.approx(res[1]["history"][0][k], abs=1e-5), k
    bad = _ddp_align(tmp_path, "bad", model, 2, {**env, "PPA_SKIP_GATHER": "1"})
    print(f"without the gather: queue {diffs(one, bad[0])[0]:.2e}")  # (a random encoder's keys
    assert diffs(one, bad[0])[0] > 1e-4  # are nearly alike: small, but 1e4 x the difference above)
    assert not torch.equal(bad[0]["queue"], bad[1]["queue"])


def test_both_stages_under_torchrun(tmp_path):
    """`torchrun --nproc_per_node 2` runs the demo's two stages: stage 1 with gathered keys, stage 2
    with DistributedSampler-like shares; rank 0 writes both results.json files."""
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        str(ROOT / "ppa_moco_tlm.py"), "--data", "demo", "--model", "tiny", "--device", "cpu",
                        "--epochs", "1", "--max_steps", "4", "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one = json.loads((tmp_path / "out" / "align" / "results.json").read_text())
    two = json.loads((tmp_path / "out" / "results.json").read_text())
    assert one["world_size"] == two["world_size"] == 2 and one["steps"] == two["steps"] == 4
    assert two["method"] == "ppa" and set(two["metrics"]) == {"en", "de"}
