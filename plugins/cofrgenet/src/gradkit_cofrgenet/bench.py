"""Benchmark: the Prop. 1 backward against autograd through the recursion, and Cffn against FFNs.

Everything runs in one process, interleaved, timed in CPU seconds (``time.process_time``, one thread) and
reported as ratios; the machine is shared, absolute times mean little.

1. Ladder of depth d = 4, 8, 16 on N partial-denominator vectors, forward + backward:
   ``custom``  continuant forward + Prop. 1 backward (this package),
   ``autograd-continuant``  the same recursion and clamp, differentiated by autograd,
   ``autograd-nested``  the nested form with d divisions (CoFrNet's per-level clamp), autograd.
   Also: bytes saved for backward (``saved_tensors_hooks``) and the float32 gradient error against a float64
   reference (normwise per vector), on mixed-sign inputs whose nested denominators are all >= 0.2 in size.
2. One Cffn block (L = 2, d = 5) against an FFN of equal parameter count and against the 4x FFN it replaces,
   forward + backward on a (B, T, p) activation.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar

from .blocks import FFN, Cffn, matched_hidden
from .ladder import continued_fraction, continued_fraction_autograd, continued_fraction_nested

LADDERS: Dict[str, Callable] = {
    "custom": lambda a: continued_fraction(a, 1e-2),
    "autograd-continuant": lambda a: continued_fraction_autograd(a, 1e-2),
    "autograd-nested": lambda a: continued_fraction_nested(a, 1e-2),
}


def _fwd_bwd(fn: Callable, a: torch.Tensor, w: torch.Tensor) -> float:
    x = a.detach().requires_grad_(True)
    t = time.process_time()
    (fn(x) * w).sum().backward()
    return time.process_time() - t


def _saved_bytes(fn: Callable, a: torch.Tensor) -> int:
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    x = a.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    y.sum().backward()
    return total[0]


def _inputs(n: int, d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Mixed-sign partial denominators, every nested denominator at least 0.2 away from 0."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(2 * n, d, generator=g, dtype=torch.float64) * 4 - 2
    a = torch.where(a.abs() < 0.3, a.sign() * 0.3 + a, a)
    den, ok = a[:, -1].clone(), a[:, -1].abs() >= 0.2
    for k in range(d - 2, -1, -1):
        den = a[:, k] + 1 / den
        ok &= den.abs() >= 0.2
    a = a[ok][:n]
    return a.to(dtype)


def _grad(fn: Callable, a: torch.Tensor) -> torch.Tensor:
    x = a.detach().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def run(*, quick: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True) -> Result:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    res = Result("cofrgenet-bench", title="Continued-fraction ladder backward and Cffn block: CPU time ratios")
    n = 32_768 if quick else 131_072
    reps = 5 if quick else 15
    depths = (4, 8, 16)
    res.meta.update(n_vectors=n, reps=reps, timer="time.process_time, 1 thread, median of interleaved reps")

    ratios = {}
    for d in progress_bar(depths, desc="ladder depths", enabled=progress):
        a = _inputs(n, d, seed + d)
        w = torch.randn(len(a))
        times: Dict[str, List[float]] = {k: [] for k in LADDERS}
        for fn in LADDERS.values():  # warm-up
            _fwd_bwd(fn, a, w)
        for _ in range(reps):
            for k, fn in LADDERS.items():
                times[k].append(_fwd_bwd(fn, a, w))
        med = {k: statistics.median(v) for k, v in times.items()}
        ref = _grad(lambda x: continued_fraction_nested(x), a.double())
        errs = {}
        for k, fn in LADDERS.items():
            # normwise per vector: max_k |g - ref| / max_k |ref|, then the worst and the median vector
            e = (_grad(fn, a).double() - ref).abs().amax(-1) / ref.abs().amax(-1)
            errs[k] = (float(e.max()), float(e.median()))
            res.add_row(part="ladder", depth=d, method=k, n=len(a), fwd_bwd_ms=round(med[k] * 1e3, 2),
                        time_vs_custom=round(med[k] / med["custom"], 2),
                        saved_MB=round(_saved_bytes(fn, a) / 2**20, 2), grad_err_worst=f"{errs[k][0]:.1e}",
                        grad_err_median=f"{errs[k][1]:.1e}", params="")
        ratios[(d, "err")] = errs
        ratios[d] = (med["autograd-continuant"] / med["custom"], med["autograd-nested"] / med["custom"])
    for d in depths:
        ac, an = ratios[d]
        res.add_claim(f"d={d}: custom backward faster than autograd through the continuant recursion and through "
                      "the nested form (ratio > 1.1)", ac > 1.1 and an > 1.1,
                      f"autograd-continuant / custom = {ac:.2f}x, autograd-nested / custom = {an:.2f}x")
    for d in depths:
        e = ratios[(d, "err")]
        res.add_claim(f"d={d}: Prop. 1 gradients in float32 are at least as accurate as autograd through the same "
                      "continuant recursion (worst vector, vs a float64 reference)",
                      e["custom"][0] <= e["autograd-continuant"][0],
                      f"custom {e['custom'][0]:.1e}, autograd-continuant {e['autograd-continuant'][0]:.1e}, "
                      f"autograd-nested {e['autograd-nested'][0]:.1e}")

    # 2. Cffn block vs an equal-parameter FFN and the 4x FFN
    p, b, t = (96, 8, 64) if quick else (128, 16, 128)
    cffn = Cffn(p)
    n_cffn = sum(q.numel() for q in cffn.parameters())
    blocks = {"cffn": cffn, "ffn-equal-params": FFN(p, matched_hidden(p, n_cffn)), "ffn-4x": FFN(p, 4 * p)}
    x = torch.randn(b, t, p)
    bt: Dict[str, List[float]] = {k: [] for k in blocks}

    def step(m):
        xx = x.detach().requires_grad_(True)
        t0 = time.process_time()
        m(xx).pow(2).mean().backward()
        return time.process_time() - t0

    for m in blocks.values():
        step(m)
    for _ in range(reps):
        for k, m in blocks.items():
            bt[k].append(step(m))
    med = {k: statistics.median(v) for k, v in bt.items()}
    for k, m in blocks.items():
        res.add_row(part="block", depth=5 if k == "cffn" else "", method=k, n=b * t,
                    fwd_bwd_ms=round(med[k] * 1e3, 2), time_vs_custom=round(med[k] / med["cffn"], 2),
                    saved_MB="", grad_err_worst="", grad_err_median="", params=sum(q.numel() for q in m.parameters()))
    r_eq, r_4x = med["cffn"] / med["ffn-equal-params"], med["cffn"] / med["ffn-4x"]
    res.add_note("time_vs_custom: time / the custom ladder's (ladder rows) or / Cffn's (block rows); grad_err: "
                 "max |g - g64| / max |g64| per vector, float32 vs a float64 nested-form reference")
    res.add_claim("Cffn block is cheaper than the 4x FFN it replaces (time ratio < 1)", r_4x < 1,
                  f"Cffn / 4x FFN = {r_4x:.2f}x; Cffn / equal-parameter FFN = {r_eq:.2f}x "
                  f"({n_cffn} params, p={p}, {b}x{t} tokens)")
    return res
