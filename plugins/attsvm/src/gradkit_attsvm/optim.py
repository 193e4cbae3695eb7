"""Normalized gradient descent, the paper's training rule for the attention experiments.

Per parameter tensor ``p`` with gradient ``g``:

    p ← p − lr · g / (‖g‖_F + eps)

The norm is taken per tensor (for (K, Q): ``K`` and ``Q`` are normalized separately, as in the
official notebooks). ``eps`` defaults to float64's machine epsilon, the official value.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

EPS64 = float(torch.finfo(torch.float64).eps)


class NormalizedGD(torch.optim.Optimizer):
    """``NormalizedGD(params, lr=0.1, eps=2.2e-16, foreach=None)``: each tensor moves by ``lr`` along ``-g/‖g‖_F``.

    Update ``p ← p − lr · (g / (‖g‖_F + eps))``.  ``foreach=None`` uses the ``torch._foreach_*``
    kernels when a group holds several dense tensors (one call for many small runs; the same
    arithmetic, bit for bit, as the per-tensor loop).  State: ``step`` (steps taken by that
    tensor), created on its first step.  A zero gradient leaves the parameter still.

    Bad input: a NaN/inf/negative ``lr`` or ``eps`` is a ValueError at construction (and in
    ``add_param_group``); a NaN/inf gradient in any group raises ValueError before any parameter or
    state of any group changes (all groups are checked first), so the caller can skip the batch.
    """

    def __init__(self, params, lr: float = 0.1, eps: float = EPS64, foreach: Optional[bool] = None):
        _check_hparams(lr, eps, foreach)
        super().__init__(params, dict(lr=float(lr), eps=float(eps), foreach=foreach))

    def add_param_group(self, param_group):
        for key in ("lr", "eps", "foreach"):
            if key in param_group:
                _check_hparams(**{key: param_group[key]})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # validate every group before touching any parameter or state
        work = []
        for gi, group in enumerate(self.param_groups):
            _check_hparams(group["lr"], group["eps"], group["foreach"])   # catches later edits of group["lr"]
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise TypeError("NormalizedGD does not support sparse gradients")
            for pi, g in enumerate(grads):
                if not bool(torch.isfinite(g).all()):
                    raise ValueError(f"NormalizedGD: non-finite gradient (nan/inf) in param group {gi}, tensor {pi} "
                                     f"of shape {tuple(g.shape)}; no parameter was changed, skip this step "
                                     "(e.g. zero_grad and move to the next batch)")
            work.append((group, params, grads))
        for group, params, grads in work:
            lr, eps = group["lr"], group["eps"]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
            foreach = group["foreach"]
            if foreach is None:
                foreach = len(params) > 1 and len({(p.device, p.dtype) for p in params}) == 1
            if foreach:
                denoms = torch._foreach_add(torch._foreach_norm(grads), eps)
                if eps == 0.0:  # a zero gradient with eps = 0 is a zero step, not 0/0
                    denoms = [torch.where(dn == 0, torch.ones_like(dn), dn) for dn in denoms]
                torch._foreach_add_(params, torch._foreach_div(grads, denoms), alpha=-lr)
            else:
                for p, g in zip(params, grads):
                    denom = torch.linalg.vector_norm(g) + eps
                    if eps == 0.0:
                        denom = torch.where(denom == 0, torch.ones_like(denom), denom)
                    p.add_(g / denom, alpha=-lr)
        return loss


def _check_hparams(lr=0.1, eps=EPS64, foreach=None):
    for name, val in (("lr", lr), ("eps", eps)):
        if isinstance(val, torch.Tensor) and val.numel() == 1:
            val = val.item()
        if not isinstance(val, (int, float)) or isinstance(val, bool):
            raise TypeError(f"{name} must be a finite non-negative number, got {type(val).__name__} {val!r}")
        if not math.isfinite(val) or val < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {val!r}")
    if foreach not in (None, True, False):
        raise ValueError(f"foreach must be None, True or False, got {foreach!r}")
