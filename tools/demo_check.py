"""Run every method file's demo (`--data demo --model tiny`, default seed) and record or check its metrics.

A restructuring of the method files must change no number. Record the metrics before the change and
check them after it:

    python tools/demo_check.py --record /tmp/demo_before.json      # before
    python tools/demo_check.py --check /tmp/demo_before.json       # after: exits 1 on any difference

--seed N runs every demo with that seed instead of the default.

Each run is a subprocess from a temporary directory (one thread), so nothing is written into the
repository. Compared: the metrics and every per-epoch training number (times aside).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMOS = {  # name -> method file and extra flags (none are needed: the extras cover other code paths)
    "xeroalign": ("xeroalign.py", []),
    "zeroshot": ("xeroalign.py", ["--no-align"]),
    "crossaligner": ("crossaligner.py", []),
    "crossaligner-cov": ("crossaligner.py", ["--aux", "ca", "xa", "--weighting", "cov"]),
    "contrastive": ("contrastive.py", []),
    "translate_intent": ("translate_intent.py", []),
    "ear": ("ear_push_pull.py", []),
    "sentence_mapping": ("sentence_mapping.py", []),
    "ppa": ("ppa_moco_tlm.py", []),  # both stages: align, then fine-tune the aligned encoder
    "ppa_finetune": ("ppa_moco_tlm.py", ["--stage", "finetune"]),
    "ppa_align": ("ppa_moco_tlm.py", ["--stage", "align"]),
}


def run_all(names, seed=None):
    out = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            script, extra = DEMOS[name]
            folder = Path(tmp) / name
            cmd = [sys.executable, str(ROOT / script), "--data", "demo", "--model", "tiny", *extra, "--out_dir", str(folder)]
            cmd += ["--seed", str(seed)] if seed is not None else []
            r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env)
            if r.returncode:
                raise SystemExit(f"error: {' '.join(cmd[1:])} failed:\n{r.stderr[-2000:]}")
            res = json.loads((folder / "results.json").read_text())
            history = [{k: v for k, v in h.items() if k != "dev" and not k.endswith("_s")} for h in res.get("history", [])]
            out[name] = {"metrics": res.get("metrics"), "history": history}
            print(f"{name}: {json.dumps(res.get('metrics'))[:150]}", flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", metavar="FILE", help="write every demo's metrics and training-loss history here")
    g.add_argument("--check", metavar="FILE", help="rerun and compare with a recorded file; exit 1 on a difference")
    p.add_argument("--only", nargs="+", choices=list(DEMOS), default=list(DEMOS), help="these demos only")
    p.add_argument("--seed", type=int, help="pass --seed N to every demo (default: each file's own)")
    a = p.parse_args(argv)
    got = run_all(a.only, a.seed)
    if a.record:
        Path(a.record).write_text(json.dumps(got, indent=1) + "\n")
        print(f"wrote {a.record}")
        return 0
    want = json.loads(Path(a.check).read_text())
    bad = [n for n in a.only if got[n] != want.get(n)]
    for n in a.only:
        print(f"{n}: {'DIFFERS' if n in bad else 'identical'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
