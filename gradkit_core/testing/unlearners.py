"""Conformance suite for unlearners (kind ``unlearners``).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_unlearners`)::

    unlearner = gk.create(NAME, model, **hyperparameters)   # bad / non-finite hyperparameters: ValueError here
    model = unlearner.unlearn(forget, retain=None, *, epochs=None, max_steps=None, seed=None)

Rules checked here:

* ``unlearn`` returns the unlearned model (an ``nn.Module`` with the same parameter
  names and shapes), all parameters finite, no hooks left behind;
* budget: ``epochs`` (passes over the forget set) and ``max_steps`` (cap on update
  steps) may be given alone, together (whichever ends first) or not at all (the
  method's default budget); afterwards ``unlearner.last_run`` is a dict with at least
  ``steps`` (int), ``epochs`` (completed passes, float) and ``stopped_by``
  (``"epochs"``, ``"max_steps"`` or a method-specific reason), and it agrees with
  the budget that was asked for; a bad budget (0, negative, bool, float steps) is a
  ``ValueError``;
* ``seed``: two runs with the same ``seed`` give identical parameters whatever the
  global RNG state was before, and the caller's global torch RNG state is the same
  after the run as before it;
* ``retain=None`` works for methods that do not use retain data
  (``uses_retain = False``) and is a ``ValueError`` naming the retain set otherwise;
  an empty forget set, or an empty retain set for a method that needs one, is a
  ``ValueError``; arguments that are not iterables of batches are clear errors;
* bad input is a ``ValueError`` naming the problem and leaves every parameter as it
  was, even when the bad batch comes after a good one: NaN / inf inputs,
  out-of-range labels (classifiers), out-of-vocabulary or negative token ids and an
  all-False ``forget_mask`` (language models);
* non-finite or out-of-range hyperparameters (``bad_hyperparameters``) raise
  ``ValueError`` at construction.

Batch formats: classifiers take ``(x, y)`` tuples / lists of tensors; language
models take a dict ``{"input_ids": LongTensor (B, T), "attention_mask"?: (B, T),
"forget_mask"?: bool (B, T)}`` or a bare ``input_ids`` LongTensor.  The suite infers
the format from the first forget batch.

Subclass :class:`UnlearnerConformance` in a plugin's tests and provide three
fixtures (keep the data tiny: every rule runs the method)::

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
        def forget_loader(self):     # re-iterable, at least 2 batches
            return loader(xf, yf, batch_size=16, seed=0)

        @pytest.fixture
        def retain_loader(self):
            return loader(xr, yr, batch_size=16, seed=0)

Override :meth:`make_unlearner` to build the method without the registry,
:meth:`bad_batches` when a string batch would be valid for the method and
:meth:`bad_input_cases` to add method-specific bad batches.
"""

from __future__ import annotations

import math
import random
from typing import Any, Dict, Iterable, List, Optional, Tuple

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
    #: whether the method trains on the retain set (False: ``retain=None`` must work)
    uses_retain: bool = True
    #: whether a forget batch of a language model may carry a ``forget_mask`` (all-False must raise)
    uses_forget_mask: bool = True
    #: hyperparameter sets that must raise ``ValueError`` at construction
    bad_hyperparameters: List[Dict[str, Any]] = [{"lr": float("nan")}, {"lr": float("inf")}, {"lr": -1.0}]
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

    def bad_input_cases(self, good: Any) -> List[Tuple[str, Any, str]]:
        """``(label, bad_batch, regex the error message must match)`` built from a good forget batch.

        The defaults cover both batch formats of the contract; a subclass may extend the list.
        """
        import torch

        cases: List[Tuple[str, Any, str]] = []
        if isinstance(good, (tuple, list)):  # classifier (x, y)
            x, y = good[0], good[1]
            if x.is_floating_point():
                for label, val in (("nan input", float("nan")), ("inf input", float("inf"))):
                    xb = x.clone()
                    xb.view(-1)[0] = val
                    cases.append((label, type(good)([xb, y, *good[2:]]), r"(?i)(nan|inf|finite)"))
            for label, val in (("label too large", 10**6), ("negative label", -1)):
                yb = y.clone()
                yb[0] = val
                cases.append((label, type(good)([x, yb, *good[2:]]), r"(?i)(label|class|range)"))
            return cases
        if isinstance(good, torch.Tensor):
            good = {"input_ids": good}
        if isinstance(good, dict):
            ids = good["input_ids"]
            for label, val in (("token id out of vocabulary", 10**6), ("negative token id", -1)):
                b = dict(good)
                bad_ids = ids.clone()
                bad_ids[0, -1] = val
                b["input_ids"] = bad_ids
                cases.append((label, b, r"(?i)(vocab|range|token id)"))
            b = dict(good)
            b["input_ids"] = ids.float()
            cases.append(("float input_ids", b, r"(?i)(input_ids|integer|long)"))
            if self.uses_forget_mask:
                b = dict(good)
                b["forget_mask"] = torch.zeros(ids.shape, dtype=torch.bool)
                cases.append(("all-False forget_mask", b, r"(?i)forget_mask"))
        return cases

    def run_unlearn(self, model, forget, retain, **kwargs):
        self.seed_everything(self.seed)
        unlearner = self.make_unlearner(model)
        return unlearner.unlearn(forget, retain, **{**self.unlearn_kwargs, **kwargs})

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _snapshot(model) -> Dict[str, Any]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    @staticmethod
    def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
        import torch

        return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

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

    def _budget_kwargs(self) -> Dict[str, Any]:
        """``unlearn_kwargs`` without its budget and seed keywords."""
        return {k: v for k, v in self.unlearn_kwargs.items() if k not in ("epochs", "max_steps", "seed")}

    def _run_with(self, model, forget, retain, **kw):
        """A run with exactly the given budget / seed (``unlearn_kwargs``' own budget removed)."""
        self.seed_everything(self.seed)
        unlearner = self.make_unlearner(model)
        out = unlearner.unlearn(forget, retain, **{**self._budget_kwargs(), **kw})
        return unlearner, out

    @staticmethod
    def _check_last_run(unlearner) -> Dict[str, Any]:
        run = getattr(unlearner, "last_run", None)
        assert isinstance(run, dict), "after unlearn() the unlearner must expose `last_run`, a dict"
        for key in ("steps", "epochs", "stopped_by"):
            assert key in run, f"last_run lacks {key!r}: {run}"
        assert isinstance(run["steps"], int) and run["steps"] >= 1, f"last_run['steps'] must be an int >= 1: {run}"
        assert isinstance(run["epochs"], float) and math.isfinite(run["epochs"]) and run["epochs"] > 0, \
            f"last_run['epochs'] must be a positive float (completed passes): {run}"
        assert isinstance(run["stopped_by"], str) and run["stopped_by"], f"last_run['stopped_by'] must name a reason: {run}"
        return run

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

    # -------------------------------------------------------------- budget
    def test_max_steps_caps_the_run_and_is_reported(self, make_model, forget_loader, retain_loader):
        u, _ = self._run_with(make_model(), forget_loader, retain_loader, max_steps=2)
        run = self._check_last_run(u)
        assert run["steps"] == 2, f"max_steps=2 must give exactly 2 steps on this data, got {run}"
        assert run["stopped_by"] == "max_steps", f"a run cut by max_steps must say so: {run}"

    def test_one_epoch_is_one_pass_and_is_reported(self, make_model, forget_loader, retain_loader):
        u, _ = self._run_with(make_model(), forget_loader, retain_loader, epochs=1)
        run = self._check_last_run(u)
        assert run["epochs"] == 1.0 and run["stopped_by"] == "epochs", f"epochs=1 must complete one pass: {run}"
        steps_per_epoch = run["steps"]
        u2, _ = self._run_with(make_model(), forget_loader, retain_loader, epochs=2)
        run2 = self._check_last_run(u2)
        assert run2["epochs"] == 2.0 and run2["steps"] == 2 * steps_per_epoch, \
            f"epochs=2 must run twice the steps of epochs=1 ({steps_per_epoch}): {run2}"

    def test_epochs_and_max_steps_whichever_ends_first(self, make_model, forget_loader, retain_loader):
        u, _ = self._run_with(make_model(), forget_loader, retain_loader, epochs=1)
        per_epoch = self._check_last_run(u)["steps"]
        u, _ = self._run_with(make_model(), forget_loader, retain_loader, epochs=3, max_steps=per_epoch + 1)
        run = self._check_last_run(u)
        assert run["steps"] == per_epoch + 1 and run["stopped_by"] == "max_steps", run
        assert abs(run["epochs"] - (per_epoch + 1) / per_epoch) < 1e-9, \
            f"completed epochs must be reported as a fraction ({per_epoch + 1} steps, {per_epoch} per epoch): {run}"
        u, _ = self._run_with(make_model(), forget_loader, retain_loader, epochs=1, max_steps=10**6)
        run = self._check_last_run(u)
        assert run["steps"] == per_epoch and run["stopped_by"] == "epochs", run

    def test_default_budget_is_reported(self, make_model, forget_loader, retain_loader):
        u, _ = self._run_with(make_model(), forget_loader, retain_loader)
        self._check_last_run(u)

    @pytest.mark.parametrize("bad", [{"epochs": 0}, {"epochs": -1}, {"epochs": True}, {"max_steps": 0},
                                     {"max_steps": 2.5}, {"max_steps": float("nan")}, {"epochs": float("inf")}])
    def test_bad_budget_is_an_error(self, make_model, forget_loader, retain_loader, bad):
        model = make_model()
        before = self._snapshot(model)
        with pytest.raises(ValueError, match="(?i)(epochs|max_steps)"):
            self._run_with(model, forget_loader, retain_loader, **bad)
        assert self._same(before, self._snapshot(model)), "a rejected budget must leave the model unchanged"

    # -------------------------------------------------------------- seed
    def test_seed_makes_runs_identical_and_keeps_global_rng(self, make_model, forget_loader, retain_loader):
        import copy

        import torch

        outs = []
        for global_seed in (123, 456):
            unlearner = self.make_unlearner(make_model())
            forget, retain = copy.deepcopy(forget_loader), copy.deepcopy(retain_loader)
            torch.manual_seed(global_seed)
            state = torch.get_rng_state()
            out = unlearner.unlearn(forget, retain, **{**self.unlearn_kwargs, "seed": 7})
            assert torch.equal(torch.get_rng_state(), state), \
                "unlearn(seed=...) must leave the caller's global torch RNG state as it was"
            outs.append(self._snapshot(out))
        for k in outs[0]:
            assert torch.equal(outs[0][k], outs[1][k]), f"two runs with seed=7 differ in {k} (global RNG leaked in)"

    @pytest.mark.parametrize("bad", [-1, 2.5, "0", True])
    def test_bad_seed_is_an_error(self, make_model, forget_loader, retain_loader, bad):
        with pytest.raises((TypeError, ValueError), match="(?i)seed"):
            self._run_with(make_model(), forget_loader, retain_loader, seed=bad)

    # -------------------------------------------------------------- data sets
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

    def test_retain_none_and_empty(self, make_model, forget_loader):
        if self.uses_retain:
            for retain in (None, []):
                model = make_model()
                before = self._snapshot(model)
                with pytest.raises(ValueError, match="(?i)retain"):
                    self.run_unlearn(model, forget_loader, retain)
                assert self._same(before, self._snapshot(model))
        else:
            import torch

            out = self.run_unlearn(make_model(), forget_loader, None)
            assert all(torch.isfinite(p).all() for p in out.parameters())

    def test_bad_batches_are_an_error(self, make_model, retain_loader):
        for bad in self.bad_batches():
            with pytest.raises((TypeError, ValueError)):
                self.run_unlearn(make_model(), bad, retain_loader)

    def test_bad_input_is_an_error_and_changes_nothing(self, make_model, forget_loader, retain_loader):
        """Each bad forget batch, placed after a good one, raises a ValueError naming the problem,
        and the model's parameters are exactly as before the call."""
        good = next(iter(forget_loader))
        cases = self.bad_input_cases(good)
        assert cases, "no bad-input cases could be built from the forget batches"
        for label, bad, pattern in cases:
            model = make_model()
            before = self._snapshot(model)
            with pytest.raises(ValueError, match=pattern):
                self.run_unlearn(model, [good, bad], retain_loader)
            assert self._same(before, self._snapshot(model)), f"{label}: a failed run changed the model"

    def test_bad_retain_input_is_an_error(self, make_model, forget_loader, retain_loader):
        if not self.uses_retain:
            pytest.skip("the method does not use retain data")
        good = next(iter(retain_loader))
        for label, bad, pattern in self.bad_input_cases(good):
            if "forget_mask" in label:
                continue
            model = make_model()
            before = self._snapshot(model)
            with pytest.raises(ValueError, match=pattern):
                self.run_unlearn(model, forget_loader, [good, bad])
            assert self._same(before, self._snapshot(model)), f"retain {label}: a failed run changed the model"

    def test_bad_hyperparameters_raise_at_construction(self, make_model):
        for bad in self.bad_hyperparameters:
            with pytest.raises(ValueError):
                self.make_unlearner(make_model(), **bad)

    def test_input_loaders_reusable(self, make_model, forget_loader, retain_loader):
        """The loaders are only iterated, never consumed or mutated: a second run sees the same data."""
        n_f = sum(1 for _ in forget_loader)
        n_r = sum(1 for _ in retain_loader)
        self.run_unlearn(make_model(), forget_loader, retain_loader)
        assert sum(1 for _ in forget_loader) == n_f
        assert sum(1 for _ in retain_loader) == n_r
