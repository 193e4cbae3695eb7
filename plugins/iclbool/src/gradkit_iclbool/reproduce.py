"""Reproduction: in-context accuracy per position on conjunction, parity and teach-conjunction.

Paper claims (Bhattamishra et al., 2023, Sec. 3-5): transformers trained to learn a Boolean class in
context nearly match the optimal learner on simple classes (conjunctions), stay at chance on parity
(while Gaussian elimination over GF(2) is exact after ~n examples), learn far faster from teaching
sequences, and LSTMs are worse than transformers.

Protocol: for every (task, backbone, seed) a fresh prompt model is meta-trained (Adam, BCE at every x
position, a fresh batch of target functions per step) and evaluated on held-out seeded prompts; the
baselines and optimal learners are scored on the same prompts.  Claims are decided on per-seed values
with a noise margin of ``MARGIN_K`` standard errors (SE over seeds).  The model setting is fixed
(the paper's recipe scaled down), not tuned per method.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from gradkit_core.results import Result, run_many

from .models import PromptModel
from .train import icl_accuracy_curve, learner_curve, train_prompt_model

MARGIN_K = 2.0
#: "nearly matches the optimal learner": late-position gap below this
NEAR_OPTIMAL = 0.05
#: "at chance": late-position accuracy within this of 0.5
CHANCE_BAND = 0.05

CONFIGS = {
    "quick": dict(n_dims=6, n_points=24, n_embd=32, n_layer=2, n_head=4, batch=64, lr=3e-3, warmup=50, n_prompts=512,
                  steps={"conjunction": 600, "parity": 300, "teach_conjunction": 200}, seeds=2,
                  backbones={"conjunction": ["transformer", "lstm"], "parity": ["transformer"],
                             "teach_conjunction": ["transformer"]}),
    "default": dict(n_dims=8, n_points=32, n_embd=64, n_layer=2, n_head=4, batch=64, lr=1e-3, n_prompts=512,
                    steps={"conjunction": 800, "parity": 400, "teach_conjunction": 300}, seeds=3,
                    backbones={"conjunction": ["transformer", "lstm"], "parity": ["transformer", "lstm"],
                               "teach_conjunction": ["transformer"]}),
    "full": dict(n_dims=10, n_points=40, n_embd=64, n_layer=3, n_head=4, batch=64, lr=5e-4, n_prompts=1024,
                 steps={"conjunction": 4000, "parity": 4000, "teach_conjunction": 2000}, seeds=3,
                 backbones={"conjunction": ["transformer", "lstm", "linrec"], "parity": ["transformer", "lstm"],
                            "teach_conjunction": ["transformer", "lstm"]}),
}

BASELINES = {
    "conjunction": ["elimination", "nn", "averaging", "least_squares", "null"],
    "parity": ["gf2", "nn", "averaging", "least_squares", "null"],
    "teach_conjunction": ["elimination_monotone", "nn", "averaging", "least_squares", "null"],
}
OPTIMAL = {"conjunction": "elimination", "parity": "gf2", "teach_conjunction": "elimination_monotone"}


def model_run(task: str, backbone: str, seed: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Train one prompt model and return its accuracy curve on the evaluation prompts of ``seed``."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    n_layer = cfg["n_layer"]
    model = PromptModel(cfg["n_dims"], backbone, cfg["n_embd"], n_layer, cfg["n_head"], cfg["n_points"])
    hist = train_prompt_model(model, task, n_dims=cfg["n_dims"], n_points=cfg["n_points"],
                              steps=cfg["steps"][task], batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
                              warmup=cfg.get("warmup", 100))
    curve = icl_accuracy_curve(model, task, n_dims=cfg["n_dims"], n_points=cfg["n_points"],
                               n_prompts=cfg["n_prompts"], seed=_eval_seed(seed))
    tail = hist["loss"][-max(1, len(hist["loss"]) // 10):]
    return {"curve": [float(v) for v in curve], "final_loss": float(sum(tail) / len(tail))}


def _eval_seed(seed: int) -> int:
    return 1000 + seed


def _mean_se(vals: List[float]):
    m = statistics.fmean(vals)
    se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else float("inf")
    return m, se


def late(curve, cfg) -> float:
    """Mean accuracy over the last half of the prompt (positions >= m / 2)."""
    c = curve[cfg["n_points"] // 2:]
    return sum(c) / len(c)


def window(curve, lo: int, hi: int) -> float:
    c = curve[lo:hi]
    return sum(c) / len(c)


def run(*, quick: bool = False, full: bool = False, seed: int = 0, out: Optional[Path] = None, progress: bool = True,
        jobs: int = 1, resume: bool = False) -> Result:
    if quick and full:
        raise ValueError("choose at most one of quick and full")
    level = "quick" if quick else "full" if full else "default"
    cfg = CONFIGS[level]
    seeds = [seed + i for i in range(cfg["seeds"])]
    n, m = cfg["n_dims"], cfg["n_points"]
    res = Result("iclbool", title=f"In-context learning of Boolean functions ({level}: n={n}, m={m}, "
                                  f"{len(seeds)} seeds)")
    res.meta.update(level=level, config={k: v for k, v in cfg.items()}, seeds=seeds, margin_k=MARGIN_K)

    tasks = [dict(task=t, backbone=b, seed=s, cfg=cfg) for t in cfg["backbones"] for b in cfg["backbones"][t]
             for s in seeds]
    cache = Path(out) / "runs" if out is not None else None
    outs = run_many(model_run, tasks, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress,
                    desc="iclbool")
    curves: Dict[tuple, Dict[int, List[float]]] = {}
    for t, o in zip(tasks, outs):
        curves.setdefault((t["task"], t["backbone"]), {})[t["seed"]] = o["curve"]
    for task, learners in BASELINES.items():
        for ln in learners:
            for s in seeds:
                c = learner_curve(ln, task, n_dims=n, n_points=m, n_prompts=cfg["n_prompts"], seed=_eval_seed(s))
                curves.setdefault((task, ln), {})[s] = [float(v) for v in c]

    # table and curves (mean over seeds)
    marks = sorted({1, n // 2, n, min(2 * n, m - 1), m - 1})
    for (task, meth), per in curves.items():
        row = {"task": task, "method": meth}
        mean_curve = [statistics.fmean(per[s][i] for s in seeds) for i in range(m)]
        for p in marks:
            row[f"acc@{p}"] = round(mean_curve[p], 3)
        lm, lse = _mean_se([late(per[s], cfg) for s in seeds])
        row["late_acc"] = round(lm, 3)
        row["late_se"] = round(lse, 3)
        res.add_row(**row)
        res.add_curve(task, meth, list(range(m)), mean_curve)

    def late_vals(task, meth):
        return [late(curves[(task, meth)][s], cfg) for s in seeds]

    def diff_claim(text, a, b, margin=0.0):
        d = [x - y for x, y in zip(a, b)]
        md, se = _mean_se(d)
        res.add_claim(text, md - MARGIN_K * se > margin, f"diff {md:+.3f} ± {se:.3f} SE (need > {margin} + "
                                                         f"{MARGIN_K}·SE)")

    # 1. conjunction: transformer beats the best non-optimal baseline, and is near the optimal learner
    if ("conjunction", "transformer") in curves:
        tr = late_vals("conjunction", "transformer")
        best_b = max(("nn", "averaging", "least_squares"), key=lambda b: statistics.fmean(late_vals("conjunction", b)))
        diff_claim(f"conjunction: transformer > best baseline ({best_b}) over the second half of the prompt",
                   tr, late_vals("conjunction", best_b))
        gap = [o - t for o, t in zip(late_vals("conjunction", "elimination"), tr)]
        mg, sg = _mean_se(gap)
        res.add_claim(f"conjunction: transformer within {NEAR_OPTIMAL} of the elimination learner (second half)",
                      mg + MARGIN_K * sg < NEAR_OPTIMAL, f"gap {mg:+.3f} ± {sg:.3f} SE")
        if ("conjunction", "lstm") in curves:
            diff_claim("conjunction: transformer > LSTM (second half)", tr, late_vals("conjunction", "lstm"))
    # 2. parity: every model at chance, GF(2) elimination exact after 2n examples
    for bb in ("transformer", "lstm"):
        if ("parity", bb) in curves:
            vals = late_vals("parity", bb)
            mv, sv = _mean_se(vals)
            res.add_claim(f"parity (n={n}): {bb} stays at chance (|acc - 0.5| < {CHANCE_BAND}, second half)",
                          abs(mv - 0.5) + MARGIN_K * sv < CHANCE_BAND, f"acc {mv:.3f} ± {sv:.3f} SE")
    g = [window(curves[("parity", "gf2")][s], 2 * n, m) for s in seeds]
    res.add_claim(f"parity: GF(2) elimination ≥ 0.99 from position 2n = {2 * n} on", min(g) >= 0.99,
                  f"min over seeds {min(g):.3f}")
    # 3. teaching sequences: right after the longest possible prefix (n + 1 points) the teach-trained model is
    #    far ahead of the conjunction-trained model at the same positions
    if ("teach_conjunction", "transformer") in curves and ("conjunction", "transformer") in curves:
        lo, hi = n + 1, min(n + 6, m)
        tw = [window(curves[("teach_conjunction", "transformer")][s], lo, hi) for s in seeds]
        cw = [window(curves[("conjunction", "transformer")][s], lo, hi) for s in seeds]
        diff_claim(f"teaching: transformer on teach-conjunction > on conjunction at positions {lo}-{hi - 1}",
                   tw, cw, margin=0.05)
        mt, st = _mean_se(tw)
        res.add_claim(f"teaching: transformer on teach-conjunction ≥ 0.95 at positions {lo}-{hi - 1}",
                      mt - MARGIN_K * st >= 0.95, f"acc {mt:.3f} ± {st:.3f} SE")
    res.add_note("late = mean accuracy over positions >= m/2; optimal learners: elimination (conjunction), "
                 "monotone elimination (teach-conjunction), GF(2) Gaussian elimination (parity)")
    return res
