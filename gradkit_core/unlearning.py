"""Argument checks of the unlearner calling convention, shared by every unlearner plugin.

The convention (see :func:`gradkit_core.hookspecs.gradkit_register_unlearners`)::

    model = gk.create(NAME, model, **hp).unlearn(forget, retain=None, *, epochs=None, max_steps=None, seed=None)

Imports nothing heavy (no torch): a tensor is recognised by its type name.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional, Tuple


def check_budget(epochs: Any, max_steps: Any) -> Tuple[Optional[int], Optional[int]]:
    """Validate the unlearning budget: each a positive int or ``None``."""
    for name, v in (("epochs", epochs), ("max_steps", max_steps)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
    return epochs, max_steps


def check_seed(seed: Any) -> Optional[int]:
    """A non-negative int or ``None``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    return seed


def materialize(data: Any, what: str) -> List[Any]:
    """The batches of a forget / retain set as a list; a non-iterable (or a bare tensor, string or number)
    is a TypeError that names the set."""
    if (data is None or isinstance(data, (str, bytes, int, float, bool)) or type(data).__name__ == "Tensor"
            or not hasattr(data, "__iter__")):
        raise TypeError(f"the {what} set must be an iterable of batches (a list or DataLoader), got {type(data).__name__}")
    return list(data)


def planned_steps(epochs: Optional[int], max_steps: Optional[int], steps_per_epoch: int) -> int:
    """Optimizer updates a run will take: ``epochs`` passes of ``steps_per_epoch``, capped by ``max_steps``."""
    total = epochs * steps_per_epoch if epochs is not None else max_steps
    if total is None:
        raise ValueError("a budget is needed: epochs or max_steps")
    return min(total, max_steps) if max_steps is not None else total


def run_record(steps: int, steps_per_epoch: int, *, seed: Optional[int], epochs: Optional[int],
               max_steps: Optional[int], stopped: Optional[str] = None) -> dict:
    """``unlearner.last_run``: steps taken, epochs completed, and what stopped the run (``stopped`` if the
    method stopped itself, else ``"max_steps"`` when that cap cut the epochs short, else ``"epochs"``)."""
    if stopped is None:
        cut = max_steps is not None and steps >= max_steps and (epochs is None or max_steps < epochs * steps_per_epoch)
        stopped = "max_steps" if cut else "epochs"
    return {"steps": steps, "epochs": steps / steps_per_epoch, "stopped_by": stopped,
            "steps_per_epoch": steps_per_epoch, "seed": seed, "requested": {"epochs": epochs, "max_steps": max_steps}}


@contextlib.contextmanager
def rollback_on_failure(model: Any, hint: str = "lower the learning rate") -> Iterator[None]:
    """Run an unlearning loop so that a failure leaves the model as it was.

    Snapshots the model's ``state_dict``; after the body, every parameter must be finite (else a ValueError
    naming it, with ``hint``); on any exception the parameters and the train/eval mode are restored.
    """
    import torch

    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was = model.training
    try:
        yield
        for n, p in model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise ValueError(f"parameter {n} became non-finite during unlearning; {hint}")
    except BaseException:
        with torch.no_grad():
            model.load_state_dict(snapshot)
        model.train(was)
        raise
