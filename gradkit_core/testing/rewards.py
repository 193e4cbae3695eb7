"""Conformance suite for kind ``rewards`` (reward functions, reward shaping and normalisation).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_rewards`): ``create(component,
**component_kwargs)`` is a callable; ``reward(batch)`` returns one finite float reward per sample
(a 1-D tensor, or a sequence of floats); running normalisation state is exposed as attributes and,
where there is any, round-trips through ``state_dict()`` / ``load_state_dict()``.

Subclass :class:`RewardConformance`, set ``component`` / ``component_kwargs``, implement
:meth:`example_batches` (a few batches in call order: reward matrices, texts, whatever the reward
takes) and, if the reward must be prepared first (fitted on a reference policy, say), :meth:`prepare`.
Override :meth:`bad_batches` to add inputs of your reward's own kind that must be refused.

The rules checked: one finite float per sample; two fresh instances fed the same batches give the
same rewards (deterministic); ``state_dict`` round trip continues identically; NaN/inf rewards in a
float batch and an empty batch are clear errors (``ValueError`` / ``TypeError`` naming the problem)
and leave the running state as it was.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import pytest
import torch

from ._state import assert_same_state


def _as_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.detach().to(torch.float64)
    return torch.as_tensor(list(out), dtype=torch.float64)


def _size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    return len(batch)


def _state(reward: Any) -> Optional[Dict[str, Any]]:
    sd = getattr(reward, "state_dict", None)
    return copy.deepcopy(sd()) if callable(sd) else None


class RewardConformance:
    #: registered component name (``None``: override :meth:`make`)
    component: Optional[str] = None
    #: keyword arguments for ``create(component, **component_kwargs)``
    component_kwargs: Dict[str, Any] = {}

    def make(self) -> Any:
        import gradkit_core as gk

        if self.component is None:
            raise TypeError("set `component` on the RewardConformance subclass or override make()")
        r = gk.create(self.component, kind="rewards", **self.component_kwargs)
        self.prepare(r)
        return r

    def prepare(self, reward: Any) -> None:
        """Anything the reward needs before use (fit reference statistics, ...). Default: nothing."""

    def example_batches(self) -> List[Any]:  # pragma: no cover - must be overridden
        pytest.fail("RewardConformance subclasses implement example_batches() (batches in call order)")

    def bad_batches(self) -> List[Any]:
        """Batches that must be refused. Default, for float tensor batches: NaN, inf, and an empty batch."""
        x = self.example_batches()[0]
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            return []
        nan, inf = x.clone(), x.clone()
        nan.view(-1)[0] = float("nan")
        inf.view(-1)[-1] = float("-inf")
        return [nan, inf, x[:0]]

    # ------------------------------------------------------------------ rules
    def test_is_callable_and_gives_one_finite_float_per_sample(self):
        r = self.make()
        assert callable(r)
        for batch in self.example_batches():
            out = _as_tensor(r(batch))
            assert out.dim() == 1 and out.numel() == _size(batch), \
                f"expected {_size(batch)} rewards (one per sample), got shape {tuple(out.shape)}"
            assert torch.isfinite(out).all(), "a reward is not finite on an ordinary batch"

    def test_deterministic(self):
        a, b = self.make(), self.make()
        for batch in self.example_batches():
            assert torch.equal(_as_tensor(a(batch)), _as_tensor(b(batch))), "same batches, different rewards"

    def test_state_dict_round_trip(self):
        batches = self.example_batches()
        a = self.make()
        if _state(a) is None:
            pytest.skip("this reward keeps no state (no state_dict)")
        a(batches[0])
        b = self.make()
        b.load_state_dict(copy.deepcopy(a.state_dict()))
        for batch in batches[1:] or batches:
            assert torch.equal(_as_tensor(a(batch)), _as_tensor(b(batch))), "a reloaded reward continues differently"

    def test_bad_batches_are_clear_errors_and_leave_the_state(self):
        bad = self.bad_batches()
        if not bad:
            pytest.skip("no bad batches for this input kind (override bad_batches)")
        r = self.make()
        r(self.example_batches()[0])
        before = _state(r)
        for batch in bad:
            with pytest.raises((ValueError, TypeError)) as info:
                out = r(batch)
                if not torch.isfinite(_as_tensor(out)).all():
                    pytest.fail("a bad batch gave non-finite rewards instead of an error")
            assert str(info.value).strip(), "the error must say what was wrong"
            if before is not None:
                assert_same_state(before, _state(r), "a refused batch changed the running state")
