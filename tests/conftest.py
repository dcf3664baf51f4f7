"""Shared test helpers: the repo root on sys.path, the fixture folder, and small file writers."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))


@pytest.fixture
def fix():
    return FIX


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def ddp_one_and_two(module, tmp_path, flags):
    """Run `module`'s main() through tests/helpers/ddp_equal.py as one process and as two (torchrun,
    gloo) with the same flags, and assert that the gradients of the first step and the weights after
    the last agree to float tolerance. Returns the two runs' results.json, one process's first."""
    import json
    import os
    import subprocess

    import torch
    helper, env = str(ROOT / "tests/helpers/ddp_equal.py"), {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, launch in (("one", []), ("two", ["-m", "torch.distributed.run", "--nproc_per_node", "2"])):
        r = subprocess.run([sys.executable, *launch, helper, module, str(tmp_path / f"{name}.pt"), *flags,
                            "--out_dir", str(tmp_path / name)], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert len(one["grads"]) == len(two["grads"]) > 10
    grad_diff = max((a - b).abs().max().item() for a, b in zip(one["grads"], two["grads"]))
    grad_size = max(a.abs().max().item() for a in one["grads"])
    weight_diff = max((a - b).abs().max().item() for a, b in zip(one["weights"], two["weights"]))
    print(f"largest difference: gradients {grad_diff:.2e} (of {grad_size:.2e}), "
          f"weights {weight_diff:.2e}")
    assert grad_diff <= 1e-5 * grad_size and weight_diff <= 1e-5
    return [json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two")]
