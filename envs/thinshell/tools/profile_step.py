"""CPU time per forward+backward step on the benchmark scene, optionally with a cProfile listing.

    python envs/thinshell/tools/profile_step.py 11 [--src DIR] [--profile] [--reps 5]

``--src DIR`` imports ``gradkit_thinshell`` from DIR instead (e.g. an older version unpacked with
``git archive <commit> envs/thinshell/src | tar -x -C /tmp/old`` and ``--src /tmp/old/envs/thinshell/src``), so two
versions can be timed alternately in one shell on a shared machine.
"""

import argparse
import cProfile
import pstats
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("n", type=int, help="sheet resolution (n x n vertices)")
ap.add_argument("--src", default=None)
ap.add_argument("--profile", action="store_true")
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--steps", type=int, default=8)
args = ap.parse_args()
if args.src:
    sys.path.insert(0, args.src)

import torch  # noqa: E402

import gradkit_thinshell  # noqa: E402
from gradkit_thinshell.bench import _actions, _scene  # noqa: E402
from gradkit_thinshell.sim import ThinShellSim  # noqa: E402

torch.set_num_threads(1)
sim = ThinShellSim(_scene(args.n))
a = _actions(args.steps)
sim.rollout(a[:1])


def fwd_bwd():
    act = a.clone().requires_grad_(True)
    sim.rollout(act)[-1].x[:, 0].sum().backward()


ms = []
for _ in range(args.reps):
    t = time.process_time()
    fwd_bwd()
    ms.append(1e3 * (time.process_time() - t) / args.steps)
print(f"{gradkit_thinshell.__file__}: {args.n}x{args.n} forward+backward CPU ms/step median {statistics.median(ms):.1f} "
      f"min {min(ms):.1f} (reps {args.reps})")
if args.profile:
    prof = cProfile.Profile()
    prof.runcall(fwd_bwd)
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)
