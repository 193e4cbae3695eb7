"""The reward conformance suite's rules can fail: a reward that lets NaN through, accepts an empty
batch, or updates its statistics on a refused batch is caught."""

import pytest
import torch

from gradkit_core.testing.rewards import RewardConformance


class RunningMean:
    """Sum of objectives minus a running mean, with checks."""

    def __init__(self, check=True, update_first=False):
        self.mean, self.n, self.check, self.update_first = 0.0, 0, check, update_first

    def __call__(self, batch):
        if self.update_first:
            self.n += 1
        if self.check:
            if batch.shape[0] == 0:
                raise ValueError("empty batch")
            if not torch.isfinite(batch).all():
                raise ValueError("rewards contain NaN or inf")
        s = batch.sum(1)
        if not self.update_first:
            self.n += 1
        self.mean += (float(s.mean()) - self.mean) / self.n
        return s - self.mean

    def state_dict(self):
        return {"mean": self.mean, "n": self.n}

    def load_state_dict(self, sd):
        self.mean, self.n = sd["mean"], sd["n"]


def suite_for(**kw):
    class S(RewardConformance):
        def make(self):
            return RunningMean(**kw)

        def example_batches(self):
            g = torch.Generator().manual_seed(0)
            return [torch.randn(4, 2, generator=g) for _ in range(3)]

    return S()


def test_a_checked_reward_passes_every_rule():
    s = suite_for()
    s.test_is_callable_and_gives_one_finite_float_per_sample()
    s.test_deterministic()
    s.test_state_dict_round_trip()
    s.test_bad_batches_are_clear_errors_and_leave_the_state()


def test_nan_passing_reward_fails():
    with pytest.raises(pytest.fail.Exception):
        suite_for(check=False).test_bad_batches_are_clear_errors_and_leave_the_state()


def test_state_changed_by_a_refused_batch_fails():
    with pytest.raises(AssertionError, match="changed the running state"):
        suite_for(update_first=True).test_bad_batches_are_clear_errors_and_leave_the_state()
