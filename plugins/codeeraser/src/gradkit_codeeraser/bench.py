"""Benchmark: wall time per unlearning step of CodeEraser vs GA, CU and SSGA (same model, same batches).

CodeEraser and CU do two optimizer steps per iteration (forget + retain) and a frozen
reference forward for the KL; GA and SSGA one.  Reported as ms per iteration, ratio to GA,
and seconds per forgotten sample for the given step budget.
"""

from __future__ import annotations

import copy
import time
from typing import Optional

import torch

from gradkit_core.results import Result, progress as _progress

from .unlearn import CodeEraser

#: GA is CU with lam = 0 (no KL term, no retain step)
METHODS = {"ga": {"mode": "cu", "lam": 0.0}, "lm-cu": {"mode": "cu"}, "ssga": {"mode": "ssga"},
           "codeeraser": {"mode": "codeeraser"}}


def run(*, quick: bool = False, out: Optional[str] = None, seed: int = 0, progress: bool = True) -> Result:
    from gradkit_support.models import TinyGPT

    torch.manual_seed(seed)
    d, L, bs, steps, reps = (64, 64, 4, 10, 2) if quick else (128, 128, 4, 30, 3)
    model = TinyGPT(block_size=L, d_model=d, n_layer=2, n_head=4)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (bs, L), generator=g)
    sec = torch.zeros_like(ids, dtype=torch.bool)
    sec[:, L // 2 : L // 2 + 20] = True
    retain = torch.randint(0, 256, (bs, L), generator=g)
    res = Result("codeeraser", title="Unlearning step time: CodeEraser vs GA / CU / SSGA (tiny GPT)")
    res.meta.update(d_model=d, block=L, batch=bs, steps=steps, params=model.num_params(),
                    threads=torch.get_num_threads())
    times = {}
    for name in _progress(list(METHODS), desc="bench", enabled=progress):
        best = float("inf")
        for _ in range(reps):
            m = copy.deepcopy(model)
            ul = CodeEraser(m, lr=1e-5, **METHODS[name])
            ul.unlearn([{"input_ids": ids, "forget_mask": sec}], [retain], max_steps=1)  # warm-up
            t0 = time.perf_counter()
            ul.unlearn([{"input_ids": ids, "forget_mask": sec}], [retain], max_steps=steps)
            best = min(best, (time.perf_counter() - t0) / steps)
        times[name] = best
    for name, t in times.items():
        res.add_row(method=name, ms_per_iteration=1e3 * t, ratio_to_ga=t / times["ga"],
                    s_per_sample_100_steps=100 * t / bs)
    res.add_note("best of repeated runs; one iteration = one forget step (+ one retain step for CU / CodeEraser)")
    return res
