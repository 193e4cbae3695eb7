"""Wall-clock cost of a small sweep on each executor, side by side in one process, as ratios.

    .venv/bin/python tools/bench_executors.py [--runs 8] [--work 0.5]

A sweep of ``--runs`` independent CPU-bound runs (each about ``--work`` seconds of arithmetic on one
core) goes through :func:`gradkit_core.results.run_many` serially, on the local process pool with 2
workers, and on a local Ray instance with 1 and with 2 workers. It prints each wall time and the ratios
(Ray 2 workers vs Ray 1 worker, vs the local pool), and the per-run overhead each executor adds,
measured on a sweep of trivial runs. Ray's start-up (``ray.init``) is timed separately and not counted
in the sweeps. Needs the ray extra (pip install 'gradkit-core[ray]').

    .venv/bin/python tools/bench_executors.py --qd [--env gradkit/HopperUni-v0] [--batch 32] [--generations 3]

times QD generations instead (needs gradkit-dcgme): MAP-Elites whose offspring rollouts run in this
process, in 2 chunks on the local pool, and in 2 chunks on a local Ray instance (workers kept up between
generations), checks the archives are identical, and prints the wall time per generation and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def busy(seed: int, work: float) -> float:
    """About ``work`` seconds of pure-Python arithmetic, a deterministic function of the seed."""
    x, n = float(seed), int(work * 4e6)
    for i in range(n):
        x = (x * 1.0000001 + i) % 1000.0
    return x


def trivial(seed: int) -> int:
    return seed


def qd(env_id: str, batch: int, generations: int) -> None:
    import numpy as np
    import ray

    from gradkit_dcgme.algorithm import MAPElites

    hp = dict(n_cells=64, n_init_cvt_samples=5000, init_batch=batch, ga_batch=batch, policy_hidden=(32, 32))
    times, archives = {}, {}
    for label, kw in (("in process", {}), ("local pool, 2 chunks", dict(jobs=2, executor="local")),
                      ("ray, 2 chunks", dict(jobs=2, executor="ray"))):
        if label.startswith("ray"):
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        agent = MAPElites(env_id, seed=0, **hp, **kw)
        agent.learn(1)  # initial batch; starts and warms the workers
        t0 = time.perf_counter()
        agent.learn(generations)
        times[label] = (time.perf_counter() - t0) / generations
        archives[label] = (agent.archive.fitness.copy(), agent.archive.descriptors.copy())
        agent.close()
        if label.startswith("ray"):
            ray.shutdown()
    ref = archives["in process"]
    for label, (f, d) in archives.items():
        np.testing.assert_array_equal(f, ref[0], err_msg=label)
        np.testing.assert_array_equal(d, ref[1], err_msg=label)
    print(f"{env_id}, {batch} offspring per generation, {generations} generations (identical archives):")
    for k, v in times.items():
        print(f"  {k:22s} {v:7.2f} s per generation")
    base = times["in process"]
    print("ratios to in process: " + ", ".join(f"{k} {v / base:.2f}" for k, v in times.items() if k != "in process"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--work", type=float, default=0.5)
    ap.add_argument("--qd", action="store_true", help="time QD generations with parallel rollouts instead")
    ap.add_argument("--env", default="gradkit/HopperUni-v0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--generations", type=int, default=3)
    args = ap.parse_args()
    if args.qd:
        return qd(args.env, args.batch, args.generations)
    import ray

    from gradkit_core.results import run_many

    tasks = [dict(seed=s, work=args.work) for s in range(args.runs)]
    tiny = [dict(seed=s) for s in range(40)]

    def timed(**kw):
        t0 = time.perf_counter()
        out = run_many(busy, tasks, **kw)
        return time.perf_counter() - t0, out

    def overhead(**kw):
        t0 = time.perf_counter()
        run_many(trivial, tiny, **kw)
        return (time.perf_counter() - t0) / len(tiny)

    rows = {}
    rows["serial"], ref = timed(executor="serial")
    rows["local pool, 2 workers"], out = timed(executor="local", jobs=2)
    assert out == ref
    ov = {"serial": overhead(executor="serial"), "local pool": overhead(executor="local", jobs=2)}
    env = {"env_vars": {"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}}
    for workers in (1, 2):
        t0 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env=env)
        start = time.perf_counter() - t0
        run_many(trivial, tiny[:2], executor="ray", jobs=workers)  # warm the workers
        rows[f"ray, {workers} worker{'s' * (workers > 1)}"], out = timed(executor="ray", jobs=workers)
        assert out == ref, "Ray gives the same results"
        if workers == 2:
            ov["ray"] = overhead(executor="ray", jobs=2)
        ray.shutdown()
        print(f"ray.init with {workers} CPU(s): {start:.1f} s (not counted below)")
    print(f"\n{args.runs} runs of ~{args.work} s each (wall time, one process, same results on every executor):")
    for k, v in rows.items():
        print(f"  {k:22s} {v:7.2f} s")
    r2, r1, lp = rows["ray, 2 workers"], rows["ray, 1 worker"], rows["local pool, 2 workers"]
    print(f"ratios: ray 2 workers / ray 1 worker = {r2 / r1:.2f}; ray 2 workers / local pool 2 workers = {r2 / lp:.2f}")
    print("per-run overhead on trivial runs: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in ov.items()))


if __name__ == "__main__":
    main()
