"""Run by the ddp_matches_single tests, under torchrun or as one plain process: a method file's
main() with dropout off, recording the gradients the optimizer sees at the first step (after DDP's
all-reduce, before clipping) and the weights after training (what clipping last saw: before any
evaluation changes nothing). argv: the method file's module name, out file, then its flags."""
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import common  # noqa: E402

seen = {}
load, clip = common.load_encoder, torch.nn.utils.clip_grad_norm_


def load_without_dropout(*a, **k):  # dropout draws differ between 1 and 2 processes: turn it off
    enc, tok = load(*a, **k)
    for m in enc.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return enc, tok


def clip_and_record(params, *a, **k):
    params = list(params)
    if "grads" not in seen:
        seen["grads"] = [p.grad.detach().clone() for p in params if p.grad is not None]
    seen["weights"] = params  # the live weights: read after the run
    return clip(params, *a, **k)


common.load_encoder = load_without_dropout
torch.nn.utils.clip_grad_norm_ = clip_and_record
module = importlib.import_module(sys.argv[1])
if module.main(sys.argv[3:]) is not None:  # rank 0 (or the single process)
    torch.save({"grads": seen["grads"], "weights": [p.detach().clone() for p in seen["weights"]]},
               sys.argv[2])
