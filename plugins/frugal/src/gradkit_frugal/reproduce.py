"""Reproduction: FRUGAL vs AdamW, GaLore-style, BAdam-style and signSGD on the tiny GPT at CPU scale.

Paper claim (Sec. 5, LLaMA pre-training on C4): FRUGAL with density ρ = 0.25 comes within a few tenths of
perplexity of full AdamW and beats GaLore and BAdam at the same optimizer-state budget; even ρ = 0 (every
Linear weight inside the blocks on signSGD, only embeddings/norms/head on AdamW) beats GaLore and BAdam.
Expected order: AdamW ≲ FRUGAL(0.25) < FRUGAL(0) < GaLore ≈ BAdam.

Here: byte-level TinyGPT (gradkit_support) on the Python standard library's own source, 90/10 split, every
optimizer with the same seeds and data order, cosine schedule with warm-up and gradient clipping; the subspace
is refreshed every ``update_gap = steps/10`` steps so ~10 switches happen, as in the paper.  **Every method is
compared at its own best learning rate**: a ×2 grid around a starting value, widened while the best mean
validation loss (over the seeds) sits at an edge of the grid, so the chosen lr is always an interior point.
Claims are decided over seeds on paired differences (same seed = same init and data order) with a noise
margin of ``K_SE`` standard errors; an exact tie never passes.
Metrics: validation cross-entropy (nats/byte) at equal steps and optimizer-state bytes (time-averaged and peak).
"""

from __future__ import annotations

import math
import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from gradkit_core.results import Result, run_many
from gradkit_support.data import lm_batches, set_seed, split_corpus, stdlib_corpus
from gradkit_support.models import TinyGPT
from gradkit_support.train import lm_eval, train_lm

from .optim import FRUGAL, SignSGD, badam_style, frugal_param_groups, galore_style

WD = 0.0
#: starting centre of every method's lr grid (the grid is widened by ×2 steps until its best point is interior)
#: (centred on the best points `gradkit reproduce frugal --quick` found from a 2e-3 start, so that the quick run
#: needs no widening round; the default and full runs widen the grid where their best lies elsewhere)
LR_CENTER = {"adamw": 8e-3, "frugal-0.25": 4e-3, "frugal-0.25-column": 4e-3, "frugal-0": 8e-3,
             "galore-style-0.25": 8e-3, "badam-style-0.25": 2e-3, "signsgd": 8e-4}
GRID_FACTOR = 2.0
MAX_GRID = 7
#: a claim "A beats B" holds when the mean paired difference exceeds K_SE standard errors (and is > 0)
K_SE = 2.0


def _make(name: str, model: torch.nn.Module, lr: float, gap: int, seed: int) -> torch.optim.Optimizer:
    groups = frugal_param_groups(model, weight_decay=WD)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WD)
    if name == "frugal-0.25":
        return FRUGAL(groups, lr=lr, density=0.25, update_gap=gap, proj_type="block", state_free="sign_sgd", seed=seed)
    if name == "frugal-0.25-column":
        return FRUGAL(groups, lr=lr, density=0.25, update_gap=gap, proj_type="column", state_free="sign_sgd", seed=seed)
    if name == "frugal-0":
        return FRUGAL(groups, lr=lr, density=0.0, update_gap=gap, state_free="sign_sgd", seed=seed)
    if name == "galore-style-0.25":
        return galore_style(groups, lr=lr, density=0.25, update_gap=gap, seed=seed)
    if name == "badam-style-0.25":
        return badam_style(groups, lr=lr, density=0.25, update_gap=gap, seed=seed)
    if name == "signsgd":
        return SignSGD(model.parameters(), lr=lr, weight_decay=WD)
    raise ValueError(f"unknown optimizer {name!r}")


def _projectable_ids(model: torch.nn.Module) -> set:
    return {id(p) for g in frugal_param_groups(model) if g["projectable"] for _, p in g["params"]}


def _projectable_state_bytes(opt: torch.optim.Optimizer, ids: set) -> int:
    total = 0
    for p, st in opt.state.items():
        if id(p) in ids:
            total += sum(v.numel() * v.element_size() for k, v in st.items() if isinstance(v, torch.Tensor) and k != "step")
    return total


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    if isinstance(opt, FRUGAL):
        return opt.state_bytes()
    # moments and projectors; torch's scalar 'step' tensors are left out
    return sum(v.numel() * v.element_size() for st in opt.state.values() for k, v in st.items()
               if isinstance(v, torch.Tensor) and k != "step")


@lru_cache(maxsize=2)
def _data(corpus: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return split_corpus(stdlib_corpus(corpus), 0.1)


def train_one(name: str, lr: float, seed: int, cfg: Dict) -> Dict:
    """One training run (module level, so :func:`gradkit_core.results.run_many` can run it in a worker)."""
    torch.set_num_threads(1)  # the machine is shared: one thread avoids OpenMP spin-waiting under contention
    train, val = _data(cfg["corpus"])
    set_seed(seed)
    model = TinyGPT(block_size=cfg["block"], d_model=cfg["d"], n_layer=cfg["layers"], n_head=4)
    opt = _make(name, model, lr, cfg["gap"], seed)
    warm, steps = cfg["warmup"], cfg["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    )
    proj_ids = _projectable_ids(model)
    track = {"peak": 0, "sum": 0, "n": 0, "proj_sum": 0}

    def track_state(_step):
        b = _state_bytes(opt)
        track["peak"] = max(track["peak"], b)
        track["sum"] += b
        track["proj_sum"] += _projectable_state_bytes(opt, proj_ids)
        track["n"] += 1

    t0 = time.process_time()
    xs, ys = train_lm(model, opt, lm_batches(train, cfg["block"], cfg["batch"], seed=seed), steps, scheduler=sched,
                      eval_every=cfg["eval_every"], on_step=track_state,
                      eval_fn=lambda m: lm_eval(m, val, cfg["block"], batch_size=16, n_batches=cfg["eval_batches"]))
    n = max(1, track["n"])
    return dict(val_loss=float(ys[-1]), xs=[float(x) for x in xs], ys=[float(y) for y in ys],
                peak_state=track["peak"], mean_state=track["sum"] / n, mean_proj_state=track["proj_sum"] / n,
                cpu_s=time.process_time() - t0, params=model.num_params())


def _paired(a: List[float], b: List[float]) -> Tuple[float, float]:
    """Mean and standard error of the paired differences ``a - b``."""
    d = [x - y for x, y in zip(a, b)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
    return statistics.mean(d), se


def _grid(center: float, k: int) -> List[float]:
    return [center * GRID_FACTOR ** i for i in range(-k, k + 1)]


def run(*, quick: bool = False, full: bool = False, out: Optional[Path] = None, seed: int = 0,
        progress: bool = True, jobs: int = 1, resume: bool = False) -> Result:
    """``quick``: a few CPU minutes; default: ~15 CPU minutes; ``full``: the brief's 1500 steps at d=128 (hours).

    ``jobs`` runs the (method, lr, seed) trainings in that many processes; with ``out``, every finished run is
    kept under ``out/runs`` and ``resume`` reads them back."""
    if quick:
        cfg = dict(d=64, layers=3, block=64, batch=16, steps=150, warmup=15, gap=15, eval_every=50, eval_batches=4,
                   corpus=300_000)
        names = ["adamw", "frugal-0.25", "frugal-0", "galore-style-0.25", "badam-style-0.25"]
    elif full:
        cfg = dict(d=128, layers=4, block=128, batch=32, steps=1500, warmup=100, gap=150, eval_every=100,
                   eval_batches=16, corpus=3_000_000)
        names = ["adamw", "frugal-0.25", "frugal-0.25-column", "frugal-0", "galore-style-0.25", "badam-style-0.25",
                 "signsgd"]
    else:
        cfg = dict(d=64, layers=3, block=64, batch=16, steps=400, warmup=30, gap=40, eval_every=100, eval_batches=8,
                   corpus=1_000_000)
        names = ["adamw", "frugal-0.25", "frugal-0.25-column", "frugal-0", "galore-style-0.25", "badam-style-0.25",
                 "signsgd"]
    seeds = [seed, seed + 1, seed + 2]
    res = Result("frugal", title="FRUGAL vs AdamW / GaLore-style / BAdam-style / signSGD on the tiny GPT, "
                                 "each at its best lr")
    res.meta.update(config=cfg, weight_decay=WD, seeds=seeds, lr_center=LR_CENTER, grid_factor=GRID_FACTOR,
                    k_se=K_SE)
    cache = None if out is None else Path(out) / "runs"
    grids = {n: _grid(LR_CENTER[n], 1) for n in names}
    done: Dict[Tuple[str, float, int], Dict] = {}
    for _round in range(MAX_GRID):
        todo = [dict(name=n, lr=lr, seed=s) for n in names for lr in grids[n] for s in seeds
                if (n, lr, s) not in done]
        if todo:
            outs = run_many(train_one, todo, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress,
                            desc=f"frugal lr grid (round {_round + 1})", shared=dict(cfg=cfg))
            for t, o in zip(todo, outs):
                done[(t["name"], t["lr"], t["seed"])] = o
        widened = False
        for n in names:
            means = [statistics.mean(done[(n, lr, s)]["val_loss"] for s in seeds) for lr in grids[n]]
            best = min(range(len(means)), key=means.__getitem__)
            if len(grids[n]) >= MAX_GRID:
                continue
            if best == 0:
                grids[n].insert(0, grids[n][0] / GRID_FACTOR)
                widened = True
            elif best == len(means) - 1:
                grids[n].append(grids[n][-1] * GRID_FACTOR)
                widened = True
        if not widened:
            break

    best_lr: Dict[str, float] = {}
    at_edge = []
    for n in names:
        means = {lr: statistics.mean(done[(n, lr, s)]["val_loss"] for s in seeds) for lr in grids[n]}
        best_lr[n] = min(means, key=means.get)
        if best_lr[n] in (grids[n][0], grids[n][-1]):
            at_edge.append(n)
        res.meta.setdefault("lr_grid_mean_val_loss", {})[n] = {f"{lr:g}": round(means[lr], 4) for lr in grids[n]}
    runs = {n: [done[(n, best_lr[n], s)] for s in seeds] for n in names}
    v = {n: [r["val_loss"] for r in runs[n]] for n in names}
    adam_mean = statistics.mean(r["mean_state"] for r in runs["adamw"])
    adam_proj = statistics.mean(r["mean_proj_state"] for r in runs["adamw"])
    for n in names:
        rr = runs[n]
        mean_state = statistics.mean(r["mean_state"] for r in rr)
        grid = " ".join(f"{lr:g}" + ("*" if lr == best_lr[n] else "") for lr in grids[n])
        res.add_row(optimizer=n, lr_grid=grid, best_lr=best_lr[n], steps=cfg["steps"],
                    val_loss_mean=round(statistics.mean(v[n]), 4),
                    val_loss_sd=round(statistics.stdev(v[n]), 4),
                    val_ppl=round(math.exp(statistics.mean(v[n])), 3),
                    state_vs_adamw_mean=round(mean_state / adam_mean, 3),
                    state_vs_adamw_peak=round(max(r["peak_state"] for r in rr) / adam_mean, 3),
                    cpu_s=round(statistics.mean(r["cpu_s"] for r in rr), 1))
        res.add_curve("validation loss (nats/byte), seed 0, best lr", n, rr[0]["xs"], rr[0]["ys"])

    def beats(a: str, b: str) -> Tuple[bool, str]:
        m, se = _paired(v[b], v[a])  # > 0 when a is better (lower loss)
        return m > 0 and m > K_SE * se, f"{b} - {a} = {m:+.4f} ± {se:.4f} (SE over {len(seeds)} seeds)"

    res.add_claim("every method's best lr is an interior point of its grid", not at_edge,
                  "at the edge: " + ", ".join(at_edge) if at_edge else
                  "; ".join(f"{n} {best_lr[n]:g}" for n in names))
    margin = 0.15 if quick else 0.1
    m, se = _paired(v["frugal-0.25"], v["adamw"])
    res.add_claim(f"FRUGAL(rho=0.25) is within {margin} nats of full AdamW (mean difference + {K_SE:g} SE)",
                  m + K_SE * se < margin, f"FRUGAL - AdamW = {m:+.4f} ± {se:.4f}")
    for who in ("frugal-0.25", "frugal-0"):
        label = "FRUGAL(rho=0.25)" if who == "frugal-0.25" else "FRUGAL(rho=0) (signSGD on every block Linear)"
        for base, bname in (("badam-style-0.25", "BAdam-style"), ("galore-style-0.25", "GaLore-style")):
            ok, detail = beats(who, base)
            res.add_claim(f"{label} beats {bname} (rho=0.25) by more than {K_SE:g} SE", ok, detail)
    ok, detail = beats("frugal-0.25", "frugal-0")
    res.add_claim(f"FRUGAL(rho=0.25) beats FRUGAL(rho=0) by more than {K_SE:g} SE (state-full coordinates help)",
                  ok, detail)
    ratio = statistics.mean(r["mean_state"] for r in runs["frugal-0.25"]) / adam_mean
    peak = max(r["peak_state"] for r in runs["frugal-0.25"]) / adam_mean
    res.add_claim("FRUGAL(rho=0.25) holds <= 0.4x AdamW's optimizer-state memory (time average)", ratio <= 0.4,
                  f"{ratio:.3f}x on average, {peak:.3f}x at the peak (round(rho*L) blocks of unequal size)")
    proj_ratio = statistics.mean(r["mean_proj_state"] for r in runs["frugal-0.25"]) / max(1.0, adam_proj)
    res.add_claim("on the projectable (block Linear) weights FRUGAL keeps rho=0.25 of AdamW's state (time average, "
                  "+-0.06)", abs(proj_ratio - 0.25) <= 0.06,
                  f"{proj_ratio:.3f}x (round(0.25*L) whole matrices drawn uniformly)")
    res.add_note(f"TinyGPT with {runs['adamw'][0]['params']} parameters; {cfg['steps']} steps of batch {cfg['batch']}"
                 f" x {cfg['block']} bytes; update_gap={cfg['gap']}; seeds {seeds}; lr grid x{GRID_FACTOR:g} around "
                 f"{LR_CENTER}, widened until the best mean is interior; cosine schedule with warm-up, grad clipping "
                 "1.0. The lr is chosen on the same seeds that decide the claims.")
    res.add_note("paper scale is LLaMA 60M-1B on C4 for 10k+ steps; this is a CPU-scale check of the direction")
    return res
