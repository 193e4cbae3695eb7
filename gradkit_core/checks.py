"""Input checks that plugins share (no heavy imports).

:func:`number` is the one check of a real hyperparameter every plugin needs: a real number (not a
bool), finite, and inside its range, returned as a float; anything else is an error that names the
hyperparameter, the range and the value.  Nothing is clipped or coerced.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional


class NotANumberError(TypeError, ValueError):
    """A hyperparameter that is not a real number (a string, None, a bool, a tensor).  Both a TypeError
    (the kind of error) and a ValueError (what the hook contracts promise for bad hyperparameters)."""


def number(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number in the range ``low .. high`` (each end closed unless
    ``low_open`` / ``high_open``; ``None`` = unbounded); else :class:`NotANumberError` (not a real number)
    or ``ValueError`` (NaN, inf, out of range), naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NotANumberError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if ((low is not None and (v < low or (low_open and v == low)))
            or (high is not None and (v > high or (high_open and v == high)))):
        lo = "(" if low_open or low is None else "["
        hi = ")" if high_open or high is None else "]"
        raise ValueError(f"{name} must lie in {lo}{'-inf' if low is None else low}, "
                         f"{'inf' if high is None else high}{hi}, got {value!r}")
    return v
