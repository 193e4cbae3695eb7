"""Algorithm 1: acceptance test by hand, forced steps, linear rate, Hessian formulas, optimizer contract."""

import math

import pytest
import torch
import torch.nn as nn

from gradkit_core.testing.optimizers import OptimizerConformance
from gradkit_gnsmooth import hessians as Hs
from gradkit_gnsmooth.baselines import AdaptiveFastGradient, AdaptiveGradient, SuperUniversalNewton
from gradkit_gnsmooth.gns import (GradNormSmooth, GradNormSmoothSolver, NotPositiveDefinite, Problem, adaptive_search,
                                  newton_step)
from gradkit_gnsmooth.problems import LogisticRegression, LogSumExp, PowerResidual, SoftmaxRegression

D = torch.float64
EPS = 1e-8


def quartic():
    return Problem(func=lambda x: (x**4).sum() / 4, grad=lambda x: x**3)


# ---------------------------------------------------------------------- the acceptance test
def test_search_accepts_and_rejects_exactly_by_the_test_hand_computed():
    """f = x⁴/4, H = 0, x = 1, g = 1, γ₀ = 8.

    γ=8: λ=1/8, Δ=-8, f(-7)=600.25 > f(1)           -> reject
    γ=4: λ=1/4, Δ=-4, f(-3)=20.25                     -> reject
    γ=2: λ=1/2, Δ=-2, f(-1)=0.25: 0 ≥ 1/(8·½)=0.25?  -> reject (decrease 0)
    γ=1: λ=1,   Δ=-1, f(0)=0:  0.25 ≥ 0              -> accept, γ ← 2
    """
    x = torch.tensor([1.0], dtype=D)
    seen = []

    def evaluate(d):
        xt = x + d
        seen.append(float(d))
        return float(xt[0] ** 4 / 4), xt**3

    out = adaptive_search(0.25, x**3, torch.zeros(1, 1, dtype=D), 8.0, evaluate)
    assert out.trials == 4 and out.accepted
    expected = [-1 / (1 / (g + EPS)) for g in (8.0, 4.0, 2.0, 1.0)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert out.gamma == 2.0
    assert out.lam == pytest.approx(1 / (1 + EPS), rel=1e-15)
    assert float(out.delta) == pytest.approx(-1.0, rel=1e-7)


def test_boundary_case_rejected_by_strict_test_margin():
    """At γ=2 the decrease is exactly 0 while ‖g_new‖²/(8λ) = 0.25: rejected; with the
    search off (adaptive=False) the same trial is taken without testing."""
    x = torch.tensor([1.0], dtype=D)
    evaluate = lambda d: (float((x + d)[0] ** 4 / 4), (x + d) ** 3)  # noqa: E731
    out = adaptive_search(0.25, x**3, torch.zeros(1, 1, dtype=D), 2.0, evaluate, max_search=1)
    assert not out.accepted and out.gamma == 1.0
    out = adaptive_search(0.25, x**3, torch.zeros(1, 1, dtype=D), 2.0, evaluate, adaptive=False)
    assert out.accepted and out.gamma == 2.0 and float(out.delta) == pytest.approx(-2.0, rel=1e-7)


@pytest.mark.parametrize("decrease, accepted", [(0.2, True), (0.1, False)])
def test_acceptance_constant_is_eight(decrease, accepted):
    """g = 1, H = 0, γ = 1: λ = 1/(1+ε) and ‖g_new‖² = 1, so the bar is 1/(8λ) ≈ 0.125.
    A decrease of 0.2 passes with 8 but not with 4 (bar 0.25); 0.1 fails with 8 but passes with 16."""
    g = torch.tensor([1.0], dtype=D)
    out = adaptive_search(1.0, g, torch.zeros(1, 1, dtype=D), 1.0, lambda d: (1.0 - decrease, g), max_search=1)
    assert out.accepted is accepted
    assert out.gamma == (2.0 if accepted else 0.5)


def test_indefinite_system_is_a_rejected_trial_not_an_error():
    """H = -3: H + λI is indefinite until λ > 3; the search halves γ (λ doubles) without evaluating."""
    g = torch.tensor([1.0], dtype=D)
    seen = []

    def evaluate(d):
        seen.append(float(d))
        return -10.0, torch.zeros(1, dtype=D)

    out = adaptive_search(0.0, g, torch.full((1, 1), -3.0, dtype=D), 1.0, evaluate)
    # γ = 1, 1/2, 1/4: λ ≈ 1, 2, 4 -> the first two are indefinite, the third gives Δ = -1/(4-3) = -1
    assert out.accepted and out.trials == 3 and out.evaluations == 1 and len(seen) == 1
    assert seen[0] == pytest.approx(-1.0, rel=1e-6)
    with pytest.raises(ValueError, match="any of the 2 trials"):
        adaptive_search(0.0, g, torch.full((1, 1), -1e6, dtype=D), 1.0, evaluate, max_search=2)


def test_exact_hessian_trains_a_nonconvex_tanh_mlp():
    """31 parameters, tanh: the exact Hessian is indefinite at the start (this raised 'not positive
    definite' at step 1); now the loss must fall by an order of magnitude in 20 steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    assert sum(p.numel() for p in model.parameters()) == 31
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 4, generator=g, dtype=D)
    y = torch.sin(X.sum(1, keepdim=True))
    opt = GradNormSmooth(model.parameters(), hessian="exact")
    losses = [float(opt.step(lambda: ((model(X) - y) ** 2).mean())) for _ in range(20)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.1 * losses[0], losses


def test_gamma_is_optimizer_state_and_survives_a_parameter_without_gradient():
    a, b = nn.Parameter(torch.ones(2, dtype=D)), nn.Parameter(torch.ones(2, dtype=D))
    opt = GradNormSmooth([a, b], hessian="zero")
    use_a = [True]

    def closure():
        opt.zero_grad()
        loss = ((b - 3) ** 2).sum() + (((a + 1) ** 2).sum() if use_a[0] else 0.0)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    gamma, steps = opt.state["gns"]["gamma"], opt.state["gns"]["step"]
    assert steps == 3 and a not in opt.state and b not in opt.state
    use_a[0] = False  # `a` (the first parameter) stops receiving gradients: γ must carry on, not restart
    opt.step(closure)
    assert opt.state["gns"]["step"] == 4
    st = opt.state["gns"]
    assert gamma != 1.0 and not st["last_forced"]
    # the search started from the carried γ: accepted after t trials means γ·2^-(t-1), doubled
    assert st["gamma"] == gamma * 2.0 ** (2 - st["last_trials"]), (gamma, st)
    fresh = GradNormSmooth([a, b], hessian="zero")
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state["gns"] == opt.state["gns"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_optimizer_and_solver_reject_bad_hyperparameters(bad):
    p = [nn.Parameter(torch.zeros(2))]
    for key in ("lr", "gamma_min", "eps", "gamma0"):
        with pytest.raises(ValueError, match=key):
            GradNormSmooth(p, **{key: bad})
        opt = GradNormSmooth(p)
        with pytest.raises(ValueError, match=key):
            opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], key: bad})
        if key != "lr":
            with pytest.raises(ValueError, match=key):
                GradNormSmoothSolver(**{key: bad})


def test_step_is_applied_even_after_all_searches_fail():
    """As in the official code: after max_search rejections the last trial step is applied (flagged)."""
    g = torch.tensor([1.0], dtype=D)
    calls = []

    def evaluate(d):  # the function value never decreases: always rejected
        calls.append(float(d))
        return 1.0, g

    out = adaptive_search(0.0, g, torch.eye(1, dtype=D), 1.0, evaluate, max_search=5)
    assert len(calls) == 5 and not out.accepted
    assert out.gamma == pytest.approx(1.0 / 2**5)
    lam5 = 1.0 / (1.0 / 2**4 + EPS)
    assert float(out.delta) == pytest.approx(-1.0 / (1.0 + lam5), rel=1e-12)

    prob = Problem(func=lambda x: torch.tensor(5.0, dtype=D) + 0 * x.sum(), grad=lambda x: torch.ones(1, dtype=D))
    res = GradNormSmoothSolver(hessian="zero", max_iters=2, max_search=3).solve(prob, torch.zeros(1))
    assert res.history["forced"] == [1.0, 1.0] and res.history["trials"] == [3, 3]
    assert not torch.equal(res.x, torch.zeros(1, dtype=D)), "forced steps are still applied"


def test_every_accepted_step_satisfies_the_inequality():
    prob = _small_logistic()
    res = GradNormSmoothSolver(hessian=prob.approx_hess, max_iters=15).solve(prob, torch.zeros(prob.n))
    F, G = res.history["func"], res.history["grad_norm"]
    gam = res.history["gamma"]
    for k in range(len(F) - 1):
        if res.history["forced"][k]:
            continue
        # γ doubled from the γ that was used, so λ = ‖g_k‖/(γ_{k+1}/2 + ε)
        lam = G[k] / (gam[k + 1] / 2 + EPS)
        assert F[k] - F[k + 1] >= G[k + 1] ** 2 / (8 * lam) - 1e-15


# ---------------------------------------------------------------------- convergence
def _small_logistic(seed=0, m=120, n=6, lam=1e-2, scales=None):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=D)
    if scales is not None:
        A = A * scales
    w = torch.randn(n, generator=g, dtype=D)
    b = torch.sign(A @ w + 0.5 * torch.randn(m, generator=g, dtype=D))
    return LogisticRegression(A, b, lam)


@pytest.mark.parametrize("hessian", ["approx", "exact"])
def test_linear_convergence_on_small_logistic_regression(hessian):
    prob = _small_logistic()
    ref = GradNormSmoothSolver(hessian="exact", grad_tol=1e-13, max_iters=100).solve(prob, torch.zeros(prob.n))
    f_star = ref.f
    h = prob.approx_hess if hessian == "approx" else "exact"
    res = GradNormSmoothSolver(hessian=h, max_iters=60, f_star=f_star, tol=1e-12).solve(prob, torch.zeros(prob.n))
    assert res.status.startswith("success"), res.status
    gaps = [f - f_star for f in res.history["func"]]
    ratios = [gaps[i + 1] / gaps[i] for i in range(len(gaps) - 1)]
    # global linear rate: every iteration contracts f - f* by at least a fixed factor
    assert max(ratios) < 0.7, ratios
    if hessian == "approx":
        # the approximation error limits it to a linear (not superlinear) rate: the tail ratio stays ~0.3
        tail = sorted(ratios[-6:])
        assert 0.1 < tail[3] < 0.5, ratios
        assert res.iterations <= 30
    else:
        assert ratios[-1] < 0.01 and res.iterations <= 10  # exact Newton: superlinear at the end


def test_gns_beats_gradient_methods_in_iterations_on_logistic():
    prob = _small_logistic(lam=1e-3, scales=torch.logspace(-1, 1, 6, dtype=D))  # badly conditioned features
    f_star = GradNormSmoothSolver(hessian="exact", grad_tol=1e-13).solve(prob, torch.zeros(prob.n)).f
    kw = dict(f_star=f_star, tol=1e-8)
    gns = GradNormSmoothSolver(hessian=prob.approx_hess, max_iters=200, **kw).solve(prob, torch.zeros(prob.n))
    gd = AdaptiveGradient(max_iters=200, **kw).solve(prob, torch.zeros(prob.n))
    fgm = AdaptiveFastGradient(max_iters=200, **kw).solve(prob, torch.zeros(prob.n))
    sun = SuperUniversalNewton(max_iters=200, **kw).solve(prob, torch.zeros(prob.n))
    assert gns.status.startswith("success") and sun.status.startswith("success")
    assert gns.iterations * 5 < min(gd.iterations, fgm.iterations), (gns.iterations, gd.iterations, fgm.iterations)


def test_rank_one_fisher_run_decreases_and_matches_dense_solve():
    prob = PowerResidual.random(m=40, n=20, p=4.0, seed=1)
    x0 = torch.zeros(prob.n, dtype=D)
    r1 = GradNormSmoothSolver(hessian=prob.approx_hess, max_iters=30).solve(prob, x0)
    r2 = GradNormSmoothSolver(hessian=lambda x: prob.approx_hess(x).dense(), max_iters=30).solve(prob, x0)
    torch.testing.assert_close(r1.x, r2.x, rtol=1e-8, atol=1e-10)
    x_ls = torch.linalg.lstsq(prob.A, prob.b[:, None]).solution.squeeze(1)
    f_star = float(prob.func(x_ls))
    F = r1.history["func"]
    assert all(b <= a + 1e-12 for a, b in zip(F, F[1:])), "accepted steps never increase f"
    assert F[-1] - f_star < 0.01 * (F[0] - f_star)


# ---------------------------------------------------------------------- Hessian formulas
def test_weighted_gauss_newton_lse_formula_and_rank_one_gap():
    g = torch.Generator().manual_seed(0)
    A = 2 * torch.rand(7, 4, generator=g, dtype=D) - 1
    b = torch.rand(7, generator=g, dtype=D)
    x = torch.randn(4, generator=g, dtype=D)
    mu = 0.7
    z = (A @ x - b) / mu
    pi = torch.exp(z) / torch.exp(z).sum()
    by_hand = sum(pi[i] * torch.outer(A[i], A[i]) for i in range(7)) / mu
    torch.testing.assert_close(Hs.weighted_gauss_newton_lse(A, x, mu, b), by_hand)
    exact = Hs.exact_hessian(lambda v: mu * torch.logsumexp((A @ v - b) / mu, 0), x)
    torch.testing.assert_close(Hs.exact_hessian_lse(A, x, mu, b), exact)
    gap = Hs.weighted_gauss_newton_lse(A, x, mu, b) - exact
    gvec = A.T @ pi
    torch.testing.assert_close(gap, torch.outer(gvec, gvec) / mu)  # dropped term = ggᵀ/μ ⪰ 0


def test_logistic_hessians():
    prob = _small_logistic(m=15, n=4, lam=0.1)
    x = torch.randn(4, generator=torch.Generator().manual_seed(3), dtype=D)
    torch.testing.assert_close(prob.hess(x), Hs.exact_hessian(prob.func, x))
    torch.testing.assert_close(prob.grad(x), torch.autograd.functional.jacobian(prob.func, x))
    s = torch.sigmoid(-prob.b * (prob.A @ x))
    by_hand = sum(s[i] * torch.outer(prob.A[i], prob.A[i]) for i in range(15)) / 15 + 0.1 * torch.eye(4, dtype=D)
    torch.testing.assert_close(prob.approx_hess(x), by_hand)
    assert torch.linalg.eigvalsh(prob.approx_hess(x) - prob.hess(x)).min() >= -1e-12


def test_softmax_hessians():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(9, 3, generator=g, dtype=D)
    y = torch.randint(0, 4, (9,), generator=g)
    prob = SoftmaxRegression(X, y, 4, lam=0.05)
    w = 0.3 * torch.randn(12, generator=g, dtype=D)
    torch.testing.assert_close(prob.hess(w), Hs.exact_hessian(prob.func, w))
    torch.testing.assert_close(prob.grad(w), torch.autograd.functional.jacobian(prob.func, w))
    P = torch.softmax(X @ w.view(3, 4), 1)
    approx = sum(torch.kron(torch.diag(P[i]), torch.outer(X[i], X[i])) for i in range(9)) / 9
    # our vec(W) is row-major over (feature, class): permute the Kronecker (class, feature) order
    perm = torch.arange(12).view(4, 3).T.reshape(-1)
    torch.testing.assert_close(prob.approx_hess(w), approx[perm][:, perm] + 0.05 * torch.eye(12, dtype=D))


def test_fisher_rank_one_and_gauss_newton_formulas():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 3, generator=g, dtype=D)
    b = torch.randn(6, generator=g, dtype=D)
    x = torch.randn(3, generator=g, dtype=D)
    p = 4.0
    u = A @ x - b
    nu = torch.linalg.norm(u)
    r1 = Hs.fisher_rank_one(A, u, p)
    torch.testing.assert_close(r1.dense(), (p - 2) * nu ** (p - 4) * torch.outer(A.T @ u, A.T @ u))
    torch.testing.assert_close(Hs.gauss_newton(A, u, p), nu ** (p - 2) * A.T @ A)
    exact = Hs.exact_hessian(lambda v: torch.linalg.norm(A @ v - b) ** p / p, x)
    torch.testing.assert_close(Hs.gauss_newton(A, u, p, fisher=True), exact)  # GN + Fisher is exact for linear u


def test_sherman_morrison_step_equals_dense_and_cholesky_failure_is_clear():
    g = torch.Generator().manual_seed(0)
    v, grad = torch.randn(5, generator=g, dtype=D), torch.randn(5, generator=g, dtype=D)
    r1 = Hs.RankOne(2.5, v)
    torch.testing.assert_close(newton_step(r1, grad, 0.3), -torch.linalg.solve(r1.dense() + 0.3 * torch.eye(5, dtype=D), grad))
    with pytest.raises(ValueError, match="positive definite"):
        newton_step(-10 * torch.eye(5, dtype=D), grad, 0.1)
    with pytest.raises(ValueError, match="shape"):
        newton_step(torch.eye(4, dtype=D), grad, 0.1)


def test_lse_zero_oracle_has_minimum_at_zero():
    prob = LogSumExp.random(m=20, n=10, seed=1)
    assert float(torch.linalg.norm(prob.grad(torch.zeros(10, dtype=D)))) < 1e-14
    assert prob.f_star == pytest.approx(float(prob.func(torch.zeros(10, dtype=D))))


def test_solver_bad_input_is_clear():
    with pytest.raises(ValueError, match="hessian"):
        GradNormSmoothSolver(hessian="bfgs")
    with pytest.raises(ValueError, match="gamma0"):
        GradNormSmoothSolver(gamma0=0)
    with pytest.raises(ValueError, match="vector"):
        GradNormSmoothSolver().solve(lambda x: (x**2).sum(), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="problem"):
        GradNormSmoothSolver().solve(42, torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        GradNormSmoothSolver().solve(lambda x: (x**2).sum(), torch.tensor([float("nan")]))


def test_solver_registered_and_created():
    import gradkit_core as gk

    solver = gk.create("gn-smooth-solver", hessian="exact", max_iters=30, grad_tol=1e-10)
    res = solver.solve(lambda x: ((x - 3.0) ** 2).sum() + (x**4).sum(), torch.zeros(3))
    assert res.status.startswith("success")
    assert float(res.history["grad_norm"][-1]) < 1e-10


# ---------------------------------------------------------------------- the optimizer
class TestGNSConformanceZeroHessian(OptimizerConformance):
    component = "gn-smooth"
    component_kwargs = {"hessian": "zero"}
    needs_closure = True


def _identity_hessian(params):
    n = sum(p.numel() for p in params)
    return torch.eye(n, dtype=D)


class TestGNSConformanceCallableHessian(OptimizerConformance):
    component = "gn-smooth"
    component_kwargs = {"hessian": _identity_hessian}
    needs_closure = True


def test_optimizer_exact_hessian_follows_the_solver_trajectory():
    prob = _small_logistic(m=40, n=4, lam=1e-2)
    model = nn.Linear(4, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    opt = GradNormSmooth(model.parameters(), hessian="exact")

    def closure():
        z = model(prob.A).squeeze(1)
        return torch.nn.functional.softplus(-prob.b * z).mean() + 0.5 * prob.lam * (model.weight**2).sum()

    losses = [float(opt.step(closure)) for _ in range(6)]
    res = GradNormSmoothSolver(hessian="exact", max_iters=6).solve(prob, torch.zeros(4))
    torch.testing.assert_close(model.weight.detach().view(-1), res.x)
    assert losses == pytest.approx(res.history["func"][:6], rel=1e-12)
    assert opt.state["gns"]["gamma"] == res.history["gamma"][-1]


def test_optimizer_exact_with_backward_closure_is_a_clear_error():
    model = nn.Linear(3, 1).double()
    opt = GradNormSmooth(model.parameters(), hessian="exact")
    x = torch.randn(5, 3, dtype=D)

    def closure():
        opt.zero_grad()
        loss = (model(x) ** 2).mean()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match="without calling"):
        opt.step(closure)


def test_optimizer_bad_input():
    p = nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="complex"):
        GradNormSmooth([p])
    with pytest.raises(ValueError, match="hessian"):
        GradNormSmooth([nn.Parameter(torch.zeros(2))], hessian="lbfgs")
    model = nn.Linear(2, 1)
    opt = GradNormSmooth(model.parameters(), hessian="zero")

    def nan_closure():
        opt.zero_grad()
        loss = model(torch.ones(1, 2)).sum() * float("nan")
        loss.backward()
        return loss

    with pytest.raises(ValueError, match="not finite"):
        opt.step(nan_closure)


def test_bohning_bounds_majorize_the_exact_hessians():
    g = torch.Generator().manual_seed(4)
    X = torch.randn(11, 3, generator=g, dtype=D)
    soft = SoftmaxRegression(X, torch.randint(0, 4, (11,), generator=g), 4, lam=0.0)
    logi = _small_logistic(m=11, n=3, lam=0.0)
    for _ in range(3):
        w = torch.randn(12, generator=g, dtype=D)
        assert torch.linalg.eigvalsh(soft.bohning_hess(w) - soft.hess(w)).min() >= -1e-12
        x = torch.randn(3, generator=g, dtype=D)
        assert torch.linalg.eigvalsh(logi.bohning_hess(x) - logi.hess(x)).min() >= -1e-12
    torch.testing.assert_close(logi.bohning_hess(x), logi.A.T @ logi.A / 44)


def test_nonfinite_gradient_error_names_the_parameter():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    opt = GradNormSmooth([{"params": [a]}, {"params": [b]}], hessian="zero")

    def closure():
        opt.zero_grad()
        loss = a.sum() + b.sum()
        loss.backward()
        b.grad[1] = float("inf")  # a finite loss whose gradient is not
        return loss

    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\] of shape \(3,\)"):
        opt.step(closure)
