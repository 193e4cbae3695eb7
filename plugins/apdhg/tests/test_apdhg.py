import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

from gradkit_apdhg.problems import (AssignmentOperator, LinearProgram, SaddleProblem, assignment_problem,
                                    farkas_ray_test, hungarian, kkt_parts, kkt_residual, primal_ray_test,
                                    random_assignment, rounding_accuracy)
from gradkit_apdhg.solvers import (AdaptivePDHG, AverageSpectrumAdapt, ChambollePock, FixedPCPDHG,
                                   HeYuanCorrection, PlainPDHG, predict, rho_along, xi_Q_xi)


def tiny_lp():
    # min x1 + 2 x2  s.t. x1 + x2 = 1, x >= 0  ->  x* = (1, 0), y* = 1, f* = 1
    return LinearProgram(np.array([1.0, 2.0]), np.array([[1.0, 1.0]]), np.array([1.0]))


def random_lp(m=5, n=12, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    b = A @ rng.random(n)                     # feasible with x >= 0
    c = rng.random(n) + 0.1 + A.T @ rng.standard_normal(m) * 0.1   # keeps the LP bounded (dual feasible-ish)
    return A, b, c


# ----------------------------------------------------------------------------- prediction / correction by hand
def test_prediction_step_by_hand():
    lp = tiny_lp()
    x, y, r, s = np.array([0.5, 0.5]), np.array([0.3]), 2.0, 4.0
    xt, yt, Axt = predict(lp, x, y, lp.A.rmatvec(y), r, s)
    # x~ = max(0, x - (c - A^T y)/r) = (0.5 - 0.7/2, max(0, 0.5 - 1.7/2)) = (0.15, 0)
    np.testing.assert_allclose(xt, [0.15, 0.0])
    np.testing.assert_allclose(Axt, [0.15])
    # y~ = y - (A x~ - b)/s = 0.3 - (0.15 - 1)/4 = 0.5125
    np.testing.assert_allclose(yt, [0.5125])


def test_correction_formula_by_hand():
    # xi = (u, v), A = [[1, 1]]: Au = 1, A^T v = (1, 1); r = 2, s = 1
    u, v = np.array([1.0, 0.0]), np.array([1.0])
    Au, Atv = np.array([1.0]), np.array([1.0, 1.0])
    assert xi_Q_xi(u, v, Au, 2.0, 1.0) == pytest.approx(2 * 1 + 1 * 1 + 1)            # r|u|^2 + s|v|^2 + v.Au = 4
    alpha, dx, dy = HeYuanCorrection(gamma=1.0)(u, v, Au, Atv, 2.0, 1.0)
    np.testing.assert_allclose(dx, [1.5, 0.5])                                         # u + A^T v / r
    assert dy is v
    assert alpha == pytest.approx(4.0 / (2 * (1.5 ** 2 + 0.5 ** 2) + 1.0))             # xiQxi / ||M xi||_H^2 = 2/3
    a2, _, _ = HeYuanCorrection(gamma=1.5)(u, v, Au, Atv, 2.0, 1.0)
    assert a2 == pytest.approx(1.5 * 2.0 / 3.0)
    a3, _, _ = HeYuanCorrection(gamma=0.8, step="fixed")(u, v, Au, Atv, 2.0, 1.0)
    assert a3 == 0.8


def test_one_apdhg_iteration_matches_manual_and_contracts():
    A, b, c = random_lp()
    lp = LinearProgram(c, A, b)
    ref = linprog(c, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
    xs, ys = ref.x, ref.eqlin.marginals
    assert kkt_residual(xs, ys, A, b, c, f_star=ref.fun) < 1e-7
    rng = np.random.default_rng(1)
    x, y = rng.random(12), rng.standard_normal(5)
    r, s, gamma = 8.0, 8.0, 1.0
    assert np.linalg.norm(A, 2) ** 2 <= 0.9 * r * s        # test passes for every u -> no backtracking
    solver = AdaptivePDHG(r, s, gamma=gamma, shrink=0.99, loose=1e-9)
    res = solver.solve(lp, x, y, max_iter=1, tol=1e-300)
    # manual
    xt = np.maximum(0, x - (c - A.T @ y) / r)
    yt = y - (A @ xt - b) / s
    u, v = x - xt, y - yt
    qxi = r * u @ u + s * v @ v + v @ (A @ u)
    dx = u + A.T @ v / r
    alpha = gamma * qxi / (r * dx @ dx + s * v @ v)
    np.testing.assert_allclose(res.x, x - alpha * dx, rtol=1e-12)
    np.testing.assert_allclose(res.y, y - alpha * v, rtol=1e-12)
    # He-Yuan contraction in the H = diag(rI, sI) norm
    H = lambda dxv, dyv: r * dxv @ dxv + s * dyv @ dyv  # noqa: E731
    before = H(x - xs, y - ys)
    after = H(res.x - xs, res.y - ys)
    assert after <= before - gamma * (2 - gamma) * alpha * qxi + 1e-8


# ----------------------------------------------------------------------------- step test along the displacement
def test_step_test_accept_reject_by_hand():
    A = np.diag([1.0, 10.0])
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    # along e1: ||Au||^2/||u||^2 = 1; along e2: 100 (the max eigenvalue)
    assert rho_along(A @ e1, e1, 1.0, 1.0) == pytest.approx(1.0)
    assert rho_along(A @ e2, e2, 2.0, 5.0) == pytest.approx(10.0)
    assert rho_along(A @ np.zeros(2), np.zeros(2), 1.0, 1.0) == 0.0
    ad = AverageSpectrumAdapt(nu=0.9, grow=1.5, shrink=0.7, loose=0.3)
    assert not ad.accept(rho_along(A @ e1, e1, 1.0, 1.0))          # 1 > 0.9: reject
    assert ad.accept(rho_along(A @ e1, e1, 1.2, 1.0))              # 1/1.2 = 0.833 <= 0.9: accept
    assert ad.on_reject(1.0, 2.0, 1.0) == (1.5, 3.0)
    assert ad.after_accept(1.0, 2.0, 0.2) == (0.7, 1.4)            # very loose (0.2 < 0.27): shrink
    assert ad.after_accept(1.0, 2.0, 0.5) == (1.0, 2.0)            # not loose: keep
    # average vs max spectrum: r s = 1.2 is accepted along e1 although r s ||A||^2 ... needs r s >= 100/0.9
    assert not ad.accept(rho_along(A @ e2, e2, 1.2, 1.0))


def test_backtracking_redoes_prediction_and_every_accepted_step_passes():
    lp = random_assignment(12, seed=3)
    res = AdaptivePDHG(r0=0.05, s0=0.05).solve(lp, max_iter=300, tol=1e-12)
    assert res.backtracks > 0
    rho = np.array(res.history["rho"])
    assert np.all(rho <= 0.9 + 1e-12)
    # work counts the redone predictions: 3 applications per iteration + 1 per backtrack, + 2 at start
    assert res.matvecs == 2 + 3 * res.iterations + res.backtracks
    # average-spectrum steps: r s stays far below ||A||^2 = 2n = 24 on average
    rs = np.array(res.history["r"]) * np.array(res.history["s"])
    assert np.median(rs) < 2 * 12 / 0.9


def test_fixed_pc_pdhg_never_fails_the_test():
    lp = random_assignment(10, seed=0)
    res = FixedPCPDHG().solve(lp, max_iter=200, tol=1e-12)
    assert np.all(np.array(res.history["rho"]) <= 0.9 + 1e-12)
    assert res.history["r"][0] == pytest.approx(np.sqrt(20 / 0.9))
    assert res.backtracks == 0


# ----------------------------------------------------------------------------- operator and KKT
def test_incidence_operator_matches_explicit_matrix():
    n = 5
    op = AssignmentOperator(n)
    M = op.todense()
    assert M.shape == (10, 25)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(25), rng.standard_normal(10)
    np.testing.assert_allclose(op.matvec(x), M @ x)
    np.testing.assert_allclose(op.rmatvec(y), M.T @ y)
    np.testing.assert_allclose(op.H.matvec(y), M.T @ y)
    X = x.reshape(n, n)
    np.testing.assert_allclose(op.matvec(x), np.r_[X.sum(1), X.sum(0)])
    ev = np.sort(np.linalg.eigvalsh(M.T @ M))[::-1]
    assert ev[0] == pytest.approx(2 * n) and op.norm ** 2 == pytest.approx(2 * n)
    np.testing.assert_allclose(ev[1:2 * n - 1], n)                     # n, 2n - 2 times
    np.testing.assert_allclose(ev[2 * n - 1:], 0, atol=1e-9)
    assert np.trace(M.T @ M) / n ** 2 == pytest.approx(2.0)            # average spectrum


def test_kkt_residual_definition():
    A, b, c = np.array([[1.0, 1.0]]), np.array([1.0]), np.array([1.0, 2.0])
    # optimum: x = (1, 0), y = 1 -> 0
    assert kkt_residual([1, 0], [1], A, b, c, f_star=1.0) == pytest.approx(0.0)
    # x = (0.5, 0): primal |0.5 - 1|/1 = 0.5; gap |0.5 - 1|/1 = 0.5; dual ok (z = (0, 1) >= 0)
    assert kkt_parts([0.5, 0], [1], A, b, c, f_star=1.0) == pytest.approx((0.5, 0.0, 0.5))
    # y = 3 dual infeasible: z = (-2, -1) -> ||z^-|| / ||c|| = sqrt(5)/sqrt(5) = 1; gap |1 - 3| / 1 = 2
    assert kkt_parts([1, 0], [3], A, b, c, f_star=1.0) == pytest.approx((0.0, 1.0, 2.0))
    assert kkt_residual([1, 0], [3], A, b, c, f_star=1.0) == pytest.approx(3.0)
    # bound violation counts as primal infeasibility: x = (1.5, -0.5) has Ax = b but x2 < 0
    assert kkt_parts([1.5, -0.5], [1], A, b, c, f_star=1.0)[0] == pytest.approx(0.5)
    # boxed LP: x <= ub makes negative reduced cost feasible and adds ub * z^- to the dual objective
    assert kkt_parts([1, 0], [3], A, b, c, f_star=1.0, ub=1.0) == pytest.approx((0.0, 0.0, abs(1 - (3 - 2 - 1))))


# ----------------------------------------------------------------------------- convergence
def test_apdhg_reaches_hungarian_optimum():
    lp = random_assignment(15, seed=0)
    cols, f_star = hungarian(lp.C)
    res = AdaptivePDHG().solve(lp, max_iter=20000, tol=1e-6, f_star=f_star)
    assert res.converged and res.residual <= 1e-6
    assert abs(lp.c @ res.x - f_star) <= 1e-5 * f_star
    assert rounding_accuracy(res.x, cols) == 1.0


def test_claim_direction_fewer_iterations_than_cp():
    lp = random_assignment(20, seed=0)
    _, f_star = hungarian(lp.C)
    a = AdaptivePDHG().solve(lp, max_iter=20000, tol=1e-4, f_star=f_star)
    cp = ChambollePock().solve(lp, max_iter=20000, tol=1e-4, f_star=f_star)
    assert a.converged and cp.converged
    assert a.iterations < cp.iterations / 1.5


def test_general_lp_dense_sparse_and_linprog():
    A, b, c = random_lp(seed=2)
    ref = linprog(c, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
    assert ref.status == 0
    dense = AdaptivePDHG().solve(LinearProgram(c, A, b), max_iter=50000, tol=1e-7, f_star=ref.fun)
    spars = AdaptivePDHG().solve(LinearProgram(c, sp.csr_matrix(A), b), max_iter=50000, tol=1e-7, f_star=ref.fun)
    assert dense.converged
    assert c @ dense.x == pytest.approx(ref.fun, rel=1e-5)
    assert spars.converged
    np.testing.assert_allclose(spars.x, dense.x, atol=1e-6)
    # same maths on the first iterations (later accept/reject decisions amplify last-bit rounding differences)
    d50 = AdaptivePDHG().solve(LinearProgram(c, A, b), max_iter=50, tol=1e-300)
    s50 = AdaptivePDHG().solve(LinearProgram(c, sp.csr_matrix(A), b), max_iter=50, tol=1e-300)
    np.testing.assert_allclose(s50.x, d50.x, rtol=1e-9, atol=1e-12)


def test_plain_pdhg_stalls_where_correction_converges():
    # min_x max_y -y x (A = 1, b = 0, theta = 0): plain PDHG with r = s = 1 is a rotation (det = 1) and never
    # approaches the saddle point (0, 0); the corrected scheme converges.
    ident = lambda v, rho: v  # noqa: E731
    prob = SaddleProblem(ident, ident, np.array([[1.0]]), np.array([0.0]))
    plain = PlainPDHG(1.0, 1.0).solve(prob, [1.0], [1.0], max_iter=3000, tol=1e-12)
    d_plain = np.hypot(plain.x[0], plain.y[0])
    assert not plain.converged and d_plain > 0.5 * np.sqrt(2)
    pc = AdaptivePDHG(1.0, 1.0).solve(prob, [1.0], [1.0], max_iter=3000, tol=1e-10)
    assert pc.converged and np.hypot(pc.x[0], pc.y[0]) < 1e-6


def test_plain_pdhg_fails_on_assignment_instance():
    lp = random_assignment(20, seed=0)
    _, f_star = hungarian(lp.C)
    plain = PlainPDHG(1.0, 1.0).solve(lp, max_iter=3000, tol=1e-2, f_star=f_star)
    ada = AdaptivePDHG(1.0, 1.0).solve(lp, max_iter=3000, tol=1e-2, f_star=f_star)
    assert ada.converged and not plain.converged and plain.residual > 1.0


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        assignment_problem(np.ones((3, 4)))
    with pytest.raises(ValueError, match="rows"):
        LinearProgram(np.ones(2), np.ones((1, 2)), np.ones(3))
    with pytest.raises(ValueError, match="columns"):
        LinearProgram(np.ones(3), np.ones((1, 2)), np.ones(1))
    with pytest.raises(TypeError, match="LinearOperator"):
        LinearProgram(np.ones(2), [[1.0, 1.0]], np.ones(1))
    with pytest.raises(ValueError, match="nu"):
        AdaptivePDHG(nu=5.0)
    with pytest.raises(ValueError, match="gamma"):
        AdaptivePDHG(gamma=2.0)
    with pytest.raises(ValueError, match="r0"):
        AdaptivePDHG(r0=-1.0)
    with pytest.raises(ValueError, match="correction"):
        AdaptivePDHG(correction="nope")
    with pytest.raises(ValueError, match="grow"):
        AdaptivePDHG(grow=0.9)
    lp = tiny_lp()
    with pytest.raises(ValueError, match="tau\\*sigma"):
        ChambollePock(tau=1.0, sigma=1.0).solve(lp)
    with pytest.raises(ValueError, match="x0 has 3"):
        AdaptivePDHG().solve(lp, x0=np.zeros(3))
    with pytest.raises(TypeError, match="SaddleProblem"):
        AdaptivePDHG().solve("not a problem")
    with pytest.raises(ValueError, match="max_iter"):
        AdaptivePDHG().solve(lp, max_iter=0)
    with pytest.raises(TypeError, match="prox"):
        SaddleProblem(None, None, np.eye(1), np.zeros(1))


def test_registered_components():
    import gradkit_core

    names = {s.name for s in gradkit_core.list(kind="solvers")}
    assert {"apdhg", "chambolle-pock", "pdhg", "pc-pdhg"} <= names
    solver = gradkit_core.create("apdhg", kind="solvers")
    assert isinstance(solver, AdaptivePDHG)
    res = solver.solve(tiny_lp(), max_iter=5000, tol=1e-8, f_star=1.0)
    np.testing.assert_allclose(res.x, [1.0, 0.0], atol=1e-6)


def test_pluggable_correction_and_adapt():
    # M = I, alpha = 1 and fixed steps turn the corrected scheme back into plain PDHG (w+ = w~), iterate by iterate
    lp = random_assignment(8, seed=5)
    ident = AdaptivePDHG(2.0, 3.0, correction=lambda u, v, Au, Atv, r, s: (1.0, u, v), adapt="fixed")
    a = ident.solve(lp, max_iter=25, tol=1e-300)
    p = PlainPDHG(2.0, 3.0).solve(lp, max_iter=25, tol=1e-300)
    np.testing.assert_allclose(a.x, p.x, atol=1e-12)
    np.testing.assert_allclose(a.y, p.y, atol=1e-12)

    class Never:                     # a custom (r, s) rule object: always grows r, s on rejection by 4x
        def accept(self, rho):
            return rho <= 0.5

        def on_reject(self, r, s, rho):
            return 4 * r, 4 * s

        def after_accept(self, r, s, rho):
            return r, s

    res = AdaptivePDHG(0.01, 0.01, adapt=Never()).solve(lp, max_iter=50, tol=1e-300)
    assert np.all(np.array(res.history["rho"]) <= 0.5)
    r_hist = np.array(res.history["r"])
    k = np.round(np.log(r_hist / 0.01) / np.log(4))
    np.testing.assert_allclose(r_hist, 0.01 * 4.0 ** k)       # only the custom rule changed r
    assert np.all(np.diff(r_hist) >= 0)


def _claim_summary(ratios_cp, apdhg_iters=100, cap=None):
    """summary for reproduce._claims: per n a list of instance rows; CP's iterations = ratio * apdhg's (None: capped
    at ``cap``)."""
    def row(i6, run, **kw):
        d = {"iters@1e-04": None if i6 is None else i6 // 2, "work@1e-04": None if i6 is None else i6,
             "iters@1e-06": i6, "work@1e-06": None if i6 is None else 2 * i6, "iters_run": run,
             "matvecs": 2 * run, "median_r*s": 1.0, "round_acc": 1.0, "final_kkt": 10.0}
        d.update(kw)
        return d

    summary = {}
    for n, rats in ratios_cp.items():
        summary[(n, "apdhg")] = [row(apdhg_iters, apdhg_iters) for _ in rats]
        summary[(n, "Chambolle-Pock")] = [row(None, cap) if q is None else row(int(q * apdhg_iters),
                                                                               int(q * apdhg_iters)) for q in rats]
        summary[(n, "PC-PDHG")] = [row(None, cap or 10 ** 6) for _ in rats]
        summary[(n, "plain")] = [row(None, 3000, **{"iters@1e-04": None}) for _ in rats]
    return summary


def _claims_of(summary, ns):
    from gradkit_apdhg.reproduce import _claims
    from gradkit_core.results import Result

    res = Result("t")
    _claims(res, summary, ns)
    return {c.text: c for c in res.claims}


def test_reproduction_claims_use_a_noise_margin_and_capped_cp_as_lower_bound():
    # CP capped at 1000 iterations vs apdhg's 100 at n=20: a lower bound of 10x, enough for ">= 2x" and "grows"
    c = _claims_of(_claim_summary({10: [3.0, 3.1, 2.9], 20: [None, None, None]}, cap=1000), [10, 20])
    grows = next(v for k, v in c.items() if "grows" in k)
    ten = next(v for k, v in c.items() if "10x" in k)
    two = next(v for k, v in c.items() if ">= 2x" in k)
    assert grows.passed and two.passed and ">= 10.00x" in ten.detail and not ten.passed   # 10.00 - 2 SE(0) ... tie
    # an exact tie with the threshold never passes: ratio exactly 2 on every instance
    c = _claims_of(_claim_summary({10: [2.0, 2.0, 2.0], 20: [2.0, 2.0, 2.0]}), [10, 20])
    assert not next(v for k, v in c.items() if ">= 2x" in k).passed
    assert not next(v for k, v in c.items() if "grows" in k).passed                 # equal ratios: no growth
    # a mean above the threshold with a large spread over instances does not pass (margin = 2 standard errors)
    noisy = {10: [1.2, 2.5, 9.0], 20: [1.1, 30.0, 3.0]}
    c = _claims_of(_claim_summary(noisy), [10, 20])
    assert np.mean(np.log([1.2, 2.5, 9.0])) > np.log(2)                             # mean alone would pass
    assert not next(v for k, v in c.items() if ">= 2x" in k).passed
    assert not next(v for k, v in c.items() if "grows" in k).passed
    # a consistent gain passes both
    c = _claims_of(_claim_summary({10: [2.9, 3.0, 3.2], 20: [5.8, 6.1, 6.3]}), [10, 20])
    assert next(v for k, v in c.items() if ">= 2x" in k).passed
    assert next(v for k, v in c.items() if "grows" in k).passed
    assert next(v for k, v in c.items() if "plain PDHG" in k).passed
    # a capped run at the smallest n makes "grows" fail (its ratio is only a lower bound)
    c = _claims_of(_claim_summary({10: [None, None, None], 20: [50.0, 50.0, 51.0]}, cap=600), [10, 20])
    assert not next(v for k, v in c.items() if "grows" in k).passed


# ----------------------------------------------------------------------------- issue 11: general LPs, statuses, input
def general_lp(m_eq, m_ub, n, seed, sparse=False):
    """A feasible, bounded LP with equality rows, <= rows and mixed bounds (x >= 0, boxes, free, x <= ub), built
    from a feasible point and a dual-feasible (y_eq, y_ub <= 0, z) so that HiGHS and the solvers must agree."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(4, size=n, p=[0.4, 0.2, 0.2, 0.2])   # 0: x >= 0, 1: -1 <= x <= 2, 2: free, 3: x <= 1
    lb = np.where(kinds == 0, 0.0, np.where(kinds == 1, -1.0, -np.inf))
    ub = np.where(kinds == 1, 2.0, np.where(kinds == 3, 1.0, np.inf))
    xf = np.where(kinds == 1, rng.uniform(-1, 2, n), np.where(kinds == 3, rng.uniform(-2, 1, n), rng.uniform(0, 2, n)))
    xf[kinds == 2] = rng.standard_normal((kinds == 2).sum())
    A_eq = rng.standard_normal((m_eq, n)) if m_eq else None
    A_ub = rng.standard_normal((m_ub, n)) if m_ub else None
    b_eq = A_eq @ xf if m_eq else None
    b_ub = A_ub @ xf + rng.uniform(0, 1, m_ub) if m_ub else None
    z = np.where(kinds == 0, rng.uniform(0, 1, n), np.where(kinds == 3, -rng.uniform(0, 1, n), rng.standard_normal(n)))
    z[kinds == 2] = 0.0
    c = z + (A_eq.T @ rng.standard_normal(m_eq) if m_eq else 0) + (A_ub.T @ -rng.uniform(0, 1, m_ub) if m_ub else 0)
    if sparse:
        A_eq = sp.csr_matrix(A_eq) if m_eq else None
        A_ub = sp.csr_matrix(A_ub) if m_ub else None
    bounds = [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi) for lo, hi in zip(lb, ub)]
    return dict(c=c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=bounds)


@pytest.mark.parametrize("shape, seed, sparse", [((0, 8, 5), 0, False), ((3, 4, 12), 1, True), ((6, 0, 15), 0, False),
                                                 ((2, 10, 6), 0, True), ((4, 6, 30), 2, False)])
def test_general_lps_match_highs(shape, seed, sparse):
    """Inequalities (A_ub), equalities, boxes, free and upper-bounded variables; dense and sparse: same optimum as
    scipy's HiGHS; the duals are scipy's marginals (eqlin, ineqlin <= 0) up to the KKT tolerance."""
    kw = general_lp(*shape, seed, sparse=sparse)
    ref = linprog(method="highs", **kw)
    assert ref.status == 0
    lp = LinearProgram.from_linprog(**kw)
    assert lp.n_eq == shape[0] and lp.n_ub == shape[1] and lp.shape == (shape[0] + shape[1], shape[2])
    for solver in (AdaptivePDHG(), ChambollePock()):
        res = solver.solve(lp, max_iter=50000, tol=1e-8)
        assert res.status == 0 and res.success and res.converged, (solver.name, res.message)
        assert res.nit == res.iterations and "successfully" in res.message
        assert res.fun == pytest.approx(ref.fun, rel=1e-6, abs=1e-6)
        assert res.fun == pytest.approx(lp.c @ res.x)
        x = res.x
        if shape[0]:
            np.testing.assert_allclose(kw["A_eq"] @ x, kw["b_eq"], atol=1e-6)
            assert res.eqlin.shape == (shape[0],)
        if shape[1]:
            assert np.all(kw["A_ub"] @ x <= kw["b_ub"] + 1e-6)
            assert res.ineqlin.shape == (shape[1],) and np.all(res.ineqlin <= 1e-6)
        # the reference duals satisfy our KKT definition with inequalities (sign convention = scipy's)
        y_ref = np.r_[ref.eqlin.marginals if shape[0] else [], ref.ineqlin.marginals if shape[1] else []]
        assert lp.kkt(ref.x, y_ref, f_star=ref.fun) < 1e-7


def _infeasible_lp(seed):
    kw = general_lp(3, 4, 10, seed)
    a = np.random.default_rng(seed + 100).standard_normal(10)
    kw["A_ub"] = np.vstack([kw["A_ub"], a, -a])
    kw["b_ub"] = np.r_[kw["b_ub"], 1.0, -2.0]                 # a.x <= 1 and a.x >= 2
    return kw


def _unbounded_lp(seed):
    kw = general_lp(3, 4, 10, seed)
    kw["c"] = np.r_[kw["c"], -1.0]                            # a new variable x >= 0 in no constraint, cost -1
    kw["A_ub"] = np.hstack([kw["A_ub"], np.zeros((4, 1))])
    kw["A_eq"] = np.hstack([kw["A_eq"], np.zeros((3, 1))])
    kw["bounds"] = kw["bounds"] + [(0, None)]
    return kw


@pytest.mark.parametrize("make, want, seed", [(_infeasible_lp, 2, 1), (_infeasible_lp, 2, 3), (_unbounded_lp, 3, 1),
                                             (_unbounded_lp, 3, 2)])
def test_infeasible_and_unbounded_lps_get_highs_status_and_a_certificate(make, want, seed):
    kw = make(seed)
    assert linprog(method="highs", **kw).status == want
    lp = LinearProgram.from_linprog(**kw)
    for solver in (AdaptivePDHG(), ChambollePock(), FixedPCPDHG()):
        res = solver.solve(lp, max_iter=20000, tol=1e-8)
        assert res.status == want, (solver.name, res.status, res.message)
        assert not res.success and res.fun is None and res.nit < 20000
        assert ("infeasible" if want == 2 else "unbounded") in res.message
        ray = res.certificate
        if want == 2:       # Farkas: b^T y + bound terms = 1, A^T y has the right signs, y_ub <= 0
            ok, viol, obj = farkas_ray_test(ray, lp.A, lp.b, lp.lb, lp.ub, lp.n_eq, 1e-8)
            assert ok and obj == pytest.approx(1.0)
        else:               # primal ray: c^T d = -1, A_eq d = 0, A_ub d <= 0, d in the bounds' recession cone
            assert lp.c @ ray == pytest.approx(-1.0)
            assert primal_ray_test(ray, lp.A, lp.c, lp.lb, lp.ub, lp.n_eq, 1e-8)[0]


def test_simple_infeasible_and_unbounded_lps():
    # x1 + x2 = -1, x >= 0: Farkas ray y = -1 (b^T y = 1, A^T y = (-1, -1) <= 0 on x >= 0)
    res = AdaptivePDHG().solve(LinearProgram([1.0, 1.0], np.array([[1.0, 1.0]]), [-1.0]), max_iter=5000)
    assert res.status == 2 and res.certificate[0] < 0
    # min -x1 s.t. x1 - x2 = 0, x >= 0: ray (1, 1)
    res = AdaptivePDHG().solve(LinearProgram([-1.0, 0.0], np.array([[1.0, -1.0]]), [0.0]), max_iter=5000)
    assert res.status == 3
    np.testing.assert_allclose(res.certificate, [1.0, 1.0], atol=1e-6)
    # the old behaviour: no detection -> iteration limit with exploding iterates
    res = AdaptivePDHG().solve(LinearProgram([-1.0, 0.0], np.array([[1.0, -1.0]]), [0.0]), max_iter=500,
                               infeasibility_every=None)
    assert res.status == 1 and res.fun < -10 and "Iteration limit" in res.message


def test_feasible_problems_are_never_declared_infeasible():
    lp = random_assignment(12, seed=1)
    res = AdaptivePDHG().solve(lp, max_iter=20000, tol=1e-9, infeasibility_every=1)
    assert res.status == 0 and res.certificate is None


def test_scipy_like_result_fields():
    res = AdaptivePDHG().solve(tiny_lp(), max_iter=5000, tol=1e-9)
    assert (res.status, res.success, res.fun) == (0, True, pytest.approx(1.0))
    np.testing.assert_allclose(res.x, [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(res.eqlin, [1.0], atol=1e-6)
    capped = AdaptivePDHG().solve(random_assignment(10), max_iter=7, tol=1e-12)
    assert capped.status == 1 and not capped.success and capped.nit == 7 and capped.fun == pytest.approx(
        capped.x @ random_assignment(10).c)
    timed = ChambollePock().solve(random_assignment(30), max_iter=10 ** 7, tol=1e-14, time_limit=0.05)
    assert timed.status == 1 and "Time limit" in timed.message
    # a generic saddle problem has no known objective
    ident = lambda v, rho: v  # noqa: E731
    gen = AdaptivePDHG().solve(SaddleProblem(ident, ident, np.array([[1.0]]), np.array([0.0])), [1.0], [1.0],
                               max_iter=3000, tol=1e-10)
    assert gen.status == 0 and gen.fun is None


def test_nan_inputs_are_clear_errors_not_failed_step_tests():
    A = np.array([[1.0, 1.0]])
    with pytest.raises(ValueError, match="A contains NaN"):
        LinearProgram([1.0, 2.0], np.array([[1.0, np.nan]]), [1.0])
    with pytest.raises(ValueError, match="sparse.*NaN"):
        LinearProgram([1.0, 2.0], sp.csr_matrix(np.array([[1.0, np.nan]])), [1.0])
    with pytest.raises(ValueError, match="A_ub contains NaN"):
        LinearProgram([1.0, 2.0], A_ub=np.array([[np.inf, 1.0]]), b_ub=[1.0])
    with pytest.raises(ValueError, match="b_ub contains NaN"):
        LinearProgram([1.0, 2.0], A_ub=A, b_ub=[np.nan])
    with pytest.raises(ValueError, match="lb contains NaN"):
        LinearProgram([1.0, 2.0], A, [1.0], lb=[0.0, np.nan])
    with pytest.raises(ValueError, match="ub contains NaN"):
        LinearProgram([1.0, 2.0], A, [1.0], ub=np.nan)
    with pytest.raises(ValueError, match="lb contains inf"):
        LinearProgram([1.0, 2.0], A, [1.0], lb=np.inf, ub=np.inf)
    with pytest.raises(ValueError, match="at least one constraint"):
        LinearProgram([1.0, 2.0])
    with pytest.raises(ValueError, match="A_ub and b_ub together"):
        LinearProgram([1.0, 2.0], A_ub=A)
    with pytest.raises(ValueError, match="b_ub has 2 entries"):
        LinearProgram([1.0, 2.0], A_ub=A, b_ub=[1.0, 2.0])
    with pytest.raises(ValueError, match="bounds"):
        LinearProgram.from_linprog([1.0, 2.0], A_ub=A, b_ub=[1.0], bounds=[(0, 1)] * 3)
    # a NaN coming out of a user's prox or operator is named as such (was: "step test still fails")
    nan_prox = lambda v, rho: np.full_like(v, np.nan)  # noqa: E731
    ident = lambda v, rho: v  # noqa: E731
    prob = SaddleProblem(nan_prox, ident, np.eye(2), np.zeros(2))
    for solver in (AdaptivePDHG(), ChambollePock(), PlainPDHG(), FixedPCPDHG()):
        with pytest.raises(ValueError, match="prox_f returned NaN"):
            solver.solve(prob, max_iter=10)
    from scipy.sparse.linalg import LinearOperator
    bad_op = LinearOperator((1, 2), matvec=lambda x: np.array([np.nan]), rmatvec=lambda y: np.zeros(2),
                            dtype=np.float64)
    with pytest.raises(ValueError, match="A @ x returned NaN"):
        AdaptivePDHG().solve(LinearProgram([1.0, 2.0], bad_op, [1.0]), max_iter=10)
    with pytest.raises(ValueError, match="infeasibility_every"):
        AdaptivePDHG().solve(tiny_lp(), infeasibility_every=0)
    with pytest.raises(ValueError, match="infeasibility_tol"):
        AdaptivePDHG().solve(tiny_lp(), infeasibility_tol=float("nan"))


def test_solvers_on_a_zero_operator():
    """A = 0: the saddle problem decouples (x* = clip(-c), for the LP the bounds); Chambolle-Pock's default steps
    were 0.99/||A|| = 0.99/0 (ZeroDivisionError) and the fixed PC-PDHG's r = ||A||/sqrt(nu) = 0."""
    lp = LinearProgram([1.0, -1.0], np.zeros((1, 2)), [0.0], lb=-1.0, ub=2.0)   # min x1 - x2 on the box
    for solver in (ChambollePock(), FixedPCPDHG(), AdaptivePDHG()):
        res = solver.solve(lp, max_iter=200, tol=1e-10)
        assert res.status == 0, (solver.name, res.message)
        np.testing.assert_allclose(res.x, [-1.0, 2.0])
        assert res.fun == pytest.approx(-3.0)
    # Chambolle-Pock with A = 0 on a generic problem: prox-only iterations, to the prox fixed point
    shrink = lambda v, rho: np.sign(v) * np.maximum(np.abs(v) - 1.0 / rho, 0.0)  # noqa: E731  (|x|)
    prob = SaddleProblem(shrink, lambda v, rho: v * rho / (rho + 1.0), np.zeros((2, 3)), np.zeros(2))
    res = ChambollePock().solve(prob, x0=[3.0, -2.0, 0.5], y0=[1.0, 1.0], max_iter=500, tol=1e-12)
    assert res.status == 0
    np.testing.assert_allclose(res.x, 0.0, atol=1e-9)
    np.testing.assert_allclose(res.y, 0.0, atol=1e-9)
