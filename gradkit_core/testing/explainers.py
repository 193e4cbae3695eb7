"""Conformance suite for explainers (kind ``explainers``).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_explainers`)::

    with gk.create(NAME, model, target_layer=layer, **kw) as cam:
        maps = cam(x, targets=classes)

* ``maps`` is a floating-point tensor ``(B, H, W)`` with values in ``[0, 1]`` on
  ``x``'s device, for an input ``x`` of shape ``(B, C, H, W)``;
* ``targets=None`` explains the predicted class (``argmax`` of the logits);
  ``targets`` may be one int for the whole batch or one class per input;
* every forward / backward hook the explainer installed is gone after the
  ``with`` block (also when the block raised or a call failed);
* the user's model is left as it was: parameters, ``requires_grad`` flags,
  ``.grad`` fields and every module's training mode;
* maps are class-conditional: on a model whose classes rely on different image
  regions (:meth:`ExplainerConformance.make_class_case`), the map of each class puts
  clearly more of its mass (``class_sensitivity_margin``) on that class's region
  than on the other class's.  An explainer that ignores ``targets`` cannot pass:
  equal maps cannot favour both regions;
* the maps of a batch equal the maps of its inputs explained one at a time;
* bad input is a clear error naming the problem, never a silent all-zero or NaN
  map: NaN / inf anywhere in ``x`` and non-finite logits (``ValueError``); ``x``
  not ``(B, C, H, W)``, an empty batch, a non-floating ``x``; targets that are not
  integer class indices (``TypeError``), out of range, of the wrong number or
  not 1-D (``ValueError``); a target layer that is not in the model.

Subclass :class:`ExplainerConformance` in a plugin's tests::

    from gradkit_core.testing.explainers import ExplainerConformance

    class TestGradCAM(ExplainerConformance):
        component = "grad-cam"
        component_kwargs = {}

The suite brings its own small seeded conv classifier (:meth:`make_model`) whose
``target_layer`` (the last ReLU) outputs ``(B, 16, 8, 8)``, and a hand-built
two-region classifier for the class-sensitivity rule (:meth:`make_class_case`).
Override :meth:`make_model` (returning ``(model, target_layer)``),
:meth:`make_inputs`, :meth:`make_class_case`, or :meth:`make_explainer` (to build
the method without the registry) when the method needs something else.
``deterministic = False`` skips the equality checks for explainers whose maps are
random by design.  An explainer that cannot be class-sensitive by design sets
``class_sensitive = False`` and says why in ``class_insensitive_reason``: its
class-sensitivity test then reports an expected failure, and fails outright if
the explainer passes the rule after all.
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


class _TwoRegionNet(nn.Module):
    """A hand-built classifier whose classes rely on different image regions.

    Input ``(B, 2, 16, 16)``: channel 0 carries class 0's evidence, channel 1 class 1's.
    ``features`` = 3x3 conv (8 channels: 0-3 read input channel 0, 4-7 input channel 1, at
    different strengths) -> ReLU (the target layer); global average pool; linear head with
    class 0 = +w on channels 0-3 and -w on 4-7, class 1 the opposite, class 2 weakly on all.
    :meth:`ExplainerConformance.make_class_case` puts channel 0's texture in the left half and
    channel 1's in the right half, so class 0's evidence is on the left and class 1's on the right.
    """

    def __init__(self, w: float = 2.0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 3)
        with torch.no_grad():
            conv = self.features[0]
            conv.weight.zero_()
            conv.bias.zero_()
            blur = torch.tensor([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
            for k in range(8):
                conv.weight[k, 0 if k < 4 else 1] = (0.6 + 0.3 * (k % 4)) * blur / blur.sum()
            self.head.weight.zero_()
            self.head.weight[0, :4], self.head.weight[0, 4:] = w, -w
            self.head.weight[1, :4], self.head.weight[1, 4:] = -w, w
            self.head.weight[2] = 0.1
            self.head.bias.copy_(torch.tensor([1.0, 1.0, 0.0]))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class _NonFiniteLogits(nn.Module):
    """Wraps a classifier and makes the logit of class 1 NaN (the target layer stays inside)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        bad = torch.zeros(out.shape[-1], dtype=out.dtype, device=out.device)
        bad[1] = float("nan")
        return out + bad


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
    #: in :meth:`make_class_case`, each class's map must put at least this much more of its mass on
    #: the class's own region than on the other class's (shares of the map's total, in [0, 1])
    class_sensitivity_margin: float = 0.3
    #: ``False`` only for explainers that cannot be class-sensitive by design (say why below)
    class_sensitive: bool = True
    class_insensitive_reason: str = ""
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

    def make_class_case(self):
        """``(model, target_layer, x, (class_a, region_a), (class_b, region_b))`` where the two classes'
        evidence lies in disjoint regions (boolean ``(H, W)`` masks) of every input."""
        model = _TwoRegionNet()
        g = torch.Generator().manual_seed(2)
        x = 0.03 * torch.rand(3, 2, 16, 16, generator=g)
        x[:, 0, :, :8] += 0.5 + 0.5 * torch.rand(3, 16, 8, generator=g)
        x[:, 1, :, 8:] += 0.5 + 0.5 * torch.rand(3, 16, 8, generator=g)
        left = torch.zeros(16, 16, dtype=torch.bool)
        left[:, :8] = True
        return model, model.features[1], x, (0, left), (1, ~left)

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

    def check_class_sensitivity(self, make_explainer=None) -> Dict[str, float]:
        """The rule behind :meth:`test_maps_differ_between_classes`; raises ``AssertionError`` when it
        fails and returns the measured region shares otherwise."""
        make_explainer = make_explainer or self.make_explainer
        model, layer, x, (ca, ra), (cb, rb) = self.make_class_case()
        with make_explainer(model, layer) as cam:
            ma = cam(x, targets=ca)
            mb = cam(x, targets=cb)

        def shares(m, name):
            tot = m.flatten(1).sum(1)
            assert bool((tot > 0).all()), f"the map of class {name} is all zero for some input"
            return (m * ra.to(m.dtype)).flatten(1).sum(1) / tot, (m * rb.to(m.dtype)).flatten(1).sum(1) / tot

        a_on_a, a_on_b = shares(ma, ca)
        b_on_a, b_on_b = shares(mb, cb)
        gap_a = float((a_on_a - a_on_b).min())
        gap_b = float((b_on_b - b_on_a).min())
        diff = float((ma - mb).abs().mean())
        assert gap_a > self.class_sensitivity_margin and gap_b > self.class_sensitivity_margin, (
            f"maps are not class-sensitive: class {ca}'s map puts {gap_a:+.3f} more of its mass on class {ca}'s "
            f"region than on class {cb}'s, class {cb}'s map {gap_b:+.3f} on its own (need > "
            f"{self.class_sensitivity_margin} each; mean |map_{ca} - map_{cb}| = {diff:.3g})"
        )
        return {"gap_a": gap_a, "gap_b": gap_b, "mean_abs_diff": diff}

    def test_maps_differ_between_classes(self):
        if self.class_sensitive:
            self.check_class_sensitivity()
            return
        assert self.class_insensitive_reason, "class_sensitive = False needs a class_insensitive_reason"
        try:
            self.check_class_sensitivity()
        except AssertionError as exc:
            pytest.xfail(f"not class-sensitive by design: {self.class_insensitive_reason} ({exc})")
        pytest.fail("marked class_sensitive = False but passes the class-sensitivity rule: remove the mark")

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
        bad = x.clone()
        bad[0, 0, 0, 0] = float("nan")
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(ValueError):
                cam(x, targets=self.num_classes + 5)
            with pytest.raises(ValueError):
                cam(bad)
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

    @pytest.mark.parametrize("shape", ["no_batch_dim", "flat"])
    def test_bad_input_dimensions(self, shape):
        model, layer = self.make_model()
        x = self.make_inputs()
        bad = x[0] if shape == "no_batch_dim" else x.flatten(1)
        with self.make_explainer(model, layer) as cam:
            with pytest.raises((ValueError, TypeError), match="B, C, H, W"):
                cam(bad)

    def test_empty_batch(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(ValueError, match="empty"):
                cam(x[:0])

    def test_integer_input(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(TypeError, match="float"):
                cam((x * 255).to(torch.uint8))

    # ------------------------------------------------------------------ non-finite values
    @pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
    def test_non_finite_input(self, value):
        """One bad pixel in one input: a ValueError that names NaN/inf, never maps (all-zero or not)."""
        model, layer = self.make_model()
        x = self.make_inputs().clone()
        x[min(1, x.shape[0] - 1), 0, 2, 3] = float(value)
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(ValueError, match="(?i)nan|inf|finite"):
                cam(x)
            with pytest.raises(ValueError, match="(?i)nan|inf|finite"):
                cam(x, targets=0)

    def test_non_finite_logits(self):
        """A model whose output has a NaN logit: a ValueError, whichever class is explained."""
        model, layer = self.make_model()
        x = self.make_inputs()
        with self.make_explainer(_NonFiniteLogits(model), layer) as cam:
            with pytest.raises(ValueError, match="(?i)nan|finite"):
                cam(x, targets=0)

    # ------------------------------------------------------------------ targets
    def test_targets_not_one_dimensional(self):
        model, layer = self.make_model()
        x = self.make_inputs()
        b = x.shape[0]
        t = torch.zeros(2, max(1, b // 2), dtype=torch.long) if b % 2 == 0 else torch.zeros(b, 1, 1, dtype=torch.long)
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(ValueError, match="targets"):
                cam(x, targets=t)

    @pytest.mark.parametrize("bad", ["float", "bool"])
    def test_targets_not_integers(self, bad):
        model, layer = self.make_model()
        x = self.make_inputs()
        t = 0.0 if bad == "float" else True
        with self.make_explainer(model, layer) as cam:
            with pytest.raises(TypeError, match="targets|int"):
                cam(x, targets=t)
            with pytest.raises(TypeError, match="targets|int"):
                cam(x, targets=torch.zeros(x.shape[0]) if bad == "float" else torch.ones(x.shape[0], dtype=torch.bool))
