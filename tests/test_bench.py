"""tools/bench.py runs (figures are not checked: it is a benchmark) and both styles see the same batches."""
import argparse
import contextlib
import sys
from pathlib import Path

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import bench  # noqa: E402
import common  # noqa: E402


def test_bench_prints_a_ratio_per_method_and_a_profile_per_style(tmp_path, capsys):
    bench.main(["--model", "tiny", "--steps", "1", "--warmup", "0", "--rounds", "1", "--batch_size", "4",
                "--methods", "task", "xa", "--profile", "1", "--profile_rows", "3", "--tmp", str(tmp_path)])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if " ratio " in line] == ["task", "xa"]
    assert out.count("profile: xa, ") == 2 and "official style" in out and "ours style" in out


def test_styles_count_the_same_real_tokens_and_official_pads_to_max_len(tmp_path):
    train = common.load_split("demo", ROOT / "data/demo", "en", "train")[:8]
    trans = common.load_translations("demo", ROOT / "data/demo", "de", train)
    labels = common.Labels.from_train("demo", train)
    args = argparse.Namespace(max_len=40, batch_size=4, warmup=0, steps=1)
    enc, tok = common.load_encoder("tiny", [" ".join(e.words) for e in train] + list(trans), tmp_path, 40)
    b = bench.batches(args, tok, labels, train, trans)[0]
    model = common.TaskModel(enc, len(labels.intents), len(labels.slots), "first")
    head = torch.nn.Linear(40 * len(labels.slots), len(labels.slots))
    for method in ("task", "xa", "ca+xa"):
        out = {style: bench.step_fn(style, method, model, head, b, torch.device("cpu"), contextlib.nullcontext(), 40,
                                    tok.pad_token_id) for style in ("official", "ours")}
        (_, real_o, proc_o), (loss, real_u, proc_u) = out["official"], out["ours"]
        n = 1 if method == "task" else 2
        assert real_o == real_u == int(b["attention_mask"].sum()) + (n - 1) * int(b["tgt_attention_mask"].sum())
        assert proc_o == n * 4 * 40 and proc_u < proc_o and torch.isfinite(loss)


def test_model_flops_count_real_tokens_only():
    b = {"attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]), "tgt_attention_mask": torch.tensor([[1, 0, 0], [1, 1, 1]])}
    # N = 10 non-embedding parameters, 2 layers, hidden 4: 6 N per real token + 12 L d n^2 per sequence
    assert bench.model_flops(b, "task", 10, 2, 4) == 6 * 10 * 5 + 12 * 2 * 4 * (2 ** 2 + 3 ** 2)
    assert bench.model_flops(b, "xa", 10, 2, 4) == 6 * 10 * 9 + 12 * 2 * 4 * (4 + 9 + 1 + 9)


def test_peak_rss_is_reset_and_sees_a_new_allocation():
    import pytest
    if not (Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()):
        pytest.skip("needs Linux /proc")
    bench.reset_peak_rss()
    before = bench.peak_rss_mb()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident
    assert bench.peak_rss_mb() - before > 48
    del block
    bench.reset_peak_rss()
    assert bench.peak_rss_mb() < before + 48  # the peak went back down with the reset
