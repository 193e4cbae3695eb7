"""Reduced reproduction (scripted simulator), the benchmark, and the local transformers engine on a tiny Llama."""

import pytest
import torch

from gradkit_textgrad import TransformersEngine
from gradkit_textgrad import reproduce


def test_quick_reproduction_runs_and_feedback_reaches_the_update():
    res = reproduce.run(quick=True, progress=False)
    rows = {r["method"]: r for r in res.rows}
    assert set(rows) == set(reproduce.METHODS)
    n = 3 * len(reproduce.PROBLEMS)
    assert rows["none"]["model_calls"] == n
    assert all(rows[m]["model_calls"] <= 3 * n for m in reproduce.METHODS)      # budget 1 + 2*rounds, rounds=1
    assert not res.claims, "quick mode (simulator) makes no direction claim"
    # in the simulator the optimizers fix an answer's format only when the test's rule reaches their prompt
    # through the textual gradient (the critic quotes it; the compact prompt carries the test's message): if the
    # feedback were lost, TGD would equal `none`
    for m in ("tgd_paper", "tgd_small"):
        assert sum(rows[m]["per_seed"]) > sum(rows["none"]["per_seed"]) + 0.05, m
    assert res.meta["paper_updates"] > 0 and res.meta["small_updates"] > 0
    assert "cannot be reproduced offline" in res.notes[0]


def test_string_tests_pass_the_answer_and_never_reveal_it():
    for q, expected, kind in reproduce.PROBLEMS:
        assert reproduce.check(expected, expected, kind) == "PASS"
        assert reproduce.check(f"{expected}\nbecause ...", expected, kind) == "PASS"
        wrong = "The answer is unknown."
        msg = reproduce.check(wrong, expected, kind)
        assert msg.startswith("FAIL") and expected not in msg, msg
    assert reproduce.check("5 + 3 = 8", "8", "number") == "PASS"
    assert reproduce.check("5 + 3 = 9\nso 8", "8", "number").startswith("FAIL")
    assert "last number on the first line: 9" in reproduce.check("5 + 3 = 9", "8", "number")
    assert reproduce.check("Apple", "APPLE", "word").startswith("FAIL")
    assert reproduce.check("'APPLE'.", "APPLE", "word") == "PASS"
    assert reproduce.check("Fixed:\n```\nreturn b+a\n```", "return a + b", "code").startswith("FAIL")
    assert reproduce.check("Fixed:\n```\nreturn  b + a;\n```", "return a + b", "code") == "PASS"
    assert reproduce.check("return a - b", "return a + b", "code").startswith("FAIL")
    with pytest.raises(ValueError, match="kind"):
        reproduce.check("x", "x", "essay")


def test_bench_quick_same_calls_as_reference():
    from gradkit_textgrad import bench
    res = bench.run(quick=True, progress=False)
    assert res.rows and all(r["gradkit_ms"] > 0 for r in res.rows)
    if "textgrad_ms" in res.rows[0]:
        assert res.all_passed


def tiny_chat_model():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    words = ["<unk>", "<eos>", "system", "user", "assistant", ":"] + [f"w{i}" for i in range(26)]
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant : {% endif %}")
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                      eos_token_id=10_000)  # never stops early
    return LlamaForCausalLM(cfg), tok


def test_transformers_engine_greedy_and_seeded_sampling():
    model, tok = tiny_chat_model()
    eng = TransformersEngine(model, tok, max_new_tokens=5)
    a = eng("w1 w2", system_prompt="w3")
    assert isinstance(a, str) and a == eng("w1 w2", system_prompt="w3") and eng.generated_tokens == 10
    assert len(eng("w1", max_new_tokens=2).split()) <= 2
    s1 = TransformersEngine(model, tok, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    s2 = TransformersEngine(model, tok, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    assert [s1("w1 w2") for _ in range(2)] == [s2("w1 w2") for _ in range(2)]
    with pytest.raises(ValueError):
        TransformersEngine(model, tok, max_new_tokens=0)
    with pytest.raises(ValueError):
        eng("   ")
    with pytest.raises(TypeError):
        eng("w1", beams=3)
