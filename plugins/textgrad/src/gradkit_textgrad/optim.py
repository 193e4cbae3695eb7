"""Textual Gradient Descent (TGD)."""

from __future__ import annotations

from . import prompts as P
from .variable import Variable, _check_text, check_engine

TAG_POLICIES = ("raise", "keep", "retry", "first_line")
PROMPT_STYLES = ("paper", "compact")


class MissingTagsError(ValueError, IndexError):
    """The optimizer model's reply has no opening improved-variable tag (an IndexError, as in the reference)."""


def gradient_and_context_text(variable: Variable) -> str:
    """What TGD shows the optimizer about a variable's feedback: each gradient inside its conversation
    (``GRADIENT_TEMPLATE``), or the bare feedback when it has no conversation (sum/reduction)."""
    parts = []
    for g in variable.gradients:
        parts.append(g.value if g.context is None else P.GRADIENT_TEMPLATE.format(feedback=g.value, **g.context))
    return "\n".join(parts)


def first_line(reply: str) -> str:
    """The recovery proposal of a reply without tags (policy ``"first_line"``, not the paper's): its first
    non-empty line outside code-fence markers, with surrounding quotes/backticks and whitespace removed
    ("" when there is none)."""
    for line in reply.splitlines():
        line = line.strip()
        if not line or line.startswith("```"):
            continue
        return line.strip("\"'`").strip()
    return ""


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
    feedback and the last ``momentum`` values (the current one included, in the reference's momentum format).

    Tag policy (``on_missing_tags``), for replies without the opening tag:
    ``"raise"`` (default, like the reference): :class:`MissingTagsError`;
    ``"retry"``: ask again, up to ``max_retries`` more times, then raise;
    ``"keep"``: keep the old value, count it in ``tag_failures``;
    ``"first_line"`` (not the paper's; for small models that drop the tags): the reply's first non-empty line
    (quotes/backticks stripped, code-fence markers skipped) becomes the value, counted in ``tag_recoveries``;
    a reply with no text line raises.
    ``prompt_style="compact"`` (not the paper's) replaces the paper's long optimizer prompt by a short one that
    asks for the rewritten text alone (see ``prompts.COMPACT_UPDATE``); it needs ``on_missing_tags="first_line"``
    (a tagged reply is still parsed by its tags).
    An empty improved value counts as a missing tag.  A step is atomic: new values are set only after every
    parameter's reply was parsed, so a raising step leaves values and memory as they were.
    ``full_value=False`` shows long variables shortened to their first/last 10 words, as the reference does;
    ``True`` shows the whole value (useful for code)."""

    def __init__(self, parameters, engine, *, constraints=(), in_context_examples=(), gradient_memory: int = 0,
                 momentum: int = 0, tags=("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"),
                 on_missing_tags: str = "raise", max_retries: int = 2, full_value: bool = False,
                 system_prompt: str | None = None, prompt_style: str = "paper"):
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
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
        if prompt_style == "compact" and on_missing_tags != "first_line":
            raise ValueError("prompt_style='compact' asks for the text alone, without tags: it needs "
                             f"on_missing_tags='first_line', got {on_missing_tags!r}")
        if system_prompt is None:
            system_prompt = P.OPTIMIZER_SYSTEM_PROMPT if prompt_style == "paper" else P.COMPACT_SYSTEM_PROMPT
        _check_text("system_prompt", system_prompt, allow_empty=False)
        self.gradient_memory, self.momentum, self.max_retries = gradient_memory, momentum, max_retries
        self.tags = tuple(tags)
        self.on_missing_tags = on_missing_tags
        self.full_value = bool(full_value)
        self.prompt_style = prompt_style
        self.system_prompt = system_prompt.format(start_tag=self.tags[0], end_tag=self.tags[1])
        self.memory = {id(p): [] for p in params}     # past feedback texts
        self.past_values = {id(p): [] for p in params}
        self.tag_failures = 0     # replies without tags whose old value was kept (policy "keep")
        self.tag_recoveries = 0   # replies without tags whose first line became the value (policy "first_line")
        self.calls = 0

    def zero_grad(self):
        for p in self.parameters:
            p.zero_grad()

    def update_prompt(self, p: Variable) -> str:
        if self.prompt_style == "compact":
            return self._compact_prompt(p)
        info = {"variable_desc": p.role_description,
                "variable_short": p.value if self.full_value else p.short_value(),
                "variable_grad": gradient_and_context_text(p), "start_tag": self.tags[0], "end_tag": self.tags[1]}
        text = P.TGD_PREFIX.format(**info)
        if self.momentum:
            # as the reference's TextualGradientDescentwithMomentum builds it: the last `momentum` values up to and
            # including the current one, "<role> at Step i: <value>." (i counts within the window)
            window = (self.past_values[id(p)] + [p.value])[-self.momentum:]
            text += P.MOMENTUM_ADDITION.format(past_values="".join(
                f"\n{p.role_description} at Step {i + 1}: {v}.\n" for i, v in enumerate(window)))
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

    def _compact_prompt(self, p: Variable) -> str:
        """Short prompt for small models (not the paper's): role, value, the feedback texts without their
        conversations, the optional additions in one line each, and a request for the rewritten text alone."""
        text = P.COMPACT_UPDATE.format(variable_desc=p.role_description,
                                       variable_short=p.value if self.full_value else p.short_value(),
                                       feedback=" ".join(g.value.strip() for g in p.gradients))
        past = self.past_values[id(p)][-self.momentum:] if self.momentum else []
        if past:
            text += "Earlier versions (change it more if the feedback repeats): " + " | ".join(past) + "\n"
        mem = self.memory[id(p)][-self.gradient_memory:] if self.gradient_memory else []
        if mem:
            text += "Earlier feedback: " + " | ".join(mem) + "\n"
        if self.constraints:
            text += "Constraints: " + " ".join(self.constraints) + "\n"
        if self.in_context_examples:
            text += "Examples: " + " | ".join(self.in_context_examples) + "\n"
        return text + P.COMPACT_SUFFIX

    def _parse(self, reply: str) -> tuple[str, bool]:
        """(proposal, recovered): the tagged text, or under policy ``first_line`` the reply's first line."""
        if self.on_missing_tags == "first_line" and self.tags[0] not in reply:
            new = first_line(reply)
            if not new:
                raise MissingTagsError(f"the optimizer reply has no {self.tags[0]} tag and no text line; "
                                       f"reply: {reply[:300]!r}")
            return new, True
        new = extract_improved(reply, self.tags)
        if not new:
            raise MissingTagsError(f"the optimizer reply has empty {self.tags[0]} tags")
        return new, False

    def _ask(self, prompt):
        attempts = 1 + (self.max_retries if self.on_missing_tags == "retry" else 0)
        err = None
        for _ in range(attempts):
            self.calls += 1
            reply = self.engine(prompt, system_prompt=self.system_prompt)
            if not isinstance(reply, str):
                raise TypeError(f"the engine must return a str, got {type(reply).__name__}")
            try:
                return self._parse(reply)
            except MissingTagsError as e:
                err = e
        raise err

    def step(self):
        """One update of every parameter that has feedback (parameters without feedback are left alone)."""
        new_values = {}
        failures = recoveries = 0
        for p in self.parameters:
            if p.grad_text.strip() == "":
                continue
            try:
                new_values[id(p)], recovered = self._ask(self.update_prompt(p))
                recoveries += recovered
            except MissingTagsError:
                if self.on_missing_tags != "keep":
                    raise
                failures += 1
        self.tag_failures += failures
        self.tag_recoveries += recoveries
        for p in self.parameters:
            if p.grad_text.strip() == "":
                continue
            self.past_values[id(p)].append(p.value)
            self.memory[id(p)].append(p.grad_text)
            if id(p) in new_values:
                p.set_value(new_values[id(p)])
