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


def as_operator(A, name: str = "A") -> LinearOperator:
    """Dense array, scipy sparse matrix or LinearOperator -> LinearOperator (float64).  Dense and sparse inputs must
    be finite (a LinearOperator is checked when applied: the solvers reject a non-finite A x for a finite x)."""
    if isinstance(A, LinearOperator):
        if len(A.shape) != 2 or min(A.shape) < 1:
            raise ValueError(f"{name} must have at least one row and one column, got shape {A.shape}")
        return A
    if issparse(A):
        if A.ndim != 2 or min(A.shape) < 1:
            raise ValueError(f"{name} must be 2-D with at least one row and column, got shape {A.shape}")
        A = A.astype(np.float64)
        if not np.all(np.isfinite(A.data)):
            raise ValueError(f"{name} (sparse) contains NaN or inf")
        return aslinearoperator(A)
    if isinstance(A, np.ndarray):
        if A.ndim != 2 or min(A.shape) < 1:
            raise ValueError(f"{name} must be 2-D with at least one row and column, got shape {A.shape}")
        if not np.issubdtype(A.dtype, np.number) or np.iscomplexobj(A):
            raise TypeError(f"{name} must be a real numeric array, got dtype {A.dtype}")
        if not np.all(np.isfinite(A)):
            raise ValueError(f"{name} contains NaN or inf")
        return aslinearoperator(np.asarray(A, dtype=np.float64))
    raise TypeError(f"{name} must be a numpy array, a scipy sparse matrix or a scipy LinearOperator, "
                    f"got {type(A).__name__}")


class StackedOperator(LinearOperator):
    """[A_eq; A_ub] applied block-wise (either block may be None)."""

    def __init__(self, A_eq: Optional[LinearOperator], A_ub: Optional[LinearOperator]):
        blocks = [B for B in (A_eq, A_ub) if B is not None]
        self.blocks = blocks
        self.rows = [B.shape[0] for B in blocks]
        super().__init__(dtype=np.float64, shape=(sum(self.rows), blocks[0].shape[1]))

    def _matvec(self, x):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return np.concatenate([np.asarray(B.matvec(x), dtype=np.float64).reshape(-1) for B in self.blocks])

    def _rmatvec(self, y):
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        out, i = 0.0, 0
        for B, m in zip(self.blocks, self.rows):
            out = out + np.asarray(B.rmatvec(y[i:i + m]), dtype=np.float64).reshape(-1)
            i += m
        return out

    def _adjoint(self):
        return _Adjoint(self)


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
        b = _vector(b, "b")
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

    def objective(self, x) -> Optional[float]:
        """c^T x for an LP; None for a generic saddle problem (its objective is not known here)."""
        return None

    def infeasibility(self, dx, dy, tol):
        """(status, certificate, message) if (dx, dy) certifies infeasibility / unboundedness, else None.
        Generic saddle problems have no certificate test."""
        return None


def _vector(v, name):
    try:
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real vector, got {type(v).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _bounds(val, name, n, forbidden):
    try:
        arr = np.broadcast_to(np.asarray(val, dtype=np.float64), (n,)).copy()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a scalar or a vector of {n} entries, got {np.shape(val)}") from None
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN (use -inf / inf for a missing bound)")
    if np.any(arr == forbidden):
        raise ValueError(f"{name} contains {forbidden} (no x satisfies it)")
    return arr


def _identity_prox(v, s):
    return v


class LinearProgram(SaddleProblem):
    """min c^T x  s.t.  A x = b,  A_ub x <= b_ub,  lb <= x <= ub   as the saddle problem
    min_x max_y  c^T x + indicator(bounds)(x) - y^T(A_all x - b_all) - indicator(y_ub <= 0)(y)
    with A_all = [A; A_ub], b_all = [b; b_ub], y = [y_eq; y_ub]:
    prox_f(v, r) = clip(v - c/r, lb, ub),  prox_g(v, s) = [v_eq; min(v_ub, 0)].

    ``A``/``b`` (equalities) and ``A_ub``/``b_ub`` (inequalities) may each be omitted, not both.  Each matrix may be
    dense, scipy sparse or a LinearOperator.  ``y`` of a solution is scipy's ``eqlin``/``ineqlin`` marginals
    (d fun / d b): ``y_eq = y[:n_eq]``, ``y_ub = y[n_eq:] <= 0``.  :meth:`from_linprog` takes scipy's argument names.
    """

    def __init__(self, c, A=None, b=None, lb=0.0, ub=np.inf, *, A_ub=None, b_ub=None):
        c = _vector(c, "c")
        n = c.shape[0]
        if n < 1:
            raise ValueError("c must have at least one entry")
        if (A is None) != (b is None):
            raise ValueError("pass A and b together (equality constraints A x = b), or neither")
        if (A_ub is None) != (b_ub is None):
            raise ValueError("pass A_ub and b_ub together (inequality constraints A_ub x <= b_ub), or neither")
        if A is None and A_ub is None:
            raise ValueError("a LinearProgram needs at least one constraint block: A/b (equalities) or A_ub/b_ub")
        ops, rhs = {}, {}
        for key, M, v in (("A", A, b), ("A_ub", A_ub, b_ub)):
            if M is None:
                continue
            op = as_operator(M, key)
            vec = _vector(v, "b" if key == "A" else "b_ub")
            if op.shape[1] != n:
                raise ValueError(f"c has {n} entries but {key} has {op.shape[1]} columns")
            if vec.shape[0] != op.shape[0]:
                raise ValueError(f"{'b' if key == 'A' else 'b_ub'} has {vec.shape[0]} entries but {key} has "
                                 f"{op.shape[0]} rows")
            ops[key], rhs[key] = op, vec
        self.c = c
        self.lb = _bounds(lb, "lb", n, np.inf)
        self.ub = _bounds(ub, "ub", n, -np.inf)
        if np.any(self.lb > self.ub):
            raise ValueError("lb must be <= ub componentwise")
        self.A_eq, self.b_eq = ops.get("A"), rhs.get("A")
        self.A_ub, self.b_ub = ops.get("A_ub"), rhs.get("A_ub")
        self.n_eq = 0 if self.A_eq is None else self.A_eq.shape[0]
        self.n_ub = 0 if self.A_ub is None else self.A_ub.shape[0]
        op = self.A_eq if self.A_ub is None else (self.A_ub if self.A_eq is None
                                                   else StackedOperator(self.A_eq, self.A_ub))
        b_all = np.concatenate([rhs[k] for k in ("A", "A_ub") if k in rhs])
        lo, hi, n_eq = self.lb, self.ub, self.n_eq

        def prox_f(v, r):
            return np.clip(v - c / r, lo, hi)

        if self.n_ub == 0:
            prox_g = _identity_prox
        else:
            def prox_g(v, s):
                out = np.array(v, dtype=np.float64)
                out[n_eq:] = np.minimum(out[n_eq:], 0.0)
                return out

        super().__init__(prox_f, prox_g, op, b_all)

    @classmethod
    def from_linprog(cls, c, A_ub=None, b_ub=None, A_eq=None, b_eq=None, bounds=(0, None)):
        """scipy.optimize.linprog's argument names (matrices may be nested lists, as in scipy); ``bounds`` = one
        (lo, hi) pair for all variables or one per variable, None meaning unbounded."""
        c = _vector(c, "c")
        n = c.shape[0]
        b = bounds
        if isinstance(b, tuple) and len(b) == 2 and not any(isinstance(e, (tuple, list)) for e in b):
            pairs = [b] * n
        else:
            pairs = list(b)
            if len(pairs) != n:
                raise ValueError(f"bounds must be one (lo, hi) pair or {n} pairs, got {len(pairs)}")
        try:
            lb = np.array([-np.inf if p[0] is None else p[0] for p in pairs], dtype=np.float64)
            ub = np.array([np.inf if p[1] is None else p[1] for p in pairs], dtype=np.float64)
        except (TypeError, IndexError):
            raise ValueError(f"bounds must be (lo, hi) pairs with None for no bound, got {bounds!r}") from None
        def mat(M):
            return M if (M is None or issparse(M) or isinstance(M, LinearOperator)) else np.asarray(M, dtype=np.float64)

        return cls(c, mat(A_eq), b_eq, lb, ub, A_ub=mat(A_ub), b_ub=b_ub)

    def kkt(self, x, y, Ax=None, Aty=None, f_star=None) -> float:
        return kkt_residual(x, y, self.A, self.b, self.c, f_star=f_star, lb=self.lb, ub=self.ub,
                            Ax=Ax, Aty=Aty, n_eq=self.n_eq)

    def objective(self, x) -> float:
        return float(self.c @ x)

    def infeasibility(self, dx, dy, tol):
        """PDLP-style certificate test on a candidate ray (the difference of iterates, or the drift per
        iteration): ``dy`` as a Farkas dual ray (primal infeasible, status 2), then ``dx`` as a primal ray
        (dual infeasible: unbounded if feasible, status 3).  Returns (status, normalized ray, message) or None."""
        ok, viol, obj = farkas_ray_test(dy, self.A, self.b, self.lb, self.ub, self.n_eq, tol)
        if ok:
            return (2, dy / obj, f"The problem is infeasible: Farkas dual ray found (ray objective b^T y + bound "
                                  f"terms normalised to 1, residual {viol:.2e} <= {tol:g}).")
        ok, viol, obj = primal_ray_test(dx, self.A, self.c, self.lb, self.ub, self.n_eq, tol)
        if ok:
            return (3, dx / obj, f"The problem is unbounded (dual infeasible): primal ray d with c^T d = -1, "
                                 f"residual {viol:.2e} <= {tol:g}; if the problem is also primal infeasible it is "
                                 "infeasible and dual infeasible.")
        return None


def _ray_norm(parts):
    return math.sqrt(sum(float(p @ p) for p in parts))


def farkas_ray_test(y, A, b, lb, ub, n_eq, tol):
    """y certifies primal infeasibility (Farkas) when, with z = -A^T y, the ray objective
    b^T y + sum_{lb finite} lb z^+ + sum_{ub finite} ub z^- is > 0 and the ray's dual-feasibility residual
    (z^+ on columns without a finite lb, z^- on columns without a finite ub, y_ub^+) is <= tol times it.
    Returns (certified, residual / objective, objective)."""
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y)) or not np.any(y):
        return False, float("inf"), 0.0
    z = -np.asarray(A.rmatvec(y), dtype=np.float64)
    zp, zm = np.maximum(z, 0.0), np.minimum(z, 0.0)
    flb, fub = np.isfinite(lb), np.isfinite(ub)
    obj = float(b @ y) + float(np.sum(np.where(flb, lb, 0.0) * zp)) + float(np.sum(np.where(fub, ub, 0.0) * zm))
    if not obj > 0:
        return False, float("inf"), obj
    viol = _ray_norm([np.where(flb, 0.0, zp), np.where(fub, 0.0, zm), np.maximum(y[n_eq:], 0.0)]) / obj
    return viol <= tol, viol, obj


def primal_ray_test(d, A, c, lb, ub, n_eq, tol):
    """d certifies dual infeasibility when c^T d < 0 and its residual (A_eq d, (A_ub d)^+, d^- on columns with a
    finite lb, d^+ on columns with a finite ub) is <= tol times -c^T d.  Returns (certified, residual / -c^T d,
    -c^T d)."""
    d = np.asarray(d, dtype=np.float64)
    if not np.all(np.isfinite(d)) or not np.any(d):
        return False, float("inf"), 0.0
    obj = -float(c @ d)
    if not obj > 0:
        return False, float("inf"), obj
    Ad = np.asarray(A.matvec(d), dtype=np.float64)
    viol = _ray_norm([Ad[:n_eq], np.maximum(Ad[n_eq:], 0.0), np.where(np.isfinite(lb), np.minimum(d, 0.0), 0.0),
                      np.where(np.isfinite(ub), np.maximum(d, 0.0), 0.0)]) / obj
    return viol <= tol, viol, obj


def kkt_parts(x, y, A, b, c, *, f_star=None, lb=0.0, ub=np.inf, Ax=None, Aty=None, n_eq=None):
    """(primal infeasibility, dual infeasibility, gap), each relative, for min c^T x, (Ax)_i = b_i for the first
    ``n_eq`` rows and (Ax)_i <= b_i for the rest (``n_eq=None``: all rows are equalities), lb <= x <= ub.

    primal = sqrt(||(Ax - b)_eq||^2 + ||(Ax - b)_ub^+||^2 + ||x - clip(x, lb, ub)||^2) / ||b||  (||b|| = 0 -> 1);
             the corrected iterate of a prediction-correction method may leave the bounds slightly, which counts
    dual   = ||violation of the reduced cost z = c - A^T y, and of y_ub <= 0|| / max(||c||, 1)   (z_i < 0 needs
             ub_i < inf, z_i > 0 needs lb_i > -inf)
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
    m = b.shape[0]
    n_eq = m if n_eq is None else int(n_eq)
    z = c - Aty
    zp, zm = np.maximum(z, 0.0), np.minimum(z, 0.0)
    viol = np.concatenate([np.where(np.isfinite(ub), 0.0, zm) + np.where(np.isfinite(lb), 0.0, zp),
                           np.maximum(y[n_eq:], 0.0)])
    d = float(b @ y) + float(np.sum(np.where(np.isfinite(lb), lb, 0.0) * zp)) \
        + float(np.sum(np.where(np.isfinite(ub), ub, 0.0) * zm))
    p = float(c @ x)
    nb = float(np.linalg.norm(b))
    bound_viol = x - np.clip(x, lb, ub)
    r = Ax - b
    r = np.concatenate([r[:n_eq], np.maximum(r[n_eq:], 0.0)])
    primal = math.sqrt(float(r @ r) + float(bound_viol @ bound_viol)) / (nb if nb > 0 else 1.0)
    dual = float(np.linalg.norm(viol)) / max(float(np.linalg.norm(c)), 1.0)
    scale = abs(f_star) if (f_star is not None and f_star != 0) else max(1.0, abs(p))
    return primal, dual, abs(p - d) / scale


def kkt_residual(x, y, A, b, c, *, f_star=None, lb=0.0, ub=np.inf, Ax=None, Aty=None, n_eq=None) -> float:
    """Relative KKT residual  ||Ax - b||/||b|| + |c^T x - d(y)|/|f*| + dual infeasibility/max(||c||,1)
    (the brief's definition plus a dual-feasibility term so an infeasible y cannot fake a zero gap)."""
    return float(sum(kkt_parts(x, y, A, b, c, f_star=f_star, lb=lb, ub=ub, Ax=Ax, Aty=Aty, n_eq=n_eq)))


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
