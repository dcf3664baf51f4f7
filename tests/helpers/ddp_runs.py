"""Run under torchrun by tests/test_correctness.py: each DDP-capable method file's main() in turn, in
the same processes (one torch import and one process group start for all), with its default flags
and with --cls first. argv: out_dir, then script names."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import importlib  # noqa: E402

import torch.distributed as dist  # noqa: E402

dist.init_process_group("gloo")  # once: the method files' setup() finds it started
dist.destroy_process_group = lambda *a, **k: None  # and each main() leaves it for the next
out = Path(sys.argv[1])
DEMO = ["--data", "demo", "--data_dir", str(ROOT / "data/demo"), "--lang", "de", "--model", "tiny", "--device", "cpu",
        "--epochs", "1", "--max_steps", "3"]
for script in sys.argv[2:]:
    module = importlib.import_module(script)
    for name, flags in (("default", []), ("first", ["--cls", "first"])):
        module.main(DEMO + flags + ["--out_dir", str(out / f"{script}-{name}")])
