import math

import pytest
import torch

import gradkit_core as gk
from gradkit_bilevel.baselines import HOAG, GridSearch, HypergradientDescent
from gradkit_bilevel.core import (BilevelProblem, Counter, KnownConstants, OnlineConstants, SecondOrder, cg,
                                  error_bound, fista, inexact_hypergradient)
from gradkit_bilevel.maid import MAID, MAIDFixedEps
from gradkit_bilevel.problems import QuadraticBilevel, TVDenoising

D = torch.float64


# ---------------------------------------------------------------- hypergradient
def test_hypergradient_matches_closed_form(quad):
    theta = torch.linspace(-1, 1, 5, dtype=D)
    hg = inexact_hypergradient(quad, theta, quad.x0, 1e-11, 1e-11)
    exact = quad.hypergradient(theta)
    assert torch.allclose(hg.p, exact, rtol=1e-7, atol=1e-8), (hg.p, exact)
    # and the closed form is the gradient of the closed-form f (central differences)
    h = 1e-5
    fd = torch.tensor([(quad.f(theta + h * e) - quad.f(theta - h * e)) / (2 * h) for e in torch.eye(5, dtype=D)], dtype=D)
    assert torch.allclose(fd, exact, rtol=1e-6, atol=1e-6)


def test_hypergradient_matches_finite_differences_tv(tv):
    theta = torch.tensor([-1.5, -2.0], dtype=D)
    hg = inexact_hypergradient(tv, theta, tv.x0, 1e-10, 1e-10)
    h = 1e-5
    fd = torch.tensor([(tv.value(theta + h * e, 1e-12) - tv.value(theta - h * e, 1e-12)) / (2 * h)
                       for e in torch.eye(2, dtype=D)], dtype=D)
    assert torch.allclose(hg.p, fd, rtol=1e-5, atol=1e-7), (hg.p, fd)


def test_mixed_derivative_products_are_adjoint(tv):
    theta = torch.tensor([-1.0, -3.0], dtype=D)
    so = SecondOrder(tv.lower, tv.noisy, theta)
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(2, generator=gen, dtype=D)
    v = torch.randn(tv.noisy.shape, generator=gen, dtype=D)
    lhs = float((so.B(u) * v).sum())
    rhs = float((u * so.BT(v)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10)
    # A is symmetric
    w = torch.randn(tv.noisy.shape, generator=gen, dtype=D)
    assert float((so.A(v) * w).sum()) == pytest.approx(float((v * so.A(w)).sum()), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_bound_holds_with_exact_constants(seed):
    prob = QuadraticBilevel.random(n=150, m=4, seed=seed, centered=True)
    gen = torch.Generator().manual_seed(100 + seed)
    consts = KnownConstants(B=prob.B_norm)   # A, B constant in x: L_B = L_Ainv = 0
    for eps, delta in [(1e-1, 1e-1), (1e-2, 1e-4), (1e-4, 1e-2), (1e-6, 1e-6)]:
        theta = torch.randn(4, generator=gen, dtype=D)
        x0 = torch.randn(4, generator=gen, dtype=D)
        hg = inexact_hypergradient(prob, theta, x0, eps, delta, consts=consts)
        err = float(torch.linalg.vector_norm(hg.p - prob.hypergradient(theta)))
        assert err <= hg.omega, (eps, delta, err, hg.omega)
        # the bound is the formula of core.error_bound
        expected = prob.B_norm * (delta / prob.mu(theta) + prob.Lg * eps / prob.mu(theta))
        assert hg.omega == pytest.approx(expected, rel=1e-12)


def test_error_bound_holds_with_online_constants_tv(tv):
    gen = torch.Generator().manual_seed(7)
    consts = OnlineConstants(seed=0)
    for eps in [1e-1, 1e-2, 1e-3]:
        theta = torch.tensor([-2.0, -2.5], dtype=D) + 0.3 * torch.randn(2, generator=gen, dtype=D)
        hg = inexact_hypergradient(tv, theta, tv.noisy, eps, eps, consts=consts)
        ref = inexact_hypergradient(tv, theta, hg.x, 1e-11, 1e-11).p
        err = float(torch.linalg.vector_norm(hg.p - ref))
        assert err <= hg.omega, (eps, err, hg.omega)
    # running maxima: the constants never decrease
    before = (consts.B, consts.L_B, consts.L_Ainv)
    inexact_hypergradient(tv, torch.tensor([1.0, 1.0], dtype=D), tv.noisy, 1e-3, 1e-3, consts=consts)
    after = (consts.B, consts.L_B, consts.L_Ainv)
    assert all(a >= b for a, b in zip(after, before))


def test_online_constants_on_quadratic(quad):
    consts = OnlineConstants(power_steps=30)
    hg = inexact_hypergradient(quad, quad.theta0, quad.x0, 1e-8, 1e-8, consts=consts)
    assert consts.B == pytest.approx(quad.B_norm, rel=1e-6)   # power method converges to ‖B‖
    assert consts.L_B < 1e-6 * quad.B_norm and consts.L_Ainv < 1e-6   # A, B constant in x
    assert math.isfinite(hg.omega)


def test_error_bound_formula_by_hand():
    c = KnownConstants(B=2.0, L_B=3.0, L_Ainv=0.5)
    w = error_bound(c, mu=4.0, Lg=5.0, eps=0.1, delta=0.2, grad_g_norm=6.0, q_norm=7.0)
    Bx = 2.0 + 3.0 * 0.1
    assert w == pytest.approx(Bx * (0.2 / 4 + 0.5 * 6 * 0.1 + 5 * 0.1 / 4) + 3.0 * 0.1 * 7.0)


# ---------------------------------------------------------------- lower level and CG
@pytest.mark.parametrize("eps", [1e-1, 1e-4, 1e-8])
def test_fista_certificate(quad, eps):
    theta = torch.full((5,), 0.3, dtype=D)
    x, n = fista(lambda z: quad.grad_lower_x(z, theta), quad.x0, quad.mu(theta), quad.L(theta), eps)
    assert float(torch.linalg.vector_norm(x - quad.x_hat(theta))) <= eps
    assert float(torch.linalg.vector_norm(quad.grad_lower_x(x, theta))) / quad.mu(theta) <= eps
    assert n >= 1


def test_fista_is_accelerated():
    # ill-conditioned diagonal quadratic: FISTA needs O(sqrt(kappa) log(1/eps)) gradients, far below kappa
    d = torch.logspace(0, 4, 50, dtype=D)
    x, n = fista(lambda z: d * (z - 1), torch.zeros(50, dtype=D), 1.0, 1e4, 1e-6)
    assert float(torch.linalg.vector_norm(x - 1)) <= 1e-6
    assert n < 2000   # plain gradient descent needs ~ kappa*log(1/eps) ~ 1.4e5


@pytest.mark.parametrize("tol", [1e-2, 1e-6, 1e-10])
def test_cg_tolerance(tol):
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(40, 40, generator=gen, dtype=D)
    A = M @ M.T + 0.1 * torch.eye(40, dtype=D)
    b = torch.randn(40, generator=gen, dtype=D)
    q, n, res = cg(lambda v: A @ v, b, tol)
    true_res = float(torch.linalg.vector_norm(A @ q - b))
    assert true_res <= tol and res <= tol
    assert res == pytest.approx(true_res, rel=1e-6, abs=1e-14)
    # warm start from the solution costs a single residual product
    q2, n2, _ = cg(lambda v: A @ v, b, tol, x0=q)
    assert n2 == 1 and torch.equal(q2, q)
    if tol == 1e-2:
        q_tight, n_tight, _ = cg(lambda v: A @ v, b, 1e-10)
        assert n_tight > n   # looser tolerance -> fewer products


def test_cg_rejects_indefinite():
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=D))
    with pytest.raises(ValueError, match="positive definite"):
        cg(lambda v: A @ v, torch.tensor([1.0, 1.0], dtype=D), 1e-8)


# ---------------------------------------------------------------- line search and adaptivity
def test_sufficient_decrease_test_by_hand():
    m = MAID(eta=0.1)
    # upper(new) - lower(old) = (1 + 2*0.1 + 4*0.01/2) - (2 - 3*0.1 - 4*0.01/2) = 1.22 - 1.68 = -0.46
    assert m.sufficient_decrease(1.0, 2.0, 2.0, 3.0, 0.1, 4.0, step=1.0, p_norm=6.7)      # -0.46 <= -0.449
    assert not m.sufficient_decrease(1.0, 2.0, 2.0, 3.0, 0.1, 4.0, step=1.0, p_norm=6.8)  # -0.46 > -0.4624


@pytest.mark.parametrize("eps0", [1e-1, 1e-3, 1e-5])
def test_accepted_steps_decrease_true_objective(quad, eps0):
    solver = MAID(eps=eps0, delta=eps0, rho=0.5, tau=0.5, nu=1.25, beta=0.01, max_iter=40)
    r = solver.solve(quad)
    h = r.history
    n_acc = 0
    for k in range(1, len(h["theta"])):
        if not h["accepted"][k]:
            assert torch.equal(h["theta"][k], h["theta"][k - 1])
            continue
        n_acc += 1
        dec = quad.f(h["theta"][k]) - quad.f(h["theta"][k - 1])
        assert dec <= -h["step"][k] * solver.eta ** 2 * h["grad_norm"][k] ** 2 + 1e-12
        assert h["omega"][k] <= (1 - solver.eta) * h["grad_norm"][k]   # accuracy test passed before the step
    assert n_acc >= 20


def test_adaptive_accuracy_rule(quad):
    solver = MAID(eps=10.0, delta=10.0, tau=0.5, nu=1.25, rho=0.5, beta=0.01, max_iter=30)
    r = solver.solve(quad)
    tr = r.history["trace"]
    kinds = {t[0] for t in tr}
    assert "bound" in kinds and "accept" in kinds and "relax" in kinds
    prev = (solver.eps, solver.delta, solver.beta)
    for ev, eps, delta, beta in tr:
        if ev == "bound":          # ω/‖p‖ > 1 − η: both accuracies tightened by τ
            assert eps == pytest.approx(0.5 * prev[0]) and delta == pytest.approx(0.5 * prev[1])
        elif ev == "relax":        # after a successful step: relaxed by ν, step grown by 10/9
            assert eps == pytest.approx(1.25 * prev[0]) and delta == pytest.approx(1.25 * prev[1])
            assert beta == pytest.approx(prev[2] * 10 / 9)
        elif ev == "bt_fail":      # failed backtracking: tightened by τ
            assert eps == pytest.approx(0.5 * prev[0])
        elif ev == "accept":       # accepted step beta * rho^i <= beta
            assert eps == prev[0] and beta <= prev[2] * (1 + 1e-12)
        prev = (eps, delta, beta)
    # the first hypergradient needed tightening from eps0 = 10, to where ω/‖p‖ ≤ 1 − η
    hg = r.history["hg"]
    assert hg[0][0] == 10.0 and hg[0][2] / hg[0][3] > 1 - solver.eta
    first_ok = next(e for e in hg if e[2] / e[3] <= 1 - solver.eta)
    assert first_ok[0] < 10.0


def test_fixed_eps_variant_keeps_accuracy(quad):
    r = MAIDFixedEps(eps=1e-4, rho=0.5, beta=0.01, max_iter=15).solve(quad)
    assert set(r.history["eps"]) == {1e-4}
    assert quad.f(r.theta) < quad.f(quad.theta0)


# ---------------------------------------------------------------- convergence and baselines
@pytest.mark.parametrize("eps0", [1e-1, 1e-3, 1e-5])
def test_maid_converges_to_theta_star_for_every_eps0(quad, eps0):
    r = MAID(eps=eps0, delta=eps0, rho=0.5, tau=0.5, nu=1.25, beta=0.01, max_iter=120).solve(quad)
    d0 = float(torch.linalg.vector_norm(quad.theta0 - quad.theta_star))
    d = float(torch.linalg.vector_norm(r.theta - quad.theta_star))
    assert d <= 1e-2 * d0, (d, d0)


def test_hoag_schedule_and_convergence(quad):
    hoag = HOAG(step=1 / quad.Lf, eps0=1e-1, power=1.1, max_iter=300)
    assert hoag.accuracy(1) == (1e-1, 1e-1)
    assert hoag.accuracy(10) == pytest.approx((1e-1 / 10 ** 1.1,) * 2)
    r = hoag.solve(quad)
    assert r.history["eps"][5] == pytest.approx(1e-1 / 5 ** 1.1)
    d0 = float(torch.linalg.vector_norm(quad.theta0 - quad.theta_star))
    assert float(torch.linalg.vector_norm(r.theta - quad.theta_star)) <= 1e-2 * d0


def test_exact_hypergradient_descent_step(quad):
    step = 1 / quad.Lf
    r = HypergradientDescent(step=step, exact=True, max_iter=1).solve(quad)
    expected = quad.theta0 - step * quad.hypergradient(quad.theta0)
    assert torch.allclose(r.theta, expected, atol=1e-14)
    assert r.counter.ll == 0
    r2 = HypergradientDescent(step=step, eps=1e-10, max_iter=1).solve(quad)
    assert torch.allclose(r2.theta, expected, atol=1e-8)


def test_grid_search_finds_grid_minimiser():
    prob = QuadraticBilevel.random(n=100, m=2, seed=5, centered=True)
    lo, hi = prob.theta_star - 1.0, prob.theta_star + 1.0
    r = GridSearch(lower=lo.tolist(), upper=hi.tolist(), points=5, eps=1e-10).solve(prob)
    vals = [prob.f(t) for t in r.history["theta"]]
    assert len(vals) == 25
    assert prob.f(r.theta) == pytest.approx(min(vals), rel=1e-9)
    assert float(torch.linalg.vector_norm(r.theta - prob.theta_star)) < 1e-8   # θ* is the grid centre


def test_maid_robust_to_initial_step_where_fixed_step_is_not(tv_images):
    """The robustness claim on a tiny seeded TV instance: MAID reaches (f - f*) <= 1e-2 (f0 - f*) from every
    initial step beta0 in {0.1, 1, 10}; HOAG with the same values as its fixed step does not."""
    from gradkit_bilevel.reproduce import reference_values, work_to_target

    P = tv_images
    steps = (0.1, 1.0, 10.0)
    maid = [MAID(beta=b, max_iter=40).solve(P, ll_budget=2500) for b in steps]
    hoag = [HOAG(step=s, max_iter=40).solve(P, ll_budget=2500) for s in steps]
    vals = [reference_values(P, r.history["theta"]) for r in maid + hoag]
    f0, f_star = vals[0][0], min(min(v) for v in vals)
    target = f_star + 1e-2 * (f0 - f_star)
    w = [work_to_target(P, r, target, v) for r, v in zip(maid + hoag, vals)]
    assert all(math.isfinite(x) for x in w[:3]), w
    assert not all(math.isfinite(x) for x in w[3:]), w


# ---------------------------------------------------------------- API and bad input
def test_registry_creates_components():
    assert isinstance(gk.create("maid", eps=1e-2), MAID)
    assert isinstance(gk.create("hoag", step=0.1), HOAG)
    info = gk.info("maid", kind="solvers")
    assert "2308.10098" in str(info)


def test_user_defined_problem_runs_through_maid():
    # ridge-regularised least squares lower level, validation loss upper level, θ = log λ
    gen = torch.Generator().manual_seed(0)
    Xtr, Xva = torch.randn(60, 8, generator=gen, dtype=D), torch.randn(40, 8, generator=gen, dtype=D)
    w_true = torch.randn(8, generator=gen, dtype=D)
    ytr = Xtr @ w_true + 0.5 * torch.randn(60, generator=gen, dtype=D)
    yva = Xva @ w_true + 0.5 * torch.randn(40, generator=gen, dtype=D)
    lower = lambda w, th: 0.5 * ((Xtr @ w - ytr) ** 2).sum() + 0.5 * torch.exp(th[0]) * (w ** 2).sum()  # noqa: E731
    upper = lambda w: 0.5 * ((Xva @ w - yva) ** 2).sum()  # noqa: E731
    ev = torch.linalg.eigvalsh(Xtr.T @ Xtr)
    prob = BilevelProblem(lower, upper, torch.tensor([3.0], dtype=D), torch.zeros(8, dtype=D),
                          mu=lambda th: float(ev[0]) + math.exp(float(th[0])),
                          L=lambda th: float(ev[-1]) + math.exp(float(th[0])),
                          Lg=float(torch.linalg.eigvalsh(Xva.T @ Xva)[-1]))
    r = MAID(max_iter=40).solve(prob)
    lams = torch.logspace(-3, 3, 200, dtype=D)
    vals = [float(upper(torch.linalg.solve(Xtr.T @ Xtr + l * torch.eye(8, dtype=D), Xtr.T @ ytr))) for l in lams]
    assert prob.value(r.theta) <= min(vals) + 1e-3 * (prob.value(prob.theta0) - min(vals))


def test_bad_inputs(quad):
    with pytest.raises(TypeError, match="lower must be a callable"):
        BilevelProblem(None, lambda x: x.sum(), torch.zeros(1, dtype=D), torch.zeros(1, dtype=D), mu=1, L=1, Lg=1)
    with pytest.raises(TypeError, match="floating-point"):
        BilevelProblem(lambda x, t: (x ** 2).sum(), lambda x: x.sum(), torch.zeros(1, dtype=torch.long),
                       torch.zeros(1, dtype=D), mu=1, L=1, Lg=1)
    with pytest.raises(ValueError, match="scalar"):
        BilevelProblem(lambda x, t: x ** 2, lambda x: x.sum(), torch.zeros(1, dtype=D), torch.zeros(2, dtype=D),
                       mu=1, L=1, Lg=1)
    with pytest.raises(ValueError, match="mu must be a finite positive"):
        BilevelProblem(lambda x, t: (x ** 2).sum(), lambda x: x.sum(), torch.zeros(1, dtype=D),
                       torch.zeros(1, dtype=D), mu=0, L=1, Lg=1)
    with pytest.raises(ValueError, match="rho"):
        MAID(rho=1.5)
    with pytest.raises(ValueError, match="nu"):
        MAID(nu=0.5)
    with pytest.raises(ValueError, match="constants"):
        MAID(constants="power")
    with pytest.raises(TypeError, match="BilevelProblem"):
        MAID().solve("not a problem")
    with pytest.raises(ValueError, match="summable"):
        HOAG(step=0.1, power=1.0)
    with pytest.raises(ValueError, match="max_dim"):
        GridSearch(lower=[0] * 4, upper=[1] * 4)
    with pytest.raises(ValueError, match="closed-form"):
        tvp = TVDenoising(torch.zeros(1, 4, 4, dtype=D), torch.zeros(1, 4, 4, dtype=D))
        HypergradientDescent(step=0.1, exact=True, max_iter=1).solve(tvp)
    with pytest.raises(ValueError, match="mu .* must not exceed L"):
        fista(lambda z: z, torch.zeros(1, dtype=D), 2.0, 1.0, 1e-3)


def test_multinomial_logistic_hypergradient_and_descent():
    from gradkit_bilevel.problems import MultinomialLogisticHyper

    P = MultinomialLogisticHyper.digits(n_train=120, n_val=120, seed=0, theta0=torch.full((64,), -1.0, dtype=D))
    theta = P.theta0 + 0.2 * torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=D)
    hg = inexact_hypergradient(P, theta, P.x0, 1e-9, 1e-10)
    h = 1e-5
    for j in (0, 20, 37):   # central differences on three coordinates
        e = torch.zeros(64, dtype=D)
        e[j] = 1.0
        fd = (P.value(theta + h * e, 1e-11) - P.value(theta - h * e, 1e-11)) / (2 * h)
        assert float(hg.p[j]) == pytest.approx(fd, rel=1e-4, abs=1e-9)
    r = MAID(max_iter=8).solve(P)
    assert P.value(r.theta, 1e-8) < P.value(P.theta0, 1e-8)
    with pytest.raises(ValueError, match="same number of features"):
        MultinomialLogisticHyper(torch.zeros(4, 3), torch.zeros(4), torch.zeros(4, 2), torch.zeros(4), 2)


# ---------------------------------------------------------------- stopping, work accounting, bad input (issue 11)
def test_maid_stops_on_its_own_at_gtol_with_bounded_work(quad):
    """Defaults, a generous max_iter: MAID stops because the certified hypergradient bound ‖p‖ + ω is below
    gtol, not because it ran out of iterations (it used to drive ε, δ to 1e-14 and spin in CG forever)."""
    r = MAID(max_iter=2000).solve(quad)
    assert r.stop_reason == "gtol", r.stop_reason
    assert r.iterations < 400 and r.counter.work < 20000, (r.iterations, r.counter.work)
    assert float(torch.linalg.vector_norm(quad.hypergradient(r.theta))) <= 1e-5
    assert quad.f(r.theta) - quad.f_star <= 1e-9


def test_maid_accuracies_respect_the_relative_floor(quad):
    solver = MAID(max_iter=2000, eps_rtol=1e-8)
    r = solver.solve(quad)
    for eps, delta, omega, pn in r.history["hg"]:
        assert eps >= 1e-8 * 0.999 and delta >= 1e-8 * 0.999   # floor: eps_rtol * (1 + ‖x‖) >= eps_rtol


def test_every_product_counts_against_the_budget(quad):
    """CG and constant-estimation products count too: the total work never passes the budget by more than the
    few fixed products of one hypergradient (p = -Bᵀq and the constant estimates)."""
    for budget in (150, 400, 1200):
        r = MAID(eps=1e-6, delta=1e-6, max_iter=10_000).solve(quad, budget=budget)
        c = r.counter
        assert r.stop_reason in ("budget", "gtol")
        assert c.work == c.ll + c.cg + c.extra
        assert c.work <= budget + 10, (budget, c)
    r = HOAG(step=1 / quad.Lf, max_iter=10_000).solve(quad, budget=300)
    assert r.stop_reason == "budget" and r.counter.work <= 300 + 10


def test_maid_budget_stop_is_fast_when_the_accuracy_is_unattainable(quad):
    """Asking for accuracies far below float64 rounding must not spin: the floor keeps ε, δ attainable."""
    r = MAID(eps=1e-13, delta=1e-13, max_iter=30).solve(quad)
    assert r.counter.work < 30 * 2000


def test_nan_upper_level_is_reported_as_such_at_once(quad):
    bad = BilevelProblem(quad.lower, lambda x: (x ** 2).sum() * float("nan") if x.requires_grad else (x ** 2).sum(),
                         quad.theta0, quad.x0, mu=quad.mu(quad.theta0), L=quad.L(quad.theta0), Lg=quad.Lg)
    with pytest.raises(ValueError, match="upper-level objective"):
        MAID(max_iter=5).solve(bad)


def test_nan_lower_level_gradient_is_reported(quad):
    def lower(x, theta):
        v = quad.lower(x, theta)
        return v + (x.sum() * float("nan") if x.requires_grad else 0.0)

    bad = BilevelProblem(lower, quad.upper, quad.theta0, quad.x0, mu=quad.mu(quad.theta0), L=quad.L(quad.theta0),
                         Lg=quad.Lg)
    with pytest.raises(ValueError, match="lower-level gradient"):
        MAID(max_iter=5).solve(bad)


@pytest.mark.parametrize("key,value", [("gtol", float("nan")), ("gtol", -1.0), ("eps_rtol", float("inf")),
                                       ("budget", float("nan")), ("budget", 0.0), ("nu", float("inf"))])
def test_maid_rejects_bad_stopping_options(key, value):
    with pytest.raises(ValueError, match=key):
        MAID(**{key: value})


def test_every_solver_is_creatable_by_name_with_its_registered_defaults(quad):
    import gradkit_core as gk

    hoag = gk.create("hoag", kind="solvers")
    assert isinstance(hoag, HOAG) and hoag.step == 1.0
    assert gk.create("hypergradient-descent", kind="solvers").step == 1.0
    m = gk.create("maid", kind="solvers")
    assert (m.budget, m.gtol) == (1e6, 1e-6)
    assert gk.create("maid-fixed-eps", kind="solvers").fixed_eps
