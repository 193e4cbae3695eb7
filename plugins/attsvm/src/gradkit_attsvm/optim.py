"""Normalized gradient descent, the paper's training rule for the attention experiments.

Per parameter tensor ``p`` with gradient ``g``:

    p ← p − lr · g / (‖g‖_F + eps)

The norm is taken per tensor (for (K, Q): ``K`` and ``Q`` are normalized separately, as in the
official notebooks). ``eps`` defaults to float64's machine epsilon, the official value.
"""

from __future__ import annotations

from typing import Optional

import torch

EPS64 = float(torch.finfo(torch.float64).eps)


class NormalizedGD(torch.optim.Optimizer):
    """``NormalizedGD(params, lr=0.1, eps=2.2e-16, foreach=None)``: each tensor moves by ``lr`` along ``-g/‖g‖_F``.

    Update ``p ← p − lr · (g / (‖g‖_F + eps))``.  ``foreach=None`` uses the ``torch._foreach_*``
    kernels when a group holds several dense tensors (one call for many small runs; the same
    arithmetic, bit for bit, as the per-tensor loop).  State: ``step`` (steps taken by that
    tensor), created on its first step.  A NaN/inf gradient propagates into the parameter (it is
    not hidden); a zero gradient leaves the parameter still.
    """

    def __init__(self, params, lr: float = 0.1, eps: float = EPS64, foreach: Optional[bool] = None):
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0:
            raise ValueError(f"lr must be a non-negative number, got {lr!r}")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
            raise ValueError(f"eps must be a non-negative number, got {eps!r}")
        if foreach not in (None, True, False):
            raise ValueError(f"foreach must be None, True or False, got {foreach!r}")
        super().__init__(params, dict(lr=float(lr), eps=float(eps), foreach=foreach))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise TypeError("NormalizedGD does not support sparse gradients")
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
