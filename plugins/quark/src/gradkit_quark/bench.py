"""Benchmark: RFN and Tri-Factor against ``trl``'s own multi-reward GRPO (``GRPOTrainer`` 1.16), side by side.

Everything runs inside trl's ``GRPOTrainer`` on the quark task (:mod:`gradkit_quark.trl_peer`: a tiny Llama
policy built from a config, completions of 8 task tokens, the five rewards of mismatched scales), so the arms
differ only in how the rewards are combined:

* ``trl-sum``: five reward functions, ``reward_weights`` all 1 (trl's default ``sum_then_normalize``);
* ``trl-weights``: the same with hand-set ``reward_weights`` (one over each reward's range);
* ``trl-norm-then-sum``: trl's ``multi_objective_aggregation="normalize_then_sum"`` (each reward normalized
  within its group, then summed and batch-normalized: trl's own answer to mismatched scales);
* ``rfn`` / ``tri-factor``: one reward function returning gradkit's aggregate (RFN statistics from 512 rollouts
  of the initial = reference policy); trl group-normalizes that single column as usual.

Each arm is tuned on a learning-rate grid (tuning seeds, best by the mean final worst-objective progress), then
run at its best on fresh seeds.  Reported, as ratios to the best trl arm: the final worst-objective progress
(higher is better) and the CPU time per training step (``time.process_time`` of the whole trainer step; the
aggregator's own share is listed separately).  A parity check drives trl's ``_generate_and_score_completions``
with five reward functions returning a fixed reward matrix and compares the advantages it returns with gradkit's
``group-norm`` + fixed weights (``group_std="unbiased"``, ``eps=1e-4``, trl's conventions).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import warnings
from typing import Any, Dict, List

from gradkit_core.results import Result, run_many

from .reproduce import tune_learning_rates
from .rewards import VERSION

ARMS = ("trl-sum", "trl-weights", "trl-norm-then-sum", "rfn", "tri-factor")
TRL_ARMS = ARMS[:3]
CONFIGS = {
    "quick": dict(steps=100, groups=4, lr_grid=(3e-4, 1e-3, 3e-3), tune_seeds=1, eval_seeds=4),
    "default": dict(steps=150, groups=8, lr_grid=(3e-4, 1e-3, 3e-3, 1e-2), tune_seeds=2, eval_seeds=6),
    "full": dict(steps=300, groups=8, lr_grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2), tune_seeds=3, eval_seeds=12),
}
GROUP_SIZE = 8
MARGIN_K = 2.0


def train_arm(arm: str, lr: float, seed: int, steps: int, groups: int, n_eval: int = 2048) -> Dict[str, Any]:
    """One GRPOTrainer run of ``arm``; final per-objective progress and CPU time per step."""
    import torch

    from . import trl_peer as tp
    from .task import FIXED_WEIGHTS, OBJECTIVES, make_aggregator, rewards

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model = tp.policy(seed)
    kw: Dict[str, Any] = {}
    agg_time = None
    if arm in TRL_ARMS:
        cols = tp.RewardColumns(seed)
        funcs = cols.functions()
        kw["reward_weights"] = FIXED_WEIGHTS if arm == "trl-weights" else [1.0] * len(OBJECTIVES)
        if arm == "trl-norm-then-sum":
            kw["aggregation"] = "normalize_then_sum"
    elif arm in ("rfn", "tri-factor"):
        agg = make_aggregator(arm, GROUP_SIZE)
        ref = tp.sample_policy(model, 512, seed + 10_000)          # the frozen reference = initial policy
        agg.fit_reference(rewards(ref, torch.Generator().manual_seed(seed + 20_000)))
        ar = tp.AggregatedReward(agg, seed)
        funcs = [ar]
    else:
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    with tempfile.TemporaryDirectory() as d:
        tr = tp.trainer(model, funcs, lr=lr, steps=steps, groups=groups, group_size=GROUP_SIZE, seed=seed,
                        out_dir=d, **kw)
        t0 = time.process_time()
        tr.train()
        cpu = time.process_time() - t0
    if arm not in TRL_ARMS:
        agg_time = ar.seconds
    r = rewards(tp.sample_policy(model, n_eval, seed + 30_000), torch.Generator().manual_seed(seed + 40_000))
    prog = tp.progress(r)
    return {"progress": prog.tolist(), "worst": float(prog.min()), "worst_objective": OBJECTIVES[int(prog.argmin())],
            "violation": float((r[:, 1] < 0).double().mean()), "cpu_per_step": cpu / steps,
            "agg_per_step": None if agg_time is None else agg_time / steps}


def parity(seed: int = 0) -> float:
    """Largest |difference| between trl's advantages (from ``_generate_and_score_completions`` with five reward
    functions and ``reward_weights``) and gradkit's ``group-norm`` + fixed weights on the same reward matrix."""
    import torch

    from . import trl_peer as tp
    from .rewards import MultiObjectiveReward
    from .task import FIXED_WEIGHTS, OBJECTIVES

    warnings.filterwarnings("ignore")
    groups = 4
    n = groups * GROUP_SIZE
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 50.0, 1.0, 100.0, 1.0], dtype=torch.float64)
    r = (torch.randn(n, 5, generator=gen, dtype=torch.float64) * scale).round(decimals=3)
    r[GROUP_SIZE:2 * GROUP_SIZE] = r[GROUP_SIZE]                       # a group with zero spread

    def column(j):
        def f(prompts, completions, completion_ids, **kw):
            return r[:, j].tolist()
        f.__name__ = OBJECTIVES[j]
        return f

    with tempfile.TemporaryDirectory() as d:
        tr = tp.trainer(tp.policy(seed), [column(j) for j in range(5)], lr=1e-3, steps=1, groups=groups,
                        group_size=GROUP_SIZE, seed=seed, out_dir=d, reward_weights=FIXED_WEIGHTS)
        tr.model.train()
        adv_trl = tr._generate_and_score_completions([{"prompt": "Q"}] * n)["advantages"].double()
    ours = MultiObjectiveReward(OBJECTIVES, normalizer="raw", weighting="fixed", weights=FIXED_WEIGHTS,
                               group_size=GROUP_SIZE, group_std="unbiased", eps=1e-4)(r)
    # trl combines in float32: differences of order 1e-7 are its rounding
    return float((adv_trl - ours).abs().max())


def _mean_se(xs):
    m = statistics.mean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("inf"))


def run(*, quick: bool = False, full: bool = False, seed: int = 0, out=None, progress: bool = True, jobs: int = 1,
        resume: bool = False) -> Result:
    from .task import OBJECTIVES

    mode = "full" if full else "quick" if quick else "default"
    cfg = CONFIGS[mode]
    cache = (out / "runs") if out is not None else None
    res = Result("quark", title=f"Quark RFN / Tri-Factor vs trl 1.16 GRPOTrainer multi-reward aggregation "
                                f"({mode}, {VERSION})")
    res.meta.update(mode=mode, version=VERSION, group_size=GROUP_SIZE, arms=list(ARMS),
                    **{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()})

    err = parity(seed)
    res.add_claim("parity: gradkit's group-norm + fixed weights (unbiased group std, eps 1e-4) equals the advantages "
                  "of trl's GRPOTrainer._generate_and_score_completions (five reward functions, reward_weights) on "
                  "the same reward matrix, to 1e-5", err < 1e-5, f"max |diff| = {err:.2e}")

    grid = cfg["lr_grid"]
    best = tune_learning_rates(res, train_arm, ARMS, grid, arm_key="arm",
                               extra=dict(steps=cfg["steps"], groups=cfg["groups"]), seed=seed,
                               tune_seeds=cfg["tune_seeds"], jobs=jobs, cache=cache, resume=resume, progress=progress)

    seeds = [seed + 100 + i for i in range(cfg["eval_seeds"])]
    ev = [dict(arm=a, lr=best[a], seed=s, steps=cfg["steps"], groups=cfg["groups"]) for a in ARMS for s in seeds]
    outs = run_many(train_arm, ev, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress, desc="eval")
    by: Dict[str, List[Dict[str, Any]]] = {a: [o for t, o in zip(ev, outs) if t["arm"] == a] for a in ARMS}
    best_trl = max(TRL_ARMS, key=lambda a: statistics.mean(o["worst"] for o in by[a]))
    cpu_ref = statistics.mean(o["cpu_per_step"] for o in by[best_trl])
    for a in ARMS:
        w, se = _mean_se([o["worst"] for o in by[a]])
        names = [o["worst_objective"] for o in by[a]]
        cpu = statistics.mean(o["cpu_per_step"] for o in by[a])
        row: Dict[str, Any] = {"arm": a, "lr": best[a], "worst": f"{w:+.3f}±{se:.3f}",
                               "worst_is": max(set(names), key=names.count)}
        for j, name in enumerate(OBJECTIVES):
            row[f"prog_{name}"] = round(statistics.mean(o["progress"][j] for o in by[a]), 3)
        mp, mp_se = _mean_se([statistics.mean(o["progress"]) for o in by[a]])
        row["mean_progress"] = f"{mp:+.3f}±{mp_se:.3f}"
        row["violation"] = round(statistics.mean(o["violation"] for o in by[a]), 4)
        row["cpu_ms_per_step"] = round(1e3 * cpu, 1)
        row[f"cpu_vs_{best_trl}"] = round(cpu / cpu_ref, 3)
        row["aggregator_ms_per_step"] = (None if by[a][0]["agg_per_step"] is None else
                                         round(1e3 * statistics.mean(o["agg_per_step"] for o in by[a]), 3))
        res.add_row(**row)

    def paired(a, b):
        d = [x["worst"] - y["worst"] for x, y in zip(by[a], by[b])]
        m, se = _mean_se(d)
        return m - MARGIN_K * se > 0 and m > 0, m, se

    for a in ("rfn", "tri-factor"):
        ok, m, se = paired(a, best_trl)
        res.add_claim(f"{a}'s worst objective beats trl's best multi-reward arm ({best_trl}) at each one's best lr",
                      ok, f"{a} - {best_trl} = {m:+.3f} ± {se:.3f}")
    ok, m, se = paired("tri-factor", "trl-norm-then-sum")
    res.add_claim("tri-factor's worst objective beats trl's normalize_then_sum (trl's own per-reward normalization)",
                  ok, f"tri-factor - trl-norm-then-sum = {m:+.3f} ± {se:.3f}")
    ratio = {a: statistics.mean(statistics.mean(o["progress"]) for o in by[a]) /
             statistics.mean(statistics.mean(o["progress"]) for o in by[best_trl]) for a in ("rfn", "tri-factor")}
    res.add_note("mean progress over the five objectives, ratio to " + best_trl + ": " +
                 ", ".join(f"{a} {v:.2f}" for a, v in ratio.items()))
    tri_cpu = statistics.mean(o["cpu_per_step"] for o in by["tri-factor"])
    tri_agg = statistics.mean(o["agg_per_step"] for o in by["tri-factor"])
    res.add_note(f"CPU per training step: tri-factor / {best_trl} = {tri_cpu / cpu_ref:.3f}; the Tri-Factor "
                 f"aggregator itself takes {1e3 * tri_agg:.2f} ms per step ({100 * tri_agg / tri_cpu:.1f} % of the "
                 "step); trl's own aggregation is inline in _generate_and_score_completions and is not timed apart")
    res.add_note("policy: 1-layer Llama (hidden 32) built from a config, random init (no download); completions of "
                 "8 task tokens; progress = (mean - uniform reference) / (best alone - reference) per objective")
    return res
