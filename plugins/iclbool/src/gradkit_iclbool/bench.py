"""Benchmark: the Boolean task suite against every baseline / optimal learner, and prompt-model step time.

Part 1 (task suite): every task class at n = 10, m = 40 on seeded prompts, accuracy of every learner
at position n and over the second half of the prompt; claims check the optimal learners where theory
says they are exact.  Part 2: one training step (forward + backward, batch 64) of each prompt-model
backbone at equal width, CPU time side by side, as ratios to the transformer.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Optional

import torch

from gradkit_core.results import Result

from .learners import LEARNERS, accuracy_per_position, learner_scores
from .models import BACKBONES, PromptModel
from .tasks import TASKS, make_task


def run(*, quick: bool = False, seed: int = 0, out: Optional[Path] = None, progress: bool = True) -> Result:
    n, m = 10, 40
    n_prompts = 256 if quick else 1024
    reps = 3 if quick else 10
    res = Result("iclbool", title=f"Boolean task suite (n={n}, m={m}, {n_prompts} prompts) and prompt-model step time")
    late = {}
    for ti, task in enumerate(TASKS):
        xs, ys = make_task(task, n, n_prompts, seed=seed * 100 + ti).sample(m)
        for ln in LEARNERS:
            acc = accuracy_per_position(learner_scores(ln, xs, ys), ys)
            late[(task, ln)] = float(acc[m // 2:].mean())
            res.add_row(task=task, learner=ln, acc_at_n=round(float(acc[n]), 3), late_acc=round(late[(task, ln)], 3),
                        pos_rate=round(float((ys == 1).float().mean()), 3))
            res.add_curve(task, ln, list(range(m)), acc.tolist())
    others = [ln for ln in LEARNERS if ln != "gf2"]
    res.add_claim("parity: GF(2) elimination ≥ 0.99 over the second half, every other learner within 0.06 of chance",
                  late[("parity", "gf2")] >= 0.99 and all(abs(late[("parity", ln)] - 0.5) < 0.06 for ln in others),
                  f"gf2 {late[('parity', 'gf2')]:.3f}; others " + ", ".join(f"{late[('parity', ln)]:.2f}" for ln in others))
    best_other = max(late[("conjunction", ln)] for ln in LEARNERS if not ln.startswith("elimination"))
    res.add_claim("conjunction: elimination ≥ 0.97 over the second half and ahead of every non-optimal learner",
                  late[("conjunction", "elimination")] >= 0.97 and late[("conjunction", "elimination")] > best_other,
                  f"elimination {late[('conjunction', 'elimination')]:.3f} vs best other {best_other:.3f}")
    res.add_claim("teach-biconjunction: elimination exact (1.000) over the second half (the prefix identifies w)",
                  late[("teach_biconjunction", "elimination")] == 1.0,
                  f"{late[('teach_biconjunction', 'elimination')]:.4f}")

    # part 2: step time of the backbones, side by side
    torch.manual_seed(seed)
    xs, ys = make_task("conjunction", n, 64, seed=seed).sample(m)
    models = {b: PromptModel(n, b, 64, 2 if b == "lstm" else 3, 4, m) for b in BACKBONES}
    times = {b: [] for b in BACKBONES}
    for _ in range(reps):
        for b, model in models.items():
            t0 = time.process_time()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xs, ys), (ys + 1) / 2)
            loss.backward()
            times[b].append(time.process_time() - t0)
    base = statistics.median(times["transformer"])
    for b in BACKBONES:
        med = statistics.median(times[b])
        res.add_row(task="step-time", learner=b, params=sum(p.numel() for p in models[b].parameters()),
                    step_ms=round(1000 * med, 2), ratio_to_transformer=round(med / base, 3))
    res.add_note("learners score position i from examples < i only; step time = CPU seconds of one forward+backward "
                 "(batch 64, 2m = 80 tokens), median over repetitions")
    return res
