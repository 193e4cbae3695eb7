"""Metrics against hand computations, and the robustness claim's direction on a tiny seeded model."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradkit_core as gk
from gradkit_cfcam.metrics import (
    average_drop,
    average_increase,
    cam_latency,
    cam_robustness,
    class_sensitivity,
    deletion_insertion_auc,
    deletion_insertion_curves,
    energy_in_mask,
    pointing_game,
    ssim_mse,
)


class RegionNet(nn.Module):
    """logit_1 = scale * (sum of pixels in the top-left 2x2 block) - 1, logit_0 = 0."""

    def __init__(self, scale=2.0):
        super().__init__()
        self.scale = scale
        m = torch.zeros(4, 4)
        m[:2, :2] = 1
        self.register_buffer("region", m)

    def forward(self, x):
        s = (x[:, 0] * self.region).sum(dim=(1, 2))
        return torch.stack([torch.zeros_like(s), self.scale * s - 1], dim=1)


def _p1(x, scale=2.0):
    s = (x[:, 0, :2, :2]).sum(dim=(1, 2))
    return torch.sigmoid(scale * s - 1)


def test_average_drop_and_increase_by_hand():
    m = RegionNet()
    x = torch.full((2, 1, 4, 4), 0.5)
    cams = torch.zeros(2, 4, 4)
    cams[0, :2, :2] = 0.9       # keeps the region -> no drop
    cams[1, :2, 0] = 0.9        # keeps half of it
    cams[1, 2:, 2:] = 0.7
    p = _p1(x)
    mask = (cams > 0.5).float()[:, None]
    pm = _p1(x * mask)
    expected = 100 * torch.clamp(p - pm, min=0) / p
    assert average_drop(m, x, cams, 1) == pytest.approx(float(expected.mean()), rel=1e-5)
    assert average_drop(m, x, cams, 1, reduce=False)[0] == pytest.approx(0.0, abs=1e-6)
    assert average_increase(m, x, cams, 1) == pytest.approx(100 * float((pm > p).float().mean()))
    # soft masks: x * cam
    soft = _p1(x * cams[:, None])
    exp_soft = 100 * torch.clamp(p - soft, min=0) / p
    assert average_drop(m, x, cams, 1, mode="soft") == pytest.approx(float(exp_soft.mean()), rel=1e-5)
    # an increase is counted and, unclipped, is a negative drop
    bright = torch.zeros(1, 4, 4)
    bright[0, :2, :2] = 1.0
    x2 = torch.full((1, 1, 4, 4), 0.5)
    x2[0, 0, 2:, 2:] = -5  # outside the region: masking it does not change p
    assert average_increase(m, x2, bright, 1) == 0.0
    assert average_drop(m, x2, bright, 1, clip=False) == pytest.approx(0.0, abs=1e-5)


def test_deletion_insertion_curves_step_counts_and_endpoints():
    m = RegionNet()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.5
    cam = torch.arange(16, dtype=torch.float32).flip(0).view(1, 4, 4) / 15  # pixel 0 most salient
    d, i, frac = deletion_insertion_curves(m, x, cam, 1, steps=5)
    np.testing.assert_allclose(frac, [0, 0.25, 0.5, 0.75, 1.0])
    # step k removes the first 4k pixels in raster order (HW // (steps - 1) = 4 per step)
    for k in range(5):
        keep = torch.ones(16)
        keep[: 4 * k] = 0
        xd = x * keep.view(1, 1, 4, 4)
        xi = x * (1 - keep).view(1, 1, 4, 4)
        assert float(d[0, k]) == pytest.approx(float(_p1(xd)[0]), rel=1e-5)
        assert float(i[0, k]) == pytest.approx(float(_p1(xi)[0]), rel=1e-5)
    da, ia = deletion_insertion_auc(m, x, cam, 1, steps=5)
    assert da == pytest.approx(float(np.trapezoid(d[0].numpy(), frac)), rel=1e-6)
    assert ia == pytest.approx(float(np.trapezoid(i[0].numpy(), frac)), rel=1e-6)


def test_faithful_map_beats_reversed_map_on_deletion_and_insertion():
    m = RegionNet(scale=4.0)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) + 0.5
    good = m.region.expand(3, 4, 4) * 0.9 + 0.05
    bad = 1 - good
    dg, ig = deletion_insertion_auc(m, x, good, 1, steps=17)
    db, ib = deletion_insertion_auc(m, x, bad, 1, steps=17)
    assert dg < db and ig > ib


def test_energy_and_pointing_by_hand():
    cams = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.2, 0.9], [0.0, 0.0]]])
    masks = torch.tensor([[[True, False], [False, False]], [[True, False], [False, False]]])
    assert energy_in_mask(cams, masks, reduce=False).tolist() == pytest.approx([0.5, 0.2 / 1.1])
    assert pointing_game(cams, masks, reduce=False).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="same shape"):
        energy_in_mask(cams, masks[:, :1])


def test_ssim_mse_identity_and_difference():
    a = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    s, m = ssim_mse(a, a)
    np.testing.assert_allclose(s, 1.0)
    np.testing.assert_allclose(m, 0.0)
    s2, m2 = ssim_mse(a, 1 - a)
    assert (s2 < 0.5).all() and np.allclose(m2, ((2 * a - 1) ** 2).flatten(1).mean(1).numpy())


def test_metric_inputs_checked():
    m = RegionNet()
    with pytest.raises(ValueError, match="cams"):
        average_drop(m, torch.rand(2, 1, 4, 4), torch.rand(2, 3, 3), 1)
    with pytest.raises(ValueError, match="targets"):
        average_drop(m, torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), [1, 1, 1])


def test_metrics_registered():
    for name in ["average-drop", "average-increase", "deletion-auc", "insertion-auc", "cam-robustness",
                 "cam-latency", "energy-in-mask", "pointing-game"]:
        assert gk.info(name, kind="metrics").plugin == "cfcam"
    assert gk.get("average-drop", kind="metrics") is average_drop


# ---------------------------------------------------------------------- claim directions, tiny seeded model
def _trained_tiny():
    from gradkit_cfcam.data import CamCNN, lesion_images, train_cnn

    x, y, masks = lesion_images(320, size=32, seed=0)
    torch.manual_seed(0)
    model = CamCNN(widths=(8, 16, 32), pools=2)
    train_cnn(model, x[:256], y[:256], epochs=3, seed=0)
    return model, x[256:], y[256:]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return _trained_tiny()


def test_cfcam_more_stable_than_gradcam_under_gradient_noise(tiny):
    model, x, _ = tiny
    x = x[:16]
    res = {}
    for name in ["grad-cam", "cf-cam"]:
        with gk.create(name, model, target_layer=model.cam_layer()) as cam:
            res[name] = cam_robustness(cam, x, None, sigmas=(1.0, 4.0), seed=0)
    for s in (1.0, 4.0):
        assert res["cf-cam"][s]["ssim"] > res["grad-cam"][s]["ssim"]
        assert res["cf-cam"][s]["mse"] < res["grad-cam"][s]["mse"]
    # more noise, less similarity for Grad-CAM
    assert res["grad-cam"][4.0]["ssim"] < res["grad-cam"][1.0]["ssim"]


def test_gradcam_is_class_discriminative_and_softmax_cfcam_barely(tiny):
    model, x, _ = tiny
    x = x[:16]
    out = {}
    for name, kw in [("grad-cam", {}), ("cf-cam", {}), ("cf-cam", {"weight_norm": "none"})]:
        with gk.create(name, model, target_layer=model.cam_layer(), **kw) as cam:
            out[(name, kw.get("weight_norm"))] = class_sensitivity(cam, x, 0, 1)["mean_abs_diff"]
    assert out[("grad-cam", None)] > 0.05
    assert out[("cf-cam", "none")] > 0.05
    assert out[("cf-cam", None)] < out[("grad-cam", None)]


def test_latency_positive_and_checked(tiny):
    model, x, _ = tiny
    with gk.create("grad-cam", model, target_layer=model.cam_layer()) as cam:
        assert cam_latency(cam, x[:2], repeats=1) > 0
        with pytest.raises(ValueError, match="repeats"):
            cam_latency(cam, x[:2], repeats=0)
        assert cam_latency(cam, x[:2], repeats=1, clock="process") > 0
        with pytest.raises(ValueError, match="clock"):
            cam_latency(cam, x[:2], clock="cpu")


def test_process_clock_ignores_time_spent_waiting(tiny):
    """CPU time does not count a sleep (another process holding the core), wall time does."""
    import time as _time

    class Sleepy:
        def __call__(self, x, targets=None):
            _time.sleep(0.02)
            return x

    assert cam_latency(Sleepy(), torch.zeros(2, 1, 4, 4), repeats=1, warmup=0, clock="process") < 0.01
    assert cam_latency(Sleepy(), torch.zeros(2, 1, 4, 4), repeats=1, warmup=0, clock="wall") >= 0.02
