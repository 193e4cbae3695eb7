"""Differentiable text functions: LLM calls, string-based functions, sum and aggregate, and the text loss."""

from __future__ import annotations

import itertools
from typing import Callable, Mapping

from . import prompts as P
from .variable import Gradient, Variable, _check_text, check_engine

_group_ids = itertools.count(1)


def _call(engine, prompt, system_prompt):
    reply = engine(prompt, system_prompt=system_prompt)
    if not isinstance(reply, str):
        raise TypeError(f"the engine must return a str, got {type(reply).__name__}")
    return reply


def _feedback(variable: Variable, response: Variable, engine, prompt: str, info: dict, conversation: str):
    gradient = Gradient(_call(engine, prompt, P.BACKWARD_SYSTEM_PROMPT),
                        f"feedback to {variable.role_description}",
                        context={"context": conversation, "response_desc": response.role_description,
                                 "variable_desc": variable.role_description},
                        reduce_groups=list(response.reduce_groups))
    variable.add_gradient(gradient)
    variable.reduce_groups.extend(response.reduce_groups)


class LLMCall:
    """``response = LLMCall(engine, system_prompt)(x)``: one model call whose backward asks the backward engine
    for feedback to the system prompt and to ``x`` (those that require grad).

    Without feedback on the response the "base" objective is used (the response is an evaluation), otherwise the
    "chain" objective that quotes the response's feedback."""

    def __init__(self, engine, system_prompt: Variable | None = None):
        self.engine = check_engine(engine)
        if system_prompt is not None and not isinstance(system_prompt, Variable):
            raise TypeError("system_prompt must be a Variable or None")
        self.system_prompt = system_prompt

    def __call__(self, x: Variable, response_role_description: str = P.OUTPUT_ROLE) -> Variable:
        return self.forward(x, response_role_description)

    def _inputs(self, x):
        if not isinstance(x, Variable):
            raise TypeError(f"LLMCall takes a Variable, got {type(x).__name__}")
        _check_text("the LLM input", x.value, allow_empty=False)
        return x.value, [x]

    def forward(self, x, response_role_description: str = P.OUTPUT_ROLE) -> Variable:
        prompt, inputs = self._inputs(x)
        system = self.system_prompt.value if self.system_prompt is not None else None
        reply = _call(self.engine, prompt, system)
        preds = ([self.system_prompt] if self.system_prompt is not None else []) + inputs
        response = Variable(reply, role_description=response_role_description, predecessors=preds,
                            requires_grad=any(p.requires_grad for p in preds))
        response.grad_fn = lambda engine: self.backward(response, prompt, system, engine)
        return response

    @staticmethod
    def backward(response: Variable, prompt: str, system_prompt, engine):
        chain = response.grad_text != ""
        for v in response.predecessors:
            if not v.requires_grad:
                continue
            info = {"response_desc": response.role_description, "response_value": response.value,
                    "response_gradient": response.grad_text, "prompt": prompt, "system_prompt": system_prompt,
                    "variable_desc": v.role_description, "variable_short": v.short_value()}
            conversation = P.LLM_CONVERSATION.format(**info)
            if chain:
                text = P.LLM_START_CHAIN.format(conversation=conversation, **info) + P.LLM_OBJECTIVE_CHAIN.format(**info)
            else:
                text = P.LLM_START_BASE.format(conversation=conversation, **info) + P.OBJECTIVE_BASE
            text += P.EVALUATE_VARIABLE.format(**info)
            _feedback(v, response, engine, text, info, conversation)


class FormattedLLMCall(LLMCall):
    """An LLM call on ``fmt.format(**{field: variable.value})``; every field variable is a predecessor."""

    def __init__(self, engine, fmt: str, fields: Mapping[str, str], system_prompt: Variable | None = None):
        super().__init__(engine, system_prompt)
        self.fmt = _check_text("fmt", fmt, allow_empty=False)
        self.fields = dict(fields)
        if not self.fields:
            raise ValueError("fields must name at least one input")

    def _inputs(self, inputs):
        if not isinstance(inputs, Mapping) or set(inputs) != set(self.fields):
            raise ValueError(f"expected inputs for fields {sorted(self.fields)}, got "
                             f"{sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__}")
        for k, v in inputs.items():
            if not isinstance(v, Variable):
                raise TypeError(f"input {k!r} must be a Variable")
        return self.fmt.format(**{k: v.value for k, v in inputs.items()}), list(inputs.values())


class StringBasedFunction:
    """A Python function of text variables (a test runner, an exact-match check) as a graph node: its backward
    asks the engine for feedback to each input that requires grad, given the function's purpose, inputs and
    output."""

    def __init__(self, fn: Callable[..., str], function_purpose: str):
        if not callable(fn):
            raise TypeError("fn must be callable")
        self.fn = fn
        self.function_purpose = _check_text("function_purpose", function_purpose, allow_empty=False)

    def __call__(self, inputs: Mapping[str, Variable], response_role_description: str | None = None) -> Variable:
        if not isinstance(inputs, Mapping) or not inputs:
            raise ValueError("inputs must be a non-empty mapping of argument name -> Variable")
        for k, v in inputs.items():
            if not isinstance(v, Variable):
                raise TypeError(f"input {k!r} must be a Variable, got {type(v).__name__}")
        if response_role_description is None:
            response_role_description = f"Output of the string-based function with purpose: {self.function_purpose}"
        out = self.fn(**inputs)
        if not isinstance(out, str):
            raise TypeError(f"the string-based function must return a str, got {type(out).__name__}")
        inputs = dict(inputs)
        preds = list(inputs.values())
        response = Variable(out, role_description=response_role_description, predecessors=preds,
                            requires_grad=any(p.requires_grad for p in preds))
        response.grad_fn = lambda engine: self.backward(response, inputs, engine)
        return response

    def backward(self, response: Variable, inputs: dict, engine):
        chain = response.grad_text.strip() != ""
        inputs_string = "\n\n".join(
            f"**{k.replace('_', ' ').capitalize()}(role: {v.role_description})**: {v.short_value()}"
            for k, v in inputs.items())
        for v in response.predecessors:
            if not v.requires_grad:
                continue
            info = {"response_desc": response.role_description, "response_value": response.value,
                    "response_gradient": response.grad_text, "function_purpose": self.function_purpose,
                    "inputs_string": inputs_string, "variable_desc": v.role_description,
                    "variable_short": v.short_value()}
            conversation = P.FN_CONVERSATION.format(**info)
            if chain:
                text = P.FN_START_CHAIN.format(conversation=conversation, **info) + P.FN_OBJECTIVE_CHAIN.format(**info)
            else:
                text = P.FN_START_BASE.format(conversation=conversation, **info) + P.OBJECTIVE_BASE
            text += P.EVALUATE_VARIABLE.format(**info)
            _feedback(v, response, engine, text, info, conversation)


def _concat(variables, separator):
    variables = list(variables)
    if not variables:
        raise ValueError("cannot sum an empty list of variables")
    for v in variables:
        if not isinstance(v, Variable):
            raise TypeError(f"can only sum Variables, got {type(v).__name__}")
    return variables, separator.join(v.value for v in variables)


def tg_sum(variables, *, role_description: str | None = None, separator: str = "\n") -> Variable:
    """Concatenate variables; backward copies the total's feedback to every summand (no model call)."""
    variables, value = _concat(variables, separator)
    if role_description is None:
        role_description = "a combination of the following: " + ", ".join(
            dict.fromkeys(v.role_description for v in variables))
    total = Variable(value, role_description=role_description, predecessors=variables,
                     requires_grad=any(v.requires_grad for v in variables))

    def backward(engine):
        fb = total.grad_text
        if fb == "":
            return
        for v in total.predecessors:
            if v.requires_grad:
                v.add_gradient(Gradient(P.SUM_FEEDBACK.format(variable_desc=v.role_description, feedback=fb),
                                        f"feedback to {v.role_description}", reduce_groups=list(total.reduce_groups)))
                v.reduce_groups.extend(total.reduce_groups)

    total.grad_fn = backward
    return total


def aggregate(variables, *, separator: str = "\n") -> Variable:
    """Concatenate variables as a batch: feedback reaching a shared predecessor through several members is
    summarised by one model call (``REDUCE_MEAN_SYSTEM_PROMPT``) before it is propagated further."""
    variables, value = _concat(variables, separator)
    gid = next(_group_ids)
    roles = ", ".join(dict.fromkeys(v.role_description for v in variables))
    total = Variable(value, role_description=f"a combination of the following variables: {roles}.",
                     predecessors=variables, requires_grad=any(v.requires_grad for v in variables))
    total.reduce_groups = [gid]

    def backward(engine):
        fb = total.grad_text
        if fb == "":
            return
        for v in total.predecessors:
            if v.requires_grad:
                v.add_gradient(Gradient(P.SUM_FEEDBACK.format(variable_desc=v.role_description, feedback=fb),
                                        f"feedback to {v.role_description}", reduce_groups=[gid]))
                v.reduce_groups.append(gid)

    total.grad_fn = backward
    return total


class TextLoss:
    """``loss = TextLoss(eval_system_prompt, engine)(response)``: an LLM evaluation of ``response`` whose
    ``backward`` starts the chain of feedback."""

    def __init__(self, eval_system_prompt, engine):
        if isinstance(eval_system_prompt, str):
            _check_text("eval_system_prompt", eval_system_prompt, allow_empty=False)
            eval_system_prompt = Variable(eval_system_prompt, role_description=P.EVAL_SYSTEM_PROMPT_ROLE,
                                          requires_grad=False)
        elif not isinstance(eval_system_prompt, Variable):
            raise TypeError("eval_system_prompt must be a str or a Variable")
        self.eval_system_prompt = eval_system_prompt
        self.llm_call = LLMCall(engine, eval_system_prompt)

    def __call__(self, response: Variable) -> Variable:
        return self.llm_call(response)


class MultiFieldEvaluation(LLMCall):
    """An evaluation of several fields at once (e.g. a prediction and the correct answer): the prompt is the
    instruction's value followed by one ``**<role>**: <value>`` line per input.  As in the reference, each input
    takes the role given here (its ``role_description`` is set), so the feedback names it by that role."""

    def __init__(self, evaluation_instruction: Variable, role_descriptions, engine,
                 system_prompt: Variable | None = None):
        if not isinstance(evaluation_instruction, Variable):
            raise TypeError("evaluation_instruction must be a Variable")
        roles = list(role_descriptions)
        if not roles or not all(isinstance(r, str) and r.strip() for r in roles) or len(set(roles)) != len(roles):
            raise ValueError(f"role_descriptions must be distinct non-empty strings, got {roles!r}")
        if system_prompt is None:
            system_prompt = Variable("You are an evaluation system that compares two variables.",
                                     role_description=P.EVAL_SYSTEM_PROMPT_ROLE, requires_grad=False)
        super().__init__(engine, system_prompt)
        self.evaluation_instruction, self.roles = evaluation_instruction, roles

    def __call__(self, inputs, response_role_description: str = "evaluation of the a prediction") -> Variable:
        return self.forward(inputs, response_role_description)

    def _inputs(self, inputs):
        inputs = list(inputs)
        if len(inputs) != len(self.roles) or not all(isinstance(v, Variable) for v in inputs):
            raise ValueError(f"expected {len(self.roles)} Variables for roles {self.roles}, got {len(inputs)} inputs")
        for role, v in zip(self.roles, inputs):
            v.role_description = role
        prompt = self.evaluation_instruction.value + "".join(
            f"\n**{role}**: {v.value}" for role, v in zip(self.roles, inputs))
        return prompt, [self.evaluation_instruction, *inputs]
