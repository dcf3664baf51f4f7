"""tools/reproduce.py --dry_run lists commands that each method file's own parser accepts."""
import importlib
import shlex
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import reproduce  # noqa: E402


def test_dry_run_commands_parse_with_each_script(capsys):
    groups = ["spine", "crossaligner", "single", "mapping", "ppa", "ear"]
    reproduce.main(["--dry_run", "--groups", *groups, "--seeds", "1", "2", "--ppa_align_extra", "--max_steps 3"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * len(reproduce.grid(groups))
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "python" and words[1].endswith(".py")
        module = importlib.import_module(words[1][:-3])
        args = module.parse_args(words[2:])  # exits on any flag the script does not know
        assert args.model and args.seed in (1, 2) and "seed" in args.out_dir


def test_spine_grid_covers_the_issue_rows():
    names = {name for _, name, _, _ in reproduce.grid(["spine"])}
    for lang in ("de", "es", "fr", "hi", "ja", "pt", "tr", "zh"):
        assert {f"matis-{lang}-xeroalign", f"matis-{lang}-target"} <= names
    assert {"mtod-es-xeroalign", "mtod-th-target", "massive-th-xeroalign", "massive-zeroshot"} <= names


def test_ppa_fine_tuning_reads_the_aligned_encoder_of_its_seed(capsys):
    reproduce.main(["--dry_run", "--groups", "ppa", "--seeds", "2", "--out", "o"])
    lines = capsys.readouterr().out.splitlines()
    assert "--out_dir o/ppa/align/seed2" in lines[0]
    assert sum("--model o/ppa/align/seed2/aligned" in x for x in lines) == 2  # massive and xnli, aligned


def test_align_seed_fine_tunes_one_alignment_with_other_seeds(capsys):
    reproduce.main(["--dry_run", "--groups", "ppa", "--seeds", "2", "--align_seed", "1", "--names", "massive-base", "massive-aligned"])
    base, aligned = (shlex.split(x) for x in capsys.readouterr().out.splitlines())
    arg = lambda words, flag: words[words.index(flag) + 1]  # noqa: E731
    assert arg(base, "--seed") == "2" and arg(base, "--out_dir").endswith("massive-base/seed2")  # nothing aligned to pick
    assert arg(aligned, "--seed") == "2" and arg(aligned, "--model").endswith("ppa/align/seed1/aligned")
    assert arg(aligned, "--out_dir").endswith("massive-aligned/seed2-align1")
