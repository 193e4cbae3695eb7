"""Sharpness-Aware Minimization (Foret et al., 2021) as a closure optimizer: the LoRA-SAM baseline.

``step(closure)``: the closure computes the loss and gradients at ``w``; SAM moves to
``w + e`` with ``e = rho * g / ||g||`` (``adaptive``: ``e = rho * w^2 g / ||w g||``, ASAM),
calls the closure again, restores ``w`` exactly and applies the base update (AdamW or
SGD with momentum) with the gradient taken at ``w + e``.  Two forward/backward passes per
step, which is the cost LoRA-GGPO and Flat-LoRA avoid.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch


class SAM(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, rho: float = 0.05, base: str = "adamw", betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.9, adaptive: bool = False):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if base not in ("adamw", "sgd"):
            raise ValueError(f"base must be 'adamw' or 'sgd', got {base!r}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, rho=rho, base=base, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum=momentum, adaptive=adaptive)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.is_sparse or p.is_complex():
                    raise TypeError(f"SAM supports dense real parameters; got a sparse/complex parameter of shape "
                                    f"{tuple(p.shape)}")

    def _grad_norm(self) -> float:
        sq = 0.0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad * p.abs() if group["adaptive"] else p.grad
                sq += float(g.float().pow(2).sum())
        return math.sqrt(sq)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        if closure is None:
            raise RuntimeError("SAM needs a closure (it re-evaluates the loss at the perturbed weights): "
                               "opt.step(closure) with closure() doing zero_grad, forward, backward and returning loss")
        with torch.enable_grad():
            loss = closure()
        norm = self._grad_norm()
        if not math.isfinite(norm):
            raise FloatingPointError(f"SAM: gradient norm is not finite ({norm}); check for NaN/inf gradients")
        saved = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                saved[p] = p.detach().clone()
                g = p.grad * p.pow(2) if group["adaptive"] else p.grad
                p.add_(g, alpha=group["rho"] / (norm + 1e-12))
        with torch.enable_grad():
            closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p not in saved:
                    continue
                p.copy_(saved[p])
                if p.grad is None:
                    continue
                g = p.grad
                if not torch.isfinite(g).all():
                    raise FloatingPointError(f"SAM: non-finite gradient at the perturbed point for a parameter of "
                                             f"shape {tuple(p.shape)}")
                state = self.state[p]
                if group["base"] == "adamw":
                    if not state:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    b1, b2 = group["betas"]
                    state["step"] += 1
                    t = state["step"]
                    p.mul_(1 - lr * wd)
                    state["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                    state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                    denom = (state["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - b1 ** t))
                else:
                    if wd:
                        g = g.add(p, alpha=wd)
                    if not state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                    p.add_(state["momentum_buffer"], alpha=-lr)
        return loss
