"""Reproduction: PRS vs binary reward; GRPO vs DAPO-style dynamic sampling vs VSPO (with and without the
value-smoothing clip), at equal rollouts, each arm at its best setting of a grid.

Environment: :class:`gradkit_vspo.env.ToolKB` (60 entities x 4 attributes, hidden KB, ``lookup`` tool, answer
tags, plus 80 2-hop arithmetic questions ``sum E1 E2 A`` that need two lookups and an addition; 25% of each kind
held out).  Policy: the support package's tiny GPT (2 layers, d=64) over the environment's word vocabulary,
SFT'd (400 Adam steps) on 200 noisy demonstrations (30% noise) — the SFT-only arm is every arm's point at 0
rollouts.  RL: G=8, 16 prompts per iteration, Adam, one gradient step per batch; every arm stops after the same
number of episodes, refill rollouts included.  Held-out greedy exact match (all, 1-hop, 2-hop) and format-valid
rate are measured every ``eval_every`` episodes.

Tuning: each arm's Adam lr grid is scored on the tuning seed ``seed`` by held-out EM AUC (``vspo+vs+prs``: the
lr grid at the middle kappa, then the other kappas at its best lr — a coordinate search; kappa = 0 is VSPO without
smoothing, since the +-3 advantage clip never binds for G = 8, where |A| <= (G-1)/sqrt(G) = 2.47); arms are compared
at their best on fresh seeds ``seed+1..``; a protocol claim checks that no best lies at a grid edge.

Curve smoothness ("roughness") of a run = the standard deviation of the changes of held-out EM between
consecutive evaluations (lower = smoother); also reported: the standard deviation of the per-step gradient norm.

Claims (paired over seeds: mean difference > MARGIN_K standard errors; an exact tie fails):
  1. protocol (every best inside its grid);  2-3. PRS > binary (format-valid AUC, EM AUC);
  4-5. VSPO (refill only) final EM > GRPO, > DAPO;  6-7. VSPO with the value-smoothing clip (the paper's full
  method) final EM > GRPO, > DAPO;  8. the value-smoothing clip raises VSPO's final EM;
  9. it makes VSPO's EM curve smoother;  10. VSPO's curve is smoother than GRPO's (the brief's "smoother curves").
A mechanism note (not a claim, it holds by construction): VSPO trains on fewer zero-advantage groups than GRPO.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional

from gradkit_core.results import Result, run_many

MARGIN_K = 2.0
SFT_STEPS = 400
# arm -> (mode, reward, uses the value-smoothing clip)
ARMS = {"grpo+binary": ("grpo", "binary", False), "grpo+prs": ("grpo", "prs", False),
        "dapo+prs": ("dapo", "prs", False), "vspo+prs": ("vspo", "prs", False),
        "vspo+vs+prs": ("vspo", "prs", True)}
CONFIGS = {
    "quick": dict(seeds=5, budget=128 * 24, eval_every=128 * 2, lrs=[3e-4, 1e-3, 3e-3, 1e-2], kappas=[0.0, 0.25, 0.5, 0.75]),
    "default": dict(seeds=8, budget=128 * 48, eval_every=128 * 4, lrs=[3e-4, 1e-3, 3e-3, 1e-2], kappas=[0.0, 0.25, 0.5, 0.75]),
    "full": dict(seeds=10, budget=128 * 120, eval_every=128 * 8, lrs=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                 kappas=[0.0, 0.1, 0.25, 0.5, 0.75, 0.9]),
}


def run_arm(arm: str, seed: int, budget: int, eval_every: int, lr: float = 1e-3,
            kappa: Optional[float] = None) -> Dict[str, Any]:
    import torch
    torch.set_num_threads(1)
    from .env import ToolKB, make_policy, sft
    from .rewards import binary, prs
    from .trainer import VSPOTrainer
    mode, rew, vs = ARMS[arm]
    if vs != (kappa is not None):
        raise ValueError(f"arm {arm!r}: kappa must be {'given' if vs else 'None'}, got {kappa!r}")
    env = ToolKB(seed=seed)
    model = make_policy(env, seed=seed)
    sft(model, env, seed=seed, steps=SFT_STEPS)
    tr = VSPOTrainer(model, mode=mode, reward=prs() if rew == "prs" else binary(), seed=seed, lr=lr,
                     value_smoothing=kappa)
    return tr.fit(env, rollout_budget=budget, eval_every=eval_every)


def _auc(y: List[float]) -> float:
    return sum(y) / len(y)


def roughness(y: List[float]) -> float:
    """Standard deviation of the changes between consecutive points of a curve (lower = smoother)."""
    d = [b - a for a, b in zip(y, y[1:])]
    return statistics.stdev(d) if len(d) > 1 else 0.0


def _finite_sd(xs: List[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return statistics.stdev(xs) if len(xs) > 1 else float("nan")


def _paired(a: List[float], b: List[float]):
    d = [x - y for x, y in zip(a, b)]
    m = statistics.mean(d)
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
    return m, se, (m > 0 and m > MARGIN_K * se)


def _best(cands):
    """The task of highest held-out EM AUC among ``(task, result)`` pairs; ties go to the smaller lr."""
    return max(cands, key=lambda c: (_auc(c[1]["em"]), -c[0]["lr"]))[0]


def run(*, quick: bool = False, full: bool = False, seed: int = 0, out=None, progress: bool = True,
        jobs: int = 1, resume: bool = False) -> Result:
    cfg = CONFIGS["full" if full else "quick" if quick else "default"]
    seeds = [seed + 1 + i for i in range(cfg["seeds"])]  # evaluation seeds: not the tuning seed
    common = dict(budget=cfg["budget"], eval_every=cfg["eval_every"])
    cache = Path(out) / "runs" if out else None
    k_mid = cfg["kappas"][len(cfg["kappas"]) // 2]
    tune = [dict(arm=a, seed=seed, lr=lr, **({"kappa": k_mid} if ARMS[a][2] else {}), **common)
            for a in ARMS for lr in cfg["lrs"]]
    tuned = run_many(run_arm, tune, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress, desc="vspo lr grid")
    best: Dict[str, Dict[str, Any]] = {}
    for a in ARMS:
        t = _best([(t, r) for t, r in zip(tune, tuned) if t["arm"] == a])
        best[a] = {k: t[k] for k in ("lr", "kappa") if k in t}
    tune2 = [dict(arm=a, seed=seed, lr=best[a]["lr"], kappa=k, **common)
             for a in ARMS if ARMS[a][2] for k in cfg["kappas"] if k != k_mid]
    tuned2 = run_many(run_arm, tune2, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress, desc="vspo kappa grid")
    for a in ARMS:
        if ARMS[a][2]:
            cands = [(t, r) for t, r in zip(tune + tune2, tuned + tuned2) if t["arm"] == a and t["lr"] == best[a]["lr"]]
            t = _best(cands)
            best[a] = {"lr": t["lr"], "kappa": t["kappa"]}
    tasks = [dict(arm=a, seed=s, **best[a], **common) for a in ARMS for s in seeds]
    res_list = run_many(run_arm, tasks, jobs=jobs, cache_dir=cache, resume=resume, progress_bar=progress, desc="vspo runs")
    runs = {(t["arm"], t["seed"]): r for t, r in zip(tasks, res_list)}
    res = Result(name="vspo", title="PRS + VSPO on a synthetic tool-calling KB task with 2-hop questions (tiny GPT, CPU)")
    res.meta.update(cfg=cfg, seeds=seeds, tuning_seed=seed, best=best, margin_k=MARGIN_K)

    def inside(v, grid):
        return grid[0] < v < grid[-1]

    res.add_claim("protocol: every arm's best setting (held-out EM AUC on the tuning seed) lies inside its grid",
                  all(inside(best[a]["lr"], cfg["lrs"]) and ("kappa" not in best[a] or inside(best[a]["kappa"], cfg["kappas"]))
                      for a in ARMS), f"lr grid {cfg['lrs']}, kappa grid {cfg['kappas']}, best {best}")
    for arm in ARMS:
        hs = [runs[(arm, s)] for s in seeds]
        xs = hs[0]["rollouts"]
        em = [statistics.mean(h["em"][i] for h in hs) for i in range(len(xs))]
        fv = [statistics.mean(h["format_valid"][i] for h in hs) for i in range(len(xs))]
        res.add_curve("held-out EM vs rollouts", arm, xs, em)
        res.add_curve("held-out 2-hop EM vs rollouts", arm, xs,
                      [statistics.mean(h["em_2hop"][i] for h in hs) for i in range(len(xs))])
        res.add_curve("format-valid vs rollouts", arm, xs, fv)
        res.add_row(arm=arm, **{k: v for k, v in best[arm].items()}, sft_em=round(em[0], 3), final_em=round(em[-1], 3),
                    final_em_sd=round(statistics.stdev([h["em"][-1] for h in hs]), 3),
                    final_em_1hop=round(statistics.mean(h["em_1hop"][-1] for h in hs), 3),
                    final_em_2hop=round(statistics.mean(h["em_2hop"][-1] for h in hs), 3),
                    em_auc=round(_auc(em), 3), format_valid_auc=round(_auc(fv), 3),
                    em_roughness=round(statistics.mean(roughness(h["em"]) for h in hs), 4),
                    grad_norm_sd=round(statistics.mean(_finite_sd(h["grad_norm"]) for h in hs), 3),
                    zero_adv_frac_sampled=round(statistics.mean(_auc(h["zero_adv_frac"]) for h in hs), 3),
                    zero_adv_frac_trained=round(statistics.mean(_auc(h["kept_zero_frac"]) for h in hs), 3))

    def per_seed(arm, f):
        return [f(runs[(arm, s)]) for s in seeds]

    def claim(text, a, b, f):
        m, se, ok = _paired(per_seed(a, f), per_seed(b, f))
        res.add_claim(text, ok, f"paired mean diff {m:+.3f} ± {se:.3f} (SE, {len(seeds)} seeds, margin {MARGIN_K} SE)")

    final = lambda h: h["em"][-1]  # noqa: E731
    rough = lambda h: -roughness(h["em"])  # noqa: E731  (higher = smoother)
    claim("PRS keeps a higher held-out format-valid rate than the binary 0/1 reward (GRPO, AUC)",
          "grpo+prs", "grpo+binary", lambda h: _auc(h["format_valid"]))
    claim("PRS gives a higher held-out EM than binary over training (GRPO, AUC: rises earlier)",
          "grpo+prs", "grpo+binary", lambda h: _auc(h["em"]))
    zm, zse, _ = _paired(per_seed("grpo+prs", lambda h: _auc(h["kept_zero_frac"])),
                         per_seed("vspo+prs", lambda h: _auc(h["kept_zero_frac"])))
    res.add_note(f"mechanism check, not a claim (VSPO replaces zero-advantage groups by construction): GRPO trains on "
                 f"{zm:+.3f} ± {zse:.3f} (SE) more zero-advantage groups than VSPO (fraction, AUC over training)")
    claim("VSPO (refill only) reaches a higher final held-out EM than GRPO at equal rollouts", "vspo+prs", "grpo+prs", final)
    claim("VSPO (refill only) reaches a higher final held-out EM than DAPO at equal rollouts", "vspo+prs", "dapo+prs", final)
    claim("VSPO with the value-smoothing clip reaches a higher final held-out EM than GRPO", "vspo+vs+prs", "grpo+prs", final)
    claim("VSPO with the value-smoothing clip reaches a higher final held-out EM than DAPO", "vspo+vs+prs", "dapo+prs", final)
    claim("the value-smoothing clip raises VSPO's final held-out EM", "vspo+vs+prs", "vspo+prs", final)
    claim("the value-smoothing clip makes VSPO's held-out EM curve smoother (sd of EM changes between evaluations)",
          "vspo+vs+prs", "vspo+prs", rough)
    claim("VSPO's held-out EM curve is smoother than GRPO's (sd of EM changes between evaluations)",
          "vspo+prs", "grpo+prs", rough)
    res.add_note("Policy: tiny GPT (support package) over a word vocabulary, SFT on 200 noisy demos; the SmolLM2 code path "
                 "is exercised by `python -m gradkit_vspo.llm_run`, not here. Long-form LLM-judge rewards are not reproduced. Task value "
                 "and the value-smoothing clip are reconstructions (the paper's method text was not available).")
    return res
