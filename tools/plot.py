"""Figures of the results.json files under runs/: what the README's tables say, at a glance.

    python tools/plot.py paired            # 1. every method's paired difference from its baseline
    python tools/plot.py cost              # 2. average paired gain against training time
    python tools/plot.py all               # 1 and 2: every figure under docs/figures
    python tools/plot.py all --check       # fail if a figure's numbers differ from runs/
    python tools/plot.py curves runs/repro/side/massive-xeroalign/seed1   # 3. one run's curves

1. paired (docs/figures/{massive,tod,xnli}-paired.png): for each method, its test-score difference
   from its baseline within a seed (zero-shot; PPA: the same file's fine-tuning of the unaligned
   encoder; on XNLI, EAR and RS-DA: plain fine-tuning), per target language and averaged over the
   targets; every seed a dot, the mean over seeds a diamond; intent accuracy and slot F1 side by
   side.
2. cost (docs/figures/massive-cost.png): that target average of intent accuracy, mean over seeds
   (y), against the training time relative to the baseline of the same seed (x, log scale; error
   bars: std over seeds). Training time is the training loop's (a run's train_examples_seen divided by its
   train_examples_per_s: evaluation excluded); PPA adds its stage 1 alignment run's wall_s, Target
   the time of its one run per target language.
3. curves FOLDER: the training losses and the dev metric of every language per epoch, from the
   results.json `history` of one run folder (your own runs too), written to FOLDER/curves.png.

The runs and the paired differences are tools/make_table.py's (load, seed_means, paired_diffs), so
each figure shows the numbers of the tables beside it. Each figure is written with the plotted
numbers beside it (<name>.json); `--check` recomputes them without matplotlib (no figure drawn), and
so does the test that keeps the committed figures current. matplotlib: requirements-tools.txt.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

import make_table
from make_table import load, paired_diffs, read_results, seed_means

ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = ROOT / "docs" / "figures"

# Okabe & Ito's colour-blind-safe palette
OKABE_ITO = {"orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000"}
LANG_COLOURS = {"th": "orange", "hi": "sky", "de": "green", "es": "blue", "tr": "vermillion",
                "ja": "purple", "avg": "black"}
METRIC_NAMES = {"intent_acc": "intent accuracy", "slot_f1": "slot F1", "accuracy": "accuracy"}
E5 = "multilingual-e5-small"


def group(folder, baseline, methods):
    return {"folder": folder, "baseline": baseline, "methods": methods}


SIDE = "runs/repro/side"
MASSIVE_ZS = ["target", "xeroalign", "crossaligner ca", "crossaligner xa+ca (cov)", "contrastive",
              "translate_intent", "rsda", "ear", "ear w/o EPT", "ear w/o APT"]
PPA = group(SIDE, "finetune", ["ppa", "ppa-no_tlm"])
TOD = ["target", "xeroalign", "crossaligner ca", "crossaligner xa+ca (sum)",
       "crossaligner xa+ca (cov)"]
MASSIVE_COST = ["target", "xeroalign", "crossaligner ca", "crossaligner xa+ca (cov)",
                "contrastive", "translate_intent", "rsda", "ear"]
FIGURES = {
    "massive-paired": {
        "kind": "paired",
        "title": "MASSIVE: each method minus its baseline, seed by seed "
                 "(test, English to th, hi, de)",
        "caption": f"{E5}; 4,000 English training utterances, 2 epochs (250 steps), the epoch "
                   "kept by English dev; 3 seeds. Baseline: zero-shot of the same seed (PPA: the "
                   "same file's fine-tuning of the unaligned encoder, one alignment run). Target "
                   "trains on each target's own labelled data. EAR, RS-DA and PPA train intents "
                   "only.",
        "panels": [{"data": "massive", "metric": m, "langs": ["th", "hi", "de"],
                    "groups": [group(SIDE, "zeroshot", MASSIVE_ZS), PPA]}
                   for m in ("intent_acc", "slot_f1")]},
    "tod-paired": {
        "kind": "paired",
        "title": "XeroAlign and CrossAligner on MTOD and MultiATIS++: minus zero-shot, "
                 "seed by seed (test)",
        "caption": f"{E5}; MTOD 4,000 English training utterances (250 steps), MultiATIS++ all "
                   "4,488 (282 steps); 2 epochs, the epoch kept by English dev; 3 seeds; one "
                   "model per seed for the targets mixed (Target: one per target language, on its "
                   "own data).",
        "panels": [{"data": d, "metric": m, "langs": langs,
                    "groups": [group("runs/repro/tod", "zeroshot", TOD)]}
                   for d, langs in (("mtod", ["es", "th"]), ("matis", ["de", "hi", "tr", "ja"]))
                   for m in ("intent_acc", "slot_f1")]},
    "xnli-paired": {
        "kind": "paired",
        "title": "EAR, RS-DA and PPA on XNLI: minus plain fine-tuning, seed by seed "
                 "(test, English to th, hi, de)",
        "caption": f"{E5}; dev halves: 1,245 English training pairs, 623 test pairs a language; "
                   "234 steps (EAR, RS-DA: 2 epochs over 3 synonym copies; baselines 6 epochs); "
                   "the epoch kept by English dev; 3 seeds (PPA: of one alignment run). Baseline: "
                   "ear_push_pull.py --mode plain; for PPA its own fine-tuning of the unaligned "
                   "encoder.",
        "panels": [{"data": "xnli", "metric": "accuracy", "langs": ["th", "hi", "de"],
                    "groups": [group("runs/repro/ear", "plain",
                                     ["rsda", "ear", "ear w/o EPT", "ear w/o APT"]),
                               group("runs/repro/ppa", "finetune", ["ppa", "ppa-no_tlm"])]}]},
    "massive-cost": {
        "kind": "cost",
        "title": "MASSIVE: intent accuracy gain over the baseline (average of th, hi, de) "
                 "against training time",
        "caption": f"{E5}; 4,000 English utterances, 2 epochs (250 steps), 3 seeds (error bars: "
                   "std over seeds). x: training-loop time over the baseline's, same seed (PPA: "
                   "plus its stage 1 alignment, 512 steps; Target: its 3 per-language models). "
                   "Baseline: zero-shot (PPA: its own fine-tuning). One CPU thread a run on a "
                   "shared machine.",
        "panels": [{"data": "massive", "metric": "intent_acc", "langs": ["th", "hi", "de"],
                    "groups": [group(SIDE, "zeroshot", MASSIVE_COST), PPA]}]},
}


def _r(x):
    return round(x, 4)


def _load(folder, data, root):
    runs = load(Path(root) / folder, data)
    if not runs:
        raise ValueError(f"no results.json for --data {data} under {Path(root) / folder}")
    return runs


def _method_runs(runs, method, folder):
    if method not in runs:
        raise ValueError(f"{folder}: no results for {method} (found: {', '.join(runs)})")
    return runs[method]


def paired_numbers(panel, root=ROOT):
    """One panel's rows: per method its baseline and {lang or 'avg': {seed: difference}}; a method
    without the panel's metric (intents only) has empty ones."""
    rows, langs, metric = [], panel["langs"], panel["metric"]
    for g in panel["groups"]:
        runs = _load(g["folder"], panel["data"], root)
        base_rs = _method_runs(runs, g["baseline"], g["folder"])
        base = seed_means(g["baseline"], base_rs, langs, metric)
        for m in g["methods"]:
            by_seed = seed_means(m, _method_runs(runs, m, g["folder"]), langs, metric)
            diffs, avgs = paired_diffs(by_seed, base, langs, langs)
            rows.append({"method": m, "baseline": g["baseline"],
                         "diffs": {**{c: {str(s): _r(d) for s, d in sorted(diffs[c].items())}
                                      for c in langs},
                                   "avg": {str(s): _r(d) for s, d in sorted(avgs.items())}}})
    return rows


def train_seconds(r):
    """The training loop's seconds (evaluation excluded) where a run records them, else wall_s."""
    if r.get("train_examples_seen") and r.get("train_examples_per_s"):
        return r["train_examples_seen"] / r["train_examples_per_s"]
    return r["wall_s"]


def alignment_seconds(folder, root=ROOT):
    """{save_dir: wall_s} of the PPA stage 1 runs under `folder` (no metrics, so not in load)."""
    out = {}
    for path in sorted((Path(root) / folder).rglob("results.json")):
        res = read_results(path)
        if res.get("method") == "ppa_align":
            out[Path(res["save_dir"]).as_posix()] = res["wall_s"]
    return out


def seconds_by_seed(rs, aligned):
    """{seed: training seconds} of one method's runs: per-language runs of a seed summed, plus the
    stage 1 run whose saved encoder a run fine-tunes."""
    out = {}
    for r in rs:
        model = Path(r.get("args", {}).get("model", "")).as_posix()
        extra = next((s for d, s in aligned.items() if model == d or model.endswith("/" + d)), 0.0)
        if model.endswith("/aligned") and not extra:
            raise ValueError(f"{r['path']}: no stage 1 results.json for its encoder {model}")
        out[make_table.seed_of(r)] = out.get(make_table.seed_of(r), 0.0) + train_seconds(r) + extra
    return out


def cost_numbers(panel, root=ROOT):
    """Per method (with the panel's metric): {seed: average paired gain} and {seed: its training
    seconds over its baseline's}."""
    rows, langs, metric = [], panel["langs"], panel["metric"]
    for g in panel["groups"]:
        runs = _load(g["folder"], panel["data"], root)
        aligned = alignment_seconds(g["folder"], root)
        base_rs = _method_runs(runs, g["baseline"], g["folder"])
        base = seed_means(g["baseline"], base_rs, langs, metric)
        base_s = seconds_by_seed(base_rs, aligned)
        for m in g["methods"]:
            rs = _method_runs(runs, m, g["folder"])
            _, gains = paired_diffs(seed_means(m, rs, langs, metric), base, langs, langs)
            secs = seconds_by_seed(rs, aligned)
            if gains:
                rows.append({"method": m, "baseline": g["baseline"],
                             "gain": {str(s): _r(d) for s, d in sorted(gains.items())},
                             "cost": {str(s): _r(secs[s] / base_s[s]) for s in sorted(gains)}})
    return rows


def numbers(name, root=ROOT):
    """The plotted numbers of figure `name` (FIGURES), as written beside it in <name>.json."""
    spec = FIGURES[name]
    calc = paired_numbers if spec["kind"] == "paired" else cost_numbers
    return {"figure": name, "title": spec["title"], "caption": spec["caption"],
            "panels": [{"data": p["data"], "metric": p["metric"], "langs": p["langs"],
                        "rows": calc(p, root)} for p in spec["panels"]]}


# ---- drawing (matplotlib only from here) ----

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcdefaults()
    plt.rcParams.update({"svg.hashsalt": "xalign", "svg.fonttype": "none", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig, png, svg=False):
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, metadata={"Software": None})
    if svg:
        fig.savefig(png.with_suffix(".svg"), metadata={"Date": None, "Creator": None})


def _caption(fig, text, width):
    """The protocol under the figure, wrapped at `width` characters; returns the fraction of the
    figure's height it takes (what tight_layout must leave free)."""
    import textwrap
    lines = textwrap.wrap(text, width)
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=7.5, va="bottom", ha="left", color="#333333")
    return (len(lines) * 7.5 * 1.2 + 4) / (fig.get_figheight() * 72)


def _mean(d):
    return statistics.mean(d.values()) if d else None


def draw_paired(nums, png):
    plt = _pyplot()
    from matplotlib.lines import Line2D
    panels = nums["panels"]
    ncols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + ncols - 1) // ncols
    nmeth = max(len(p["rows"]) for p in panels)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharey="row",
                             figsize=(5.2 * ncols if ncols > 1 else 8, 0.42 * nmeth * nrows + 1.6
                                      + 0.5 * nrows))
    for ax, p in zip(axes.flat, panels):
        keys = p["langs"] + ["avg"]
        step = 0.7 / len(keys)
        for i, row in enumerate(p["rows"]):
            y0 = -i
            for j, k in enumerate(keys):
                y = y0 + 0.35 - step / 2 - j * step
                vals = row["diffs"][k]
                colour = OKABE_ITO[LANG_COLOURS.get(k, "blue")]
                ax.scatter(list(vals.values()), [y] * len(vals), s=9, color=colour, alpha=0.55,
                           linewidths=0, zorder=3)
                if vals:
                    ax.scatter([_mean(vals)], [y], marker="D", s=34 if k == "avg" else 22,
                               color=colour, edgecolors="white", linewidths=0.5, zorder=4)
            if not row["diffs"]["avg"]:
                ax.text(0.02, y0, "(trains intents only)", transform=ax.get_yaxis_transform(),
                        va="center", fontsize=7.5, color="#666666")
            if i % 2 == 0:
                ax.axhspan(y0 - 0.5, y0 + 0.5, color="#f2f2f2", zorder=0, lw=0)
        ax.axvline(0, color="black", lw=0.8, zorder=2)
        ax.set_ylim(-len(p["rows"]) + 0.5, 0.5)
        ax.set_yticks([-i for i in range(len(p["rows"]))])
        ax.set_yticklabels([r["method"] + ("" if r["baseline"] in ("zeroshot", "plain")
                                           else f"\n(minus {r['baseline']})") for r in p["rows"]])
        ax.tick_params(axis="y", length=0)
        metric = METRIC_NAMES.get(p["metric"], p["metric"])
        ax.set_xlabel(f"{metric} difference from the baseline (points)")
        ax.set_title(f"{p['data'].upper() if p['data'] != 'matis' else 'MultiATIS++'}: {metric}",
                     fontsize=9)
        ax.grid(axis="x", color="#dddddd", lw=0.5, zorder=1)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    langs = list(dict.fromkeys(c for p in panels for c in p["langs"]))
    handles = [Line2D([], [], marker="D", ls="", color=OKABE_ITO[LANG_COLOURS.get(c, "blue")],
                      label=c) for c in langs]
    handles += [Line2D([], [], marker="D", ls="", color="black", label="average of the targets"),
                Line2D([], [], marker="o", ls="", color="grey", alpha=0.55, markersize=4,
                       label="one seed (diamond: mean over seeds)")]
    bottom = _caption(fig, nums["caption"], width=88 * ncols if ncols > 1 else 135)
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.5 / fig.get_figheight()))
    fig.suptitle(nums["title"], fontsize=10, x=0.01, ha="left")
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.995, 1 - 0.22 / fig.get_figheight()), handletextpad=0.2,
               columnspacing=0.9)
    _save(fig, png, svg=True)
    plt.close(fig)


COST_COLOURS = {"target": "black", "xeroalign": "blue", "crossaligner ca": "sky",
                "crossaligner xa+ca (cov)": "sky", "contrastive": "vermillion",
                "translate_intent": "vermillion", "rsda": "purple", "ear": "purple",
                "ppa": "green", "ppa-no_tlm": "green"}
LABELS = {"target": "Target (labelled target data)", "translate_intent": "Translate-Intent",
          "crossaligner ca": "CrossAligner", "crossaligner xa+ca (cov)": "CA+XA (CoV)",
          "xeroalign": "XeroAlign", "contrastive": "contrastive", "rsda": "RS-DA", "ear": "EAR",
          "ppa": "PPA (MoCo+TLM)", "ppa-no_tlm": "PPA (MoCo only)"}
# where a label sits, in points from its marker, and its alignment (default: up and right)
LABEL_AT = {"ear": (6, -11, "left"), "crossaligner xa+ca (cov)": (-6, 5, "right"),
            "ppa": (-6, 6, "right"), "target": (-6, 6, "right")}


def draw_cost(nums, png):
    plt = _pyplot()
    panels = nums["panels"]
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(7.0 * len(panels), 5.0))
    for ax, p in zip(axes[0], panels):
        for row in p["rows"]:
            g, c = list(row["gain"].values()), list(row["cost"].values())
            x, y = statistics.mean(c), statistics.mean(g)
            sx = statistics.stdev(c) if len(c) > 1 else 0.0
            sy = statistics.stdev(g) if len(g) > 1 else 0.0
            colour = OKABE_ITO[COST_COLOURS.get(row["method"], "blue")]
            hollow = row["method"] == "target"
            ax.errorbar([x], [y], xerr=[sx], yerr=[sy], fmt="o", ms=6, color=colour, elinewidth=1,
                        capsize=2, mfc="white" if hollow else colour, zorder=3)
            dx, dy, ha = LABEL_AT.get(row["method"], (6, 5, "left"))
            ax.annotate(LABELS.get(row["method"], row["method"]), (x, y), xytext=(dx, dy), ha=ha,
                        textcoords="offset points", fontsize=8, color="#222222")
        ax.axhline(0, color="black", lw=1, zorder=1)
        ax.axvline(1, color="#999999", lw=0.6, ls=":", zorder=1)
        ax.set_xscale("log")
        ticks = [1, 1.5, 2, 3, 5, 10]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}×" for t in ticks])
        ax.minorticks_off()
        ax.set_xlim(0.85, 12)
        metric = METRIC_NAMES.get(p["metric"], p["metric"])
        ax.set_xlabel("training time relative to the baseline (×, log scale)")
        ax.set_ylabel(f"{metric} gain, average of the targets (points)")
        ax.grid(color="#eeeeee", lw=0.5, zorder=0)
    bottom = _caption(fig, nums["caption"], width=int(112 * len(panels)))
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.3 / fig.get_figheight()))
    fig.suptitle(nums["title"], fontsize=10, x=0.01, ha="left")
    _save(fig, png, svg=True)
    plt.close(fig)


def write_figure(name, out_dir=FIGURES_DIR, root=ROOT):
    """<out_dir>/<name>.json (the numbers) and <name>.png / .svg (the figure)."""
    nums = numbers(name, root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(nums, indent=1) + "\n", encoding="utf-8")
    (draw_paired if FIGURES[name]["kind"] == "paired" else draw_cost)(nums, out_dir / f"{name}.png")
    return nums


def stale(names, out_dir=FIGURES_DIR, root=ROOT):
    """The figures among `names` whose <name>.json is missing or differs from what runs/ gives."""
    bad = []
    for name in names:
        path = Path(out_dir) / f"{name}.json"
        try:
            ok = json.loads(path.read_text(encoding="utf-8")) == numbers(name, root)
        except (OSError, json.JSONDecodeError):
            ok = False
        if not ok:
            bad.append(name)
    return bad


def history_series(res):
    """({loss name: [(epoch, value)]}, {dev language: [(epoch, value)]}, dev metric) of a run's
    history; the dev metric is intent_acc, accuracy or the first one recorded."""
    losses, dev, metric = {}, {}, None
    for h in res.get("history") or []:
        epoch = h.get("epoch")
        for k, v in h.items():
            if k not in ("epoch", "dev") and isinstance(v, (int, float)) and k != "moco_acc":
                losses.setdefault(k.removeprefix("train_"), []).append((epoch, v))
        for lang, ms in (h.get("dev") or {}).items():
            if metric is None:
                names = [m for m in ms if m != "n"]
                metric = next((m for m in ("intent_acc", "accuracy", "spearman") if m in ms),
                              names[0] if names else None)
            if metric in ms:
                dev.setdefault(lang, []).append((epoch, ms[metric]))
    return losses, dev, metric


def draw_curves(folder, png=None):
    folder = Path(folder)
    path = folder / "results.json" if folder.is_dir() else folder
    if not path.is_file():
        raise SystemExit(f"error: {path}: no results.json (give a run folder, e.g. "
                         "runs/repro/side/massive-xeroalign/seed1)")
    res = read_results(path)
    losses, dev, metric = history_series(res)
    if not losses and not dev:
        raise SystemExit(f"error: {path}: no per-epoch history to draw")
    png = Path(png) if png else path.parent / "curves.png"
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if dev else 1, squeeze=False, figsize=(9.5 if dev else 5, 3.6))
    palette = list(OKABE_ITO.values())
    ax = axes[0][0]
    for i, (name, pts) in enumerate(losses.items()):
        ax.plot(*zip(*pts), marker="o", ms=4, color=palette[(i + 4) % len(palette)], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss over the epoch")
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(fontsize=7.5, frameon=False)
    ax.set_title("training losses", fontsize=9)
    if dev:
        ax = axes[0][1]
        for i, (lang, pts) in enumerate(dev.items()):
            ax.plot(*zip(*pts), marker="o", ms=4, label=lang, lw=2 if lang == "en" else 1.2,
                    color=OKABE_ITO[LANG_COLOURS[lang]] if lang in LANG_COLOURS and lang != "en"
                    else "black" if lang == "en" else palette[i % len(palette)])
        sel = res.get("selected_epoch")
        if sel:
            ax.axvline(sel, color="#999999", ls=":", lw=1, label=f"kept (epoch {sel})")
        ax.set_xlabel("epoch")
        unit = " (%)" if metric in ("intent_acc", "accuracy", "slot_f1", "exact_match") else ""
        ax.set_ylabel(f"dev {METRIC_NAMES.get(metric, metric)}{unit}")
        ax.legend(fontsize=7.5, frameon=False, ncol=2)
        ax.set_title("dev score per language", fontsize=9)
    for a in axes[0]:
        epochs = sorted({e for pts in [*losses.values(), *dev.values()] for e, _ in pts})
        a.set_xticks(epochs)
    seed = res.get("args", {}).get("seed")
    fig.suptitle(f"{res.get('method')} on {res.get('data')}, seed {seed}: {path.parent}",
                 fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    _save(fig, png)
    plt.close(fig)
    return png


def main(argv=None):
    p = argparse.ArgumentParser(prog="tools/plot.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["paired", "cost", "all", "curves"],
                   help="paired: figure 1; cost: figure 2; all: both; curves: figure 3 of FOLDER")
    p.add_argument("folder", nargs="?", help="curves: a run folder holding results.json")
    p.add_argument("-o", "--output", default=None,
                   help="curves: the PNG (default FOLDER/curves.png)")
    p.add_argument("--out_dir", default=str(FIGURES_DIR), help="paired/cost/all: where the figures "
                   "and their numbers go (default docs/figures)")
    p.add_argument("--check", action="store_true", help="paired/cost/all: draw nothing, fail if a "
                   "figure's numbers (<name>.json) differ from the results under runs/")
    a = p.parse_args(argv)
    if a.what == "curves":
        if not a.folder:
            p.error("curves needs a run folder")
        print(draw_curves(a.folder, a.output))
        return
    if a.folder:
        p.error(f"{a.what} takes no folder (its runs are fixed in FIGURES)")
    names = [n for n, s in FIGURES.items() if a.what == "all" or s["kind"] == a.what]
    try:
        if a.check:
            bad = stale(names, a.out_dir)
            if bad:
                raise SystemExit(f"error: {', '.join(bad)} in {a.out_dir} differ from the results "
                                 f"under runs/; python tools/plot.py {a.what} redraws them")
            print(f"{a.out_dir}: {len(names)} figures match their results")
            return
        for name in names:
            write_figure(name, a.out_dir)
            print(Path(a.out_dir) / f"{name}.png")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
