"""Every explainer of the plugin passes gradkit's explainer conformance suite."""

from gradkit_core.testing.explainers import ExplainerConformance


class TestCFCAMConformance(ExplainerConformance):
    explainer_name = "cf-cam"


class TestCFCAMBilateralConformance(ExplainerConformance):
    explainer_name = "cf-cam"
    explainer_kwargs = {"filter": "bilateral"}


class TestCFCAMGuidedUnnormalisedConformance(ExplainerConformance):
    explainer_name = "cf-cam"
    explainer_kwargs = {"filter": "guided", "weight_norm": "none"}


class TestGradCAMConformance(ExplainerConformance):
    explainer_name = "grad-cam"


class TestGradCAMPlusPlusConformance(ExplainerConformance):
    explainer_name = "grad-cam++"


class TestSmoothGradCAMPlusPlusConformance(ExplainerConformance):
    explainer_name = "smooth-grad-cam++"
    explainer_kwargs = {"n_samples": 3}


class TestScoreCAMConformance(ExplainerConformance):
    explainer_name = "score-cam"


class TestAblationCAMConformance(ExplainerConformance):
    explainer_name = "ablation-cam"
