"""Saddle-point problems min_x max_y theta1(x) - y^T(Ax - b) - theta2(y), float64, matrix-free.

Prox convention (both maps):  prox(v, rho) = argmin_z theta(z) + (rho/2)||z - v||^2  (constraint sets
are part of theta as indicator functions).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from scipy.sparse import issparse
from scipy.sparse.linalg import LinearOperator, aslinearoperator


class AssignmentOperator(LinearOperator):
    """Incidence operator of the n x n assignment LP, applied as row / column sums.

    x is the row-major flattening of X (n x n).  A x = [X.sum(1); X.sum(0)] (2n), and
    A^T [p; q] = (p_i + q_j)_{ij} flattened (n^2).  ||A||^2 = 2n; trace(A^T A)/n^2 = 2.
    """

    def __init__(self, n: int):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"AssignmentOperator: n must be a positive int, got {n!r}")
        self.n = int(n)
        super().__init__(dtype=np.float64, shape=(2 * self.n, self.n * self.n))

    @property
    def norm(self) -> float:
        return float(np.sqrt(2 * self.n))

    def _matvec(self, x):
        X = np.asarray(x, dtype=np.float64).reshape(self.n, self.n)
        return np.concatenate([X.sum(axis=1), X.sum(axis=0)])

    def _rmatvec(self, y):
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        return (y[: self.n, None] + y[None, self.n:]).reshape(-1)

    def _adjoint(self):
        return _Adjoint(self)

    def todense(self) -> np.ndarray:
        """The explicit 2n x n^2 matrix (for tests / HiGHS)."""
        n = self.n
        M = np.zeros((2 * n, n * n))
        for i in range(n):
            M[i, i * n:(i + 1) * n] = 1.0
            M[n + i, i::n] = 1.0
        return M


class _Adjoint(LinearOperator):
    def __init__(self, op):
        self.op = op
        super().__init__(dtype=np.float64, shape=(op.shape[1], op.shape[0]))

    def _matvec(self, y):
        return self.op._rmatvec(y)

    def _rmatvec(self, x):
        return self.op._matvec(x)


def as_operator(A) -> LinearOperator:
    """Dense array, scipy sparse matrix or LinearOperator -> LinearOperator (float64)."""
    if isinstance(A, LinearOperator):
        return A
    if issparse(A):
        return aslinearoperator(A.astype(np.float64))
    if isinstance(A, np.ndarray):
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D, got shape {A.shape}")
        if not np.all(np.isfinite(A)):
            raise ValueError("A contains NaN or inf")
        return aslinearoperator(np.asarray(A, dtype=np.float64))
    raise TypeError(f"A must be a numpy array, a scipy sparse matrix or a scipy LinearOperator, got {type(A).__name__}")


def operator_norm(A: LinearOperator, iters: int = 200, seed: int = 0) -> float:
    """||A||_2: exact for AssignmentOperator, else power iteration on A^T A."""
    if isinstance(A, AssignmentOperator):
        return A.norm
    v = np.random.default_rng(seed).standard_normal(A.shape[1])
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(iters):
        w = A.rmatvec(A.matvec(v))
        lam_new = float(np.linalg.norm(w))
        if lam_new == 0.0:
            return 0.0
        v = w / lam_new
        if abs(lam_new - lam) <= 1e-10 * lam_new:
            break
        lam = lam_new
    return float(np.sqrt(lam_new))


class SaddleProblem:
    """min_{x} max_{y} theta1(x) - y^T(Ax - b) - theta2(y) given by its two prox maps.

    prox_f(v, r) = argmin_x theta1(x) + r/2 ||x - v||^2,  prox_g(v, s) = argmin_y theta2(y) + s/2 ||y - v||^2.
    """

    def __init__(self, prox_f: Callable, prox_g: Callable, A, b):
        if not callable(prox_f) or not callable(prox_g):
            raise TypeError("prox_f and prox_g must be callables prox(v, rho) -> ndarray")
        self.prox_f, self.prox_g = prox_f, prox_g
        self.A = as_operator(A)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if b.shape[0] != self.A.shape[0]:
            raise ValueError(f"b has {b.shape[0]} entries but A has {self.A.shape[0]} rows")
        if not np.all(np.isfinite(b)):
            raise ValueError("b contains NaN or inf")
        self.b = b

    @property
    def shape(self):
        return self.A.shape

    def kkt(self, x, y, Ax=None, Aty=None, f_star=None) -> Optional[float]:
        """Relative KKT residual, or None when the problem has no LP structure (then solvers use the
        fixed-point residual)."""
        return None


def _identity_prox(v, s):
    return v


class LinearProgram(SaddleProblem):
    """min c^T x s.t. Ax = b, lb <= x <= ub  as the saddle problem with theta1 = c^T x + indicator(bounds),
    theta2 = 0 (y free):  prox_f(v, r) = clip(v - c/r, lb, ub),  prox_g = identity."""

    def __init__(self, c, A, b, lb=0.0, ub=np.inf):
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(c)):
            raise ValueError("c contains NaN or inf")
        op = as_operator(A)
        if c.shape[0] != op.shape[1]:
            raise ValueError(f"c has {c.shape[0]} entries but A has {op.shape[1]} columns")
        self.c = c
        self.lb = np.broadcast_to(np.asarray(lb, dtype=np.float64), c.shape).copy()
        self.ub = np.broadcast_to(np.asarray(ub, dtype=np.float64), c.shape).copy()
        if np.any(self.lb > self.ub):
            raise ValueError("lb must be <= ub componentwise")
        lo, hi = self.lb, self.ub

        def prox_f(v, r):
            return np.clip(v - c / r, lo, hi)

        super().__init__(prox_f, _identity_prox, op, b)

    def kkt(self, x, y, Ax=None, Aty=None, f_star=None) -> float:
        return kkt_residual(x, y, self.A, self.b, self.c, f_star=f_star, lb=self.lb, ub=self.ub,
                            Ax=Ax, Aty=Aty)


def kkt_parts(x, y, A, b, c, *, f_star=None, lb=0.0, ub=np.inf, Ax=None, Aty=None):
    """(primal infeasibility, dual infeasibility, gap), each relative, for min c^T x, Ax = b, lb <= x <= ub.

    primal = sqrt(||Ax - b||^2 + ||x - clip(x, lb, ub)||^2) / ||b||  (||b|| = 0 -> 1); the corrected iterate
             of a prediction-correction method may leave the bounds slightly, which counts here
    dual   = ||violation of the reduced cost z = c - A^T y|| / max(||c||, 1)   (z_i < 0 needs ub_i < inf,
             z_i > 0 needs lb_i > -inf)
    gap    = |c^T x - d(y)| / scale, d(y) = b^T y + sum lb_i z_i^+ + sum ub_i z_i^- (finite bounds),
             scale = |f*| if f* is given (and nonzero) else max(1, |c^T x|).
    """
    A = as_operator(A)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    Ax = A.matvec(x) if Ax is None else Ax
    Aty = A.rmatvec(y) if Aty is None else Aty
    lb = np.broadcast_to(np.asarray(lb, dtype=np.float64), c.shape)
    ub = np.broadcast_to(np.asarray(ub, dtype=np.float64), c.shape)
    z = c - Aty
    zp, zm = np.maximum(z, 0.0), np.minimum(z, 0.0)
    viol = np.where(np.isfinite(ub), 0.0, zm) + np.where(np.isfinite(lb), 0.0, zp)
    d = float(b @ y) + float(np.sum(np.where(np.isfinite(lb), lb, 0.0) * zp)) \
        + float(np.sum(np.where(np.isfinite(ub), ub, 0.0) * zm))
    p = float(c @ x)
    nb = float(np.linalg.norm(b))
    bound_viol = x - np.clip(x, lb, ub)
    primal = math.sqrt(float(np.linalg.norm(Ax - b)) ** 2 + float(bound_viol @ bound_viol)) / (nb if nb > 0 else 1.0)
    dual = float(np.linalg.norm(viol)) / max(float(np.linalg.norm(c)), 1.0)
    scale = abs(f_star) if (f_star is not None and f_star != 0) else max(1.0, abs(p))
    return primal, dual, abs(p - d) / scale


def kkt_residual(x, y, A, b, c, *, f_star=None, lb=0.0, ub=np.inf, Ax=None, Aty=None) -> float:
    """Relative KKT residual  ||Ax - b||/||b|| + |c^T x - d(y)|/|f*| + dual infeasibility/max(||c||,1)
    (the brief's definition plus a dual-feasibility term so an infeasible y cannot fake a zero gap)."""
    return float(sum(kkt_parts(x, y, A, b, c, f_star=f_star, lb=lb, ub=ub, Ax=Ax, Aty=Aty)))


def assignment_problem(C) -> LinearProgram:
    """The assignment LP  min sum C_ij X_ij, row sums = 1, column sums = 1, X >= 0, with a matrix-free
    incidence operator.  x is X flattened row-major; y = [row duals; column duals]."""
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 1:
        raise ValueError(f"assignment_problem: C must be a square n x n matrix, got shape {C.shape}")
    n = C.shape[0]
    lp = LinearProgram(C.reshape(-1), AssignmentOperator(n), np.ones(2 * n), lb=0.0, ub=np.inf)
    lp.n = n
    lp.C = C
    return lp


def random_assignment(n: int, seed: int = 0) -> LinearProgram:
    """C ~ U[0, 1]^{n x n} (the brief's data)."""
    return assignment_problem(np.random.default_rng(seed).random((n, n)))


def hungarian(C):
    """(optimal column of each row, optimal value) from scipy.optimize.linear_sum_assignment."""
    from scipy.optimize import linear_sum_assignment

    C = np.asarray(C, dtype=np.float64)
    rows, cols = linear_sum_assignment(C)
    return cols, float(C[rows, cols].sum())


def rounding_accuracy(x, cols_star) -> float:
    """Fraction of rows whose argmax equals the Hungarian column."""
    n = len(cols_star)
    X = np.asarray(x).reshape(n, n)
    return float(np.mean(X.argmax(axis=1) == np.asarray(cols_star)))
