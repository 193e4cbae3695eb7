"""Baselines that several plugins compare against, written once.

``SignSGD`` is FRUGAL's state-free rule applied everywhere and the first rung of the
"optimizer grade" ladder in the unlearning paper (Signum with momentum, ``Q(m; N)`` with
``N`` bits); both plugins import it from here and it is registered once, as ``sign-sgd``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch
from torch.optim import Optimizer


def quantize_update(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``Q(x; N)``: ``sign(x)`` for ``N = 1``; otherwise ``x / max|x|`` rounded to ``2^(N-1) - 1`` levels per side.

    The output lies in ``[-1, 1]`` so that ``lr`` keeps the meaning of the largest step.
    """
    if bits == 1:
        return torch.where(torch.isnan(x), x, torch.sign(x))  # sign(NaN) would be 0: keep NaN visible
    levels = 2 ** (bits - 1) - 1
    scale = x.abs().amax()
    if not torch.isfinite(scale):
        return x * float("nan")
    if scale == 0:
        return torch.zeros_like(x)
    return torch.round(x / scale * levels) / levels


def _finite_nonneg(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


class SignSGD(Optimizer):
    """signSGD / Signum with decoupled weight decay: ``p ← p(1 − lr·wd) − lr·Q(m; bits)``.

    ``m = g`` with ``momentum = 0`` (the default: plain signSGD, no optimizer state) or
    ``m ← momentum·m + (1 − momentum)·g``.  ``bits = 1`` is the sign.  A NaN/inf gradient raises
    ``ValueError`` naming the parameter before anything changes, in whichever param group it sits
    (every group is checked before the first one is stepped; ``sign(nan)`` would be a silent 0).
    A NaN/inf/negative ``lr`` or ``weight_decay``, in the constructor or ``add_param_group``, is a
    ``ValueError``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-4, momentum: float = 0.0, weight_decay: float = 0.0,
                 bits: int = 1):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, bits=bits))

    def add_param_group(self, param_group):
        # torch.optim.Optimizer.__init__ routes every group through here: one check for both paths
        group = dict(self.defaults)
        group.update(param_group)
        lr, wd, momentum, bits = group["lr"], group["weight_decay"], group["momentum"], group["bits"]
        if not _finite_nonneg(lr):
            raise ValueError(f"SignSGD: lr must be a finite number >= 0, got {lr!r}")
        if not _finite_nonneg(wd):
            raise ValueError(f"SignSGD: weight_decay must be a finite number >= 0, got {wd!r}")
        if not (_finite_nonneg(momentum) and momentum < 1.0):
            raise ValueError(f"SignSGD: invalid momentum {momentum!r}: expected a number with 0 <= momentum < 1")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"SignSGD: bits must be an int in [1, 16], got {bits!r}")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for gi, group in enumerate(self.param_groups):  # validate every group before changing anything
            live = [(i, p) for i, p in enumerate(group["params"]) if p.grad is not None]
            work.append((group, live))
            for i, p in live:
                g = p.grad
                if g.is_sparse or g.is_complex():
                    raise TypeError(f"SignSGD needs dense real gradients; param_groups[{gi}]['params'][{i}] has a "
                                    f"{'sparse' if g.is_sparse else 'complex'} gradient")
                if not torch.isfinite(g).all():
                    raise ValueError(f"non-finite gradient (nan/inf) in param_groups[{gi}]['params'][{i}] "
                                     f"(shape {tuple(p.shape)}); expected finite values; nothing was changed")
        for group, live in work:
            lr, mom, wd, bits = group["lr"], group["momentum"], group["weight_decay"], group["bits"]
            for _, p in live:
                d = p.grad
                if mom > 0:
                    buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(mom).add_(d, alpha=1 - mom)
                    d = buf
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(quantize_update(d, bits), alpha=-lr)
        return loss
