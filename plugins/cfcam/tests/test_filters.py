"""Issue 12: CF-CAM's cluster filter must change the weights.

A CF-CAM weight is the spatial mean of the filtered cluster gradient.  A filter whose operator
preserves sums (a Gaussian or a box filter with a reflected border) keeps that mean exactly, so the
filter had no effect at all (weights bit-identical to ``filter="none"``).  The filters now follow the
official code's zero-padded boundary (Gaussian, bilateral, and the guided filter's box means).  :func:`assert_filter_changes_weights` is the check; the last tests show that it fails for an
identity filter and for the old reflect-boundary filters.
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, uniform_filter

import gradkit_core as gk
from gradkit_cfcam.cams import CFCAM, gaussian_filter2d, guided_filter

FILTERS = ["gaussian", "bilateral", "guided"]


def _gaussian_by_hand(g, sigma):
    """Separable Gaussian, kernel truncated at radius int(4 sigma + 0.5) and normalised, zero padding."""
    rad = int(4 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-rad, rad + 1) / sigma) ** 2)
    k /= k.sum()
    h, w = g.shape
    p = np.pad(g, rad)  # zeros
    rows = np.array([[np.dot(p[i, j : j + 2 * rad + 1], k) for j in range(w)] for i in range(h + 2 * rad)])
    return np.array([[np.dot(rows[i : i + 2 * rad + 1, j], k) for j in range(w)] for i in range(h)])


def _cluster_weights(cam, grads, labels):
    w, _ = cam.channel_weights(grads, labels)
    return w


def _setup(seed=0, k=12, h=7, w=7, constant=False):
    """Labels: channels 0-2 important, 3-7 cluster 0, 8-10 cluster 1, 11 noise; a spatially varying
    (or constant) gradient."""
    rng = np.random.default_rng(seed)
    labels = np.array([-2, -2, -2, 0, 0, 0, 0, 0, 1, 1, 1, -1])
    if constant:
        grads = np.broadcast_to(rng.normal(size=(k, 1, 1)) * 0.01, (k, h, w)).copy()
    else:
        grads = 0.01 * rng.normal(size=(k, h, w)) + 0.005 * np.linspace(-1, 1, h)[None, :, None] ** 2
    return grads, labels


def assert_filter_changes_weights(cam, grads, labels, rtol=1e-3):
    """The filtered weights of every cluster differ from the unfiltered ones by more than ``rtol`` of the
    gradient's scale; important channels keep their raw weights; noise channels stay 0."""
    w_f = _cluster_weights(cam, grads, labels)
    w_0 = _cluster_weights(CFCAM(cam.model, cam.target_layer, filter="none"), grads, labels)
    np.testing.assert_array_equal(w_f[labels == -2], w_0[labels == -2])
    assert (w_f[labels == -1] == 0).all()
    scale = float(np.abs(grads).mean())
    for c in np.unique(labels[labels >= 0]):
        d = abs(w_f[labels == c][0] - w_0[labels == c][0])
        assert d > rtol * scale, f"filter {cam.filter!r} left cluster {c}'s weight unchanged (|diff| = {d:.3g})"


@pytest.mark.parametrize("filt", FILTERS)
def test_each_filter_changes_weights_where_the_gradient_varies(probe, filt):
    grads, labels = _setup()
    assert_filter_changes_weights(CFCAM(probe, probe.layer, filter=filt), grads, labels)


def test_gaussian_matches_a_hand_zero_padded_convolution():
    g = np.random.default_rng(1).normal(size=(6, 9))
    for sigma in (0.7, 1.0, 2.0):
        np.testing.assert_allclose(gaussian_filter2d(g, sigma), _gaussian_by_hand(g, sigma), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_weight_is_the_centre_weighted_mean(probe, sigma):
    """w = mean(G_bar * c), c = kernel mass inside the map (the filter is symmetric, hence self-adjoint)."""
    grads, labels = _setup(seed=2)
    cam = CFCAM(probe, probe.layer, filter="gaussian", sigma=sigma)
    w = _cluster_weights(cam, grads, labels)
    c = _gaussian_by_hand(np.ones(grads.shape[1:]), sigma)
    assert c.max() <= 1 + 1e-12 and c.min() < 0.9  # the border loses kernel mass
    for cl in (0, 1):
        gbar = grads[labels == cl].mean(0)
        np.testing.assert_allclose(w[labels == cl], (gbar * c).mean(), rtol=1e-10)
    # the larger sigma, the more the border is discounted
    assert c.mean() < 1


def test_filters_change_weights_even_for_a_constant_gradient(probe):
    """Behind global average pooling + linear the gradient is constant over space: zero padding still
    scales the cluster weights by a factor < 1 relative to the important channels'."""
    grads, labels = _setup(constant=True)
    for filt in FILTERS:
        cam = CFCAM(probe, probe.layer, filter=filt)
        assert_filter_changes_weights(cam, grads, labels)
        w_f, w_0 = _cluster_weights(cam, grads, labels), _cluster_weights(CFCAM(probe, probe.layer, filter="none"),
                                                                         grads, labels)
        ratio = w_f[labels >= 0] / w_0[labels >= 0]
        assert np.allclose(ratio, ratio[0]) and 0.3 < ratio[0] < 1, (filt, ratio)


@pytest.mark.parametrize("filt", FILTERS)
def test_filter_changes_cf_cam_weights_and_maps_end_to_end(make_probe, filt):
    """Through the explainer: a probe model whose gradient varies over space (dy/dA = W S / hw)."""
    torch.manual_seed(0)
    net = make_probe(k=16, c=3, h=8, w=8, seed=3)
    g = torch.Generator().manual_seed(4)
    # 4 large channels (important) + 12 similar small ones (clustered)
    x = torch.cat([3 + torch.rand(2, 4, 8, 8, generator=g), 0.5 + 0.05 * torch.rand(2, 12, 8, 8, generator=g)], 1)
    with gk.create("cf-cam", net, target_layer=net.layer, filter=filt, weight_norm="none") as cam:
        r_f = cam.explain(x, targets=1)
    with gk.create("cf-cam", net, target_layer=net.layer, filter="none", weight_norm="none") as cam:
        r_0 = cam.explain(x, targets=1)
    clustered = torch.from_numpy(r_f.extras["labels"] >= 0)
    assert bool(clustered.any())
    np.testing.assert_array_equal(r_f.extras["labels"], r_0.extras["labels"])
    d = (r_f.weights - r_0.weights).abs()
    assert float(d[~clustered].max()) == 0.0
    assert float(d[clustered].min()) > 1e-3 * float(r_0.weights.abs().mean())
    lin = lambda r: torch.einsum("bk,bkhw->bhw", r.weights, r.activations)  # noqa: E731  (the map before ReLU)
    assert float((lin(r_f) - lin(r_0)).abs().max()) > 1e-3 * float(lin(r_0).abs().max())


# ---------------------------------------------------------------------- the check can fail
class _IdentityFilterCFCAM(CFCAM):
    def filter_gradient(self, g):
        return g


@pytest.mark.parametrize("filt", FILTERS)
def test_the_check_fails_for_an_identity_filter(probe, filt):
    grads, labels = _setup()
    with pytest.raises(AssertionError, match="unchanged"):
        assert_filter_changes_weights(_IdentityFilterCFCAM(probe, probe.layer, filter=filt), grads, labels)


class _ReflectCFCAM(CFCAM):
    """The filters as they were before issue 12 (reflect boundary)."""

    def filter_gradient(self, g):
        if self.filter == "gaussian":
            return gaussian_filter(g, sigma=self.sigma, mode="reflect")
        box = lambda a: uniform_filter(a, size=5, mode="reflect")  # noqa: E731  (r = 2 for 7x7)
        mg = box(g)
        var = box(g * g) - mg ** 2
        a = var / (var + 0.1 * g.var())
        return box(a) * g + box(mg - a * mg)


@pytest.mark.parametrize("filt", ["gaussian", "guided"])
def test_the_check_fails_for_the_old_reflect_boundary_filters(probe, filt):
    grads, labels = _setup()
    with pytest.raises(AssertionError, match="unchanged"):
        assert_filter_changes_weights(_ReflectCFCAM(probe, probe.layer, filter=filt), grads, labels)
