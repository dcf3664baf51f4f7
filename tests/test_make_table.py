"""tools/make_table.py turns fixture result files into the expected markdown table."""
import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import make_table  # noqa: E402


def result(path, method, seed, intent, commit="abcdef1234", **extra):
    metrics = {lang: {"test": {"intent_acc": v, "slot_f1": 0.0}} for lang, v in intent.items()}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"method": method, "data": "matis", "args": {"seed": seed},
                                                   "commit": commit, "dirty": False, "metrics": metrics, **extra}))


def test_table_mean_std_seeds_average_and_paper_row(tmp_path):
    result(tmp_path / "zs1", "zeroshot", 1, {"en": 90.0, "hi": 60.0, "tr": 40.0})
    result(tmp_path / "zs2", "zeroshot", 2, {"en": 92.0, "hi": 64.0, "tr": 50.0})
    result(tmp_path / "xa1", "xeroalign", 1, {"en": 91.0, "hi": 70.0, "tr": 66.0}, commit="1234567890")
    result(tmp_path / "ca1", "crossaligner", 1, {"en": 91.0, "hi": 70.0, "tr": 60.0}, aux=["xa", "ca"], weighting="cov")
    result(tmp_path / "other", "zeroshot", 1, {"en": 1.0, "hi": 1.0})
    (tmp_path / "other/results.json").write_text((tmp_path / "other/results.json").read_text().replace("matis", "mtop"))
    lines = make_table.table(make_table.load(tmp_path, "matis"), "matis", "intent_acc")
    def run(seed, lang, value, train_lang="en"):
        return {"metrics": {"en": {"test": {"intent_acc": 90.0 + seed}}, lang: {"test": {"intent_acc": value}}},
                "commit": "a" * 10, "args": {"seed": seed, "train_lang": train_lang}}
    per_lang = make_table.table({"xeroalign": [run(1, "hi", 70.0), run(1, "tr", 60.0), run(2, "hi", 74.0),
                                               run(2, "tr", 64.0), run(3, "hi", 80.0)],  # seed 3 lacks tr
                                 "target": [run(1, "hi", 85.0, "hi"), run(1, "tr", 75.0, "tr")]}, "mtop", "intent_acc")
    # one run per language and seed: seed averages 65 and 69 -> 67.0 ± 2.8 (seed 3 is incomplete); English:
    # each seed's runs averaged first (91, 92, 93), then mean ± std over the seeds
    assert per_lang[2] == "| xeroalign | ours | 92.0 ± 1.0 | 74.7 ± 5.0 | 62.0 ± 2.8 | 67.0 ± 2.8 | 2 (+1 partial) | aaaaaaa |"
    assert per_lang[4] == "| target | ours | – | 85.0 | 75.0 | 80.0 | 1 | aaaaaaa |"  # not trained on English
    assert lines == [
        "| method | source | en | hi | tr | avg | seeds | commit |",
        "|---|---|---:|---:|---:|---:|---:|---|",
        # per-run averages over hi, tr: 50 and 57 -> mean 53.5, sample std 4.9
        "| zeroshot | ours | 91.0 ± 1.4 | 62.0 ± 2.8 | 45.0 ± 7.1 | 53.5 ± 4.9 | 2 | abcdef1 |",
        "| zeroshot | Gritta & Iacobacci 2021, Table 5 | – | 91.9 | 76.2 | 84.1 | – | – |",
        "| xeroalign | ours | 91.0 | 70.0 | 66.0 | 68.0 | 1 | 1234567 |",
        "| xeroalign | Gritta & Iacobacci 2021, Table 5 | – | 94.0 | 93.4 | 93.7 | – | – |",
        "| crossaligner xa+ca (cov) | ours | 91.0 | 70.0 | 60.0 | 65.0 | 1 | abcdef1 |",
        "| crossaligner xa+ca (cov) | Gritta et al. 2022, Table 4 | – | 95.1 | 93.3 | 94.2 | – | – |",
    ]


def test_method_names_of_crossaligner_and_ear_runs():
    name = make_table.method_name
    assert name({"method": "zeroshot", "aux": [], "weighting": "sum"}) == "crossaligner zero-shot"
    assert name({"method": "zeroshot"}) == "zeroshot"  # xeroalign.py / contrastive.py --no-align
    assert name({"method": "crossaligner", "aux": ["ca"], "weighting": "sum"}) == "crossaligner ca"
    assert name({"method": "crossaligner", "aux": ["xa", "ca"], "weighting": "sum"}) == "crossaligner xa+ca (sum)"
    assert name({"method": "ear", "args": {"alpha": 1.0, "beta": 0.1}}) == "ear"
    assert name({"method": "ear", "args": {"alpha": 0.0, "beta": 0.1}}) == "ear w/o EPT"
    assert name({"method": "ear", "args": {"alpha": 1.0, "beta": 0.0}}) == "ear w/o APT"
    # the paper's Table 5 (MTOD) row for the best configuration, intent accuracy / slot F1
    assert make_table.PAPER[("mtod", "slot_f1")]["crossaligner xa+ca (cov)"][1] == {"es": 89.3, "th": 67.2}
    assert make_table.PAPER[("mtop", "intent_acc")]["crossaligner ca"][1]["th"] == 92.6


def test_cli_rejects_a_missing_dataset(tmp_path):
    import pytest
    with pytest.raises(SystemExit, match="no results.json for --data mtod"):
        make_table.main([str(tmp_path), "--data", "mtod"])


def test_sentence_mapping_sections_become_tables(tmp_path):
    for seed, (un, ne) in ((1, (0.40, 0.70)), (2, (0.50, 0.72))):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "results.json").write_text(json.dumps({
            "method": "sentence_mapping-none", "data": "sts", "commit": "c0ffee12345", "dirty": False,
            "metrics": {"en": {"test": {"spearman": 80.0}}, "ko": {"test": {"spearman": 70.0 + seed}}},
            "mapping": {"ko": {"fit_pairs": 10, "unmapped": {"cosine": un}, "normal_equation": {"cosine": ne}}}}))
    runs = make_table.load(tmp_path, "sts")
    assert make_table.table(runs, "sts", "spearman")[2] == "| sentence_mapping-none | ours | 80.0 ± 0.0 | 71.5 ± 0.7 | 71.5 ± 0.7 | 2 | c0ffee1 |"
    lines = make_table.table(make_table.derived(runs, "mapping", "test"), "sts/mapping", "cosine")
    assert lines == [
        "| method | source | ko | avg | seeds | commit |",
        "|---|---|---:|---:|---:|---|",
        "| sentence_mapping-none / unmapped | ours | 0.4500 ± 0.0707 | 0.4500 ± 0.0707 | 2 | c0ffee1 |",
        "| sentence_mapping-none / unmapped | Choi et al. 2020, III.D | 0.4636 | 0.4636 | – | – |",
        "| sentence_mapping-none / normal_equation | ours | 0.7100 ± 0.0141 | 0.7100 ± 0.0141 | 2 | c0ffee1 |",
        "| sentence_mapping-none / normal_equation | Choi et al. 2020, III.D | 0.7131 | 0.7131 | – | – |",
    ]


def test_readme_markers_get_their_tables_rewritten_and_nothing_else(tmp_path):
    result(tmp_path / "runs/zs1", "zeroshot", 1, {"en": 90.0, "hi": 60.0, "tr": 40.0})
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- make_table runs --data matis --metric intent_acc --langs hi -->\n| old | table |\n"
                      "|---|---|\n\ntext after\n| a hand table without marker |\n", encoding="utf-8")
    make_table.main(["--readme", str(readme)])
    assert readme.read_text(encoding="utf-8").split("\n") == [
        "intro", "<!-- make_table runs --data matis --metric intent_acc --langs hi -->",
        "| method | source | en | hi | avg | seeds | commit |", "|---|---|---:|---:|---:|---:|---|",
        "| zeroshot | ours | 90.0 | 60.0 | 60.0 | 1 | abcdef1 |",
        "| zeroshot | Gritta & Iacobacci 2021, Table 5 | – | 91.9 | 91.9 | – | – |",
        "", "text after", "| a hand table without marker |", ""]


def test_readme_marker_without_results_names_the_line(tmp_path):
    import pytest
    readme = tmp_path / "README.md"
    readme.write_text("a\n\n<!-- make_table nowhere --data mtod -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"README.md:3: make_table marker: no results.json for --data mtod"):
        make_table.main(["--readme", str(readme)])


def test_readme_marker_with_a_bad_flag_names_the_line_without_usage_text(tmp_path, capsys):
    import pytest
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- make_table runs --data mtod --metrik slot_f1 -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"README.md:2: make_table marker: unrecognized arguments: --metrik slot_f1"):
        make_table.main(["--readme", str(readme)])
    assert "usage" not in capsys.readouterr().err


def test_command_line_without_folder_or_data_says_what_to_give():
    import pytest
    with pytest.raises(SystemExit, match=r"error: give a folder and --data, or --readme FILE"):
        make_table.main(["runs"])


def test_duplicate_runs_unknown_languages_and_metrics_are_errors(tmp_path):
    import pytest
    result(tmp_path / "a", "zeroshot", 1, {"en": 90.0, "hi": 60.0})
    result(tmp_path / "b", "zeroshot", 2, {"en": 91.0, "hi": 61.0})
    runs = make_table.load(tmp_path, "matis")
    with pytest.raises(ValueError, match=r"--langs hi,xx: no results for xx \(found: hi\)"):
        make_table.table(runs, "matis", "intent_acc", langs=["hi", "xx"])
    with pytest.raises(ValueError, match=r"--metric slot_F1 --split test: not in these results \(they have: intent_acc, slot_f1\)"):
        make_table.table(runs, "matis", "slot_F1")
    result(tmp_path / "rerun", "zeroshot", 2, {"en": 95.0, "hi": 65.0})  # the same seed again: not silently averaged
    with pytest.raises(ValueError, match=r"two zeroshot runs of seed 2 report hi: .*b/results.json and .*rerun/results.json"):
        make_table.table(make_table.load(tmp_path, "matis"), "matis", "intent_acc")


def test_readme_check_names_stale_tables_and_writes_nothing(tmp_path):
    import pytest
    result(tmp_path / "runs/a", "zeroshot", 1, {"en": 90.0, "hi": 60.0})
    readme = tmp_path / "README.md"
    text = "x\n<!-- make_table runs --data matis --langs hi -->\n| stale |\n"
    readme.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit, match=r"README.md: the tables under the make_table markers of lines 2 differ"):
        make_table.main(["--readme", str(readme), "--check"])
    assert readme.read_text(encoding="utf-8") == text
    make_table.main(["--readme", str(readme)])
    make_table.main(["--readme", str(readme), "--check"])  # now up to date: no error


@pytest.mark.parametrize("doc,at_least", [("README.md", 6), ("docs/results.md", 13)])
def test_the_readme_tables_are_those_of_the_committed_results(doc, at_least):
    """Every results table in the README and docs/results.md is make_table's output from the results.json
    files under runs/ (committed with them): no table is edited by hand, and none is stale."""
    n, changed = make_table.update_readme(ROOT / doc, check=True)
    assert n >= at_least and changed == [], f"{doc} tables under the markers of lines {changed} are stale"


def test_paired_differences_from_the_baseline_seed_by_seed(tmp_path):
    """Each method's difference from zero-shot is taken within a seed (same seed, same subset), then
    averaged; the count says how many seeds share the mean's sign."""
    result(tmp_path / "zs1", "zeroshot", 1, {"en": 90.0, "hi": 60.0, "tr": 40.0})
    result(tmp_path / "zs2", "zeroshot", 2, {"en": 92.0, "hi": 64.0, "tr": 50.0})
    result(tmp_path / "xa1", "xeroalign", 1, {"en": 91.0, "hi": 70.0, "tr": 38.0})
    result(tmp_path / "xa2", "xeroalign", 2, {"en": 91.0, "hi": 62.0, "tr": 54.0})
    result(tmp_path / "xa3", "xeroalign", 3, {"en": 91.0, "hi": 99.0, "tr": 99.0})  # no zero-shot of seed 3
    lines = make_table.table(make_table.load(tmp_path, "matis"), "matis", "intent_acc", paired="zeroshot")
    # seed 1: en +1, hi +10, tr -2 (avg +4); seed 2: en -1, hi -2, tr +4 (avg +1)
    assert lines[-1] == "| xeroalign | minus zeroshot, paired | +0.0 (0/2) | +4.0 (1/2) | +1.0 (1/2) | +2.5 (2/2) | 2 | – |"
    with pytest.raises(ValueError, match="--paired target: no such method"):
        make_table.table(make_table.load(tmp_path, "matis"), "matis", "intent_acc", paired="target")


def test_methods_picks_rows_and_still_pairs_with_a_hidden_baseline(tmp_path):
    """--methods shows only the named rows; the paired baseline is read even when its row is not shown."""
    result(tmp_path / "zs1", "zeroshot", 1, {"en": 90.0, "hi": 60.0})
    result(tmp_path / "xa1", "xeroalign", 1, {"en": 91.0, "hi": 65.0})
    result(tmp_path / "co1", "contrastive", 1, {"en": 89.0, "hi": 70.0})
    runs = make_table.load(tmp_path, "matis")
    lines = make_table.table(runs, "matis", "intent_acc", paired="zeroshot", methods=["xeroalign"])
    assert [line.split(" | ")[:2] for line in lines[2:]] == [["| xeroalign", "ours"],
                                                           ["| xeroalign", "Gritta & Iacobacci 2021, Table 5"],
                                                           ["| xeroalign", "minus zeroshot, paired"]]
    assert lines[-1].startswith("| xeroalign | minus zeroshot, paired | +1.0 (1/1) | +5.0 (1/1) |")
    with pytest.raises(ValueError, match="--methods: no results for ear"):
        make_table.table(runs, "matis", "intent_acc", methods=["xeroalign", "ear"])


def test_intent_only_runs_share_the_intent_table_and_leave_slots_empty(tmp_path):
    result(tmp_path / "zs1", "zeroshot", 1, {"en": 90.0, "hi": 60.0})
    path = tmp_path / "ear1"
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"method": "ear", "data": "matis", "args": {"seed": 1}, "commit": "c" * 10,
                                                   "metrics": {x: {"test": {"accuracy": v}} for x, v in (("en", 91.0), ("hi", 65.0))}}))
    runs = make_table.load(tmp_path, "matis")
    assert make_table.table(runs, "matis", "intent_acc", paired="zeroshot")[-1] == \
        "| ear | minus zeroshot, paired | +1.0 (1/1) | +5.0 (1/1) | +5.0 (1/1) | 1 | – |"
    assert make_table.table(runs, "matis", "slot_f1")[-1] == "| ear | ours | – | – | – | 0 | ccccccc |"
