"""Every method file: listed here, and taking the same run flags (parsed by common.add_run_args)."""
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPTS = ["xeroalign", "crossaligner", "contrastive", "translate_intent", "ear_push_pull", "sentence_mapping", "ppa_moco_tlm"]
RUN_FLAGS = ["--data", "--lang", "--model", "--data_dir", "--train_lang", "--epochs", "--batch_size", "--lr",
             "--max_len", "--seed", "--device", "--dtype", "--threads", "--out_dir", "--overwrite",
             "--max_steps", "--limit_train", "--max_eval", "--select_on"]


def test_every_method_file_is_listed():
    """Every tracked top-level file but common.py is a method file listed here; a fork beside them
    (an untracked my_xeroalign.py, say) is the reader's own and does not count."""
    r = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True)
    tracked = {name[:-3] for name in r.stdout.split() if "/" not in name}
    if r.returncode == 0 and tracked:
        assert tracked - {"common"} == set(SCRIPTS)
    else:  # not a git checkout: every listed file is there
        assert set(SCRIPTS) <= {p.stem for p in ROOT.glob("*.py")}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_every_run_flag(script):
    r = subprocess.run([sys.executable, f"{script}.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for flag in RUN_FLAGS:
        assert flag in r.stdout, f"{script}.py --help lacks {flag}"


def test_readme_methods_table_is_true():
    import re
    rows = re.findall(r"\| `(\w+)\.py` \| (\d+) \|", (ROOT / "README.md").read_text())
    assert sorted(name for name, _ in rows) == sorted(SCRIPTS)
    for name, lines in rows:
        assert int(lines) == len((ROOT / f"{name}.py").read_text().splitlines()), f"README line count of {name}.py"


def test_results_record_the_commit_a_run_started_with(tmp_path, monkeypatch):
    """A checkout that moves on while a run trains must not relabel the run (main reads the commit first)."""
    import json
    import types

    import common
    import xeroalign
    real = common.git_commit()[0]
    load = common.load_task

    def moved_on(*a, **k):  # the run has started; now the checkout moves on
        monkeypatch.setattr(common.subprocess, "run", lambda *a, **k: types.SimpleNamespace(stdout="f" * 40 + "\n"))
        return load(*a, **k)

    monkeypatch.setattr(common, "load_task", moved_on)
    xeroalign.main(["--data", "demo", "--model", "tiny", "--device", "cpu", "--max_steps", "1", "--out_dir", str(tmp_path)])
    monkeypatch.undo()
    assert json.loads((tmp_path / "results.json").read_text())["commit"] == real != "f" * 40


def test_common_shares_only_data_heads_and_metrics():
    """No argument parsing, setup, precision, seeding or training/selection loop in common.py: each method
    file holds its own (the whole training program reads top to bottom in one file)."""
    text = (ROOT / "common.py").read_text(encoding="utf-8")
    for word in ("argparse", "init_process_group", "torch.autocast", "manual_seed", "default_generator",
                 "np.random.seed",
                 "random.seed(", "EpochSelector", "def setup", "add_run_args", ".backward(", "optim."):
        assert word not in text, f"common.py has {word}"
    long = [n for n, line in enumerate(text.splitlines(), 1) if len(line) > 100]
    assert not long, f"common.py has lines over 100 characters (lines {long[:10]})"
    for script in SCRIPTS:
        code = (ROOT / f"{script}.py").read_text(encoding="utf-8")
        for word in ("argparse.ArgumentParser", "manual_seed", "torch.autocast", "common.save_results", ".backward("):
            assert word in code, f"{script}.py lacks {word}"
        assert max(map(len, code.splitlines())) <= 120, f"{script}.py has lines over 120 characters"


def test_tiny_encoder_draws_from_the_callers_seed(tmp_path):
    """common.py seeds no global generator: the tiny encoder's random weights come from the run's own
    --seed (one seed, one encoder; two seeds, two encoders), and building it does not reset the caller's
    generator. (build_tiny used to reseed it with 0: every --seed got the same encoder and heads.)"""
    import torch

    import common
    texts = [" ".join(e.words) for e in common.load_split("demo", common.DEMO_DIR, "en", "train")]

    def build(seed, name):
        torch.manual_seed(seed)
        enc, _ = common.load_encoder("tiny", texts, tmp_path / name, 32)
        return enc.get_input_embeddings().weight.detach().clone(), torch.rand(3)  # the next draws
    (w1, r1), (w1_again, r1_again), (w2, r2) = build(1, "a"), build(1, "b"), build(2, "c")
    assert torch.equal(w1, w1_again) and torch.equal(r1, r1_again)
    assert not torch.equal(w1, w2) and not torch.equal(r1, r2)


def test_the_project_speaks_for_itself():
    """Tracked files outside tests/ and .ci/ name no path outside the repository, and the README is a
    front page of about 250 lines (260 at most)."""
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for f in files:
        if f.startswith(("tests/", ".ci/", "runs/")) or not f.endswith((".py", ".md", ".txt", ".sh")):
            continue
        text = (ROOT / f).read_text(encoding="utf-8")
        for word in ("../shared", "/work/shared", "METHODS.md"):
            assert word not in text, f"{f} mentions {word}"
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 260
