"""Benchmark: GCond step cost (exact vs stochastic) and aggregation cost vs linear sum, PCGrad and torchjd.

Everything runs in one process, interleaved, with one thread; times are CPU process
times and are reported as ratios (the machine is shared).

1. Full step (accumulate N = 4 micro-batches of the reproduction's autoencoder task, combine,
   write ``p.grad``) for linear sum, PCGrad, CAGrad, GCond exact and GCond stochastic:
   ratio to the linear sum.
2. Aggregation only, on K = 2 fixed task gradients of ~1M parameters: GCond's conflict
   resolution + momentum, our PCGrad, and torchjd's ``PCGrad`` aggregator on the K x P
   Jacobian (when torchjd is installed); also whether our PCGrad equals torchjd's.
3. State memory of GCond: per-task accumulators, ``prev`` buffers and momentum, against the
   cost model ``(2K + 1) * P * bytes(buffer dtype)``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar

from .baselines import CAGrad, LinearSum, PCGrad, pcgrad_weights
from .conductor import GradientConductor
from .task import MaskedAutoencoder, PatchSampler, generate_images, l1_loss, ssim_loss

LOSSES = {"l1": l1_loss, "ssim": ssim_loss}
LAMBDAS = {"l1": 0.85, "ssim": 0.15}


def _cpu_time(fn: Callable[[], None]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _torchjd():
    try:
        from torchjd.aggregation import PCGrad as JDPCGrad  # type: ignore

        return JDPCGrad
    except Exception:  # noqa: BLE001 - optional peer
        return None


def run(*, quick: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True) -> Result:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    res = Result("gcond-bench", title="GCond: step time exact vs stochastic, aggregation cost vs PCGrad / torchjd")
    try:
        _full_steps(res, quick, seed, progress)
        _aggregation(res, quick, seed, progress)
    finally:
        torch.set_num_threads(threads)
    return res


def _full_steps(res: Result, quick: bool, seed: int, progress: bool) -> None:
    torch.manual_seed(seed)
    images = generate_images(16, size=96, seed=seed)
    reps = 4 if quick else 12
    makers = {
        "linear-sum": lambda m: LinearSum(m, LOSSES, LAMBDAS, 4),
        "pcgrad": lambda m: PCGrad(m, LOSSES, LAMBDAS, 4),
        "cagrad": lambda m: CAGrad(m, LOSSES, LAMBDAS, 4),
        "gcond-exact": lambda m: GradientConductor(m, LOSSES, LAMBDAS, 4, stochastic=False),
        "gcond-exact (one forward per loss)": lambda m: GradientConductor(m, LOSSES, LAMBDAS, 4, stochastic=False,
                                                                          shared_forward=False),
        "gcond-stochastic": lambda m: GradientConductor(m, LOSSES, LAMBDAS, 4, stochastic=True),
    }
    aggs, samplers = {}, {}
    for name, mk in makers.items():
        model = MaskedAutoencoder(width=12)
        aggs[name] = mk(model)
        samplers[name] = PatchSampler(images, batch=32, patch=16, cell=2, seed=seed + 1)
        aggs[name].step(samplers[name])  # warm-up, state creation
    times: Dict[str, List[float]] = {n: [] for n in makers}
    for _ in progress_bar(range(reps), desc="full steps", enabled=progress):
        for name in makers:  # interleaved
            times[name].append(_cpu_time(lambda: aggs[name].step(samplers[name])))
    base = statistics.median(times["linear-sum"])
    for name in makers:
        med = statistics.median(times[name])
        res.add_row(section="full step (N=4 x 32 images)", method=name, cpu_ms=1e3 * med, ratio_to_linear_sum=med / base)
    speed = statistics.median(times["gcond-exact"]) / statistics.median(times["gcond-stochastic"])
    res.add_claim("GCond stochastic accumulation is faster per step than exact (paper: ~2x with 2 tasks)", speed > 1.0,
                  f"exact / stochastic = {speed:.2f}x")
    speed2 = statistics.median(times["gcond-exact (one forward per loss)"]) / statistics.median(
        times["gcond-stochastic"])
    res.add_claim("with the official code's exact mode (one forward per loss) stochastic is >= 1.7x faster "
                  "(paper: ~2x)", speed2 >= 1.7, f"exact (per-loss forward) / stochastic = {speed2:.2f}x")
    gc = aggs["gcond-stochastic"]
    P = sum(p.numel() for p in gc.params)
    held = sum(t.numel() * t.element_size() for lst in list(gc.accumulators.values()) + list(gc.prev.values())
               for t in lst) + sum(t.numel() * t.element_size() for t in gc.momentum)
    model_bytes = (2 * len(gc.tasks) + 1) * P * torch.finfo(gc.buffer_dtype).bits // 8
    res.add_row(section="memory", method="gcond (bf16 buffers)", params=P, state_bytes=held, cost_model_bytes=model_bytes,
                bytes_per_param=held / P)
    res.add_claim("GCond state matches the (2K+1)*P*2 B cost model (bf16 accumulators, prev, momentum)",
                  held == model_bytes, f"{held} B held vs {model_bytes} B")


def _aggregation(res: Result, quick: bool, seed: int, progress: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    P = 200_000 if quick else 1_000_000
    reps = 5 if quick else 15
    base = torch.randn(P, generator=g)
    g1 = base + 0.5 * torch.randn(P, generator=g)
    g2 = -0.6 * base + 0.8 * torch.randn(P, generator=g)  # conflicting (cosine about -0.4)
    shapes = [(P // 4,), (P // 4,), (P // 2,)]

    def split(v):
        return list(torch.split(v, [s[0] for s in shapes]))

    params = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in shapes])
    holder = nn.Module()
    holder.params = params
    dummy = {"a": lambda o, y: o, "b": lambda o, y: o}
    gc = GradientConductor(holder, dummy, None, 2, buffer_dtype=torch.float32)
    pc = PCGrad(holder, dummy, None, 2)

    def fresh():
        return {"a": split(g1.clone()), "b": split(g2.clone())}

    JD = _torchjd()
    jd = JD() if JD is not None else None
    J = torch.stack([g1, g2])
    timings: Dict[str, List[float]] = {"gcond (resolve + momentum)": [], "pcgrad (ours)": []}
    if jd is not None:
        timings["torchjd PCGrad"] = []
    for _ in progress_bar(range(reps), desc="aggregation", enabled=progress):
        grads = fresh()
        timings["gcond (resolve + momentum)"].append(_cpu_time(lambda: gc.combine(grads)))
        grads = fresh()
        timings["pcgrad (ours)"].append(_cpu_time(lambda: pc.combine(grads)))
        if jd is not None:
            timings["torchjd PCGrad"].append(_cpu_time(lambda: jd(J)))
    ref_name = "torchjd PCGrad" if jd is not None else "pcgrad (ours)"
    ref = statistics.median(timings[ref_name])
    for name, ts in timings.items():
        res.add_row(section=f"aggregation only (K=2, P={P})", method=name, cpu_ms=1e3 * statistics.median(ts),
                    ratio_to_reference=statistics.median(ts) / ref, reference=ref_name)
    if jd is not None:
        ours = torch.cat(pc.combine(fresh())[0])
        theirs = jd(J)
        err = float((ours - theirs).abs().max() / theirs.abs().max())
        res.add_claim("our PCGrad equals torchjd's PCGrad on the same two gradients", err < 1e-5, f"max rel diff {err:.2e}")
    else:
        res.add_note("torchjd is not installed: aggregation timings are relative to our own PCGrad")
    G = (J.double() @ J.double().T).numpy()
    w = pcgrad_weights(G)
    res.add_note(f"conflict used for the aggregation timing: cosine {G[0, 1] / (G[0, 0] * G[1, 1]) ** 0.5:.3f}; "
                 f"PCGrad weights {w.round(4).tolist()}")
