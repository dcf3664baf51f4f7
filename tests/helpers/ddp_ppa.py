"""Run by tests/test_ppa.py, under torchrun or as one plain process: ppa_moco_tlm.main() (stage 1),
recording the MoCo queue and the query side's weights after the run. argv: out file (each process
writes <out>.<rank>), then ppa_moco_tlm flags."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import ppa_moco_tlm as ppa  # noqa: E402

made = {}


class RecordedKeys(ppa.MomentumKeys):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        made["keys"] = self


class RecordedQuery(ppa.QuerySide):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        made["query"] = self


ppa.MomentumKeys, ppa.QuerySide = RecordedKeys, RecordedQuery
if os.environ.get("PPA_SKIP_GATHER"):  # the bug the test must catch: each process queues its own keys
    ppa.dist.all_gather = lambda got, k: [g.copy_(k) for g in got]
ppa.main(sys.argv[2:])
keys = made["keys"]
torch.save({"queue": keys.queue.clone(), "ptr": keys.ptr,
            "weights": [p.detach().clone() for p in made["query"].parameters()],
            "key_weights": [p.detach().clone() for p in keys.params()]},
           f"{sys.argv[1]}.{os.environ.get('RANK', '0')}")
