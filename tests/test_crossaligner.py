"""CrossAligner & Co: each loss against a hand-computed value or a naive loop, CoV weights against
Eq. 3, padding invariance of the CrossAligner loss, and end-to-end runs on the demo."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

import common
import crossaligner as ca

DEMO = ["--data", "demo", "--data_dir", str(ROOT / "data/demo"), "--lang", "de", "--model", "tiny", "--device", "cpu"]


def test_slot_presence_hand_computed():
    labels = torch.tensor([[-100, 0, 2, 2, -100], [-100, 1, -100, -100, -100]])
    assert ca.slot_presence(labels, 3).tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_crossaligner_loss_hand_computed():
    head = torch.nn.Linear(3 * 2, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 0] = 1.0  # reads position 0, tag 0
        head.weight[1, 3] = 1.0  # reads position 1, tag 1 (a padding position: always 0)
        head.bias.copy_(torch.tensor([0.0, 0.5]))
    logits = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, T=2, S=2)
    mask = torch.tensor([[1, 0]])
    y = torch.tensor([[1.0, 0.0]])
    loss = ca.crossaligner_loss(logits, mask, y, head, max_len=3)
    # pred = [1, 0 + 0.5]; BCE = mean(-log sigmoid(1), -log(1 - sigmoid(0.5)))
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_crossaligner_loss_is_padding_invariant():
    from transformers import XLMRobertaConfig, XLMRobertaModel
    torch.manual_seed(0)
    enc = XLMRobertaModel(XLMRobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=40, pad_token_id=1))
    model = common.TaskModel(enc, 3, 4).eval()
    head = torch.nn.Linear(16 * 4, 4)
    short = [0, 5, 6, 7, 2]
    longer = [0] + list(range(8, 20)) + [2]
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    with torch.no_grad():
        alone = common.collate([{"input_ids": short, "intent": 0}], 1)
        batch = common.collate([{"input_ids": short, "intent": 0}, {"input_ids": longer, "intent": 0}], 1)
        _, _, s1, _ = model(alone["input_ids"], alone["attention_mask"])
        _, _, s2, _ = model(batch["input_ids"], batch["attention_mask"])
        a = ca.crossaligner_loss(s1, alone["attention_mask"], y, head, 16)
        b = ca.crossaligner_loss(s2[:1], batch["attention_mask"][:1], y, head, 16)
    assert s1.shape[1] == 5 and s2.shape[1] == 14
    assert a.item() == pytest.approx(b.item(), abs=1e-5)


def test_contrastive_loss_against_naive_loop_and_limits():
    torch.manual_seed(0)
    e, t = torch.randn(5, 8), torch.randn(5, 8)
    naive = 0.0
    for i in range(5):
        sims = [F.cosine_similarity(e[i], t[k], dim=0) / 0.5 for k in range(5)]
        naive += -(sims[i] - torch.logsumexp(torch.stack(sims), 0)) / 5
    assert ca.contrastive_loss(e, t, temperature=0.5).item() == pytest.approx(naive.item(), rel=1e-5)
    same = torch.ones(4, 8)  # every pair equally similar: loss = log N
    assert ca.contrastive_loss(same, same).item() == pytest.approx(math.log(4))
    eye = torch.eye(4, 8) * 3  # aligned, distinct, low temperature: loss -> 0
    assert ca.contrastive_loss(eye, eye, temperature=0.01).item() < 1e-6


def test_translate_intent_and_xeroalign_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert ca.translate_intent_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(expected)
    assert ca.xeroalign_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(2.5)


def eq3(history):
    """Eq. 3 computed directly over a recorded loss history (list of per-step loss vectors)."""
    L = np.asarray(history, dtype=np.float64)
    ratios = [np.ones(L.shape[1])] + [L[t] / L[:t].mean(0) for t in range(1, len(L))]
    r = np.asarray(ratios)
    return r.std(0) / r.mean(0)


def test_cov_weights_match_eq3_on_a_recorded_history():
    rng = np.random.default_rng(0)
    history = [[2.0 * 0.97 ** t + 0.1 * rng.random(), 0.7 + 0.3 * np.sin(t)] for t in range(40)]
    cov = ca.CoVWeighting(2)
    for t, losses in enumerate(history, 1):
        w = cov.update(losses)
        if t == 1:
            assert w.tolist() == [1.0, 1.0]  # no history yet: the 1+1 sum
        else:
            np.testing.assert_allclose(w, eq3(history[:t]), rtol=1e-9)
    assert (cov.weights > 0).all() and (cov.weights < 1).all()


def test_cov_edge_cases():
    cov = ca.CoVWeighting(2)
    assert cov.update([3.0, 5.0]).tolist() == [1.0, 1.0]
    w2 = cov.update([3.0, 10.0])  # ratios [1, 1] and [1, 2]: CoV 0 and 1/3
    np.testing.assert_allclose(w2, [0.0, 1 / 3])
    for _ in range(5):  # a loss that never moves keeps weight 0
        w = cov.update([3.0, 4.0])
    assert w[0] == 0.0 and w[1] > 0


@pytest.mark.parametrize("aux", [["ca"], ["ca", "xa", "--weighting", "cov"], ["ca", "xa", "ctr", "ti"]])
def test_demo_end_to_end_lowers_the_loss(tmp_path, aux):
    metrics = ca.main(DEMO + ["--epochs", "6", "--aux", *aux, "--out_dir", str(tmp_path), "--log_every", "1000"])
    res = json.loads((tmp_path / "results.json").read_text())
    names = [a for a in aux if not a.startswith("-") and a != "cov"]
    assert res["method"] == "crossaligner" and res["aux"] == [a for a in ca.AUX if a in names]
    assert set(res["final_aux_weights"]) == set(names)
    first, last = res["history"][0], res["history"][-1]
    assert last["train_task_loss"] < 0.6 * first["train_task_loss"]
    assert last["train_aux_loss"]["ca"] < first["train_aux_loss"]["ca"]
    if "cov" in aux:
        # CoV weights, not 1+1 (xa starts near 0 on a random pooler and grows, so its weight exceeds 1)
        assert all(w > 0 for w in res["final_aux_weights"].values()) and 1.0 not in res["final_aux_weights"].values()
    assert metrics["en"]["test"]["intent_acc"] > 20 and set(metrics) == {"en", "de"}  # chance: 10%


def test_zero_shot_and_bio_tagging(tmp_path):
    ca.main(DEMO + ["--epochs", "2", "--aux", "--tagging", "bio", "--out_dir", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["method"] == "zeroshot" and res["aux"] == [] and res["args"]["tagging"] == "bio"
    assert all(h["train_total_loss"] == pytest.approx(h["train_task_loss"]) for h in res["history"])


def test_defaults_and_errors():
    a = ca.parse_args(["--data", "mtod"])
    assert (a.lr, a.epochs, a.max_len, a.batch_size, a.aux, a.weighting) == (5e-6, 5, 50, 10, ["ca"], "sum")
    a = ca.parse_args(["--data", "mtop", "--aux", "ti", "ca", "xa"])
    assert (a.lr, a.epochs, a.aux) == (2e-5, 10, ["xa", "ca", "ti"])
    with pytest.raises(SystemExit):
        ca.parse_args(["--data", "pawsx"])  # CrossAligner needs slot labels
    with pytest.raises(SystemExit):
        ca.parse_args(["--aux", "ca", "--train_lang", "de"])


def test_crossaligner_loss_refuses_more_subwords_than_max_len():
    head = torch.nn.Linear(3 * 2, 2)
    logits, mask, y = torch.zeros(1, 4, 2), torch.ones(1, 4), torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"T=4 .*max_len=3"):  # F.pad used to crop to 3 rows
        ca.crossaligner_loss(logits, mask, y, head, max_len=3)


@pytest.mark.parametrize("name,source", [("xeroalign_loss", "xeroalign.py"),
                                         ("contrastive_loss", "contrastive.py"),
                                         ("translate_intent_loss", "translate_intent.py")])
def test_loss_copies_are_the_same_code_as_their_own_files(name, source):
    """crossaligner.py keeps its own copy of each sibling's loss: arguments and body (docstring
    aside) must be the same code as the sibling file's."""
    import ast

    def code(path):
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        [fn] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
        body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(
            getattr(fn.body[0], "value", None), ast.Constant) and isinstance(
            fn.body[0].value.value, str) else fn.body
        return ast.unparse(fn.args), [ast.unparse(s) for s in body]

    assert code("crossaligner.py") == code(source)


def test_flag_errors_name_the_flag(capsys):
    for flag, value in (("--max_len", "4"), ("--lr", "0"), ("--epochs", "0"), ("--threads", "-1")):
        with pytest.raises(SystemExit):
            ca.parse_args([flag, value])
        assert f"argument {flag}: must be" in capsys.readouterr().err


def test_help_ends_with_the_per_data_table(capsys):
    with pytest.raises(SystemExit):
        ca.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "(default: per --data, below)" in out and "PAPER" not in out
    assert "mtod     lr 5e-06  epochs 5  max_len 50  batch_size 10" in out
    assert "--dev_halves" not in out and "--dtype" in out
