"""sentence_mapping.py: the three mappings, pooling, alignment measures, STS metrics and loaders, and
end-to-end runs on the STS fixtures (tests/fixtures/sts: sentences written for the tests)."""
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import FIX, ROOT, write

import common
import sentence_mapping as sm

SHARED_STS = ROOT.parent / "shared" / "data" / "sts"


def test_normal_equation_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    S_A = torch.randn(200, 16, generator=g, dtype=torch.float64)
    Phi = torch.randn(16, 16, generator=g, dtype=torch.float64)
    assert torch.allclose(sm.normal_equation(S_A, S_A @ Phi), Phi, atol=1e-8)


def test_normal_equation_ridge_is_the_closed_form():
    g = torch.Generator().manual_seed(1)
    S_A, S_B = torch.randn(30, 8, generator=g, dtype=torch.float64), torch.randn(30, 8, generator=g, dtype=torch.float64)
    want = torch.linalg.inv(S_A.T @ S_A + 2.5 * torch.eye(8, dtype=torch.float64)) @ S_A.T @ S_B
    assert torch.allclose(sm.normal_equation(S_A, S_B, ridge=2.5), want, atol=1e-10)
    assert not torch.allclose(sm.normal_equation(S_A, S_B), want, atol=1e-3)  # the ridge term matters


def test_procrustes_is_orthogonal_and_recovers_a_rotation():
    g = torch.Generator().manual_seed(2)
    S_A = torch.randn(50, 12, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    assert torch.allclose(sm.procrustes(S_A, S_A @ Q), Q, atol=1e-10)  # exactly, up to float error
    Psi = sm.procrustes(S_A, torch.randn(50, 12, generator=g, dtype=torch.float64))  # any data: orthogonal
    assert torch.allclose(Psi.T @ Psi, torch.eye(12, dtype=torch.float64), atol=1e-10)


def test_fit_linear_approaches_least_squares():
    g = torch.Generator().manual_seed(3)
    S_A = 3.0 * torch.randn(400, 8, generator=g)  # the step size adapts to the embedding scale
    S_B = S_A @ torch.randn(8, 8, generator=g) + 0.1 * torch.randn(400, 8, generator=g)
    W = sm.fit_linear(S_A, S_B, epochs=60, lr=0.5)
    assert torch.allclose(W, sm.normal_equation(S_A, S_B), atol=2e-2)
    assert not torch.allclose(sm.fit_linear(S_A, S_B, epochs=1, lr=0.01), sm.normal_equation(S_A, S_B), atol=2e-2)


def test_mean_pool_ignores_padding():
    h = torch.randn(1, 3, 4)
    padded = torch.cat([h, 100 * torch.randn(1, 2, 4)], dim=1)  # two padding positions with large states
    got = sm.mean_pool(padded, torch.tensor([[1, 1, 1, 0, 0]]))
    assert torch.allclose(got, h.mean(1), atol=1e-6)


def test_alignment_quality_hand_computed():
    M, T = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    q = sm.alignment_quality(M, T)
    assert q["cosine"] == pytest.approx((1 + 2 ** -0.5) / 2)
    assert q["retrieval_src2tgt"] == 100.0  # row 1: cos 0 vs 0.707, picks its own translation
    assert q["retrieval_tgt2src"] == 50.0  # column 1 ties (0.707, 0.707): the first source wins, wrongly


def test_pearson_and_spearman_hand_computed_with_ties():
    assert common.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(100 * 5 / np.sqrt(2 * 114 / 9))
    assert list(common.ranks([3, 1, 3, 2])) == [3.5, 1.0, 3.5, 2.0]
    # ranks x [1, 2.5, 2.5, 4], y [1, 3, 2, 4]: sum dxdy 4.5, sum dx^2 4.5, sum dy^2 5
    assert common.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(100 * 4.5 / np.sqrt(4.5 * 5))
    assert common.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(100.0)  # monotone = 100


# ---------------------------------------------------------------------------- loaders


def test_sts_loaders_read_every_layout():
    en = common.load_sts(FIX / "sts", "en", "train")
    assert len(en) == 10 and en[0].a == "A plane is landing." and en[0].score == 5.0
    assert en[1].b == "A man plays an old guitar."  # the row with two extra trailing columns
    ko = common.load_sts(FIX / "sts", "ko", "train")  # header skipped
    de = common.load_sts(FIX / "sts", "de", "train")  # csv quoting
    assert len(ko) == len(de) == 10 and ko[0].a == "비행기가 착륙하고 있다."
    common.check_parallel(en, ko)
    common.check_parallel(en, de)
    common.DATA_NOTES.clear()
    sem = common.load_sts(FIX / "sts", "sem17-track5", "test")
    assert [p.score for p in sem] == [5.0, 3.8, 0.5, 4.2, 2.6]  # the pair without a gold score is skipped ...
    assert any("1 pairs without a gold score" in n for n in common.DATA_NOTES)  # ... and counted


def test_sts_loader_errors_name_file_and_line(tmp_path):
    p = write(tmp_path / "stsbenchmark" / "sts-train.csv", "g\tf\t2012\t1\t4.0\ta\tb\ng\tf\t2012\t2\tfive\ta\tb\n")
    with pytest.raises(common.DataError, match=r"sts-train.csv:2: similarity score 'five'"):
        common.read_sts(p)
    p = write(tmp_path / "stsb-xx-train.csv", 'a,b,1.0\n"a, quoted",b\n')
    with pytest.raises(common.DataError, match=r"stsb-xx-train.csv:2: expected 3 comma-separated"):
        common.read_sts(p)
    with pytest.raises(common.DataError, match="file not found.*stsb-multi-mt"):
        common.load_sts(tmp_path, "fr", "test")


def test_check_parallel_catches_a_broken_row(tmp_path):
    shutil.copytree(FIX / "sts", tmp_path / "sts")
    f = tmp_path / "sts" / "korsts" / "sts-test.tsv"
    lines = f.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("test002", "test099")  # an id that no longer matches STS-B's row
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    en, ko = common.load_sts(tmp_path / "sts", "en", "test"), common.load_sts(tmp_path / "sts", "ko", "test")
    with pytest.raises(common.DataError, match=r"sts-test.tsv:4: not parallel with .*sts-test.csv:3"):
        common.check_parallel(en, ko)
    with pytest.raises(common.DataError, match="rows, but"):
        common.check_parallel(en, ko[:-1])


def test_read_parallel_both_layouts_agree(tmp_path):
    two = common.read_parallel([FIX / "sts" / "bitext.en", FIX / "sts" / "bitext.de"])
    assert two == common.read_parallel([FIX / "sts" / "bitext.tsv"]) and len(two) == 32
    write(tmp_path / "b.de", "eins\n")
    with pytest.raises(common.DataError, match="b.de: 1 lines, but .* has 32"):
        common.read_parallel([FIX / "sts" / "bitext.en", tmp_path / "b.de"])


@pytest.mark.skipif(not SHARED_STS.is_dir(), reason="../shared/data/sts is not beside the repo")
def test_real_stsb_and_korsts_are_row_parallel():
    for split, n in (("train", 5749), ("dev", 1500), ("test", 1379)):
        en, ko = common.load_sts(SHARED_STS, "en", split), common.load_sts(SHARED_STS, "ko", split)
        assert len(en) == len(ko) == n
        common.check_parallel(en, ko)


# ---------------------------------------------------------------------------- end to end

RUN = ["--model", "tiny", "--data_dir", str(FIX / "sts"), "--batch_size", "4", "--lr", "1e-3", "--epochs", "6",
       "--map_epochs", "30"]


def test_bi_encoder_end_to_end(tmp_path):
    out = sm.main([*RUN, "--lang", "ko,de,sem17-track5", "--out_dir", str(tmp_path)])
    losses = [h["train_loss"] for h in out["history"]]
    assert losses[-1] < losses[0]  # training lowers the STS regression loss
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["metrics"]) == {"en", "ko", "de", "sem17-track5"}
    assert res["metrics"]["sem17-track5"]["test"]["n"] == 5
    for x in ("ko", "de"):
        m = res["mapping"][x]
        assert set(m) == {"unmapped", "fit_pairs", *sm.MAPPINGS} and m["fit_pairs"] == 20
        assert m["normal_equation"]["cosine"] > m["unmapped"]["cosine"]  # fitting maps the spaces closer
        assert set(res["cross_lingual"][x]) == {"unmapped", *sm.MAPPINGS}
    # the cached-embedding shortcut used after training gives the bi-encoder's own scores
    enc, tok = common.load_encoder(str(tmp_path / "tiny_model"))
    model, args = sm.BiEncoder(enc), sm.parse_args(RUN)
    pairs = common.load_sts(FIX / "sts", "ko", "test")
    emb = lambda texts: sm.embed(enc, tok, texts, 128, torch.device("cpu"), torch.autocast("cpu", enabled=False))  # noqa: E731
    direct = sm.sts_eval(model, tok, pairs, "bi", args.max_len, torch.device("cpu"),
                         torch.autocast("cpu", enabled=False))
    assert sm.sts_eval(model, tok, pairs, "bi", args.max_len, None, None, emb) == pytest.approx(direct)


def test_cross_encoder_end_to_end(tmp_path):
    out = sm.main([*RUN, "--lang", "ko", "--arch", "cross", "--out_dir", str(tmp_path)])
    losses = [h["train_loss"] for h in out["history"]]
    assert losses[-1] < losses[0]
    assert set(out["cross_lingual"]["ko"]) == {"cross_encoder"} and out["mapping"] == {}


def test_pretrained_only_with_bitext_and_reverse_direction(tmp_path):
    out = sm.main([*RUN, "--lang", "de", "--arch", "none", "--direction", "x2en", "--out_dir", str(tmp_path),
                   "--pairs", str(FIX / "sts" / "bitext.en"), str(FIX / "sts" / "bitext.de")])
    assert out["history"] == [] and out["mapping"]["de"]["fit_pairs"] == 32


def test_clear_errors(tmp_path):
    with pytest.raises(SystemExit):
        sm.parse_args(["--lang", "ko,de", "--pairs", "a.txt"])
    shutil.copytree(FIX / "sts", tmp_path / "sts")
    (tmp_path / "sts" / "stsb-multi-mt" / "stsb-de-test.csv").write_text("a,b,1.0\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="error: .*stsb-de-test.csv: 1 rows, but .* has 6"):
        sm.main([*RUN, "--lang", "de", "--data_dir", str(tmp_path / "sts"), "--out_dir", str(tmp_path / "o")])


def test_select_on_target_restores_the_best_dev_epoch(tmp_path):
    out = sm.main([*RUN, "--lang", "ko", "--select_on", "target", "--epochs", "3", "--out_dir", str(tmp_path)])
    dev = [h["dev"]["ko"]["spearman"] for h in out["history"]]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["selected_epoch"] == 1 + int(np.argmax(dev))
    assert out["metrics"]["ko"]["dev"]["spearman"] == pytest.approx(max(dev))
