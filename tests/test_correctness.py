"""Training-loop and run-level defects: CoV weights with absent losses, non-finite losses stop the run,
DDP with an unused pooler, BERT segment ids, where results go and that they are never lost, model
folders that cannot work, run flags that cannot work, bf16 autocast on the CPU, --help."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import FIX, ROOT

import common
import contrastive
import crossaligner
import translate_intent
import xeroalign

DEMO = ["--data", "demo", "--data_dir", str(ROOT / "data/demo"), "--lang", "de", "--model", "tiny", "--device", "cpu"]
DDP_SCRIPTS = ["xeroalign", "crossaligner", "contrastive", "translate_intent", "ear_push_pull", "ppa_moco_tlm"]


def run(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, *args], cwd=kw.pop("cwd", ROOT), capture_output=True, text=True,
                          timeout=300, env=env, **kw)


# ---------------------------------------------------------------------------- 1. CoV and non-finite losses


def test_cov_placeholder_zero_at_step_one_gives_no_nan():
    """A batch without translations makes XA a literal 0 at step 1; the old update divided by that mean."""
    cov = crossaligner.CoVWeighting(2)
    cov.update([1.3, 0.0], [True, False])
    w = cov.update([1.2, 0.01])
    assert np.isfinite(w).all()
    assert w[1] == 1.0  # XA's first real step: no history yet, weight 1 (the 1+1 sum)
    assert w[0] == pytest.approx(np.std([1.0, 1.2 / 1.3]) / np.mean([1.0, 1.2 / 1.3]))
    cov = crossaligner.CoVWeighting(2)  # without the mask, a real zero mean gives ratio 1, not a NaN
    cov.update([1.3, 0.0])
    assert np.isfinite(cov.update([1.2, 0.01])).all()


def test_cov_absent_loss_keeps_its_statistics():
    a, b = crossaligner.CoVWeighting(1), crossaligner.CoVWeighting(1)
    for x in (1.0, 0.8, 0.9):
        a.update([x])
    for x, on in ((1.0, True), (0.0, False), (0.8, True), (0.0, False), (0.9, True)):
        w = b.update([x], [on])
    assert w == pytest.approx(a.weights)


@pytest.mark.parametrize("module,loss_name,extra", [
    (xeroalign, "xeroalign_loss", []), (contrastive, "contrastive_loss", []),
    (translate_intent, "translate_intent_loss", []), (crossaligner, "xeroalign_loss", ["--aux", "xa"])])
def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch, module, loss_name, extra):
    monkeypatch.setattr(module, loss_name, lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(SystemExit, match=r"error: step 1: the loss is nan"):
        module.main(DEMO + extra + ["--max_steps", "3", "--out_dir", str(tmp_path)])
    assert not (tmp_path / "results.json").exists()


def test_crossaligner_out_dir_tells_cov_from_sum(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--weighting", "cov"]):
        crossaligner.main(DEMO + ["--aux", "xa", "--max_steps", "1", *extra])
    assert sorted(p.parent.parent.name for p in (tmp_path / "runs").rglob("results.json")) == ["xa", "xa-cov"]


# ---------------------------------------------------------------------------- 2. no unused parameters


@pytest.mark.parametrize("cls", ["pooler", "first"])
def test_every_parameter_gets_a_gradient(cls):
    from transformers import XLMRobertaConfig, XLMRobertaModel
    cfg = XLMRobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=20)
    model = common.TaskModel(XLMRobertaModel(cfg), 3, 4, cls)
    ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
    _, logits, slots, _ = model(ids, (ids != 1).long())
    (logits.sum() + slots.sum()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_torchrun_every_ddp_method_default_and_cls_first(tmp_path):
    """DDP raised 'Expected to have finished reduction in the prior iteration' at step 2 with --cls first
    (the pooler was computed but unused): every DDP method file, default flags and --cls first, 2 processes."""
    r = run("-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "tests/helpers/ddp_runs.py"),
            str(tmp_path), *DDP_SCRIPTS)
    assert r.returncode == 0, r.stderr[-3000:]
    for script in DDP_SCRIPTS:
        for name in ("default", "first"):
            res = json.loads((tmp_path / f"{script}-{name}" / "results.json").read_text())
            assert res["world_size"] == 2 and res["steps"] == 3
            assert res["args"]["cls"] == ("first" if name == "first" else res["args"]["cls"])


# ---------------------------------------------------------------------------- 4. BERT segment ids


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT (two token types) with a word-piece vocabulary of the XNLI fixture's words."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    folder = tmp_path_factory.mktemp("bert")
    words = set()
    for f in (FIX / "xnli_v1").rglob("*.tsv"):
        words |= set(f.read_text(encoding="utf-8").lower().replace("\t", " ").split())
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tok.save_pretrained(folder)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, type_vocab_size=2, max_position_embeddings=256)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    return folder


def test_sentence_pairs_carry_bert_segment_ids(tiny_bert):
    enc, tok = common.load_encoder(str(tiny_bert))
    labels = common.Labels.from_train("xnli", [])
    a = common.encode(tok, common.Pair("1", "the cat sat", "a dog ran", "neutral"), labels, 64)
    b = common.encode(tok, common.Pair("2", "the cat", "a dog ran far", "neutral"), labels, 64)
    assert a["token_type_ids"] == [0] * 5 + [1] * 4  # [CLS] the cat sat [SEP] | a dog ran [SEP]
    batch = common.collate([a, b], tok.pad_token_id)
    assert batch["token_type_ids"].tolist()[1] == [0] * 4 + [1] * 5
    model = common.TaskModel(enc, 3, 0, "first").eval()
    with torch.no_grad():
        typed = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[1]
        untyped = model(batch["input_ids"], batch["attention_mask"])[1]
    assert not torch.allclose(typed, untyped)


def test_a_bert_run_feeds_segment_ids_to_the_encoder(tiny_bert, tmp_path, monkeypatch):
    seen = []
    forward = common.TaskModel.forward

    def spy(self, ids, mask, token_type_ids=None):
        seen.append(None if token_type_ids is None else int(token_type_ids.max()))
        return forward(self, ids, mask, token_type_ids)

    monkeypatch.setattr(common.TaskModel, "forward", spy)
    xeroalign.main(["--data", "xnli", "--data_dir", str(FIX / "xnli_v1"), "--lang", "de", "--model", str(tiny_bert),
                    "--device", "cpu", "--epochs", "1", "--batch_size", "2", "--out_dir", str(tmp_path)])
    assert seen and all(s == 1 for s in seen)  # training (English + translations) and evaluation


# ---------------------------------------------------------------------------- 8. results are never lost


def test_default_out_dir_names_model_steps_and_subset():
    a = xeroalign.parse_args(["--model", "intfloat/multilingual-e5-small", "--max_steps", "2", "--limit_train", "50"])
    assert common.default_out_dir("xeroalign", a) == "runs/xeroalign/demo-de-en-multilingual-e5-small-s123456789-steps2-n50"
    a = xeroalign.parse_args([])
    assert common.default_out_dir("xeroalign", a) == "runs/xeroalign/demo-de-en-xlm-roberta-large-s123456789"


def test_results_of_other_settings_are_not_overwritten(tmp_path):
    xeroalign.main(DEMO + ["--max_steps", "2", "--out_dir", str(tmp_path)])
    first = (tmp_path / "results.json").read_text()
    with pytest.raises(SystemExit, match=r"results.json holds another run \(--max_steps\); pass --overwrite"):
        xeroalign.main(DEMO + ["--max_steps", "3", "--out_dir", str(tmp_path)])
    assert (tmp_path / "results.json").read_text() == first
    xeroalign.main(DEMO + ["--max_steps", "3", "--out_dir", str(tmp_path), "--overwrite"])
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == 3
    xeroalign.main(DEMO + ["--max_steps", "3", "--out_dir", str(tmp_path)])  # same settings: a rerun replaces it
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["results.json"]  # no temporary file left


def test_a_truncated_results_file_is_named(tmp_path):
    (tmp_path / "results.json").write_text('{"method": "xeroalign", "args": {"lr"')
    with pytest.raises(SystemExit, match=r"results.json: not a readable results file"):
        xeroalign.main(DEMO + ["--max_steps", "2", "--out_dir", str(tmp_path)])
    sys.path.insert(0, str(ROOT / "tools"))
    import make_table
    with pytest.raises(SystemExit, match=r"results.json: not a readable results file"):
        make_table.load(str(tmp_path), "demo")


# ---------------------------------------------------------------------------- 9. model folders


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    texts = [json.loads(x)["utt"] for x in (ROOT / "data/demo/data/en-US.jsonl").read_text(encoding="utf-8").splitlines()]
    return common.build_tiny(texts, out / "tiny_model", 64)


def test_model_folder_without_tokenizer_files_is_refused(tiny_folder, tmp_path):
    import shutil
    broken = tmp_path / "no_tok"
    broken.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_folder, f), broken / f)
    r = run("xeroalign.py", *DEMO[:6], "--model", str(broken), "--max_steps", "1", "--out_dir", str(tmp_path / "o"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "no tokenizer files" in r.stderr


def test_empty_model_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("xeroalign.py", *DEMO[:6], "--model", str(tmp_path / "empty"), "--out_dir", str(tmp_path / "o"))
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "no config.json" in r.stderr


def test_tokenizer_that_does_not_cover_the_vocabulary_is_refused(tiny_folder, tmp_path):
    """transformers builds a 5-token tokenizer from a folder without a vocabulary: every word <unk>."""
    from transformers import AutoModel, BertConfig, BertModel
    enc = AutoModel.from_pretrained(tiny_folder)
    small = BertModel(BertConfig(vocab_size=enc.config.vocab_size * 3, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32))
    small.save_pretrained(tmp_path / "m")
    for f in os.listdir(tiny_folder):
        if "token" in f:
            (tmp_path / "m" / f).write_bytes(open(os.path.join(tiny_folder, f), "rb").read())
    with pytest.raises(SystemExit, match=r"the tokenizer has \d+ tokens but the model's vocabulary \d+"):
        common.load_encoder(str(tmp_path / "m"))


def test_unreachable_hub_fails_fast(tmp_path):
    t = time.time()
    r = run("xeroalign.py", *DEMO[:6], "--model", "nobody/not-a-model", "--out_dir", str(tmp_path),
            env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode != 0 and "hub cannot be reached" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - t < 40  # retries took 52 s before the import overhead


# ---------------------------------------------------------------------------- 14. run flags


@pytest.mark.parametrize("flags", [["--batch_size", "0"], ["--epochs", "0"], ["--lang", "de,,es"], ["--lr", "0"]])
def test_impossible_run_flags_are_usage_errors(flags, capsys):
    with pytest.raises(SystemExit) as e:
        xeroalign.parse_args(flags)
    assert e.value.code == 2 and flags[0] in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
def test_device_cuda_without_cuda_is_one_line(tmp_path):
    r = run("xeroalign.py", *DEMO[:8], "--device", "cuda", "--out_dir", str(tmp_path))
    assert r.returncode != 0 and "sees no CUDA GPU" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- 17. precision on the CPU


def test_dtype_auto_is_float32_on_cpu(tmp_path, capsys):
    xeroalign.main(DEMO + ["--max_steps", "1", "--out_dir", str(tmp_path / "a")])
    assert "dtype float32" in capsys.readouterr().out
    xeroalign.main(DEMO + ["--max_steps", "1", "--dtype", "bfloat16", "--out_dir", str(tmp_path / "b")])
    assert "dtype bfloat16" in capsys.readouterr().out
    res = json.loads((tmp_path / "b/results.json").read_text())
    assert res["dtype"] == "bfloat16" and res["skipped_steps"] == 0


# ---------------------------------------------------------------------------- --help


@pytest.mark.parametrize("script", ["xeroalign", "crossaligner", "contrastive", "translate_intent", "ear_push_pull",
                                    "sentence_mapping", "ppa_moco_tlm"])
def test_help_prints_each_default_once(script):
    import re
    out = run(f"{script}.py", "--help").stdout
    out = next(part for part in out.split("\n\n") if part.startswith("options:"))  # not the epilog
    options = re.split(r"\n  (?=-)", out)
    assert "(default: None)" not in out
    assert [o.split()[0] for o in options if o.count("default") > 1] == []


# ---------------------------------------------------------------------------- 15. one command, any directory


@pytest.mark.parametrize("script", ["xeroalign", "crossaligner", "contrastive", "translate_intent", "sentence_mapping"])
def test_demo_is_one_command_from_any_directory(tmp_path, script):
    """`python <file> --data demo --model tiny` needs no other flag, run from outside the repository (--max_steps
    only keeps it short; the full demos run in each method's own tests)."""
    r = run(str(ROOT / f"{script}.py"), "--data", "demo", "--model", "tiny", "--max_steps", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    [res] = list((tmp_path / "runs").rglob("results.json"))
    metrics = json.loads(res.read_text())["metrics"]
    assert set(metrics) >= {"en", "de"}


# ---------------------------------------------------------------------------- 17. every demo in bf16 and fp16


def _losses(history):
    """Every training-loss number of an epoch record, flattened: {name: value}."""
    out = {}
    for k, v in history.items():
        if isinstance(v, dict) and "loss" in k:
            out.update({f"{k}.{a}": x for a, x in v.items()})
        elif ("loss" in k or k in ("moco", "tlm")) and isinstance(v, (int, float)):
            out[k] = v
    return out


DEMOS = [("xeroalign", []), ("crossaligner", ["--aux", "ca", "xa", "ctr", "ti", "--weighting", "cov"]),
         ("contrastive", []), ("translate_intent", []), ("ear_push_pull", []), ("sentence_mapping", []),
         ("ppa_moco_tlm", []), ("ppa_moco_tlm", ["--stage", "finetune"]), ("ppa_moco_tlm", ["--stage", "align"])]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("script,extra", DEMOS)
def test_demo_under_autocast_on_cpu(tmp_path, script, extra, dtype):
    """Every mixed-precision line (MoCo's queue against half-precision keys, the attention-probability
    hook, the CrossAligner head on half logits, the losses' casts, fp16's GradScaler) runs on the CPU
    too: finite losses within 10% of the fp32 run's, the dtype and skipped steps recorded."""
    import importlib
    module = importlib.import_module(script)
    flags = ["--data", "demo", "--model", "tiny", "--device", "cpu", "--epochs", "1", "--max_steps", "6",
             *extra]
    module.main(flags + ["--out_dir", str(tmp_path / "fp32")])
    module.main(flags + ["--dtype", dtype, "--out_dir", str(tmp_path / dtype)])
    fp32, half = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("fp32", dtype))
    assert half["dtype"] == dtype and fp32["dtype"] == "float32"
    if "skipped_steps" in half:  # the runs that step an optimizer: fp16 counts the steps it skipped
        assert 0 <= half["skipped_steps"] < half["steps"] and fp32["skipped_steps"] == 0
    a, b = _losses(fp32["history"][0]), _losses(half["history"][0])
    assert a and a.keys() == b.keys()
    for k in a:
        assert np.isfinite(b[k]), k
        assert b[k] == pytest.approx(a[k], rel=0.1, abs=0.05), k
    print(f"{script} {' '.join(extra)} {dtype}: " + ", ".join(
        f"{k} {b[k]:.4f} vs fp32 {a[k]:.4f}" for k in a))
