"""Every explainer of the plugin passes gradkit's explainer conformance suite."""

import pytest

import gradkit_core as gk
from gradkit_core.testing.explainers import ExplainerConformance

SOFTMAX_REASON = (
    "CF-CAM's step 5 (paper and official code) normalises the channel weights with a softmax over the raw "
    "gradient means; gradients of the usual scale (here |dy/dA| = 2/256 behind global average pooling) make "
    "that softmax uniform to within about 2 %, so the map is the mean of the valid activation maps whatever "
    "the class. weight_norm='none' or 'relu' keeps the method class-sensitive (tested below)."
)


class TestCFCAMConformance(ExplainerConformance):
    component = "cf-cam"
    class_sensitive = False
    class_insensitive_reason = SOFTMAX_REASON


class TestCFCAMBilateralConformance(ExplainerConformance):
    component = "cf-cam"
    component_kwargs = {"filter": "bilateral"}
    class_sensitive = False
    class_insensitive_reason = SOFTMAX_REASON


class TestCFCAMGuidedUnnormalisedConformance(ExplainerConformance):
    component = "cf-cam"
    component_kwargs = {"filter": "guided", "weight_norm": "none"}


class TestCFCAMReluNormConformance(ExplainerConformance):
    component = "cf-cam"
    component_kwargs = {"weight_norm": "relu"}


class TestGradCAMConformance(ExplainerConformance):
    component = "grad-cam"


class TestGradCAMPlusPlusConformance(ExplainerConformance):
    component = "grad-cam++"


class TestSmoothGradCAMPlusPlusConformance(ExplainerConformance):
    component = "smooth-grad-cam++"
    component_kwargs = {"n_samples": 3}


class TestScoreCAMConformance(ExplainerConformance):
    component = "score-cam"


class TestAblationCAMConformance(ExplainerConformance):
    component = "ablation-cam"


# ---------------------------------------------------------------------- the class rule can fail
class _ExplainsPredictedClass:
    """A class-ignoring explainer: whatever ``targets`` says, it explains the predicted class."""

    def __init__(self, inner):
        self.inner = inner

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()

    def __call__(self, x, targets=None, **kw):
        return self.inner(x, targets=None, **kw)


@pytest.mark.parametrize("name", ["grad-cam", "score-cam", "ablation-cam"])
def test_class_rule_fails_an_explainer_that_ignores_the_class(name):
    suite = ExplainerConformance()
    wrapped = lambda model, layer: _ExplainsPredictedClass(gk.create(name, model, target_layer=layer))  # noqa: E731
    with pytest.raises(AssertionError, match="not class-sensitive"):
        suite.check_class_sensitivity(wrapped)
    # the same method, honouring targets, passes with a wide margin
    gaps = suite.check_class_sensitivity(lambda model, layer: gk.create(name, model, target_layer=layer))
    assert min(gaps["gap_a"], gaps["gap_b"]) > 0.8


def test_old_bar_passed_softmax_cf_cam_new_rule_fails_it():
    """The old rule (max |map_0 - map_1| > 1e-6) passed CF-CAM although its maps barely depend on the class."""
    suite = ExplainerConformance()
    model, layer, x, (ca, _), (cb, _) = suite.make_class_case()
    with gk.create("cf-cam", model, target_layer=layer) as cam:
        d = float((cam(x, targets=ca) - cam(x, targets=cb)).abs().amax())
    assert d > 1e-6
    with pytest.raises(AssertionError, match="not class-sensitive"):
        suite.check_class_sensitivity(lambda m, l: gk.create("cf-cam", m, target_layer=l))


def test_softmax_cf_cam_is_class_sensitive_only_when_gradient_means_are_large():
    """Why 'by design': softmax(w) follows the class only once the gradient means are O(1), i.e. with
    logits hundreds of times steeper than a usual classifier's (here the head is scaled by 500)."""
    import torch

    class Steep(ExplainerConformance):
        def make_class_case(self):
            model, layer, x, a, b = super().make_class_case()
            with torch.no_grad():
                model.head.weight.mul_(500.0)
            return model, layer, x, a, b

    gaps = Steep().check_class_sensitivity(lambda m, l: gk.create("cf-cam", m, target_layer=l))
    assert min(gaps["gap_a"], gaps["gap_b"]) > 0.5
