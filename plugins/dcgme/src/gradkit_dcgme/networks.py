"""Policies as flat genomes, evaluated in batches; the descriptor-conditioned actor and the critics.

A population of B MLP policies (QDax ``MLP``: ReLU hidden layers, tanh output, LeCun-uniform
weights, zero biases) is one ``(B, P)`` tensor; :func:`policy_forward` runs all B at once with
``torch.baddbmm``.  The descriptor-conditioned actor (QDax ``MLPDC``) is the same MLP on
``concat(obs, d')``; folding ``d'`` into its first-layer bias turns it into a plain policy
genome (:func:`fold_descriptor`), which is how the distilled actor is evaluated in batches.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn


class PolicyShape:
    """Layer sizes of an MLP policy and the layout of its flat genome."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        self.sizes = [int(in_dim), *[int(h) for h in hidden], int(out_dim)]
        self.layers: List[Tuple[int, int, int]] = []  # (offset, fan_in, fan_out); bias follows weight
        off = 0
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            self.layers.append((off, a, b))
            off += a * b + b
        self.n_params = off

    @property
    def in_dim(self) -> int:
        return self.sizes[0]

    @property
    def out_dim(self) -> int:
        return self.sizes[-1]


def init_genomes(shape: PolicyShape, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` genomes with LeCun-uniform weights U(±sqrt(3 / fan_in)) and zero biases."""
    g = torch.zeros(n, shape.n_params)
    for off, a, b in shape.layers:
        lim = (3.0 / a) ** 0.5
        g[:, off:off + a * b] = (torch.rand(n, a * b, generator=generator) * 2 - 1) * lim
    return g


def policy_forward(genomes: torch.Tensor, obs: torch.Tensor, shape: PolicyShape) -> torch.Tensor:
    """Actions of B policies: genomes (B, P), obs (B, N, in) or (B, in) -> (B, N, out) or (B, out)."""
    squeeze = obs.dim() == 2
    h = obs.unsqueeze(1) if squeeze else obs
    n_layers = len(shape.layers)
    B = genomes.shape[0]
    for i, (off, a, b) in enumerate(shape.layers):
        w = genomes[:, off:off + a * b].view(B, a, b)
        bias = genomes[:, off + a * b:off + a * b + b].unsqueeze(1)
        h = torch.baddbmm(bias, h, w)
        h = torch.tanh(h) if i == n_layers - 1 else torch.relu(h)
    return h.squeeze(1) if squeeze else h


class MLP(nn.Module):
    """ReLU MLP with LeCun-uniform weights and zero biases; ``final_tanh`` for actors."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, final_tanh: bool, generator: torch.Generator):
        super().__init__()
        sizes = [in_dim, *hidden, out_dim]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.final_tanh = final_tanh
        with torch.no_grad():
            for lin in self.linears:
                lim = (3.0 / lin.in_features) ** 0.5
                lin.weight.copy_((torch.rand(lin.weight.shape, generator=generator) * 2 - 1) * lim)
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return torch.tanh(x) if self.final_tanh else x


class Actor(nn.Module):
    """Deterministic actor; with ``desc_dim > 0`` it is conditioned on a normalised target descriptor."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], desc_dim: int, generator: torch.Generator):
        super().__init__()
        self.desc_dim = desc_dim
        self.net = MLP(obs_dim + desc_dim, hidden, act_dim, True, generator)

    def forward(self, obs: torch.Tensor, desc: torch.Tensor = None) -> torch.Tensor:
        if self.desc_dim:
            obs = torch.cat([obs, desc], dim=-1)
        return self.net(obs)

    def to_genome(self) -> torch.Tensor:
        """The plain-policy genome (only for ``desc_dim == 0``; see :func:`fold_descriptor` otherwise)."""
        parts = []
        for lin in self.net.linears:
            parts += [lin.weight.detach().t().reshape(-1), lin.bias.detach()]
        return torch.cat(parts)


def fold_descriptor(actor: Actor, desc: torch.Tensor) -> torch.Tensor:
    """Genomes (n, P) of the plain policies s -> actor(s | d') for each row d' of ``desc`` (n, desc_dim).

    First layer: ``W [s; d'] + b = W_s s + (b + W_d d')`` (DCRL-ME's actor injection trick).
    """
    lins = actor.net.linears
    w0 = lins[0].weight.detach()  # (h, obs + desc)
    obs_dim = w0.shape[1] - actor.desc_dim
    ws, wd = w0[:, :obs_dim], w0[:, obs_dim:]
    b0 = lins[0].bias.detach().unsqueeze(0) + desc @ wd.t()  # (n, h)
    n = desc.shape[0]
    parts = [ws.t().reshape(1, -1).expand(n, -1), b0]
    for lin in lins[1:]:
        parts += [lin.weight.detach().t().reshape(1, -1).expand(n, -1), lin.bias.detach().unsqueeze(0).expand(n, -1)]
    return torch.cat(parts, dim=1)


class TwinCritic(nn.Module):
    """Two Q heads on ``concat(obs, action[, d'])`` (QDax ``QModule`` / ``QModuleDC``).

    The heads are independent MLPs (ReLU, LeCun-uniform, zero bias) stored as stacked weights
    ``(2, fan_in, fan_out)`` and evaluated together with ``torch.baddbmm``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], desc_dim: int, generator: torch.Generator):
        super().__init__()
        self.desc_dim = desc_dim
        sizes = [obs_dim + act_dim + desc_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            lim = (3.0 / a) ** 0.5
            self.weights.append(nn.Parameter((torch.rand(2, a, b, generator=generator) * 2 - 1) * lim))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, b)))

    def _heads(self, x: torch.Tensor, n_heads: int = 2) -> torch.Tensor:
        lead = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1]).expand(n_heads, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b[:n_heads], h, w[:n_heads])
            if i < last:
                h = torch.relu(h)
        return h.reshape(n_heads, *lead)

    def _input(self, obs, act, desc):
        return torch.cat([obs, act] + ([desc] if self.desc_dim else []), dim=-1)

    def forward(self, obs, act, desc=None) -> Tuple[torch.Tensor, torch.Tensor]:
        q = self._heads(self._input(obs, act, desc))
        return q[0], q[1]

    def first(self, obs, act, desc=None) -> torch.Tensor:
        """Q1 only (actor and policy-gradient losses)."""
        return self._heads(self._input(obs, act, desc), n_heads=1)[0]
