"""The shared signSGD / Signum baseline (used by frugal and zounlearn)."""

import pytest
import torch

from gradkit_core.testing.optimizers import OptimizerConformance
from gradkit_support.baselines import SignSGD, quantize_update


class TestSignSGDConformance(OptimizerConformance):
    component = "sign-sgd"
    component_kwargs = {"lr": 1e-3, "weight_decay": 0.1}
    stateless = True


class TestSignSGDMomentumConformance(OptimizerConformance):
    component = "sign-sgd"
    component_kwargs = {"lr": 1e-3, "momentum": 0.9}


def test_sign_sgd_hand_computed_steps():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = SignSGD([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([0.3, -4.0, 0.0])
    opt.step()
    # decoupled decay then sign step: p*(1 - 0.1*0.5) - 0.1*sign(g)
    assert torch.allclose(p.detach(), torch.tensor([1.0 * 0.95 - 0.1, -2.0 * 0.95 + 0.1, 0.5 * 0.95]))
    q = torch.nn.Parameter(torch.zeros(2))
    opt = SignSGD([q], lr=1.0, momentum=0.5)
    q.grad = torch.tensor([1.0, -1.0])
    opt.step()  # m = 0.5*g
    q.grad = torch.tensor([-3.0, -1.0])
    opt.step()  # m = 0.5*(0.5, -0.5) + 0.5*(-3, -1) = (-1.25, -0.75)
    assert torch.equal(q.detach(), torch.tensor([-1.0 + 1.0, 1.0 + 1.0]))


def test_quantize_update_levels():
    x = torch.tensor([0.9, -0.3, 0.05, -0.9, 0.0])
    assert torch.equal(quantize_update(x, 1), torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0]))
    # 2 bits: levels {-1, 0, 1} * max|x|-normalised
    assert torch.equal(quantize_update(x, 2), torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0]))
    q3 = quantize_update(x, 3)  # 3 levels per side: round(x/0.9*3)/3
    assert torch.allclose(q3, torch.round(x / 0.9 * 3) / 3)


def test_sign_sgd_keeps_no_state_without_momentum_and_checks_input():
    p = torch.nn.Parameter(torch.ones(3))
    opt = SignSGD([p], lr=0.1)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\]"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3)), "a NaN gradient must change nothing"
    p.grad = torch.ones(3)
    opt.step()
    assert len(opt.state) == 0
    with pytest.raises(ValueError, match="bits"):
        SignSGD([p], bits=0)


def test_sign_sgd_nan_in_a_later_group_changes_nothing():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = SignSGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.5)
    a.grad, b.grad = torch.ones(3), torch.tensor([1.0, float("inf")])
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\]"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3)) and len(opt.state) == 0, "group 0 must not be stepped"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_sign_sgd_rejects_bad_hyperparameters_in_groups_too(bad):
    p = torch.nn.Parameter(torch.ones(2))
    for key in ("lr", "weight_decay"):
        with pytest.raises(ValueError, match=key):
            SignSGD([p], **{key: bad})
        opt = SignSGD([p])
        with pytest.raises(ValueError, match=key):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], key: bad})
