"""Lion optimizer (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms", Alg. 2).

Per parameter, in the order of the paper's program / official code::

    p ← p · (1 − lr·λ)                    # decoupled weight decay
    c = β1·m + (1 − β1)·g
    p ← p − lr · sign(c)
    m ← β2·m + (1 − β2)·g

One state buffer (``exp_avg``), no epsilon, ``sign(0) = 0``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, List, Optional, Tuple

import torch
from torch.optim import Optimizer


class NonFiniteGradientError(ValueError, FloatingPointError):
    """A NaN/inf gradient: a ``ValueError`` (bad input) that is also the ``FloatingPointError`` Lion raised before."""


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class Lion(Optimizer):
    """Lion.

    Args:
        params: iterable of parameters or param-group dicts.
        lr: learning rate (paper default 1e-4; use 3-10x smaller than AdamW's).
        betas: (β1, β2) for the update interpolation and the momentum (0.9, 0.99).
        weight_decay: decoupled weight decay λ (use 3-10x larger than AdamW's so lr·λ matches).
        decoupled_weight_decay: if True, the decay is ``lr·λ / lr₀`` as in
            ``lion-pytorch``'s option of that name (independent of the lr schedule's
            scale): ``lr₀`` is the group's ``initial_lr`` once an lr scheduler has set it
            (torch's base lr of a schedule), otherwise the lr the group was created with.
            The default (False) is the paper's ``lr·λ``.
        cautious: mask update entries whose sign disagrees with the gradient and rescale
            the rest by the kept fraction (Cautious Optimizers, Liang et al. 2024).
        foreach: ``None`` (default) or ``True``: the multi-tensor ``torch._foreach_*``
            path for small tensors and the chunked path for tensors of ``CHUNK`` (2^18)
            elements or more (both use ``lerp``: equal to the paper's arithmetic up to
            rounding, so ``sign(c)`` can differ where ``c`` is within rounding of 0);
            ``False``: the per-tensor loop with the official program's arithmetic for
            every tensor, whatever its size (bit-identical to lion-pytorch's loop).
        check_finite: raise on a NaN/inf gradient instead of stepping (every group is
            checked before any parameter or state changes).  ``torch.sign`` maps NaN
            to 0, so without the check a NaN gradient would silently freeze that entry
            forever (its momentum becomes NaN).  Costs one reduction per step.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: Tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        cautious: bool = False,
        foreach: Optional[bool] = None,
        check_finite: bool = True,
    ):
        if not (_finite_number(lr) and lr >= 0.0):
            raise ValueError(f"Lion: lr must be a finite number >= 0, got {lr!r}")
        if len(betas) != 2 or not all(_finite_number(b) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: betas must be two numbers in [0, 1), got {betas!r}")
        if not (_finite_number(weight_decay) and weight_decay >= 0.0):
            raise ValueError(f"Lion: weight_decay must be a finite number >= 0, got {weight_decay!r}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            cautious=cautious,
            foreach=foreach,
            check_finite=check_finite,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        # torch.optim.Optimizer.__init__ routes every group through here as well
        for key in ("lr", "weight_decay"):
            if key in param_group and not (_finite_number(param_group[key]) and param_group[key] >= 0.0):
                raise ValueError(f"Lion: param group {key} must be a finite number >= 0, got {param_group[key]!r}")
        super().add_param_group(param_group)
        # the reference lr of decoupled_weight_decay; a private key (lr schedulers own ``initial_lr``)
        self.param_groups[-1].setdefault("decoupled_lr0", self.param_groups[-1]["lr"])
        for p in self.param_groups[-1]["params"]:
            if p.is_sparse:
                raise TypeError(f"Lion: parameter of shape {tuple(p.shape)} is sparse; Lion needs dense tensors")
            if p.is_complex():
                raise TypeError(
                    f"Lion: parameter of shape {tuple(p.shape)} is complex; sign() is undefined for complex "
                    "values — pass torch.view_as_real(p) instead"
                )

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # pass 1: collect and validate every group; nothing (parameters or state) changes before all pass
        work = []
        for group_index, group in enumerate(self.param_groups):
            params: List[torch.Tensor] = []
            grads: List[torch.Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError(f"Lion: gradient of parameter {tuple(p.shape)} is sparse; Lion needs dense grads")
                params.append(p)
                grads.append(p.grad)
            if not params:
                continue
            if group.get("check_finite", True):
                _check_finite(group, params, grads, group_index)
            work.append((group, params, grads))
        # pass 2: step
        for group, params, grads in work:
            bufs: List[torch.Tensor] = []
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["exp_avg"])
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            wd = group["weight_decay"]
            if group["decoupled_weight_decay"]:
                # the schedule's base lr once a scheduler has set it, else the lr the group was created with
                ref = group.get("initial_lr", group.get("decoupled_lr0", lr))
                decay = (lr * wd / ref) if ref > 0 else 0.0
            else:
                decay = lr * wd
            foreach = group["foreach"]
            if group["cautious"]:
                _lion_single(params, grads, bufs, lr, beta1, beta2, decay, True)
                continue
            if foreach is False:  # the official arithmetic for every tensor, whatever its size
                _lion_single(params, grads, bufs, lr, beta1, beta2, decay, False)
                continue
            # large dense tensors: cache-sized chunks (temporaries stay in cache: ~20 B/param of memory traffic)
            big = [i for i, p in enumerate(params) if p.numel() >= CHUNK and _chunkable(p, grads[i], bufs[i])]
            if big:
                _lion_chunked([params[i] for i in big], [grads[i] for i in big], [bufs[i] for i in big],
                              lr, beta1, beta2, decay)
                keep = sorted(set(range(len(params))) - set(big))
                params, grads, bufs = [params[i] for i in keep], [grads[i] for i in keep], [bufs[i] for i in keep]
                if not params:
                    continue
            if foreach is None:
                foreach = all(type(p) in (torch.Tensor, torch.nn.Parameter) for p in params)
            if foreach:
                _lion_foreach(params, grads, bufs, lr, beta1, beta2, decay)
            else:
                _lion_single(params, grads, bufs, lr, beta1, beta2, decay, False)
        return loss


def _check_finite(group, params, grads, group_index):
    norms = torch._foreach_norm(grads)
    bad = ~torch.isfinite(torch.stack(norms))
    if bool(bad.any()):
        # a norm can overflow to inf on finite entries (|g| ~ 1e20 in fp32): confirm entry by entry
        suspects = [int(i) for i in bad.nonzero().flatten()]
        real = [i for i in suspects if not bool(torch.isfinite(grads[i]).all())]
        if not real:
            return
        i = real[0]
        index = next(k for k, p in enumerate(group["params"]) if p is params[i])
        raise NonFiniteGradientError(
            f"Lion: non-finite gradient (NaN or inf) in param group {group_index}, parameter {index} "
            f"of shape {tuple(params[i].shape)}; nothing was changed — fix the loss or clip/skip the step "
            "(pass check_finite=False to step anyway)"
        )


def _lion_single(params, grads, bufs, lr, beta1, beta2, decay, cautious):
    for p, g, m in zip(params, grads, bufs):
        if decay != 0.0:
            p.mul_(1.0 - decay)
        # the official program's arithmetic, bit for bit: c = β1·m + (1−β1)·g
        update = m.mul(beta1).add_(g, alpha=1.0 - beta1).sign_()
        if cautious:
            mask = (update * g > 0).to(update.dtype)
            mask.div_(mask.mean().clamp_(min=1e-3))
            update.mul_(mask)
        p.add_(update, alpha=-lr)
        m.mul_(beta2).add_(g, alpha=1.0 - beta2)  # m ← β2·m + (1−β2)·g


#: tensors with at least this many elements are updated chunk by chunk (1 MiB of float32 per chunk)
CHUNK = 1 << 18


def _chunkable(p, g, m) -> bool:
    return p.is_contiguous() and g.is_contiguous() and m.is_contiguous() and g.dtype == p.dtype == m.dtype


def _lion_chunked(params, grads, bufs, lr, beta1, beta2, decay):
    """Same arithmetic as :func:`_lion_foreach`, one cache-sized slice at a time.

    The interpolation ``c`` lives in a reused chunk buffer, so each step reads p, g, m and writes
    p, m once from memory (20 B/param in fp32) instead of also streaming a full-size temporary.
    """
    for p, g, m in zip(params, grads, bufs):
        pf, gf, mf = p.view(-1), g.view(-1), m.view(-1)
        buf = torch.empty(min(CHUNK, pf.numel()), dtype=p.dtype, device=p.device)
        for start in range(0, pf.numel(), CHUNK):
            end = min(start + CHUNK, pf.numel())
            pc, gc, mc, c = pf[start:end], gf[start:end], mf[start:end], buf[: end - start]
            if decay != 0.0:
                pc.mul_(1.0 - decay)
            torch.lerp(mc, gc, 1.0 - beta1, out=c)
            pc.add_(c.sign_(), alpha=-lr)
            mc.lerp_(gc, 1.0 - beta2)


def _lion_foreach(params, grads, bufs, lr, beta1, beta2, decay):
    # lerp(m, g, 1−β) = β·m + (1−β)·g in one pass; equal to the single-tensor path up to rounding
    if decay != 0.0:
        torch._foreach_mul_(params, 1.0 - decay)
    updates = torch._foreach_lerp(bufs, grads, 1.0 - beta1)
    torch._foreach_sign_(updates)
    torch._foreach_add_(params, updates, alpha=-lr)
    torch._foreach_lerp_(bufs, grads, 1.0 - beta2)
