"""Parity with the reference `textgrad` 0.1.8: the same graph, driven by the same scripted engine, sends the same
prompts (system prompt and text) to the engine and ends with the same updated values.

Graphs are chosen so every variable receives one gradient: the reference keeps gradients in a ``set``, so with
several the order of their texts in its prompts varies from run to run."""

import hashlib
from collections import Counter

import pytest

from gradkit_textgrad.bench import import_reference, reference_engine

ref = import_reference()  # the reference textgrad module, its litellm stand-in and log directory set up
if ref is None:
    pytest.skip("the reference textgrad==0.1.8 is in the test extra", allow_module_level=True)
from textgrad.autograd import StringBasedFunction as RefStringFn  # noqa: E402
from textgrad.engine import EngineLM  # noqa: E402

import gradkit_textgrad as ours  # noqa: E402
from gradkit_textgrad import prompts as P  # noqa: E402


def make_scripted():
    """Replies depend only on (system prompt, prompt), so call order cannot matter."""
    def tag(p, s):
        return hashlib.sha1(f"{s}|{p}".encode()).hexdigest()[:8]

    return ours.ScriptedEngine([
        (lambda p, s: s is not None and "IMPROVED_VARIABLE" in s,
         lambda p, s: f"Sure. <IMPROVED_VARIABLE> improved-{tag(p, s)} </IMPROVED_VARIABLE>"),
        (lambda p, s: s is not None and s.startswith("You are part of an optimization system that improves a given"),
         lambda p, s: f"feedback-{tag(p, s)}"),
        (r".*", lambda p, s: f"reply-{tag(p, s)} to {p[:20]}"),
    ])


RefEngine = reference_engine(ref)


LONG_Q = ("A farmer has seventeen sheep and all but nine run away while the dog sleeps under the old oak tree near "
          "the river; how many sheep are left?")


def prompt_graph(lib, eng, make_var, llmcall, textloss, tgd, opt_kwargs):
    system = make_var("You are a careful solver. Read the question twice, think about every number it mentions, "
                      "check for trick wording, and then answer concisely with the final number only.", role_description="system prompt to the solver",
                      requires_grad=True)
    question = make_var(LONG_Q, role_description="question to the solver", requires_grad=False)
    answer = llmcall(eng, system)(question)
    loss = textloss("Evaluate the answer; is it correct and concise?", eng)(answer)
    loss.backward(eng)
    opt = tgd([system], eng, **opt_kwargs)
    opt.step()
    return system.value, answer.value


def run_both(graph, opt_kwargs):
    e1, e2 = make_scripted(), make_scripted()
    ours_out = graph("ours", e1, lambda v, **k: ours.Variable(v, **k), ours.LLMCall, ours.TextLoss,
                     lambda params, eng, **kw: ours.TGD(params, eng, **kw), opt_kwargs)
    ref_out = graph("ref", RefEngine(e2), lambda v, **k: ref.Variable(v, **k), ref.autograd.LLMCall, ref.TextLoss,
                    lambda params, eng, **kw: ref.TGD(parameters=params, engine=eng, **kw), opt_kwargs)
    return e1.calls, e2.calls, ours_out, ref_out


@pytest.mark.parametrize("opt_kwargs", [{}, {"constraints": ["Keep it under 20 words.", "Be polite."],
                                             "in_context_examples": ["Answer: 9", "Answer: 4"]}])
def test_prompt_optimization_graph_matches_reference(opt_kwargs):
    ours_calls, ref_calls, ours_out, ref_out = run_both(prompt_graph, opt_kwargs)
    assert len(ours_calls) == len(ref_calls) == 5      # forward, eval, 2 feedback, 1 update
    assert Counter(ours_calls) == Counter(ref_calls), "engine calls (system prompt, text) differ from the reference"
    assert ours_out == ref_out
    assert any(s == P.BACKWARD_SYSTEM_PROMPT for s, _ in ours_calls)   # the chain ran through feedback
    assert ours_out[0].startswith("improved-")


def code_graph(lib, eng, make_var, llmcall, textloss, tgd, opt_kwargs):
    fn_cls = ours.StringBasedFunction if lib == "ours" else RefStringFn
    code = make_var("def add_one(x):\n    return x", role_description="python function to fix", requires_grad=True)
    spec = make_var("add_one(1) == 2", role_description="unit test", requires_grad=False)

    def run_tests(code, test):
        return "all tests passed" if "x + 1" in code.value else f"FAILED: {test.value}"

    result = fn_cls(run_tests, "Runs the unit test on the code")(inputs={"code": code, "test": spec})
    loss = textloss("Read the test report and say what is wrong.", eng)(result)
    loss.backward(eng)
    tgd([code], eng, **opt_kwargs).step()
    return code.value, result.value


def test_string_function_graph_matches_reference():
    e1, e2 = make_scripted(), make_scripted()
    o = code_graph("ours", e1, lambda v, **k: ours.Variable(v, **k), ours.LLMCall, ours.TextLoss,
                   lambda params, eng, **kw: ours.TGD(params, eng, **kw), {})
    r = code_graph("ref", RefEngine(e2), lambda v, **k: ref.Variable(v, **k), ref.autograd.LLMCall, ref.TextLoss,
                   lambda params, eng, **kw: ref.TGD(parameters=params, engine=eng, **kw), {})
    assert len(e1.calls) == 4
    assert Counter(e1.calls) == Counter(e2.calls)
    assert o == r


def test_prompt_texts_equal_the_reference_constants():
    from textgrad.autograd import llm_backward_prompts as RB
    from textgrad.optimizer import optimizer_prompts as RO
    assert P.BACKWARD_SYSTEM_PROMPT == RB.BACKWARD_SYSTEM_PROMPT
    assert P.OPTIMIZER_SYSTEM_PROMPT.format(start_tag="<A>", end_tag="</A>") == \
        RO.OPTIMIZER_SYSTEM_PROMPT.format(new_variable_start_tag="<A>", new_variable_end_tag="</A>")
    assert P.GRADIENT_TEMPLATE == RO.GRADIENT_TEMPLATE
    assert P.REDUCE_MEAN_SYSTEM_PROMPT == ref.autograd.reduce_prompts.REDUCE_MEAN_SYSTEM_PROMPT


def test_multi_field_evaluation_matches_reference():
    from textgrad.loss import MultiFieldEvaluation as RefMFE

    def graph(V, mfe, tgd, eng):
        instr = V("Compare the prediction with the correct answer.", role_description="evaluation instruction",
                  requires_grad=False)
        pred = V("The answer is 32.", role_description="x", requires_grad=True)
        gold = V("42", role_description="y", requires_grad=False)
        loss = mfe(instr, ["prediction to evaluate", "correct answer"], eng)([pred, gold])
        loss.backward(eng)
        tgd([pred], eng).step()
        return pred.value, pred.role_description, loss.value

    e1, e2 = make_scripted(), make_scripted()
    o = graph(lambda v, **k: ours.Variable(v, **k),
              lambda i, r, e: ours.MultiFieldEvaluation(i, r, e), lambda ps, e: ours.TGD(ps, e), e1)
    r = graph(lambda v, **k: ref.Variable(v, **k),
              lambda i, r, e: RefMFE(i, r, engine=e), lambda ps, e: ref.TGD(parameters=ps, engine=e), RefEngine(e2))
    assert len(e1.calls) == 3 and Counter(e1.calls) == Counter(e2.calls)
    assert o == r and o[1] == "prediction to evaluate"
    assert e1.calls[0][1] == ("Compare the prediction with the correct answer.\n**prediction to evaluate**: "
                              "The answer is 32.\n**correct answer**: 42")


def test_momentum_matches_the_reference_once_its_missing_return_is_bridged(monkeypatch):
    """textgrad 0.1.8's TextualGradientDescentwithMomentum cannot run as shipped: its ``_update_prompt`` builds the
    prompt with ``construct_tgd_prompt`` but has no ``return``, so ``step()`` sends ``None`` to the engine.  Bridging
    only that (the engine gets the prompt the reference itself just built), three momentum steps (window 2) send
    the same (system prompt, prompt) calls and end at the same values as ours.  Feedback is attached without a
    conversation: the reference's momentum variant shows bare feedback texts (``get_gradient_text``), where its
    plain TGD -- and ours, with or without momentum -- shows each gradient inside its conversation."""
    import textgrad.optimizer.optimizer as ro

    # as shipped: the engine receives None instead of a prompt
    seen = []

    class Recording(EngineLM):
        model_string = "recording"

        def generate(self, prompt, system_prompt=None, **kw):
            seen.append(prompt)
            return "<IMPROVED_VARIABLE>x</IMPROVED_VARIABLE>"

        __call__ = generate

    v = ref.Variable("draft", role_description="answer", requires_grad=True)
    v.gradients.add(ref.Variable("be shorter", role_description="feedback"))
    ro.TextualGradientDescentwithMomentum(engine=Recording(), parameters=[v], momentum_window=2).step()
    assert seen == [None], "the reference's momentum optimizer now sends a prompt: drop the bridge below"

    built = []
    real = ro.construct_tgd_prompt
    monkeypatch.setattr(ro, "construct_tgd_prompt", lambda **kw: built.append(real(**kw)) or built[-1])

    class Bridged(RefEngine):
        def generate(self, prompt, system_prompt=None, **kw):
            return self.inner(built[-1] if prompt is None else prompt, system_prompt=system_prompt)

    feedback = ["Name the unit of the answer.", "Round to one decimal.", "Drop the leading article."]
    e1, e2 = make_scripted(), make_scripted()
    ours_v = ours.Variable("The speed is 12.345", role_description="answer to the physics question")
    ref_v = ref.Variable("The speed is 12.345", role_description="answer to the physics question", requires_grad=True)
    ours_opt = ours.TGD([ours_v], e1, momentum=2, constraints=["One sentence."])
    ref_opt = ro.TextualGradientDescentwithMomentum(engine=Bridged(e2), parameters=[ref_v], momentum_window=2,
                                                    constraints=["One sentence."])
    for fb in feedback:
        ours_opt.zero_grad()
        ours_v.add_gradient(ours.Gradient(fb, "feedback to the answer"))
        ref_opt.zero_grad()
        ref_v.gradients.add(ref.Variable(fb, role_description="feedback to the answer"))
        ours_opt.step()
        ref_opt.step()
        assert ours_v.value == ref_v.value
    assert len(e1.calls) == 3 and e1.calls == e2.calls
    assert "at Step 2: improved-" in e1.calls[2][1]                # the window moved past the initial value
    assert "The speed is 12.345" not in e1.calls[2][1].split("<PAST_ITERATIONS>")[1]
