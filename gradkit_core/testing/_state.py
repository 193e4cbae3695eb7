"""One deep comparison of saved state (state_dicts, nested dicts/lists of tensors and numbers) for the suites."""

from __future__ import annotations

from typing import Any


def assert_same_state(a: Any, b: Any, what: str, path: str = "state") -> None:
    """Assert ``b`` equals ``a`` exactly (tensors: same type, shape, dtype and values; NaN equals NaN).

    ``what`` opens every failure message, e.g. ``"a failed step must leave optimizer state unchanged"``."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f"{what}: {path} changed type"
        assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(
            torch.nan_to_num(a, nan=7.25) if a.is_floating_point() else a,
            torch.nan_to_num(b, nan=7.25) if b.is_floating_point() else b) and bool(
            (a.isnan() == b.isnan()).all() if a.is_floating_point() else True), f"{what}: {path} changed"
        return
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{what}: {path} keys changed"
        for k in a:
            assert_same_state(a[k], b[k], what, f"{path}[{k!r}]")
        return
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{what}: {path} length changed"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, what, f"{path}[{i}]")
        return
    assert a == b or (a != a and b != b), f"{what}: {path} {a!r} -> {b!r}"
