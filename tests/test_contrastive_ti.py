"""contrastive.py and translate_intent.py: the losses against a naive loop / hand-computed values,
their limits, their flags, and end-to-end runs on the demo and a pair task with --model tiny."""
import json
import math

import pytest
import torch
from conftest import FIX, ROOT

import contrastive
import translate_intent

DEMO = ["--data", "demo", "--data_dir", str(ROOT / "data/demo"), "--lang", "de", "--model", "tiny",
        "--device", "cpu"]


def naive_infonce(e, t, tau):
    """Eq. 1 as a double loop over the batch."""
    total = 0.0
    for i in range(len(e)):
        sims = [float(e[i] @ t[k] / (e[i].norm() * t[k].norm())) / tau for k in range(len(t))]
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    return total / len(e)


def test_contrastive_loss_against_a_double_loop():
    torch.manual_seed(0)
    e, t = torch.randn(6, 5), torch.randn(6, 5)
    for tau in (1.0, 0.2):
        got = contrastive.contrastive_loss(e, t, tau).item()
        assert got == pytest.approx(naive_infonce(e, t, tau), rel=1e-5)
    both = (naive_infonce(e, t, 0.2) + naive_infonce(t, e, 0.2)) / 2
    got = contrastive.contrastive_loss(e, t, 0.2, symmetric=True).item()
    assert got == pytest.approx(both, rel=1e-5)


def test_contrastive_loss_limits():
    same = torch.randn(1, 8).repeat(5, 1)  # identical embeddings: every candidate equally likely
    assert contrastive.contrastive_loss(same, same).item() == pytest.approx(math.log(5), rel=1e-6)
    aligned = torch.eye(5, 8)  # perfectly aligned, distinct: near 0 at a low temperature
    assert contrastive.contrastive_loss(aligned, aligned * 2, temperature=0.01).item() < 1e-6
    e = torch.randn(4, 8, requires_grad=True)
    contrastive.contrastive_loss(e, torch.randn(4, 8)).backward()
    assert e.grad.abs().sum() > 0


def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert contrastive.mean_pool(h, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_translate_intent_loss_hand_computed():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    expected = (-math.log(math.e / (math.e + 2)) - math.log(math.exp(3) / (math.exp(3) + 2))) / 2
    got = translate_intent.translate_intent_loss(logits, torch.tensor([0, 2])).item()
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("module,extra", [
    (contrastive, []), (contrastive, ["--pooling", "mean", "--symmetric"]), (translate_intent, [])])
def test_demo_end_to_end(tmp_path, module, extra):
    metrics = module.main(DEMO + ["--epochs", "8", "--out_dir", str(tmp_path),
                                  "--log_every", "1000", *extra])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["method"] == module.__name__ and set(metrics) == {"en", "de"}
    assert res["dtype"] == "float32" and res["skipped_steps"] == 0  # CPU, --dtype auto
    first, last = res["history"][0], res["history"][-1]
    assert last["train_task_loss"] < 0.6 * first["train_task_loss"]
    assert last["train_align_loss"] < first["train_align_loss"]
    assert metrics["en"]["test"]["intent_acc"] > 30  # chance: 10%
    assert metrics["de"]["test"]["intent_acc"] > 20


def test_contrastive_on_a_pair_task(tmp_path):
    metrics = contrastive.main(["--data", "pawsx", "--data_dir", str(FIX / "pawsx_xfinal"),
                                "--lang", "de", "--model", "tiny", "--device", "cpu", "--epochs",
                                "2", "--batch_size", "3", "--out_dir", str(tmp_path)])
    assert set(metrics["de"]["test"]) == {"accuracy", "n"}
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["history"][0]["train_align_loss"] > 0


def test_max_eval_scores_a_fixed_subset(tmp_path):
    metrics = translate_intent.main(DEMO + ["--max_steps", "2", "--max_eval", "7", "--threads", "1",
                                            "--out_dir", str(tmp_path)])
    assert {metrics[x][s]["n"] for x in metrics for s in ("dev", "test")} == {7}


def test_defaults_and_flag_errors(capsys):
    a = contrastive.parse_args(["--data", "mtod"])
    assert (a.lr, a.epochs, a.max_len, a.batch_size) == (5e-6, 5, 50, 10)  # the aligned config
    assert contrastive.parse_args(["--data", "xnli"]).batch_size == 10  # nine in-batch negatives
    assert translate_intent.parse_args(["--data", "mtod", "--no-align"]).epochs == 5
    for module, flags in ((contrastive, ["--temperature", "0"]),
                          (contrastive, ["--max_len", "4"]),
                          (translate_intent, ["--epochs", "0"]),
                          (translate_intent, ["--lr", "-1"])):
        with pytest.raises(SystemExit):
            module.parse_args(flags)
        assert f"argument {flags[0]}: must be" in capsys.readouterr().err  # names the flag


def test_translate_intent_has_no_pair_tasks():
    with pytest.raises(SystemExit):
        translate_intent.parse_args(["--data", "xnli"])
    with pytest.raises(SystemExit):  # --dev_halves splits pair data only
        translate_intent.parse_args(["--dev_halves"])
    assert contrastive.parse_args(["--data", "pawsx", "--dev_halves"]).dev_halves
