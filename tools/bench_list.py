"""Cold-start cost of `gradkit list` against a bare entry-point scan, in fresh interpreters.

    .venv/bin/python tools/bench_list.py [--reps 15]

Runs, interleaved, (a) `python -c "importlib.metadata.entry_points(group='gradkit')"`,
(b) `gradkit list` as a user gets it (the discovery cache warm: the usual case) and (c) `gradkit
list` with the cache switched off (`GRADKIT_NO_CACHE=1`: every plugin's hook module loaded, as on
the first start after an install), all with every plugin installed, and prints the medians and the
ratios to (a) (target for (b): <= 1.5x).  Each run asserts that torch did not get imported.
Run it with PYTHONDONTWRITEBYTECODE=1 to charge the compilation of gradkit's own modules.
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


def timed(code: str, env=None) -> tuple:
    """(wall seconds, CPU seconds) of one fresh interpreter; CPU time is robust to a loaded machine."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    import os

    nocache = dict(os.environ, GRADKIT_NO_CACHE="1")
    timed(BARE), timed(LIST), timed(LIST, nocache)  # warm the OS file cache and the discovery cache
    bare, full, scan = [], [], []
    for _ in range(args.reps):
        bare.append(timed(BARE))
        full.append(timed(LIST))
        scan.append(timed(LIST, nocache))
    for i, what in ((0, "wall"), (1, "cpu")):
        b = statistics.median(x[i] for x in bare)
        f = statistics.median(x[i] for x in full)
        s = statistics.median(x[i] for x in scan)
        print(f"{what:4s}: bare entry-point scan {b * 1e3:6.1f} ms | gradkit list {f * 1e3:6.1f} ms, "
              f"ratio {f / b:4.2f}x (target <= 1.5x) | without the cache {s * 1e3:6.1f} ms, ratio {s / b:4.2f}x "
              f"(median of {args.reps})")


if __name__ == "__main__":
    main()
