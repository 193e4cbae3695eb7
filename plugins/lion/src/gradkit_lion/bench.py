"""Benchmark: Lion's optimizer step vs torch.optim.AdamW (foreach) and lion-pytorch.

Everything runs in one process, interleaved, and is reported as ratios to AdamW
(the machine is shared; absolute times mean little).  Also checks that gradkit's
Lion equals lion-pytorch numerically on the same gradients, and (non-quick) the
bandwidth of one step on a single flat parameter of 50M floats against a
``torch.add_`` copy probe (Lion moves 20 B/param: reads p, g, m, writes p, m;
AdamW 28 B/param).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar
from gradkit_support.models import TinyGPT, state_bytes

from .optim import Lion


def _peer_lion():
    """(loop, foreach) Lion classes of the lion-pytorch package, or (None, None)."""
    try:
        from lion_pytorch import Lion as PeerLion  # type: ignore
    except Exception:  # noqa: BLE001 - optional peer
        return None, None
    try:
        from lion_pytorch.foreach import Lion as PeerForeach  # type: ignore
    except Exception:  # noqa: BLE001
        PeerForeach = None
    return PeerLion, PeerForeach


def _time_steps(make_opt: Callable, model: torch.nn.Module, grads: List[torch.Tensor], reps: int) -> List[float]:
    params = list(model.parameters())
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt = make_opt(params)
    opt.step()  # create state outside the timing
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def run(*, quick: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True) -> Result:
    torch.manual_seed(seed)
    res = Result("lion-bench", title="Lion optimizer step vs AdamW (foreach) and lion-pytorch")
    d_model, n_layer = (192, 4) if quick else (256, 6)
    model = TinyGPT(d_model=d_model, n_layer=n_layer, block_size=128)
    n_params = sum(p.numel() for p in model.parameters())
    grads = [torch.randn_like(p) * 1e-2 for p in model.parameters()]
    reps = 10 if quick else 30
    Peer, PeerForeach = _peer_lion()
    candidates: Dict[str, Callable] = {
        "adamw-foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, foreach=True),
        "lion-foreach": lambda ps: Lion(ps, lr=1e-4, weight_decay=1.0, foreach=True),
        "lion-loop": lambda ps: Lion(ps, lr=1e-4, weight_decay=1.0, foreach=False),
    }
    if Peer is not None:
        candidates["lion-pytorch"] = lambda ps: Peer(ps, lr=1e-4, weight_decay=1.0)
    if PeerForeach is not None:
        candidates["lion-pytorch-foreach"] = lambda ps: PeerForeach(ps, lr=1e-4, weight_decay=1.0)
    times: Dict[str, List[float]] = {k: [] for k in candidates}
    rounds = 3
    for _ in progress_bar(range(rounds), desc="bench rounds", enabled=progress):
        for name, make in candidates.items():  # interleave to share the machine's noise fairly
            times[name] += _time_steps(make, model, grads, reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    mem = {}
    for name, make in candidates.items():
        ps = list(model.parameters())
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        o = make(ps)
        o.step()
        mem[name] = state_bytes(o)
    for name in candidates:
        res.add_row(
            optimizer=name,
            params=n_params,
            step_ms=round(med[name] * 1e3, 3),
            time_vs_adamw=round(med[name] / med["adamw-foreach"], 3),
            state_bytes=mem[name],
            state_vs_adamw=round(mem[name] / mem["adamw-foreach"], 3),
        )
    ratio = med["lion-foreach"] / med["adamw-foreach"]
    res.add_claim("Lion (foreach) step time <= 0.8x AdamW (foreach)", ratio <= 0.8, f"ratio {ratio:.3f}")
    half = mem["lion-foreach"] / mem["adamw-foreach"]
    # AdamW also keeps one scalar step tensor per parameter, hence "about" half
    res.add_claim("Lion state is half of AdamW's (one buffer vs two)", abs(half - 0.5) < 1e-3,
                  f"{mem['lion-foreach']} vs {mem['adamw-foreach']} bytes (ratio {half:.4f})")

    # numerical equality with lion-pytorch on identical gradients
    if Peer is not None:
        torch.manual_seed(seed + 1)
        a = torch.randn(1000, requires_grad=True)
        b = a.detach().clone().requires_grad_(True)
        oa = Lion([a], lr=1e-3, weight_decay=0.1, foreach=False)
        ob = Peer([b], lr=1e-3, weight_decay=0.1)
        for s in range(20):
            g = torch.randn(1000)
            a.grad, b.grad = g.clone(), g.clone()
            oa.step()
            ob.step()
        diff = float((a - b).detach().abs().max())
        res.add_claim("matches lion-pytorch numerically (20 steps, max |diff| < 1e-6)", diff < 1e-6, f"{diff:.2e}")
    else:
        res.add_note("lion-pytorch is not installed: peer rows and equality check skipped (pip install lion-pytorch)")

    if not quick:
        n = 50_000_000
        p = torch.zeros(n, requires_grad=True)
        p.grad = torch.randn(n)
        src = torch.randn(n)
        dst = torch.empty(n)
        opts = {"lion": Lion([p], lr=1e-4, foreach=True), "adamw": torch.optim.AdamW([p], lr=1e-3, foreach=True)}
        for o in opts.values():
            o.step()
        bw = {"copy": [], "lion": [], "adamw": []}
        for _ in range(5):
            t0 = time.perf_counter()
            dst.copy_(src)
            bw["copy"].append(time.perf_counter() - t0)
            for k, o in opts.items():
                t0 = time.perf_counter()
                o.step()
                bw[k].append(time.perf_counter() - t0)
        copy_gbs = 8 * n / statistics.median(bw["copy"]) / 1e9
        for k, bpp in (("lion", 20), ("adamw", 28)):
            gbs = bpp * n / statistics.median(bw[k]) / 1e9
            res.add_row(optimizer=f"{k} flat 50M", params=n, step_ms=round(statistics.median(bw[k]) * 1e3, 1),
                        time_vs_adamw=round(statistics.median(bw[k]) / statistics.median(bw["adamw"]), 3),
                        state_bytes=f"{bpp} B/param ideal", state_vs_adamw=f"{gbs:.1f} GB/s (copy {copy_gbs:.1f})")
    return res
