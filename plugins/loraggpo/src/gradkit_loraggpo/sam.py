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


def _check_group(g) -> None:
    """Hyperparameters of one param group: finite and in range, else a ValueError naming the key."""
    def finite(key, lo=0.0, lo_open=False):
        v = g[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo or (lo_open and v == lo):
            rel = ">" if lo_open else ">="
            raise ValueError(f"SAM: {key} must be a finite number {rel} {lo}, got {v!r}")

    finite("lr")
    finite("rho")
    finite("weight_decay")
    finite("eps", lo_open=True)
    if g["base"] not in ("adamw", "sgd"):
        raise ValueError(f"SAM: base must be 'adamw' or 'sgd', got {g['base']!r}")
    b = g["betas"]
    if len(b) != 2 or not all(isinstance(x, (int, float)) and 0 <= x < 1 for x in b):
        raise ValueError(f"SAM: betas must be two numbers in [0, 1), got {b!r}")
    m = g["momentum"]
    if not isinstance(m, (int, float)) or not 0 <= m < 1:
        raise ValueError(f"SAM: momentum must be a number in [0, 1), got {m!r}")


class SAM(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, rho: float = 0.05, base: str = "adamw", betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.9, adaptive: bool = False):
        defaults = dict(lr=lr, rho=rho, base=base, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum=momentum, adaptive=bool(adaptive))
        _check_group(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_group(group)
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
            raise FloatingPointError(f"SAM: gradient norm is not finite ({norm}); check for NaN/inf gradients "
                                     "(nothing was updated)")
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
        # back to w exactly, then check every gradient at w + e before any update (a failed step changes nothing)
        for p, w in saved.items():
            p.copy_(w)
        for p in saved:
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise FloatingPointError(f"SAM: non-finite (nan/inf) gradient at the perturbed point for a parameter "
                                         f"of shape {tuple(p.shape)}; nothing was updated")
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p not in saved or p.grad is None:
                    continue
                g = p.grad
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
