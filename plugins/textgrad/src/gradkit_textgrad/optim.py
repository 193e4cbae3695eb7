"""Textual Gradient Descent (TGD)."""

from __future__ import annotations

from . import prompts as P
from .variable import Variable, _check_text, check_engine

TAG_POLICIES = ("raise", "keep", "retry")


class MissingTagsError(ValueError, IndexError):
    """The optimizer model's reply has no opening improved-variable tag (an IndexError, as in the reference)."""


def gradient_and_context_text(variable: Variable) -> str:
    """What TGD shows the optimizer about a variable's feedback: each gradient inside its conversation
    (``GRADIENT_TEMPLATE``), or the bare feedback when it has no conversation (sum/reduction)."""
    parts = []
    for g in variable.gradients:
        parts.append(g.value if g.context is None else P.GRADIENT_TEMPLATE.format(feedback=g.value, **g.context))
    return "\n".join(parts)


def extract_improved(reply: str, tags) -> str:
    """Text after the first opening tag, up to the next closing tag (or the end when the model stopped before
    closing -- what the reference's split does), stripped.  No opening tag -> :class:`MissingTagsError`."""
    start, end = tags
    if start not in reply:
        raise MissingTagsError(f"the optimizer reply has no {start} tag (the model did not follow the format); "
                               f"reply: {reply[:300]!r}")
    return reply.split(start, 1)[1].split(end, 1)[0].strip()


class TGD:
    """Textual gradient descent: for each parameter, ask ``engine`` for an improved value given its role, value,
    feedback with context, and optionally constraints, in-context examples, the last ``gradient_memory`` steps'
    feedback and the last ``momentum`` values.

    Tag policy (``on_missing_tags``), for replies without the opening tag:
    ``"raise"`` (default, like the reference): :class:`MissingTagsError`;
    ``"retry"``: ask again, up to ``max_retries`` more times, then raise;
    ``"keep"``: keep the old value, count it in ``tag_failures``.
    An empty improved value counts as a missing tag.  A step is atomic: new values are set only after every
    parameter's reply was parsed, so a raising step leaves values and memory as they were.
    ``full_value=False`` shows long variables shortened to their first/last 10 words, as the reference does;
    ``True`` shows the whole value (useful for code)."""

    def __init__(self, parameters, engine, *, constraints=(), in_context_examples=(), gradient_memory: int = 0,
                 momentum: int = 0, tags=("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"),
                 on_missing_tags: str = "raise", max_retries: int = 2, full_value: bool = False,
                 system_prompt: str = P.OPTIMIZER_SYSTEM_PROMPT):
        params = list(parameters)
        if not params:
            raise ValueError("TGD needs at least one parameter")
        for p in params:
            if not isinstance(p, Variable):
                raise TypeError(f"parameters must be Variables, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"parameter {p.role_description!r} does not require grad")
        self.parameters = params
        self.engine = check_engine(engine)
        self.constraints = [_check_text("constraint", c, allow_empty=False) for c in constraints]
        self.in_context_examples = [_check_text("in-context example", c, allow_empty=False)
                                    for c in in_context_examples]
        for name, val in (("gradient_memory", gradient_memory), ("momentum", momentum), ("max_retries", max_retries)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ValueError(f"{name} must be an int >= 0, got {val!r}")
        if (not isinstance(tags, (tuple, list)) or len(tags) != 2 or not all(isinstance(t, str) and t for t in tags)
                or tags[0] == tags[1]):
            raise ValueError(f"tags must be two different non-empty strings (start, end), got {tags!r}")
        if on_missing_tags not in TAG_POLICIES:
            raise ValueError(f"on_missing_tags must be one of {TAG_POLICIES}, got {on_missing_tags!r}")
        self.gradient_memory, self.momentum, self.max_retries = gradient_memory, momentum, max_retries
        self.tags = tuple(tags)
        self.on_missing_tags = on_missing_tags
        self.full_value = bool(full_value)
        self.system_prompt = system_prompt.format(start_tag=self.tags[0], end_tag=self.tags[1])
        self.memory = {id(p): [] for p in params}     # past feedback texts
        self.past_values = {id(p): [] for p in params}
        self.tag_failures = 0
        self.calls = 0

    def zero_grad(self):
        for p in self.parameters:
            p.zero_grad()

    def update_prompt(self, p: Variable) -> str:
        info = {"variable_desc": p.role_description,
                "variable_short": p.value if self.full_value else p.short_value(),
                "variable_grad": gradient_and_context_text(p), "start_tag": self.tags[0], "end_tag": self.tags[1]}
        text = P.TGD_PREFIX.format(**info)
        past = self.past_values[id(p)][-self.momentum:] if self.momentum else []
        if past:
            text += P.MOMENTUM_ADDITION.format(past_values="\n".join(past))
        mem = self.memory[id(p)][-self.gradient_memory:] if self.gradient_memory else []
        if mem:
            mem_text = "".join(f"\n<FEEDBACK-{i + 1}> {m}</FEEDBACK-{i + 1}>\n" for i, m in enumerate(mem))
            text += P.GRADIENT_MEMORY_ADDITION.format(gradient_memory=mem_text)
        if self.constraints:
            text += P.CONSTRAINT_ADDITION.format(
                constraint_text="\n".join(f"Constraint {i + 1}: {c}" for i, c in enumerate(self.constraints)))
        if self.in_context_examples:
            text += P.IN_CONTEXT_ADDITION.format(variable_desc=p.role_description,
                                                 in_context_examples="\n".join(self.in_context_examples))
        return text + P.TGD_SUFFIX.format(**info)

    def _ask(self, prompt):
        attempts = 1 + (self.max_retries if self.on_missing_tags == "retry" else 0)
        err = None
        for _ in range(attempts):
            self.calls += 1
            reply = self.engine(prompt, system_prompt=self.system_prompt)
            if not isinstance(reply, str):
                raise TypeError(f"the engine must return a str, got {type(reply).__name__}")
            try:
                new = extract_improved(reply, self.tags)
                if not new:
                    raise MissingTagsError(f"the optimizer reply has empty {self.tags[0]} tags")
                return new
            except MissingTagsError as e:
                err = e
        raise err

    def step(self):
        """One update of every parameter that has feedback (parameters without feedback are left alone)."""
        new_values = {}
        failures = 0
        for p in self.parameters:
            if p.grad_text.strip() == "":
                continue
            try:
                new_values[id(p)] = self._ask(self.update_prompt(p))
            except MissingTagsError:
                if self.on_missing_tags != "keep":
                    raise
                failures += 1
        self.tag_failures += failures
        for p in self.parameters:
            if p.grad_text.strip() == "":
                continue
            self.past_values[id(p)].append(p.value)
            self.memory[id(p)].append(p.grad_text)
            if id(p) in new_values:
                p.set_value(new_values[id(p)])
