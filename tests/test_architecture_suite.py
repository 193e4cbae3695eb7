"""The architecture conformance suite's rules can fail: a module that silently takes NaN, or whose
state_dict does not carry its state, is caught."""

import pytest
import torch

from gradkit_core.testing.architectures import ArchitectureConformance


class Checked(torch.nn.Module):
    def __init__(self, d=4):
        super().__init__()
        self.lin = torch.nn.Linear(d, 3)

    def forward(self, x):
        if x.shape[-1] != self.lin.in_features:
            raise ValueError(f"expected (..., {self.lin.in_features}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("input contains NaN or inf")
        return self.lin(x)


class Unchecked(Checked):
    def forward(self, x):
        return self.lin(x[..., : self.lin.in_features]) if x.shape[-1] >= self.lin.in_features else self.lin(
            torch.nn.functional.pad(x, (0, self.lin.in_features - x.shape[-1])))


class Forgetful(Checked):
    """Keeps a random buffer outside the state_dict: a reload does not reproduce it."""

    def __init__(self, d=4):
        super().__init__(d)
        self.shift = torch.randn(3)

    def forward(self, x):
        return super().forward(x) + self.shift


def suite_for(cls):
    class S(ArchitectureConformance):
        def make(self, seed=0, **overrides):
            torch.manual_seed(seed)
            return cls(**overrides)

        def example_input(self):
            return torch.randn(5, 4, generator=torch.Generator().manual_seed(0))

    return S()


def test_a_checked_module_passes_every_rule():
    s = suite_for(Checked)
    s.test_forward_is_finite_and_deterministic_in_eval_mode()
    s.test_gradients_reach_the_parameters_and_are_finite()
    s.test_same_seed_same_module_and_state_dict_round_trip()
    s.test_bad_inputs_are_clear_errors()


def test_a_module_that_takes_nan_or_wrong_shapes_silently_fails_the_bad_input_rule():
    with pytest.raises(pytest.fail.Exception):
        suite_for(Unchecked).test_bad_inputs_are_clear_errors()


def test_state_outside_the_state_dict_fails_the_round_trip_rule():
    with pytest.raises(AssertionError, match="load_state_dict"):
        suite_for(Forgetful).test_same_seed_same_module_and_state_dict_round_trip()
