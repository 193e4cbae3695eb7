"""Module-level run functions for the executor tests (workers import them by name)."""

import os
import random


def seeded_run(method, seed, n=200):
    """A deterministic function of its task, like a seeded training run."""
    rng = random.Random(f"{method}-{seed}")
    xs = [rng.gauss(0.0, 1.0) for _ in range(n)]
    return {"method": method, "seed": seed, "mean": sum(xs) / n, "pid": os.getpid()}


def failing_run(method, seed):
    if method == "bad":
        raise ValueError(f"diverged at seed {seed}")
    return seeded_run(method, seed)


def dies_once(method, seed, marker_dir):
    """Kills its worker process the first time it runs for seed 1 (a killed worker), then succeeds."""
    marker = os.path.join(marker_dir, f"{method}-{seed}")
    if seed == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return seeded_run(method, seed)


def always_dies(method, seed):
    os._exit(9)
