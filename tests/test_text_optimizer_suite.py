"""The text-optimizer conformance suite's rules can fail: a toy optimizer that ignores the feedback, updates
non-atomically, accepts an empty proposal, keeps feedback after zero_grad, ignores the current value, accepts
bad hyperparameters or frozen parameters, or coerces a non-string reply is caught; a small correct one passes."""

import math
import re

import pytest

from gradkit_core.testing.text_optimizers import TextOptimizerConformance


class Param:
    def __init__(self, value, role, requires_grad=True):
        self.value, self.role_description, self.requires_grad, self.feedback = value, role, requires_grad, []


class ToyTGD:
    """A correct toy: one prompt per parameter with feedback, reply ``<NEW>value</NEW>``, all-or-nothing."""

    def __init__(self, parameters, engine, *, temperature=1.0, policy="raise", broken=()):
        self.broken = set(broken)
        params = list(parameters)
        if "accepts_bad_kwargs" not in self.broken:
            if not params:
                raise ValueError("ToyTGD needs at least one parameter")
            if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
                raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}")
            if policy not in ("raise", "keep"):
                raise ValueError(f"policy must be 'raise' or 'keep', got {policy!r}")
        if "accepts_frozen" not in self.broken and any(not p.requires_grad for p in params):
            raise ValueError("a parameter does not require grad")
        self.parameters, self.engine, self.policy, self.memory = params, engine, policy, []

    def zero_grad(self):
        if "keeps_feedback" not in self.broken:
            for p in self.parameters:
                p.feedback = []

    def prompt(self, p):
        fb = "" if "ignores_feedback" in self.broken else "\n".join(p.feedback)
        value = "(value)" if "ignores_value" in self.broken else p.value
        past = "".join(f"\npast: {m}" for m in self.memory)
        return f"Role: {p.role_description}\nValue: {value}\nFeedback: {fb}{past}"

    def parse(self, reply):
        if not isinstance(reply, str):
            if "coerces_replies" in self.broken:
                reply = str(reply)
            else:
                raise TypeError(f"the engine must return a str, got {type(reply).__name__}")
        m = re.search(r"<NEW>(.*?)</NEW>", reply, re.S)
        if m is None:
            if self.policy == "keep":
                return None
            raise ValueError(f"reply has no <NEW> tags: {reply[:80]!r}")
        new = m.group(1) if "accepts_empty" in self.broken else m.group(1).strip()
        if not new and "accepts_empty" not in self.broken:
            raise ValueError("empty proposal")
        return new

    def step(self):
        new = {}
        if "state_before_replies" in self.broken:
            self.memory.append("step")
        for p in self.parameters:
            if p.feedback:
                v = self.parse(self.engine(self.prompt(p)))
                if v is not None:
                    if "non_atomic" in self.broken:
                        p.value = v
                    new[id(p)] = v
        for p in self.parameters:
            if id(p) in new:
                p.value = new[id(p)]


def suite_for(*broken, policy="raise"):
    class S(TextOptimizerConformance):
        bad_kwargs = [{"temperature": float("nan")}, {"temperature": -1.0}, {"policy": "ignore"}]

        def make(self, parameters, engine, **extra):
            return ToyTGD(parameters, engine, broken=broken, **{"policy": policy, **extra})

        def make_parameter(self, value, role, *, requires_grad=True):
            return Param(value, role, requires_grad)

        def add_feedback(self, param, text):
            param.feedback.append(text)

        def proposal_reply(self, text):
            return f"Here you go: <NEW>{text}</NEW>"

    return S()


RULES = [n for n in dir(TextOptimizerConformance) if n.startswith("test_")]


@pytest.mark.parametrize("rule", RULES)
def test_a_correct_toy_passes_every_rule(rule):
    getattr(suite_for(), rule)()


FAILS = {
    # broken behaviour -> rules that must catch it
    "ignores_feedback": ["test_b_prompt_holds_value_role_and_feedback_and_zero_grad_clears_it"],
    "keeps_feedback": ["test_b_prompt_holds_value_role_and_feedback_and_zero_grad_clears_it"],
    "ignores_value": ["test_a_step_sets_each_parameter_to_its_proposal",
                      "test_b_prompt_holds_value_role_and_feedback_and_zero_grad_clears_it"],
    "non_atomic": ["test_c_malformed_reply_is_an_error_and_the_step_is_atomic",
                   "test_c_engine_error_is_an_error_and_the_step_is_atomic"],
    "state_before_replies": ["test_c_malformed_reply_is_an_error_and_the_step_is_atomic",
                             "test_c_engine_error_is_an_error_and_the_step_is_atomic"],
    "accepts_empty": ["test_d_empty_proposal_never_becomes_a_value"],
    "accepts_bad_kwargs": ["test_e_bad_hyperparameters_are_value_errors", "test_e_no_parameters_is_a_value_error"],
    "accepts_frozen": ["test_e_frozen_parameter_is_a_value_error"],
    "coerces_replies": ["test_e_non_string_reply_is_a_type_error"],
}


@pytest.mark.parametrize("broken,rule", [(b, r) for b, rules in FAILS.items() for r in rules])
def test_each_broken_toy_fails_its_rule(broken, rule):
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        getattr(suite_for(broken), rule)()


def test_a_keep_policy_default_fails_the_malformed_reply_rule():
    """Under a default that silently keeps old values on malformed replies, step() does not raise."""
    with pytest.raises(pytest.fail.Exception):
        suite_for(policy="keep").test_c_malformed_reply_is_an_error_and_the_step_is_atomic()


def test_missing_hooks_and_bad_kwargs_are_reported():
    class Bare(TextOptimizerConformance):
        pass

    with pytest.raises(pytest.fail.Exception, match="make_parameter"):
        Bare().test_a_step_sets_each_parameter_to_its_proposal()

    class NoBad(type(suite_for())):
        bad_kwargs = []

    with pytest.raises(pytest.fail.Exception, match="bad_kwargs"):
        NoBad().test_e_bad_hyperparameters_are_value_errors()
