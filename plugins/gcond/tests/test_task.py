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
