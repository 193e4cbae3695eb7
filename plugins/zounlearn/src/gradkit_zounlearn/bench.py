"""Benchmark: step time and optimizer-state memory of the optimizer grades vs torch AdamW.

All optimizers train the same tiny GPT on the same batch in one process; the ZO step time
includes its 2q+1 forward passes (no backward), the FO steps one forward + backward.
"""

from __future__ import annotations

import copy
import time
from typing import Optional

import torch

from gradkit_core.results import Result, progress as _progress

from .optim import HybridFOZO, SignAdam, SignSGD, ZOOptimizer


def _state_bytes(opt) -> int:
    total = 0
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total


def run(*, quick: bool = False, out: Optional[str] = None, seed: int = 0, progress: bool = True) -> Result:
    from gradkit_support.models import TinyGPT

    torch.manual_seed(seed)
    d, L, bs, steps = (64, 64, 16, 10) if quick else (128, 128, 16, 30)
    model = TinyGPT(block_size=L, d_model=d, n_layer=2, n_head=4)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (bs, L), generator=g)
    makers = {
        "adamw (torch)": lambda p: torch.optim.AdamW(p, lr=1e-4),
        "sign-sgd": lambda p: SignSGD(p, lr=1e-4),
        "sign-adam": lambda p: SignAdam(p, lr=1e-4),
        "zo q=1 (adam)": lambda p: ZOOptimizer(p, lr=1e-4, num_queries=1),
        "zo q=4 (adam)": lambda p: ZOOptimizer(p, lr=1e-4, num_queries=4),
        "zo q=1 (sgd)": lambda p: ZOOptimizer(p, lr=1e-4, num_queries=1, base="sgd"),
        "hybrid-fo-zo q=1": lambda p: HybridFOZO(p, lr=1e-4, num_queries=1),
    }
    res = Result("zounlearn", title="Optimizer grades: step time and state memory vs torch AdamW (tiny GPT)")
    res.meta.update(d_model=d, block=L, batch=bs, steps=steps, params=model.num_params(),
                    threads=torch.get_num_threads())
    rows = {}
    for name, make in _progress(list(makers.items()), desc="bench", enabled=progress):
        m = copy.deepcopy(model)
        opt = make(m.parameters())
        zo_only = isinstance(opt, ZOOptimizer)

        def closure():
            opt.zero_grad(set_to_none=True)
            logits = m(x)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), x[:, 1:].reshape(-1))
            loss.backward()
            return loss

        def loss_only():
            with torch.no_grad():
                logits = m(x)
                return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), x[:, 1:].reshape(-1))

        def one():
            if zo_only:
                opt.step(loss_only)
            elif isinstance(opt, HybridFOZO):
                opt.step(closure, closure_zo=loss_only)
            else:
                opt.step(closure)

        one()
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        rows[name] = ((time.perf_counter() - t0) / steps, _state_bytes(opt))
    t_ref, s_ref = rows["adamw (torch)"]
    for name, (t, s) in rows.items():
        res.add_row(optimizer=name, ms_per_step=1e3 * t, time_ratio_to_adamw=t / t_ref, state_MB=s / 2**20,
                    state_ratio_to_adamw=s / s_ref if s_ref else float("nan"))
    res.add_note("time includes the forward/backward work each optimizer needs per step (ZO: 2q+1 forwards, no backward)")
    return res
