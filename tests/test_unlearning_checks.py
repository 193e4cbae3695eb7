"""The shared checks of the unlearner calling convention (gradkit_core.unlearning)."""

import pytest

from gradkit_core.unlearning import check_budget, check_seed, materialize


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_budget_must_be_a_positive_int_or_none(bad):
    assert check_budget(None, None) == (None, None) and check_budget(2, 7) == (2, 7)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        check_budget(bad, None)
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        check_budget(None, bad)


@pytest.mark.parametrize("bad", [-1, 0.5, True, "0"])
def test_seed_must_be_a_non_negative_int_or_none(bad):
    assert check_seed(None) is None and check_seed(0) == 0
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        check_seed(bad)


def test_materialize_takes_iterables_of_batches_and_names_the_set():
    assert materialize(iter([1, 2]), "forget") == [1, 2]
    import torch

    for bad in (None, "text", 3, torch.zeros(3)):
        with pytest.raises(TypeError, match="the retain set must be an iterable of batches"):
            materialize(bad, "retain")
