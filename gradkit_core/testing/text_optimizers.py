"""Conformance suite for optimizers of text variables (kind ``text_optimizers``; TextGrad's TGD).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_text_optimizers`)::

    opt = gk.create(NAME, [p1, p2], engine, **hp)   # engine(prompt, system_prompt=None, **kw) -> str
    opt.zero_grad()                                 # clears the parameters' feedback
    ...                                             # the plugin's backward attaches feedback
    opt.step()                                      # one engine call per parameter with feedback

Subclass :class:`TextOptimizerConformance`, set ``component`` / ``component_kwargs`` and implement
the hooks that speak the plugin's language:

* :meth:`make_parameter` ``(value, role, *, requires_grad=True)`` -- one of the plugin's text variables;
* :meth:`add_feedback` ``(param, text)`` -- attach feedback as the plugin's ``backward`` would;
* :meth:`proposal_reply` ``(text)`` -- an engine reply that proposes ``text`` as the new value, in the
  format the component parses (e.g. inside ``<IMPROVED_VARIABLE>`` tags);
* :meth:`malformed_reply` ``()`` -- a reply the component cannot parse (default: plain prose without
  any markup; override when that is a valid reply for your component);
* :meth:`make_engine` ``(reply_fn)`` -- an engine whose reply to a prompt is ``reply_fn(prompt)``
  (default: a plain function with the engine signature; override to wrap it in the plugin's engine class,
  which must pass ``reply_fn``'s return value through unchanged, non-strings included);
* ``bad_kwargs`` -- hyperparameter dicts that must each be a ``ValueError`` at construction
  (non-finite, negative, unknown policy names, ...).

The rules, each able to fail (``tests/test_text_optimizer_suite.py`` shows each one failing on a
deliberately broken toy optimizer):

(a) a step sets each of two parameters to the engine's (distinct) proposal for it;
(b) the prompt for a parameter contains its current value, role description and current feedback (an
    optimizer that ignores the textual gradient fails); after ``zero_grad()`` the old feedback is gone
    from the next prompt;
(c) atomic: when the reply for the second parameter is malformed (under the component's default policy)
    or the engine raises, ``step()`` raises an error with a message and both values are unchanged; the
    optimizer's state is unchanged too (checked by behaviour: a later good step sends the same prompts
    as on an optimizer that never failed);
(d) an empty or whitespace-only proposal never becomes a value (an error, or the old value kept);
(e) no parameters -> ``ValueError``; a parameter with ``requires_grad=False`` -> ``ValueError``; each of
    ``bad_kwargs`` -> ``ValueError`` at construction; an engine reply that is not a ``str`` -> ``TypeError``
    (values unchanged).

This module imports nothing heavy (no torch).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import pytest

#: the two parameters every rule uses: (value, role, first feedback, second feedback, proposal)
_P = (
    ("alpha draft answer one", "the first answer under test", "feedback-alpha-1: name the unit",
     "feedback-alpha-2: be shorter", "ALPHA-NEW-VALUE"),
    ("beta draft answer two", "the second answer under test", "feedback-beta-1: use digits",
     "feedback-beta-2: drop the period", "BETA-NEW-VALUE"),
)


class _Script:
    """The replies the suite's engine gives: records prompts, answers each parameter's prompt with its
    proposal, and can be told to misbehave from the n-th call on."""

    def __init__(self, suite: "TextOptimizerConformance", proposals: Dict[str, str]):
        self.suite, self.proposals = suite, dict(proposals)   # marker text in prompt -> proposed value
        self.prompts: List[str] = []
        self.bad_from: Optional[int] = None                    # 0-based call index where misbehaviour starts
        self.bad: Optional[Callable[[], Any]] = None

    def __call__(self, prompt: str) -> Any:
        self.prompts.append(prompt)
        if self.bad is not None and len(self.prompts) - 1 >= (self.bad_from or 0):
            return self.bad()
        hits = [v for k, v in self.proposals.items() if k in prompt]
        if len(hits) != 1:
            # a prompt with neither (or both) parameters' values: reply with something unparsable so the step
            # cannot silently pass; the rule that checks prompts names the problem
            return self.suite.malformed_reply()
        return self.suite.proposal_reply(hits[0])


class _EngineDown(RuntimeError):
    pass


class TextOptimizerConformance:
    #: registered component name (``None``: override :meth:`make`)
    component: Optional[str] = None
    #: keyword arguments for ``create(component, parameters, engine, **component_kwargs)``
    component_kwargs: Dict[str, Any] = {}
    #: hyperparameter dicts that must each be a ValueError at construction
    bad_kwargs: List[Dict[str, Any]] = []

    # ------------------------------------------------------------------ hooks
    def make(self, parameters: List[Any], engine: Any, **extra: Any) -> Any:
        import gradkit_core as gk

        if self.component is None:
            raise TypeError("set `component` on the TextOptimizerConformance subclass or override make()")
        return gk.create(self.component, parameters, engine, kind="text_optimizers",
                         **{**self.component_kwargs, **extra})

    def make_parameter(self, value: str, role: str, *, requires_grad: bool = True) -> Any:  # pragma: no cover
        pytest.fail("TextOptimizerConformance subclasses implement make_parameter(value, role, *, requires_grad)")

    def add_feedback(self, param: Any, text: str) -> None:  # pragma: no cover
        pytest.fail("TextOptimizerConformance subclasses implement add_feedback(param, text)")

    def proposal_reply(self, text: str) -> str:  # pragma: no cover
        pytest.fail("TextOptimizerConformance subclasses implement proposal_reply(text)")

    def malformed_reply(self) -> str:
        return "I think the variable is fine as it is and I would not change anything about it."

    def make_engine(self, reply_fn: Callable[[str], Any]) -> Any:
        def engine(prompt, system_prompt=None, **kw):
            return reply_fn(prompt)
        return engine

    def value_of(self, param: Any) -> str:
        return param.value

    # ------------------------------------------------------------------ helpers
    def _setup(self, **extra: Any):
        params = [self.make_parameter(v, r) for v, r, *_ in _P]
        for p, (_, _, fb, *_rest) in zip(params, _P):
            self.add_feedback(p, fb)
        script = _Script(self, {v: prop for v, _, _, _, prop in _P})
        opt = self.make(params, self.make_engine(script), **extra)
        return params, script, opt

    def _step(self, opt: Any, script: _Script) -> None:
        """``opt.step()`` with a clear failure when a prompt carries no parameter's current value (the script
        then replies with something unparsable, so the step raises)."""
        try:
            opt.step()
        except Exception as e:
            lost = [p[:200] for p in script.prompts if sum(k in p for k in script.proposals) != 1]
            if lost:
                pytest.fail(f"an engine prompt does not contain its parameter's current value ({e!r}); "
                            f"prompts: {lost}")
            raise

    def _prompt_for(self, script: _Script, marker: str) -> str:
        hits = [p for p in script.prompts if marker in p]
        assert hits, f"no engine prompt contains the parameter's current value {marker!r}; prompts: " \
                     f"{[p[:200] for p in script.prompts]}"
        return hits[-1]

    # ------------------------------------------------------------------ rules
    def test_a_step_sets_each_parameter_to_its_proposal(self):
        params, script, opt = self._setup()
        self._step(opt, script)
        got = [self.value_of(p) for p in params]
        assert got == [prop for *_, prop in _P], \
            f"each parameter must take the engine's proposal for it: expected {[p[-1] for p in _P]}, got {got}"

    def test_b_prompt_holds_value_role_and_feedback_and_zero_grad_clears_it(self):
        params, script, opt = self._setup()
        self._step(opt, script)
        for v, role, fb, _, _ in _P:
            prompt = self._prompt_for(script, v)
            assert fb in prompt, f"the prompt for {v!r} does not contain its feedback {fb!r} " \
                                 "(the optimizer ignores the textual gradient)"
            assert role in prompt, f"the prompt for {v!r} does not contain its role description {role!r}"
        # second round: new values, new feedback, old feedback cleared
        opt.zero_grad()
        for p, (_, _, _, fb2, _) in zip(params, _P):
            self.add_feedback(p, fb2)
        script.proposals = {prop: prop + "-2" for *_, prop in _P}
        script.prompts.clear()
        self._step(opt, script)
        for _, _, fb1, fb2, prop in _P:
            prompt = self._prompt_for(script, prop)   # the current value is the first step's proposal
            assert fb2 in prompt, f"the second prompt does not contain the new feedback {fb2!r}"
            assert fb1 not in prompt, f"after zero_grad() the old feedback {fb1!r} is still in the prompt"
        assert [self.value_of(p) for p in params] == [prop + "-2" for *_, prop in _P]

    def _check_atomic(self, bad: Callable[[], Any], what: str, errors=(Exception,)):
        params, script, opt = self._setup()
        before = [self.value_of(p) for p in params]
        script.bad_from, script.bad = 1, bad
        with pytest.raises(errors) as info:
            opt.step()
        assert str(info.value).strip(), f"the error raised for {what} must say what was wrong"
        assert [self.value_of(p) for p in params] == before, \
            f"{what} on the second parameter: step() must leave BOTH values unchanged (not atomic)"
        # the optimizer's state is unchanged: a good step now sends what a fresh optimizer sends
        script.bad = None
        script.prompts.clear()
        opt.step()
        after_failure = list(script.prompts)
        fresh_params, fresh_script, fresh = self._setup()
        fresh.step()
        assert after_failure == fresh_script.prompts, \
            f"after a step that failed on {what}, the next step's prompts differ from a fresh optimizer's " \
            "(the failed step changed the optimizer's state)"
        assert [self.value_of(p) for p in params] == [self.value_of(p) for p in fresh_params]

    def test_c_malformed_reply_is_an_error_and_the_step_is_atomic(self):
        self._check_atomic(self.malformed_reply, "a malformed reply", (ValueError,))

    def test_c_engine_error_is_an_error_and_the_step_is_atomic(self):
        def down():
            raise _EngineDown("the engine is down (test)")
        self._check_atomic(down, "an engine error")

    def test_d_empty_proposal_never_becomes_a_value(self):
        for empty in ("", "   \n\t "):
            params, script, opt = self._setup()
            before = [self.value_of(p) for p in params]
            script.bad_from, script.bad = 0, (lambda e=empty: self.proposal_reply(e))
            try:
                opt.step()
            except ValueError as e:
                assert str(e).strip(), "the error for an empty proposal must say what was wrong"
            got = [self.value_of(p) for p in params]
            assert got == before, f"an empty proposal {empty!r} changed the values {before} -> {got} " \
                                  "(it must be an error or keep the old value, never empty text)"

    def test_e_no_parameters_is_a_value_error(self):
        with pytest.raises(ValueError) as info:
            self.make([], self.make_engine(_Script(self, {})))
        assert str(info.value).strip()

    def test_e_frozen_parameter_is_a_value_error(self):
        p = self.make_parameter(_P[0][0], _P[0][1])
        frozen = self.make_parameter(_P[1][0], _P[1][1], requires_grad=False)
        with pytest.raises(ValueError) as info:
            self.make([p, frozen], self.make_engine(_Script(self, {})))
        assert str(info.value).strip()

    def test_e_bad_hyperparameters_are_value_errors(self):
        if not self.bad_kwargs:
            pytest.fail("list the component's bad hyperparameters in `bad_kwargs` (non-finite, negative, "
                        "unknown policy names)")
        for kw in self.bad_kwargs:
            p = self.make_parameter(_P[0][0], _P[0][1])
            try:
                self.make([p], self.make_engine(_Script(self, {})), **kw)
            except ValueError as e:
                assert str(e).strip(), f"the error for {kw} must say what was wrong"
            else:
                pytest.fail(f"bad hyperparameters {kw} were accepted (expected a ValueError at construction)")

    def test_e_non_string_reply_is_a_type_error(self):
        # bytes of a well-formed reply: an optimizer that coerces with str() would parse a proposal from it
        for reply in (None, 42, self.proposal_reply("COERCED-VALUE").encode()):
            params, script, opt = self._setup()
            before = [self.value_of(p) for p in params]
            script.bad_from, script.bad = 0, (lambda r=reply: r)
            try:
                opt.step()
            except TypeError as e:
                assert str(e).strip(), "the TypeError for a non-string reply must say what was wrong"
            except Exception as e:
                pytest.fail(f"a non-string reply ({type(reply).__name__}) must be a TypeError, got {e!r}")
            else:
                pytest.fail(f"a non-string reply ({type(reply).__name__}) was accepted (expected a TypeError)")
            assert [self.value_of(p) for p in params] == before, "a non-string reply changed a value"
