"""Benchmark: wall time of one sampling call at equal NFE, EVODiff vs DDIM / DPM-Solver++(2M, 3M) / EDM-Heun.

EVODiff makes one model evaluation per step like DPM-Solver++(2M) but does more tensor work per step (two balanced
differences, four projection coefficients with per-channel dot products).  Three workloads, all in one process,
interleaved repetitions, medians, reported as ratios to DPM-Solver++(2M):

* cheap-2d   - the exact 8-Gaussian denoiser on (4096, 2) points: solver arithmetic is a visible share;
* image-like - (64, 3, 32, 32) tensors with a cheap per-pixel linear model (a 1x1 convolution): the dot products run
  over 3 channels x 1024 pixels as on CIFAR-10;
* mlp-2d     - the EDM-preconditioned MLP (3x256) on (4096, 2) points: model cost dominates;
* solver-only - image-shaped tensors and a near-free model (0.5 x): the ratio of the solvers' own arithmetic.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Optional

import torch

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar

from .models import EDMDenoiser, FourierMLP, GaussianMixture
from .samplers import DDIM, DPMSolverPP, EDMHeun, EVODiff
from .schedules import EDMSchedule


def _workloads(seed):
    g = torch.Generator().manual_seed(seed)
    gm = GaussianMixture.ring()
    conv = torch.nn.Conv2d(3, 3, 1)
    torch.manual_seed(seed)
    mlp = EDMDenoiser(FourierMLP(dim=2, hidden=256, depth=3)).eval()

    def conv_model(x, t):
        c_skip = 0.25 / (t[:, None, None, None] ** 2 + 0.25)
        return c_skip * x + 0.1 * conv(x)

    return {
        "cheap-2d": (lambda x, t: gm.posterior_mean(x, 1.0, t), 80 * torch.randn(4096, 2, generator=g)),
        "image-like": (conv_model, 80 * torch.randn(64, 3, 32, 32, generator=g)),
        "mlp-2d": (mlp, 80 * torch.randn(4096, 2, generator=g)),
        "solver-only": (lambda x, t: 0.5 * x, 80 * torch.randn(64, 3, 32, 32, generator=g)),
    }


def run(*, quick: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True) -> Result:
    torch.set_num_threads(1)
    res = Result("evodiff-bench", title="EVODiff sampling cost at equal NFE vs DDIM / DPM-Solver++ / EDM-Heun")
    reps = 5 if quick else 15
    nfe = 10
    sch = EDMSchedule()
    res.meta.update(nfe=nfe, reps=reps, threads=1)
    with torch.no_grad():
        for wl, (model, x) in progress_bar(list(_workloads(seed).items()), desc="workloads", enabled=progress):
            samplers = {"evodiff": EVODiff(model, sch, prediction="data"),
                        "dpmpp-2m": DPMSolverPP(model, sch, order=2, prediction="data"),
                        "dpmpp-3m": DPMSolverPP(model, sch, order=3, prediction="data"),
                        "ddim": DDIM(model, sch, prediction="data"),
                        "edm-heun": EDMHeun(model, sch, prediction="data")}
            times = {k: [] for k in samplers}
            for s in samplers.values():  # warm-up (allocator, first-call costs)
                s.sample(x, nfe)
            for _ in range(reps):  # interleave samplers so machine load affects all alike
                for k, s in samplers.items():
                    t0 = time.perf_counter()
                    s.sample(x, nfe)
                    times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            for k, s in samplers.items():
                res.add_row(workload=wl, sampler=k, nfe=s.nfe_used, ms_per_call=round(1e3 * med[k], 2),
                            ratio_to_dpmpp2m=round(med[k] / med["dpmpp-2m"], 3))
    res.add_note("one process, torch 1 thread, medians of interleaved repetitions; the machine was shared and "
                 "loaded, so only ratios are meaningful.")
    return res
