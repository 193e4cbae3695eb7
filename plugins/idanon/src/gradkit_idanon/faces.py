"""Synthetic 32x32 grayscale cartoon faces with known identity and attribute factors.

Every face is rendered with soft (sigmoid-edged) shapes on a coordinate grid, all images at once in
numpy. Identity factors are fixed per identity; attribute factors are drawn per image and returned
as labels, so identity leakage and attribute preservation can be measured exactly.

Identity factors (7): face half-width, face half-height, eye spacing, eye size, nose length, mouth
width, brow slope, and a texture frequency (8 numbers in all).
Attribute factors (``ATTRIBUTES``): expression (mouth curvature), pose (x/y shift, in-plane
rotation), illumination gradient, glasses (0/1), background level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 32
ATTRIBUTES = ("expression", "shift_x", "shift_y", "rotation", "illumination", "glasses", "background")
IDENTITY_FACTORS = ("face_w", "face_h", "eye_spacing", "eye_size", "nose_len", "mouth_w", "brow_slope", "texture")

_ID_LOW = np.array([0.55, 0.65, 0.30, 0.06, 0.12, 0.25, -0.5, 3.0])
_ID_HIGH = np.array([0.80, 0.90, 0.55, 0.13, 0.32, 0.55, 0.5, 9.0])
_AT_LOW = np.array([-0.5, -0.10, -0.08, -0.25, -0.4, 0.0, 0.0])
_AT_HIGH = np.array([0.5, 0.10, 0.08, 0.25, 0.4, 1.0, 0.4])


@dataclass
class FaceData:
    images: np.ndarray  # (N, 1, 32, 32) float32 in [0, 1]
    ids: np.ndarray  # (N,) int64
    attributes: np.ndarray  # (N, len(ATTRIBUTES)) float32
    identity_factors: np.ndarray  # (n_ids, len(IDENTITY_FACTORS)) float32


def _sig(t, k=30.0):
    return 1.0 / (1.0 + np.exp(np.clip(-k * t, -60.0, 60.0)))


def render(identity: np.ndarray, attributes: np.ndarray, *, noise: float = 0.0, rng=None) -> np.ndarray:
    """Render faces; ``identity`` (N, 8) and ``attributes`` (N, 7) row-aligned. Returns (N, 1, 32, 32)."""
    identity = np.asarray(identity, dtype=np.float64)
    attributes = np.asarray(attributes, dtype=np.float64)
    if identity.ndim != 2 or identity.shape[1] != len(IDENTITY_FACTORS):
        raise ValueError(f"identity must have shape (N, {len(IDENTITY_FACTORS)}), got {identity.shape}")
    if attributes.shape != (identity.shape[0], len(ATTRIBUTES)):
        raise ValueError(f"attributes must have shape ({identity.shape[0]}, {len(ATTRIBUTES)}), got {attributes.shape}")
    if not (np.isfinite(identity).all() and np.isfinite(attributes).all()):
        raise ValueError("identity and attribute factors must be finite")
    n = identity.shape[0]
    g = (np.arange(SIZE) + 0.5) / SIZE * 2 - 1
    Y, X = np.meshgrid(g, g, indexing="ij")
    X, Y = X[None], Y[None]
    col = lambda a: a[:, None, None]  # noqa: E731
    fw, fh, es, ez, nl, mw, bs, tf = (col(identity[:, i]) for i in range(8))
    ex, sx, sy, rot, ill, gl, bg = (col(attributes[:, i]) for i in range(7))
    # face-local coordinates (pose: shift then rotate)
    xs, ys = X - sx, Y - sy
    c, s = np.cos(rot), np.sin(rot)
    u, v = c * xs + s * ys, -s * xs + c * ys
    face = _sig(1 - (u / fw) ** 2 - (v / fh) ** 2, 6.0)
    skin = 0.65 + 0.08 * np.sin(tf * u) * np.sin(tf * v)
    img = bg * (1 - face) + skin * face
    dark = np.zeros_like(img)
    for side in (-1, 1):
        eu, ev = side * es / 2, -0.2
        dark = np.maximum(dark, _sig(1 - ((u - eu) ** 2 + (v - ev) ** 2) / ez ** 2, 4.0))
        # brow: a short band above the eye, tilted by the brow slope (mirrored)
        bv = ev - ez - 0.08 + side * bs * (u - eu) * 0.5
        dark = np.maximum(dark, _sig(0.035 - np.abs(v - bv)) * _sig(ez + 0.05 - np.abs(u - eu)))
        ring = np.sqrt((u - eu) ** 2 + (v - ev) ** 2)
        dark = np.maximum(dark, gl * _sig(0.03 - np.abs(ring - ez - 0.06)))
    nose = _sig(0.035 - np.abs(u)) * _sig(v + 0.1) * _sig(-0.1 + nl - v)
    dark = np.maximum(dark, 0.6 * nose)
    mv = 0.45 + ex * (u ** 2) * 3.0 - ex * 0.1
    mouth = _sig(0.04 - np.abs(v - mv)) * _sig(mw / 2 - np.abs(u))
    dark = np.maximum(dark, mouth)
    img = img * (1 - 0.85 * dark * face)
    img = img * (1 + ill * X)
    if noise:
        rng = np.random.default_rng(0) if rng is None else rng
        img = img + noise * rng.standard_normal(img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)[:, None]


def make_faces(n_ids: int = 300, per_id: int = 20, *, seed: int = 0, noise: float = 0.02) -> FaceData:
    """``n_ids`` identities x ``per_id`` images, seeded; labels for identities and attributes."""
    for name, val in (("n_ids", n_ids), ("per_id", per_id)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    rng = np.random.default_rng(seed)
    ident = rng.uniform(_ID_LOW, _ID_HIGH, size=(n_ids, len(IDENTITY_FACTORS)))
    ids = np.repeat(np.arange(n_ids), per_id)
    attrs = rng.uniform(_AT_LOW, _AT_HIGH, size=(ids.size, len(ATTRIBUTES)))
    attrs[:, 5] = (attrs[:, 5] > 0.5).astype(np.float64)
    imgs = render(ident[ids], attrs, noise=noise, rng=rng)
    return FaceData(imgs, ids.astype(np.int64), attrs.astype(np.float32), ident.astype(np.float32))
