"""DCG-ME vs PGA-ME vs MAP-Elites at an equal number of evaluations (paper: Fig. 3 / Table 2 direction).

``--quick`` / default: ``gradkit/PointOmni-v0`` (numpy point mass, energy fitness vs distance
descriptor: the omni conflict).  ``--full``: ``gradkit/AntOmni-v0`` at T = 100 with the ±5 box
(the brief's CPU benchmark setting); ``run(full=True, iterations=..., seeds=[...])`` runs a reduced
form of it.  The tasks start every episode from a fixed state (their default, ``fixed_start=True``),
so an evaluation is exact and elites need no re-evaluation.  Every algorithm spends the same number
of evaluated (inserted) offspring per iteration by construction (``batch_sizes``); DCG-ME's extra
actor episodes train the critic only and are reported apart.  Metrics: QD score, coverage, max fitness; for DCG-ME also the distilled actor's
QD score and descriptor error (normalised units) when run at every filled cell's descriptor.

Every claim is a paired difference over seeds (same seed, two algorithms; or, for the distilled
actor, its error at iteration 0 vs at the end) whose mean must exceed ``K_SE`` = 2 standard errors:
strict (an exact tie fails), and undecided -- so not holding -- on a single seed.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from gradkit_core.results import Result, paired_beyond
from gradkit_core.results import progress as _bar

POINT = dict(n_cells=64, n_init_cvt_samples=5000, init_batch=32, ga_batch=16, pg_batch=16, actor_episodes=8,
             policy_hidden=(32, 32), critic_hidden=(128, 128), pg_steps=30, replay_size=100_000)
PRESETS: Dict[str, Dict[str, Any]] = {
    "quick": dict(env="gradkit/PointOmni-v0", env_kwargs={}, iterations=40, seeds=[0, 1, 2], dc_every=5,
                  hp=dict(POINT, critic_steps=100)),
    "default": dict(env="gradkit/PointOmni-v0", env_kwargs={}, iterations=60, seeds=[0, 1], dc_every=10,
                    hp=dict(POINT, critic_steps=200)),
    "full": dict(env="gradkit/AntOmni-v0", env_kwargs=dict(episode_length=100, desc_bound=5.0), iterations=100,
                 seeds=[0, 1, 2], dc_every=25,
                 hp=dict(n_cells=128, n_init_cvt_samples=20_000, init_batch=64, ga_batch=32, pg_batch=32,
                         actor_episodes=16, policy_hidden=(128, 128), critic_hidden=(256, 256), critic_steps=300,
                         pg_steps=150, replay_size=1_000_000)),
}
ALGOS = ("dcg-me", "pga-me", "map-elites")
K_SE = 2.0  #: a claim holds when the mean paired difference over seeds exceeds K_SE standard errors


def add_claims(res: Result, runs: Dict[str, List[Dict[str, Any]]], mean: Dict[str, Dict[str, float]],
               k: float = K_SE) -> None:
    """The reproduction's claims, each a paired difference over seeds beyond ``k`` SE (:func:`paired_beyond`)."""

    def beats(a: str, b: str, key: str, text: str) -> None:
        va = [r["row"][key] for r in runs[a]]
        vb = [r["row"][key] for r in runs[b]]
        ok, how = paired_beyond(va, vb, k)
        res.add_claim(text, ok, f"{np.mean(va):.3f} vs {np.mean(vb):.3f} ({how})")

    beats("dcg-me", "pga-me", "qd_score",
          f"QD score: DCG-ME > PGA-ME ({100 * (mean['dcg-me']['qd_score'] / max(mean['pga-me']['qd_score'], 1e-9) - 1):+.0f}%;"
          " paper: +82% on average)")
    beats("dcg-me", "map-elites", "qd_score", "QD score: DCG-ME > MAP-Elites")
    beats("dcg-me", "pga-me", "coverage", "coverage: DCG-ME > PGA-ME")
    d = runs["dcg-me"]
    first = [r["dc_err"][0] for r in d]
    last = [r["dc_err"][-1] for r in d]
    ok, how = paired_beyond(first, last, k)  # error at iteration 0 above the final error: it fell
    res.add_claim("the distilled actor's descriptor error falls over training", ok,
                  f"{np.mean(first):.3f} at iteration 0 -> {np.mean(last):.3f} at iteration {d[0]['dc_it'][-1]} "
                  f"(normalised units; {how})")


def run_one(algo: str, preset: Dict[str, Any], seed: int, progress: bool = False) -> Dict[str, Any]:
    """One seeded run; returns its final metrics and curves."""
    import torch

    from .algorithm import DCGME, MAPElites, PGAME

    torch.set_num_threads(1)
    klass = {"dcg-me": DCGME, "pga-me": PGAME, "map-elites": MAPElites}[algo]
    agent = klass(preset["env"], seed=seed, env_kwargs=preset["env_kwargs"], **preset["hp"])
    t0, c0 = time.perf_counter(), time.process_time()
    evals, qd, dc_it, dc_err, dc_qd = [], [], [], [], []
    for it in _bar(range(preset["iterations"]), desc=f"{algo} seed {seed}", enabled=progress):
        if agent.conditioned and it % preset["dc_every"] == 0:
            if not agent._initialised:
                agent._initialise()
            m = agent.evaluate_dc_actor()
            dc_it.append(it)
            dc_err.append(m["dc_desc_error"])
            dc_qd.append(m["dc_qd_score"])
        m = agent.step()
        evals.append(m["evaluations"])
        qd.append(m["qd_score"])
    final = agent.metrics()
    row: Dict[str, Any] = dict(algorithm=algo, seed=seed, qd_score=final["qd_score"], coverage=final["coverage"],
                               max_fitness=final["max_fitness"], evaluations=final["evaluations"],
                               actor_episodes=agent.n_actor_episodes)
    if agent.conditioned:
        m = agent.evaluate_dc_actor()
        dc_it.append(preset["iterations"])
        dc_err.append(m["dc_desc_error"])
        dc_qd.append(m["dc_qd_score"])
        row.update(dc_qd_score=m["dc_qd_score"], dc_coverage=m["dc_coverage"], dc_desc_error=m["dc_desc_error"])
    row["time_s"] = time.perf_counter() - t0
    row["cpu_s"] = time.process_time() - c0
    agent.close()
    return dict(row=row, evals=evals, qd=qd, dc_it=dc_it, dc_err=dc_err, dc_qd=dc_qd)


def run(*, quick: bool = False, full: bool = False, out=None, seed: int = 0, progress: bool = True,
        iterations: int = None, seeds: List[int] = None, jobs: int = 1, resume: bool = False) -> Result:
    """``jobs`` runs the (algorithm, seed) runs in parallel processes; each finished run is stored
    under ``out/runs`` and, with ``resume=True``, reused instead of being run again."""
    from pathlib import Path

    from gradkit_core.results import run_many

    name = "full" if full else ("quick" if quick else "default")
    preset = dict(PRESETS[name])
    if iterations is not None:
        preset["iterations"] = int(iterations)
    run_seeds = [seed + s for s in (seeds if seeds is not None else preset["seeds"])]
    res = Result("dcgme", title=f"DCG-ME vs PGA-ME vs MAP-Elites on {preset['env']} ({name}: "
                                f"{preset['iterations']} iterations, seeds {run_seeds})")
    tasks = [dict(algo=a, preset=preset, seed=s) for a in ALGOS for s in run_seeds]
    done = run_many(run_one, tasks, jobs=jobs, cache_dir=Path(out) / "runs" if out is not None else None,
                    resume=resume, progress_bar=progress and jobs > 1, desc="dcgme runs",
                    shared=dict(progress=progress and jobs == 1))
    runs: Dict[str, List[Dict[str, Any]]] = {a: [] for a in ALGOS}
    for task, r in zip(tasks, done):
        runs[task["algo"]].append(r)
        res.add_row(**r["row"])
    mean = {a: {k: float(np.mean([r["row"][k] for r in runs[a]])) for k in ("qd_score", "coverage", "max_fitness", "evaluations")}
            for a in ALGOS}
    for a in ALGOS:
        res.add_curve("QD score vs evaluations", a, runs[a][0]["evals"], np.mean([r["qd"] for r in runs[a]], axis=0))
    d = runs["dcg-me"]
    err = np.mean([r["dc_err"] for r in d], axis=0)
    res.add_curve("distilled actor descriptor error", "dcg-me", d[0]["dc_it"], err)
    res.add_curve("distilled actor QD score", "dcg-me", d[0]["dc_it"], np.mean([r["dc_qd"] for r in d], axis=0))

    res.add_note("equal budgets hold by construction (every algorithm evaluates ga_batch + pg_batch offspring per "
                 "iteration): " + ", ".join(f"{a} {mean[a]['evaluations']:.0f}" for a in ALGOS) + " evaluations")
    def mean_se(a: str, key: str) -> str:
        v = np.array([r["row"][key] for r in runs[a]], dtype=np.float64)
        se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
        return f"{a} {v.mean():.4g} ± {se:.3g}"

    res.add_note(f"mean ± SE over {len(run_seeds)} seeds: QD score " + ", ".join(mean_se(a, "qd_score") for a in ALGOS)
                 + "; coverage " + ", ".join(mean_se(a, "coverage") for a in ALGOS))
    add_claims(res, runs, mean)
    res.meta.update(claim_margin_se=K_SE)
    res.meta.update(preset=name, env=preset["env"], env_kwargs=preset["env_kwargs"], hp=preset["hp"],
                    iterations=preset["iterations"], seeds=run_seeds)
    res.add_note("actor_episodes: DCG-ME's distilled-actor episodes (critic training data, not inserted), "
                 "counted apart from the evaluations as in the paper")
    res.add_note("dc_desc_error: mean ||d_obs - d'|| with descriptors normalised to [-1, 1]; gymnasium re-creations "
                 "of brax tasks: compare directions, not absolute numbers, with the paper")
    return res
