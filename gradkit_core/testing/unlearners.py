"""Conformance suite for unlearners (kind ``unlearners``).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_unlearners`)::

    model = gk.create(NAME, model, **kw).unlearn(forget, retain, **unlearn_kw)

* ``unlearn`` returns the unlearned model (an ``nn.Module`` with the same
  parameter names and shapes as the one passed in);
* an empty forget set is an error (``ValueError``) that says so;
* a forget / retain argument that is not an iterable of batches, or yields
  batches of the wrong type, is a clear ``TypeError`` / ``ValueError``;
* the result is deterministic under a seed: two runs from the same model and
  the same seeded loaders give identical parameters;
* no forward / backward hooks are left on the model and all parameters stay finite.

Subclass :class:`UnlearnerConformance` in a plugin's tests and provide three
fixtures (anything the method's batches need: ``(x, y)`` for classifiers, token
tensors for language models)::

    from gradkit_core.testing.unlearners import UnlearnerConformance

    class TestSalUn(UnlearnerConformance):
        component = "salun"
        component_kwargs = {"ratio": 0.5}
        unlearn_kwargs = {"epochs": 1}

        @pytest.fixture
        def make_model(self):        # a callable returning a fresh, identical model
            def make():
                torch.manual_seed(0)
                return SmallCNN()
            return make

        @pytest.fixture
        def forget_loader(self):     # re-iterable, seeded
            return loader(xf, yf, batch_size=16, seed=0)

        @pytest.fixture
        def retain_loader(self):
            return loader(xr, yr, batch_size=16, seed=0)

Override :meth:`make_unlearner` to build the method without the registry, and
:meth:`bad_batches` when a string batch would be valid for the method.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Iterable, List, Optional

import pytest


class UnlearnerConformance:
    #: registered component name (``None``: override :meth:`make_unlearner`)
    component: Optional[str] = None
    #: keyword arguments for ``create(name, model, **component_kwargs)``
    component_kwargs: Dict[str, Any] = {}
    #: keyword arguments for ``.unlearn(forget, retain, **unlearn_kwargs)`` (keep them small)
    unlearn_kwargs: Dict[str, Any] = {}
    #: whether a run must change at least one parameter (set False for a no-op baseline)
    changes_parameters: bool = True
    #: seed used by :meth:`seed_everything` before each run
    seed: int = 0

    # ------------------------------------------------------------------ hooks for subclasses
    @pytest.fixture
    def make_model(self):  # pragma: no cover - must be overridden
        pytest.fail("UnlearnerConformance subclasses provide a `make_model` fixture "
                    "returning a callable that builds a fresh model")

    @pytest.fixture
    def forget_loader(self):  # pragma: no cover - must be overridden
        pytest.fail("UnlearnerConformance subclasses provide a `forget_loader` fixture")

    @pytest.fixture
    def retain_loader(self):  # pragma: no cover - must be overridden
        pytest.fail("UnlearnerConformance subclasses provide a `retain_loader` fixture")

    def make_unlearner(self, model, **kwargs):
        """Build the unlearner for ``model`` (through the registry by default)."""
        import gradkit_core as gk

        if self.component is None:
            raise TypeError("set `component` on the conformance subclass or override make_unlearner()")
        return gk.create(self.component, model, kind="unlearners", **{**self.component_kwargs, **kwargs})

    def seed_everything(self, seed: int) -> None:
        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)

    def bad_batches(self) -> List[Iterable]:
        """Iterables whose batches the method cannot use (each must raise TypeError or ValueError)."""
        return [["not a batch", "still not a batch"], [object(), object()]]

    def run_unlearn(self, model, forget, retain, **kwargs):
        self.seed_everything(self.seed)
        unlearner = self.make_unlearner(model)
        return unlearner.unlearn(forget, retain, **{**self.unlearn_kwargs, **kwargs})

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _snapshot(model) -> Dict[str, Any]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    @staticmethod
    def _hook_count(model) -> int:
        n = 0
        for m in model.modules():
            n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            n += len(getattr(m, "_backward_pre_hooks", {}))
        for p in model.parameters():
            hooks = getattr(p, "_backward_hooks", None)
            n += len(hooks) if hooks else 0
        return n

    # ------------------------------------------------------------------ the contract
    def test_registered_as_unlearner(self):
        if self.component is None:
            pytest.skip("no registered name to look up")
        import gradkit_core as gk

        spec = gk.info(self.component, kind="unlearners")
        assert spec.kind == "unlearners"
        assert spec.summary, "an unlearner needs a one-line summary"

    def test_unlearn_returns_the_model(self, make_model, forget_loader, retain_loader):
        import torch

        model = make_model()
        before = self._snapshot(model)
        out = self.run_unlearn(model, forget_loader, retain_loader)
        assert isinstance(out, torch.nn.Module), f"unlearn() must return the model, got {type(out).__name__}"
        after = out.state_dict()
        assert set(after) == set(before), "the returned model must have the same parameter/buffer names"
        for k, v in before.items():
            assert after[k].shape == v.shape, f"{k} changed shape from {tuple(v.shape)} to {tuple(after[k].shape)}"
        for k, p in out.named_parameters():
            assert torch.isfinite(p).all(), f"parameter {k} is not finite after unlearning"
        if self.changes_parameters:
            changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(after[k], v)]
            assert changed, "unlearning changed no parameter at all"

    def test_no_hooks_left(self, make_model, forget_loader, retain_loader):
        model = make_model()
        n0 = self._hook_count(model)
        out = self.run_unlearn(model, forget_loader, retain_loader)
        assert self._hook_count(model) == n0, "unlearn() left hooks on the input model"
        assert self._hook_count(out) == n0, "unlearn() left hooks on the returned model"

    def test_deterministic_under_seed(self, make_model, forget_loader, retain_loader):
        """Two runs from the same model on copies of the same seeded loaders agree exactly.

        The loaders are deep-copied so that a shuffling DataLoader's generator starts
        from the same state in both runs.
        """
        import copy

        import torch

        a = self.run_unlearn(make_model(), copy.deepcopy(forget_loader), copy.deepcopy(retain_loader))
        sa = self._snapshot(a)
        b = self.run_unlearn(make_model(), copy.deepcopy(forget_loader), copy.deepcopy(retain_loader))
        sb = b.state_dict()
        for k, v in sa.items():
            assert torch.equal(v, sb[k]), f"two seeded runs differ in {k}"

    @pytest.mark.parametrize("empty", ["list", "loader"])
    def test_empty_forget_set_is_an_error(self, make_model, retain_loader, empty):
        if empty == "list":
            forget: Any = []
        else:
            import torch
            from torch.utils.data import DataLoader, TensorDataset

            forget = DataLoader(TensorDataset(torch.zeros(0, 1), torch.zeros(0, dtype=torch.long)), batch_size=4)
        with pytest.raises(ValueError, match="(?i)forget"):
            self.run_unlearn(make_model(), forget, retain_loader)

    @pytest.mark.parametrize("bad", [None, 3, 2.5])
    def test_forget_not_iterable_is_an_error(self, make_model, retain_loader, bad):
        with pytest.raises((TypeError, ValueError), match="(?i)forget"):
            self.run_unlearn(make_model(), bad, retain_loader)

    @pytest.mark.parametrize("bad", [3, 2.5])
    def test_retain_not_iterable_is_an_error(self, make_model, forget_loader, bad):
        with pytest.raises((TypeError, ValueError), match="(?i)retain"):
            self.run_unlearn(make_model(), forget_loader, bad)

    def test_bad_batches_are_an_error(self, make_model, retain_loader):
        for bad in self.bad_batches():
            with pytest.raises((TypeError, ValueError)):
                self.run_unlearn(make_model(), bad, retain_loader)

    def test_input_loaders_reusable(self, make_model, forget_loader, retain_loader):
        """The loaders are only iterated, never consumed or mutated: a second run sees the same data."""
        n_f = sum(1 for _ in forget_loader)
        n_r = sum(1 for _ in retain_loader)
        self.run_unlearn(make_model(), forget_loader, retain_loader)
        assert sum(1 for _ in forget_loader) == n_f
        assert sum(1 for _ in retain_loader) == n_r
