"""Every explainer of the plugin passes gradkit's explainer conformance suite."""

from gradkit_core.testing.explainers import ExplainerConformance


class TestCFCAMConformance(ExplainerConformance):
    component = "cf-cam"


class TestCFCAMBilateralConformance(ExplainerConformance):
    component = "cf-cam"
    component_kwargs = {"filter": "bilateral"}


class TestCFCAMGuidedUnnormalisedConformance(ExplainerConformance):
    component = "cf-cam"
    component_kwargs = {"filter": "guided", "weight_norm": "none"}


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
