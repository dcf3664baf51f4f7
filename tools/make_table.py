"""Turn results.json files into the README's markdown tables.

    python tools/make_table.py runs/repro/side --data massive --metric intent_acc --paired zeroshot
    python tools/make_table.py runs/repro/tod --data mtod --metric slot_f1 --split test --langs es,th
    python tools/make_table.py runs/repro --data sts --metric spearman                          # STS
    python tools/make_table.py runs/repro --data sts --section mapping --metric cosine          # mappings
    python tools/make_table.py runs/repro --data sts --section cross_lingual --metric spearman  # Table IV
    python tools/make_table.py --readme README.md      # rewrite every table under a make_table marker
    python tools/make_table.py --readme README.md --check   # fail if one differs from its results

One row per method (CrossAligner runs are told apart by their auxiliary losses and weighting), one
column per language, each cell the mean ± sample std over the seeds found (a seed's value: its one
run's, or the mean over its runs, e.g. the English results of the one-run-per-target-language
aligned methods), then the average over the non-English columns: per seed, the average of its
languages, then the mean ± std of those averages over the seeds that cover every column. Then the
number of those seeds (with "+N partial" for seeds missing a column) and the commit(s). Two runs of
one method and seed that report the same non-English language are an error, not averaged.
The English column holds English-trained runs only (a Target run trained on Thai is not an English
result). Under each of our rows that the paper also reports, the paper's number follows, typed in by
hand below with its table; "–" where the paper has no such cell. A paper row's average is over the
columns shown, not the paper's own average.

In a README, a line `<!-- make_table FOLDER... --data D --metric M ... -->` marks the table beneath it:
--readme rewrites each such table from its results (the folder relative to the README's folder) and
leaves everything else as it is; it stops, naming the line, if a folder has no results.
"""
import argparse
import json
import re
import shlex
import statistics
from pathlib import Path



def read_results(path):
    """One results.json; a broken or truncated one is an error naming the file, not a JSON traceback."""
    try:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: {path}: not a readable results file ({e})") from None
    if not isinstance(res, dict):
        raise SystemExit(f"error: {path}: not a results file (a JSON object is expected)")
    return res


# (data, metric) -> method -> (source, {lang: number}); typed in from the papers' tables (XLM-R large).
XA21 = "Gritta & Iacobacci 2021"
CH20 = "Choi et al. 2020"
GI22 = "Gritta et al. 2022"
DI22 = "Ding et al. 2022"
PPA7 = ("fr", "es", "de", "bg", "ar", "zh", "hi")  # the XNLI targets of PPA's Tables 2 and 5, in their order
XNLI_TARGETS = ("ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")  # non-English, paper order
# CrossAligner paper Tables 4 (MultiATIS++) and 5 (MTOP, MTOD): intent accuracy / slot F1 per row
MATIS8 = ("de", "es", "fr", "tr", "hi", "zh", "pt", "ja")
GI22_MATIS = {
    "crossaligner zero-shot": "95.1/84.8 97.3/84.9 97.9/79.5 75.4/41.8 91.3/78.4 88.6/82.1 96.9/80.9 86.6/79.9",
    "crossaligner xa": "97.4/84.1 97.4/86.2 97.9/83.3 93.6/76.0 95.1/80.1 96.0/83.7 98.0/81.6 95.6/83.7",
    "crossaligner ca": "96.9/90.4 97.4/73.1 98.0/88.7 88.7/75.4 94.5/86.6 94.2/88.2 97.4/81.7 91.6/88.7",
    "crossaligner xa+ca (sum)": "97.3/89.7 97.5/72.3 97.8/82.1 94.0/69.1 95.3/79.1 95.9/89.6 97.4/80.1 94.0/91.1",
    "crossaligner xa+ca (cov)": "97.6/88.7 97.6/72.5 98.0/88.8 93.3/73.9 95.1/79.7 96.5/89.9 97.5/80.9 97.0/90.5",
}
MTOP5, MTOD2 = ("de", "es", "fr", "th", "hi"), ("es", "th")
GI22_MTOP_MTOD = {
    "crossaligner zero-shot": "90.5/80.1 93.8/81.7 92.5/83.2 89.7/64.9 91.8/75.5 97.5/87.3 90.6/62.8",
    "crossaligner xa": "96.4/86.1 96.4/84.4 95.4/86.2 93.1/69.5 95.1/80.5 99.3/88.8 97.6/62.0",
    "crossaligner ca": "95.4/86.0 95.1/81.9 94.5/84.9 92.6/73.9 94.3/81.1 98.2/87.1 92.4/70.4",
    "crossaligner xa+ca (sum)": "96.3/85.3 96.6/83.1 95.9/85.9 93.3/72.8 94.5/80.4 99.2/88.7 98.0/67.7",
    "crossaligner xa+ca (cov)": "96.4/86.6 96.1/83.8 95.8/85.7 93.3/74.3 95.2/80.4 99.3/89.3 98.2/67.2",
}


def _gi22(cells, langs, which):
    """{lang: number} from 'acc/f1 acc/f1 ...' cells; which: 0 intent accuracy, 1 slot F1."""
    return {lang: float(c.split("/")[which]) for lang, c in zip(langs, cells.split())}


PAPER = {
    # PPA Table 2 / Table 5 (zero-shot XNLI, mBERT; 250k pairs per language; its 7 targets fr es de bg ar zh hi)
    ("xnli", "accuracy"): {
        "finetune": ("Pan et al. 2021, Table 2 (mBERT, Hu et al. 2020)", dict(zip(PPA7, (73.4, 73.5, 70.0, 68.0, 64.3, 67.8, 58.9)))),
        "ppa": ("Pan et al. 2021, Table 2 (250k)", dict(zip(PPA7, (75.5, 76.2, 73.3, 74.6, 68.2, 71.7, 62.8)))),
        "ppa-no_tlm": ("Pan et al. 2021, Table 5 (250k, -TLM)", dict(zip(PPA7, (74.7, 75.2, 71.4, 72.7, 66.2, 68.9, 64.0)))),
        "ppa-mlm": ("Pan et al. 2021, Table 5 (250k, TLM -> MLM)", dict(zip(PPA7, (75.0, 75.2, 70.8, 72.5, 66.2, 69.0, 61.9)))),
        # EAR Table 1 (XLM-R base; plain and RS-DA are the authors' reimplementations) and Table 3
        # (ablations, mBERT base; only en..hi of that table are legible in the shipped text)
        "plain": (f"{DI22}, Table 1 (XLM-R base)", dict(zip(XNLI_TARGETS, (72.6, 78.9, 77.0, 76.5, 78.6, 78.2, 70.3, 76.4, 65.0, 72.4, 73.4, 67.6, 75.5, 75.0)))),
        "rsda": (f"{DI22}, Table 1 (XLM-R base)", dict(zip(XNLI_TARGETS, (73.2, 78.2, 77.1, 76.9, 79.2, 79.0, 72.3, 76.9, 66.5, 73.2, 73.1, 68.2, 76.4, 75.1)))),
        "ear": (f"{DI22}, Table 1 (XLM-R base)", dict(zip(XNLI_TARGETS, (74.5, 78.8, 77.5, 77.0, 79.4, 79.5, 72.6, 76.8, 66.7, 73.9, 74.7, 68.7, 76.4, 75.8)))),
        "ear w/o EPT": (f"{DI22}, Table 3 (mBERT base)", dict(zip(XNLI_TARGETS, (67.0, 71.2, 72.7, 67.6, 75.5, 75.1, 63.4)))),
        "ear w/o APT": (f"{DI22}, Table 3 (mBERT base)", dict(zip(XNLI_TARGETS, (66.5, 70.8, 72.8, 68.5, 76.0, 75.1, 63.4)))),
    },
    # EAR Table 2 (PAWS-X, XLM-R base; plain and RS-DA are the authors' reimplementations)
    ("pawsx", "accuracy"): {
        "plain": (f"{DI22}, Table 2 (XLM-R base)", dict(de=88.9, es=89.8, fr=89.2, ja=78.2, ko=78.4, zh=81.4)),
        "rsda": (f"{DI22}, Table 2 (XLM-R base)", dict(de=88.8, es=89.7, fr=90.0, ja=78.7, ko=80.2, zh=82.3)),
        "ear": (f"{DI22}, Table 2 (XLM-R base)", dict(de=89.0, es=90.3, fr=90.1, ja=80.5, ko=81.7, zh=83.1)),
    },
    # Table I: the cross-encoder (GLUE) on STS-B or KorSTS; its Spanish/Arabic are SemEval-2017, not stsb-multi-mt
    ("sts", "spearman"): {"sentence_mapping-cross": (f"{CH20}, Table I", dict(en=87.44, ko=82.34))},
    # section III.D: XLM-R sentence embeddings, STS-B -> KorSTS (no Procrustes figure is given)
    ("sts/mapping", "cosine"): {
        "sentence_mapping-none / unmapped": (f"{CH20}, III.D", dict(ko=0.4636)),
        "sentence_mapping-none / normal_equation": (f"{CH20}, III.D", dict(ko=0.7131)),
        "sentence_mapping-none / fit_linear": (f"{CH20}, III.D", dict(ko=0.7265)),
    },
    # Table IV: STS-B-trained, English-Korean pairs; the paper does not name the map it used
    ("sts/cross_lingual", "spearman"): {
        "sentence_mapping-bi / unmapped": (f"{CH20}, Table IV", dict(ko=49.03)),
        "sentence_mapping-bi / normal_equation": (f"{CH20}, Table IV (map not named)", dict(ko=59.16)),
    },
    ("matis", "intent_acc"): {
        "zeroshot": (f"{XA21}, Table 5", dict(de=96.4, es=97.0, fr=95.3, tr=76.2, hi=91.9, zh=94.3, pt=90.9, ja=89.8)),
        "xeroalign": (f"{XA21}, Table 5", dict(de=97.6, es=97.8, fr=95.4, tr=93.4, hi=94.0, zh=96.4, pt=97.6, ja=96.1)),
        "target": (f"{XA21}, Table 5", dict(de=97.0, es=97.3, fr=97.8, tr=80.6, hi=89.7, zh=95.5, pt=97.2, ja=95.5)),
        "contrastive": (f"{GI22}, Table 4", dict(de=97.5, es=97.3, fr=97.6, tr=93.3, hi=94.6, zh=96.9, pt=97.4, ja=97.3)),
        "translate_intent": (f"{GI22}, Table 4", dict(de=97.3, es=97.6, fr=97.5, tr=91.6, hi=94.4, zh=96.4, pt=97.0, ja=95.2)),
    },
    ("matis", "slot_f1"): {
        "zeroshot": (f"{XA21}, Table 5", dict(de=84.8, es=85.5, fr=81.8, tr=41.2, hi=68.2, zh=82.5, pt=81.9, ja=77.6)),
        "xeroalign": (f"{XA21}, Table 5", dict(de=84.9, es=85.9, fr=81.4, tr=70.6, hi=79.7, zh=83.3, pt=79.9, ja=83.5)),
        "target": (f"{XA21}, Table 5", dict(de=95.3, es=87.9, fr=93.8, tr=74.0, hi=84.1, zh=95.9, pt=94.1, ja=92.6)),
        "contrastive": (f"{GI22}, Table 4", dict(de=79.6, es=77.1, fr=76.1, tr=76.3, hi=79.8, zh=87.5, pt=77.0, ja=80.9)),
        "translate_intent": (f"{GI22}, Table 4", dict(de=84.7, es=84.1, fr=84.7, tr=65.6, hi=80.9, zh=83.0, pt=82.7, ja=74.1)),
    },
    ("mtod", "intent_acc"): {
        "zeroshot": (f"{XA21}, Table 6", dict(es=97.1, th=82.8)),
        "xeroalign": (f"{XA21}, Table 6", dict(es=99.2, th=98.4)),
        "target": (f"{XA21}, Table 6", dict(es=98.8, th=97.8)),
        "contrastive": (f"{GI22}, Table 5", dict(es=99.2, th=97.3)),
        "translate_intent": (f"{GI22}, Table 5", dict(es=99.2, th=96.9)),
    },
    ("mtod", "slot_f1"): {
        "zeroshot": (f"{XA21}, Table 6", dict(es=85.7, th=47.7)),
        "xeroalign": (f"{XA21}, Table 6", dict(es=88.4, th=57.3)),
        "target": (f"{XA21}, Table 6", dict(es=89.8, th=94.4)),
        "contrastive": (f"{GI22}, Table 5", dict(es=89.0, th=70.1)),
        "translate_intent": (f"{GI22}, Table 5", dict(es=87.5, th=65.4)),
    },
    ("mtop", "intent_acc"): {
        "zeroshot": (f"{XA21}, Table 2", dict(es=91.9, fr=93.0, de=87.5, hi=91.4, th=87.6)),
        "xeroalign": (f"{XA21}, Table 2", dict(es=96.6, fr=96.5, de=95.7, hi=95.2, th=94.1)),
        "target": (f"{XA21}, Table 2", dict(es=95.9, fr=95.5, de=96.6, hi=95.1, th=94.8)),
        "contrastive": (f"{GI22}, Table 5", dict(de=96.3, es=96.2, fr=95.5, th=93.0, hi=95.5)),
        "translate_intent": (f"{GI22}, Table 5", dict(de=96.4, es=96.2, fr=95.5, th=92.9, hi=94.9)),
    },
    ("mtop", "slot_f1"): {
        "zeroshot": (f"{XA21}, Table 2", dict(es=84.3, fr=83.7, de=80.7, hi=76.5, th=55.6)),
        "xeroalign": (f"{XA21}, Table 2", dict(es=84.4, fr=83.3, de=84.5, hi=80.1, th=69.1)),
        "target": (f"{XA21}, Table 2", dict(es=91.2, fr=89.6, de=88.3, hi=89.1, th=87.7)),
        "contrastive": (f"{GI22}, Table 5", dict(de=84.3, es=83.3, fr=85.2, th=70.6, hi=80.9)),
        "translate_intent": (f"{GI22}, Table 5", dict(de=83.4, es=73.5, fr=84.5, th=68.4, hi=75.6)),
    },
}


for _m, _cells in GI22_MATIS.items():
    for _i, _metric in enumerate(("intent_acc", "slot_f1")):
        PAPER[("matis", _metric)][_m] = (f"{GI22}, Table 4", _gi22(_cells, MATIS8, _i))
for _m, _cells in GI22_MTOP_MTOD.items():
    for _i, _metric in enumerate(("intent_acc", "slot_f1")):
        PAPER[("mtop", _metric)][_m] = (f"{GI22}, Table 5", _gi22(" ".join(_cells.split()[:5]), MTOP5, _i))
        PAPER[("mtod", _metric)][_m] = (f"{GI22}, Table 5", _gi22(" ".join(_cells.split()[5:]), MTOD2, _i))


def method_name(res):
    if res["method"] == "zeroshot" and "aux" in res:  # crossaligner.py with --aux and no names
        return "crossaligner zero-shot"
    if res["method"] == "crossaligner":
        return "crossaligner " + "+".join(res["aux"]) + (f" ({res['weighting']})" if len(res["aux"]) > 1 else "")
    if res["method"] == "ear":  # ear_push_pull.py's ablations: --alpha 0 (no EPT), --beta 0 (no APT)
        a = res.get("args", {})
        return "ear" + (" w/o EPT" if a.get("alpha") == 0 else "") + (" w/o APT" if a.get("beta") == 0 else "")
    return res["method"]


# rows in this order where present (baseline first, then each method and its ablations); others follow
ORDER = ["zeroshot", "crossaligner zero-shot", "target", "plain", "finetune", "xeroalign", "crossaligner xa",
         "crossaligner ca", "crossaligner xa+ca (sum)", "crossaligner xa+ca (cov)", "rsda", "ear", "ear w/o EPT",
         "ear w/o APT", "ppa", "ppa-no_tlm", "ppa-mlm"]


def load(folders, data):
    """results.json files under the folder(s) for `data`, grouped by method name (ORDER, then path order)."""
    runs = {}
    for folder in [folders] if isinstance(folders, (str, Path)) else folders:
        for path in sorted(Path(folder).rglob("results.json")):
            res = read_results(path)
            if (res.get("args") or {}).get("max_eval"):  # scored on a subset: no table number
                raise SystemExit(f"error: {path}: a smoke run (--max_eval "
                                 f"{res['args']['max_eval']}) scored on a subset of each dev and "
                                 "test set; move it out of the folder to make a table")
            if res.get("data") == data and res.get("metrics"):  # (PPA's alignment stage has no metrics)
                runs.setdefault(method_name(res), []).append({**res, "path": str(path)})
    rank = {m: i for i, m in enumerate(ORDER)}
    return dict(sorted(runs.items(), key=lambda kv: rank.get(kv[0], len(ORDER))))


def derived(runs, section, split):
    """STS mapping/cross_lingual results as pseudo-runs, one method per (run method, map):
    results[section][lang][map][metric] -> metrics[lang][split][metric]."""
    out = {}
    for method, rs in runs.items():
        for r in rs:
            for lang, maps in r.get(section, {}).items():
                for name, m in maps.items():
                    if isinstance(m, dict):
                        rows = out.setdefault(f"{method} / {name}", {})
                        rows.setdefault(id(r), {"commit": r["commit"], "dirty": r.get("dirty"), "args": r.get("args", {}),
                                                "path": r.get("path"), "metrics": {}})
                        rows[id(r)]["metrics"][lang] = {split: m}
    return {k: list(v.values()) for k, v in out.items()}


def cell(values, fmt=".1f"):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def seed_of(r):
    return r.get("args", {}).get("seed", id(r))  # a run without a recorded seed counts as its own seed


def trained_on_english(r):
    return r.get("args", {}).get("train_lang", "en") == "en"  # not a Target run trained on the target language


def paired_cell(diffs, fmt=".1f"):
    """Mean of per-seed differences from the baseline, and how many seeds share its sign: '+1.2 (3/3)'."""
    if not diffs:
        return "–"
    mean = statistics.mean(diffs)
    agree = sum(1 for d in diffs if d * mean > 0)
    return f"{mean:+{fmt}} ({agree}/{len(diffs)})"


def seed_means(method, rs, cols, metric, split="test"):
    """{seed: {column: value}} of one method's runs `rs`: a seed's value in a column is its one
    run's, or the mean of its runs (the English column of per-language runs); English only from
    English-trained runs. Two runs of one seed reporting one non-English column are an error."""
    by_seed, seen = {}, {}  # seed -> {column: [values]}: one run for every language, or one each
    for r in rs:
        for c in cols:
            if c in r["metrics"] and (c != "en" or trained_on_english(r)):
                key = seed_of(r), c
                if c != "en" and key in seen:  # per-language runs share English; nothing else
                    raise ValueError(f"two {method} runs of seed {key[0]} report {c}: {seen[key]} "
                                     f"and {r.get('path')}")
                seen[key] = r.get("path")
                got = r["metrics"][c].get(split, {})
                if metric not in got and "accuracy" in got and metric in ("intent_acc", "slot_f1",
                                                                          "exact_match"):
                    if metric != "intent_acc":
                        continue  # a run that trains intents only (EAR on intent/slots): no slots
                    got = {metric: got["accuracy"]}
                if metric not in got:
                    raise ValueError(f"{r.get('path')}: no {split} {metric} for {c}")
                by_seed.setdefault(key[0], {}).setdefault(c, []).append(got[metric])
    # the runs of a seed: their mean
    return {s: {c: statistics.mean(v) for c, v in cs.items()} for s, cs in by_seed.items()}


def paired_diffs(by_seed, base, cols, langs):
    """Differences of `by_seed` from the baseline's `base` (both from seed_means) within a seed:
    ({column: {seed: difference}}, {seed: difference of the averages over `langs`}); the average
    only for seeds that both have every one of `langs`."""
    both = [s for s in by_seed if s in base]
    diffs = {c: {s: by_seed[s][c] - base[s][c] for s in both if c in by_seed[s] and c in base[s]}
             for c in cols}
    full = [s for s in both if all(c in by_seed[s] and c in base[s] for c in langs)]
    return diffs, {s: statistics.mean(by_seed[s][c] - base[s][c] for c in langs) for s in full}


def table(runs, data, metric, split="test", langs=None, paired=None, methods=None):
    """Markdown lines of one table. `data` is the dataset, or 'sts/<section>' for derived tables. With
    paired=<method>, each other method gets a row of its differences from that method seed by seed (same
    seed, same subset): the mean difference and the number of seeds whose difference has its sign. With
    methods=[names], only those methods get rows (the paired baseline is still read when not shown)."""
    if set(methods or []) - set(runs):
        raise ValueError(f"--methods: no results for {', '.join(m for m in methods if m not in runs)} "
                         f"(found: {', '.join(runs)})")
    found = sorted({lang for rs in runs.values() for r in rs for lang in r["metrics"]} - {"en"})
    if set(langs or []) - set(found):
        raise ValueError(f"--langs {','.join(langs)}: no results for {', '.join(sorted(set(langs) - set(found)))} "
                         f"(found: {', '.join(found)})")
    have = {m for rs in runs.values() for r in rs for by_split in r["metrics"].values() for m in by_split.get(split, {})}
    if metric not in have:
        raise ValueError(f"--metric {metric} --split {split}: not in these results (they have: {', '.join(sorted(have))})")
    langs = langs or found
    cols = (["en"] if any("en" in r["metrics"] for rs in runs.values() for r in rs) else []) + langs
    fmt = ".4f" if metric == "cosine" else ".1f"
    lines = ["| method | source | " + " | ".join(cols) + " | avg | seeds | commit |",
             "|---|---|" + "---:|" * (len(cols) + 2) + "---|"]
    if paired and paired not in runs:
        raise ValueError(f"--paired {paired}: no such method here (found: {', '.join(runs)})")
    per_method = {}
    for method, rs in runs.items():
        by_seed = seed_means(method, rs, cols, metric, split)
        per_method[method] = by_seed
        if methods and method not in methods:
            continue
        vals = {c: [v[c] for v in by_seed.values() if c in v] for c in cols}
        complete = [v for v in by_seed.values() if all(c in v for c in langs)]
        avg = cell([statistics.mean(v[c] for c in langs) for v in complete], fmt)
        seeds = f"{len(complete)}" + (f" (+{len(by_seed) - len(complete)} partial)" if len(complete) < len(by_seed) else "")
        commits = ", ".join(sorted({(r["commit"] or "?")[:7] + ("+" if r.get("dirty") else "") for r in rs}))
        lines.append(f"| {method} | ours | " + " | ".join(cell(vals[c], fmt) for c in cols)
                     + f" | {avg} | {seeds} | {commits} |")
        if method in PAPER.get((data, metric), {}):
            source, nums = PAPER[(data, metric)][method]
            shown = [nums[c] for c in langs if c in nums]
            avg = f"{statistics.mean(shown):{fmt}}" if len(shown) == len(langs) else "–"
            lines.append(f"| {method} | {source} | " + ("– | " if "en" in cols else "")
                         + " | ".join(f"{nums[c]:{fmt}}" if c in nums else "–" for c in langs)
                         + f" | {avg} | – | – |")
        if paired and method != paired:
            diffs, avgs = paired_diffs(by_seed, per_method.get(paired) or {}, cols, langs)
            lines.append(f"| {method} | minus {paired}, paired | "
                         + " | ".join(paired_cell(list(diffs[c].values()), fmt) for c in cols)
                         + f" | {paired_cell(list(avgs.values()), fmt)} | {len(avgs)} | – |")
    return lines


class MarkerParser(argparse.ArgumentParser):
    """For README markers: a bad flag raises ValueError (named with the line) instead of printing usage."""
    def error(self, message):
        raise ValueError(message)


def parser(cls=argparse.ArgumentParser):
    p = cls(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("folder", nargs="*", help="folder(s) searched (recursively) for results.json files")
    p.add_argument("--data")
    p.add_argument("--metric", default="intent_acc", help="intent_acc, slot_f1, exact_match or accuracy; "
                   "sts: spearman or pearson; --section mapping: cosine, retrieval_src2tgt or retrieval_tgt2src")
    p.add_argument("--section", default="metrics", choices=["metrics", "mapping", "cross_lingual"],
                   help="sentence_mapping.py results: the STS metrics, the mapping table or cross-lingual STS")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--langs", default=None, help="non-English columns, e.g. hi,tr (default: every one found)")
    p.add_argument("--paired", default=None, metavar="METHOD", help="add each method's per-seed differences from "
                   "this one (e.g. zeroshot): mean difference and the number of seeds that share its sign")
    p.add_argument("--methods", default=None, help="only these rows, comma-separated method names as the "
                   "table prints them, e.g. 'zeroshot,target,xeroalign' (default: every method found)")
    p.add_argument("--readme", default=None, help="rewrite the tables under the make_table markers of this file")
    p.add_argument("--check", action="store_true", help="with --readme: write nothing, fail if a table differs from its results")
    return p


def make(a, base=Path(".")):
    """The table lines for parsed arguments `a`, folders relative to `base`; ValueError if there are none."""
    if not (a.folder and a.data):
        raise ValueError("give a folder and --data")
    folders = [base / f for f in a.folder]
    runs = load(folders, a.data)
    if not runs:
        raise ValueError(f"no results.json for --data {a.data} under {', '.join(map(str, folders))}")
    data = a.data
    if a.section != "metrics":
        runs, data = derived(runs, a.section, a.split), f"{a.data}/{a.section}"
    return table(runs, data, a.metric, a.split, a.langs.split(",") if a.langs else None, a.paired,
                 a.methods.split(",") if a.methods else None)


MARKER = re.compile(r"^<!-- make_table (.+) -->$")


def update_readme(path, check=False):
    """Rewrite the table under every make_table marker of `path`; returns the number of tables and the
    line numbers of the markers whose table changed. check=True writes nothing."""
    path = Path(path)
    lines, out, i, n, changed = path.read_text(encoding="utf-8").split("\n"), [], 0, 0, []
    while i < len(lines):
        out.append(lines[i])
        m = MARKER.match(lines[i].strip())
        i += 1
        if m:
            try:
                new = make(parser(MarkerParser).parse_args(shlex.split(m.group(1))), path.parent)
            except ValueError as e:
                raise SystemExit(f"error: {path}:{i}: make_table marker: {e}") from None
            start = i
            while i < len(lines) and lines[i].startswith("|"):  # the old table
                i += 1
            out += new
            n += 1
            if lines[start:i] != new:
                changed.append(start)
    if not check:
        path.write_text("\n".join(out), encoding="utf-8")
    return n, changed


def main(argv=None):
    p = parser()
    a = p.parse_args(argv)
    if a.readme:
        n, changed = update_readme(a.readme, a.check)
        if a.check and changed:
            raise SystemExit(f"error: {a.readme}: the tables under the make_table markers of lines "
                             f"{', '.join(map(str, changed))} differ from their results; "
                             f"python tools/make_table.py --readme {a.readme} rewrites them")
        print(f"{a.readme}: {n} tables " + ("match their results" if a.check else f"rewritten, {len(changed)} changed"))
        return
    try:
        print("\n".join(make(a)))
    except ValueError as e:
        raise SystemExit(f"error: {e}" + ("" if a.folder and a.data else ", or --readme FILE")) from None


if __name__ == "__main__":
    main()
