"""Input validation shared by the modules (clear errors, nothing coerced)."""

from __future__ import annotations

import math

import torch

from gradkit_core.checks import number


def check_tensor(x, name: str, *, ndim: int | None = None, shape_tail: tuple | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if shape_tail is not None and tuple(x.shape[-len(shape_tail):]) != tuple(shape_tail):
        raise ValueError(f"{name} must end in shape {tuple(shape_tail)}, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_images(x, name: str = "x", size: int = 32) -> torch.Tensor:
    return check_tensor(x, name, ndim=4, shape_tail=(1, size, size))


def check_float(v, name: str, *, low=None, high=None, low_open=False) -> float:
    """A finite real hyperparameter in its range (:func:`gradkit_core.checks.number`)."""
    return number(name, v, low=low, high=high, low_open=low_open)


def check_int(v, name: str, *, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return v
