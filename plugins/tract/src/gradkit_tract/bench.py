"""Benchmark: forward+backward time of a first layer with TrAct vs the plain layer (and torch-tract).

TrAct adds ``2·b·n²`` flops for ``XᵀX`` plus an ``n³`` solve per step to the plain weight gradient's
``2·b·n·C_out``, so the expected overhead of the weight-gradient computation is about ``n / C_out``
(27/64 for a ResNet's 3x3 RGB stem).  Layers timed, side by side in one process:

- ResNet CIFAR stem: Conv2d(3, 64, 3, padding=1) on a 32x32 batch (n = 27, direct branch);
- the digits SmallCNN stem: Conv2d(1, 16, 3, padding=1) on 8x8 (n = 9);
- a ViT patch embedding as a Linear (4x4x3 = 48 → 192) over 64 patches per image (n = 48);
- a Woodbury case: Linear(3072, 256) on a batch of 32 flattened images (b = 32 < n = 3072).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar

from .tract import TrAct


def _time(layer: nn.Module, x: torch.Tensor, reps: int) -> float:
    for _ in range(2):
        layer(x).square().mean().backward()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        layer(x).square().mean().backward()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run(*, quick: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True) -> Result:
    torch.set_num_threads(1)  # the machine is shared: one thread avoids OpenMP spin-waiting under contention
    torch.manual_seed(seed)
    reps = 5 if quick else 20
    batch = 16 if quick else 64
    try:
        import torch_tract
    except Exception:  # noqa: BLE001 - optional peer
        torch_tract = None
    cases = [
        ("resnet stem conv 3->64 k3 32x32", lambda: nn.Conv2d(3, 64, 3, padding=1), (batch, 3, 32, 32)),
        ("digits stem conv 1->16 k3 8x8", lambda: nn.Conv2d(1, 16, 3, padding=1), (batch, 1, 8, 8)),
        ("vit patch-embed linear 48->192", lambda: nn.Linear(48, 192), (batch, 64, 48)),
        ("woodbury linear 3072->256, b=32", lambda: nn.Linear(3072, 256), (32, 3072)),
    ]
    res = Result("tract-bench", title="TrAct first-layer forward+backward time vs the plain layer")
    for name, make, shape in progress_bar(cases, desc="layers", enabled=progress):
        x = torch.randn(*shape)
        base = make()
        t_plain = _time(base, x, reps)
        t_ours = _time(TrAct(base, lam=0.1), x, reps)
        row = dict(layer=name, plain_ms=round(1e3 * t_plain, 3), tract_ms=round(1e3 * t_ours, 3),
                   tract_vs_plain=round(t_ours / t_plain, 3))
        if torch_tract is not None:
            if isinstance(base, nn.Linear) and x.dim() > 2:
                xr = x.reshape(-1, x.shape[-1])
            else:
                xr = x
            t_ref = _time(torch_tract.TrAct(base, l=0.1), xr, reps)
            row.update(torch_tract_ms=round(1e3 * t_ref, 3), tract_vs_torch_tract=round(t_ours / t_ref, 3))
        res.add_row(**row)
    if torch_tract is None:
        res.add_note("torch-tract not installed: no reference column (pip install torch-tract)")
    res.add_note("expected weight-gradient overhead ~ n / C_out (27/64 for the ResNet stem); the whole layer's "
                 "forward+backward is timed, on a shared 2-core CPU")
    res.meta.update(reps=reps, batch=batch, torch=torch.__version__)
    return res
