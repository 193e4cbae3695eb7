"""TGD passes the core's text-optimizer conformance suite (kind ``text_optimizers``)."""

from gradkit_core.testing.text_optimizers import TextOptimizerConformance
from gradkit_textgrad import Gradient, ScriptedEngine, Variable


class TestTGDConformance(TextOptimizerConformance):
    component = "tgd"
    component_kwargs = {}
    bad_kwargs = [{"gradient_memory": -1}, {"momentum": float("nan")}, {"max_retries": float("inf")},
                  {"momentum": 1.5}, {"on_missing_tags": "ignore"}, {"tags": ("<A>", "<A>")},
                  {"constraints": [""]}, {"prompt_style": "tiny"}]

    def make_parameter(self, value, role, *, requires_grad=True):
        return Variable(value, role_description=role, requires_grad=requires_grad)

    def add_feedback(self, param, text):
        param.add_gradient(Gradient(text, "evaluation of the answer"))

    def proposal_reply(self, text):
        return f"Reasoning first.\n<IMPROVED_VARIABLE>{text}</IMPROVED_VARIABLE>"

    def make_engine(self, reply_fn):
        # the plugin's own engine class, which passes replies (non-strings included) through
        return ScriptedEngine([(r".*", lambda prompt, system: reply_fn(prompt))])


class TestTGDRetryPolicyConformance(TestTGDConformance):
    """Under the retry policy a malformed reply is asked again, then raises: still atomic."""
    component_kwargs = {"on_missing_tags": "retry", "max_retries": 1, "momentum": 2, "gradient_memory": 0}


class TestTGDCompactConformance(TestTGDConformance):
    """The small-model setting (compact prompt, first-line proposals) keeps every rule; its malformed reply is
    one without any text line."""
    component_kwargs = {"prompt_style": "compact", "on_missing_tags": "first_line"}
    bad_kwargs = TestTGDConformance.bad_kwargs + [{"prompt_style": "tiny"},
                                                  {"prompt_style": "compact", "on_missing_tags": "raise"}]

    def proposal_reply(self, text):
        # the reply format the compact prompt asks for: the rewritten text alone, on one line
        return f"{text}\n"

    def malformed_reply(self):
        return "  \n```\n```\n  "
