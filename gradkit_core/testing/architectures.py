"""Conformance suite for kind ``architectures`` (``torch.nn.Module`` factories).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_architectures`): the target is an
``nn.Module`` subclass or a factory returning one; constructor arguments are keyword hyperparameters.

Subclass :class:`ArchitectureConformance` and set ``component`` (registered name) and
``component_kwargs`` (small hyperparameters), and implement :meth:`example_input` (a batch the
module takes: a float tensor, or token ids for a language model). Override :meth:`bad_inputs` to
add inputs of the method's own kind that must be refused.

The rules checked: ``create`` returns an ``nn.Module`` and refuses an unknown hyperparameter; the
forward output is finite and, in eval mode, deterministic; every trainable parameter that the
output depends on gets a finite gradient, and at least one does; two instances built under the same
seed are identical, and ``load_state_dict`` of one into another built under a different seed gives
the same outputs; NaN/inf in a float input, a wrong feature dimension and a negative token id (plus
whatever :meth:`bad_inputs` adds) are clear errors (``ValueError`` / ``TypeError`` / ``IndexError``
with a message naming the problem), never NaN outputs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest
import torch


class ArchitectureConformance:
    #: registered component name (``None``: override :meth:`make`)
    component: Optional[str] = None
    #: keyword hyperparameters for ``create(component, **component_kwargs)`` (keep them tiny)
    component_kwargs: Dict[str, Any] = {}
    #: names of parameters allowed to get no gradient from :meth:`loss` (e.g. unused heads)
    unused_parameters: tuple = ()

    # ------------------------------------------------------------------ hooks for subclasses
    def make(self, seed: int = 0, **overrides) -> torch.nn.Module:
        import gradkit_core as gk

        if self.component is None:
            raise TypeError("set `component` on the ArchitectureConformance subclass or override make()")
        torch.manual_seed(seed)
        return gk.create(self.component, kind="architectures", **{**self.component_kwargs, **overrides})

    def example_input(self) -> torch.Tensor:  # pragma: no cover - must be overridden
        pytest.fail("ArchitectureConformance subclasses implement example_input() (a batch the module takes)")

    def output(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The tensor the rules look at (override when forward returns a tuple or a dict)."""
        out = module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(123)
        w = torch.randn(out.shape, generator=g, dtype=out.dtype)
        return (out * w).sum()

    def bad_inputs(self) -> List[torch.Tensor]:
        """Inputs that must be refused with a clear error. Default, for a float input: NaN, inf, and a
        wrong feature (last) dimension; for token ids: a negative id. Extend it with what else your
        module cannot take (wrong rank, too long a sequence, ids past the vocabulary, ...)."""
        x = self.example_input()
        if x.is_floating_point():
            nan, inf = x.clone(), x.clone()
            nan.view(-1)[0] = float("nan")
            inf.view(-1)[-1] = float("inf")
            bad = [nan, inf]
            if x.shape[-1] > 1:
                bad.append(x[..., :-1])
            return bad
        neg = x.clone()
        neg.view(-1)[0] = -1
        return [neg]

    # ------------------------------------------------------------------ rules
    def test_create_returns_a_module_and_refuses_unknown_hyperparameters(self):
        m = self.make()
        assert isinstance(m, torch.nn.Module)
        with pytest.raises(TypeError, match="no_such_hyperparameter"):
            self.make(no_such_hyperparameter=1)

    def test_forward_is_finite_and_deterministic_in_eval_mode(self):
        m = self.make().eval()
        x = self.example_input()
        with torch.no_grad():
            a, b = self.output(m, x), self.output(m, x)
        assert torch.isfinite(a).all(), "forward produced non-finite values on an ordinary input"
        assert torch.equal(a, b), "eval-mode forward must be deterministic"

    def test_gradients_reach_the_parameters_and_are_finite(self):
        m = self.make().train()
        out = self.output(m, self.example_input())
        self.loss(out).backward()
        got = 0
        for name, p in m.named_parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                assert name in self.unused_parameters, f"parameter {name!r} gets no gradient"
                continue
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name!r}"
            got += int(p.grad.abs().sum() > 0)
        assert got > 0, "no parameter received a non-zero gradient"

    def test_same_seed_same_module_and_state_dict_round_trip(self):
        x = self.example_input()
        a, b, c = self.make(seed=0).eval(), self.make(seed=0).eval(), self.make(seed=1).eval()
        with torch.no_grad():
            ya, yb = self.output(a, x), self.output(b, x)
            assert torch.equal(ya, yb), "two instances built under the same seed differ"
            c.load_state_dict(a.state_dict())
            assert torch.equal(self.output(c, x), ya), "load_state_dict did not reproduce the outputs"

    def test_bad_inputs_are_clear_errors(self):
        m = self.make().eval()
        for x in self.bad_inputs():
            with pytest.raises((ValueError, TypeError, IndexError)) as info:
                with torch.no_grad():
                    out = self.output(m, x)
                    if isinstance(out, torch.Tensor) and out.is_floating_point() and not torch.isfinite(out).all():
                        pytest.fail(f"input of shape {tuple(x.shape)} gave non-finite output instead of an error")
            assert str(info.value).strip(), "the error must say what was wrong"
