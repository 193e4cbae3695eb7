"""Baselines under GCond's interface: linear sum, PCGrad, CAGrad, GradNorm.

Each is a :class:`~gradkit_gcond.conductor.MultiTaskAggregator`: same
constructor (``model, loss_fns, lambdas, accumulation_steps``), same
``step(data_provider)`` that accumulates one gradient per task and writes the
combined gradient into ``p.grad`` for any optimizer.  Task gradients are
gradients of ``lambda_i * L_i``.  The combination rules operate on the Gram
matrix of the task gradients, so they also work as plain functions
(:func:`pcgrad_combine`, :func:`cagrad_combine`) on lists of flat vectors.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from .conductor import GradList, MultiTaskAggregator, _check_finite_number, _dot, _norm_sq


def _gram(grads: Sequence[GradList]) -> np.ndarray:
    k = len(grads)
    G = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            G[i, j] = G[j, i] = _dot(grads[i], grads[j])
    return G


def _weighted_sum(grads: Sequence[GradList], w: Sequence[float]) -> GradList:
    return [sum(float(wk) * g[i].float() for wk, g in zip(w, grads)) for i in range(len(grads[0]))]


# ---------------------------------------------------------------------- pure rules
def pcgrad_weights(G: np.ndarray, generator: Optional[torch.Generator] = None) -> np.ndarray:
    """PCGrad (Yu et al., 2020) as weights on the original gradients, from their Gram matrix ``G``.

    For each task i (in turn), over the other tasks j in a random order:
    if ``g_i^PC . g_j < 0`` then ``g_i^PC -= (g_i^PC . g_j / ||g_j||^2) g_j`` (original
    ``g_j``).  The result ``sum_i g_i^PC`` equals ``sum_k w_k g_k`` for the returned ``w``.
    """
    k = G.shape[0]
    total = np.zeros(k)
    for i in range(k):
        cur = np.zeros(k)
        cur[i] = 1.0
        for j in torch.randperm(k, generator=generator).tolist():
            if j == i or G[j, j] <= 0:
                continue
            inner = float(G[j] @ cur)
            if inner < 0:
                cur[j] -= inner / G[j, j]
        total += cur
    return total


def cagrad_weights(G: np.ndarray, c: float = 0.5, rescale: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """CAGrad (Liu et al., 2021) from the Gram matrix ``G`` of K task gradients.

    ``g0 = mean_i g_i``; ``w = argmin_{w in simplex} g_w . g0 + c ||g0|| ||g_w||``;
    ``d = g0 + c ||g0|| / ||g_w|| * g_w``, divided by ``1 + c^2`` when ``rescale``.
    Returns ``(weights on the original g_i such that d = sum_i weights_i g_i, w)``.
    """
    from scipy.optimize import minimize

    k = G.shape[0]
    one = np.full(k, 1.0 / k)
    g0_norm = math.sqrt(max(float(one @ G @ one), 0.0))
    Gg0 = G @ one

    def obj(w):
        return float(w @ Gg0 + c * g0_norm * math.sqrt(max(float(w @ G @ w), 1e-20)))

    if k == 1:
        w = np.ones(1)
    else:
        best = None
        starts = [one] + [np.eye(k)[i] * 0.98 + 0.02 / k for i in range(k)]
        for x0 in starts:
            r = minimize(obj, x0, method="SLSQP", bounds=[(0.0, 1.0)] * k,
                         constraints=({"type": "eq", "fun": lambda w: np.sum(w) - 1.0},),
                         options={"ftol": 1e-14, "maxiter": 500})
            x = np.clip(r.x, 0, None)
            x = x / x.sum()
            if best is None or obj(x) < obj(best):
                best = x
        w = best
    gw_norm = math.sqrt(max(float(w @ G @ w), 0.0))
    lam = c * g0_norm / gw_norm if gw_norm > 1e-20 else 0.0
    d = one + lam * w
    if rescale:
        d = d / (1.0 + c ** 2)
    return d, w


# ---------------------------------------------------------------------- aggregators
class LinearSum(MultiTaskAggregator):
    """Linear scalarisation: ``p.grad = sum_i grad(lambda_i L_i)`` (plain gradient accumulation)."""

    def combine(self, grads):
        return _weighted_sum([grads[k] for k in self.tasks], [1.0] * len(self.tasks)), {}


class PCGrad(MultiTaskAggregator):
    """PCGrad (Yu et al., 2020, "Gradient Surgery for Multi-Task Learning") on accumulated task gradients.

    ``seed`` fixes the random task orders (irrelevant for two tasks).
    """

    def __init__(self, model, loss_fns, lambdas=None, accumulation_steps: int = 1, *, seed: int = 0, **kw):
        super().__init__(model, loss_fns, lambdas, accumulation_steps, **kw)
        self.generator = torch.Generator().manual_seed(int(seed))

    def combine(self, grads):
        gl = [grads[k] for k in self.tasks]
        G = _gram(gl)
        w = pcgrad_weights(G, self.generator)
        n = np.sqrt(np.clip(np.diag(G), 1e-30, None))
        cos = G / np.outer(n, n)
        min_cos = float(np.min(cos[~np.eye(len(gl), dtype=bool)])) if len(gl) > 1 else 1.0
        return _weighted_sum(gl, w), {"min_cosine_sim": min_cos}

    def state_dict(self):
        return {"step_count": self.step_count, "generator": self.generator.get_state()}

    def load_state_dict(self, sd):
        super().load_state_dict(sd)
        self.generator.set_state(sd["generator"])


class CAGrad(MultiTaskAggregator):
    """CAGrad (Liu et al., 2021, "Conflict-Averse Gradient Descent"), ``c = 0.5``, rescaled by ``1/(1+c^2)``.

    The output is on the scale of the *mean* task gradient, as in the paper.
    """

    def __init__(self, model, loss_fns, lambdas=None, accumulation_steps: int = 1, *, c: float = 0.5,
                 rescale: bool = True, **kw):
        super().__init__(model, loss_fns, lambdas, accumulation_steps, **kw)
        self.c = _check_finite_number("CAGrad c", c, low=0.0)
        self.rescale = bool(rescale)

    def combine(self, grads):
        gl = [grads[k] for k in self.tasks]
        d, w = cagrad_weights(_gram(gl), self.c, self.rescale)
        stats = {f"cagrad_w/{k}": float(v) for k, v in zip(self.tasks, w)}
        return _weighted_sum(gl, d), stats


class GradNorm(MultiTaskAggregator):
    """GradNorm (Chen et al., 2018) with learned task weights ``w_i`` (init 1, ``sum w = K``).

    With ``a_i = ||grad_W (lambda_i L_i)||`` on the last shared layer ``W`` (read from the
    accumulated task gradients), ``G_i = w_i a_i``, ``G_bar = mean_i G_i``,
    ``r_i = (L_i(t)/L_i(0)) / mean_j (L_j(t)/L_j(0))``:
    ``L_grad = sum_i |G_i - G_bar * r_i^alpha|`` with the target ``G_bar r_i^alpha`` held
    constant, so ``dL_grad/dw_i = sign(G_i - G_bar r_i^alpha) * a_i``.  The step writes
    ``sum_i w_i g_i`` with the current weights, then takes one Adam step (``weight_lr``,
    betas 0.9/0.999, as when the weights sit in the model's Adam optimizer) on ``w`` with
    that gradient, clamps at ``min_weight`` and renormalises to ``sum w = K``.

    ``shared_param``: the parameter (or its name in ``model.named_parameters()``) of the
    last shared layer; default the last trainable parameter with at least two dimensions.
    """

    def __init__(self, model, loss_fns, lambdas=None, accumulation_steps: int = 1, *, alpha: float = 1.5,
                 weight_lr: float = 0.025, shared_param: Union[None, str, nn.Parameter] = None,
                 min_weight: float = 1e-3, **kw):
        super().__init__(model, loss_fns, lambdas, accumulation_steps, **kw)
        self.alpha = _check_finite_number("GradNorm alpha", alpha, low=0.0)
        self.weight_lr = _check_finite_number("weight_lr", weight_lr, low=0.0, low_open=True)
        self.min_weight = _check_finite_number("min_weight", min_weight, low=0.0, low_open=True)
        self.shared_index = self._find_shared(model, shared_param)
        self.weights = torch.ones(len(self.tasks), dtype=torch.float64)
        self.initial_losses: Optional[torch.Tensor] = None
        self._adam_m = torch.zeros(len(self.tasks), dtype=torch.float64)
        self._adam_v = torch.zeros(len(self.tasks), dtype=torch.float64)
        self._adam_t = 0

    def _find_shared(self, model: nn.Module, shared) -> int:
        if shared is None:
            for i in range(len(self.params) - 1, -1, -1):
                if self.params[i].dim() >= 2:
                    return i
            return len(self.params) - 1
        if isinstance(shared, str):
            named = dict(model.named_parameters())
            if shared not in named:
                raise ValueError(f"shared_param {shared!r} is not a parameter name of the model; "
                                 f"choose one of {list(named)[:8]}...")
            shared = named[shared]
        for i, p in enumerate(self.params):
            if p is shared:
                return i
        raise ValueError("shared_param is not one of the model's trainable parameters")

    def weight_gradient(self, shared_norms: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """``dL_grad/dw`` for the current weights (GradNorm's equation, target held constant)."""
        if self.initial_losses is None:
            raise RuntimeError("GradNorm.weight_gradient needs the initial losses L_i(0); call step() first")
        G = self.weights * shared_norms
        ratio = losses / self.initial_losses
        r = ratio / ratio.mean()
        target = G.mean() * r ** self.alpha
        return torch.sign(G - target) * shared_norms

    def combine(self, grads):
        gl = [grads[k] for k in self.tasks]
        losses = torch.tensor([self.last_losses[k] for k in self.tasks], dtype=torch.float64)
        if self.initial_losses is None:
            if (losses <= 0).any():
                raise ValueError(f"GradNorm needs positive initial task losses, got {losses.tolist()}")
            self.initial_losses = losses.clone()
        a = torch.tensor([float(g[self.shared_index].float().norm()) for g in gl], dtype=torch.float64)
        out = _weighted_sum(gl, self.weights.tolist())
        stats = {f"gradnorm_w/{k}": float(w) for k, w in zip(self.tasks, self.weights)}
        grad_w = self.weight_gradient(a, losses)
        self._adam_t += 1
        b1, b2 = 0.9, 0.999
        self._adam_m = b1 * self._adam_m + (1 - b1) * grad_w
        self._adam_v = b2 * self._adam_v + (1 - b2) * grad_w ** 2
        m_hat = self._adam_m / (1 - b1 ** self._adam_t)
        v_hat = self._adam_v / (1 - b2 ** self._adam_t)
        w = (self.weights - self.weight_lr * m_hat / (v_hat.sqrt() + 1e-8)).clamp(min=self.min_weight)
        self.weights = w * (len(self.tasks) / w.sum())
        return out, stats

    def state_dict(self):
        return {"step_count": self.step_count, "weights": self.weights.clone(),
                "initial_losses": None if self.initial_losses is None else self.initial_losses.clone(),
                "adam": (self._adam_t, self._adam_m.clone(), self._adam_v.clone())}

    def load_state_dict(self, sd):
        super().load_state_dict(sd)
        w = torch.as_tensor(sd["weights"], dtype=torch.float64)
        if w.shape != (len(self.tasks),):
            raise ValueError(f"GradNorm weights have shape {tuple(w.shape)}, expected ({len(self.tasks)},)")
        self.weights = w.clone()
        self._adam_t, m, v = sd["adam"]
        self._adam_m, self._adam_v = m.clone(), v.clone()
        il = sd["initial_losses"]
        self.initial_losses = None if il is None else torch.as_tensor(il, dtype=torch.float64).clone()
