"""Meta-training a prompt model on a task class, and accuracy per in-context position."""

from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .learners import accuracy_per_position, learner_scores
from .tasks import make_task

__all__ = ["train_prompt_model", "icl_accuracy_curve", "learner_curve"]


def train_prompt_model(model: torch.nn.Module, task: str, *, n_dims: int, n_points: int, steps: int,
                       batch_size: int = 64, lr: float = 1e-3, seed: int = 0, task_options: Optional[Dict] = None,
                       warmup: int = 100, clip: float = 1.0) -> Dict[str, list]:
    """Adam on BCE(sigmoid(logit), (y + 1) / 2) at every x position; a fresh batch of functions per step.

    Task batches are drawn with seeds ``10**6 * (seed + 1) + step`` (disjoint from evaluation seeds,
    which :func:`icl_accuracy_curve` takes below 10**6).  Returns the loss history.
    """
    for nm, v in (("steps", steps), ("batch_size", batch_size), ("n_points", n_points)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}")
    if not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    losses = []
    model.train()
    for step in range(steps):
        t = make_task(task, n_dims, batch_size, seed=10**6 * (seed + 1) + step, **(task_options or {}))
        xs, ys = t.sample(n_points)
        logits = model(xs, ys)
        loss = F.binary_cross_entropy_with_logits(logits, (ys + 1) / 2)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return {"loss": losses}


def _eval_batch(task, n_dims, n_points, n_prompts, seed, task_options):
    t = make_task(task, n_dims, n_prompts, seed=seed, **(task_options or {}))
    return t.sample(n_points)


@torch.no_grad()
def icl_accuracy_curve(model: torch.nn.Module, task: str, *, n_dims: int, n_points: int, n_prompts: int = 512,
                       seed: int = 0, task_options: Optional[Dict] = None) -> torch.Tensor:
    """Accuracy of ``model`` at each in-context position on ``n_prompts`` fresh seeded prompts: ``(n_points,)``."""
    if seed >= 10**6:
        raise ValueError("evaluation seeds must be < 10**6 (training uses the seeds above)")
    xs, ys = _eval_batch(task, n_dims, n_points, n_prompts, seed, task_options)
    model.eval()
    return accuracy_per_position(model(xs, ys), ys)


def learner_curve(learner: str, task: str, *, n_dims: int, n_points: int, n_prompts: int = 512, seed: int = 0,
                  task_options: Optional[Dict] = None) -> torch.Tensor:
    """Accuracy of a baseline / optimal learner per position, on the same prompts as :func:`icl_accuracy_curve`."""
    xs, ys = _eval_batch(task, n_dims, n_points, n_prompts, seed, task_options)
    return accuracy_per_position(learner_scores(learner, xs, ys), ys)
