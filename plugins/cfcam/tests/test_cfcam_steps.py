"""CF-CAM, step by step: each step against a hand computation."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.cluster import DBSCAN

import gradkit_core as gk
from gradkit_cfcam.cams import (
    CFCAM,
    bilateral_like_filter,
    dbscan_parameters,
    guided_filter,
    importance_split,
)


# ---------------------------------------------------------------------- step 1: importance split
def test_importance_split_top_quarter_by_l2_norm():
    rng = np.random.default_rng(0)
    norms = np.array([1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0])
    dirs = rng.normal(size=(8, 9))
    acts = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * norms[:, None]
    imp, rest, n = importance_split(acts, 75.0)
    np.testing.assert_allclose(n, norms)
    # P75 of 1..8 (linear) = 6.25 -> channels with norms 7 and 8
    assert sorted(imp.tolist()) == [1, 3]
    assert sorted(rest.tolist()) == [0, 2, 4, 5, 6, 7]


def test_importance_split_ties_at_threshold_are_important():
    acts = np.ones((4, 5))  # all norms equal -> all >= P75
    imp, rest, _ = importance_split(acts, 75.0)
    assert len(imp) == 4 and len(rest) == 0


# ---------------------------------------------------------------------- step 2: DBSCAN parameters
def test_eps_is_p25_of_offdiagonal_distances():
    pts = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [10.0, 10.0]])
    full = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    off = full[~np.eye(4, dtype=bool)]
    eps, ms = dbscan_parameters(pts, 25.0, 0.05, 2)
    assert eps == pytest.approx(np.percentile(off, 25))
    # hand value: the 12 off-diagonal distances sorted: 3,3,4,4,5,5,... -> P25 at position 2.75 -> 4
    assert eps == pytest.approx(4.0)
    assert ms == 2


@pytest.mark.parametrize("n,expected", [(10, 2), (39, 2), (40, 2), (60, 3), (100, 5), (1000, 50)])
def test_min_samples_is_five_percent_with_floor_two(n, expected):
    feats = np.random.default_rng(n).normal(size=(n, 3))
    _, ms = dbscan_parameters(feats, 25.0, 0.05, 2)
    assert ms == expected == max(2, int(np.floor(0.05 * n)))


def test_eps_floor_for_identical_channels():
    eps, _ = dbscan_parameters(np.zeros((6, 4)), 25.0, 0.05, 2)
    assert eps == 1e-5


# ---------------------------------------------------------------------- step 2: clustering and noise
def _grouped_acts(seed=0):
    """K=16 channel vectors of dim 9: 4 with a large norm (important); the other 12 form
    two tight groups of 5 plus 2 isolated outliers with norms inside the rest's range."""
    rng = np.random.default_rng(seed)
    big = rng.normal(size=(4, 9)) * 10 + 40
    c1 = np.array([1.0, 0, 0, 0, 0, 0, 0, 0, 0]) * 3 + rng.normal(scale=0.01, size=(5, 9))
    c2 = np.array([0, 0, 0, 0, 1.0, 0, 0, 0, 0]) * 3 + rng.normal(scale=0.01, size=(5, 9))
    out = np.array([[0, 0, 0, 0, 0, 0, 0, 0, -3.0], [0, -3.0, 0, 0, 0, 0, 0, 0, 0]])
    return np.concatenate([big, c1, c2, out])


def test_cluster_channels_matches_sklearn_dbscan_and_marks_noise(probe):
    acts = _grouped_acts()
    cam = CFCAM(probe, probe.layer)
    labels, eps, ms = cam.cluster_channels(acts)
    assert (labels[:4] == -2).all(), "the 4 large-norm channels are the important set"
    rest = acts[4:]
    e2, m2 = dbscan_parameters(rest)
    assert (eps, ms) == (pytest.approx(e2), m2)
    ref = DBSCAN(eps=e2, min_samples=m2).fit(rest).labels_
    np.testing.assert_array_equal(labels[4:], ref)
    # two tight groups become two clusters, the two outliers are noise
    assert len(set(labels[4:9])) == 1 and len(set(labels[9:14])) == 1 and labels[4] != labels[9]
    assert (labels[14:] == -1).all()


def test_noise_channels_are_discarded(probe):
    acts = _grouped_acts()
    grads = np.random.default_rng(1).normal(size=(16, 3, 3))
    cam = CFCAM(probe, probe.layer)
    labels, _, _ = cam.cluster_channels(acts)
    w, valid = cam.channel_weights(grads, labels)
    assert not valid[14:].any() and valid[:14].all()
    alpha = cam.normalise(w, valid)
    assert (alpha[14:] == 0).all()
    assert alpha[:14].sum() == pytest.approx(1.0)
    e = np.exp(w[:14] - w[:14].max())
    np.testing.assert_allclose(alpha[:14], e / e.sum())


# ---------------------------------------------------------------------- steps 3-4: weights, filtering per cluster
@pytest.mark.parametrize("filt", ["gaussian", "bilateral", "guided", "none"])
def test_weights_raw_for_important_filtered_mean_per_cluster(probe, filt):
    acts = _grouped_acts()
    grads = np.random.default_rng(2).normal(size=(16, 5, 5))
    cam = CFCAM(probe, probe.layer, filter=filt, sigma=1.3)
    labels, _, _ = cam.cluster_channels(acts)
    w, _ = cam.channel_weights(grads, labels)
    np.testing.assert_allclose(w[:4], grads[:4].mean(axis=(1, 2)))  # important: raw gradient mean
    ref_filter = {
        "gaussian": lambda g: gaussian_filter(g, 1.3, mode="constant", cval=0.0),  # zero padding (official code)
        "bilateral": lambda g: bilateral_like_filter(g, 5.0, 0.1),
        "guided": guided_filter,
        "none": lambda g: g,
    }[filt]
    for c in np.unique(labels[labels >= 0]):
        members = labels == c
        expected = ref_filter(grads[members].mean(axis=0)).mean()
        np.testing.assert_allclose(w[members], expected, rtol=1e-10, atol=1e-12)
    assert (w[labels == -1] == 0).all()


def test_filter_changes_cluster_weights_but_not_important_ones(probe):
    acts = _grouped_acts()
    grads = np.random.default_rng(5).normal(size=(16, 5, 5))
    labels, _, _ = CFCAM(probe, probe.layer).cluster_channels(acts)
    w_none, _ = CFCAM(probe, probe.layer, filter="none").channel_weights(grads, labels)
    w_bil, _ = CFCAM(probe, probe.layer, filter="bilateral").channel_weights(grads, labels)
    np.testing.assert_allclose(w_none[:4], w_bil[:4])
    assert not np.allclose(w_none[4:14], w_bil[4:14])


def test_bilateral_kernel_by_hand():
    g = np.random.default_rng(3).normal(scale=0.1, size=(5, 5))
    out = bilateral_like_filter(g, sigma_spatial=2.0, sigma_range=0.1)
    h = w = 5
    k = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            k[i, j] = np.exp(-((i - h / 2) ** 2 + (j - w / 2) ** 2) / (2 * 4.0)) * np.exp(
                -((g[i, j] - g.mean()) ** 2) / (2 * 0.01))
    k /= k.sum() + 1e-6
    ref = np.zeros((5, 5))
    pad = np.pad(g, 2)
    for i in range(5):
        for j in range(5):
            ref[i, j] = (pad[i : i + 5, j : j + 5] * k).sum()  # zero-padded 'same' cross-correlation
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def _box_clipped(a, r):
    """Window sum over the part inside the map (zeros outside), divided by the full window size, by loops."""
    h, w = a.shape
    out = np.empty_like(a)
    for i in range(h):
        for j in range(w):
            out[i, j] = a[max(0, i - r) : i + r + 1, max(0, j - r) : j + r + 1].sum() / (2 * r + 1) ** 2
    return out


def test_guided_filter_by_hand_and_limits():
    g = np.random.default_rng(4).normal(size=(8, 8))
    # a constant: eps = 0.1 Var = 0, a = 1, b = 0, so the output is box(1) * g (the border is discounted)
    np.testing.assert_allclose(guided_filter(np.full((8, 8), 0.3)), 0.3 * _box_clipped(np.ones((8, 8)), 2))
    # r = floor(sqrt(64)/4) = 2, eps = 0.1 Var(g): He et al.'s steps with zero-padded box means
    r, e = 2, 0.1 * g.var()
    mg = _box_clipped(g, r)
    var = _box_clipped(g * g, r) - mg ** 2
    a = var / (var + e)
    b = mg - a * mg
    np.testing.assert_allclose(guided_filter(g), _box_clipped(a, r) * g + _box_clipped(b, r), rtol=1e-10, atol=1e-12)
    # a huge eps makes the filter the box mean of the box mean; eps = 0 makes it box(1) * g
    np.testing.assert_allclose(guided_filter(g, eps=1e12), _box_clipped(_box_clipped(g, r), r), atol=1e-8)
    np.testing.assert_allclose(guided_filter(g, eps=0.0), _box_clipped(np.ones((8, 8)), r) * g, atol=1e-8)


# ---------------------------------------------------------------------- step 5 and the whole call
@pytest.mark.parametrize("norm", ["softmax", "relu", "none"])
def test_explain_equals_hand_pipeline(probe, probe_input, norm):
    x = probe_input
    with gk.create("cf-cam", probe, target_layer=probe.layer, weight_norm=norm) as cam:
        res = cam.explain(x, targets=[2, 0])
    for b, c in enumerate([2, 0]):
        acts = x[b].double().numpy()
        grads = probe.grad(c).detach().double().numpy()  # closed-form dy_c/dA
        labels, _, _ = cam.cluster_channels(acts.reshape(12, -1))
        np.testing.assert_array_equal(res.extras["labels"][b], labels)
        w = np.zeros(12)
        imp = labels == -2
        w[imp] = grads[imp].mean(axis=(1, 2))
        for cl in np.unique(labels[labels >= 0]):
            m = labels == cl
            w[m] = gaussian_filter(grads[m].mean(0), 1.0, mode="constant").mean()
        valid = labels != -1
        a = np.zeros(12)
        if norm == "softmax":
            e = np.exp(w[valid] - w[valid].max())
            a[valid] = e / e.sum()
        elif norm == "relu":
            r = np.maximum(w[valid], 0)
            a[valid] = r / r.sum()
        else:
            a[valid] = w[valid]
        np.testing.assert_allclose(res.weights[b].numpy(), a, rtol=1e-5, atol=1e-7)
        raw = np.maximum((a[:, None, None] * acts).sum(0), 0)
        np.testing.assert_allclose(res.raw[b].numpy(), raw, rtol=1e-4, atol=1e-6)
        exp_cam = raw / raw.max() if raw.max() > 0 else raw  # same size: upsampling is the identity
        np.testing.assert_allclose(res.cam[b].numpy(), exp_cam, rtol=1e-4, atol=1e-5)


def test_softmax_flattens_tiny_gradient_weights(probe, probe_input):
    """The brief's pitfall: gradient means are tiny, so softmax weights are nearly uniform."""
    with CFCAM(probe, probe.layer) as cam:
        res = cam.explain(probe_input, targets=0)
    valid = res.extras["valid"][0]
    w = res.weights[0].numpy()[valid]
    assert np.abs(w * valid.sum() - 1).max() < 0.05


def test_bad_options_are_clear_errors(probe):
    with pytest.raises(ValueError, match="filter"):
        CFCAM(probe, probe.layer, filter="median")
    with pytest.raises(ValueError, match="weight_norm"):
        CFCAM(probe, probe.layer, weight_norm="l2")
    with pytest.raises(ValueError, match="importance_percentile"):
        CFCAM(probe, probe.layer, importance_percentile=120)
