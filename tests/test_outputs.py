"""Where a run writes: the output folder is checked before any data or model is loaded; a
results.json is replaced only by the same script, code and settings or with --overwrite; the
run records which script and code made it; --max_eval and --threads."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

import common
import xeroalign

DEMO = ["--data", "demo", "--model", "tiny", "--device", "cpu", "--max_steps", "1", "--epochs", "1"]


def run(*args, cwd=ROOT, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env, **kw)


def test_out_dir_naming_a_file_fails_before_loading(tmp_path):
    (tmp_path / "taken").write_text("a file")
    t0 = time.time()
    r = run("xeroalign.py", *DEMO, "--out_dir", str(tmp_path / "taken"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"--out_dir {tmp_path / 'taken'}: a file, not a folder" in r.stderr
    assert "train " not in r.stdout and time.time() - t0 < 60  # nothing was loaded or trained


def test_out_dir_that_cannot_be_written_fails_before_loading():
    r = run("xeroalign.py", *DEMO, "--out_dir", "/proc/xalign/run")  # not even root writes there
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--out_dir /proc/xalign/run: cannot write there" in r.stderr and "train " not in r.stdout


def test_results_record_script_and_code(tmp_path):
    xeroalign.main(DEMO + ["--out_dir", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["script"] == "xeroalign.py"
    assert res["script_sha256"] == common._sha256(ROOT / "xeroalign.py")
    assert res["common_sha256"] == common._sha256(ROOT / "common.py")
    assert "xeroalign.py" not in res["untracked"]  # a tracked method file


def test_another_program_never_replaces_a_run(tmp_path):
    """A fork that keeps xeroalign's method name, run with the same flags into the same folder,
    is refused; --overwrite replaces; the fork's results name it and count it as untracked."""
    out = str(tmp_path / "out")
    assert run("xeroalign.py", *DEMO, "--out_dir", out).returncode == 0
    fork = tmp_path / "my_xeroalign.py"
    shutil.copy(ROOT / "xeroalign.py", fork)
    r = run(str(fork), *DEMO, "--out_dir", out)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "made by xeroalign.py, not my_xeroalign.py" in r.stderr and "--overwrite" in r.stderr
    r = run(str(fork), *DEMO, "--out_dir", out, "--overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "out/results.json").read_text())
    assert res["script"] == "my_xeroalign.py" and res["dirty"] is not False
    assert str(fork) in res["untracked"]
    r = run("xeroalign.py", *DEMO, "--out_dir", out)  # and back: the original does not replace it
    assert r.returncode != 0 and "made by my_xeroalign.py, not xeroalign.py" in r.stderr


def test_same_script_and_settings_replace_other_settings_do_not(tmp_path):
    assert run("xeroalign.py", *DEMO, "--out_dir", str(tmp_path)).returncode == 0
    r = run("xeroalign.py", *DEMO, "--out_dir", str(tmp_path))
    assert r.returncode == 0 and "will be replaced (same script and settings)" in r.stdout
    r = run("xeroalign.py", *DEMO, "--seed", "7", "--out_dir", str(tmp_path))
    assert r.returncode != 0 and "--seed" in r.stderr and "--overwrite" in r.stderr


def test_unreadable_results_are_replaced_only_with_overwrite(tmp_path):
    (tmp_path / "results.json").write_text('{"method": "xeroal')  # truncated
    r = run("xeroalign.py", *DEMO, "--out_dir", str(tmp_path))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "not a readable results file; pass --overwrite to replace it, or delete it" in r.stderr
    r = run("xeroalign.py", *DEMO, "--out_dir", str(tmp_path), "--overwrite")
    assert r.returncode == 0 and json.loads((tmp_path / "results.json").read_text())["steps"] == 1


def test_untracked_import_makes_the_run_dirty(tmp_path, monkeypatch):
    """A run that imports a file of the checkout that git does not track is not a clean commit."""
    helper = ROOT / "xalign_untracked_probe.py"
    helper.write_text("X = 1\n")
    try:
        monkeypatch.syspath_prepend(str(ROOT))
        __import__("xalign_untracked_probe")
        run_info = common.provenance(str(ROOT / "xeroalign.py"))
    finally:
        helper.unlink()
        sys.modules.pop("xalign_untracked_probe", None)
    if run_info["commit"] is None:
        pytest.skip("not a git checkout")
    assert run_info["dirty"] is True and "xalign_untracked_probe.py" in run_info["untracked"]


def test_max_eval_scores_a_fixed_subset(tmp_path):
    metrics = xeroalign.main(DEMO + ["--max_eval", "7", "--out_dir", str(tmp_path / "a")])
    assert {m[s]["n"] for m in metrics.values() for s in ("dev", "test")} == {7}
    again = xeroalign.main(DEMO + ["--max_eval", "7", "--seed", "5", "--out_dir", str(tmp_path / "b")])
    ids = [e.id for e in common.eval_subset(common.load_split("demo", common.DEMO_DIR, "de", "test"), 7)]
    assert len(ids) == len(set(ids)) == 7 and set(metrics) == set(again)
    res = json.loads((tmp_path / "a/results.json").read_text())
    assert res["args"]["max_eval"] == 7
    r = run("tools/make_table.py", str(tmp_path), "--data", "demo", "--metric", "intent_acc")
    assert r.returncode != 0 and "smoke run (--max_eval 7)" in r.stderr


def test_threads_sets_torch_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        xeroalign.main(DEMO + ["--threads", "1", "--out_dir", str(tmp_path)])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_another_method_file_never_replaces_a_run(tmp_path):
    """translate_intent.py into xeroalign.py's folder with the same flags used to log 'will be
    replaced (same settings)' and replace it."""
    out = str(tmp_path)
    assert run("xeroalign.py", *DEMO, "--out_dir", out).returncode == 0
    r = run("translate_intent.py", *DEMO, "--out_dir", out)
    assert r.returncode != 0 and "made by xeroalign.py, not translate_intent.py" in r.stderr
    assert json.loads((tmp_path / "results.json").read_text())["script"] == "xeroalign.py"


@pytest.mark.parametrize("flag,value,message", [
    ("--max_len", "1", "argument --max_len: must be at least 8, got 1"),
    ("--max_len", "2", "argument --max_len: must be at least 8, got 2"),
    ("--lr", "0", "argument --lr: must be positive, got 0"),
    ("--lr", "nan", "argument --lr: must be positive, got nan"),  # was torch's traceback
    ("--lr", "inf", "argument --lr: must be positive, got inf"),  # trained with lr nan
    ("--max_steps", "-1", "argument --max_steps: must be at least 0, got -1"),
    ("--limit_train", "-3", "argument --limit_train: must be at least 0, got -3"),
    ("--max_eval", "-1", "argument --max_eval: must be at least 0, got -1"),
    ("--threads", "-2", "argument --threads: must be at least 0, got -2")])
def test_bad_numbers_name_their_flag(flag, value, message):
    """--max_len 1 was a RuntimeError traceback and 2 'loss is nan'; --lr, --max_steps and
    --limit_train shared one message that named none of them."""
    r = run("xeroalign.py", *DEMO, flag, value)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
