"""Conformance suite for gradient transforms (kind ``transforms``).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_transforms`).  A transform is
not an optimizer: it rewrites what lands in ``p.grad`` and never changes a parameter.  Two forms:

**Aggregators** (multi-task: gcond, linear-sum, pcgrad, cagrad, gradnorm)::

    agg = gk.create(NAME, model, loss_fns={"a": fa, "b": fb}, lambdas={"a": 1.0, "b": 0.5},
                    accumulation_steps=2, **hp)
    opt.zero_grad()
    stats = agg.step(data_provider)      # data_provider() -> (inputs, targets)
    opt.step()

* ``step`` pulls ``accumulation_steps`` micro-batches, accumulates one gradient per task
  (of ``lambda_i * L_i``), combines them (``combine``), writes the result into ``.grad`` of
  every trainable parameter of ``model`` (a parameter with ``requires_grad=False`` keeps
  ``grad=None``) and returns a dict of statistics; the parameters themselves do not change;
* when all tasks agree (identical losses) the written gradient points along the gradient of
  the summed loss (cosine > 0.99; sign-type outputs, ``keeps_direction = False``: a descent
  direction, cosine > 0), nonzero and finite;
* ``state_dict()`` / ``load_state_dict()`` round-trip to an identical continuation;
* a non-finite task loss or task gradient is a ``ValueError`` naming the problem, raised
  before ``.grad`` or the transform's state change; a NaN, inf or negative ``lambdas`` entry,
  and NaN/inf in each hyperparameter listed in ``finite_hyperparameters``, is a
  ``ValueError`` at construction.

**Layer wrappers** (tract)::

    wrapped = gk.create(NAME, layer, **hp)      # an nn.Module sharing layer's parameters

* the wrapper's forward equals the layer's; its backward writes a finite weight gradient
  into the SHARED parameters that differs from the plain one (an identity wrapper fails);
* wrapping twice is the same as wrapping once (same module behaviour, same gradients);
* the wrapper's ``state_dict`` has the layer's keys and values;
* a non-finite input, or a non-finite gradient arriving in backward, is a ``ValueError``
  that leaves the layer's ``.grad`` as it was; NaN/inf in each hyperparameter listed in
  ``finite_hyperparameters`` is a ``ValueError`` at construction.

Subclass :class:`TransformConformance` in a plugin's tests::

    from gradkit_core.testing.transforms import TransformConformance

    class TestGCondConformance(TransformConformance):
        component = "gcond"
        component_kwargs = {}
        finite_hyperparameters = ("momentum_beta", "eps")

    class TestTrActConformance(TransformConformance):
        component = "tract"
        form = "wrapper"
        component_kwargs = {"lam": 0.1}
        finite_hyperparameters = ("lam",)

Override :meth:`make` (aggregators) or :meth:`make_wrapper` / :meth:`make_layer` (wrappers) to
build the component without the registry or on another model.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
import torch.nn as nn

from ._state import assert_same_state

NONFINITE = (float("nan"), float("inf"))


class _Model(nn.Module):
    """Linear(5, 8) - tanh - Linear(8, 2), plus a frozen parameter the forward does not use."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = nn.Linear(5, 8)
        self.head = nn.Linear(8, 2)
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)
        with torch.no_grad():
            for p in (self.body.weight, self.body.bias, self.head.weight, self.head.bias):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


class _Provider:
    """Deterministic micro-batches: ``same=True`` repeats one batch, otherwise cycles through eight."""

    def __init__(self, seed: int = 1, same: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.batches = [(torch.randn(12, 5, generator=g), torch.randn(12, 2, generator=g)) for _ in range(8)]
        self.same, self.i = same, 0

    def __call__(self):
        b = self.batches[0 if self.same else self.i % len(self.batches)]
        self.i += 1
        return b


class _Losses:
    """Two task losses on the model's two outputs (``agree=True``: the same loss twice).

    ``poison`` = ``"loss"`` makes task b's loss NaN; ``"grad"`` keeps every loss finite but makes
    task b's gradient NaN (``sqrt`` at 0 reached along two paths: ``inf - inf``)."""

    def __init__(self, model: nn.Module, agree: bool = False):
        self.model, self.agree, self.poison = model, agree, None

    def a(self, out, y):
        return ((out - y) ** 2).mean() if self.agree else ((out[:, 0] - y[:, 0]) ** 2).mean()

    def b(self, out, y):
        loss = ((out - y) ** 2).mean() if self.agree else ((out[:, 1] + y[:, 0]) ** 2).mean()
        if self.poison == "loss":
            loss = loss * float("nan")
        elif self.poison == "grad":
            u = next(p for p in self.model.parameters() if p.requires_grad).reshape(-1)[0]
            loss = loss + (u - u).sqrt()
        return loss

    def fns(self):
        return {"a": self.a, "b": self.b}


class TransformConformance:
    component: Optional[str] = None
    component_kwargs: Dict[str, Any] = {}
    #: ``"aggregator"`` (multi-task, ``step(data_provider)``) or ``"wrapper"`` (layer wrapper)
    form: str = "aggregator"
    #: hyperparameters (keyword names) that must reject NaN and inf at construction
    finite_hyperparameters: Tuple[str, ...] = ()
    #: aggregators: micro-batches per step (must suit the component, e.g. divisible by 2 tasks)
    accumulation_steps: int = 2
    #: aggregators: ``False`` for sign-type outputs (e.g. GCond's ``use_lion``), which only need a descent
    #: direction (cosine > 0) with agreeing tasks instead of the summed gradient's direction (cosine > 0.99)
    keeps_direction: bool = True

    # ------------------------------------------------------------------ construction
    def make(self, model: nn.Module, loss_fns, lambdas=None, **overrides):
        import gradkit_core as gk

        kw = dict(self.component_kwargs)
        kw.update(overrides)
        return gk.create(self.component, model, loss_fns=loss_fns, lambdas=lambdas,
                         accumulation_steps=self.accumulation_steps, kind="transforms", **kw)

    def make_layer(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Linear(6, 4)

    def make_wrapper(self, layer: nn.Module, **overrides) -> nn.Module:
        import gradkit_core as gk

        kw = dict(self.component_kwargs)
        kw.update(overrides)
        return gk.create(self.component, layer, kind="transforms", **kw)

    def wrapper_input(self, seed: int = 2) -> torch.Tensor:
        return torch.randn(16, 6, generator=torch.Generator().manual_seed(seed))

    def _need(self, form: str) -> None:
        if self.form not in ("aggregator", "wrapper"):
            raise ValueError(f"form must be 'aggregator' or 'wrapper', got {self.form!r}")
        if self.form != form:
            pytest.skip(f"rule for {form}s; this transform is a {self.form}")

    @staticmethod
    def _grads(model: nn.Module) -> List[Optional[torch.Tensor]]:
        return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]

    # ================================================================== aggregators
    def test_step_writes_grad_of_every_trainable_param_and_never_moves_them(self):
        self._need("aggregator")
        model = _Model()
        losses = _Losses(model)
        agg = self.make(model, losses.fns())
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.full_like(p, 123.0)  # a sentinel the transform must overwrite
        before = [p.detach().clone() for p in model.parameters()]
        stats = agg.step(_Provider())
        assert isinstance(stats, dict), "step(data_provider) returns a dict of statistics"
        for p, b in zip(model.parameters(), before):
            assert torch.equal(p.detach(), b), "a transform must not change parameters (the optimizer does)"
            if not p.requires_grad:
                assert p.grad is None, "a parameter with requires_grad=False gets no gradient"
                continue
            assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == p.dtype
            assert torch.isfinite(p.grad).all()
            assert not torch.equal(p.grad, torch.full_like(p, 123.0)), "step must write .grad"

    def test_agreeing_tasks_give_the_gradient_direction_of_their_sum(self):
        self._need("aggregator")
        model = _Model()
        losses = _Losses(model, agree=True)
        agg = self.make(model, losses.fns())
        provider = _Provider(same=True)
        agg.step(provider)
        written = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad]).double()
        x, y = provider.batches[0]
        model.zero_grad()
        (losses.a(model(x), y) + losses.b(model(x), y)).backward()
        true = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad]).double()
        assert torch.isfinite(written).all() and float(written.norm()) > 0, "the written gradient is zero or NaN"
        cos = float(written @ true / (written.norm() * true.norm()))
        assert cos > 0, f"tasks that agree must give a descent direction of their summed loss (cosine {cos:.4f})"
        if self.keeps_direction:
            assert cos > 0.99, f"tasks that agree must give the direction of their summed gradient (cosine {cos:.4f})"

    def test_state_dict_round_trip_continues_identically(self):
        self._need("aggregator")
        model_a = _Model()
        losses_a = _Losses(model_a)
        agg_a = self.make(model_a, losses_a.fns())
        prov_a = _Provider(seed=5)
        for _ in range(3):
            agg_a.step(prov_a)
        sd = copy.deepcopy(agg_a.state_dict())
        assert isinstance(sd, dict)
        model_b = copy.deepcopy(model_a)
        losses_b = _Losses(model_b)
        agg_b = self.make(model_b, losses_b.fns())
        agg_b.load_state_dict(sd)
        prov_b = _Provider(seed=5)
        prov_b.i = prov_a.i
        for _ in range(3):
            agg_a.step(prov_a)
            agg_b.step(prov_b)
            for pa, pb in zip(model_a.parameters(), model_b.parameters()):
                if pa.requires_grad:
                    assert torch.allclose(pa.grad, pb.grad, rtol=0, atol=1e-7), \
                        "state_dict round trip must continue identically"

    def _nonfinite_rule(self, poison: str):
        self._need("aggregator")
        model = _Model()
        losses = _Losses(model)
        agg = self.make(model, losses.fns())
        provider = _Provider(seed=7)
        for _ in range(2):
            agg.step(provider)
        grads = self._grads(model)
        state = copy.deepcopy(agg.state_dict())
        losses.poison = poison
        with pytest.raises(ValueError) as info:
            agg.step(provider)
        msg = str(info.value).lower()
        assert "nan" in msg or "finite" in msg or "inf" in msg, f"the error must name the problem: {info.value}"
        for g, p in zip(grads, model.parameters()):
            assert (g is None and p.grad is None) or torch.equal(g, p.grad), "a failed step must leave .grad"
        assert_same_state(state, agg.state_dict(), "a failed call must leave the transform's state unchanged")
        losses.poison = None
        agg.step(provider)  # and the transform still works afterwards

    def test_nonfinite_task_loss_is_a_value_error_that_changes_nothing(self):
        self._nonfinite_rule("loss")

    def test_nonfinite_task_gradient_is_a_value_error_that_changes_nothing(self):
        self._nonfinite_rule("grad")

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
    def test_bad_lambda_is_rejected_at_construction(self, bad):
        self._need("aggregator")
        model = _Model()
        with pytest.raises(ValueError, match=r"(?i)lambda"):
            self.make(model, _Losses(model).fns(), lambdas={"a": 1.0, "b": bad})

    # ================================================================== layer wrappers
    def test_wrapper_shares_parameters_keeps_forward_and_changes_the_weight_gradient(self):
        self._need("wrapper")
        layer = self.make_layer()
        plain = copy.deepcopy(layer)
        wrapped = self.make_wrapper(layer)
        ids = {id(p) for p in layer.parameters()}
        assert {id(p) for p in wrapped.parameters()} == ids, "the wrapper must share the layer's parameters"
        x = self.wrapper_input()
        out = wrapped(x)
        assert torch.allclose(out, plain(x), atol=1e-6), "a wrapper changes the backward, not the forward"
        gz = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        out.backward(gz)
        plain(x).backward(gz)
        assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
        assert not torch.allclose(layer.weight.grad, plain.weight.grad), \
            "the wrapper must transform the weight gradient (an identity wrapper fails this rule)"

    def test_wrapping_twice_is_wrapping_once(self):
        self._need("wrapper")
        once_layer, twice_layer = self.make_layer(), self.make_layer()
        once = self.make_wrapper(once_layer)
        twice = self.make_wrapper(self.make_wrapper(twice_layer))
        assert len(list(twice.parameters())) == len(list(once.parameters()))
        x = self.wrapper_input()
        gz = torch.randn(once(x).shape, generator=torch.Generator().manual_seed(3))
        once(x).backward(gz)
        twice(x).backward(gz)
        for a, b in zip(once_layer.parameters(), twice_layer.parameters()):
            assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-7), "wrapping twice must equal wrapping once"

    def test_wrapper_state_dict_is_the_layers(self):
        self._need("wrapper")
        layer = self.make_layer()
        wrapped = self.make_wrapper(layer)
        sd, ref = wrapped.state_dict(), layer.state_dict()
        assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
        fresh = self.make_wrapper(self.make_layer(seed=9))
        fresh.load_state_dict(sd)
        x = self.wrapper_input()
        assert torch.allclose(fresh(x), wrapped(x))

    def test_wrapper_nonfinite_input_or_gradient_is_a_value_error(self):
        self._need("wrapper")
        layer = self.make_layer()
        wrapped = self.make_wrapper(layer)
        x = self.wrapper_input()
        wrapped(x).sum().backward()
        grads = self._grads(layer)
        bad = x.clone()
        bad.view(-1)[3] = float("nan")
        with pytest.raises(ValueError, match=r"(?i)nan|finite|inf"):
            wrapped(bad).sum().backward()
        out = wrapped(x)
        gz = torch.ones_like(out)
        gz.view(-1)[0] = float("inf")
        with pytest.raises(ValueError, match=r"(?i)nan|finite|inf"):
            out.backward(gz)
        for g, p in zip(grads, layer.parameters()):
            assert torch.equal(g, p.grad), "a failed backward must leave the layer's .grad as it was"

    # ================================================================== both
    @pytest.mark.parametrize("bad", NONFINITE)
    def test_nonfinite_hyperparameters_are_rejected_at_construction(self, bad):
        if self.form not in ("aggregator", "wrapper"):
            raise ValueError(f"form must be 'aggregator' or 'wrapper', got {self.form!r}")
        if not self.finite_hyperparameters:
            pytest.skip("no hyperparameters listed in finite_hyperparameters")
        for name in self.finite_hyperparameters:
            with pytest.raises(ValueError, match=name):
                if self.form == "wrapper":
                    self.make_wrapper(self.make_layer(), **{name: bad})
                else:
                    model = _Model()
                    self.make(model, _Losses(model).fns(), **{name: bad})
