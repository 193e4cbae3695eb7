"""Text variables and the backward pass over their computation graph."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

from . import prompts as P

_BACKWARD_ENGINE: contextvars.ContextVar = contextvars.ContextVar("gradkit_textgrad_backward_engine", default=None)


@contextlib.contextmanager
def backward_engine(engine):
    """``with backward_engine(engine): loss.backward()`` -- the engine used when ``backward()`` gets none."""
    check_engine(engine)
    token = _BACKWARD_ENGINE.set(engine)
    try:
        yield engine
    finally:
        _BACKWARD_ENGINE.reset(token)


def check_engine(engine):
    if engine is None or not callable(engine):
        raise TypeError(f"an engine is a callable engine(prompt, system_prompt=None) -> str, got {engine!r}")
    return engine


def _check_text(name, value, *, allow_empty=True):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must be non-empty text")
    return value


@dataclass(eq=False)
class Gradient:
    """One textual gradient (feedback) on a variable, with the conversation that produced it.

    ``context`` is ``None`` for feedback that is passed on unchanged (sum) or a reduction; otherwise a dict with
    ``context`` (the conversation), ``response_desc`` and ``variable_desc`` -- what TGD shows the optimizer."""

    value: str
    role_description: str
    context: dict | None = None
    reduce_groups: list = field(default_factory=list)


class Variable:
    """A node of a TextGrad graph: a text ``value`` with a ``role_description`` (required; it drives the quality of
    feedback), ``requires_grad`` and the ``predecessors`` it was computed from.

    Gradients are kept in insertion order (the reference keeps a ``set``, so its order, and the order of the
    engine calls that depend on it, varies between runs)."""

    def __init__(self, value: str, *, role_description: str, requires_grad: bool = True, predecessors=()):
        _check_text("value", value)
        _check_text("role_description", role_description, allow_empty=False)
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad must be a bool, got {requires_grad!r}")
        predecessors = list(predecessors)
        for p in predecessors:
            if not isinstance(p, Variable):
                raise TypeError(f"predecessors must be Variables, got {type(p).__name__}")
        if not requires_grad and any(p.requires_grad for p in predecessors):
            raise ValueError("a variable that does not require grad cannot have predecessors that require grad")
        self.value = value
        self.role_description = role_description
        self.requires_grad = requires_grad
        self.predecessors = list(dict.fromkeys(predecessors))
        self.gradients: list[Gradient] = []
        self.grad_fn = None
        self.reduce_groups: list = []

    def __repr__(self):
        return f"Variable(value={self.value!r}, role_description={self.role_description!r})"

    def __str__(self):
        return self.value

    # -- values ---------------------------------------------------------------------------------------------------
    def set_value(self, value: str):
        self.value = _check_text("value", value)

    def short_value(self, n_words_offset: int = 10) -> str:
        """The value, or its first and last ``n_words_offset`` space-separated words around ``(...)`` (as the
        reference shows variables in feedback and update prompts)."""
        words = self.value.split(" ")
        if len(words) <= 2 * n_words_offset:
            return self.value
        return " ".join(words[:n_words_offset]) + " (...) " + " ".join(words[-n_words_offset:])

    # -- gradients ------------------------------------------------------------------------------------------------
    @property
    def grad_text(self) -> str:
        """All feedback on this variable, joined by newlines ("" when there is none)."""
        return "\n".join(g.value for g in self.gradients)

    def add_gradient(self, gradient: Gradient):
        self.gradients.append(gradient)

    def zero_grad(self):
        self.gradients = []
        self.reduce_groups = []

    def __add__(self, other):
        from .functions import tg_sum
        if not isinstance(other, Variable):
            return NotImplemented
        return tg_sum([self, other], role_description=f"{self.role_description} and {other.role_description}",
                      separator="")

    # -- backward -------------------------------------------------------------------------------------------------
    def backward(self, engine=None):
        """Propagate textual feedback from this variable to every predecessor that requires grad.

        Topological order (micrograd-style), then in reverse: reduce a node's gradients if it belongs to an
        ``aggregate`` group, then call its ``grad_fn``.  ``engine`` (or the one set with :func:`backward_engine`)
        writes the feedback."""
        if engine is None:
            engine = _BACKWARD_ENGINE.get()
            if engine is None:
                raise ValueError("no backward engine: pass backward(engine) or use `with backward_engine(engine):`")
        check_engine(engine)
        topo, seen = [], set()

        def visit(v):
            stack = [(v, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    topo.append(node)
                    continue
                if id(node) in seen:
                    continue
                seen.add(id(node))
                stack.append((node, True))
                for p in reversed(node.predecessors):
                    if id(p) not in seen:
                        stack.append((p, False))

        visit(self)
        self.gradients = []
        for v in reversed(topo):
            if not v.requires_grad:
                continue
            _reduce(v, engine)
            if v.grad_fn is not None:
                v.grad_fn(engine)


def _reduce(v: Variable, engine):
    """Replace the gradients of ``v`` that belong to an aggregate group by one LLM summary per group."""
    if not v.reduce_groups or len(v.gradients) <= 1 or v.grad_text == "":
        return
    groups: dict[int, list[Gradient]] = {}
    rest = []
    for g in v.gradients:
        if g.reduce_groups:
            for gid in g.reduce_groups:
                groups.setdefault(gid, []).append(g)
        else:
            rest.append(g)
    reduced = []
    for gid, grads in groups.items():
        prompt = "\n".join(f"<FEEDBACK>{g.value}</FEEDBACK>" for g in grads)
        summary = engine(prompt, system_prompt=P.REDUCE_MEAN_SYSTEM_PROMPT)
        _check_text("the engine's reply", summary)
        roles = ", ".join(dict.fromkeys(g.role_description for g in grads))
        reduced.append(Gradient(summary, roles))
    v.gradients = rest + reduced
