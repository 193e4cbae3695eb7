"""Baseline CAMs against captum and closed forms; gradient-noise injection."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradkit_core as gk
from gradkit_cfcam.cams import (
    AblationCAM,
    CFCAM,
    GradCAM,
    GradCAMPlusPlus,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    normalize_maps,
)
from gradkit_cfcam.data import CamCNN


def _cnn():
    torch.manual_seed(0)
    # eval mode: explainers run the model in eval mode (BatchNorm running statistics)
    return CamCNN(num_classes=4, widths=(4, 8, 16), pools=2).eval()


def test_gradcam_equals_captum_layergradcam():
    captum_attr = pytest.importorskip("captum.attr")
    model = _cnn()
    x = torch.rand(5, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 2, 3, 1])
    ref = captum_attr.LayerGradCam(model, model.cam_layer()).attribute(x, target=t, relu_attributions=True)
    with GradCAM(model, model.cam_layer()) as cam:
        res = cam.explain(x, targets=t)
    torch.testing.assert_close(res.raw, ref[:, 0].detach(), rtol=1e-5, atol=1e-7)
    up = captum_attr.LayerAttribution.interpolate(ref.detach(), (24, 24), "bilinear")[:, 0]
    torch.testing.assert_close(res.cam, normalize_maps(up, (24, 24)), rtol=1e-5, atol=1e-6)


def test_gradcam_weights_closed_form(probe, probe_input):
    with GradCAM(probe, probe.layer) as cam:
        res = cam.explain(probe_input, targets=1)
    torch.testing.assert_close(res.weights, probe.grad(1).mean(dim=(1, 2)).expand(2, -1), rtol=1e-5, atol=1e-8)


def test_gradcampp_closed_form(probe, probe_input):
    with GradCAMPlusPlus(probe, probe.layer) as cam:
        res = cam.explain(probe_input, targets=2)
    g = probe.grad(2).double()
    for b in range(2):
        a = probe_input[b].double()
        s = a.sum(dim=(1, 2), keepdim=True)
        alpha = g ** 2 / (2 * g ** 2 + s * g ** 3)
        w = (alpha * torch.relu(g)).sum(dim=(1, 2))
        torch.testing.assert_close(res.weights[b].double(), w, rtol=1e-4, atol=1e-9)


def test_smooth_gradcampp_without_noise_is_gradcampp(probe, probe_input):
    with GradCAMPlusPlus(probe, probe.layer) as a, SmoothGradCAMPlusPlus(probe, probe.layer, sigma=0.0, n_samples=3) as b:
        torch.testing.assert_close(a.explain(probe_input, 0).weights, b.explain(probe_input, 0).weights)


def test_smooth_gradcampp_averages_noisy_gradient_moments():
    model = _cnn()
    x = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    sg = SmoothGradCAMPlusPlus(model, model.cam_layer(), n_samples=4, sigma=0.2, seed=7)
    w = sg.explain(x, targets=[1, 2]).weights
    # by hand: same noise draws, moments of the gradient at the noisy inputs
    gen = torch.Generator().manual_seed(7)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    g1 = g2 = g3 = 0
    for _ in range(4):
        xn = (x + 0.2 * span * torch.randn(x.shape, generator=gen)).requires_grad_(False)
        store = {}
        h = model.cam_layer().register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        out = model(xn)
        h.remove()
        (g,) = torch.autograd.grad(out[[0, 1], [1, 2]].sum(), store["a"])
        g1, g2, g3 = g1 + g, g2 + g ** 2, g3 + g ** 3
    with torch.no_grad():
        acts = model.features(x)
    g1, g2, g3 = g1 / 4, g2 / 4, g3 / 4
    den = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(den != 0, g2 / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(den))
    torch.testing.assert_close(w, (alpha * torch.relu(g1)).sum(dim=(2, 3)), rtol=1e-4, atol=1e-7)


def test_scorecam_weights_by_hand(probe, probe_input):
    x = probe_input
    with ScoreCAM(probe, probe.layer, batch_size=5) as cam:
        res = cam.explain(x, targets=[1, 2])
    for b, c in enumerate([1, 2]):
        for k in range(12):
            a = x[b, k]
            hk = (a - a.min()) / (a.max() - a.min())
            with torch.no_grad():
                p = F.softmax(probe((x[b] * hk)[None]), dim=1)[0, c]
            assert float(res.weights[b, k]) == pytest.approx(float(p), rel=1e-5)


def test_ablationcam_weights_closed_form(probe, probe_input):
    # y_c - y_c^k = W_ck * mean(A_k * S) for the probe's linear head
    x = probe_input
    with AblationCAM(probe, probe.layer, batch_size=5) as cam:
        res = cam.explain(x, targets=0)
    with torch.no_grad():
        y = probe(x)[:, 0]
        contrib = probe.fc.weight[0] * (x * probe.S).mean(dim=(2, 3))
    torch.testing.assert_close(res.weights, contrib / y[:, None], rtol=1e-4, atol=1e-6)


def test_ablationcam_zeroes_one_channel_per_row():
    model = _cnn()
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    with AblationCAM(model, model.cam_layer(), batch_size=3) as cam:
        res = cam.explain(x, targets=1)
    with torch.no_grad():
        a = model.features(x)
        y = model.head(a.mean(dim=(2, 3)))[0, 1]
        for k in [0, 7, 15]:
            ak = a.clone()
            ak[:, k] = 0
            yk = model.head(ak.mean(dim=(2, 3)))[0, 1]
            assert float(res.weights[0, k]) == pytest.approx(float((y - yk) / y), rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------------- gradient noise
@pytest.mark.parametrize("name", ["grad-cam", "grad-cam++", "cf-cam"])
def test_grad_noise_is_seeded_and_moves_gradient_methods(name):
    model = _cnn()
    x = torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(3))
    with gk.create(name, model, target_layer=model.cam_layer(), weight_norm="none") if name == "cf-cam" else \
            gk.create(name, model, target_layer=model.cam_layer()) as cam:
        clean = cam.explain(x, 1)
        n1 = cam.explain(x, 1, grad_noise=2.0, generator=torch.Generator().manual_seed(5))
        n2 = cam.explain(x, 1, grad_noise=2.0, generator=torch.Generator().manual_seed(5))
        zero = cam.explain(x, 1, grad_noise=0.0)
    torch.testing.assert_close(n1.cam, n2.cam)
    torch.testing.assert_close(zero.cam, clean.cam)
    assert not torch.allclose(n1.weights, clean.weights)


def test_grad_noise_scale_is_relative_to_gradient_std(probe, probe_input):
    """noise = s * std(G_b) * N(0,1): Grad-CAM weight error ~ s * std(G) / sqrt(hw)."""
    with GradCAM(probe, probe.layer) as cam:
        clean = cam.explain(probe_input, 0).weights
        errs = []
        for s in range(30):
            n = cam.explain(probe_input, 0, grad_noise=1.0, generator=torch.Generator().manual_seed(s)).weights
            errs.append(n - clean)
    std_g = float(probe.grad(0).detach().std())
    measured = float(torch.stack(errs).std())
    assert measured == pytest.approx(std_g / 6.0, rel=0.15)  # hw = 36


@pytest.mark.parametrize("cls", [ScoreCAM, AblationCAM])
def test_gradient_free_methods_ignore_grad_noise(cls, probe, probe_input):
    with cls(probe, probe.layer) as cam:
        torch.testing.assert_close(cam(probe_input, 0), cam(probe_input, 0, grad_noise=3.0))


def test_bad_grad_noise_is_clear_error(probe, probe_input):
    with GradCAM(probe, probe.layer) as cam:
        with pytest.raises(ValueError, match="grad_noise"):
            cam(probe_input, 0, grad_noise=-1.0)


def test_target_layer_by_name_and_inplace_relu_after_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.LazyLinear(3))
    x = torch.rand(2, 1, 6, 6)
    model(x)
    with GradCAM(model, "0") as cam:
        res = cam.explain(x, 0)
    pre = model[0](x)  # activations before the in-place ReLU
    torch.testing.assert_close(res.activations, pre.detach())


def test_model_output_without_logits_is_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return {"out": self.conv(x)}

    m = Bad()
    with GradCAM(m, m.conv) as cam:
        with pytest.raises(TypeError, match="logits"):
            cam(torch.rand(1, 1, 5, 5))


def test_cfcam_registered_defaults():
    spec = gk.info("cf-cam", kind="explainers")
    assert spec.defaults["filter"] == "gaussian" and spec.defaults["weight_norm"] == "softmax"
    assert spec.paper.arxiv == "2504.00060"
    model = _cnn()
    cam = gk.create("cf-cam", model, target_layer=model.cam_layer())
    assert isinstance(cam, CFCAM) and cam.filter == "gaussian"
