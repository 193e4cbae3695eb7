"""Conformance suite for kind ``optimizers`` (torch.optim.Optimizer contract).

Subclass :class:`OptimizerConformance` and set:

``component``
    the registered component name (created through ``gradkit_core.create``), or
    override :meth:`make` to build the optimizer yourself.
``component_kwargs``
    keyword arguments for construction (e.g. ``{"lr": 1e-3}``).
``needs_closure``
    ``True`` for optimizers whose ``step`` requires a closure (line searches,
    zeroth-order); the suite then always passes one and checks that calling
    ``step()`` without it raises a clear error.

The rules checked: parameters move on a step; hyperparameters live in
``defaults`` and per-group values are honoured; state is lazy; a parameter whose
``grad`` is ``None`` is untouched and gets no state; ``step(closure)`` returns the
closure's loss and evaluates it with gradients enabled; ``state_dict`` round trip
gives an identical continuation; ``zero_grad`` works; NaN/inf gradients are not
silently turned into finite updates.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import pytest
import torch


def _model(seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)


class OptimizerConformance:
    component: Optional[str] = None
    component_kwargs: Dict[str, Any] = {}
    needs_closure: bool = False
    #: the optimizer is allowed to keep no per-parameter state (e.g. plain SGD)
    stateless: bool = False

    # -------------------------------------------------------------- construction
    def make(self, params, **overrides) -> torch.optim.Optimizer:
        import gradkit_core as gk

        kw = dict(self.component_kwargs)
        kw.update(overrides)
        return gk.create(self.component, params, kind="optimizers", **kw)

    def model(self, seed: int = 0) -> torch.nn.Module:
        return _model(seed)

    def _loss(self, model, seed: int = 1) -> torch.Tensor:
        x, y = _batch(seed)
        return torch.nn.functional.mse_loss(model(x), y)

    def _step(self, opt, model, seed: int = 1):
        def closure():
            opt.zero_grad()
            loss = self._loss(model, seed)
            loss.backward()
            return loss

        if self.needs_closure:
            return opt.step(closure)
        closure()
        return opt.step()

    def _params(self, model) -> List[torch.Tensor]:
        return [p.detach().clone() for p in model.parameters()]

    # -------------------------------------------------------------- rules
    def test_is_torch_optimizer_with_defaults(self):
        m = self.model()
        opt = self.make(m.parameters())
        assert isinstance(opt, torch.optim.Optimizer)
        assert "lr" in opt.defaults, "hyperparameters belong in optimizer.defaults (at least lr)"
        for group in opt.param_groups:
            for k in opt.defaults:
                assert k in group, f"param group lacks hyperparameter {k!r}"

    def test_step_moves_parameters_and_state_is_lazy(self):
        m = self.model()
        opt = self.make(m.parameters())
        assert len(opt.state) == 0, "state must be created lazily, on the first step"
        before = self._params(m)
        self._step(opt, m)
        after = self._params(m)
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), "a step must change parameters"
        for p in after:
            assert torch.isfinite(p).all()

    def test_param_without_grad_is_untouched(self):
        m = self.model()
        frozen = torch.nn.Parameter(torch.randn(4, 4))
        ref = frozen.detach().clone()
        opt = self.make([{"params": list(m.parameters())}, {"params": [frozen]}])
        for _ in range(2):
            self._step(opt, m)
        assert frozen.grad is None
        assert torch.equal(frozen.detach(), ref), "a parameter with grad=None must not change"
        assert frozen not in opt.state or len(opt.state[frozen]) == 0, "no state for a parameter without grad"

    def test_closure_loss_is_returned_and_evaluated_with_grad(self):
        m = self.model()
        opt = self.make(m.parameters())
        seen = []

        def closure():
            seen.append(torch.is_grad_enabled())
            opt.zero_grad()
            loss = self._loss(m)
            loss.backward()
            return loss

        with torch.no_grad():
            expected = float(self._loss(m))
        out = opt.step(closure)
        assert seen and all(seen), "the closure must run with gradients enabled"
        assert out is not None and abs(float(out.detach()) - expected) < 1e-6, "step(closure) returns the closure's loss"

    def test_missing_closure_is_a_clear_error(self):
        if not self.needs_closure:
            pytest.skip("step() without a closure is allowed for this optimizer")
        m = self.model()
        opt = self.make(m.parameters())
        self._loss(m).backward()
        with pytest.raises((RuntimeError, ValueError, TypeError), match="closure"):
            opt.step()

    def test_param_groups_honour_their_own_lr(self):
        m1, m2 = self.model(0), self.model(0)
        lr = float(self.make(self.model().parameters()).defaults["lr"])
        opt = self.make([{"params": list(m1.parameters())}, {"params": list(m2.parameters()), "lr": 0.0}])
        assert opt.param_groups[1]["lr"] == 0.0 and opt.param_groups[0]["lr"] == lr
        before = self._params(m2)

        def closure():
            opt.zero_grad()
            loss = self._loss(m1) + self._loss(m2)
            loss.backward()
            return loss

        if self.needs_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
        for a, b in zip(before, self._params(m2)):
            # decoupled weight decay is lr-scaled, so lr=0 must freeze the group entirely
            assert torch.allclose(a, b), "a param group with lr=0 must not move"

    def test_state_dict_round_trip_continues_identically(self):
        torch.manual_seed(0)
        m_a = self.model()
        opt_a = self.make(m_a.parameters())
        for s in range(3):
            self._step(opt_a, m_a, seed=s + 1)
        m_b = copy.deepcopy(m_a)
        opt_b = self.make(m_b.parameters())
        opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
        rng = torch.get_rng_state()
        for s in range(3, 6):
            self._step(opt_a, m_a, seed=s + 1)
        torch.set_rng_state(rng)
        for s in range(3, 6):
            self._step(opt_b, m_b, seed=s + 1)
        for a, b in zip(m_a.parameters(), m_b.parameters()):
            assert torch.allclose(a, b, rtol=0, atol=1e-7), "state_dict round trip must continue identically"

    def test_state_exists_after_step(self):
        if self.stateless:
            pytest.skip("optimizer keeps no state")
        m = self.model()
        opt = self.make(m.parameters())
        self._step(opt, m)
        assert len(opt.state) > 0

    def test_zero_grad_clears(self):
        m = self.model()
        opt = self.make(m.parameters())
        self._loss(m).backward()
        opt.zero_grad()
        assert all(p.grad is None or not p.grad.any() for p in m.parameters())

    def test_nonfinite_gradient_is_not_silently_hidden(self):
        m = self.model()
        opt = self.make(m.parameters())
        self._loss(m).backward()
        first = next(iter(m.parameters()))
        first.grad[0, 0] = float("nan")
        if self.needs_closure:
            pytest.skip("closure-driven optimizers recompute gradients inside step")
        try:
            opt.step()
        except (ValueError, RuntimeError, FloatingPointError) as exc:
            assert "nan" in str(exc).lower() or "finite" in str(exc).lower() or "inf" in str(exc).lower()
            return
        # if the optimizer does not raise, the NaN must show in the parameter (never silently finite)
        assert not torch.isfinite(first).all(), "a NaN gradient must raise or propagate, not vanish"
