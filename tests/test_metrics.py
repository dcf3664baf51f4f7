"""Metrics against hand-computed cases and against seqeval's own span scoring."""
import random

import pytest

import common


def test_hand_computed_slot_metrics():
    gold = [["O", "B-time", "I-time"], ["B-date", "O", "B-place"]]
    pred = [["O", "B-time", "I-time"], ["B-date", "O", "O"]]
    m = common.slot_metrics([True, True], gold, pred, tagging="bio")
    # spans: gold {time, date, place}, predicted {time, date}: P = 1, R = 2/3, F1 = 0.8
    assert m["slot_f1"] == pytest.approx(80.0)
    assert m["intent_acc"] == 100.0 and m["exact_match"] == 50.0
    m = common.slot_metrics([False, True], gold, pred, tagging="bio")
    assert m["intent_acc"] == 50.0 and m["exact_match"] == 0.0


def test_io_tagging_restores_bio_on_both_sides():
    # gold has two adjacent time spans; IO training cannot express the boundary, so the official
    # evaluation restores BIO on gold and prediction alike and they count as one span
    gold = [["B-time", "B-time", "O"]]
    pred = [["time", "time", "O"]]
    assert common.slot_metrics([True], gold, pred, tagging="io")["slot_f1"] == 100.0
    assert common.slot_metrics([True], gold, [["B-time", "I-time", "O"]], tagging="bio")["slot_f1"] == 0.0


def test_slot_f1_equals_seqeval_on_random_sequences():
    from seqeval.metrics import f1_score
    rng = random.Random(0)
    tags = ["O", "B-a", "I-a", "B-b", "I-b", "I-c"]  # includes invalid I- starts
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 8))] for _ in range(300)]
    pred = [[rng.choice(tags) for _ in g] for g in gold]
    ours = common.slot_metrics([True] * 300, gold, pred, tagging="bio")["slot_f1"]
    assert ours == pytest.approx(100 * f1_score(gold, pred))
    assert 0 < ours < 100


def test_evaluate_pads_words_cut_at_max_len_with_O():
    import torch

    class Fixed(torch.nn.Module):  # predicts intent 0 and slot tag 1 everywhere
        def forward(self, ids, mask, token_type_ids=None):
            B, T = ids.shape
            return None, torch.tensor([[1.0, 0.0]]).repeat(B, 1), torch.tensor([0.0, 1.0]).repeat(B, T, 1), None

    ex = common.Example("1", ["a", "b", "c"], "x", ["B-t", "I-t", "I-t"])
    items = [{"input_ids": [0, 5, 6, 2], "intent": 0, "slot_labels": [-100, 1, 1, -100], "starts": [1, 2]}]
    labels = common.Labels(["x", "y"], ["O", "t"])
    m = common.evaluate(Fixed(), [ex], items, labels, 1, torch.device("cpu"), common.contextlib.nullcontext())
    # predicted t t O -> one span (a b) vs gold (a b c): no exact span match
    assert m == {"intent_acc": 100.0, "slot_f1": 0.0, "exact_match": 0.0, "n": 1}
