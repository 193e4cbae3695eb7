import math

import pytest
import torch

import gradkit_core as gk
from gradkit_vspo.env import ToolKB, make_policy, sft, token_logps
from gradkit_vspo.grpo import clipped_pg_loss, grpo_advantages, task_value, zero_advantage_mask
from gradkit_vspo.rewards import (BinaryReward, ProgressiveRewardShaper, extract_answer, length_aware_bleu,
                                  parse_calls)
from gradkit_vspo.trainer import ValueBasedSampler, VSPOTrainer
from gradkit_core.testing.rewards import RewardConformance

GOOD = "<call> lookup e1 color </call> <result> v3 </result> <answer> v3 </answer>"


# ----------------------------------------------------------------------------- GRPO core + trl parity

def test_advantages_hand_computed():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    a = grpo_advantages(r)
    sd = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
    assert torch.allclose(a[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (sd + 1e-4))
    assert torch.equal(a[1], torch.zeros(4))
    assert zero_advantage_mask(r).tolist() == [False, True]
    b = grpo_advantages(r, baseline=torch.tensor([0.25, 2.0]), scale="none")
    assert torch.allclose(b[0], torch.tensor([0.75, -0.25, -0.25, 0.75]))


def test_advantages_match_trl():
    pytest.importorskip("trl")
    from trl.trainer.utils import nanstd
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(6 * 8, generator=g)
    rewards[8:16] = 0.5  # a zero-std group
    G = 8  # trl's grpo_trainer, scale_rewards="group": (r - mean_G) / (nanstd_G + 1e-4)
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G)
    std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G)
    ref = (rewards - mean) / (std + 1e-4)
    assert torch.allclose(grpo_advantages(rewards.view(-1, G)).reshape(-1), ref, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo"])
def test_loss_matches_trl_compute_loss(loss_type):
    pytest.importorskip("trl")
    from gradkit_vspo.bench import trl_trainer

    g = torch.Generator().manual_seed(1)
    N, T = 6, 7
    logp = (-torch.rand(N, T, generator=g) * 3).requires_grad_(True)
    old = logp.detach() + 0.4 * torch.randn(N, T, generator=g)  # ratios far from 1: clipping active
    adv = torch.randn(N, generator=g)
    mask = (torch.rand(N, T, generator=g) > 0.3).long()
    mask[:, 0] = 1
    t = trl_trainer(logp, loss_type, clip=(0.2, 0.28))
    inputs = dict(prompt_ids=torch.zeros(N, 2, dtype=torch.long), prompt_mask=torch.ones(N, 2, dtype=torch.long),
                  completion_ids=torch.zeros(N, T, dtype=torch.long), completion_mask=mask, advantages=adv,
                  old_per_token_logps=old)
    ref = t._compute_loss(None, inputs)
    ours = clipped_pg_loss(logp, old, adv, clip=(0.2, 0.28), token_mask=mask, loss_type=loss_type)
    assert torch.allclose(ours, ref, atol=1e-6), (float(ours), float(ref))
    gr, = torch.autograd.grad(ref, logp)
    go, = torch.autograd.grad(ours, logp)
    assert torch.allclose(go, gr, atol=1e-7)


def test_clip_zeroes_gradient_outside_trust_region():
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, 0.0]])  # token 0: ratio e > 1.2, positive advantage -> clipped
    loss = clipped_pg_loss(logp, old, torch.tensor([1.0]))
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == pytest.approx(-0.5)


# ----------------------------------------------------------------------------- rewards

def test_length_aware_bleu_matches_sacrebleu_on_long_strings():
    sacrebleu = pytest.importorskip("sacrebleu")
    bleu = sacrebleu.metrics.BLEU(smooth_method="floor", smooth_value=0.1, tokenize="none", effective_order=True)
    ref = "the cat sat on a mat today"
    for pred in ["the cat sat on the mat today ok", "the cat sat on mat red fox", "a dog ran on a mat today"]:
        assert length_aware_bleu(pred, ref, short_len=50) == pytest.approx(bleu.sentence_score(pred, [ref]).score / 100, abs=1e-9)


def test_length_aware_bleu_short_answers():
    assert length_aware_bleu("Paris", "Paris") == 1.0  # plain 4-gram BLEU would give ~0 here
    assert 0 < length_aware_bleu("Paris France", "Paris") < 1
    ref = "one two three four five six seven eight"
    concise = "one two three four five"
    assert length_aware_bleu(concise, ref, short_len=5) == pytest.approx(1.0)
    assert length_aware_bleu(concise, ref, short_len=50) == pytest.approx(math.exp(1 - 8 / 5))
    assert length_aware_bleu("", "x") == 0.0


def test_prs_stage_gating_hand_computed():
    prs = ProgressiveRewardShaper()
    assert prs.score(GOOD, "v3", ("e1", "color"))[0] == pytest.approx(1.0)
    # call does not parse: only the format stage, partial credit 1/3 (has a call span), times 0.2
    assert prs.score("<call> lookup e1 </call>", "v3", ("e1", "color"))[0] == pytest.approx(0.2 / 3)
    # parses but asks for the wrong key: format 0.2, tool 0, answer stage locked
    bad_tool = GOOD.replace("e1 color", "e2 color")
    r, br = prs.score(bad_tool, "v3", ("e1", "color"))
    assert r == pytest.approx(0.2) and "answer" not in br
    # right tool, wrong answer: 0.2 + 0.3 + 0.5 * (floor 0.1 unigram precision)
    assert prs.score(GOOD.replace("<answer> v3", "<answer> v4"), "v3", ("e1", "color"))[0] == pytest.approx(0.55)
    binary = BinaryReward()
    assert binary(["<answer> v3 </answer>", "v3", GOOD], ["v3"] * 3).tolist() == [1.0, 0.0, 1.0]


def test_prs_schedule_shifts_weights():
    prs = ProgressiveRewardShaper(schedule=lambda p: [0.5 - 0.3 * p, 0.2, 0.3 + 0.3 * p])
    bad_tool = GOOD.replace("e1 color", "e2 color")
    assert prs.score(bad_tool, "v3", ("e1", "color"))[0] == pytest.approx(0.5)
    prs.progress = 1.0
    assert prs.score(bad_tool, "v3", ("e1", "color"))[0] == pytest.approx(0.2)


# ----------------------------------------------------------------------------- bad input

def test_bad_input_errors():
    with pytest.raises(ValueError, match="NaN or inf"):
        grpo_advantages(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="empty"):
        grpo_advantages(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="at least 2"):
        grpo_advantages(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="no <answer>"):
        extract_answer("the answer is v3")
    with pytest.raises(ValueError, match="no <answer>"):
        ProgressiveRewardShaper(on_missing="raise").score("<call> lookup e1 color </call>", "v3")
    with pytest.raises(ValueError, match="empty batch"):
        ProgressiveRewardShaper()([], [])
    with pytest.raises(ValueError, match="reference answer is empty"):
        length_aware_bleu("a", " ")
    with pytest.raises(ValueError, match="clip"):
        clipped_pg_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), clip=(1.5, 0.2))
    with pytest.raises(ValueError, match="mode"):
        VSPOTrainer(torch.nn.Linear(1, 1), mode="ppo")
    with pytest.raises(ValueError, match="lr"):
        VSPOTrainer(torch.nn.Linear(1, 1), lr=float("nan"))
    assert parse_calls("<call> lookup e1 </call><call> lookup e1 city </call>") == [None, ("lookup", "e1", "city")]


@pytest.fixture(scope="module")
def env_policy():
    torch.manual_seed(0)
    env = ToolKB(n_entities=12, n_values=6, seed=0)
    model = make_policy(env, seed=0, d_model=32, n_layer=1)
    sft(model, env, n_demos=64, steps=40, seed=0)
    return env, model


def test_nonfinite_reward_leaves_parameters_unchanged(env_policy):
    env, model = env_policy
    before = [p.detach().clone() for p in model.parameters()]
    tr = VSPOTrainer(model, reward=lambda t, r, c: torch.full((len(t),), float("nan")), batch_prompts=2, group_size=2)
    with pytest.raises(ValueError, match="NaN or inf"):
        tr.fit(env, rollout_budget=4, eval_every=100)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ----------------------------------------------------------------------------- VSPO sampling

def test_task_value_prefers_uncertain_hard_prompts():
    v = task_value(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert v[0] == 0 and v[-1] == 0
    assert v[1] > v[2] > v[3] > 0  # (1-p)^2 p: peak at p = 1/3
    s = ValueBasedSampler(list(range(5)), ema=0.5)
    s.update([0, 1, 2, 3, 4], torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.5], [0.0, 0.5]]))
    assert s.estimate([2]).item() == 0.5
    s.update([2], torch.tensor([[1.0, 1.0]]))
    assert s.estimate([2]).item() == pytest.approx(0.75)  # EMA 0.5 * 0.5 + 0.5 * 1
    assert s.refill(2, exclude=[]) == [4, 2]  # p = 0.25 (V .141), p = 0.75 (V .047); solved/hopeless never
    assert s.refill(5, exclude=[4, 2])[:1] == [3]


def _scripted_reward(env, solved):
    """1 for every episode of a 'solved' question, 0 for unsolved ones, else by episode parity: zero groups."""
    def f(texts, refs, calls):
        return torch.tensor([1.0 if tuple(c) in solved else 0.0 for c in calls])
    return f


@pytest.mark.parametrize("mode", ["dapo", "vspo"])
def test_refill_counts_rollouts_and_picks_by_value(env_policy, mode):
    env, model = env_policy
    pool = env.train_ids
    calls = {0: 0}

    def reward(texts, refs, cs):
        calls[0] += 1
        if calls[0] == 1:  # first batch: every group identical -> all zero-advantage
            return torch.ones(len(texts))
        return torch.tensor([float(i % 2) for i in range(len(texts))])  # refills: mixed groups

    tr = VSPOTrainer(model, mode=mode, reward=reward, batch_prompts=3, group_size=2, refill_rounds=1, seed=0)
    s = ValueBasedSampler(pool, ema=0.0)
    s.update(pool, torch.ones(len(pool), 2))  # every prompt solved: V = 0 ...
    valuable = pool[5:8]
    s.update(valuable, torch.full((3, 2), 0.3))  # ... except three with p = .3
    g = torch.Generator().manual_seed(0)
    parts, used, z0, _ = tr.collect(env, s, g)
    assert z0 == 1.0 and used == 3 * 2 + 3 * 2  # refills counted
    assert not parts[0][2].any() and parts[1][2].all()
    refilled = set(parts[1][0].prompt_ids)
    if mode == "vspo":
        assert refilled == set(valuable)
    else:  # DAPO refills by chance
        assert refilled != set(valuable)
    tr2 = VSPOTrainer(model, mode="grpo", reward=lambda t, r, c: torch.ones(len(t)), batch_prompts=3, group_size=2)
    parts2, used2, _, _ = tr2.collect(env, ValueBasedSampler(pool), torch.Generator().manual_seed(0))
    assert used2 == 6 and len(parts2) == 1


def test_policy_gradient_step_raises_logp_of_rewarded_episode(env_policy):
    env, model = env_policy
    import copy
    m = copy.deepcopy(model)
    tr = VSPOTrainer(m, mode="grpo", reward=lambda t, r, c: torch.tensor([1.0, 0.0] * (len(t) // 2)),
                     batch_prompts=1, group_size=2, lr=1e-2)
    g = torch.Generator().manual_seed(3)
    parts, _, _, ro = tr.collect(env, ValueBasedSampler(env.train_ids), g)
    with torch.no_grad():
        lp0 = (token_logps(m, ro.seq) * ro.policy_mask).sum(1)
    tr.step(parts, ValueBasedSampler(env.train_ids))
    with torch.no_grad():
        lp1 = (token_logps(m, ro.seq) * ro.policy_mask).sum(1)
    if ro.texts[0] != ro.texts[1]:
        assert (lp1[0] - lp0[0]) > (lp1[1] - lp0[1])


def test_value_smoothing_uses_ema_baseline_in_the_update(env_policy):
    """With value_smoothing=1 the baseline is the prompt's EMA (here 0), so both episodes of a group get
    positive advantages (plain GRPO would give +-): the update must differ from plain GRPO's."""
    env, model = env_policy
    import copy
    grads = {}
    for vs in (None, 1.0):
        m = copy.deepcopy(model)
        tr = VSPOTrainer(m, mode="grpo", reward=lambda t, r, c: torch.tensor([1.0, 0.5] * (len(t) // 2)),
                         batch_prompts=1, group_size=2, value_smoothing=vs, adv_clip=1.5, lr=1e-3)
        s = ValueBasedSampler(env.train_ids)
        parts, _, _, ro = tr.collect(env, s, torch.Generator().manual_seed(5))
        s.p[ro.prompt_ids[0]] = 0.0
        tr.opt = torch.optim.SGD(m.parameters(), lr=0.0)  # keep the weights, inspect the gradient
        tr.step(parts, s)
        grads[vs] = torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])
    a = grpo_advantages(torch.tensor([[1.0, 0.5]]), baseline=torch.tensor([0.0])).clamp(-1.5, 1.5)
    assert a[0].tolist() == pytest.approx([1.5, 0.5 / math.sqrt(0.125) / 1.0001], rel=1e-3)
    assert not torch.allclose(grads[None], grads[1.0])


def test_registered_components():
    assert callable(gk.create("prs"))
    t = gk.create("vspo", torch.nn.Linear(2, 2), mode="dapo")
    assert isinstance(t, VSPOTrainer) and t.mode == "dapo"


def test_reduced_claim_vspo_fewer_zero_adv_groups_than_grpo():
    """The refill mechanism on a small seeded run (two seeds): VSPO trains on fewer zero-advantage groups than
    GRPO. A mechanism test (it holds by construction once refills work), reported as a note by the reproduction."""
    out = {}
    for mode in ("grpo", "vspo"):
        zs = []
        for seed in (0, 1):
            env = ToolKB(n_entities=20, n_values=8, seed=seed)
            m = make_policy(env, seed=seed, d_model=32, n_layer=1)
            sft(m, env, n_demos=100, steps=60, seed=seed)
            h = VSPOTrainer(m, mode=mode, reward=BinaryReward(), batch_prompts=8, group_size=4, seed=seed).fit(
                env, rollout_budget=32 * 6, eval_every=10_000)
            zs.append(sum(h["kept_zero_frac"]) / len(h["kept_zero_frac"]))
        out[mode] = zs
    assert all(g - v > 0.05 for g, v in zip(out["grpo"], out["vspo"])), out


def test_reproduction_runs_end_to_end_small(monkeypatch):
    """The reproduction's wiring on a tiny budget: every arm, curves, the claims, the mechanism note, no save."""
    from gradkit_vspo import reproduce
    monkeypatch.setattr(reproduce, "SFT_STEPS", 10)
    monkeypatch.setitem(reproduce.CONFIGS, "quick", dict(seeds=2, budget=128, eval_every=64, lrs=[1e-3], kappas=[0.5]))
    res = reproduce.run(quick=True, progress=False)
    assert [r["arm"] for r in res.rows] == list(reproduce.ARMS)
    assert len(res.claims) == 10 and not res.claims[0].passed
    assert set(res.curves) == {"held-out EM vs rollouts", "held-out 2-hop EM vs rollouts", "format-valid vs rollouts"}
    assert res.meta["best"]["vspo+vs+prs"] == {"lr": 1e-3, "kappa": 0.5}
    assert all(len(c["x"]) == 2 for c in res.curves["held-out EM vs rollouts"].values())
    z = {r["arm"]: r["zero_adv_frac_trained"] for r in res.rows}
    assert z["vspo+prs"] <= z["grpo+prs"]
    assert any(n.startswith("mechanism check, not a claim") for n in res.notes)


_SAMPLES = [[(GOOD, "v3", ("e1", "color")), ("<call> lookup e1 </call>", "v3"), ("no tags", "v3")],
            [{"text": GOOD.replace("v3 </answer>", "v3 v4 </answer>"), "ref": "v3", "call": ("e1", "color")}]]
_BAD = [[], [("<answer> v3 </answer>", " ")], [(7, "v3")], [("a", "b", None, 1)], "not a batch"]


class TestPRSConformance(RewardConformance):
    component = "prs"
    component_kwargs = {}

    def example_batches(self):
        return _SAMPLES

    def bad_batches(self):
        return _BAD


class TestBinaryConformance(RewardConformance):
    component = "binary"
    component_kwargs = {}

    def example_batches(self):
        return _SAMPLES

    def bad_batches(self):
        return [[], [(7, "v3")], [("<answer> v3 </answer>", "")], "not a batch"]


def test_single_argument_batch_matches_three_argument_call():
    prs = ProgressiveRewardShaper()
    a = prs([s[0] for s in _SAMPLES[0]], [s[1] for s in _SAMPLES[0]], [s[2] if len(s) == 3 else None for s in _SAMPLES[0]])
    assert torch.equal(a, prs(_SAMPLES[0]))
    assert a.tolist() == pytest.approx([1.0, 0.2 / 3, 0.0])


# ----------------------------------------------------------------------------- 2-hop arithmetic questions

class ScriptedPolicy(torch.nn.Module):
    """Writes ``script[t]`` at step t after the prompt (tool tokens it 'writes' are overridden by the env)."""

    def __init__(self, env, script):
        super().__init__()
        self.env, self.ids = env, [env.tok[w] for w in script]

    def forward(self, seq):
        t = seq.shape[1] - self.env.prompt_len
        out = torch.zeros(seq.shape[0], seq.shape[1], self.env.vocab_size)
        out[:, -1, self.ids[min(t, len(self.ids) - 1)]] = 10.0
        return out


def _two_hop_qid(env):
    return next(q for q in env.train_ids if env.is_two_hop(q))


def test_two_hop_episode_hand_checked():
    env = ToolKB(n_entities=8, n_values=4, seed=0, n_two_hop=12)
    q = _two_hop_qid(env)
    op, e1, e2, a = env.questions[q]
    x, y = int(env.kb[(e1, a)]), int(env.kb[(e2, a)])
    assert op == "sum" and env.ref(q) == str(x + y) and env.expected_call(q) == ((e1, a), (e2, a))
    assert [env.vocab[i] for i in env.prompt(q)] == ["<bos>", "sum", e1, e2, a]
    junk = ["<result>", "none", "</result>"]  # what the script 'writes' where the env appends the tool result
    two = (["<call>", "lookup", e1, a, "</call>"] + junk + ["<call>", "lookup", e2, a, "</call>"] + junk
           + ["<answer>", str(x + y), "</answer>", "<eos>"])
    ro = env.rollout(ScriptedPolicy(env, two), [q], greedy=True)
    want = (f"<call> lookup {e1} {a} </call> <result> {x} </result> <call> lookup {e2} {a} </call> "
            f"<result> {y} </result> <answer> {x + y} </answer>")
    assert ro.texts == [want]
    n_policy = 5 + 5 + 4  # two calls and the answer with <eos>; the six result tokens are the env's
    assert int(ro.policy_mask.sum()) == n_policy
    prs, binary = ProgressiveRewardShaper(), BinaryReward()
    assert prs.score(want, env.ref(q), env.expected_call(q)) == (1.0, {"format": 1.0, "tool": 1.0, "answer": 1.0})
    assert binary([want], [env.ref(q)]).tolist() == [1.0]
    # one lookup, then even the right number: the tool stage scores 1/2 and the answer stage stays locked
    one = ["<call>", "lookup", e1, a, "</call>"] + junk + ["<answer>", str(x + y), "</answer>", "<eos>"]
    text1 = env.rollout(ScriptedPolicy(env, one), [q], greedy=True).texts[0]
    r1, br1 = prs.score(text1, env.ref(q), env.expected_call(q))
    assert r1 == pytest.approx(0.2 + 0.3 * 0.5) and "answer" not in br1
    # two lookups, a wrong sum: the answer stage is open and scores the BLEU floor (0.1 on a 1-token answer)
    wrong = two[:-3] + [str((x + y + 1) % 9), "</answer>", "<eos>"]
    text2 = env.rollout(ScriptedPolicy(env, wrong), [q], greedy=True).texts[0]
    assert prs.score(text2, env.ref(q), env.expected_call(q))[0] == pytest.approx(0.5 + 0.5 * 0.1)
    assert binary([text2], [env.ref(q)]).tolist() == [0.0]


def test_two_hop_in_the_default_mix_and_split():
    env, plain = ToolKB(seed=3), ToolKB(seed=3, n_two_hop=0)
    two_train = [q for q in env.train_ids if env.is_two_hop(q)]
    two_test = [q for q in env.test_ids if env.is_two_hop(q)]
    assert len(two_train) == 60 and len(two_test) == 20 and not set(two_train) & set(two_test)
    assert [q for q in env.test_ids if not env.is_two_hop(q)] == plain.test_ids  # the 1-hop split is unchanged
    assert not plain.two_hop and plain.prompt_len == 4 and env.prompt_len == 5 and env.max_steps >= 20
    g = torch.Generator().manual_seed(0)
    prs = ProgressiveRewardShaper()
    for q in two_train[:20]:  # noise-free demonstrations are fully rewarded
        words = env.demo(q, 0.0, g)
        text = " ".join(w for w in words if w != "<eos>")
        assert prs.score(text, env.ref(q), env.expected_call(q))[0] == 1.0 and words.count("<call>") == 2
    with pytest.raises(ValueError, match="max_calls"):
        ToolKB(max_calls=1)
    with pytest.raises(ValueError, match="n_two_hop"):
        ToolKB(n_two_hop=-1)


def test_tool_score_two_keys_and_bad_expected_call():
    from gradkit_vspo.rewards import tool_score
    t = "<call> lookup e1 age </call> <result> 3 </result> <call> lookup e2 age </call>"
    assert tool_score(t, (("e1", "age"), ("e2", "age"))) == 1.0
    assert tool_score(t, (("e1", "age"), ("e3", "age"))) == 0.5
    assert tool_score(t, ("e2", "age")) == 1.0
    with pytest.raises(TypeError, match="expected_call"):
        tool_score(t, ("e1", 3))


def test_pluggable_llm_judge_scores_long_form_answers_only():
    from gradkit_vspo.rewards import LLMJudge
    prompts = []

    def scripted(prompt):
        prompts.append(prompt)
        return "The candidate misses one point.\nScore: 7"

    prs = ProgressiveRewardShaper(judge=LLMJudge(scripted))
    long_ref = "the river rises in the northern hills and flows south to the sea"
    long_pred = "it starts in the northern hills and reaches the sea"
    text = f"<call> lookup e1 color </call> <result> v3 </result> <answer> {long_pred} </answer>"
    r, br = prs.score(text, long_ref, ("e1", "color"))
    assert br["answer"] == pytest.approx(0.7) and r == pytest.approx(0.2 + 0.3 + 0.5 * 0.7)
    assert len(prompts) == 1 and long_ref in prompts[0] and long_pred in prompts[0]
    assert prs.score(GOOD, "v3", ("e1", "color"))[0] == 1.0 and len(prompts) == 1  # short answer: BLEU, no judge call
    for reply, err in (("looks fine", "no 'Score"), ("Score: 11", "outside")):
        bad = ProgressiveRewardShaper(judge=LLMJudge(lambda p, reply=reply: reply))
        with pytest.raises(ValueError, match=err):
            bad.score(text, long_ref, ("e1", "color"))
    with pytest.raises(TypeError, match="generate"):
        LLMJudge("not callable")


def test_value_smoothing_kappa_zero_is_plain_vspo_at_group_size_8():
    """kappa = 0 (baseline = group mean) with the +-3 clip equals plain GRPO advantages for G = 8: the grid point
    kappa = 0 of the reproduction is VSPO without smoothing (|A| <= (G-1)/sqrt(G) = 2.47 < 3)."""
    r = torch.rand(200, 8, generator=torch.Generator().manual_seed(0))
    r[:, 0] += 5.0  # one outlier per group: the extreme case of the bound
    a = grpo_advantages(r)
    assert torch.equal(grpo_advantages(r, baseline=0.0 * r.mean(1) + 1.0 * r.mean(1)).clamp(-3, 3), a)
    assert a.abs().max() <= 7 / math.sqrt(8) and a.abs().max() > 2.4
