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
``reads_gradients``
    ``False`` for zeroth-order optimizers that never read ``.grad`` (the rule on
    non-finite gradients is then skipped; their rule on non-finite losses is theirs).
``weight_decay_key``
    name of the weight-decay hyperparameter (``"weight_decay"``); ``None`` if the
    optimizer has none.  When it is in ``defaults`` the suite checks that NaN, inf
    and negative values are rejected at construction.

The rules checked: parameters move on a step; hyperparameters live in
``defaults`` and per-group values are honoured; state is lazy; a parameter whose
``grad`` is ``None`` is untouched and gets no state; ``step(closure)`` returns the
closure's loss and evaluates it with gradients enabled; ``state_dict`` round trip
gives an identical continuation; ``zero_grad`` works.  Bad input: a NaN, inf or
negative ``lr`` (and weight decay) is a ``ValueError`` at construction; a NaN/inf
gradient is a clear error (``ValueError`` or ``FloatingPointError`` naming the
problem) raised before ANY parameter or state changes, even when it sits in the
last parameter of a later param group (so every group is validated before the
first one is stepped).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import pytest
import torch

from ._state import assert_same_state


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
    #: False for zeroth-order optimizers that never read ``.grad``
    reads_gradients: bool = True
    #: the weight-decay hyperparameter's name, or None if there is none
    weight_decay_key: Optional[str] = "weight_decay"

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

    # -------------------------------------------------------------- bad input
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1e-3])
    def test_bad_lr_is_rejected_at_construction(self, bad):
        m = self.model()
        with pytest.raises(ValueError, match=r"(?i)lr|learning"):
            self.make(m.parameters(), lr=bad)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1])
    def test_bad_weight_decay_is_rejected_at_construction(self, bad):
        key = self.weight_decay_key
        if key is None or key not in self.make(self.model().parameters()).defaults:
            pytest.skip("this optimizer has no weight-decay hyperparameter")
        with pytest.raises(ValueError, match=r"(?i)decay|" + key):
            self.make(self.model().parameters(), **{key: bad})

    def _nonfinite_gradient_rule(self, value: float):
        if not self.reads_gradients:
            pytest.skip("zeroth-order optimizer: it never reads .grad")
        m1, m2 = self.model(0), self.model(3)
        opt = self.make([{"params": list(m1.parameters())}, {"params": list(m2.parameters())}])
        last = list(m2.parameters())[-1]

        def closure(poison: bool):
            def run():
                opt.zero_grad()
                loss = self._loss(m1) + self._loss(m2)
                if poison:
                    # finite loss, non-finite gradient in the LAST parameter of the LATER group:
                    # sqrt'(0) = inf, reached along two paths of opposite sign (inf - inf = nan) or one
                    u = last.reshape(-1)[0]
                    loss = loss + (u - u).sqrt() if value != value else loss + (u - u.detach()).sqrt()
                loss.backward()
                return loss

            return run

        # one ordinary step first, so that every group has state to protect
        if self.needs_closure:
            opt.step(closure(False))
        else:
            closure(False)()
            opt.step()
        params_before = self._params(m1) + self._params(m2)
        state_before = copy.deepcopy(opt.state_dict())
        with pytest.raises((ValueError, FloatingPointError)) as info:
            if self.needs_closure:
                opt.step(closure(True))
            else:
                run = closure(True)
                run()
                g = last.grad.reshape(-1)
                assert not torch.isfinite(g[0]), "test setup: the gradient must be non-finite"
                opt.step()
        msg = str(info.value).lower()
        assert "nan" in msg or "finite" in msg or "inf" in msg, f"the error must name the problem: {info.value}"
        for a, b in zip(params_before, self._params(m1) + self._params(m2)):
            assert torch.equal(a, b), "a failed step must leave every parameter (of every group) unchanged"
        assert_same_state(state_before, opt.state_dict(), "a failed step must leave optimizer state unchanged",
                          "state_dict")

    def test_nan_gradient_in_later_group_raises_before_anything_changes(self):
        self._nonfinite_gradient_rule(float("nan"))

    def test_inf_gradient_in_later_group_raises_before_anything_changes(self):
        self._nonfinite_gradient_rule(float("inf"))
