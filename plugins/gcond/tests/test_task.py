"""Reproduction task pieces: SSIM, masking, generated images."""

import math

import pytest
import torch

from gradkit_gcond.task import PatchSampler, _gaussian_window, generate_images, ssim

torch.set_num_threads(1)


def test_ssim_identity_symmetry_and_constant_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)), abs=1e-6)
    assert float(ssim(x, y)) < 0.95
    # two constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (variances are zero)
    a, b, c1 = 0.3, 0.6, 0.01 ** 2
    val = float(ssim(torch.full((1, 1, 9, 9), a), torch.full((1, 1, 9, 9), b)))
    assert val == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)


def test_gaussian_window():
    w = _gaussian_window(7, 1.5)
    assert w.shape == (1, 1, 7, 7) and float(w.sum()) == pytest.approx(1.0)
    assert float(w[0, 0, 3, 4] / w[0, 0, 3, 3]) == pytest.approx(math.exp(-1 / (2 * 1.5 ** 2)), rel=1e-5)


def test_sampler_masks_half_the_cells():
    imgs = generate_images(3, size=40, seed=0)
    assert imgs.shape == (3, 40, 40) and float(imgs.min()) >= 0 and float(imgs.max()) <= 1
    x, y = PatchSampler(imgs, batch=5, patch=16, cell=2, seed=0)()
    assert x.shape == (5, 2, 16, 16) and y.shape == (5, 1, 16, 16)
    mask = x[:, 1]
    cells = mask[:, ::2, ::2]
    assert torch.all(cells.flatten(1).sum(1) == 32)  # 50 % of the 8x8 cells kept
    assert torch.equal(x[:, :1], y * mask[:, None])
    with pytest.raises(ValueError, match="multiple"):
        PatchSampler(imgs, patch=15, cell=2)


def test_contrast_target_endpoints_and_two_channel_targets():
    from gradkit_gcond.task import contrast_target, l1_loss, ssim_loss

    imgs = generate_images(2, size=40, seed=1)
    x, y = PatchSampler(imgs, batch=4, patch=16, cell=2, seed=0, ssim_contrast=-1.0)()
    x1, y1 = PatchSampler(imgs, batch=4, patch=16, cell=2, seed=0)()
    assert y.shape == (4, 2, 16, 16) and torch.equal(x, x1) and torch.equal(y[:, :1], y1)
    assert torch.allclose(y[:, 1:], 1 - y1)                    # k = -1: the inverted image
    assert torch.allclose(contrast_target(y1, 1.0), y1, atol=1e-7)  # k = 1: the clean image
    assert torch.allclose(contrast_target(y1, 0.0), torch.full_like(y1, 0.5))
    out = torch.rand_like(y1)
    # L1 reads channel 0 (clean), SSIM the last channel (its own target); one-channel targets serve both
    assert float(l1_loss(out, y)) == pytest.approx(float((out - y1).abs().mean()))
    assert float(ssim_loss(out, y)) == pytest.approx(1 - float(ssim(out, 1 - y1)), abs=1e-6)
    assert float(ssim_loss(out, y1)) == pytest.approx(1 - float(ssim(out, y1)), abs=1e-6)
    with pytest.raises(ValueError, match="ssim_contrast"):
        PatchSampler(imgs, ssim_contrast=-2.0)


def test_inverted_ssim_target_makes_the_task_gradients_conflict():
    """At a half-contrast prediction, the L1 gradient (towards the clean crop) and the SSIM gradient
    agree when both targets are clean (k = 1) and point against each other for k = -1."""
    from gradkit_gcond.task import contrast_target, l1_loss, ssim_loss

    clean = PatchSampler(generate_images(4, size=48, seed=2), batch=16, patch=16, cell=2, seed=3)()[1]
    pred = (0.5 + 0.5 * (clean - 0.5)).requires_grad_(True)

    def cos(k):
        y = torch.cat([clean, contrast_target(clean, k)], 1)
        g1 = torch.autograd.grad(l1_loss(pred, y), pred)[0].flatten()
        g2 = torch.autograd.grad(ssim_loss(pred, y), pred)[0].flatten()
        return float(g1 @ g2 / (g1.norm() * g2.norm()))

    assert cos(1.0) > 0.1
    assert cos(-1.0) < -0.1


def test_reproduction_methods_and_conflict_measure():
    from gradkit_gcond.conductor import GradientConductor
    from gradkit_gcond.reproduce import ABLATIONS, METHODS, _aggregator, _task_cosine
    from gradkit_gcond.task import MaskedAutoencoder

    m = MaskedAutoencoder(width=4)
    full, noproj = _aggregator("gcond-exact", m, 2), _aggregator("gcond-exact-noproj", m, 2)
    assert isinstance(noproj, GradientConductor) and noproj.max_iters == 0 and full.max_iters == 4
    assert not noproj.stochastic and _aggregator("gcond-stochastic-noproj", m, 2).stochastic
    assert _aggregator("gcond-stochastic-readme", m, 2).dominance_rule == "readme"
    assert _aggregator("gcond-stochastic", m, 2).dominance_rule == "code"
    assert set(ABLATIONS) <= set(METHODS)
    a, b = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
    assert _task_cosine({"l1": a, "ssim": b}) == pytest.approx(-1 / math.sqrt(2))
    with pytest.raises(ValueError, match="unknown method"):
        _aggregator("adam", m, 2)
