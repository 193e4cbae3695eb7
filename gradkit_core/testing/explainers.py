"""Conformance suite for explainers (kind ``explainers``).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_explainers`)::

    with gk.create(NAME, model, target_layer=layer, **kw) as cam:
        maps = cam(x, targets=classes)

* ``maps`` is a floating-point tensor ``(B, H, W)`` with values in ``[0, 1]`` on
  ``x``'s device, for an input ``x`` of shape ``(B, C, H, W)``;
* ``targets=None`` explains the predicted class (``argmax`` of the logits);
  ``targets`` may be one int for the whole batch or one class per input;
* every forward / backward hook the explainer installed is gone after the
  ``with`` block (also when the block raised);
* the user's model is left as it was: parameters, ``requires_grad`` flags,
  ``.grad`` fields and every module's training mode;
* a target layer that is not in the model and a class out of range are clear
  ``ValueError``\\ s naming what was wrong;
* maps are class-conditional: the maps of two different classes differ;
* the maps of a batch equal the maps of its inputs explained one at a time.

Subclass :class:`ExplainerConformance` in a plugin's tests::

    from gradkit_core.testing.explainers import ExplainerConformance

    class TestGradCAM(ExplainerConformance):
        component = "grad-cam"
        component_kwargs = {}

The suite brings its own small seeded conv classifier (:meth:`make_model`) whose
``target_layer`` (the last ReLU) outputs ``(B, 16, 8, 8)``.  Override :meth:`make_model`
(returning ``(model, target_layer)``), :meth:`make_inputs`, or
:meth:`make_explainer` (to build the method without the registry) when the
method needs something else.  ``deterministic = False`` skips the equality checks
for explainers whose maps are random by design.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import pytest
import torch
import torch.nn as nn


class _ConvNet(nn.Module):
    """conv-ReLU-pool-conv-ReLU(in place)-conv-ReLU, global average pool, linear (3 classes)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def _hook_dicts(module: nn.Module):
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return {n: dict(getattr(module, n, {}) or {}) for n in names}


class ExplainerConformance:
    #: registered component name (``None``: override :meth:`make_explainer`)
    component: Optional[str] = None
    #: keyword arguments for ``create(name, model, target_layer=..., **component_kwargs)``
    component_kwargs: Dict[str, Any] = {}
    #: whether the maps are a deterministic function of (model, x, targets)
    deterministic: bool = True
    #: the maps of two classes must differ by more than this (max absolute difference)
    class_sensitivity_atol: float = 1e-6
    #: tolerance of the batch-vs-one-at-a-time and targets=None checks
    atol: float = 1e-5
    #: number of classes of :meth:`make_model`'s classifier
    num_classes: int = 3

    # ------------------------------------------------------------------ hooks for subclasses
    def make_model(self) -> Tuple[nn.Module, nn.Module]:
        """A fresh, seeded classifier and its target layer (class 0's maps are not all zero)."""
        torch.manual_seed(0)
        model = _ConvNet(self.num_classes)
        with torch.no_grad():
            # class 0 has positive evidence in every channel and a positive logit: non-zero maps
            model.head.weight[0].abs_()
            model.head.bias[0].abs_()
        return model, model.features[6]

    def make_inputs(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        return torch.rand(4, 1, 16, 16, generator=g)

    def make_explainer(self, model, target_layer, **kwargs):
        if self.component is None:
            raise TypeError("set `component` on the ExplainerConformance subclass or override make_explainer")
        import gradkit_core as gk

        return gk.create(self.component, model, target_layer=target_layer, kind="explainers",
                         **{**self.component_kwargs, **kwargs})

    # ------------------------------------------------------------------ helpers
    def _explain(self, x, targets=None, model=None, layer=None):
        if model is None:
            model, layer = self.make_model()
        with self.make_explainer(model, layer) as cam:
            return cam(x, targets=targets)

    # ------------------------------------------------------------------ registry
    def test_registered_as_explainer(self):
        if self.component is None:
            pytest.skip("built without the registry")
        import gradkit_core as gk

        spec = gk.info(self.component, kind="explainers")
        assert spec.kind == "explainers"

    # ------------------------------------------------------------------ output
    def test_maps_shape_dtype_range_device(self):
        x = self.make_inputs()
        maps = self._explain(x, targets=0)
        assert isinstance(maps, torch.Tensor)
        assert maps.shape == (x.shape[0], *x.shape[-2:]), f"expected (B, H, W) = {(x.shape[0], *x.shape[-2:])}"
        assert maps.is_floating_point()
        assert maps.device == x.device
        assert torch.isfinite(maps).all()
        assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
        assert not maps.requires_grad, "maps must be detached from the autograd graph"
        assert float(maps.flatten(1).amax(1).max()) > 0, "every map is zero"

    def test_none_targets_explains_predicted_class(self):
        if not self.deterministic:
            pytest.skip("random maps")
        model, layer = self.make_model()
        x = self.make_inputs()
        with torch.no_grad():
            pred = model(x).argmax(1)
        with self.make_explainer(model, layer) as cam:
            a = cam(x, targets=None)
            b = cam(x, targets=pred)
            c = cam(x, targets=pred.tolist())
        torch.testing.assert_close(a, b, atol=self.atol, rtol=0)
        torch.testing.assert_close(b, c, atol=self.atol, rtol=0)

    def test_int_target_applies_to_whole_batch(self):
        if not self.deterministic:
            pytest.skip("random maps")
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(model, layer) as cam:
            a = cam(x, targets=1)
            b = cam(x, targets=[1] * x.shape[0])
        torch.testing.assert_close(a, b, atol=self.atol, rtol=0)

    def test_batch_equals_one_at_a_time(self):
        if not self.deterministic:
            pytest.skip("random maps")
        model, layer = self.make_model()
        x = self.make_inputs()
        t = list(range(x.shape[0]))
        t = [i % self.num_classes for i in t]
        with self.make_explainer(model, layer) as cam:
            batch = cam(x, targets=t)
            single = torch.cat([cam(x[i : i + 1], targets=t[i]) for i in range(x.shape[0])])
        torch.testing.assert_close(batch, single, atol=self.atol, rtol=0)

    def test_maps_differ_between_classes(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(model, layer) as cam:
            a = cam(x, targets=0)
            b = cam(x, targets=1)
        diff = float((a - b).abs().amax())
        assert diff > self.class_sensitivity_atol, (
            f"maps for class 0 and class 1 are identical (max |diff| = {diff:.3g}): the explainer ignores targets"
        )

    # ------------------------------------------------------------------ hooks and model state
    def test_hooks_removed_on_exit(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        before = {n: _hook_dicts(m) for n, m in model.named_modules()}
        with self.make_explainer(model, layer) as cam:
            cam(x)
        after = {n: _hook_dicts(m) for n, m in model.named_modules()}
        assert after == before
        for name, m in model.named_modules():
            assert not m._forward_hooks, f"forward hook left on {name or 'model'}"
            assert not m._backward_hooks, f"backward hook left on {name or 'model'}"
            assert not m._forward_pre_hooks, f"forward pre-hook left on {name or 'model'}"
            assert not getattr(m, "_backward_pre_hooks", {}), f"backward pre-hook left on {name or 'model'}"

    def test_hooks_removed_when_block_raises(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        with pytest.raises(RuntimeError, match="user error"):
            with self.make_explainer(model, layer) as cam:
                cam(x)
                raise RuntimeError("user error")
        for name, m in model.named_modules():
            assert not m._forward_hooks and not m._backward_hooks, f"hook left on {name or 'model'}"

    def test_hooks_removed_after_failed_call(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(ValueError):
                cam(x, targets=self.num_classes + 5)
            for name, m in model.named_modules():
                assert not m._forward_hooks and not m._backward_hooks, f"hook left on {name or 'model'} after an error"

    @pytest.mark.parametrize("training", [False, True])
    def test_model_left_unmodified(self, training):
        model, layer = self.make_model()
        x = self.make_inputs()
        model.train(training)
        params = list(model.parameters())
        params[0].requires_grad_(False)  # a partly frozen model
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        flags = [p.requires_grad for p in params]
        modes = [m.training for m in model.modules()]
        with self.make_explainer(model, layer) as cam:
            cam(x)
            cam(x, targets=1)
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), f"{k} changed"
        assert [p.requires_grad for p in params] == flags, "requires_grad flags changed"
        assert all(p.grad is None for p in params), "the explainer wrote into parameter .grad"
        assert [m.training for m in model.modules()] == modes, "training mode changed"

    def test_fully_frozen_model(self):
        model, layer = self.make_model()
        for p in model.parameters():
            p.requires_grad_(False)
        x = self.make_inputs()
        maps = self._explain(x, targets=0, model=model, layer=layer)
        assert maps.shape == (x.shape[0], *x.shape[-2:])
        assert float(maps.max()) > 0
        assert all(not p.requires_grad and p.grad is None for p in model.parameters())

    # ------------------------------------------------------------------ errors
    def test_target_layer_not_in_model(self):
        model, _ = self.make_model()
        stranger = nn.Conv2d(1, 1, 3)
        with pytest.raises(ValueError, match="target_layer|target layer"):
            self.make_explainer(model, stranger)

    def test_target_layer_bad_name(self):
        model, _ = self.make_model()
        with pytest.raises(ValueError, match="no_such_layer"):
            self.make_explainer(model, "no_such_layer")

    @pytest.mark.parametrize("bad", ["too_big", "negative"])
    def test_target_class_out_of_range(self, bad):
        model, layer = self.make_model()
        x = self.make_inputs()
        t = self.num_classes if bad == "too_big" else -1
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(ValueError, match=str(t)):
                cam(x, targets=t)

    def test_wrong_number_of_targets(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(ValueError, match="targets"):
                cam(x, targets=[0] * (x.shape[0] + 1))

    def test_bad_input_shape(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(model, layer) as cam:
            with pytest.raises((ValueError, TypeError), match="B, C, H, W"):
                cam(x[0, 0])
