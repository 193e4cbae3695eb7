"""Minimal, seeded training / evaluation loops shared by reproductions."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .models import logits_of


def train_classifier(model: torch.nn.Module, data: Iterable, optimizer: torch.optim.Optimizer, epochs: int = 1,
                     loss_fn: Callable = F.cross_entropy, on_step: Optional[Callable[[int, float], None]] = None
                     ) -> List[float]:
    """Train for ``epochs`` over ``data`` (batches ``(x, y)``); returns per-step losses."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    model.train()
    losses: List[float] = []
    for _ in range(epochs):
        for x, y in data:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(logits_of(model(x)), y)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(losses), losses[-1])
    return losses


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy in [0, 1]."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((logits_of(model(x[i : i + batch_size])).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def next_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``log p(x_{t+1} | x_{<=t})`` per predicting position, ``(B, T-1)``, in float32.

    The one next-token log-likelihood of the LM unlearners (CodeEraser's gradient ascent / CU and
    Downgrade-to-Upgrade's GradDiff / NPO all descend or ascend it): position ``t`` of ``logits``
    ``(B, T, V)`` predicts ``input_ids[:, t + 1]``.
    """
    lg = logits[:, :-1].float()
    return torch.log_softmax(lg, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def lm_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = logits_of(model(x))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def train_lm(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, steps: int, *,
             scheduler=None, clip_norm: Optional[float] = 1.0, eval_fn: Optional[Callable[[torch.nn.Module], float]] = None,
             eval_every: int = 0, on_step: Optional[Callable[[int], None]] = None,
             wrap: Optional[Callable[[Iterable], Iterable]] = None) -> Tuple[List[int], List[float]]:
    """Next-token training for ``steps`` steps on ``batches`` (an iterator of ``(x, y)``).

    Each step: zero grads, :func:`lm_loss` backward, clip the global grad norm to ``clip_norm``
    (``None``: no clipping), optimizer step, scheduler step, then ``on_step(step)``. ``eval_fn(model)``
    is recorded every ``eval_every`` steps and after the last one; returns ``(steps, values)``.
    ``wrap`` wraps the step range (a progress bar).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if eval_every < 0:
        raise ValueError(f"eval_every must be >= 0 (0: only after the last step), got {eval_every}")
    xs: List[int] = []
    ys: List[float] = []
    model.train()
    for step in (range(steps) if wrap is None else wrap(range(steps))):
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        lm_loss(model, x, y).backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(step + 1)
        if eval_fn is not None and ((eval_every and (step + 1) % eval_every == 0) or step + 1 == steps):
            xs.append(step + 1)
            ys.append(float(eval_fn(model)))
    return xs, ys


@torch.no_grad()
def lm_eval(model: torch.nn.Module, tokens: torch.Tensor, block_size: int, batch_size: int = 16,
            n_batches: int = 8, seed: int = 1234) -> float:
    """Mean next-token cross-entropy (nats) over ``n_batches`` fixed random windows."""
    from .data import lm_batch

    g = torch.Generator()
    g.manual_seed(seed)
    model.eval()
    tot = 0.0
    for _ in range(n_batches):
        x, y = lm_batch(tokens, block_size, batch_size, g)
        tot += float(lm_loss(model, x, y))
    model.train()
    return tot / n_batches


def stop_requested(model: torch.nn.Module, stop_fn: Callable[[torch.nn.Module], bool]) -> bool:
    """Call an early-stopping check on ``model`` and restore its train/eval mode afterwards."""
    was = model.training
    try:
        return bool(stop_fn(model))
    finally:
        model.train(was)
