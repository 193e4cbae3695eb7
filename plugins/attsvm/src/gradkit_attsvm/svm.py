"""Att-SVM: the max-margin token-separation problem, solved with cvxpy.

    W^mm = argmin_W ‖W‖    s.t.   (x_{i,t} − x_{i,α_i})ᵀ W z_i ≤ −1    for all i and t ≠ α_i

``‖·‖`` is the Frobenius norm (the W-parametrization's implicit bias) or the nuclear norm
(the (K, Q)-parametrization's).  Each constraint is linear in ``W``:
``(x_{i,t} − x_{i,α_i})ᵀ W z_i = ⟨(x_{i,t} − x_{i,α_i}) z_iᵀ, W⟩``, so all of them form one
matrix inequality ``M vec(W) ≤ −1`` with one row per (i, t ≠ α_i).  Frobenius: a QP
(``min ‖W‖_F²``, same minimiser); nuclear: an SDP.  The selected tokens ``α`` come from
:func:`gradkit_attsvm.model.optimal_tokens` (local or global rule).  A selection for which no
``W`` separates the tokens makes the problem infeasible: that raises :class:`AttSVMInfeasible`
(or is reported in the result's ``status`` with ``raise_on_failure=False``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import attrs
import numpy as np

NORMS = ("fro", "nuc")
OK_STATUSES = ("optimal", "optimal_inaccurate")


class AttSVMError(RuntimeError):
    """The solver did not return a solution (its cvxpy status is in ``.status``)."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


class AttSVMInfeasible(AttSVMError):
    """No W separates the selected tokens with margin 1 (the selection is not SVM-feasible)."""


@attrs.define
class SVMResult:
    """A solved (or failed) Att-SVM.

    ``W`` (d×d ndarray or None), ``status`` (cvxpy's), ``norm``, ``norm_value`` (‖W‖ in that
    norm), ``margins`` ((n, T) array of ``(x_{i,t} − x_{i,α_i})ᵀ W z_i``, 0 at α_i), ``duals``
    ((n, T) Lagrange multipliers, 0 at α_i), ``support`` ((n, T) bool, constraints tight to
    ``support_tol``), ``opt_idx``, ``solver``, ``solve_time`` and ``history`` (the solver's
    own statistics: iterations, setup/solve time).
    """

    W: Optional[np.ndarray]
    status: str
    norm: str
    norm_value: float
    margins: Optional[np.ndarray]
    duals: Optional[np.ndarray]
    support: Optional[np.ndarray]
    opt_idx: np.ndarray
    solver: str
    solve_time: float
    history: Dict[str, Any] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    @property
    def solution(self) -> Optional[np.ndarray]:
        return self.W


def _np(a, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real array, got {type(a).__name__}") from exc
    return arr


def check_problem(X, Z, opt_idx, *, attn_idx: Optional[int] = None):
    """Validate and return float64 ``X`` (n, T, d), ``Z`` (n, d) and integer ``opt_idx`` (n,)."""
    X = _np(X, "X")
    if X.ndim != 3:
        raise ValueError(f"X must have shape (n, T, d) = (examples, tokens, dim), got shape {X.shape}")
    n, T, d = X.shape
    if n < 1 or T < 2 or d < 1:
        raise ValueError(f"X needs n >= 1 examples, T >= 2 tokens and d >= 1 dims, got shape {X.shape}")
    if Z is None:
        if attn_idx is None:
            raise ValueError("give the query tokens Z (n, d) for cross-attention, or attn_idx for self-attention")
        if not isinstance(attn_idx, (int, np.integer)) or isinstance(attn_idx, bool) or not -T <= attn_idx < T:
            raise ValueError(f"attn_idx must be an integer token index in [-{T}, {T}), got {attn_idx!r}")
        Z = X[:, int(attn_idx)]
    else:
        Z = _np(Z, "Z")
        if Z.shape != (n, d):
            raise ValueError(f"Z must have shape (n, d) = {(n, d)} to match X {X.shape}, got {Z.shape}")
    if not (np.isfinite(X).all() and np.isfinite(Z).all()):
        raise ValueError("X and Z must be finite (found NaN or inf)")
    idx = opt_idx.detach().cpu().numpy() if hasattr(opt_idx, "detach") else np.asarray(opt_idx)
    idx = idx.reshape(-1)
    if idx.size != n:
        raise ValueError(f"opt_idx must hold one selected token per example ({n}), got {idx.size}")
    if idx.dtype.kind not in "iu":
        if idx.dtype.kind == "f" and np.all(idx == np.round(idx)):
            idx = idx.astype(np.int64)
        else:
            raise TypeError(f"opt_idx must hold integer token indices, got dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= T:
        bad = int(idx[(idx < 0) | (idx >= T)][0])
        raise ValueError(f"opt_idx entries must be token indices in [0, {T}), got {bad}")
    return X, Z, idx.astype(np.int64)


def constraint_matrix(X: np.ndarray, Z: np.ndarray, opt_idx: np.ndarray):
    """Rows ``vec((x_{i,t} − x_{i,α_i}) z_iᵀ)`` (row-major) for every i and t ≠ α_i.

    Returns ``(M, pairs)``: ``M`` of shape (n(T−1), d²) with ``M vec_C(W) = margins``, and the
    (i, t) pair of each row.
    """
    n, T, d = X.shape
    diff = X - X[np.arange(n), opt_idx][:, None, :]            # (n, T, d)
    rows = np.einsum("ntj,nk->ntjk", diff, Z).reshape(n, T, d * d)
    mask = np.ones((n, T), dtype=bool)
    mask[np.arange(n), opt_idx] = False
    pairs = np.argwhere(mask)
    return rows[mask], pairs


def margins(W, X, Z, opt_idx) -> np.ndarray:
    """``(x_{i,t} − x_{i,α_i})ᵀ W z_i`` for every (i, t), shape (n, T) (0 at the selected token)."""
    X, Z, idx = check_problem(X, Z, opt_idx)
    W = _np(W, "W")
    n, T, d = X.shape
    if W.shape != (d, d):
        raise ValueError(f"W must be d×d = {(d, d)}, got {W.shape}")
    diff = X - X[np.arange(n), idx][:, None, :]
    return np.einsum("ntj,jk,nk->nt", diff, W, Z)


def numerical_rank(W, rtol: float = 1e-6) -> int:
    """Number of singular values above ``rtol · σ_max`` (0 for the zero matrix)."""
    s = np.linalg.svd(_np(W, "W"), compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0
    return int((s > rtol * s[0]).sum())


def is_locally_optimal(X, Z, opt_idx, y, v, *, norm: str = "fro", W=None, support_tol: float = 1e-6,
                       solver: Optional[str] = "CLARABEL") -> bool:
    """The paper's locally-optimal tokens (Def. 2): the Att-SVM for ``opt_idx`` is feasible and every
    *support* token (margin exactly −1 under ``W^mm``) scores strictly lower than the selected one,
    ``γ_{i,t} < γ_{i,α_i}`` with ``γ_{i,t} = y_i · vᵀ x_{i,t}``.  ``W`` may pass a solved ``W^mm``.
    Returns False for an infeasible selection.
    """
    X, Z, idx = check_problem(X, Z, opt_idx)
    n, T, d = X.shape
    y = _np(y, "y").reshape(-1)
    v = _np(v, "v").reshape(-1)
    if y.size != n or v.size != d:
        raise ValueError(f"y needs {n} labels and v {d} entries, got {y.size} and {v.size}")
    if W is None:
        res = AttSVM(norm, solver, raise_on_failure=False).solve((X, Z, idx))
        if not res.ok:
            return False
        W = res.W
    m = margins(W, X, Z, idx)
    gamma = y[:, None] * (X @ v)
    sel = gamma[np.arange(n), idx][:, None]
    support = np.abs(m + 1.0) <= support_tol
    return bool(np.all(gamma[support] < sel.repeat(T, axis=1)[support]))


class AttSVM:
    """Solver ``att-svm``: ``AttSVM(norm="fro", solver="CLARABEL").solve((X, Z, opt_idx))``.

    ``norm``: ``"fro"`` (W-parametrization) or ``"nuc"`` ((K, Q)-parametrization).
    ``solver``: a cvxpy solver name (``CLARABEL`` default; ``SCS`` works for both norms,
    ``OSQP`` for ``fro``).  ``solver_options`` go to ``cvxpy.Problem.solve``.
    ``raise_on_failure``: raise :class:`AttSVMInfeasible` / :class:`AttSVMError` when no solution
    comes back (default), or return a result with ``W=None`` and the status.
    ``support_tol``: a constraint whose margin is within this of −1 counts as a support constraint.
    """

    def __init__(self, norm: str = "fro", solver: Optional[str] = "CLARABEL", *, solver_options=None,
                 raise_on_failure: bool = True, support_tol: float = 1e-6):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS} (Frobenius or nuclear), got {norm!r}")
        self.norm = norm
        self.solver = solver
        self.solver_options = dict(solver_options or {})
        self.raise_on_failure = bool(raise_on_failure)
        self.support_tol = float(support_tol)

    def solve(self, problem, *, attn_idx: Optional[int] = None) -> SVMResult:
        """``problem``: a tuple ``(X, Z, opt_idx)`` or a dict with those keys (``Z`` may be None with
        ``attn_idx`` for self-attention)."""
        if isinstance(problem, dict):
            missing = {"X", "opt_idx"} - set(problem)
            if missing:
                raise ValueError(f"problem dict lacks {sorted(missing)}; expected keys X, Z, opt_idx")
            X, Z, opt_idx = problem["X"], problem.get("Z"), problem["opt_idx"]
            attn_idx = problem.get("attn_idx", attn_idx)
        elif isinstance(problem, (tuple, list)) and len(problem) == 3:
            X, Z, opt_idx = problem
        else:
            raise TypeError("problem must be (X, Z, opt_idx) or a dict with keys X, Z, opt_idx")
        return self._solve(X, Z, opt_idx, attn_idx)

    def _solve(self, X, Z, opt_idx, attn_idx) -> SVMResult:
        import cvxpy as cp

        X, Z, idx = check_problem(X, Z, opt_idx, attn_idx=attn_idx)
        n, T, d = X.shape
        M, pairs = constraint_matrix(X, Z, idx)
        W = cp.Variable((d, d))
        objective = cp.sum_squares(W) if self.norm == "fro" else cp.normNuc(W)
        cons = [M @ cp.vec(W, order="C") <= -1]
        prob = cp.Problem(cp.Minimize(objective), cons)
        t0 = time.perf_counter()
        try:
            prob.solve(solver=self.solver, **self.solver_options)
        except cp.error.SolverError as exc:
            if self.raise_on_failure:
                raise AttSVMError(f"cvxpy solver {self.solver} failed on the Att-SVM ({self.norm}): {exc}",
                                  "solver_error") from exc
            return self._failed("solver_error", idx, time.perf_counter() - t0)
        elapsed = time.perf_counter() - t0
        status = str(prob.status)
        if status not in OK_STATUSES or W.value is None:
            if self.raise_on_failure:
                cls = AttSVMInfeasible if "infeasible" in status else AttSVMError
                msg = (f"Att-SVM ({self.norm}) is {status}: no W gives every selected token margin >= 1 over the "
                       f"others for opt_idx={idx.tolist()}" if "infeasible" in status else
                       f"Att-SVM ({self.norm}) solve returned status {status!r} with solver {self.solver}")
                raise cls(msg, status)
            return self._failed(status, idx, elapsed)
        Wv = np.array(W.value, dtype=np.float64)
        marg = np.zeros((n, T))
        marg[pairs[:, 0], pairs[:, 1]] = M @ Wv.reshape(-1)
        duals = np.zeros((n, T))
        dv = cons[0].dual_value
        if dv is not None:
            duals[pairs[:, 0], pairs[:, 1]] = np.asarray(dv).reshape(-1)
        support = np.zeros((n, T), dtype=bool)
        support[pairs[:, 0], pairs[:, 1]] = np.abs(M @ Wv.reshape(-1) + 1.0) <= self.support_tol
        value = float(np.linalg.norm(Wv)) if self.norm == "fro" else float(np.linalg.svd(Wv, compute_uv=False).sum())
        stats = prob.solver_stats
        history = {"num_iters": getattr(stats, "num_iters", None), "solve_time": getattr(stats, "solve_time", None),
                   "setup_time": getattr(stats, "setup_time", None), "wall_time": elapsed}
        return SVMResult(Wv, status, self.norm, value, marg, duals, support, idx,
                         str(stats.solver_name if stats is not None else self.solver), elapsed, history)

    def _failed(self, status, idx, elapsed) -> SVMResult:
        return SVMResult(None, status, self.norm, float("nan"), None, None, None, idx, str(self.solver), elapsed,
                         {"wall_time": elapsed})


def solve_att_svm(X, Z, opt_idx, norm: str = "fro", *, attn_idx: Optional[int] = None,
                  solver: Optional[str] = "CLARABEL", return_result: bool = False, **solver_options):
    """Solve the Att-SVM for the selected tokens ``opt_idx`` and return ``W^mm`` (d×d ndarray).

    ``norm="fro"`` for the W-parametrization, ``"nuc"`` for (K, Q).  ``Z=None`` with ``attn_idx``
    solves the self-attention version (``z_i = x_{i, attn_idx}``).  Raises
    :class:`AttSVMInfeasible` when no W separates the selection, :class:`AttSVMError` when the
    solver fails.  ``return_result=True`` returns the full :class:`SVMResult`.
    """
    res = AttSVM(norm, solver, solver_options=solver_options).solve((X, Z, opt_idx), attn_idx=attn_idx)
    return res if return_result else res.W
