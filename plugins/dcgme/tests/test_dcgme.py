"""DCG-ME's pieces: variation, networks, reward re-weighting, PG offspring, evaluation, checkpoints, API."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import gradkit_core as gk
from gradkit_dcgme.algorithm import DCGME, MAPElites, PGAME, QDAgent, iso_line, similarity
from gradkit_dcgme.evaluation import Evaluator
from gradkit_dcgme.networks import Actor, PolicyShape, TwinCritic, fold_descriptor, init_genomes, policy_forward


# ---------------------------------------------------------------------- variation and similarity
def test_iso_line_variation():
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((2000, 5))
    x2 = rng.standard_normal((2000, 5))
    # iso part only (x2 == x1): isotropic Gaussian with std sigma_iso
    child = iso_line(x1, x1.copy(), 0.3, 0.05, np.random.default_rng(1))
    assert np.std(child - x1) == pytest.approx(0.3, rel=0.03)
    # line part only: the child moves along x2 - x1, by N(0, sigma_line^2) times that direction
    child = iso_line(x1, x2, 0.0, 0.05, np.random.default_rng(2)).astype(np.float64)
    step, v = child - x1, x2 - x1
    t = (step * v).sum(1) / (v * v).sum(1)  # one scalar per child
    np.testing.assert_allclose(step, t[:, None] * v, atol=1e-5)  # float32 genomes
    assert np.std(t) == pytest.approx(0.05, rel=0.05)


def test_similarity_kernel():
    d = torch.tensor([[0.0, 0.0], [0.3, 0.4]])
    dp = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    s = similarity(d, dp, 0.1)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(np.exp(-0.5 / 0.1))


# ---------------------------------------------------------------------- networks
def test_batched_genomes_match_the_actor_and_folding_matches_conditioning():
    g = torch.Generator().manual_seed(0)
    shape = PolicyShape(5, (8, 8), 2)
    plain = Actor(5, 2, (8, 8), 0, g)
    obs = torch.randn(3, 7, 5, generator=g)
    genome = plain.to_genome().unsqueeze(0).expand(3, -1)
    torch.testing.assert_close(policy_forward(genome, obs, shape), plain(obs))
    dc = Actor(5, 2, (8, 8), 2, g)
    desc = torch.rand(3, 2, generator=g) * 2 - 1
    folded = fold_descriptor(dc, desc)
    assert folded.shape == (3, shape.n_params)
    expected = dc(obs, desc[:, None, :].expand(3, 7, 2))
    torch.testing.assert_close(policy_forward(folded, obs, shape), expected, rtol=1e-5, atol=1e-6)


def test_init_is_lecun_uniform_with_zero_bias():
    shape = PolicyShape(50, (40,), 3)
    g = init_genomes(shape, 20, torch.Generator().manual_seed(0))
    off, a, b = shape.layers[0]
    w = g[:, off:off + a * b]
    assert w.abs().max() <= (3 / 50) ** 0.5 and w.std() == pytest.approx((1 / 50) ** 0.5, rel=0.05)
    assert torch.all(g[:, off + a * b:off + a * b + b] == 0)


def test_twin_critic_heads_are_independent():
    c = TwinCritic(3, 2, (16,), 0, torch.Generator().manual_seed(0))
    s, a = torch.randn(10, 3), torch.randn(10, 2)
    q1, q2 = c(s, a)
    assert not torch.allclose(q1, q2)
    torch.testing.assert_close(c.first(s, a), q1)
    q1.sum().backward()
    assert c.weights[0].grad[1].abs().sum() == 0 and c.weights[0].grad[0].abs().sum() > 0


# ---------------------------------------------------------------------- TD3 with re-weighted rewards
def _batch(n=6, desc=None, desc_target=None, done=1.0):
    g = torch.Generator().manual_seed(1)
    return {"obs": torch.randn(n, 5, generator=g), "action": torch.rand(n, 2, generator=g) * 2 - 1,
            "reward": torch.rand(n, generator=g), "next_obs": torch.randn(n, 5, generator=g),
            "done": torch.full((n,), done), "desc": desc, "desc_target": desc_target}


def test_dcg_target_rescales_rewards_by_descriptor_similarity(tiny):
    agent = DCGME("gradkit/PointOmni-v0", seed=0, **tiny)
    d = torch.tensor([[0.0, 0.0]] * 3 + [[0.5, 0.5]] * 3)
    dp = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.3, -0.4]] * 2)
    b = _batch(desc=d, desc_target=dp, done=1.0)  # terminal: y is the re-weighted reward alone
    y = agent.td3_targets(b)
    expected = torch.exp(-torch.linalg.vector_norm(d - dp, dim=1) / 0.1) * b["reward"]
    torch.testing.assert_close(y, expected)
    # non-terminal: y = r~ + gamma * min(Q1', Q2')(s', clip(pi'(s'|d') + eps) | d')
    b = _batch(desc=d, desc_target=d.clone(), done=0.0)
    gen_state = agent.gen.get_state()
    y = agent.td3_targets(b)
    agent.gen.set_state(gen_state)
    noise = (torch.randn(b["action"].shape, generator=agent.gen) * 0.2).clamp(-0.5, 0.5)
    with torch.no_grad():
        a2 = (agent.actor_target(b["next_obs"], d) + noise).clamp(-1, 1)
        q1, q2 = agent.critic_target(b["next_obs"], a2, d)
    torch.testing.assert_close(y, b["reward"] + 0.99 * torch.minimum(q1, q2))


def test_pga_target_ignores_descriptors(tiny):
    agent = PGAME("gradkit/PointOmni-v0", seed=0, **tiny)
    d = torch.tensor([[0.9, -0.9]] * 6)
    b = _batch(desc=d, desc_target=-d, done=1.0)
    torch.testing.assert_close(agent.td3_targets(b), b["reward"])


def test_critic_and_actor_updates_follow_policy_delay(tiny):
    agent = DCGME("gradkit/PointOmni-v0", seed=0, **tiny)
    agent._initialise()
    before = [p.clone() for p in agent.actor.parameters()]
    out0 = agent.td3_step(agent.buffer.sample((32,), agent.rng))  # step 0: actor updated
    assert "actor_loss" in out0
    mid = [p.clone() for p in agent.actor.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, mid))
    out1 = agent.td3_step(agent.buffer.sample((32,), agent.rng))  # step 1: critic only
    assert "actor_loss" not in out1
    assert all(torch.equal(a, b) for a, b in zip(mid, agent.actor.parameters()))


def test_pg_offspring_climb_the_critic_toward_the_parent_descriptor(tiny):
    tiny.update(pg_steps=20, critic_steps=30)
    agent = DCGME("gradkit/PointOmni-v0", seed=0, **tiny)
    agent.step()
    rng_state = agent.rng.bit_generator.state
    parents, parent_desc = agent.archive.sample(4, agent.rng)
    agent.rng.bit_generator.state = rng_state
    children, desc = agent.emit_pg(4)
    np.testing.assert_array_equal(desc, parent_desc)  # d' = the parent's own descriptor
    s = agent.buffer.sample((4, 500), np.random.default_rng(5))["obs"]
    d = torch.as_tensor(agent.normalize(desc), dtype=torch.float32)[:, None, :].expand(4, 500, 2)
    with torch.no_grad():
        q_parent = agent.critic.first(s, policy_forward(torch.from_numpy(parents), s, agent.shape), d).mean(1)
        q_child = agent.critic.first(s, policy_forward(children, s, agent.shape), d).mean(1)
    assert torch.all(q_child > q_parent)


# ---------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("env_id,kwargs", [("gradkit/PointOmni-v0", {}), ("gradkit/HopperUni-v0", {"episode_length": 60})])
def test_batched_rollout_matches_single_env_rollouts(env_id, kwargs):
    ev = Evaluator(env_id, kwargs)
    shape = PolicyShape(ev.obs_dim, (8,), ev.act_dim)
    genomes = init_genomes(shape, 3, torch.Generator().manual_seed(0)) * 3
    out = ev.rollout(genomes, shape, seed=11)
    for i in range(3):
        env = gym.make(env_id, **kwargs)
        obs, _ = env.reset(seed=11 + (i if env_id != "gradkit/PointOmni-v0" else 0))
        ret, n = 0.0, 0
        while True:
            with torch.no_grad():
                a = policy_forward(genomes[i:i + 1], torch.as_tensor(obs, dtype=torch.float32)[None], shape)[0]
            obs, r, term, trunc, info = env.step(a.double().numpy())
            ret += r
            n += 1
            if term or trunc:
                break
        assert out["length"][i] == n
        assert out["fitness"][i] == pytest.approx(ret, rel=1e-5)
        np.testing.assert_allclose(out["descriptor"][i], info["final_descriptor"], rtol=1e-5, atol=1e-7)
        assert (out["episode"] == i).sum() == n  # only valid steps become transitions
    ev.close()


# ---------------------------------------------------------------------- the loop
def test_equal_evaluations_per_iteration(tiny):
    sizes = {k.algorithm: sum(k("gradkit/PointOmni-v0", seed=0, **tiny).batch_sizes().values())
             for k in (DCGME, PGAME, MAPElites)}
    assert len(set(sizes.values())) == 1


def test_checkpoint_resumes_to_the_same_result(tmp_path, tiny):
    for klass in (DCGME, PGAME):
        a = klass("gradkit/PointOmni-v0", seed=3, **tiny)
        a.learn(2)
        path = a.save(tmp_path / f"{klass.algorithm}.pt")
        a.learn(2)
        b = QDAgent.load(path)
        assert type(b) is klass and b.iteration == 2
        b.learn(2)
        np.testing.assert_array_equal(a.archive.fitness, b.archive.fitness)
        np.testing.assert_array_equal(a.archive.genomes, b.archive.genomes)
        for pa, pb in zip(a.actor.parameters(), b.actor.parameters()):
            assert torch.equal(pa, pb)
        assert a.history == b.history


def test_checkpoint_is_loaded_with_weights_only(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "gradkit-dcgme/1", "x": Evil()}, path)
    with pytest.raises(ValueError, match="safe loader refuses") as info:
        QDAgent.load(path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError) and str(path) in str(info.value)
    assert "pwned" not in capsys.readouterr().out, "the object inside was never built"


def test_distilled_actor_and_agent_api(tiny):
    tiny.update(critic_steps=20)
    agent = gk.create("dcg-me", "gradkit/PointOmni-v0", seed=0, kind="agents", **tiny)
    assert isinstance(agent, DCGME)
    agent.learn(3)
    m = agent.evaluate_dc_actor()
    assert 0 <= m["dc_coverage"] <= 1 and m["dc_desc_error"] >= 0
    obs = np.zeros(5)
    act, _ = agent.predict(obs, descriptor=[0.5, -0.5])
    assert act.shape == (2,) and np.all(np.abs(act) <= 1)
    # conditioning matters: different targets give different actions
    assert not np.allclose(act, agent.predict(obs, descriptor=[-0.5, 0.5])[0])
    mean, std = agent.evaluate(3)
    assert 0 <= mean <= 50 and std >= 0


def test_bad_input_errors(tiny):
    with pytest.raises(ValueError, match="unknown env id 'gradkit/Nope-v0'.*gradkit/PointOmni-v0"):
        DCGME("gradkit/Nope-v0", **tiny)
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        DCGME("gradkit/PointOmni-v0", critic_stepz=3)
    agent = MAPElites("gradkit/PointOmni-v0", seed=0, **tiny)
    agent.learn(1)
    with pytest.raises(ValueError, match="outside the descriptor bounds"):
        agent.predict(np.zeros(5), descriptor=[2.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        agent.predict(np.full(5, np.nan))
    with pytest.raises(ValueError, match="no descriptor-conditioned actor"):
        agent.evaluate_dc_actor()
    with pytest.raises(ValueError, match="lengthscale"):
        DCGME("gradkit/PointOmni-v0", **{**tiny, "lengthscale": 0.0})


def test_distilled_actor_descriptor_error_falls_on_a_short_run():
    from gradkit_dcgme.reproduce import POINT

    targets = np.random.default_rng(0).uniform(-0.6, 0.6, (16, 2))  # fixed targets inside the box
    agent = DCGME("gradkit/PointOmni-v0", seed=0, **dict(POINT, n_cells=32, critic_steps=100))
    agent._initialise()
    before = agent.evaluate_dc_actor(targets)["dc_desc_error"]
    agent.learn(8)
    after = agent.evaluate_dc_actor(targets)["dc_desc_error"]
    assert after < 0.3 * before, (before, after)


@pytest.mark.slow
def test_reproduction_quick_claims_hold():
    from gradkit_dcgme.reproduce import run

    res = run(quick=True, progress=False)
    failed = [c.text for c in res.claims if not c.passed]
    assert not failed, failed


def test_reproduction_runs_are_stored_and_resumed(tmp_path):
    """Each (algorithm, seed) run is written under out/runs; resume reads them back instead of rerunning."""
    from gradkit_dcgme.reproduce import run

    first = run(quick=True, iterations=1, seeds=[0], out=tmp_path, progress=False)
    stored = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert len(stored) == 3 and [n.split("-0-")[0] for n in stored] == ["dcg-me", "map-elites", "pga-me"]
    again = run(quick=True, iterations=1, seeds=[0], out=tmp_path, progress=False, resume=True)
    assert again.rows == first.rows  # time_s included: nothing was rerun
    other = run(quick=True, iterations=2, seeds=[0], out=tmp_path, progress=False, resume=True)  # another preset: runs
    assert [r["evaluations"] for r in other.rows] == [r["evaluations"] + 32 for r in first.rows]


# ----------------------------------------------------------------------------- claims: paired, beyond 2 SE, strict
def test_paired_claims_need_a_margin_over_seeds():
    from gradkit_dcgme.reproduce import K_SE, paired_beyond

    assert K_SE == 2.0
    assert paired_beyond([10.0, 11.0, 12.0], [1.0, 2.0, 2.0])[0]  # ahead on every seed, far beyond 2 SE
    assert paired_beyond([5.0, 5.0], [4.0, 4.0])[0]  # the same gap on every seed: SE 0, mean > 0
    assert not paired_beyond([3.0, 3.0, 3.0], [3.0, 3.0, 3.0])[0]  # an exact tie never holds
    # ahead on the mean (4.0 vs 2.67) but the paired differences (+4, -4, +4) are within noise
    ok, detail = paired_beyond([5.0, 1.0, 6.0], [1.0, 5.0, 2.0])
    assert not ok and "SE over 3 seeds" in detail
    # one seed has no standard error: undecided (the old rule passed a 2 % lead on one seed)
    ok, detail = paired_beyond([10.0], [1.0])
    assert not ok and "undecided" in detail
    with pytest.raises(ValueError, match="finite"):
        paired_beyond([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="equal-length"):
        paired_beyond([1.0, 2.0], [0.0, 0.0, 0.0])


def _fake_runs(qd, cov, errs):
    runs = {}
    for algo in qd:
        runs[algo] = []
        for i, (q, c) in enumerate(zip(qd[algo], cov[algo])):
            r = dict(row=dict(qd_score=q, coverage=c), dc_it=[0, 10], dc_err=list(errs[i]) if algo == "dcg-me" else [])
            runs[algo].append(r)
    mean = {a: dict(qd_score=float(np.mean(qd[a]))) for a in qd}
    return runs, mean


def test_every_reproduction_claim_is_a_paired_difference_beyond_two_se():
    from gradkit_core.results import Result
    from gradkit_dcgme.reproduce import add_claims

    qd = {"dcg-me": [100.0, 110.0, 120.0], "pga-me": [90.0, 100.0, 111.0], "map-elites": [60.0, 150.0, 70.0]}
    cov = {"dcg-me": [0.5, 0.5, 0.5], "pga-me": [0.5, 0.5, 0.5], "map-elites": [0.1, 0.1, 0.1]}
    # the error falls on the mean (0.50 -> 0.48) but rises on one seed: within noise
    noisy = [(0.5, 0.3), (0.5, 0.75), (0.5, 0.4)]
    res = Result("x", title="x")
    add_claims(res, *_fake_runs(qd, cov, noisy))
    passed = {c.text.split(" (")[0]: c.passed for c in res.claims}
    assert passed == {
        "QD score: DCG-ME > PGA-ME": True,  # +10, +10, +9: consistent
        "QD score: DCG-ME > MAP-Elites": False,  # ahead on the mean (110 vs 93) but not beyond 2 SE
        "coverage: DCG-ME > PGA-ME": False,  # an exact tie
        "the distilled actor's descriptor error falls over training": False,
    }, passed
    res = Result("x", title="x")
    add_claims(res, *_fake_runs(qd, cov, [(0.5, 0.1), (0.6, 0.12), (0.55, 0.1)]))
    assert [c.passed for c in res.claims][-1]  # a fall on every seed holds
