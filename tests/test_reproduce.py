"""tools/reproduce.py --dry_run lists commands that each method file's own parser accepts."""
import importlib
import json
import shlex
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import reproduce  # noqa: E402


def test_dry_run_commands_parse_with_each_script(capsys):
    groups = ["xeroalign", "crossaligner", "single", "mapping", "ppa", "ear", "side", "side-ppa", "tod"]
    reproduce.main(["--dry_run", "--groups", *groups, "--seeds", "1", "2", "--ppa_align_extra", "--max_steps 3"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * len(reproduce.grid(groups))
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "python" and words[1].endswith(".py")
        module = importlib.import_module(words[1][:-3])
        args = module.parse_args(words[2:])  # exits on any flag the script does not know
        assert args.model and args.seed in (1, 2) and "seed" in args.out_dir


def test_the_default_settings_are_the_protocol_in_which_english_is_strong(capsys):
    """Without --extra, intent/slot runs get the protocol of docs/protocol.md (heads at 1e-2, a 4,000-row
    English subset, English-dev selection); MultiATIS++ trains on every English row."""
    reproduce.main(["--dry_run", "--groups", "xeroalign", "--seeds", "1", "--names", "mtod-zeroshot", "matis-zeroshot"])
    mtod, matis = (module_args(line) for line in capsys.readouterr().out.splitlines())
    for args in (mtod, matis):
        assert (args.cls, args.lr, args.head_lr, args.epochs, args.select_on) == ("first", 5e-5, 1e-2, 2, "en")
    assert (mtod.limit_train, matis.limit_train) == (4000, 0)


def module_args(line):
    words = shlex.split(line)
    return importlib.import_module(words[1][:-3]).parse_args(words[2:])


def test_xeroalign_grid_covers_the_paper_rows():
    names = {name for _, name, _, _ in reproduce.grid(["xeroalign"])}
    for lang in ("de", "es", "fr", "hi", "ja", "pt", "tr", "zh"):
        assert {f"matis-{lang}-xeroalign", f"matis-{lang}-target"} <= names
    assert {"mtod-es-xeroalign", "mtod-th-target", "massive-th-xeroalign", "massive-zeroshot"} <= names
    zeroshot = {name: args[args.index("--lang") + 1] for _, name, _, args in reproduce.grid(["xeroalign"]) if "zeroshot" in name}
    assert zeroshot == {"mtod-zeroshot": "es,th", "matis-zeroshot": "de,es,fr,hi,ja,pt,tr,zh",
                        "massive-zeroshot": "de,es,fr,hi,th"}  # one English model tested on every target


def test_tod_grid_aligns_one_model_per_seed_on_the_targets_mixed():
    """MTOD and MultiATIS++ under the protocol: every aligned row and the zero-shot row name the same
    targets (one model per seed, targets mixed); Target trains one model per target language."""
    runs = {name: (script, args) for _, name, script, args in reproduce.grid(["tod"])}
    for data, langs in (("mtod", "es,th"), ("matis", "de,hi,tr,ja")):
        for row in ("zeroshot", "xeroalign", "crossaligner", "ca+xa-sum", "ca+xa-cov"):
            script, args = runs[f"{data}-{row}"]
            assert args[args.index("--lang") + 1] == langs and ("--no-align" in args) == (row == "zeroshot")
        assert runs[f"{data}-ca+xa-cov"][1][-4:] == ["ca", "xa", "--weighting", "cov"]
        for lang in langs.split(","):
            assert runs[f"{data}-{lang}-target"][1][-4:] == ["--lang", lang, "--no-align", "--train_lang", lang][-4:]
    assert len(runs) == 2 * 5 + 2 + 4


def test_ppa_fine_tuning_reads_the_aligned_encoder_of_its_seed(capsys):
    reproduce.main(["--dry_run", "--groups", "ppa", "--seeds", "2", "--out", "o"])
    lines = capsys.readouterr().out.splitlines()
    assert "--out_dir o/ppa/align/seed2" in lines[0]
    assert sum("--model o/ppa/align/seed2/aligned" in x for x in lines) == 2  # massive and xnli, aligned


def test_xnli_ppa_aligns_on_the_training_half_and_fine_tunes_that_alignment(capsys):
    """PPA on XNLI: stage 1 reads only the --dev_halves training pairs (with th, hi, de), and each seed
    fine-tunes the seed-1 alignment, with and without TLM, on the same targets as its fine-tuning alone."""
    reproduce.main(["--readme_runs", "ppa", "--dry_run", "--model", "E5", "--out", "o"])
    lines = [shlex.split(x) for x in capsys.readouterr().out.splitlines()]
    arg = lambda words, flag: words[words.index(flag) + 1]  # noqa: E731
    align = [x for x in lines if arg(x, "--stage") == "align"]
    assert [("--no_tlm" in x, arg(x, "--parallel").split(":")[2], "--dev_halves" in x) for x in align] == \
        [(False, "th,hi,de", True), (True, "th,hi,de", True)]
    tune = [x for x in lines if arg(x, "--stage") == "finetune"]
    assert len(tune) == 9 and all(arg(x, "--lang") == "th,hi,de" and "--dev_halves" in x for x in tune)
    assert sorted(arg(x, "--model") for x in tune) == ["E5"] * 3 + ["o/ppa/xnli-ppa-align-no_tlm/seed1/aligned"] * 3 + \
        ["o/ppa/xnli-ppa-align/seed1/aligned"] * 3


def test_align_seed_fine_tunes_one_alignment_with_other_seeds(capsys):
    reproduce.main(["--dry_run", "--groups", "ppa", "--seeds", "2", "--align_seed", "1", "--names", "massive-base", "massive-aligned"])
    base, aligned = (shlex.split(x) for x in capsys.readouterr().out.splitlines())
    arg = lambda words, flag: words[words.index(flag) + 1]  # noqa: E731
    assert arg(base, "--seed") == "2" and arg(base, "--out_dir").endswith("massive-base/seed2")  # nothing aligned to pick
    assert arg(aligned, "--seed") == "2" and arg(aligned, "--model").endswith("ppa/align/seed1/aligned")
    assert arg(aligned, "--out_dir").endswith("massive-aligned/seed2-align1")


def test_every_committed_result_is_a_readme_run_with_its_settings():
    """Each results.json behind the README's real-encoder tables is the output of a --readme_runs command,
    made with that command's settings (so the one command reproduces the README)."""
    todo = reproduce.main(["--readme_runs", "--dry_run", "--out", str(ROOT / "runs/repro")])
    by_out = {str(out): cmd for out, cmd in todo}
    results = sorted((ROOT / "runs/repro").rglob("results.json"))
    assert len(results) >= 129
    for path in results:
        cmd = by_out.get(str(path.parent))
        assert cmd, f"{path}: no --readme_runs command writes here"
        assert reproduce.settings_differ(json.loads(path.read_text()).get("args", {}), cmd[1], cmd[2:]) == [], path


def test_readme_reproduce_commands_are_readme_runs(capsys):
    """The reproduce.py commands in the README's and docs' code blocks run (dry) and are among --readme_runs'."""
    lines, commands = [], []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines += doc.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if line.strip().startswith("python tools/reproduce.py") and (i == 0 or not lines[i - 1].rstrip().endswith("\\")):
            text = line.strip()
            while text.endswith("\\"):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            commands.append(shlex.split(text.replace("$E5", "E5").replace("<trimmed e5>", "E5")
                                        .replace("intfloat/multilingual-e5-small", "E5"), comments=True)[2:])
    assert len(commands) >= 4
    reproduce.main(["--readme_runs", "--dry_run", "--model", "E5", "--out", "o"])
    every = set(capsys.readouterr().out.splitlines())
    for argv in commands:
        reproduce.main([*argv, "--dry_run", "--out", "o", *([] if "--model" in argv else ["--model", "E5"])])
        printed = capsys.readouterr().out.splitlines()
        assert printed and set(printed) <= every, " ".join(argv)


def test_an_existing_result_made_with_other_settings_stops_the_grid(tmp_path, capsys):
    import pytest
    import xeroalign
    argv = ["--groups", "xeroalign", "--names", "mtod-es-target", "--seeds", "1", "--out", str(tmp_path), "--extra", "--epochs 3"]
    (out, cmd), = reproduce.main([*argv, "--dry_run"])
    out.mkdir(parents=True)
    args = vars(xeroalign.parse_args(cmd[2:]))
    (out / "results.json").write_text(json.dumps({"args": {**args, "model": "elsewhere/e5", "epochs": 99}}))
    with pytest.raises(SystemExit, match=r"was made with other settings: --epochs 99 \(now 3\)"):
        reproduce.main(argv)
    first = ["--names", "mtod-es-xeroalign", "mtod-es-target"]  # the first has no results: it would run first
    with pytest.raises(SystemExit, match=r"was made with other settings"):
        reproduce.main([*argv, *first])
    assert not (tmp_path / "xeroalign/mtod-es-xeroalign").exists()  # stopped before running anything
    (out / "results.json").write_text(json.dumps({"args": {**args, "model": "elsewhere/e5"}}))
    reproduce.main(argv)  # same settings (another path to the model): skipped, nothing run
    assert "exists with these settings (model elsewhere/e5), skipped" in capsys.readouterr().out


def test_settings_compare_files_by_name_wherever_the_data_is():
    assert reproduce.file_names("massive:/work/shared/data/massive:th,hi") == "massive:massive:th,hi"
    assert reproduce.file_names(["a/b/tatoeba.ara-eng.eng,c/tatoeba.ara-eng.ara", 3]) == ["tatoeba.ara-eng.eng,tatoeba.ara-eng.ara", 3]


def test_only_that_matches_nothing_is_an_error():
    import pytest
    with pytest.raises(SystemExit, match=r"no run of --groups xeroalign matches --only 'MTOD'"):
        reproduce.main(["--dry_run", "--only", "MTOD"])


def test_side_grid_has_ears_ablations_on_massive(capsys):
    """EAR w/o EPT (--alpha 0) and w/o APT (--beta 0) in the side-by-side grid: the same command as EAR's
    but that one weight, so their rows pair with EAR's seed by seed."""
    names = ["massive-ear", "massive-ear-no_ept", "massive-ear-no_apt"]
    reproduce.main(["--dry_run", "--groups", "side", "--seeds", "1", "--names", *names])
    ear, no_ept, no_apt = (module_args(line) for line in capsys.readouterr().out.splitlines())
    assert ear.alpha and ear.beta
    assert {**vars(ear), "alpha": 0, "out_dir": None} == {**vars(no_ept), "out_dir": None}
    assert {**vars(ear), "beta": 0, "out_dir": None} == {**vars(no_apt), "out_dir": None}
