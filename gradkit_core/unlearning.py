"""Argument checks of the unlearner calling convention, shared by every unlearner plugin.

The convention (see :func:`gradkit_core.hookspecs.gradkit_register_unlearners`)::

    model = gk.create(NAME, model, **hp).unlearn(forget, retain=None, *, epochs=None, max_steps=None, seed=None)

Imports nothing heavy (no torch): a tensor is recognised by its type name.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple


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
