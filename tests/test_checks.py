"""gradkit_core.checks.number: the shared hyperparameter check."""

import math

import numpy as np
import pytest

from gradkit_core.checks import NotANumberError, number


def test_valid_numbers_come_back_as_floats():
    assert number("lr", 3) == 3.0 and isinstance(number("lr", 3), float)
    assert number("lr", np.float32(0.5), low=0, high=1) == 0.5
    assert number("beta", 0.0, low=0.0) == 0.0           # closed end accepted
    assert number("beta", 1.0, high=1.0) == 1.0


@pytest.mark.parametrize("bad", ["0.1", None, True, [0.1], object()])
def test_non_numbers_are_type_and_value_errors(bad):
    with pytest.raises(NotANumberError, match="lr must be a real number"):
        number("lr", bad)
    assert issubclass(NotANumberError, TypeError) and issubclass(NotANumberError, ValueError)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_non_finite_values_are_value_errors(bad):
    with pytest.raises(ValueError, match="lr must be finite"):
        number("lr", bad, low=0)


@pytest.mark.parametrize("value, kw, text", [
    (-1e-9, dict(low=0.0), r"\[0.0, inf\)"),
    (0.0, dict(low=0.0, low_open=True), r"\(0.0, inf\)"),
    (1.0, dict(low=0.0, high=1.0, high_open=True), r"\[0.0, 1.0\)"),
    (2.0, dict(high=1.0), r"\(-inf, 1.0\]"),
])
def test_out_of_range_values_name_the_range(value, kw, text):
    with pytest.raises(ValueError, match="eps must lie in " + text):
        number("eps", value, **kw)
