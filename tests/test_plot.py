"""tools/plot.py: each committed figure shows the numbers of the committed runs, and it draws."""
import json
import shutil
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import make_table  # noqa: E402
import plot  # noqa: E402

FIGS = ROOT / "docs" / "figures"
NO_MPL = "matplotlib is not installed (pip install -r requirements-tools.txt); the figures need it"


def result(path, method, seed, scores, secs=100.0, **extra):
    """A results.json with intent accuracy per language and a training loop of `secs` seconds."""
    metrics = {lang: {"test": {"intent_acc": v, "slot_f1": v / 2}} for lang, v in scores.items()}
    path.mkdir(parents=True)
    args = {"seed": seed, **extra.pop("args", {})}
    (path / "results.json").write_text(json.dumps({
        "method": method, "data": "matis", "args": args, "commit": "abcdef1234", "metrics": metrics,
        "train_examples_seen": 800, "train_examples_per_s": 800 / secs, "wall_s": secs + 50,
        **extra}))


@pytest.mark.parametrize("name", list(plot.FIGURES))
def test_each_committed_figure_shows_the_numbers_of_the_committed_runs(name):
    """docs/figures/<name>.json (written with the figure) is what runs/ gives now: no figure is
    stale. The figure itself is there, a PNG of a few hundred KB at most."""
    png = FIGS / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 300_000
    committed = json.loads((FIGS / f"{name}.json").read_text(encoding="utf-8"))
    assert committed == plot.numbers(name), \
        f"docs/figures/{name} is stale: python tools/plot.py all redraws it"


def test_the_paired_figure_has_the_numbers_of_the_readme_tables():
    """Every method's mean paired gain in the MASSIVE figure is the '... paired' row's average cell
    of make_table's table with the same baseline."""
    panel = json.loads((FIGS / "massive-paired.json").read_text(encoding="utf-8"))["panels"][0]
    runs = make_table.load(ROOT / "runs/repro/side", "massive")
    for row in panel["rows"]:
        lines = make_table.table(runs, "massive", panel["metric"], langs=panel["langs"],
                                 paired=row["baseline"], methods=[row["method"]])
        cells = lines[-1].split(" | ")
        assert cells[1] == f"minus {row['baseline']}, paired"
        assert cells[-3] == make_table.paired_cell(list(row["diffs"]["avg"].values()))
        assert len(row["diffs"]["avg"]) == 3  # three seeds


def test_paired_and_cost_numbers_are_per_seed(tmp_path):
    """Differences and time ratios are taken within a seed; Target sums its per-language runs;
    PPA's time includes the stage 1 run whose encoder it fine-tunes."""
    g = tmp_path / "g"
    for s, (hi, tr, secs) in {1: (60.0, 40.0, 100.0), 2: (64.0, 50.0, 200.0)}.items():
        result(g / f"zs{s}", "zeroshot", s, {"en": 90.0, "hi": hi, "tr": tr}, secs)
        result(g / f"xa{s}", "xeroalign", s, {"en": 90.0, "hi": hi + s, "tr": tr + 3}, 2 * secs)
        result(g / f"ft{s}", "finetune", s, {"en": 90.0, "hi": hi, "tr": tr}, secs)
        result(g / f"ppa{s}", "ppa", s, {"en": 90.0, "hi": hi + 4, "tr": tr}, secs,
               args={"model": "runs/x/align/seed1/aligned"})
        for lang in ("hi", "tr"):
            result(g / f"t{lang}{s}", "target", s, {lang: 80.0}, secs / 4,
                   args={"train_lang": lang})
    (g / "align").mkdir()
    (g / "align/results.json").write_text(json.dumps({
        "method": "ppa_align", "data": "matis", "metrics": {}, "wall_s": 300.0,
        "save_dir": "runs/x/align/seed1/aligned"}))
    panel = {"data": "matis", "metric": "intent_acc", "langs": ["hi", "tr"],
             "groups": [plot.group("g", "zeroshot", ["xeroalign", "target"]),
                        plot.group("g", "finetune", ["ppa"])]}
    rows = plot.paired_numbers(panel, root=tmp_path)
    assert rows[0] == {"method": "xeroalign", "baseline": "zeroshot",
                       "diffs": {"hi": {"1": 1.0, "2": 2.0}, "tr": {"1": 3.0, "2": 3.0},
                                 "avg": {"1": 2.0, "2": 2.5}}}
    assert rows[1]["diffs"]["avg"] == {"1": 30.0, "2": 23.0}  # (20 + 40) / 2 and (16 + 30) / 2
    assert rows[2]["baseline"] == "finetune" and rows[2]["diffs"]["hi"] == {"1": 4.0, "2": 4.0}
    cost = {r["method"]: r for r in plot.cost_numbers(panel, root=tmp_path)}
    assert cost["xeroalign"]["cost"] == {"1": 2.0, "2": 2.0}  # the training loop, not wall_s
    assert cost["target"]["cost"] == {"1": 0.5, "2": 0.5}  # two runs of a quarter each
    assert cost["ppa"]["cost"] == {"1": 4.0, "2": 2.5}  # (100 + 300) / 100, (200 + 300) / 200
    assert cost["ppa"]["gain"] == {"1": 2.0, "2": 2.0}
    panel["groups"][0]["methods"].append("contrastive")
    with pytest.raises(ValueError, match="no results for contrastive"):
        plot.paired_numbers(panel, root=tmp_path)


def test_check_names_the_stale_figures(tmp_path, capsys):
    for name in plot.FIGURES:
        shutil.copy(FIGS / f"{name}.json", tmp_path)
    plot.main(["all", "--check", "--out_dir", str(tmp_path)])
    assert "4 figures match their results" in capsys.readouterr().out
    path = tmp_path / "massive-cost.json"
    nums = json.loads(path.read_text(encoding="utf-8"))
    nums["panels"][0]["rows"][0]["gain"]["1"] += 0.5
    path.write_text(json.dumps(nums), encoding="utf-8")
    (tmp_path / "xnli-paired.json").unlink()
    with pytest.raises(SystemExit, match=r"error: xnli-paired, massive-cost in .* differ"):
        plot.main(["all", "--check", "--out_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"error: xnli-paired in"):
        plot.main(["paired", "--check", "--out_dir", str(tmp_path)])


def test_help_documents_the_three_figures(capsys):
    with pytest.raises(SystemExit):
        plot.main(["--help"])
    out = capsys.readouterr().out
    for what in ("1. paired", "2. cost", "3. curves FOLDER", "requirements-tools.txt"):
        assert what in out


def test_drawing_writes_the_figure_and_its_numbers_the_same_each_time(tmp_path):
    pytest.importorskip("matplotlib", reason=NO_MPL)
    plot.write_figure("xnli-paired", tmp_path / "a")
    plot.write_figure("xnli-paired", tmp_path / "b")
    png = (tmp_path / "a/xnli-paired.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in png
    assert png == (tmp_path / "b/xnli-paired.png").read_bytes()
    svg = [(tmp_path / x / "xnli-paired.svg").read_bytes() for x in "ab"]
    assert svg[0] == svg[1]
    assert json.loads((tmp_path / "a/xnli-paired.json").read_text()) == plot.numbers("xnli-paired")


def test_curves_draws_a_png_of_a_committed_run(tmp_path):
    pytest.importorskip("matplotlib", reason=NO_MPL)
    folder = ROOT / "runs/repro/side/massive-xeroalign/seed1"
    losses, dev, metric = plot.history_series(json.loads((folder / "results.json").read_text()))
    assert set(losses) == {"task_loss", "align_loss"} and metric == "intent_acc"
    assert [e for e, _ in dev["th"]] == [1, 2]
    out = tmp_path / "curves.png"
    plot.main(["curves", str(folder), "-o", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no results.json"):
        plot.main(["curves", str(tmp_path)])
