"""Tests of the Quark plugin: RFN, Tri-Factor, the baselines, bad input, and the reproduction's claims in small."""

import math
import statistics

import numpy as np
import pytest
import torch

import gradkit_core as gk
from gradkit_quark import rewards as R
from gradkit_quark.rewards import MultiObjectiveReward

OBJ3 = ("a", "b", "c")


def rfn_agg(**kw):
    return MultiObjectiveReward(OBJ3, normalizer="rfn", weighting="equal", **kw)


# ------------------------------------------------------------------------------------------------ RFN
def test_rfn_statistics_are_the_reference_mean_and_population_std_hand_computed():
    agg = MultiObjectiveReward(("x", "y"), normalizer="rfn", eps=1e-12)
    agg.fit_reference([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0]])
    assert torch.allclose(agg.mu, torch.tensor([3.0, 20.0], dtype=torch.float64))
    assert torch.allclose(agg.sigma, torch.tensor([math.sqrt(8 / 3), math.sqrt(200.0)], dtype=torch.float64))
    agg([[4.0, 30.0], [3.0, 20.0]])
    want = torch.tensor([[1 / math.sqrt(8 / 3), 10 / math.sqrt(200.0)], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(agg.last_normalized, want)
    # equal weights 1/K: the returned reward is the mean of the normalized objectives
    assert torch.allclose(agg.last_contributions.sum(1), want.mean(1))


def test_rfn_statistics_stay_frozen_after_the_reference_phase():
    agg = rfn_agg()
    gen = torch.Generator().manual_seed(0)
    agg.fit_reference(torch.randn(64, 3, generator=gen, dtype=torch.float64))
    mu, sigma = agg.mu.clone(), agg.sigma.clone()
    probe = torch.tensor([[0.3, -0.2, 1.0]])
    first = agg(probe).clone()
    for shift in (10.0, -50.0, 1e3):          # the current policy's rewards drift far away
        agg(torch.randn(32, 3, generator=gen, dtype=torch.float64) * 7 + shift)
    assert torch.equal(agg.mu, mu) and torch.equal(agg.sigma, sigma)
    assert torch.equal(agg(probe), first)
    with pytest.raises(ValueError, match="frozen"):
        agg.fit_reference(torch.randn(8, 3, generator=gen))
    assert torch.equal(agg.mu, mu)
    agg.fit_reference(torch.ones(4, 3) * torch.tensor([1.0, 2.0, 3.0]) + torch.arange(4.0)[:, None], refit=True)
    assert torch.allclose(agg.mu, torch.tensor([2.5, 3.5, 4.5], dtype=torch.float64))


def test_rfn_clips_and_handles_zero_variance_objectives():
    agg = MultiObjectiveReward(("x", "y"), normalizer="rfn", clip=3.0)
    agg.fit_reference([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])   # y has zero variance
    agg([[100.0, 5.0], [-100.0, 6.0], [1.5, 4.0]])
    r = agg.last_normalized
    assert torch.isfinite(r).all()
    assert r[0, 0] == 3.0 and r[1, 0] == -3.0 and r[2, 0] == 0.0
    assert r[0, 1] == 0.0 and r[1, 1] == 3.0 and r[2, 1] == -3.0


@pytest.mark.parametrize("scale,shift", [(1000.0, 0.0), (0.001, 7.0), (37.0, -500.0)])
def test_rfn_output_does_not_change_with_the_scale_of_one_reward(scale, shift):
    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(200, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 50.0, 0.1])
    batch = torch.randn(16, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 50.0, 0.1])
    aff = torch.tensor([1.0, scale, 1.0], dtype=torch.float64), torch.tensor([0.0, shift, 0.0], dtype=torch.float64)
    for weighting in ("equal", "tri-factor"):
        a = MultiObjectiveReward(OBJ3, normalizer="rfn", weighting=weighting, eps=1e-12)
        b = MultiObjectiveReward(OBJ3, normalizer="rfn", weighting=weighting, eps=1e-12)
        a.fit_reference(ref)
        b.fit_reference(ref * aff[0] + aff[1])
        for _ in range(3):
            assert torch.allclose(a(batch), b(batch * aff[0] + aff[1]), atol=1e-9)
        assert torch.allclose(a.weights(), b.weights(), atol=1e-9)
    # the raw sum does change: the invariance above is RFN's doing
    raw = gk.create("raw-sum", objectives=OBJ3)
    assert not torch.allclose(raw(batch), raw(batch * aff[0] + aff[1]))


# ------------------------------------------------------------------------------------------------ baselines
def test_batch_zscore_popart_group_norm_and_fixed_weights_hand_computed():
    r = torch.tensor([[1.0, 0.0], [3.0, 10.0], [5.0, 20.0], [7.0, 30.0]], dtype=torch.float64)
    z = MultiObjectiveReward(("x", "y"), normalizer="batch-zscore", eps=1e-12)
    z(r)
    want = (r - r.mean(0)) / r.std(0, unbiased=False)
    assert torch.allclose(z.last_normalized, want)

    p = MultiObjectiveReward(("x", "y"), normalizer="popart", popart_beta=0.5, eps=1e-12)
    p(r)                                            # first batch: running stats = batch stats
    assert torch.allclose(p.last_normalized, want)
    r2 = r + 4.0
    p(r2)
    m = 0.5 * r.mean(0) + 0.5 * r2.mean(0)
    v = 0.5 * (r * r).mean(0) + 0.5 * (r2 * r2).mean(0)
    assert torch.allclose(p.last_normalized, (r2 - m) / (v - m * m).sqrt())

    g = gk.create("group-norm", objectives=("x", "y"), group_size=2, eps=1e-12)
    out = g(r)
    s = r.sum(1).view(2, 2)                         # sums 1, 13 | 25, 37: each group -> (-1, +1)
    assert torch.allclose(out, ((s - s.mean(1, keepdim=True)) / s.std(1, unbiased=False, keepdim=True)).flatten())
    assert torch.allclose(out, torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(g.last_contributions.sum(1), out)

    f = gk.create("fixed-weights", objectives=("x", "y"), weights={"x": 2.0, "y": 0.5})
    assert torch.allclose(f(r), 2.0 * r[:, 0] + 0.5 * r[:, 1])
    assert torch.allclose(gk.create("raw-sum", objectives=("x", "y"))(r), r.sum(1))


# ------------------------------------------------------------------------------------------------ Tri-Factor
def _tri(factors, **kw):
    return R.TriFactorWeighting(3, factors=factors, **kw)


def test_tri_factor_weakness_is_exp_of_minus_kappa_running_mean():
    r_hat = torch.tensor([[1.0, -1.0, 0.0], [3.0, 1.0, 0.0]], dtype=torch.float64)   # means 2, 0, 0
    t = _tri(("weakness",), kappa=0.5)
    t.update(r_hat)
    w = np.exp(-0.5 * np.array([2.0, 0.0, 0.0]))
    assert torch.allclose(t.weakness(), torch.tensor(w, dtype=torch.float64))
    assert torch.allclose(t.weights(), torch.tensor(w / w.sum(), dtype=torch.float64))


def test_tri_factor_risk_upweights_safety_objectives():
    t = _tri(("risk",), rho=2.0, safety_mask=[False, True, False])
    t.update(torch.randn(8, 3, dtype=torch.float64))
    assert torch.allclose(t.risk(), torch.tensor([1.0, 3.0, 1.0], dtype=torch.float64))
    assert torch.allclose(t.weights(), torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64))


def test_tri_factor_redundancy_matches_numpy_correlations():
    x = np.array([1.0, -1.0, 1.0, -1.0])
    y = np.array([1.0, 1.0, -1.0, -1.0])               # uncorrelated with x
    r_hat = torch.tensor(np.stack([x, 2 * x + 1, y], 1))  # objective b duplicates a
    t = _tri(("redundancy",))
    t.update(r_hat)
    assert torch.allclose(t.redundancy(), torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(t.weights(), torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    gen = np.random.default_rng(0)
    z = gen.normal(size=(50, 3))
    z[:, 1] = 0.7 * z[:, 0] + 0.3 * z[:, 1]
    t = _tri(("redundancy",))
    t.update(torch.tensor(z))
    c = np.clip(np.corrcoef(z.T), 0, None)
    d = 1 / (1 + c.sum(1) - 1)
    assert torch.allclose(t.redundancy(), torch.tensor(d), atol=1e-10)


def test_tri_factor_product_normalization_and_ema_hand_computed():
    t = _tri(("weakness", "risk", "redundancy"), kappa=1.0, rho=1.0, ema=0.75, stat_beta=0.5,
             safety_mask=[False, False, True])
    assert torch.allclose(t.weights(), torch.full((3,), 1 / 3, dtype=torch.float64))   # before any update
    b1 = np.array([[1.0, 1.0, 0.0], [-1.0, -1.0, 2.0]])
    t.update(torch.tensor(b1))
    mean, second = b1.mean(0), b1.T @ b1 / 2

    def expected(mean, second):
        cov = second - np.outer(mean, mean)
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        corr = np.where(np.outer(sd, sd) > 1e-8, cov / np.where(np.outer(sd, sd) > 0, np.outer(sd, sd), 1), 0)
        np.fill_diagonal(corr, 1.0)
        d = 1 / (1 + np.clip(corr, 0, None).sum(1) - 1)
        p = np.exp(-mean) * np.array([1.0, 1.0, 2.0]) * d
        return p / p.sum()

    w1 = expected(mean, second)
    assert torch.allclose(t.weights(), torch.tensor(w1), atol=1e-12)
    b2 = np.array([[0.0, 2.0, -1.0], [2.0, 0.0, -1.0]])
    t.update(torch.tensor(b2))
    mean2, second2 = 0.5 * mean + 0.5 * b2.mean(0), 0.5 * second + 0.5 * b2.T @ b2 / 2
    w2 = 0.75 * w1 + 0.25 * expected(mean2, second2)
    assert torch.allclose(t.weights(), torch.tensor(w2 / w2.sum()), atol=1e-12)
    assert math.isclose(float(t.weights().sum()), 1.0)


def test_tri_factor_aggregator_combines_with_its_weights_and_contributions_sum_to_the_reward():
    agg = gk.create("tri-factor", objectives=OBJ3, safety=["c"])
    agg.fit_reference(torch.randn(100, 3, dtype=torch.float64))
    out = agg(torch.randn(16, 3, dtype=torch.float64))
    assert torch.allclose(agg.last_contributions.sum(1), out)
    assert torch.allclose(out, agg.last_normalized @ agg.last_weights)
    assert agg.last_weights[2] > agg.last_weights[:2].max() * 1.2   # risk factor on the safety objective


# ------------------------------------------------------------------------------------------------ interface
def test_registered_rewards_and_reward_fns():
    names = {s.name for s in gk.list("rewards", plugin="quark")}
    assert names == {"rfn", "tri-factor", "raw-sum", "group-norm", "batch-zscore", "popart", "fixed-weights"}
    fns = {"len": lambda b: [float(len(s)) for s in b], "vowels": lambda b: [float(sum(c in "aeiou" for c in s))
                                                                               for s in b]}
    agg = gk.create("rfn", objectives=["len", "vowels"], reward_fns=fns)
    agg.fit_reference(["ab", "abcd", "e", "oooo"])
    out = agg(["abc", "eee"])
    lens, vows = torch.tensor([2.0, 4, 1, 4]), torch.tensor([1.0, 1, 1, 4])
    want = ((torch.tensor([3.0, 3.0]) - lens.mean()) / lens.std(unbiased=False)
            + (torch.tensor([1.0, 3.0]) - vows.mean()) / vows.std(unbiased=False)) / 2
    assert torch.allclose(out.float(), want, atol=1e-6)


def test_state_dict_round_trip_gives_an_identical_continuation():
    gen = torch.Generator().manual_seed(3)
    a = gk.create("tri-factor", objectives=OBJ3, safety=["a"])
    a.fit_reference(torch.randn(50, 3, generator=gen))
    for _ in range(3):
        a(torch.randn(8, 3, generator=gen))
    b = gk.create("tri-factor", objectives=OBJ3, safety=["a"])
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 3, generator=gen)
    assert torch.equal(a(x), b(x)) and torch.equal(a.weights(), b.weights())


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", ["tri-factor", "popart", "batch-zscore", "rfn"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rewards_raise_and_leave_the_state_unchanged(name, bad):
    agg = gk.create(name, objectives=OBJ3, **({"safety": ["a"]} if name == "tri-factor" else {}))
    if agg.needs_reference:
        agg.fit_reference(torch.randn(20, 3))
    agg(torch.randn(4, 3))
    before = agg.state_dict()
    x = torch.randn(4, 3)
    x[2, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        agg(x)
    after = agg.state_dict()
    for part in ("normalizer", "weighting"):
        for k, v in before[part].items():
            assert (torch.equal(v, after[part][k]) if isinstance(v, torch.Tensor) else v == after[part][k]), k
    with pytest.raises(ValueError, match="non-finite"):
        gk.create("rfn", objectives=OBJ3).fit_reference(torch.tensor([[0.0, 1, 2], [1, bad, 2]]))


def test_empty_batches_wrong_shapes_and_unknown_names_raise():
    agg = rfn_agg()
    agg.fit_reference(torch.randn(10, 3))
    with pytest.raises(ValueError, match="empty batch"):
        agg(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="2-D"):
        agg(torch.zeros(3))
    with pytest.raises(ValueError, match="expected 3"):
        agg(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="real numbers"):
        agg(torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty batch"):
        gk.create("rfn", objectives=["x"], reward_fns={"x": lambda b: []})([])
    with pytest.raises(ValueError, match="at least 2 reference"):
        rfn_agg().fit_reference(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="no reference statistics yet"):
        rfn_agg()(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="takes no reference"):
        gk.create("raw-sum", objectives=OBJ3).fit_reference(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="batch of at least 2"):
        gk.create("batch-zscore", objectives=OBJ3)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="groups of 4"):
        gk.create("group-norm", objectives=OBJ3, group_size=4)(torch.zeros(6, 3))
    with pytest.raises(ValueError, match="unknown normalizer"):
        MultiObjectiveReward(OBJ3, normalizer="zscore")
    with pytest.raises(ValueError, match="unknown weighting"):
        MultiObjectiveReward(OBJ3, weighting="pcgrad")
    with pytest.raises(ValueError, match="empty"):
        MultiObjectiveReward(())
    with pytest.raises(ValueError, match="safety"):
        MultiObjectiveReward(OBJ3, safety=["z"])
    with pytest.raises(ValueError, match="non-finite reward"):
        gk.create("rfn", objectives=["x"], reward_fns={"x": lambda b: [float("nan")] * len(b)}).fit_reference([1, 2])


@pytest.mark.parametrize("kw", [dict(clip=float("nan")), dict(clip=0.0), dict(eps=-1.0), dict(kappa=float("inf")),
                                dict(rho=-1.0), dict(ema=1.0), dict(stat_beta=float("nan")),
                                dict(factors=("weakness", "novelty"))])
def test_bad_hyperparameters_raise_at_construction(kw):
    with pytest.raises(ValueError):
        gk.create("tri-factor", objectives=OBJ3, **kw)


@pytest.mark.parametrize("weights", [[1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 1.0], [1.0, 1.0]])
def test_bad_fixed_weights_raise(weights):
    with pytest.raises(ValueError):
        gk.create("fixed-weights", objectives=OBJ3, weights=weights)


# ------------------------------------------------------------------------------------------------ claims in small
def test_reduced_claims_rfn_balances_gradient_and_tri_factor_beats_raw_sum():
    """CI form of the reproduction's claims: 3 seeds, 100 iterations, lr 0.1, paired margins of 2 SE."""
    from gradkit_quark.task import reference_stats, train
    rs = reference_stats(n=50_000)
    runs = {m: [train(m, 0.1, s, iters=100, n_eval=1024, ref_stats=rs) for s in range(3)]
            for m in ("raw-sum", "rfn", "tri-factor")}

    def beyond(d):
        m, se = statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d))
        return m - 2 * se > 0 and m > 0

    raw_big = [o["shares_ref"][1] + o["shares_ref"][3] for o in runs["raw-sum"]]
    assert min(raw_big) > 0.8, raw_big                                   # verbosity + safety dominate
    assert beyond([max(a["shares_ref"]) - max(b["shares_ref"]) for a, b in zip(runs["raw-sum"], runs["rfn"])])
    assert beyond([a["worst"] - b["worst"] for a, b in zip(runs["tri-factor"], runs["raw-sum"])])
    assert all(o["worst"] < 0 for o in runs["raw-sum"])                   # raw sum loses correctness and format


@pytest.mark.slow
def test_quick_reproduction_runs_and_decides_its_claims():
    from gradkit_quark.reproduce import run
    res = run(quick=True, progress=False)
    assert len(res.rows) == 10 and len(res.claims) == 14
    claims = {c.text.split(":")[0]: c.passed for c in res.claims}
    assert claims["protocol"]
    assert res.claims[1].passed and res.claims[2].passed   # raw-sum domination, RFN balances the gradient


def test_a_call_that_fails_after_updating_statistics_rolls_them_back():
    agg = MultiObjectiveReward(OBJ3, normalizer="raw", weighting="tri-factor")
    agg(torch.randn(4, 3, dtype=torch.float64))
    before = agg.state_dict()
    with pytest.raises(ValueError, match="non-finite"):
        agg(torch.full((4, 3), 1e200, dtype=torch.float64))     # second moments overflow -> NaN weights
    after = agg.state_dict()["weighting"]
    assert all(torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k]
               for k, v in before["weighting"].items())


# ------------------------------------------------------------------------------------------------ safety options
def test_violation_rate_risk_is_proportional_to_the_running_violation_rate_hand_computed():
    agg = MultiObjectiveReward(("a", "s"), normalizer="raw", weighting="tri-factor", factors=("risk",),
                               risk="violation-rate", rho=2.0, stat_beta=0.5, ema=0.0, safety=["s"])
    with pytest.raises(ValueError, match="no reference violation rate"):
        agg([[1.0, 0.0], [0.0, -1.0]])
    agg.fit_reference([[0.0, 0.0], [0.0, -1.0], [0.0, 0.0], [0.0, 0.0]])       # v_ref = 1/4
    assert torch.allclose(agg.weighting.reference_rate[1], torch.tensor(0.25, dtype=torch.float64))
    agg([[0.0, -1.0], [0.0, -5.0], [0.0, 0.0], [0.0, 0.0]])                   # v = 1/2 -> R_s = 1 + 2 * 2 = 5
    assert torch.allclose(agg.weights(), torch.tensor([1 / 6, 5 / 6], dtype=torch.float64))
    agg([[0.0, 0.0]] * 4)                                                      # v = 0.5 * 0.5 + 0.5 * 0 -> R_s = 3
    assert torch.allclose(agg.weights(), torch.tensor([1 / 4, 3 / 4], dtype=torch.float64))
    for _ in range(40):                                                        # no more violations: R_s -> 1
        agg([[0.0, 0.0]] * 4)
    assert torch.allclose(agg.weights(), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-9)
    # the indicator risk does not react to violations at all
    ind = MultiObjectiveReward(("a", "s"), normalizer="raw", weighting="tri-factor", factors=("risk",), rho=2.0,
                               safety=["s"])
    ind([[0.0, -1.0], [0.0, -5.0], [0.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(ind.weights(), torch.tensor([1 / 4, 3 / 4], dtype=torch.float64))
    # a reference without violations counts as one in N_ref; the threshold is violation_below
    z = MultiObjectiveReward(("a", "s"), normalizer="rfn", weighting="tri-factor", risk="violation-rate",
                             safety=["s"], violation_below=-2.0)
    z.fit_reference([[0.0, -1.0], [1.0, 0.0], [2.0, -1.5], [3.0, 0.0], [4.0, -1.0]])
    assert torch.allclose(z.weighting.reference_rate[1], torch.tensor(0.2, dtype=torch.float64))
    assert z.violations(torch.tensor([[0.0, -1.9], [0.0, -2.1]], dtype=torch.float64))[:, 1].tolist() == [False, True]
    with pytest.raises(ValueError, match="frozen"):
        z.fit_reference([[0.0, -3.0], [1.0, 0.0]])


def test_hard_safety_gate_ranks_every_violating_sample_below_every_safe_one_hand_computed():
    kw = dict(normalizer="raw", weighting="fixed", weights=[1.0, 1.0], safety=["s"])
    r = torch.tensor([[3.0, 0.0], [5.0, -1.0], [1.0, 0.0], [2.0, -2.0]], dtype=torch.float64)
    assert torch.equal(MultiObjectiveReward(("a", "s"), **kw)(r), torch.tensor([3.0, 4.0, 1.0, 0.0],
                                                                               dtype=torch.float64))
    gate = MultiObjectiveReward(("a", "s"), safety_gate=True, gate_margin=0.5, **kw)
    out = gate(r)             # safe minimum 1 -> cap 0.5: 4 -> 0.5, 0 stays 0
    assert torch.equal(out, torch.tensor([3.0, 0.5, 1.0, 0.0], dtype=torch.float64))
    assert gate.last_gated.tolist() == [False, True, False, True]
    assert torch.allclose(gate.last_contributions.sum(1), out)
    assert gate.last_contributions[1].tolist() == [5.0, -4.5]        # the shift is booked on the safety column
    # all samples violate: nothing to rank against, rewards unchanged
    allv = torch.tensor([[3.0, -1.0], [5.0, -1.0]], dtype=torch.float64)
    assert torch.equal(gate(allv), allv.sum(1)) and not gate.last_gated.any()
    # with group normalization the gate acts first, per batch
    g = MultiObjectiveReward(("a", "s"), safety_gate=True, gate_margin=0.5, group_size=2, eps=1e-12, **kw)
    out = g(r).view(2, 2)
    assert torch.allclose(out, torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="safety objective"):
        MultiObjectiveReward(("a", "s"), safety_gate=True)
    with pytest.raises(ValueError, match="safety objective"):
        MultiObjectiveReward(("a", "s"), weighting="tri-factor", risk="violation-rate")
    with pytest.raises(ValueError, match="unknown risk"):
        MultiObjectiveReward(("a", "s"), weighting="tri-factor", risk="rate", safety=["s"])
    with pytest.raises(ValueError, match="tri-factor"):
        MultiObjectiveReward(("a", "s"), risk="violation-rate", safety=["s"])
    for bad in (dict(gate_margin=0.0), dict(gate_margin=float("nan")), dict(violation_below=float("inf"))):
        with pytest.raises(ValueError):
            MultiObjectiveReward(("a", "s"), safety_gate=True, safety=["s"], **bad)
    with pytest.raises(TypeError):
        MultiObjectiveReward(("a", "s"), safety_gate=1, safety=["s"])


def test_failed_call_rolls_back_the_violation_rate():
    agg = gk.create("tri-factor", objectives=OBJ3, safety=["c"], risk="violation-rate")
    agg.fit_reference(torch.tensor([[0.0, 1.0, -1.0], [1.0, 0.0, 0.0], [2.0, 1.0, 0.0]]))
    agg(torch.tensor([[0.0, 1.0, -1.0], [1.0, 0.0, 0.0]]))
    before = agg.weighting.violation_rate.clone()
    with pytest.raises(ValueError, match="non-finite"):
        agg(torch.tensor([[0.0, 1.0, -1.0], [1.0, float("nan"), -1.0]]))
    assert torch.equal(agg.weighting.violation_rate, before)


# ------------------------------------------------------------------------------------------------ trl parity
def test_group_norm_with_fixed_weights_equals_trl_grpo_trainer_advantages():
    """trl's GRPOTrainer itself (a tiny Llama from a config): five reward functions with reward_weights give the same
    advantages as gradkit's group-norm + fixed weights with trl's conventions (unbiased group std, eps 1e-4)."""
    pytest.importorskip("trl")
    from gradkit_quark.bench import parity
    assert parity(0) < 1e-5          # includes a group with zero spread


def test_pcgrad_arm_combines_the_objectives_policy_gradients_through_the_registered_transform():
    from gradkit_quark import task
    gen = torch.Generator().manual_seed(0)
    pol = task.LogitPolicy()
    with torch.no_grad():
        pol.logits.normal_(generator=gen)
    agg = task.make_aggregator("pcgrad", 8)
    agg.fit_reference(task.rewards(task.sample(pol.logits.detach(), 256, gen), gen))
    x = task.sample(pol.logits.detach(), 64, gen)
    g = task.objective_gradients(agg, pol.logits.detach(), x, task.rewards(x, gen), 8, 8)     # (K, L, V) ascent
    adv = task.last_advantages(agg, 8, 8)
    tr = task.transform_for("pcgrad", pol, seed=0)
    assert type(tr).__name__ == "PCGrad"
    # the transform's task gradients are the reproduction's per-objective policy gradients (descent sign)
    tr.accumulate(lambda: (x, adv))
    for k, o in enumerate(task.OBJECTIVES):
        assert torch.allclose(tr.accumulators[o][0], -g[k].float(), atol=1e-6)
    # one objective alone: nothing to project, the written gradient is its own
    one = torch.zeros_like(adv)
    one[:, 0] = adv[:, 0]
    tr.step(lambda: (x, one))
    assert torch.allclose(pol.logits.grad, -g[0].float(), atol=1e-6)
    # two conflicting objectives: PCGrad's projections, not the plain sum
    two = torch.zeros_like(adv)
    two[:, 0], two[:, 1] = adv[:, 0], -0.5 * adv[:, 0] + 0.1 * adv[:, 2]
    tr.step(lambda: (x, two))
    ga, gb = tr.accumulators["correct"][0].double(), tr.accumulators["safety"][0].double()
    assert float((ga * gb).sum()) < 0
    pa = ga - (ga * gb).sum() / (gb * gb).sum() * gb
    pb = gb - (ga * gb).sum() / (ga * ga).sum() * ga
    assert torch.allclose(pol.logits.grad.double(), pa + pb, atol=1e-6)
    assert not torch.allclose(pol.logits.grad.double(), ga + gb, atol=1e-3)


def test_trl_parity_needs_trl_conventions():
    """Guard that the parity above is not vacuous: gradkit's default group std (population, eps 1e-8) differs."""
    r = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = MultiObjectiveReward(("x", "y"), normalizer="raw", weighting="fixed", weights=[1.0, 2.0], group_size=8)(r)
    b = MultiObjectiveReward(("x", "y"), normalizer="raw", weighting="fixed", weights=[1.0, 2.0], group_size=8,
                             group_std="unbiased", eps=1e-4)(r)
    s = (r[:, 0] + 2 * r[:, 1]).view(2, 8)
    want = ((s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + 1e-4)).flatten()   # torch std: Bessel
    assert torch.allclose(b, want) and not torch.allclose(a, b, atol=1e-3)
    with pytest.raises(ValueError, match="group_std"):
        MultiObjectiveReward(("x", "y"), group_std="sample", group_size=8)
