"""UA / RA / TA / MIA-Efficacy / Avg.Gap / RTE against hand-built models and numbers."""

import pytest
import torch
import torch.nn as nn

from gradkit_salun import metrics as M


class Identity3(nn.Module):
    """logits = x (so the prediction is argmax x)."""

    def forward(self, x):
        return x


def test_accuracies_by_hand():
    x = torch.eye(3)[[0, 1, 2, 0, 1]]          # predictions 0 1 2 0 1
    y = torch.tensor([0, 1, 1, 2, 1])          # 3 of 5 right
    model = Identity3()
    assert M.retain_accuracy(model, (x, y)) == pytest.approx(0.6)
    assert M.test_accuracy(model, [(x[:2], y[:2]), (x[2:], y[2:])]) == pytest.approx(0.6)
    assert M.unlearning_accuracy(model, (x, y)) == pytest.approx(0.4)


def test_mia_efficacy_separates_member_like_and_test_like_forget_sets():
    g = torch.Generator().manual_seed(0)
    n = 200
    y = torch.randint(0, 3, (n,), generator=g)
    onehot = torch.nn.functional.one_hot(y, 3).float()
    members = 8.0 * onehot                                   # confidence ≈ 1
    nonmembers = 0.3 * onehot + 0.5 * torch.randn(n, 3, generator=g)   # confidence ≈ 0.4
    model = Identity3()
    like_test = 0.3 * onehot[:50] + 0.5 * torch.randn(50, 3, generator=g)
    eff_test_like = M.mia_efficacy(model, (like_test, y[:50]), (members, y), (nonmembers, y))
    eff_member_like = M.mia_efficacy(model, (8.0 * onehot[:50], y[:50]), (members, y), (nonmembers, y))
    assert eff_test_like > 0.9
    assert eff_member_like < 0.05


def test_confidence_is_true_label_probability():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([1, 0])
    c = M.confidence(Identity3(), x, y)
    torch.testing.assert_close(c, torch.tensor([0.5, torch.sigmoid(torch.tensor(1.0)).item()]))


def test_avg_gap_by_hand():
    m = {"UA": 0.1, "RA": 0.9, "TA": 0.8, "MIA": 0.2}
    ref = {"UA": 0.0, "RA": 1.0, "TA": 0.9, "MIA": 0.4}
    assert M.avg_gap(m, ref) == pytest.approx((0.1 + 0.1 + 0.1 + 0.2) / 4)
    with pytest.raises(ValueError, match="MIA"):
        M.avg_gap({"UA": 0, "RA": 0, "TA": 0}, ref)


def test_run_time_and_bad_input():
    import time

    assert M.run_time(time.sleep, 0.05) >= 0.05
    with pytest.raises(TypeError, match="callable"):
        M.run_time(3)
    with pytest.raises(ValueError, match="empty"):
        M.retain_accuracy(Identity3(), [])


def test_metrics_registered():
    import gradkit_core as gk

    names = {s.name for s in gk.list(kind="metrics", plugin="salun")}
    assert {"unlearning-ua", "unlearning-ra", "unlearning-ta", "mia-efficacy", "unlearning-avg-gap",
            "unlearning-rte", "unlearning-metrics"} <= names
    assert gk.get("unlearning-avg-gap") is M.avg_gap
