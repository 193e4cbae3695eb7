"""TextGrad mechanics with the scripted engine: graph, prompts, feedback flow, reduction, TGD and its policies."""

import re

import pytest

from gradkit_textgrad import (LLMCall, MissingTagsError, ScriptedEngine, StringBasedFunction, TextLoss, TGD,
                              Variable, aggregate, backward_engine, tg_sum, CachedEngine, FormattedLLMCall,
                              MultiFieldEvaluation)
from gradkit_textgrad import prompts as P


def feedback_engine():
    """Forward: echoes 'ANSWER(<input>)'; evaluation: 'EVAL'; backward: 'FB[n]' numbered by call."""
    count = {"n": 0}

    def backward(prompt, system):
        count["n"] += 1
        return f"FB{count['n']}"

    return ScriptedEngine([
        (lambda p, s: s == P.BACKWARD_SYSTEM_PROMPT, backward),
        (lambda p, s: s == P.REDUCE_MEAN_SYSTEM_PROMPT, lambda p, s: "SUMMARY(" + p.replace("\n", "|") + ")"),
        (lambda p, s: s is not None and s.startswith("Evaluate"), "EVAL"),
        (r".*", lambda p, s: f"ANSWER({p})"),
    ])


def test_chain_of_feedback_prompts_and_gradients():
    eng = feedback_engine()
    x = Variable("2+2", role_description="question")
    sp = Variable("be brief", role_description="system prompt", requires_grad=False)
    y = LLMCall(eng, sp)(x)
    assert y.value == "ANSWER(2+2)" and y.predecessors == [sp, x] and y.requires_grad
    loss = TextLoss("Evaluate the answer", eng)(y)
    assert loss.value == "EVAL"
    n_forward = len(eng.calls)
    loss.backward(eng)
    back = eng.calls[n_forward:]
    assert len(back) == 2, "one feedback call for y (base), one for x (chain); none for the frozen system prompt"
    (s1, p1), (s2, p2) = back
    assert s1 == s2 == P.BACKWARD_SYSTEM_PROMPT
    # y is judged by the evaluation: base objective, the evaluation conversation
    assert p1.startswith("You will give feedback to a variable with the following role: <ROLE> response from the "
                         "language model </ROLE>. Here is an evaluation of the variable using a language model:")
    assert "<LM_SYSTEM_PROMPT> Evaluate the answer </LM_SYSTEM_PROMPT>" in p1 and "<LM_OUTPUT> EVAL </LM_OUTPUT>" in p1
    assert P.OBJECTIVE_BASE in p1
    # x gets the chain objective quoting y's feedback
    assert "<LM_INPUT> 2+2 </LM_INPUT>" in p2 and "<LM_OUTPUT> ANSWER(2+2) </LM_OUTPUT>" in p2
    assert ("address the following feedback on the LM_OUTPUT: FB1 </OBJECTIVE_FUNCTION>") in p2
    assert y.grad_text == "FB1" and x.grad_text == "FB2" and sp.grad_text == ""
    assert x.gradients[0].context["response_desc"] == "response from the language model"


def test_backward_engine_context_and_missing_engine():
    eng = feedback_engine()
    x = Variable("q", role_description="question")
    loss = TextLoss("Evaluate", eng)(x)
    with pytest.raises(ValueError, match="no backward engine"):
        loss.backward()
    with backward_engine(eng):
        loss.backward()
    assert x.grad_text == "FB1"


def test_sum_copies_feedback_without_a_model_call_and_aggregate_reduces_with_one():
    eng = feedback_engine()
    a = Variable("A", role_description="first part")
    b = Variable("B", role_description="second part")
    total = tg_sum([a, b])
    assert total.value == "A\nB"
    loss = TextLoss("Evaluate", eng)(total)
    k = len(eng.calls)
    loss.backward(eng)
    assert len(eng.calls) - k == 1, "sum's backward must not call the model"
    assert a.grad_text == P.SUM_FEEDBACK.format(variable_desc="first part", feedback="FB1")
    assert b.grad_text == P.SUM_FEEDBACK.format(variable_desc="second part", feedback="FB1")
    assert (a + b).value == "AB"

    # aggregate: one shared prompt feeds two answers; its two feedbacks are summarised by one reduce call
    eng = feedback_engine()
    sp = Variable("solve it", role_description="system prompt")
    y1 = LLMCall(eng, sp)(Variable("q1", role_description="question", requires_grad=False))
    y2 = LLMCall(eng, sp)(Variable("q2", role_description="question", requires_grad=False))
    loss = TextLoss("Evaluate", eng)(aggregate([y1, y2]))
    loss.backward(eng)
    reduce_calls = [p for s, p in eng.calls if s == P.REDUCE_MEAN_SYSTEM_PROMPT]
    assert len(reduce_calls) == 1
    assert re.fullmatch(r"<FEEDBACK>FB\d</FEEDBACK>\n<FEEDBACK>FB\d</FEEDBACK>", reduce_calls[0])
    assert len(sp.gradients) == 1 and sp.grad_text.startswith("SUMMARY(")
    # without aggregation (plain sum) the two feedbacks stay separate and no reduce call happens
    eng = feedback_engine()
    sp = Variable("solve it", role_description="system prompt")
    ys = [LLMCall(eng, sp)(Variable(q, role_description="question", requires_grad=False)) for q in ("q1", "q2")]
    TextLoss("Evaluate", eng)(tg_sum(ys)).backward(eng)
    assert len(sp.gradients) == 2 and not any(s == P.REDUCE_MEAN_SYSTEM_PROMPT for s, _ in eng.calls)


def test_string_based_function_backward_prompts():
    eng = feedback_engine()
    code = Variable("def f(x): return x", role_description="code")

    def tests(code):
        return "PASS" if "x + 1" in code.value else "FAIL: f(1) returned 1, expected 2"

    fn = StringBasedFunction(tests, "run the unit tests")
    out = fn({"code": code})
    assert out.value.startswith("FAIL")
    out.backward(eng)
    (s, p), = eng.calls
    assert p.startswith("You will give feedback to a variable with the following role: <ROLE> code </ROLE>. Here "
                        "is an evaluation of the variable using a string-based function:")
    assert "Function purpose: run the unit tests" in p
    assert "**Code(role: code)**: def f(x): return x" in p and "<OUTPUT_OF_FUNCTION> FAIL: f(1)" in p
    assert code.grad_text == "FB1"


def test_formatted_llm_call_and_bad_fields():
    eng = feedback_engine()
    q = Variable("Q", role_description="question", requires_grad=False)
    a = Variable("A", role_description="answer")
    call = FormattedLLMCall(eng, "{q} -> {a}", {"q": "question", "a": "answer"}, system_prompt=None)
    out = call({"q": q, "a": a})
    assert out.value == "ANSWER(Q -> A)" and out.predecessors == [q, a]
    with pytest.raises(ValueError, match="fields"):
        call({"q": q})


def opt_engine(reply):
    return ScriptedEngine([(lambda p, s: s is not None and "IMPROVED_VARIABLE" in s, reply)])


def with_feedback(var, text):
    var.zero_grad()
    eng = ScriptedEngine([(r".*", text)])
    TextLoss("Evaluate", eng)(var).backward(eng)
    return var


def test_tgd_uses_the_feedback_and_parses_tags():
    # the optimizer's reply depends on the feedback it is shown: removing the feedback from the prompt fails this
    def reply(p, s):
        m = re.search(r"<FEEDBACK>use (\w+)</FEEDBACK>", p)
        return f"noise <IMPROVED_VARIABLE> {m.group(1) if m else 'NOFEEDBACK'} </IMPROVED_VARIABLE> tail"

    eng = opt_engine(reply)
    x = with_feedback(Variable("old", role_description="answer"), "use NEW")
    opt = TGD([x], eng, constraints=["one word"], in_context_examples=["EX1"])
    opt.step()
    assert x.value == "NEW"
    s, p = eng.calls[-1]
    assert s == P.OPTIMIZER_SYSTEM_PROMPT.format(start_tag="<IMPROVED_VARIABLE>", end_tag="</IMPROVED_VARIABLE>")
    assert p.startswith("Here is the role of the variable you will improve: <ROLE>answer</ROLE>.")
    assert "<VARIABLE> old </VARIABLE>" in p
    assert "<CONSTRAINTS>Constraint 1: one word</CONSTRAINTS>" in p
    assert "You must base on the following examples when modifying the answer:\n\n<EXAMPLES>EX1</EXAMPLES>" in p
    assert p.index("<CONSTRAINTS>") < p.index("<EXAMPLES>") < p.index("Send the improved variable")
    # a parameter without feedback is not sent to the optimizer
    n = len(eng.calls)
    x.zero_grad()
    opt.step()
    assert len(eng.calls) == n and x.value == "NEW"


def test_tgd_gradient_memory_and_momentum():
    eng = opt_engine("<IMPROVED_VARIABLE>v</IMPROVED_VARIABLE>")
    x = Variable("v0", role_description="answer")
    opt = TGD([x], eng, gradient_memory=2, momentum=1)
    for i in range(3):
        with_feedback(x, f"feedback {i}")
        opt.step()
    prompts = [p for _, p in eng.calls if p.startswith("Here is the role")]
    assert "<PAST_FEEDBACK>" not in prompts[0]
    assert "<PAST_FEEDBACK>\n<FEEDBACK-1> feedback 0</FEEDBACK-1>\n</PAST_FEEDBACK>" in prompts[1]
    assert ("<PAST_FEEDBACK>\n<FEEDBACK-1> feedback 0</FEEDBACK-1>\n\n<FEEDBACK-2> feedback 1</FEEDBACK-2>\n"
            "</PAST_FEEDBACK>") in prompts[2]
    # momentum window 1: the current value, in the reference's "<role> at Step i: <value>." format
    assert "<PAST_ITERATIONS>\nanswer at Step 1: v0.\n</PAST_ITERATIONS>" in prompts[0]
    assert "<PAST_ITERATIONS>\nanswer at Step 1: v.\n</PAST_ITERATIONS>" in prompts[2]
    opt2 = TGD([x], eng, momentum=2)
    x.set_value("w0")
    with_feedback(x, "feedback a")
    opt2.step()                                   # w0 -> v
    with_feedback(x, "feedback b")
    opt2.step()
    assert "<PAST_ITERATIONS>\nanswer at Step 1: w0.\n\nanswer at Step 2: v.\n</PAST_ITERATIONS>" in eng.calls[-1][1]
    # memory off: nothing of the past is shown
    eng0 = opt_engine("<IMPROVED_VARIABLE>v</IMPROVED_VARIABLE>")
    x0 = Variable("v0", role_description="answer")
    opt0 = TGD([x0], eng0)
    for i in range(2):
        with_feedback(x0, f"feedback {i}")
        opt0.step()
    assert "feedback 0" not in eng0.calls[-1][1]


def test_tag_policies_and_atomic_step():
    x = with_feedback(Variable("old-x", role_description="answer x"), "fb")
    y = with_feedback(Variable("old-y", role_description="answer y"), "fb")

    def reply(p, s):
        return "<IMPROVED_VARIABLE>new-x</IMPROVED_VARIABLE>" if "answer x" in p else "I forgot the tags"

    eng = opt_engine(reply)
    with pytest.raises(MissingTagsError):
        TGD([x, y], eng).step()
    assert (x.value, y.value) == ("old-x", "old-y"), "a failed step must leave every parameter as it was"
    with pytest.raises(IndexError):  # the reference raises IndexError; ours is both
        TGD([x, y], eng).step()

    opt = TGD([x, y], eng, on_missing_tags="keep")
    opt.step()
    assert (x.value, y.value, opt.tag_failures) == ("new-x", "old-y", 1)

    # retry: the second attempt has the tags
    replies = iter(["no tags", "<IMPROVED_VARIABLE>fixed</IMPROVED_VARIABLE>"])
    eng2 = opt_engine(lambda p, s: next(replies))
    z = with_feedback(Variable("z", role_description="answer"), "fb")
    opt = TGD([z], eng2, on_missing_tags="retry", max_retries=1)
    opt.step()
    assert z.value == "fixed" and opt.calls == 2
    # a missing closing tag is accepted (text to the end), empty tags are not
    assert TGD([with_feedback(Variable("w", role_description="a"), "fb")],
               opt_engine("<IMPROVED_VARIABLE> open only")).step() is None
    with pytest.raises(MissingTagsError):
        TGD([with_feedback(Variable("w", role_description="a"), "fb")],
            opt_engine("<IMPROVED_VARIABLE>  </IMPROVED_VARIABLE>")).step()


def test_short_value_in_prompts_and_full_value_option():
    long = " ".join(f"w{i}" for i in range(30))
    x = Variable(long, role_description="essay")
    assert x.short_value() == " ".join(f"w{i}" for i in range(10)) + " (...) " + " ".join(f"w{i}" for i in range(20, 30))
    eng = opt_engine("<IMPROVED_VARIABLE>v</IMPROVED_VARIABLE>")
    with_feedback(x, "fb")
    short = x.short_value()
    TGD([x], eng).step()
    assert f"<VARIABLE> {short} </VARIABLE>" in eng.calls[-1][1]
    y = with_feedback(Variable(long, role_description="essay"), "fb")
    TGD([y], eng, full_value=True).step()
    assert f"<VARIABLE> {long} </VARIABLE>" in eng.calls[-1][1]


@pytest.mark.parametrize("make, exc", [
    (lambda: Variable(3, role_description="r"), TypeError),
    (lambda: Variable("x", role_description=""), ValueError),
    (lambda: Variable("x", role_description="r", requires_grad=False,
                      predecessors=[Variable("p", role_description="r")]), ValueError),
    (lambda: TGD([], opt_engine("")), ValueError),
    (lambda: TGD([Variable("x", role_description="r")], opt_engine(""), gradient_memory=-1), ValueError),
    (lambda: TGD([Variable("x", role_description="r")], opt_engine(""), tags=("<A>", "<A>")), ValueError),
    (lambda: TGD([Variable("x", role_description="r")], opt_engine(""), on_missing_tags="ignore"), ValueError),
    (lambda: TGD([Variable("x", role_description="r", requires_grad=False)], opt_engine("")), ValueError),
    (lambda: TGD([Variable("x", role_description="r")], None), TypeError),
    (lambda: LLMCall(feedback_engine())(Variable("   ", role_description="q")), ValueError),
    (lambda: TextLoss("", feedback_engine()), ValueError),
    (lambda: tg_sum([]), ValueError),
    (lambda: StringBasedFunction(lambda **k: 3, "p")({"a": Variable("x", role_description="r")}), TypeError),
    (lambda: ScriptedEngine([("a", "b")])("zzz"), ValueError),
    (lambda: ScriptedEngine([("a", "b")])(""), ValueError),
    (lambda: MultiFieldEvaluation(Variable("i", role_description="r", requires_grad=False), ["a", "a"],
                                  feedback_engine()), ValueError),
    (lambda: MultiFieldEvaluation(Variable("i", role_description="r", requires_grad=False), ["a", "b"],
                                  feedback_engine())([Variable("x", role_description="r")]), ValueError),
])
def test_bad_input_is_a_clear_error(make, exc):
    with pytest.raises(exc):
        make()


def test_cached_engine_persists(tmp_path):
    inner = ScriptedEngine([(r".*", lambda p, s: f"r:{p}:{s}")])
    c = CachedEngine(inner, tmp_path / "c.sqlite")
    assert c("a", system_prompt="s") == "r:a:s" and c("a", system_prompt="s") == "r:a:s"
    assert c("a", system_prompt="t") == "r:a:t"
    assert (c.hits, c.misses, len(inner.calls)) == (1, 2, 2)
    c.close()
    c2 = CachedEngine(inner, tmp_path / "c.sqlite")
    assert c2("a", system_prompt="s") == "r:a:s" and c2.hits == 1 and len(inner.calls) == 2


def test_first_line_policy_and_compact_prompt():
    from gradkit_textgrad.optim import first_line
    assert first_line("\n```python\n  'x = 1'  \nmore\n```") == "x = 1"
    assert first_line("  \n ```\n") == ""
    # paper prompt, tags dropped: the first line is recovered and counted; tags are still preferred
    x = with_feedback(Variable("five plus three is 8", role_description="answer"), "digits only")
    opt = TGD([x], opt_engine("8\nbecause the test wants digits"), on_missing_tags="first_line")
    opt.step()
    assert (x.value, opt.tag_recoveries, opt.tag_failures) == ("8", 1, 0)
    opt = TGD([x], opt_engine("ok <IMPROVED_VARIABLE>9</IMPROVED_VARIABLE>"), on_missing_tags="first_line")
    opt.step()
    assert (x.value, opt.tag_recoveries) == ("9", 0)
    # compact: short prompt with role, value and feedback, its own system prompt, no conversation
    x = with_feedback(Variable("The answer is 12.", role_description="answer to: twelve in digits"),
                      "FAIL: digits only")
    eng = ScriptedEngine([(r".*", "12")])
    opt = TGD([x], eng, prompt_style="compact", on_missing_tags="first_line", constraints=["one line"])
    opt.step()
    (system, prompt), = eng.calls
    assert system == P.COMPACT_SYSTEM_PROMPT and x.value == "12"
    assert prompt == ("Role of the text: answer to: twelve in digits\nText: The answer is 12.\n"
                      "Feedback: FAIL: digits only\nConstraints: one line\nRewritten text:")
    with pytest.raises(ValueError, match="first_line"):
        TGD([x], eng, prompt_style="compact")
    with pytest.raises(ValueError, match="prompt_style"):
        TGD([x], eng, prompt_style="short", on_missing_tags="first_line")
