"""How well an encoder's sentence vectors match translations: bitext retrieval on XNLI dev premises.

    python tools/align_probe.py --data_dir data/xnli --langs fr,es,de,bg,ar,zh,hi \
        --model intfloat/multilingual-e5-small --model <stage-1 --out_dir>/aligned

A diagnostic for ppa_moco_tlm.py's stage 1, which pulls the first-token state of a sentence towards
that of its translation: did the alignment run move translations closer, before any fine-tuning?
For each --model and language, the first --n distinct premises of the second half of XNLI's
row-parallel dev sets (the half our --dev_halves runs evaluate on, and in no alignment corpus) are
encoded in English and in the target language; R@1 is the share of sentences whose nearest
neighbour by cosine (among the --n candidates of the other language) is their own translation,
averaged over both directions. Two sentence vectors: the first-token state (what PPA aligns and
fine-tuning reads with --cls first) and the attention-masked mean of the last layer. Prints a table;
not a test.
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import common  # noqa: E402


def premises(data_dir, langs, n):
    """{lang: [premise]}: the first n distinct English premises of the second half, and the same rows
    in every language (XNLI dev is row-parallel; each premise comes with three hypotheses)."""
    rows = {x: common.load_split("xnli", data_dir, x, "dev") for x in ["en", *langs]}
    half = len(rows["en"]) // 2
    keep, seen = [], set()
    for i in range(half, len(rows["en"])):
        if rows["en"][i].a not in seen and len(keep) < n:
            seen.add(rows["en"][i].a)
            keep.append(i)
    return {x: [rows[x][i].a for i in keep] for x in rows}


@torch.no_grad()
def vectors(enc, tok, texts, batch_size=64):
    """(first-token, masked-mean) L2-normalised last-layer vectors, each (N, d)."""
    first, mean = [], []
    for s in range(0, len(texts), batch_size):
        b = tok(texts[s:s + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
        h = enc(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        first.append(h[:, 0])
        mean.append((h * m).sum(1) / m.sum(1))
    return F.normalize(torch.cat(first), dim=-1), F.normalize(torch.cat(mean), dim=-1)


def r_at_1(a, b):
    """Mean of both directions' R@1 (%): row i of a and row i of b are translations."""
    sim = a @ b.T
    gold = torch.arange(len(a))
    return 50.0 * ((sim.argmax(1) == gold).float().mean() + (sim.argmax(0) == gold).float().mean()).item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--model", action="append", required=True, help="encoder folder (repeatable)")
    p.add_argument("--data_dir", required=True, help="XNLI folder (XTREME layout: dev-<lang>.tsv)")
    p.add_argument("--langs", default="fr,es,de,bg,ar,zh,hi")
    p.add_argument("--n", type=int, default=400, help="distinct premises per language")
    a = p.parse_args(argv)
    langs = a.langs.split(",")
    try:
        texts = premises(a.data_dir, langs, a.n)
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"XNLI dev premises, second half, {len(texts['en'])} per language; R@1 (%), mean of en->x and x->en\n")
    print("| model | vector | " + " | ".join(langs) + " | avg |")
    print("|---|---|" + "---:|" * (len(langs) + 1))
    for name in a.model:
        enc, tok = common.load_encoder(name)
        enc.eval()
        en = vectors(enc, tok, texts["en"])
        other = {x: vectors(enc, tok, texts[x]) for x in langs}
        for k, kind in enumerate(("first token", "mean")):
            r = [r_at_1(en[k], other[x][k]) for x in langs]
            print(f"| {name} | {kind} | " + " | ".join(f"{v:.1f}" for v in r) + f" | {statistics.mean(r):.1f} |", flush=True)


if __name__ == "__main__":
    main()
