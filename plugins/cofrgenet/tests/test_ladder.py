"""The continued-fraction ladder: continuant forward, Prop. 1 backward, pole clamp, bad input."""

import math

import pytest
import torch

from gradkit_cofrgenet.ladder import (CoFrLadder, ContinuedFraction, continuants, continued_fraction,
                                      continued_fraction_autograd, continued_fraction_nested)

DEPTHS = (1, 2, 3, 5, 8, 16)


def _away_from_poles(n, d, seed=0, dtype=torch.float64):
    """Mixed-sign partial denominators whose nested denominators all have |.| >= 0.3."""
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(4 * n, d, generator=g, dtype=dtype) * 4 - 2)
    a = torch.where(a.abs() < 0.5, a.sign() * 0.5 + a, a)
    den = a[:, -1].clone()
    ok = den.abs() >= 0.3
    for k in range(d - 2, -1, -1):
        den = a[:, k] + 1 / den
        ok &= den.abs() >= 0.3
    return a[ok][:n]


def test_hand_computed_values_and_gradients_d1_d2():
    a = torch.tensor([[2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    f = continued_fraction(a)  # 1 / (2 + 1/3) = 3/7
    assert f.item() == pytest.approx(3 / 7, abs=1e-15)
    f.sum().backward()
    # K_2 = a1 a2 + 1 = 7, K_1 = a2 = 3, K_0 = 1: df/da1 = -(3/7)^2, df/da2 = +(1/7)^2
    assert a.grad.tolist()[0] == pytest.approx([-(3 / 7) ** 2, (1 / 7) ** 2], abs=1e-15)
    b = torch.tensor([[4.0]], dtype=torch.float64, requires_grad=True)
    continued_fraction(b).sum().backward()
    assert b.grad.item() == pytest.approx(-1 / 16, abs=1e-15)


def test_continuants_are_fibonacci_for_all_ones():
    k = continuants(torch.ones(7, dtype=torch.float64))
    assert k.tolist() == [1, 1, 2, 3, 5, 8, 13, 21]


@pytest.mark.parametrize("d", DEPTHS)
def test_forward_equals_nested_form_away_from_poles(d):
    a = _away_from_poles(200, d, seed=d)
    assert len(a) >= 50
    torch.testing.assert_close(continued_fraction(a), continued_fraction_nested(a), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d", DEPTHS)
def test_prop1_backward_equals_autograd_through_nested_form(d):
    a = _away_from_poles(100, d, seed=100 + d).requires_grad_(True)
    w = torch.randn(len(a), dtype=torch.float64)
    (g_custom,) = torch.autograd.grad((continued_fraction(a) * w).sum(), a)
    (g_nested,) = torch.autograd.grad((continued_fraction_nested(a) * w).sum(), a)
    torch.testing.assert_close(g_custom, g_nested, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("d", (1, 2, 4, 7))
def test_gradcheck_finite_differences_float64(d):
    a = _away_from_poles(12, d, seed=200 + d).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ContinuedFraction.apply(x, 1e-2), (a,), eps=1e-6, atol=1e-7)


def test_sign_convention_is_not_symmetric():
    """A backward with the wrong (-1)^k parity or without the square would fail here."""
    a = torch.tensor([[1.5, -2.0, 0.7, 3.0]], dtype=torch.float64, requires_grad=True)
    continued_fraction(a).sum().backward()
    num = torch.zeros(4, dtype=torch.float64)
    for k in range(4):
        e = torch.zeros_like(a)
        e[0, k] = 1e-6
        num[k] = (continued_fraction_nested(a + e) - continued_fraction_nested(a - e)).item() / 2e-6
    torch.testing.assert_close(a.grad[0], num, rtol=1e-6, atol=1e-8)
    assert (a.grad[0].sign() * num.sign() > 0).all()


def test_no_nan_at_and_near_poles():
    # a1 + 1/a2 = 0 exactly (K_2 = a1 a2 + 1 = 0), and K_1 = 0 (a = [0]), and values within 1e-12 of a pole
    a = torch.tensor([[1.0, -1.0], [2.0, -0.5], [-1.0, 1.0 + 1e-12]], dtype=torch.float64, requires_grad=True)
    f = continued_fraction(a, eps=1e-2)
    f.sum().backward()
    assert torch.isfinite(f).all() and torch.isfinite(a.grad).all()
    assert f.abs().max().item() <= 1 / 1e-2 + 1e-9  # |K_1| <= 1 here, |K_2| clamped to eps
    z = torch.zeros(3, 1, requires_grad=True)
    out = continued_fraction(z)
    out.sum().backward()
    assert out.tolist() == [1 / 1e-2] * 3  # sign(0) = +1
    assert torch.isfinite(z.grad).all()
    # random inputs around poles at several depths, float32
    g = torch.Generator().manual_seed(0)
    for d in (2, 5, 16):
        x = (torch.randn(10_000, d, generator=g) * 0.3).requires_grad_(True)
        y = continued_fraction(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_clamp_matches_autograd_recursion_where_active():
    """With the clamp active the same forward comes out of the autograd recursion; the forward agrees."""
    a = torch.tensor([[1.0, -1.0 + 1e-4], [0.3, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(continued_fraction(a), continued_fraction_autograd(a))


@pytest.mark.parametrize("bad, err", [
    (torch.zeros(3, 0), ValueError),            # depth 0
    (torch.tensor(1.0), ValueError),            # no depth axis
    (torch.tensor([[1.0, float("nan")]]), ValueError),
    (torch.tensor([[1.0, float("inf")]]), ValueError),
    (torch.ones(2, 3, dtype=torch.long), TypeError),
    ([[1.0, 2.0]], TypeError),
])
def test_bad_partial_denominators_raise(bad, err):
    with pytest.raises(err):
        continued_fraction(bad)


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), float("inf"), "0.1", True])
def test_bad_eps_raises(eps):
    with pytest.raises(ValueError, match="eps"):
        continued_fraction(torch.ones(2, 3), eps=eps)


def test_ladder_module_shapes_and_matches_function():
    torch.manual_seed(0)
    lad = CoFrLadder(6, depth=3, n_ladders=2)
    x = torch.randn(4, 5, 6)
    y = lad(x)
    assert y.shape == (4, 5, 2)
    a = torch.einsum("btp,ldp->btld", x, lad.weight) + lad.bias
    torch.testing.assert_close(y, continued_fraction_nested(a))
    el = CoFrLadder(6, depth=3, n_ladders=2, mode="elementwise")
    ye = el(x)
    assert ye.shape == (4, 5, 2, 6)
    a = x[..., None, :, None] * el.weight + el.bias
    torch.testing.assert_close(ye, continued_fraction_nested(a))


def test_ladder_trainable_depth_freezes_deeper_terms():
    torch.manual_seed(0)
    for mode in ("multivariate", "elementwise"):
        lad = CoFrLadder(4, depth=4, n_ladders=3, mode=mode)
        lad.set_trainable_depth(2)
        lad(torch.randn(8, 4)).sum().backward()
        gw = lad.weight.grad if mode == "multivariate" else lad.weight.grad.transpose(1, 2)
        gb = lad.bias.grad if mode == "multivariate" else lad.bias.grad.transpose(1, 2)
        assert gw[:, :2].abs().sum() > 0 and gb[:, :2].abs().sum() > 0
        assert gw[:, 2:].abs().sum() == 0 and gb[:, 2:].abs().sum() == 0
        with pytest.raises(ValueError):
            lad.set_trainable_depth(5)


@pytest.mark.parametrize("kw", [dict(depth=0), dict(n_ladders=0), dict(mode="diagonal"), dict(eps=0.0),
                                dict(init_std=float("nan")), dict(depth=2.5)])
def test_ladder_bad_hyperparameters(kw):
    with pytest.raises(ValueError):
        CoFrLadder(4, **kw)


def test_ladder_bad_inputs():
    lad = CoFrLadder(4, depth=2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        lad(torch.randn(3, 5))
    with pytest.raises(ValueError, match="NaN"):
        lad(torch.tensor([[0.0, 1.0, float("nan"), 2.0]]))
