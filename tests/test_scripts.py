"""Every method file: listed here, and taking the same run flags (parsed by common.add_run_args)."""
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPTS = ["xeroalign", "crossaligner", "contrastive", "translate_intent", "ear_push_pull", "sentence_mapping", "ppa_moco_tlm"]
RUN_FLAGS = ["--data", "--lang", "--model", "--data_dir", "--train_lang", "--epochs", "--batch_size", "--lr",
             "--max_len", "--seed", "--device", "--out_dir", "--max_steps", "--limit_train", "--select_on"]


def test_every_method_file_is_listed():
    found = {p.stem for p in ROOT.glob("*.py")} - {"common"}
    assert found == set(SCRIPTS)


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
    """A checkout that moves on while a run trains must not relabel the run (setup reads the commit)."""
    import json
    import types

    import common
    import xeroalign
    common.git_commit.cache_clear()
    args = xeroalign.parse_args(["--data", "demo", "--model", "tiny", "--out_dir", str(tmp_path)])
    common.setup(args)  # the run starts; then the checkout moves on
    monkeypatch.setattr(common.subprocess, "run", lambda *a, **k: types.SimpleNamespace(stdout="f" * 40 + "\n"))
    path = common.save_results(tmp_path, "xeroalign", args, {})
    monkeypatch.undo()
    common.git_commit.cache_clear()
    assert json.loads(path.read_text())["commit"] == common.git_commit()[0] != "f" * 40
    common.git_commit.cache_clear()
