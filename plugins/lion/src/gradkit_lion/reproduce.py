"""Reproduction: Lion vs AdamW at CPU scale, each at its own best learning rate.

Paper claim (Sec. 4, language modelling and image classification): with a learning rate 3-10x
smaller and a decoupled weight decay 3-10x larger than AdamW's (so lr·λ stays similar), Lion
matches or beats AdamW while keeping half of AdamW's optimizer state.  The paper compares each
optimizer at its best tuned learning rate; at small batches it expects little or no gain.

Protocol (every setting, quick included):

1. **Tune**: every optimizer is trained at every learning rate of its grid (log spacing ~3.16x) on
   the tuning seed ``seed``; its best learning rate is the grid point with the best final metric.
   A protocol claim checks that each best learning rate lies strictly inside its grid (not at an
   edge, where a wider grid might have found a better one).
2. **Compare**: each optimizer at its best learning rate is trained again on ``eval_seeds`` fresh
   seeds (``seed + 1, ...``; not the tuning seed, so the selection does not flatter anyone) with the
   same data order per seed for both; claims are decided on the paired per-seed differences with a
   noise margin (``MARGIN_K`` standard errors).

Tasks: (a) byte-level TinyGPT on the Python standard library's own source (validation
cross-entropy in nats/byte; warm-up + linear decay, grad clip 1.0); (b) SmallCNN on scikit-learn
digits (test accuracy; linear decay).  Weight decay: AdamW λ = 0.1, Lion λ = 1.0 (10x, the paper's
rule of thumb, fixed across the grid).  ``--full`` adds Signum (Lion with β1 = β2) and the paper's
batch-size claim (Lion's gap to AdamW shrinks as the batch grows, equal samples seen).
"""

from __future__ import annotations

import math
import statistics
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from gradkit_core.results import Result, run_many
from gradkit_support.data import digits, loader, lm_batches, set_seed, split_corpus, stdlib_corpus
from gradkit_support.models import SmallCNN, TinyGPT, state_bytes
from gradkit_support.train import accuracy, lm_eval, train_classifier, train_lm

from .optim import Lion

WEIGHT_DECAY = {"adamw": 0.1, "lion": 1.0, "signum": 1.0}

#: learning-rate grids (log spacing ~3.16x), chosen so that every best lies inside its grid at the
#: setting's budget; the protocol claim re-checks this on every run
GRIDS = {
    "quick": {"lm": {"adamw": [1e-3, 3e-3, 1e-2, 3e-2], "lion": [3e-4, 1e-3, 3e-3, 1e-2]},
              "digits": {"adamw": [1e-3, 3e-3, 1e-2, 3e-2], "lion": [1e-3, 3e-3, 1e-2, 3e-2]}},
    "default": {"lm": {"adamw": [1e-3, 3e-3, 1e-2, 3e-2], "lion": [3e-4, 1e-3, 3e-3, 1e-2]},
                "digits": {"adamw": [1e-3, 3e-3, 1e-2, 3e-2], "lion": [1e-3, 3e-3, 1e-2, 3e-2]}},
    "full": {"lm": {"adamw": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "lion": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]},
             "digits": {"adamw": [1e-3, 3e-3, 1e-2, 3e-2], "lion": [1e-3, 3e-3, 1e-2, 3e-2]}},
}
CONFIGS = {
    "quick": dict(lm=dict(d=64, layers=2, block=64, batch=16, steps=120, warmup=12, eval_batches=4, corpus=200_000),
                  digits=dict(width=16, epochs=10, batch=64), eval_seeds=3),
    "default": dict(lm=dict(d=64, layers=2, block=64, batch=16, steps=300, warmup=30, eval_batches=8,
                            corpus=500_000),
                    digits=dict(width=16, epochs=15, batch=64), eval_seeds=4),
    "full": dict(lm=dict(d=96, layers=3, block=64, batch=32, steps=400, warmup=40, eval_batches=8, corpus=1_000_000),
                 digits=dict(width=16, epochs=20, batch=64), eval_seeds=5),
}
#: claims on paired per-seed differences: mean ± MARGIN_K standard errors
MARGIN_K = 2.0
#: parity margins of the paper's "matches" claims at this scale
LM_PARITY_NATS = 0.05
DIGITS_PARITY = 0.02


def make_optimizer(name: str, params, lr: float):
    """``adamw`` (λ 0.1), ``lion`` (β 0.9/0.99, λ 1.0), ``signum`` (Lion with β1 = β2 = 0.9, λ 1.0)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY["adamw"])
    if name == "lion":
        return Lion(params, lr=lr, weight_decay=WEIGHT_DECAY["lion"], betas=(0.9, 0.99))
    if name == "signum":
        return Lion(params, lr=lr, weight_decay=WEIGHT_DECAY["signum"], betas=(0.9, 0.9))
    raise ValueError(f"unknown optimizer {name!r}; expected 'adamw', 'lion' or 'signum'")


@lru_cache(maxsize=2)
def _corpus(n_bytes: int):
    return split_corpus(stdlib_corpus(n_bytes), 0.1)


@lru_cache(maxsize=1)
def _digits():
    return digits(seed=0)


def lm_run(opt: str, lr: float, seed: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One TinyGPT training run; returns the final validation loss (nats/byte) and the state size."""
    torch.set_num_threads(1)
    train, val = _corpus(cfg["corpus"])
    set_seed(seed)
    model = TinyGPT(block_size=cfg["block"], d_model=cfg["d"], n_layer=cfg["layers"], n_head=4)
    optimizer = make_optimizer(opt, model.parameters(), lr)
    steps, warmup = cfg["steps"], cfg["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 1 - s / steps))
    train_lm(model, optimizer, lm_batches(train, cfg["block"], cfg["batch"], seed=seed), steps, scheduler=sched)
    loss = lm_eval(model, val, cfg["block"], batch_size=16, n_batches=cfg["eval_batches"])
    return {"metric": float(loss) if math.isfinite(loss) else float("inf"), "state_bytes": state_bytes(optimizer)}


def digits_run(opt: str, lr: float, seed: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """One SmallCNN run on digits (linear lr decay to 10 %); returns the final test accuracy."""
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = _digits()
    set_seed(seed)
    model = SmallCNN(width=cfg["width"])
    optimizer = make_optimizer(opt, model.parameters(), lr)
    data = loader(xtr, ytr, batch_size=cfg["batch"], seed=seed)
    epochs = cfg["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.1, 1 - e / epochs))
    for _ in range(epochs):
        train_classifier(model, data, optimizer, epochs=1)
        sched.step()
    return {"metric": accuracy(model, xte, yte), "state_bytes": state_bytes(optimizer)}


def _task_run(task: str, opt: str, lr: float, seed: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    return (lm_run if task == "lm" else digits_run)(opt, lr, seed, cfg)


def best_in_grid(scores: Dict[float, float], higher_is_better: bool):
    """``(best lr, inside)``: the grid point with the best score, and whether it is not at the grid's edge."""
    lrs = sorted(scores)
    best = (max if higher_is_better else min)(lrs, key=lambda lr: scores[lr])
    return best, lrs[0] < best < lrs[-1]


def paired(a: Sequence[float], b: Sequence[float]):
    """Mean and standard error of the paired differences ``a - b``."""
    d = [x - y for x, y in zip(a, b)]
    mean = statistics.mean(d)
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
    return mean, se


def not_worse_by(worse_amounts: Sequence[float], margin: float, k: float = MARGIN_K):
    """Parity claim: ``mean + k·SE < margin`` for per-seed amounts by which the method is worse."""
    mean = statistics.mean(worse_amounts)
    se = statistics.stdev(worse_amounts) / math.sqrt(len(worse_amounts)) if len(worse_amounts) > 1 else float("inf")
    return mean + k * se < margin, mean, se


def _verdict(mean: float, se: float, k: float = MARGIN_K) -> str:
    """What the paired difference (Lion worse by ``mean``) shows at this budget."""
    if mean > k * se:
        return f"Lion worse than AdamW beyond {k:g} SE at this budget"
    if -mean > k * se:
        return f"Lion better than AdamW beyond {k:g} SE at this budget"
    return f"the difference is within {k:g} SE (seed noise) at this budget"


def run(*, quick: bool = False, full: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True,
        jobs: int = 1, resume: bool = False) -> Result:
    if quick and full:
        raise ValueError("choose one of quick and full")
    level = "quick" if quick else "full" if full else "default"
    cfg, grids = CONFIGS[level], GRIDS[level]
    n_eval = cfg["eval_seeds"]
    eval_seeds = [seed + 1 + i for i in range(n_eval)]
    opts = ["adamw", "lion"]
    res = Result("lion", title=f"Lion vs AdamW, each at its best learning rate ({level} setting)")
    res.meta.update(level=level, lm_config=cfg["lm"], digits_config=cfg["digits"], grids=grids,
                    weight_decay=WEIGHT_DECAY, tuning_seed=seed, eval_seeds=eval_seeds, margin_k=MARGIN_K)
    cache = Path(out) / "runs" if out is not None else None
    threads = torch.get_num_threads()
    try:
        return _run(res, cfg, grids, level, seed, eval_seeds, n_eval, opts, full, cache, jobs, resume, progress)
    finally:
        torch.set_num_threads(threads)  # the runs use one thread each


def _run(res, cfg, grids, level, seed, eval_seeds, n_eval, opts, full, cache, jobs, resume, progress) -> Result:

    def many(tasks, desc):
        return run_many(_task_run, tasks, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress,
                        desc=desc)

    # 1. tune: every optimizer x every grid learning rate, on the tuning seed
    tune_tasks = [dict(task=t, opt=o, lr=lr, seed=seed, cfg=cfg[t]) for t in ("lm", "digits") for o in opts
                  for lr in grids[t][o]]
    tuned = many(tune_tasks, "lion tune")
    best: Dict[str, Dict[str, float]] = {"lm": {}, "digits": {}}
    inside_all, edges = True, []
    for t, higher in (("lm", False), ("digits", True)):
        for o in opts:
            scores = {task["lr"]: r["metric"] for task, r in zip(tune_tasks, tuned) if task["task"] == t
                      and task["opt"] == o}
            lr, inside = best_in_grid(scores, higher)
            best[t][o] = lr
            inside_all &= inside
            if not inside:
                edges.append(f"{t}/{o} at {lr:g}")
            res.add_curve(f"{'TinyGPT val loss' if t == 'lm' else 'digits test accuracy'} vs lr (tuning seed)", o,
                          [math.log10(x) for x in sorted(scores)], [scores[x] for x in sorted(scores)])
            for x in sorted(scores):
                res.add_row(stage="tune", task=t, optimizer=o, lr=x, seed=seed, value=round(scores[x], 4),
                            best="*" if x == lr else "")

    # 2. compare: each optimizer at its best lr on fresh seeds (same data order per seed for both)
    extra = ["signum"] if full else []
    cmp_tasks = [dict(task=t, opt=o, lr=best[t][o], seed=s, cfg=cfg[t]) for t in ("lm", "digits") for o in opts
                 for s in eval_seeds]
    cmp_tasks += [dict(task="lm", opt="signum", lr=best["lm"]["lion"], seed=s, cfg=cfg["lm"]) for s in eval_seeds
                  for _ in extra]
    compared = many(cmp_tasks, "lion compare")
    vals: Dict[tuple, List[float]] = {}
    states: Dict[str, int] = {}
    for task, r in zip(cmp_tasks, compared):
        vals.setdefault((task["task"], task["opt"]), []).append(r["metric"])
        if task["task"] == "lm":
            states[task["opt"]] = r["state_bytes"]
    for (t, o), v in vals.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        res.add_row(stage="compare", task=t, optimizer=o, lr=best[t][o if o != "signum" else "lion"],
                    seed=f"{eval_seeds[0]}..{eval_seeds[-1]}", value=f"{statistics.mean(v):.4f} ± {sd:.4f}", best="")

    res.add_claim("(protocol) each optimizer's best learning rate lies strictly inside its grid, on both tasks",
                  inside_all, "best lrs: " + "; ".join(f"{t}: AdamW {best[t]['adamw']:g}, Lion {best[t]['lion']:g}"
                                                       for t in best)
                  + ("" if inside_all else f"; at the edge: {', '.join(edges)}"))
    ratio = states["lion"] / states["adamw"]
    res.add_claim("Lion keeps half of AdamW's optimizer state (measured bytes)", abs(ratio - 0.5) < 1e-3,
                  f"ratio {ratio:.4f} (AdamW also keeps a scalar step per tensor)")
    lion_lm, adamw_lm = vals[("lm", "lion")], vals[("lm", "adamw")]
    mean, se = paired(lion_lm, adamw_lm)
    ok, _, _ = not_worse_by([a - b for a, b in zip(lion_lm, adamw_lm)], LM_PARITY_NATS)
    res.add_claim(
        f"LM: Lion at its best lr matches AdamW at its best lr (paired val-loss difference + {MARGIN_K:g} SE < "
        f"{LM_PARITY_NATS} nats/byte, {n_eval} fresh seeds)", ok,
        f"Lion {statistics.mean(lion_lm):.4f} (lr {best['lm']['lion']:g}) vs AdamW {statistics.mean(adamw_lm):.4f} "
        f"(lr {best['lm']['adamw']:g}): Lion - AdamW = {mean:+.4f} ± {se:.4f} SE; {_verdict(mean, se)}")
    lion_dg, adamw_dg = vals[("digits", "lion")], vals[("digits", "adamw")]
    mean_d, se_d = paired(adamw_dg, lion_dg)
    ok_d, _, _ = not_worse_by([a - b for a, b in zip(adamw_dg, lion_dg)], DIGITS_PARITY)
    res.add_claim(
        f"digits: Lion's test accuracy at its best lr is within {100 * DIGITS_PARITY:g} points of AdamW's at its "
        f"best lr (paired difference + {MARGIN_K:g} SE, {n_eval} fresh seeds)", ok_d,
        f"Lion {statistics.mean(lion_dg):.4f} (lr {best['digits']['lion']:g}) vs AdamW "
        f"{statistics.mean(adamw_dg):.4f} (lr {best['digits']['adamw']:g}): AdamW - Lion = {mean_d:+.4f} ± "
        f"{se_d:.4f} SE; {_verdict(mean_d, se_d)}")
    if full:
        _batch_claim(res, cfg, best["lm"], eval_seeds, many)
    res.add_note(f"budget ({level}): TinyGPT d={cfg['lm']['d']}, {cfg['lm']['layers']} layers, batch "
                 f"{cfg['lm']['batch']} x {cfg['lm']['block']} bytes, {cfg['lm']['steps']} steps; digits SmallCNN width "
                 f"{cfg['digits']['width']}, {cfg['digits']['epochs']} epochs. The paper trains far longer at batch "
                 "256-4096 and expects little or no gain from Lion at small batch; what holds here is about this "
                 "budget only.")
    res.add_note(f"protocol: grid search on tuning seed {seed}, comparison on seeds {eval_seeds} at each optimizer's "
                 f"best lr; weight decay AdamW {WEIGHT_DECAY['adamw']}, Lion {WEIGHT_DECAY['lion']} (10x).")
    return res


def _batch_claim(res: Result, cfg, best_lm: Dict[str, float], seeds: List[int], many) -> None:
    """The paper's batch-size direction: Lion's gap to AdamW shrinks as the batch grows (equal samples)."""
    lm = cfg["lm"]
    samples = lm["batch"] * lm["steps"]
    tasks = []
    for batch in (16, 128):
        steps = samples // batch
        c = dict(lm, batch=batch, steps=steps, warmup=max(1, steps // 10))
        tasks += [dict(task="lm", opt=o, lr=best_lm[o], seed=s, cfg=c) for o in ("adamw", "lion") for s in seeds]
    got = many(tasks, "lion batch sweep")
    gap: Dict[int, List[float]] = {16: [], 128: []}
    by = {(t["cfg"]["batch"], t["opt"], t["seed"]): r["metric"] for t, r in zip(tasks, got)}
    for batch in gap:
        gap[batch] = [by[(batch, "lion", s)] - by[(batch, "adamw", s)] for s in seeds]
        res.add_row(stage="batch sweep", task=f"lm batch {batch}", optimizer="lion - adamw", lr="best",
                    seed=f"{seeds[0]}..{seeds[-1]}", value=f"{statistics.mean(gap[batch]):+.4f}", best="")
    mean, se = paired(gap[16], gap[128])
    res.add_claim(f"LM: Lion's gap to AdamW shrinks from batch 16 to batch 128 at equal samples seen (paired over "
                  f"seeds, > {MARGIN_K:g} SE)", mean > MARGIN_K * se and mean > 0,
                  f"gap {statistics.mean(gap[16]):+.4f} at batch 16, {statistics.mean(gap[128]):+.4f} at batch 128; "
                  f"shrink {mean:+.4f} ± {se:.4f} SE")
