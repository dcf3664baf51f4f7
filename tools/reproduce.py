"""The grid of runs behind the README's numbers, as plain commands of the method files.

    python tools/reproduce.py --dry_run                        # print every command
    python tools/reproduce.py --groups xeroalign --seeds 1 2 3     # run them (results that exist are skipped)
    python tools/reproduce.py --model /path/to/xlm-roberta-large --extra ""
    python tools/reproduce.py --groups mapping ppa ear --seeds 1 --dry_run   # sentence_mapping, ppa_moco_tlm, ear_push_pull
    python tools/reproduce.py --readme_runs --model <trimmed e5>     # every run behind the README's real-encoder tables

Each run writes <out>/<group>/<name>/seed<N>/results.json; tools/make_table.py turns them into the
README tables. The default encoder is multilingual-e5-small ($XALIGN_MODEL, or a local copy), with the
flags it needs (no trained pooler: --cls first; fresh heads learn slowly: --head_lr); pass --extra ""
with a real XLM-R checkpoint to use the papers' settings unchanged. --limit_train/--epochs in --extra
make CPU-sized runs; every number in the README says which were used, and --readme_runs holds them all
(README_RUNS below). A run whose results.json exists is skipped if it was made with the same settings
(every flag but the paths --out_dir, --save_dir, --data_dir and --model: trimmed copies of one encoder
give the same results; use another --out for another encoder; other paths are compared by file name);
one made with other settings stops the grid before it runs anything.
"""
import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from make_table import read_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # settings_differ imports the method files for their parsers
FOLDERS = {"mtod": "mtod", "matis": "multiatis", "massive": "massive", "sts": "sts", "xnli": "xnli",
           "pawsx": "pawsx"}  # under --data_root
LANGS = {"mtod": ["es", "th"], "matis": ["de", "es", "fr", "hi", "ja", "pt", "tr", "zh"],
         "massive": ["de", "es", "fr", "hi", "th"]}
TATOEBA = ["ara", "bul", "cmn", "deu", "ell", "fra", "hin", "jpn", "kor", "por", "rus", "spa", "swh", "tha", "tur", "urd",
           "vie"]  # the 17 languages of the Tatoeba test set (parallel/tatoeba under --data_root)


def grid(groups, ear_epochs=1):
    """(group, name, script, args) of every run, one English model evaluated on many languages where
    the method allows (zero-shot), one run per target language where it aligns (as the papers).
    ear_epochs: epochs of the ear group's augmented runs (plain fine-tuning takes 3 times as many)."""
    runs = []
    if "xeroalign" in groups:  # zero-shot, Target and XeroAlign 
        for data, langs in LANGS.items():
            runs.append(("xeroalign", f"{data}-zeroshot", "xeroalign.py", ["--data", data, "--lang", ",".join(langs), "--no-align"]))
            for lang in langs:
                runs.append(("xeroalign", f"{data}-{lang}-target", "xeroalign.py",
                             ["--data", data, "--lang", lang, "--no-align", "--train_lang", lang]))
                runs.append(("xeroalign", f"{data}-{lang}-xeroalign", "xeroalign.py", ["--data", data, "--lang", lang]))
    if "crossaligner" in groups:  # the paper's Table 1/2 configurations
        sets = {"mtod": ["es", "th"], "matis": ["de", "hi", "tr", "ja"], "massive": ["th", "hi"]}
        configs = {"ca": ["--aux", "ca"], "xa": ["--aux", "xa"], "ca+xa-sum": ["--aux", "ca", "xa"],
                   "ca+xa-cov": ["--aux", "ca", "xa", "--weighting", "cov"]}
        for data, langs in sets.items():
            runs.append(("crossaligner", f"{data}-zeroshot", "crossaligner.py",
                         ["--data", data, "--lang", ",".join(langs), "--aux"]))
            for lang in langs:
                for name, flags in configs.items():
                    runs.append(("crossaligner", f"{data}-{lang}-{name}", "crossaligner.py", ["--data", data, "--lang", lang, *flags]))
    if "single" in groups:  # contrastive and Translate-Intent
        sets = {"mtod": ["th"], "matis": ["hi", "tr"], "massive": ["th"]}
        for data, langs in sets.items():  # zero-shot: the same training with the loss off (--no-align)
            runs.append(("single", f"{data}-zeroshot", "contrastive.py", ["--data", data, "--lang", ",".join(langs), "--no-align"]))
            for lang in langs:
                for script in ("contrastive.py", "translate_intent.py"):
                    runs.append(("single", f"{data}-{lang}-{script[:-3]}", script, ["--data", data, "--lang", lang]))
    if "mapping" in groups:  # sentence_mapping.py: pretrained embeddings, bi-encoder, cross-encoder
        for arch in ("none", "bi", "cross"):
            runs.append(("mapping", f"sts-{arch}", "sentence_mapping.py", ["--data", "sts", "--lang", "ko,de,es", "--arch", arch]))
    if "ppa" in groups:  # align on every parallel corpus we have (no test set), fine-tune with and without it
        tatoeba = [f"{{parallel}}/tatoeba/tatoeba.{x}-eng.eng,{{parallel}}/tatoeba/tatoeba.{x}-eng.{x}" for x in TATOEBA]
        parallel = ["massive:{massive}:th,hi,de,es,fr", "mtod:{mtod}:es,th", "matis:{matis}:" + ",".join(LANGS["matis"]),
                    "{parallel}/multi30k/train.en,{parallel}/multi30k/train.de", *tatoeba]  # train splits only
        for variant, flags in (("", []), ("-no_tlm", ["--no_tlm"])):  # Table 5: without TLM
            runs.append(("ppa", f"align{variant}", "ppa_moco_tlm.py",
                         ["--stage", "align", "--parallel", *parallel, "--min_len", "3", *flags]))
        for data, extra in (("massive", ["--lang", "th,hi,de"]), ("xnli", ["--lang", "all", "--dev_halves"])):
            for name, model in (("base", []), ("aligned", ["--model", "{align}/aligned"]),
                                ("aligned-no_tlm", ["--model", "{align}-no_tlm/aligned"])):
                runs.append(("ppa", f"{data}-{name}", "ppa_moco_tlm.py", ["--stage", "finetune", "--data", data, *extra, *model]))
    if "ear" in groups:  # plain fine-tuning, RS-DA, EAR and its ablations (English-only resources)
        # step-matched: RS-DA and EAR take ear_epochs (the paper's 1) epochs over 3 augmented copies of each
        # example, plain fine-tuning 3 times as many over the originals (as many optimizer steps)
        aug = ["--copies", "3", "--epochs", str(ear_epochs)]
        modes = {"plain": ["--mode", "plain", "--epochs", str(3 * ear_epochs)],
                 **{name: [*mode, *aug] for name, mode in EAR_MODES.items()}}
        sets = {"pawsx": ["--lang", "de,es,fr,ja,ko,zh", "--dev_halves"], "xnli": ["--lang", "all", "--dev_halves"],
                "massive": ["--lang", "th,hi,de"]}
        for data, flags in sets.items():
            for name, mode in modes.items():
                runs.append(("ear", f"{data}-{name}", "ear_push_pull.py",
                             ["--data", data, *flags, *mode, "--neighbours", "{synonyms}"]))
    if "side" in groups:  # every method on the same data, encoder, subset, selection and budget (--extra)
        tgt = ["--data", "massive", "--lang", "th,hi,de"]  # one model per seed, the targets mixed
        syn = ["--neighbours", "{synonyms}", "--copies", "1"]  # EAR/RS-DA: as many steps as the others
        runs += [("side", "massive-zeroshot", "xeroalign.py", [*tgt, "--no-align"]),
                 ("side", "massive-xeroalign", "xeroalign.py", tgt),
                 ("side", "massive-crossaligner", "crossaligner.py", [*tgt, "--aux", "ca"]),
                 ("side", "massive-ca+xa-cov", "crossaligner.py", [*tgt, "--aux", "ca", "xa", "--weighting", "cov"]),
                 ("side", "massive-contrastive", "contrastive.py", tgt),
                 ("side", "massive-translate_intent", "translate_intent.py", tgt),
                 *[("side", f"massive-{name}", "ear_push_pull.py", [*tgt, *EAR_MODES[name], *syn])
                   for name in ("ear", "ear-no_ept", "ear-no_apt", "rsda")]]
        runs += [("side", f"massive-{x}-target", "xeroalign.py", ["--data", "massive", "--lang", x, "--no-align",
                                                                  "--train_lang", x]) for x in ("th", "hi", "de")]
    if "tod" in groups:  # XeroAlign and CrossAligner on MTOD and MultiATIS++ under the protocol, one model per
        # seed with the targets mixed (as the side grid), against one zero-shot and one Target model per target
        for data, langs in {"mtod": ["es", "th"], "matis": ["de", "hi", "tr", "ja"]}.items():
            tgt = ["--data", data, "--lang", ",".join(langs)]
            runs += [("tod", f"{data}-zeroshot", "xeroalign.py", [*tgt, "--no-align"]),
                     ("tod", f"{data}-xeroalign", "xeroalign.py", tgt),
                     ("tod", f"{data}-crossaligner", "crossaligner.py", [*tgt, "--aux", "ca"]),
                     ("tod", f"{data}-ca+xa-sum", "crossaligner.py", [*tgt, "--aux", "ca", "xa"]),
                     ("tod", f"{data}-ca+xa-cov", "crossaligner.py", [*tgt, "--aux", "ca", "xa", "--weighting", "cov"])]
            runs += [("tod", f"{data}-{x}-target", "xeroalign.py", ["--data", data, "--lang", x, "--no-align",
                                                                   "--train_lang", x]) for x in langs]
    if "side-ppa" in groups:  # PPA in the side-by-side grid: one alignment on MASSIVE's own parallel utterances
        # (train split, the three targets), then fine-tuning of the aligned encoder with each seed (--align_seed)
        runs += one_alignment("side", "ppa-align", "massive-ppa", ["--parallel", "massive:{massive}:th,hi,de", "--min_len", "3"],
                              ["--stage", "finetune", "--data", "massive", "--lang", "th,hi,de"])
    if "xnli-ppa" in groups:  # PPA on XNLI (dev halves): one alignment on both sentences of the training half's
        # pairs with their th, hi and de translations, then fine-tuning of the aligned encoder with each seed
        runs += one_alignment("ppa", "xnli-ppa-align", "xnli-ppa",
                              ["--parallel", "xnli:{xnli}:th,hi,de", "--dev_halves", "--min_len", "3"],
                              ["--stage", "finetune", "--data", "xnli", "--lang", "th,hi,de", "--dev_halves"])
    return runs


# ear_push_pull.py's modes (EAR's ablations: Table 3), shared by the ear and side grids
EAR_MODES = {"rsda": ["--mode", "rsda"], "ear": ["--mode", "ear"], "ear-no_ept": ["--mode", "ear", "--alpha", "0"],
             "ear-no_apt": ["--mode", "ear", "--beta", "0"]}


def one_alignment(group, align, name, parallel, tune):
    """PPA runs from one stage-1 run per variant (MoCo + TLM, and MoCo only: Table 5): the alignments
    `align`[-no_tlm], the fine-tunings `name`[-no_tlm] of their encoders (`tune` plus --model), and
    `name`-base, the same fine-tuning of the unaligned encoder."""
    runs = []
    for variant, flags in (("", []), ("-no_tlm", ["--no_tlm"])):
        runs += [(group, f"{align}{variant}", "ppa_moco_tlm.py", ["--stage", "align", *parallel, *flags]),
                 (group, f"{name}{variant}", "ppa_moco_tlm.py", [*tune, "--model", f"{{out}}/{group}/{align}{variant}/aligned"])]
    return runs + [(group, f"{name}-base", "ppa_moco_tlm.py", tune)]


# The protocol in which the English model is strong (docs/protocol.md: swept on English dev only), the
# default --extra for multilingual-e5: a fixed 4,000-utterance English subset (MultiATIS++: all 4,488
# rows), 2 epochs, encoder lr 5e-5, heads 1e-2. English test: MASSIVE 83.1 intent accuracy,
# MultiATIS++ 97.1 / 91.6 and MTOD 98.8 / 92.4 intent accuracy / slot F1 (seed 1).
PROTOCOL = "--cls first --lr 5e-5 --head_lr 1e-2 --batch_size 32 --limit_train 4000 --epochs 2 --select_on en"
PROTOCOL_ALL_ROWS = PROTOCOL.replace(" --limit_train 4000", "")  # MultiATIS++: every English row
# XNLI (dev halves: 1,245 English training pairs) under the protocol of docs/protocol.md, chosen on
# English dev (60.9 accuracy after 6 epochs at encoder lr 1e-4, 60.6 at 5e-5): plain fine-tuning 6 epochs,
# RS-DA and EAR 2 epochs over 3 augmented copies (as many steps); three targets evaluated, not all 14,
# to keep the per-epoch dev evaluation of a CPU run short (--lang here overrides the grid's "all").
XNLI_PROTOCOL = "--cls first --lr 1e-4 --head_lr 1e-2 --batch_size 32 --select_on en --lang th,hi,de"
XNLI_PROTOCOL_PPA = XNLI_PROTOCOL.replace("--lang th,hi,de", "--epochs 6")  # PPA's stage 2: the grid names the targets
# PAWS-X (dev halves: 1,000 English training pairs), chosen on English dev like XNLI (72.8 accuracy after
# 6 epochs at encoder lr 5e-5; at 1e-4 dev fell from 61.2 after epoch 1 to 52.6): the ear grid's steps as
# on XNLI, three of the six targets evaluated (German, Japanese, Chinese). Seed 3 of pawsx-plain does not learn
# with it (English dev falls below the majority share), so the grid stops there (docs/protocol.md).
PAWSX_PROTOCOL = "--cls first --lr 5e-5 --head_lr 1e-2 --batch_size 32 --select_on en --lang de,ja,zh"

# The reproduce.py invocations behind the README's real-encoder tables, by README section, as run on a
# 2-core CPU with multilingual-e5-small (vocabulary trimmed; trimming leaves every fine-tuning output
# unchanged). --model, --data_root, --out, --threads and --dry_run are added from the command line.
PPA_ALIGN = "--batch_size 32 --queue 4096 --max_steps 512"  # stage 1 sized for a CPU
README_RUNS = {
    "side": [["--groups", "side", "--seeds", "1", "2", "3", "--extra", PROTOCOL, "--ear_extra", PROTOCOL],
             ["--groups", "side-ppa", "--seeds", "1", "--names", "ppa-align", "ppa-align-no_tlm",
              "--ppa_align_extra", PPA_ALIGN],
             ["--groups", "side-ppa", "--seeds", "1", "2", "3", "--names", "massive-ppa", "massive-ppa-no_tlm",
              "--align_seed", "1", "--ppa_extra", PROTOCOL],
             ["--groups", "side-ppa", "--seeds", "1", "2", "3", "--names", "massive-ppa-base", "--ppa_extra", PROTOCOL]],
    "tod": [["--groups", "tod", "--seeds", "1", "2", "3"]],  # the protocol is the default --extra
    "ear": [["--groups", "ear", "--seeds", "1", "2", "3", "--names", "xnli-plain", "xnli-rsda", "xnli-ear",
             "xnli-ear-no_ept", "xnli-ear-no_apt", "--ear_epochs", "2", "--ear_extra", XNLI_PROTOCOL]],
    "pawsx": [["--groups", "ear", "--seeds", "1", "2", "3", "--names", "pawsx-plain", "pawsx-rsda", "pawsx-ear",
               "--ear_epochs", "2", "--ear_extra", PAWSX_PROTOCOL]],
    "ppa": [["--groups", "xnli-ppa", "--seeds", "1", "--names", "xnli-ppa-align", "xnli-ppa-align-no_tlm",
             "--ppa_align_extra", PPA_ALIGN],
            ["--groups", "xnli-ppa", "--seeds", "1", "2", "3", "--names", "xnli-ppa", "xnli-ppa-no_tlm",
             "--align_seed", "1", "--ppa_extra", XNLI_PROTOCOL_PPA],
            ["--groups", "xnli-ppa", "--seeds", "1", "2", "3", "--names", "xnli-ppa-base", "--ppa_extra", XNLI_PROTOCOL_PPA]],
    "mapping": [["--groups", "mapping", "--seeds", "1", "--names", "sts-none", "sts-cross"],
                ["--groups", "mapping", "--seeds", "1", "--names", "sts-bi", "--sts_extra", "--epochs 1"]],
}
IGNORED = {"out_dir", "save_dir", "data_dir", "model"}  # paths, which differ between machines


def file_names(v):
    """`v` with every path cut to its file name ('massive:/a/data/massive:th' -> 'massive:massive:th'):
    dataset and corpus files are compared by name, wherever the data folder is on this machine."""
    if isinstance(v, (list, tuple)):
        return [file_names(x) for x in v]
    return re.sub(r"[^:,\s]*/", "", v) if isinstance(v, str) else v


def settings_differ(had, script, argv):
    """The flags (but IGNORED) whose value in `had`, an existing results.json's args, differs from what
    `argv` would run."""
    module = importlib.import_module(script[:-3])  # the method file's own parser gives every default
    want = vars(module.parse_args(argv))
    return [f"--{k} {had[k]!r} (now {want[k]!r})" for k in want  # None: derived in main (e.g. --head_lr = --lr)
            if k in had and k not in IGNORED and want[k] is not None and file_names(had[k]) != file_names(want[k])]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--groups", nargs="+", default=["xeroalign"], choices=["xeroalign", "crossaligner", "single", "mapping", "ppa", "ear", "side", "side-ppa", "tod", "xnli-ppa"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--model", default=os.environ.get("XALIGN_MODEL", "intfloat/multilingual-e5-small"),
                   help="hub name or local folder of the encoder (default: $XALIGN_MODEL or intfloat/multilingual-e5-small)")
    p.add_argument("--extra", default=None, help="flags added to every intent/slot command (default: the "
                   "protocol for multilingual-e5-small, PROTOCOL; MultiATIS++ without --limit_train)")
    p.add_argument("--sts_extra", default="", help="flags added to every sentence_mapping.py command (e.g. --limit_train)")
    p.add_argument("--ppa_extra", default="", help="flags added to every ppa_moco_tlm.py fine-tuning command (e.g. --limit_train)")
    p.add_argument("--ear_extra", default="", help="flags added to every ear_push_pull.py command (e.g. --limit_train; not --epochs or --copies: --ear_epochs keeps the runs step-matched)")
    p.add_argument("--ear_epochs", type=int, default=1, help="epochs of the ear group's RS-DA and EAR runs over "
                   "3 augmented copies; its plain fine-tuning takes 3 times as many, as many steps (default: 1)")
    p.add_argument("--ppa_align_extra", default="", help="flags added to the ppa_moco_tlm.py alignment command (e.g. --max_steps)")
    p.add_argument("--align_seed", type=int, default=None, help="ppa: fine-tune on the alignment of this seed "
                   "instead of each run's own (more fine-tuning seeds for one alignment run; out dirs seed<N>-align<M>)")
    p.add_argument("--data_root", default=os.environ.get("XALIGN_DATA", "data"),
                   help="folder holding the datasets (default: $XALIGN_DATA or data)")
    p.add_argument("--out", default="runs/repro")
    p.add_argument("--only", default="", help="run only names containing this text, e.g. massive-th")
    p.add_argument("--names", nargs="+", default=None, help="run exactly these names, in this order")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of each run (the README's: 1)")
    p.add_argument("--readme_runs", nargs="*", choices=list(README_RUNS), default=None, metavar="SECTION",
                   help="run the invocations behind the README's tables (README_RUNS), of these sections or all")
    a = p.parse_args(argv)
    if a.readme_runs is not None:
        common = ["--model", a.model, "--data_root", a.data_root, "--out", a.out, *(["--dry_run"] if a.dry_run else []),
                  *(["--threads", str(a.threads)] if a.threads else [])]
        return [cmd for section in a.readme_runs or README_RUNS for inv in README_RUNS[section]
                for cmd in main([*common, *(x.replace("{out}", a.out) for x in inv)])]
    todo = []
    runs = grid(a.groups, a.ear_epochs)
    if a.names:
        unknown = set(a.names) - {r[1] for r in runs}
        if unknown:
            raise SystemExit(f"error: --names {sorted(unknown)} not in the grid of --groups {a.groups}")
        runs = sorted((r for r in runs if r[1] in a.names), key=lambda r: a.names.index(r[1]))
    fill = {**{k: Path(a.data_root) / v for k, v in FOLDERS.items()}, "parallel": Path(a.data_root) / "parallel",
            "align": Path(a.out) / "ppa" / "align", "out": a.out,
            "synonyms": Path(a.data_root) / "synonyms" / "counterfitted_neighbors.json"}
    for group, name, script, args in runs:
        if a.only not in name:
            continue
        data = args[args.index("--data") + 1] if "--data" in args else None
        aligned = any("/aligned" in x for x in args) and a.align_seed is not None  # fine-tuning an aligned encoder
        for seed in a.seeds:
            out = Path(a.out) / group / name / (f"seed{seed}-align{a.align_seed}" if aligned else f"seed{seed}")
            cmd = [sys.executable, script, *(x.format(**fill).replace("/aligned", f"/seed{a.align_seed if aligned else seed}/aligned") for x in args)]
            cmd += [] if "--model" in args else ["--model", a.model]
            cmd += ["--data_dir", str(Path(a.data_root) / FOLDERS[data])] if data else []
            extra = a.sts_extra if data == "sts" else a.ppa_align_extra if "align" in args else \
                a.ppa_extra if script == "ppa_moco_tlm.py" else a.ear_extra if script == "ear_push_pull.py" else \
                a.extra if a.extra is not None else PROTOCOL_ALL_ROWS if data == "matis" else PROTOCOL
            cmd += ["--seed", str(seed), "--out_dir", str(out), *shlex.split(extra)]
            todo.append((out, cmd))
    if not todo:
        raise SystemExit(f"error: no run of --groups {' '.join(a.groups)} matches --only {a.only!r}"
                         + (f" and --names {' '.join(a.names)}" if a.names else ""))
    env = {**os.environ, **({"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)} if a.threads else {})}
    existing = {}  # out -> its results.json's args, read once; before anything runs, ones made otherwise stop the grid
    for out, cmd in [] if a.dry_run else todo:
        if (out / "results.json").is_file():
            existing[out] = read_results(out / "results.json").get("args", {})
            diff = settings_differ(existing[out], cmd[1], cmd[2:])
            if diff:
                raise SystemExit(f"error: {out / 'results.json'} was made with other settings: {'; '.join(diff)}. "
                                 "Use another --out, or delete it to rerun.")
    for i, (out, cmd) in enumerate(todo, 1):
        line = shlex.join(["python", *cmd[1:]])
        if a.dry_run:
            print(line)
        elif out in existing:
            print(f"[{i}/{len(todo)}] exists with these settings (model {existing[out].get('model')}), skipped: {out}")
        else:
            print(f"[{i}/{len(todo)}] {line}", flush=True)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "log.txt", "w") as log:
                if subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
                    raise SystemExit(f"error: run failed, see {out / 'log.txt'}")
    return todo


if __name__ == "__main__":
    main()
