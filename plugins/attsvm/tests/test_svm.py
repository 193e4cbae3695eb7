"""Att-SVM: constraints, optimality (KKT, perturbations, cross-norm), rank, infeasibility, bad input."""

import numpy as np
import pytest

import gradkit_core as gk
from gradkit_attsvm.model import global_tokens, make_data
from gradkit_attsvm.svm import (AttSVM, AttSVMError, AttSVMInfeasible, constraint_matrix, margins, numerical_rank,
                                solve_att_svm)


@pytest.fixture(scope="module")
def prob():
    X, y, Z, v = make_data(6, 8, 10, seed=0)
    ids = global_tokens(X, y, v)
    return X.numpy(), Z.numpy(), ids.numpy()


@pytest.fixture(scope="module")
def fro(prob):
    return solve_att_svm(*prob, norm="fro", return_result=True)


@pytest.fixture(scope="module")
def nuc(prob):
    return solve_att_svm(*prob, norm="nuc", return_result=True)


def _nuc(W):
    return np.linalg.svd(W, compute_uv=False).sum()


@pytest.mark.parametrize("which", ["fro", "nuc"])
def test_constraints_hold_and_are_tight_on_the_support(prob, fro, nuc, which):
    res = fro if which == "fro" else nuc
    X, Z, ids = prob
    assert res.ok and res.W.shape == (10, 10)
    m = margins(res.W, X, Z, ids)
    assert np.allclose(m[np.arange(6), ids], 0.0)
    mask = np.ones_like(m, dtype=bool)
    mask[np.arange(6), ids] = False
    assert m[mask].max() <= -1 + 1e-7, "every non-selected token is at margin >= 1 below the selected one"
    # optimality scales the solution down until a constraint binds: the support is non-empty and tight
    assert m[mask].max() == pytest.approx(-1.0, abs=1e-7)
    assert res.support.any() and np.allclose(m[res.support], -1.0, atol=1e-6)
    # dual multipliers live on the support only (complementary slackness) and are non-negative
    assert (res.duals >= -1e-7).all()
    active = res.duals > 1e-6
    assert active.any() and np.allclose(m[active], -1.0, atol=1e-6)


def test_frobenius_solution_satisfies_kkt_stationarity(prob, fro):
    """min ||w||^2 s.t. M w <= -1:  2 w = -M^T lambda with lambda >= 0 (the SVM's support-vector expansion)."""
    X, Z, ids = prob
    M, pairs = constraint_matrix(X, Z, ids)
    lam = fro.duals[pairs[:, 0], pairs[:, 1]]
    w = -(M.T @ lam) / 2
    assert np.allclose(w.reshape(10, 10), fro.W, atol=1e-6)


@pytest.mark.parametrize("which", ["fro", "nuc"])
def test_no_feasible_perturbation_has_smaller_norm(prob, fro, nuc, which):
    res = fro if which == "fro" else nuc
    norm = np.linalg.norm if which == "fro" else _nuc
    X, Z, ids = prob
    rng = np.random.default_rng(0)
    best = norm(res.W)
    assert best == pytest.approx(res.norm_value, rel=1e-9)
    checked = 0
    for scale in (1e-3, 1e-2, 0.1, 0.5):
        for _ in range(50):
            D = rng.standard_normal(res.W.shape)
            Wp = res.W + scale * np.linalg.norm(res.W) * D / np.linalg.norm(D)
            m = margins(Wp, X, Z, ids)
            m[np.arange(6), ids] = -np.inf
            worst = m.max()
            if worst >= 0:
                continue  # no positive rescaling makes this direction feasible
            Wf = Wp / (-worst)  # the smallest rescaling that satisfies every constraint
            assert margins(Wf, X, Z, ids)[m > -np.inf].max() <= -1 + 1e-9
            assert norm(Wf) >= best - 1e-6
            checked += 1
    assert checked > 100


def test_each_norm_is_minimal_in_its_own_norm(fro, nuc):
    assert np.linalg.norm(fro.W) <= np.linalg.norm(nuc.W) + 1e-7
    assert _nuc(nuc.W) <= _nuc(fro.W) + 1e-6
    assert _nuc(nuc.W) < _nuc(fro.W) - 1e-3, "the two problems have different solutions here"


def test_nuclear_solution_has_lower_rank_than_frobenius():
    X, y, Z, v = make_data(5, 5, 10, seed=0)
    ids = global_tokens(X, y, v)
    Wf, Wn = solve_att_svm(X, Z, ids, "fro"), solve_att_svm(X, Z, ids, "nuc")
    rf, rn = numerical_rank(Wf), numerical_rank(Wn)
    assert rf == 5, "the Frobenius solution spans the n query directions: rank n"
    assert rn < rf


def test_frobenius_solution_agrees_across_backends(prob, fro):
    scs = solve_att_svm(*prob, norm="fro", solver="SCS", eps=1e-9)
    cos = (scs * fro.W).sum() / np.linalg.norm(scs) / np.linalg.norm(fro.W)
    assert cos > 1 - 1e-6


def test_self_attention_queries_come_from_x(prob):
    X, Z, ids = prob
    a = solve_att_svm(X, None, ids, "fro", attn_idx=2)
    b = solve_att_svm(X, X[:, 2], ids, "fro")
    assert np.allclose(a, b, atol=1e-8)


def _infeasible():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    X = np.stack([np.stack([a, b]), np.stack([b, a])])  # example 1 is example 0 with its tokens swapped
    Z = np.array([[1.0, 1.0], [1.0, 1.0]])
    # constraints: (b-a)^T W z <= -1 and (a-b)^T W z <= -1 add up to 0 <= -2
    return X, Z, np.array([0, 0])


def test_infeasible_selection_raises_or_reports_status():
    X, Z, ids = _infeasible()
    for norm in ("fro", "nuc"):
        with pytest.raises(AttSVMInfeasible, match="infeasible"):
            solve_att_svm(X, Z, ids, norm)
        res = AttSVM(norm, raise_on_failure=False).solve((X, Z, ids))
        assert not res.ok and res.W is None and "infeasible" in res.status
    assert issubclass(AttSVMInfeasible, AttSVMError)


def test_solver_is_registered_and_returns_history(prob):
    solver = gk.create("att-svm", kind="solvers", norm="nuc")
    res = solver.solve({"X": prob[0], "Z": prob[1], "opt_idx": prob[2]})
    assert res.ok and res.norm == "nuc" and res.solution is res.W
    assert res.history["num_iters"] > 0 and res.history["wall_time"] > 0


@pytest.mark.parametrize("bad, match", [
    (dict(X=np.zeros((4, 5))), "shape"),
    (dict(X=np.zeros((2, 1, 3)), Z=np.zeros((2, 3)), opt_idx=[0, 0]), "T >= 2"),
    (dict(Z=np.zeros((6, 9))), "Z must have shape"),
    (dict(opt_idx=[0, 1, 2]), "one selected token per example"),
    (dict(opt_idx=[0, 1, 2, 3, 4, 8]), r"\[0, 8\)"),
    (dict(opt_idx=[0, 1, 2, 3, 4, -1]), r"\[0, 8\)"),
    (dict(norm="l1"), "norm must be one of"),
    (dict(Z=None), "attn_idx"),
])
def test_bad_input_is_a_clear_error(prob, bad, match):
    kw = dict(X=prob[0], Z=prob[1], opt_idx=prob[2], norm="fro")
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        solve_att_svm(kw["X"], kw["Z"], kw["opt_idx"], kw["norm"])


def test_non_integer_selection_is_a_type_error(prob):
    with pytest.raises(TypeError, match="integer"):
        solve_att_svm(prob[0], prob[1], [0.5] * 6)
    with pytest.raises(TypeError, match="problem must be"):
        AttSVM().solve(prob[0])


def test_locally_optimal_tokens_definition():
    from gradkit_attsvm.svm import is_locally_optimal

    X, y, Z, v = make_data(6, 8, 10, seed=0)
    glob = global_tokens(X, y, v)
    assert is_locally_optimal(X, Z, glob, y, v), "globally optimal tokens score highest, so they are locally optimal"
    gamma = (y[:, None] * (X @ v)).numpy()
    worst = gamma.argmin(axis=1)          # the lowest-scoring token: every support token beats it
    assert not is_locally_optimal(X, Z, worst, y, v)
    assert not is_locally_optimal(*_infeasible(), np.ones(2), np.ones(2)), "an infeasible selection is not locally optimal"
