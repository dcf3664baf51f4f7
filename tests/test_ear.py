"""EAR: the losses against hand-computed values, seeded augmentation, the attention probabilities
taken by the hook against an eager-attention forward pass, and end-to-end runs on the demo."""
import ast
import json
import os
import random
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

import common
import ear_push_pull as ear

NEIGHBOURS = {"set": ["put", "place"], "play": ["playing"], "music": ["songs", "tunes"],
              "order": ["request"], "what": ["which"], "weather": [], "me": ["myself"],
              "the": ["this"]}
DEMO = ["--data", "demo", "--data_dir", str(ROOT / "data/demo"), "--model", "tiny", "--device",
        "cpu"]


@pytest.fixture
def nb_file(tmp_path):
    path = tmp_path / "neighbours.json"
    path.write_text(json.dumps(NEIGHBOURS))
    return path


def test_embedding_push_loss_hand_computed():
    e_x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # third token is padding
    e_xa = torch.tensor([[[0.0, 0.0], [2.0, 2.0], [5.0, 5.0]]])
    m_x, m_xa = torch.tensor([[1, 1, 0]]), torch.tensor([[1, 1, 1]])
    # means: x (2, 3), x^a (7/3, 7/3); -((2 - 7/3)^2 + (3 - 7/3)^2) / 2
    expected = -((2 - 7 / 3) ** 2 + (3 - 7 / 3) ** 2) / 2
    assert ear.embedding_push_loss(e_x, e_xa, m_x, m_xa).item() == pytest.approx(expected)


def test_attention_pull_loss_hand_computed():
    a_x = torch.zeros(1, 2, 3, 3)
    a_xa = torch.zeros(1, 2, 3, 3)
    a_xa[0, 0, 0, 0] = 1.0  # counted: positions (0, 0) valid in both
    a_xa[0, 1, 1, 1] = 2.0  # counted
    a_xa[0, 0, 2, 2] = 5.0  # not counted: token 2 is padding in x
    m_x, m_xa = torch.tensor([[1, 1, 0]]), torch.tensor([[1, 1, 1]])
    # valid pairs: 2 x 2 per head, 2 heads -> N = 8; squared errors 1 + 4
    assert ear.attention_pull_loss(a_x, a_xa, m_x, m_xa).item() == pytest.approx(5 / 8)


def test_robust_ce_hand_computed():
    import math
    lx, lxa, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    expected = math.log(2) + math.log(1 + math.exp(-2))
    assert ear.robust_ce_loss(lx, lxa, y).item() == pytest.approx(expected)


def test_augmentation_is_seeded_and_uses_listed_neighbours():
    nb = {w: n for w, n in NEIGHBOURS.items() if n}
    ex = common.Example("1", "set the alarm and play the music for me Set".split(), "x", ["O"] * 10)
    a = [ear.augmented(ex, nb, random.Random(3)).words for _ in range(2)]
    assert a[0] == a[1]  # same seed, same copy
    copies = [ear.augmented(ex, nb, random.Random(s)).words for s in range(50)]
    assert len({tuple(c) for c in copies}) > 1
    for c in copies:
        for w, o in zip(c, ex.words):
            assert w == o or w in nb[o]  # only listed neighbours replace a word
        assert c[1] in ("the", "this") and c[2] == "alarm"
        assert c[-1] == "Set"  # case-sensitive match: "set" has neighbours, "Set" none
    p = ear.augmented(common.Pair("1", "play the music", "set me", "1"), nb, random.Random(0))
    assert len(p.a.split()) == 3 and len(p.b.split()) == 2 and p.label == "1"


def test_attention_probs_match_an_eager_forward_pass():
    from transformers import XLMRobertaConfig, XLMRobertaModel
    cfg = XLMRobertaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3,
                           num_attention_heads=4, intermediate_size=64, max_position_embeddings=40,
                           pad_token_id=1)
    torch.manual_seed(0)
    fast = XLMRobertaModel(cfg).eval()
    cfg_eager = XLMRobertaConfig(**{**cfg.to_dict(), "attn_implementation": "eager"})
    eager = XLMRobertaModel(cfg_eager).eval()
    eager.load_state_dict(fast.state_dict())
    assert fast.config._attn_implementation != "eager"
    assert eager.config._attn_implementation == "eager"
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    mask = (ids != 1).long()
    probe = ear.AttentionProbs(fast, 2)
    probe.mask = mask
    with torch.no_grad():
        h_fast = fast(input_ids=ids, attention_mask=mask).last_hidden_state
        out = eager(input_ids=ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(probe.probs, out.attentions[1], atol=1e-5, rtol=1e-4)
    # the model itself is untouched
    torch.testing.assert_close(h_fast, out.last_hidden_state, atol=1e-5, rtol=1e-4)
    assert probe.probs[1, :, :, 4:].abs().max() < 1e-6  # no attention to padding


@pytest.mark.parametrize("mode", ["ear", "rsda", "plain"])
def test_demo_end_to_end(tmp_path, nb_file, mode):
    metrics = ear.main(DEMO + ["--lang", "de", "--mode", mode, "--neighbours", str(nb_file),
                               "--ap_layer", "1", "--epochs", "4", "--out_dir", str(tmp_path),
                               "--log_every", "1000"])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["method"] == mode and set(metrics["de"]["test"]) == {"accuracy", "n"}
    assert res["dtype"] == "float32" and res["skipped_steps"] == 0  # --dtype auto on the CPU
    assert res["script"] == "ear_push_pull.py" and len(res["script_sha256"]) == 64
    h = res["history"]
    assert h[-1]["train_ce_loss"] < 0.7 * h[0]["train_ce_loss"]
    assert metrics["en"]["test"]["accuracy"] > 50  # 10 intents: chance is 10%
    if mode == "ear":
        assert h[-1]["train_ept_loss"] < 0 < h[-1]["train_apt_loss"]
        assert res["train_examples_seen"] == 4 * 3 * 200  # three augmented copies per example
    else:
        assert h[-1]["train_ept_loss"] == h[-1]["train_apt_loss"] == 0


def test_each_alignment_term_steers_training(tmp_path, nb_file):
    """EPT and APT reach the weights: trained with a large weight on one term, the run ends with
    that term lower (embeddings pushed further apart, attention maps closer) than the same run
    with both weights 0. Fails if either term's graph were cut (a hook keeping a detached
    tensor, say)."""
    def run(name, *flags):
        ear.main(DEMO + ["--lang", "de", "--mode", "ear", "--neighbours", str(nb_file),
                         "--ap_layer", "1", "--epochs", "2", "--out_dir", str(tmp_path / name),
                         "--log_every", "1000", *flags])
        return json.loads((tmp_path / name / "results.json").read_text())["history"][-1]
    off = run("off", "--alpha", "0", "--beta", "0")
    ept = run("ept", "--alpha", "10", "--beta", "0")["train_ept_loss"]
    assert ept < 1.5 * off["train_ept_loss"]  # both negative
    apt = run("apt", "--alpha", "0", "--beta", "10")["train_apt_loss"]
    assert apt < 0.6 * off["train_apt_loss"]


def test_clear_errors(tmp_path, nb_file):
    with pytest.raises(SystemExit, match="not found. It is counterfitted_neighbors.json"):
        ear.load_neighbours(tmp_path / "none.json")
    with pytest.raises(SystemExit, match="not JSON"):
        ear.load_neighbours(ROOT / "tests/fixtures/README.md")
    with pytest.raises(SystemExit, match="--ap_layer 6: the encoder has only 2 layers"):
        ear.main(DEMO + ["--neighbours", str(nb_file), "--ap_layer", "6", "--out_dir",
                         str(tmp_path), "--max_steps", "1"])


@pytest.mark.parametrize("flags,message", [
    (["--copies", "0"], "--copies: must be at least 1, got 0"),
    (["--max_len", "4"], "--max_len: must be at least 8, got 4"),
    (["--alpha", "-1"], "--alpha: must be at least 0.0, got -1"),
    (["--lr", "0"], "--lr: must be positive, got 0"),
    (["--ap_layer", "0"], "--ap_layer: must be at least 1, got 0"),
    (["--amp"], "unrecognized arguments: --amp"),  # --dtype replaced it
    (["--dtype", "half"], "--dtype: invalid choice"),
])
def test_bad_flags_are_named_in_one_line(capsys, flags, message):
    with pytest.raises(SystemExit):
        ear.parse_args(flags)
    assert message in capsys.readouterr().err


def test_out_dir_is_checked_before_any_loading(tmp_path):
    """A file given as --out_dir fails at once, before the synonym list or the data are read (a
    missing --neighbours file would be the error otherwise)."""
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="a file, not a folder"):
        ear.main(DEMO + ["--neighbours", str(tmp_path / "none.json"), "--out_dir",
                         str(tmp_path / "file")])


def test_max_eval_threads_and_help(tmp_path):
    """--max_eval scores a fixed subset of each dev and test set; --threads is not a setting that
    makes a rerun differ; --help shows the per-dataset table and no constant name."""
    argv = DEMO + ["--max_steps", "2", "--max_eval", "7", "--threads", "1", "--out_dir",
                   str(tmp_path)]
    metrics = ear.main(argv)
    assert {m[s]["n"] for m in metrics.values() for s in ("dev", "test")} == {7}
    ear.main(argv[:-4] + ["--threads", "2", "--out_dir", str(tmp_path)])  # not refused
    r = subprocess.run([sys.executable, str(ROOT / "ear_push_pull.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert "PAPER" not in r.stdout and "--dtype" in r.stdout and "--max_eval" in r.stdout
    assert "  xnli     lr 2e-05  epochs 1  max_len 128  batch_size 32" in r.stdout


def test_ap_layer_default_follows_the_encoder_depth():
    # the paper: the 6th of 12
    assert [ear.ap_layer(n) for n in (24, 12, 8, 6, 2, 1)] == [6, 6, 4, 3, 1, 1]
    # not given: None in the settings (as asked); main records the layer used as apt_layer
    assert ear.parse_args(["--data", "xnli"]).ap_layer is None
    assert ear.parse_args(["--ap_layer", "3"]).ap_layer == 3


def test_demo_is_one_command_from_any_directory(tmp_path):
    """From another working directory, `--data demo --model tiny` alone finds the demo data and its
    synonym list (shipped in the repository) and picks an APT layer the tiny encoder has."""
    run = subprocess.run([sys.executable, str(ROOT / "ear_push_pull.py"), "--data", "demo",
                          "--model", "tiny", "--out_dir", str(tmp_path / "out")], cwd=tmp_path,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["method"] == "ear" and res["args"]["apt_layer"] == 1
    assert res["args"]["neighbours"] == str(ROOT / "data/demo/synonyms.json")
    assert res["metrics"]["en"]["test"]["accuracy"] > 50


def test_demo_synonyms_are_demo_words():
    nb = json.loads((ROOT / "data/demo/synonyms.json").read_text(encoding="utf-8"))
    train = common.load_split("demo", ROOT / "data/demo", "en", "train")
    words = {w for e in train for w in e.words}
    assert len(nb) >= 30 and set(nb) <= words  # keys are words of the demo's English training set
    assert all(isinstance(n, list) and all(" " not in x for x in n) for n in nb.values())
    assert sum(any(w in nb and nb[w] for w in e.words) for e in train) > 0.9 * len(train)


# each method file's paper, with its exact title as printed on the paper
CROSSALIGNER = ("CrossAligner & Co: Zero-Shot Transfer Methods for Task-Oriented Cross-lingual "
                "Natural Language Understanding")
TITLES = {
    "ear_push_pull.py": "A Simple and Effective Method to Improve Zero-Shot Cross-Lingual Transfer "
                        "Learning",
    "ppa_moco_tlm.py": "Multilingual BERT Post-Pretraining Alignment",
    "xeroalign.py": "XeroAlign: Zero-Shot Cross-lingual Transformer Alignment",
    "crossaligner.py": CROSSALIGNER,
    "contrastive.py": CROSSALIGNER,
    "translate_intent.py": CROSSALIGNER,
    "sentence_mapping.py": "Analyzing Zero-shot Cross-lingual Transfer in Supervised NLP Tasks",
}


PAPER_TEXT = {"ear_push_pull.py": "ear_ding2022.txt"}  # stored paper texts that open with the title


@pytest.mark.parametrize("script", sorted(TITLES))
def test_docstring_cites_the_paper_by_its_title(script):
    doc = ast.get_docstring(ast.parse((ROOT / script).read_text(encoding="utf-8")))
    assert f'"{TITLES[script]}"' in " ".join(doc.split())
    text = ROOT.parent / "shared" / "papers" / PAPER_TEXT.get(script, "-")  # where it is at hand
    if text.is_file():  # the title is the one on the paper's first page
        with open(text, encoding="utf-8") as f:
            assert " ".join(f.readline().lstrip("# ").split()) == TITLES[script]


def test_rerun_with_the_same_settings_is_not_refused(tmp_path):
    """The APT layer used (1 on the tiny encoder) is recorded apart from --ap_layer as asked (None
    when not given), so an identical rerun is not taken for a run made with other settings."""
    argv = ["--data", "demo", "--model", "tiny", "--device", "cpu", "--max_steps", "1", "--out_dir",
            str(tmp_path)]
    ear.main(argv)
    ear.main(argv)
    args = json.loads((tmp_path / "results.json").read_text())["args"]
    assert args["apt_layer"] == 1 and args["ap_layer"] is None
