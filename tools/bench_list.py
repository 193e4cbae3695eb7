"""Cold-start cost of `gradkit list` against a bare entry-point scan, in fresh interpreters.

    .venv/bin/python tools/bench_list.py [--reps 15]

Runs, interleaved, (a) `python -c "importlib.metadata.entry_points(group='gradkit')"` and
(b) `python -m gradkit_core list`, both with every plugin installed, and prints the medians and
their ratio (target: <= 2x).  Also reports whether torch got imported by (b) (it must not).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

BARE = "from importlib.metadata import entry_points; eps = list(entry_points(group='gradkit'))"
LIST = "import sys; from gradkit_core.cli import main; main(['list']); assert 'torch' not in sys.modules"


def timed(code: str) -> tuple:
    """(wall seconds, CPU seconds) of one fresh interpreter; CPU time is robust to a loaded machine."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    timed(BARE), timed(LIST)  # warm the OS file cache
    bare, full = [], []
    for _ in range(args.reps):
        bare.append(timed(BARE))
        full.append(timed(LIST))
    for i, what in ((0, "wall"), (1, "cpu")):
        b = statistics.median(x[i] for x in bare)
        f = statistics.median(x[i] for x in full)
        print(f"{what:4s}: bare entry-point scan {b * 1e3:7.1f} ms | gradkit list {f * 1e3:7.1f} ms | "
              f"ratio {f / b:5.2f}x (target <= 2x; median of {args.reps})")


if __name__ == "__main__":
    main()
