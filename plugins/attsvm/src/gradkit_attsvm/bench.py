"""Cost of the Att-SVM: cvxpy backends side by side, and the SVM vs the GD run it predicts.

The paper makes no speed claim; this benchmark answers the practical questions of a user:
which cvxpy backend to use for the Frobenius (QP) and nuclear-norm (SDP) problems, how
accurate each one is, and how the cost of one SVM solve compares with the 2000 normalized-GD
iterations whose limit direction it gives.  One process, one thread; medians over seeded
problems; every ratio is measured in the same process.
"""

from __future__ import annotations

import statistics
import time
from typing import Optional

import numpy as np
import torch

from gradkit_core.results import Result
from gradkit_core.results import progress as _progress

BACKENDS = {"fro": ["CLARABEL", "SCS", "OSQP"], "nuc": ["CLARABEL", "SCS"]}


def run(*, quick: bool = False, out: Optional[str] = None, seed: int = 0, progress: bool = True) -> Result:
    from .model import corr, global_tokens, make_data
    from .svm import AttSVM, margins, numerical_rank
    from .train import train_attention, train_runs

    torch.set_num_threads(1)
    sizes = [(6, 8, 10)] if quick else [(6, 8, 10), (15, 5, 20)]
    n_problems = 3 if quick else 8
    res = Result("attsvm", title="Att-SVM: cvxpy backend time and accuracy; SVM solve vs 2000 normalized-GD steps")
    jobs = [(s, norm) for s in sizes for norm in ("fro", "nuc")]
    ref_times = {}
    for (n, T, d), norm in _progress(jobs, desc="attsvm bench: SVM backends", enabled=progress):
        probs = [make_data(n, T, d, seed=seed + k) for k in range(n_problems)]
        sels = [global_tokens(X, y, v) for X, y, Z, v in probs]
        ref = None
        times = {}
        for backend in BACKENDS[norm]:
            ts, cors, viol, ranks = [], [], [], []
            sols = []
            for k, ((X, y, Z, v), ids) in enumerate(zip(probs, sels)):
                t0 = time.perf_counter()
                r = AttSVM(norm, backend).solve((X, Z, ids))
                ts.append(time.perf_counter() - t0)
                sols.append(r.W)
                m = margins(r.W, X, Z, ids)
                m[np.arange(n), ids.numpy()] = -np.inf
                viol.append(max(0.0, float(m.max()) + 1.0))
                ranks.append(numerical_rank(r.W, 1e-6))
            if ref is None:
                ref = sols
            cors = [corr(a, b) for a, b in zip(sols, ref)]
            times[backend] = statistics.median(ts)
            res.add_row(part="svm backend", problem=f"n={n} T={T} d={d} {norm}", method=backend,
                        median_ms=round(1e3 * times[backend], 2),
                        ratio_vs_clarabel=round(times[backend] / times["CLARABEL"], 3),
                        one_minus_corr_vs_clarabel=float(f"{max(0.0, 1 - min(cors)):.1e}"), max_violation=float(f"{max(viol):.2e}"),
                        mean_rank_rel1e6=round(float(np.mean(ranks)), 2))
        ref_times[((n, T, d), norm)] = times["CLARABEL"]

    # the GD run whose direction the SVM predicts: 2000 normalized steps, single run and 50 batched runs
    n, T, d = 6, 8, 10
    X, y, Z, v = make_data(n, T, d, seed=seed)
    iters = 500 if quick else 2000
    for param in ("W", "KQ"):  # warm-up: first-call costs (lazy imports, allocator) stay out of the timings
        train_attention(X, y, Z, v=v, param=param, iters=5, seed=seed, record_every=5)
        train_runs([(X, y, Z, v)] * 2, param=param, iters=5, record_every=5)
    for param, norm in (("W", "fro"), ("KQ", "nuc")):
        t0 = time.perf_counter()
        # saturation_tol=None: time exactly `iters` steps (the saturation stop would end the run early)
        train_attention(X, y, Z, v=v, param=param, iters=iters, seed=seed, record_every=iters, saturation_tol=None)
        t_single = time.perf_counter() - t0
        R = 10 if quick else 50
        probs = [make_data(n, T, d, seed=seed + k) for k in range(R)]
        t0 = time.perf_counter()
        train_runs(probs, param=param, iters=iters, record_every=iters, saturation_tol=None)
        t_batch = (time.perf_counter() - t0) / R
        t_svm = ref_times[((n, T, d), norm)]
        res.add_row(part="GD vs SVM", problem=f"n={n} T={T} d={d} {norm}", method=f"{param}: {iters} normalized-GD steps, 1 run",
                    median_ms=round(1e3 * t_single, 1), ratio_vs_clarabel=round(t_single / t_svm, 2))
        res.add_row(part="GD vs SVM", problem=f"n={n} T={T} d={d} {norm}",
                    method=f"{param}: {iters} steps, per run of {R} batched", median_ms=round(1e3 * t_batch, 1),
                    ratio_vs_clarabel=round(t_batch / t_svm, 2))
    res.meta.update(threads=1, problems=n_problems, seed=seed, quick=quick)
    res.add_note("the paper has no speed claim; ratios are time / Clarabel's time on the same problems "
                 "(> 1: slower than Clarabel). Times include cvxpy's problem compilation.")
    res.add_note("one_minus_corr_vs_clarabel: worst disagreement of each backend's W^mm with Clarabel's; max_violation: "
                 "largest amount by which a margin constraint is missed (first-order SCS/OSQP stop at looser tolerances)")
    return res
