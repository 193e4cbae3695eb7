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


def test_planned_steps_and_run_record():
    from gradkit_core.unlearning import planned_steps, run_record

    assert planned_steps(3, None, 4) == 12 and planned_steps(3, 5, 4) == 5 and planned_steps(None, 7, 4) == 7
    with pytest.raises(ValueError, match="budget"):
        planned_steps(None, None, 4)
    assert run_record(5, 4, seed=1, epochs=3, max_steps=5)["stopped_by"] == "max_steps"  # cap cut 12 planned steps
    assert run_record(12, 4, seed=1, epochs=3, max_steps=20)["stopped_by"] == "epochs"
    assert run_record(3, 4, seed=1, epochs=3, max_steps=20, stopped="stop_fn")["stopped_by"] == "stop_fn"
    assert run_record(6, 4, seed=None, epochs=None, max_steps=6)["epochs"] == 1.5


def test_rollback_on_failure_restores_parameters_and_mode():
    import torch

    from gradkit_core.unlearning import rollback_on_failure

    m = torch.nn.Linear(2, 2).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="parameter weight became non-finite.*lower lr"):
        with rollback_on_failure(m, "lower lr"):
            m.train()
            with torch.no_grad():
                m.weight.fill_(float("nan"))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items()) and not m.training
    with pytest.raises(RuntimeError, match="boom"):
        with rollback_on_failure(m):
            with torch.no_grad():
                m.bias.add_(1.0)
            raise RuntimeError("boom")
    assert torch.equal(before["bias"], m.bias.detach())
    with rollback_on_failure(m):  # a clean run keeps its updates
        with torch.no_grad():
            m.bias.add_(1.0)
    assert torch.equal(before["bias"] + 1.0, m.bias.detach())

