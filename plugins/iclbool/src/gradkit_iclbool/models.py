"""Prompt models: read-in, a causal sequence backbone, read-out (the paper's ``TransformerModel`` / ``LSTM``).

A prompt ``(x_1, y_1, ..., x_m, y_m)`` becomes ``2m`` vectors in ``R^n``: ``x_i`` itself and ``y_i``
written into the first coordinate with zeros elsewhere (the paper's ``_combine``).  A linear
read-in maps them to width ``n_embd``, a causal backbone mixes them, a linear read-out gives one
logit per token and the model returns the logits at the ``x`` tokens: the prediction of ``y_i``
from ``x_1, y_1, ..., x_i`` (``y_i`` itself is never visible; a test checks it).

Backbones: ``transformer`` (GPT-2 style: learned positions, pre-LayerNorm blocks of causal
multi-head attention and a 4x GELU MLP, no dropout), ``lstm`` (``torch.nn.LSTM``), ``linrec``
(attention-free: each block a gated linear recurrence ``s_t = a * s_{t-1} + W_u h_t`` with a learned
per-channel decay ``a in (0, 1)``, computed in the RetNet-style parallel form, and an MLP; a small
stand-in for the paper's DSS / Hyena / RetNet models, not any of them exactly).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn as tnn
import torch.nn.functional as F

__all__ = ["PromptModel", "PromptTransformer", "PromptLSTM", "PromptLinRec", "combine", "BACKBONES"]

BACKBONES = ("transformer", "lstm", "linrec")


def _pos_int(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def combine(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Interleave ``xs (B, m, n)`` and ``ys (B, m)`` into ``(B, 2m, n)``; y sits in coordinate 0."""
    B, m, n = xs.shape
    y_wide = torch.zeros_like(xs)
    y_wide[..., 0] = ys
    return torch.stack((xs, y_wide), dim=2).reshape(B, 2 * m, n)


class _Block(tnn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.ln1 = tnn.LayerNorm(d)
        self.attn = tnn.MultiheadAttention(d, n_head, batch_first=True)
        self.ln2 = tnn.LayerNorm(d)
        self.mlp = tnn.Sequential(tnn.Linear(d, 4 * d), tnn.GELU(), tnn.Linear(4 * d, d))

    def forward(self, h, mask):
        a = self.ln1(h)
        h = h + self.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        return h + self.mlp(self.ln2(h))


class _LinRecBlock(tnn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln1 = tnn.LayerNorm(d)
        self.u = tnn.Linear(d, d)
        self.g = tnn.Linear(d, d)
        self.o = tnn.Linear(d, d)
        # decays spread over (0.5, 0.99) as in multi-scale retention
        self.decay_logit = tnn.Parameter(torch.logit(torch.linspace(0.5, 0.99, d)))
        self.ln2 = tnn.LayerNorm(d)
        self.mlp = tnn.Sequential(tnn.Linear(d, 4 * d), tnn.GELU(), tnn.Linear(4 * d, d))

    def forward(self, h):
        T = h.shape[1]
        a = self.ln1(h)
        u = self.u(a)
        log_a = F.logsigmoid(self.decay_logit)  # (d,)
        t = torch.arange(T, device=h.device, dtype=h.dtype)
        diff = t[:, None] - t[None, :]  # (T, T)
        causal = diff >= 0
        # D[c, t, j] = a_c^(t - j) for j <= t, else 0
        D = torch.exp(diff.clamp(min=0)[None] * log_a[:, None, None]) * causal[None]
        s = torch.einsum("ctj,bjc->btc", D, u)
        h = h + self.o(s * F.silu(self.g(a)))
        return h + self.mlp(self.ln2(h))


class PromptModel(tnn.Module):
    """``PromptModel(n_dims, backbone="transformer"|"lstm"|"linrec", n_embd, n_layer, n_head, n_positions)``.

    ``forward(xs (B, m, n_dims), ys (B, m)) -> logits (B, m)``: logit ``i`` predicts ``y_i`` from the
    examples before it and ``x_i``.
    """

    def __init__(self, n_dims: int = 10, backbone: str = "transformer", n_embd: int = 64, n_layer: int = 3,
                 n_head: int = 4, n_positions: int = 64):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(BACKBONES)}")
        self.n_dims = _pos_int("n_dims", n_dims)
        self.n_embd = _pos_int("n_embd", n_embd)
        self.n_layer = _pos_int("n_layer", n_layer)
        self.n_head = _pos_int("n_head", n_head)
        self.n_positions = _pos_int("n_positions", n_positions)
        self.backbone = backbone
        if backbone == "transformer" and n_embd % n_head:
            raise ValueError(f"n_embd = {n_embd} must be divisible by n_head = {n_head}")
        self.read_in = tnn.Linear(n_dims, n_embd)
        self.read_out = tnn.Linear(n_embd, 1)
        if backbone == "transformer":
            self.wpe = tnn.Embedding(2 * n_positions, n_embd)
            self.blocks = tnn.ModuleList(_Block(n_embd, n_head) for _ in range(n_layer))
            self.ln_f = tnn.LayerNorm(n_embd)
        elif backbone == "lstm":
            self.rnn = tnn.LSTM(n_embd, n_embd, n_layer, batch_first=True)
        else:
            self.blocks = tnn.ModuleList(_LinRecBlock(n_embd) for _ in range(n_layer))
            self.ln_f = tnn.LayerNorm(n_embd)

    def _check(self, xs, ys):
        if not isinstance(xs, torch.Tensor) or not isinstance(ys, torch.Tensor):
            raise TypeError("xs and ys must be torch tensors")
        if xs.dim() != 3 or xs.shape[-1] != self.n_dims:
            raise ValueError(f"xs must have shape (batch, points, {self.n_dims}), got {tuple(xs.shape)}")
        if tuple(ys.shape) != tuple(xs.shape[:2]):
            raise ValueError(f"ys must have shape {tuple(xs.shape[:2])} to match xs, got {tuple(ys.shape)}")
        if xs.shape[0] == 0 or xs.shape[1] == 0:
            raise ValueError(f"empty prompt batch: xs has shape {tuple(xs.shape)}")
        if not torch.is_floating_point(xs) or not torch.is_floating_point(ys):
            raise TypeError(f"xs and ys must be floating tensors, got {xs.dtype} and {ys.dtype}")
        if not torch.isfinite(xs).all() or not torch.isfinite(ys).all():
            raise ValueError("xs or ys contains NaN or inf")
        if self.backbone == "transformer" and xs.shape[1] > self.n_positions:
            raise ValueError(f"prompt of {xs.shape[1]} points exceeds n_positions = {self.n_positions}")

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        self._check(xs, ys)
        zs = combine(xs.to(self.read_in.weight.dtype), ys.to(self.read_in.weight.dtype))
        h = self.read_in(zs)
        T = h.shape[1]
        if self.backbone == "transformer":
            h = h + self.wpe(torch.arange(T, device=h.device))[None]
            mask = torch.triu(torch.full((T, T), float("-inf"), device=h.device), diagonal=1)
            for blk in self.blocks:
                h = blk(h, mask)
            h = self.ln_f(h)
        elif self.backbone == "lstm":
            h, _ = self.rnn(h)
        else:
            for blk in self.blocks:
                h = blk(h)
            h = self.ln_f(h)
        return self.read_out(h)[:, ::2, 0]


def PromptTransformer(n_dims: int = 10, n_embd: int = 64, n_layer: int = 3, n_head: int = 4, n_positions: int = 64):
    """GPT-2-style prompt model (the paper's main model), CPU-sized defaults."""
    return PromptModel(n_dims, "transformer", n_embd, n_layer, n_head, n_positions)


def PromptLSTM(n_dims: int = 10, n_embd: int = 64, n_layer: int = 2, n_positions: int = 64):
    """LSTM prompt model (the paper's recurrent baseline)."""
    return PromptModel(n_dims, "lstm", n_embd, n_layer, 1, n_positions)


def PromptLinRec(n_dims: int = 10, n_embd: int = 64, n_layer: int = 3, n_positions: int = 64):
    """Attention-free prompt model: gated linear recurrence blocks (a RetNet-like stand-in)."""
    return PromptModel(n_dims, "linrec", n_embd, n_layer, 1, n_positions)
