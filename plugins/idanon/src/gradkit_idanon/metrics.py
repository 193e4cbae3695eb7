"""Evaluation: re-identification rate, attribute preservation, realism (kernel distance)."""

from __future__ import annotations

import torch

from ._checks import check_images, check_tensor


@torch.no_grad()
def reidentification_rate(oracle, probes, probe_ids, gallery, gallery_ids) -> float:
    """Top-1 re-identification rate (lower is more private): share of probes whose most similar gallery
    image (oracle cosine) has the probe's identity. Chance = 1 / number of gallery identities."""
    check_images(probes, "probes")
    check_images(gallery, "gallery")
    if probe_ids.shape != (probes.shape[0],) or gallery_ids.shape != (gallery.shape[0],):
        raise ValueError("probe_ids / gallery_ids must have one label per image")
    sim = oracle(probes) @ oracle(gallery).T
    return float((gallery_ids[sim.argmax(1)] == probe_ids).float().mean())


@torch.no_grad()
def kernel_distance(feat_a: torch.Tensor, feat_b: torch.Tensor) -> float:
    """Unbiased squared MMD with a Gaussian kernel (median-heuristic bandwidth on the pooled features);
    lower = closer to the real distribution (realism)."""
    check_tensor(feat_a, "feat_a", ndim=2)
    check_tensor(feat_b, "feat_b", ndim=2)
    if feat_a.shape[1] != feat_b.shape[1]:
        raise ValueError(f"feature dims differ: {feat_a.shape[1]} vs {feat_b.shape[1]}")
    if min(len(feat_a), len(feat_b)) < 2:
        raise ValueError("kernel_distance needs at least 2 samples per set")
    z = torch.cat([feat_a, feat_b]).double()
    d = torch.cdist(z, z) ** 2
    k = torch.exp(-d / d[d > 0].median())
    n = len(feat_a)
    kaa, kbb, kab = k[:n, :n], k[n:, n:], k[:n, n:]
    m = len(feat_b)
    return float((kaa.sum() - kaa.diag().sum()) / (n * (n - 1)) + (kbb.sum() - kbb.diag().sum()) / (m * (m - 1))
                 - 2 * kab.mean())


@torch.no_grad()
def attribute_mae(regressor, x_anon, attributes) -> torch.Tensor:
    """Per-attribute mean absolute error of ``regressor`` on anonymized faces against the true labels."""
    check_images(x_anon, "x_anon")
    pred = regressor(x_anon)
    if pred.shape != attributes.shape:
        raise ValueError(f"regressor output {tuple(pred.shape)} does not match attributes {tuple(attributes.shape)}")
    return (pred - attributes).abs().mean(0)
