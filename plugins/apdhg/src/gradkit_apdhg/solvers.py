"""Adaptive PC-PDHG (average-spectrum step test) and the baselines: Chambolle-Pock, plain PDHG, fixed-step PC-PDHG.

Problem:  min_x max_y theta1(x) - y^T(Ax - b) - theta2(y)   (see problems.SaddleProblem).

Prediction (PDHG / Arrow-Hurwicz step, no extrapolation), with proximal weights r, s:
    x~ = argmin theta1(x) - (y^k)^T A x + r/2 ||x - x^k||^2   = prox_f(x^k + A^T y^k / r, r)
    y~ = argmax -theta2(y) - y^T(A x~ - b) - s/2 ||y - y^k||^2 = prox_g(y^k - (A x~ - b)/s, s)
It satisfies the VI  theta(u) - theta(u~) + (w - w~)^T F(w~) >= (w - w~)^T Q (w^k - w~)  for all w, with
    Q = [[r I, A^T], [0, s I]]   (He & Yuan's prediction-correction framework).

Step test along the displacement xi = w^k - w~ = (u, v) (average spectrum): accept when
    ||A u||^2 <= nu * r * s * ||u||^2 ,
otherwise enlarge r, s and redo the prediction.  It gives xi^T Q xi = r||u||^2 + s||v||^2 + v^T A u
>= (1 - sqrt(nu)/2) ||xi||_H^2 with H = diag(r I, s I), so only the Rayleigh quotient of A^T A along u
matters, never ||A||^2.

Correction (He-Yuan):  w^{k+1} = w^k - alpha_k M xi,  M = H^{-1} Q = [[I, A^T / r], [0, I]] (block upper
triangular), alpha_k = gamma * xi^T Q xi / ||M xi||_H^2, gamma in (0, 2).  With (w^k - w*)^T H M xi >= xi^T Q xi
this gives ||w^{k+1} - w*||_H^2 <= ||w^k - w*||_H^2 - gamma (2 - gamma) alpha*_k xi^T Q xi.

RECONSTRUCTION: the paper's own M, alpha rule and (r, s) update (its section 3) could not be read; the
choices above are the standard He-Yuan ones and are pluggable (``correction=``, ``adapt=``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from .problems import SaddleProblem, operator_norm


# ----------------------------------------------------------------------------- result / bookkeeping
STATUS_MESSAGES = {
    0: "Optimization terminated successfully: relative KKT residual <= tol.",
    1: "Iteration limit reached.",
    2: "The problem is infeasible.",
    3: "The problem is unbounded.",
    4: "Numerical difficulties encountered: the iterates became non-finite.",
}


@dataclass
class SolveResult:
    """What ``solve`` returns, with scipy's ``OptimizeResult`` names: ``x``, ``fun`` (c^T x for an LP; None for
    a generic saddle problem and, as in scipy, for status 2 and 3), ``status`` (0 converged, 1 iteration or time
    limit, 2 infeasible, 3 unbounded, 4 non-finite iterates), ``success`` (status == 0), ``message``, ``nit``.
    Also ``y`` (the dual iterate: scipy's eqlin / ineqlin marginals for an LP, see ``eqlin`` / ``ineqlin``),
    ``certificate`` (for status 2 a Farkas dual ray y with ray objective 1, for status 3 a primal ray d with
    c^T d = -1), ``residual``, ``matvecs``, ``history``, ``backtracks``, ``seconds``."""

    x: np.ndarray
    y: np.ndarray
    converged: bool
    iterations: int
    matvecs: int                      # applications of A and A^T (backtracking included, monitoring excluded)
    residual: float                   # final KKT (LP) or fixed-point residual
    history: Dict[str, List[float]] = field(default_factory=dict)
    backtracks: int = 0
    seconds: float = 0.0
    status: int = 1
    message: str = ""
    fun: Optional[float] = None
    certificate: Optional[np.ndarray] = None
    n_eq: Optional[int] = None

    @property
    def success(self) -> bool:
        return self.status == 0

    @property
    def nit(self) -> int:
        return self.iterations

    @property
    def eqlin(self) -> np.ndarray:
        """Equality-constraint duals (d fun / d b), scipy's ``res.eqlin.marginals``."""
        return self.y[: (len(self.y) if self.n_eq is None else self.n_eq)]

    @property
    def ineqlin(self) -> np.ndarray:
        """Inequality-constraint duals (<= 0), scipy's ``res.ineqlin.marginals``."""
        return self.y[(len(self.y) if self.n_eq is None else self.n_eq):]

    def first_hit(self, tol: float, key: str = "residual"):
        """(iteration, matvecs, seconds) at which history[key] first went <= tol, or None."""
        for k, val in enumerate(self.history[key]):
            if val <= tol:
                return (self.history["iter"][k], self.history["matvecs"][k], self.history["time"][k])
        return None


class _Counter:
    """Counts A / A^T applications and rejects a non-finite result for a finite argument (a LinearOperator that
    holds NaN / inf)."""

    def __init__(self, A):
        self.A, self.n = A, 0

    def mv(self, x):
        self.n += 1
        return _finite_op(self.A.matvec(x), x, "A @ x")

    def rmv(self, y):
        self.n += 1
        return _finite_op(self.A.rmatvec(y), y, "A^T @ y")


def _finite_op(out, arg, what):
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(out)) and np.all(np.isfinite(arg)):
        raise ValueError(f"{what} returned NaN or inf for a finite argument: the operator A contains NaN or inf")
    return out


def _sparsify(v, rel=1e-3):
    m = float(np.max(np.abs(v))) if v.size else 0.0
    return np.where(np.abs(v) >= rel * m, v, 0.0) if m > 0 and np.isfinite(m) else v


def _check_prox(out, arg, name, size):
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    if out.shape[0] != size:
        raise ValueError(f"{name} returned {out.shape[0]} entries, expected {size}")
    if not np.all(np.isfinite(out)) and np.all(np.isfinite(arg)):
        raise ValueError(f"{name} returned NaN or inf for a finite input: check the problem's prox map "
                         "(for an LP: c, lb, ub)")
    return out


def _check_positive(name, val, upper=None):
    if not isinstance(val, (int, float, np.floating, np.integer)) or not math.isfinite(val) or val <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {val!r}")
    if upper is not None and val >= upper:
        raise ValueError(f"{name} must be < {upper}, got {val!r}")


# ----------------------------------------------------------------------------- pluggable strategies
class AverageSpectrumAdapt:
    """(r, s) rule: accept the prediction when rho = ||Au||^2 / (r s ||u||^2) <= nu; on rejection multiply
    r and s by ``grow`` (product by grow^2) and redo the prediction; after an accepted step with
    rho < loose * nu multiply both by ``shrink`` for the next iteration.  The ratio r/s stays r0/s0."""

    def __init__(self, nu=0.9, grow=1.5, shrink=0.7, loose=0.3, r_min=1e-10):
        _check_positive("nu", nu, upper=4.0)
        _check_positive("grow", grow)
        _check_positive("shrink", shrink)
        _check_positive("loose", loose)
        if grow <= 1.0:
            raise ValueError(f"grow must be > 1, got {grow}")
        if shrink >= 1.0:
            raise ValueError(f"shrink must be < 1, got {shrink}")
        if loose >= 1.0:
            raise ValueError(f"loose must be < 1, got {loose}")
        self.nu, self.grow, self.shrink, self.loose, self.r_min = nu, grow, shrink, loose, r_min

    def accept(self, rho: float) -> bool:
        return rho <= self.nu

    def on_reject(self, r, s, rho):
        return r * self.grow, s * self.grow

    def after_accept(self, r, s, rho):
        if rho < self.loose * self.nu and r * self.shrink > self.r_min and s * self.shrink > self.r_min:
            return r * self.shrink, s * self.shrink
        return r, s


class FixedSteps:
    """Constant (r, s); the test is still evaluated and must pass (it does when r s >= ||A||^2 / nu)."""

    def __init__(self, nu=0.9):
        _check_positive("nu", nu, upper=4.0)
        self.nu = nu

    def accept(self, rho):
        return True

    def on_reject(self, r, s, rho):  # pragma: no cover - accept() is always True
        return r, s

    def after_accept(self, r, s, rho):
        return r, s


def rho_along(Au, u, r, s) -> float:
    """Rayleigh quotient of A^T A along u relative to r*s:  ||Au||^2 / (r s ||u||^2)  (0 when u = 0)."""
    uu = float(u @ u)
    if uu == 0.0:
        return 0.0
    return float(Au @ Au) / (r * s * uu)


class HeYuanCorrection:
    """w+ = w - alpha M xi with M = [[I, A^T/r], [0, I]] and alpha = gamma * xi^T Q xi / ||M xi||_H^2
    (``step="optimal"``) or alpha = gamma (``step="fixed"``)."""

    def __init__(self, gamma=1.0, step="optimal"):
        _check_positive("gamma", gamma, upper=2.0)
        if step not in ("optimal", "fixed"):
            raise ValueError(f"step must be 'optimal' or 'fixed', got {step!r}")
        self.gamma, self.step = gamma, step

    def __call__(self, u, v, Au, Atv, r, s):
        """Return (alpha, dx, dy) with x+ = x - alpha dx, y+ = y - alpha dy (dy must be v)."""
        dx = u + Atv / r
        if self.step == "fixed":
            return self.gamma, dx, v
        qxi = xi_Q_xi(u, v, Au, r, s)
        mh = r * float(dx @ dx) + s * float(v @ v)
        if mh == 0.0:
            return 0.0, dx, v
        return self.gamma * qxi / mh, dx, v


def xi_Q_xi(u, v, Au, r, s) -> float:
    """xi^T Q xi for xi = (u, v), Q = [[rI, A^T],[0, sI]]: r||u||^2 + s||v||^2 + v^T A u."""
    return r * float(u @ u) + s * float(v @ v) + float(v @ Au)


# ----------------------------------------------------------------------------- solvers
class _Solver:
    name = "solver"

    def _start(self, problem, x0, y0):
        if not isinstance(problem, SaddleProblem):
            raise TypeError(f"problem must be a gradkit_apdhg SaddleProblem / LinearProgram, got {type(problem).__name__}")
        m, n = problem.shape
        x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64).reshape(-1)
        y = np.zeros(m) if y0 is None else np.array(y0, dtype=np.float64).reshape(-1)
        if x.shape[0] != n:
            raise ValueError(f"x0 has {x.shape[0]} entries, expected {n} (columns of A)")
        if y.shape[0] != m:
            raise ValueError(f"y0 has {y.shape[0]} entries, expected {m} (rows of A)")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("x0 / y0 contain NaN or inf")
        return x, y

    @staticmethod
    def _check_run_args(max_iter, tol, check_every):
        if not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        _check_positive("tol", tol)
        if not isinstance(check_every, (int, np.integer)) or check_every < 1:
            raise ValueError(f"check_every must be a positive int, got {check_every!r}")

    def solve(self, problem: SaddleProblem, x0=None, y0=None, *, max_iter: int = 10000, tol: float = 1e-6,
              f_star: Optional[float] = None, check_every: int = 1, time_limit: Optional[float] = None,
              callback: Optional[Callable] = None, infeasibility_every: Optional[int] = 64,
              infeasibility_tol: float = 1e-8) -> SolveResult:
        """Iterate until the relative KKT residual (LinearProgram) or the relative fixed-point residual
        ||w^{k+1} - w^k|| / max(1, ||w^k||) (generic SaddleProblem) is <= tol (status 0), max_iter or time_limit
        (status 1), a certificate of infeasibility (2) or unboundedness (3) is found, or an iterate is non-finite (4).

        Infeasibility detection (LinearProgram, every ``infeasibility_every`` iterations, None = off), as PDLP does
        it: on an infeasible or unbounded LP the iterates diverge along a ray while the difference of iterates
        converges to it, so three candidates are tested: the last difference w^k - w^{k-1}, the mean difference
        over the last ``infeasibility_every`` iterations (the corrected iterates of apdhg can settle into a 2-cycle
        around the ray, which an even window averages out), the drift (w^k - w^0)/k and, at k = 2^j
        ``infeasibility_every``, the difference of the mean iterates of the two halves (mean(w^{h+1..k}) -
        mean(w^{1..h}))/h, h = k/2, in which the bounded jitter of the adaptive steps cancels like 1/k^2; each
        candidate is also tried with its entries below 1e-3 of its largest entry set to 0.  Only the certificate
        test decides, so a heuristic candidate can delay detection but never make it wrong.  Their y part is tested as a Farkas dual ray, their x part as a primal ray, each with
        relative residual <= ``infeasibility_tol`` (PDLP's default 1e-8).  Monitoring costs are not counted in
        ``matvecs``."""
        self._check_run_args(max_iter, tol, check_every)
        if infeasibility_every is not None and (not isinstance(infeasibility_every, (int, np.integer))
                                                or isinstance(infeasibility_every, bool) or infeasibility_every < 1):
            raise ValueError(f"infeasibility_every must be a positive int or None, got {infeasibility_every!r}")
        _check_positive("infeasibility_tol", infeasibility_tol)
        if time_limit is not None:
            _check_positive("time_limit", time_limit)
        x, y = self._start(problem, x0, y0)
        x_start, y_start = x.copy(), y.copy()
        x_mark, y_mark, k_mark = x_start, y_start, 0
        sum_x, sum_y, snaps = np.zeros_like(x), np.zeros_like(y), {}
        cnt = _Counter(problem.A)
        state = self._init_state(problem, x, y, cnt)
        hist = {k: [] for k in ("iter", "residual", "matvecs", "time", "r", "s", "alpha", "rho")}
        t0 = time.perf_counter()
        res, converged, k = float("inf"), False, 0
        status, message, certificate = 1, STATUS_MESSAGES[1], None
        for k in range(1, max_iter + 1):
            x_old, y_old = x, y
            x, y, info = self._step(problem, x, y, state, cnt)
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                res = float("inf")
                status, message = 4, STATUS_MESSAGES[4] + f" (iteration {k})"
                break
            if infeasibility_every is not None:
                sum_x += x
                sum_y += y
            if infeasibility_every is not None and k % infeasibility_every == 0:
                found = None
                K = k - k_mark
                cands = [(x - x_old, y - y_old), ((x - x_mark) / K, (y - y_mark) / K),
                         ((x - x_start) / k, (y - y_start) / k)]
                h = k // 2
                if h in snaps:   # (mean of iterates h+1..k - mean of 1..h) / h: bounded jitter cancels as 1/k^2
                    sx, sy = snaps.pop(h)
                    cands.append((((sum_x - sx) - sx) / (h * h), ((sum_y - sy) - sy) / (h * h)))
                q = k // infeasibility_every
                if q & (q - 1) == 0:
                    snaps[k] = (sum_x.copy(), sum_y.copy())
                # the same candidates with entries below 1e-3 of their largest entry set to 0: a ray of an LP is
                # often sparse while the adaptive steps leave O(1) jitter on the bounded coordinates
                cands += [(_sparsify(dx), _sparsify(dy)) for dx, dy in cands[1:]]
                for dx, dy in cands:
                    found = problem.infeasibility(dx, dy, infeasibility_tol)
                    if found:
                        break
                x_mark, y_mark, k_mark = x, y, k
                if found:
                    status, certificate, message = found
                    message += f" (iteration {k})"
                    kk = problem.kkt(x, y, f_star=f_star)
                    res = kk if kk is not None else res
                    break
            if k % check_every == 0 or k == max_iter:
                kkt = problem.kkt(x, y, f_star=f_star)
                if kkt is None:
                    dw = math.sqrt(float((x - x_old) @ (x - x_old)) + float((y - y_old) @ (y - y_old)))
                    nw = math.sqrt(float(x_old @ x_old) + float(y_old @ y_old))
                    kkt = dw / max(1.0, nw)
                res = kkt
                hist["iter"].append(k)
                hist["residual"].append(res)
                hist["matvecs"].append(cnt.n)
                hist["time"].append(time.perf_counter() - t0)
                hist["r"].append(info.get("r", float("nan")))
                hist["s"].append(info.get("s", float("nan")))
                hist["alpha"].append(info.get("alpha", float("nan")))
                hist["rho"].append(info.get("rho", float("nan")))
                if callback is not None:
                    callback(k, x, y, res)
                if res <= tol:
                    converged = True
                    status, message = 0, STATUS_MESSAGES[0]
                    break
                if time_limit is not None and time.perf_counter() - t0 > time_limit:
                    message = f"Time limit of {time_limit:g} s reached."
                    break
        fun = problem.objective(x) if status in (0, 1, 4) and np.all(np.isfinite(x)) else None
        return SolveResult(x=x, y=y, converged=converged, iterations=k, matvecs=cnt.n, residual=res,
                           history=hist, backtracks=state.get("backtracks", 0), seconds=time.perf_counter() - t0,
                           status=status, message=message, fun=fun, certificate=certificate,
                           n_eq=getattr(problem, "n_eq", None))

    def _init_state(self, problem, x, y, cnt):
        return {}


def predict(problem, x, y, Aty, r, s, cnt=None):
    """One prediction (PDHG step without extrapolation). Returns (x~, y~, A x~)."""
    mv = cnt.mv if cnt is not None else problem.A.matvec
    v = x + Aty / r
    xt = _check_prox(problem.prox_f(v, r), v, "prox_f", x.shape[0])
    Axt = mv(xt)
    w = y - (Axt - problem.b) / s
    yt = _check_prox(problem.prox_g(w, s), w, "prox_g", y.shape[0])
    return xt, yt, Axt


class AdaptivePDHG(_Solver):
    """Adaptive prediction-correction PDHG with the average-spectrum step test (reconstruction; see module doc).

    Parameters: r0, s0 initial proximal weights (x-step 1/r, y-step 1/s); nu in (0, 4) the test constant
    (the brief uses nu < 1); gamma in (0, 2) the relaxation of the correction; grow > 1, shrink < 1, loose
    the (r, s) rule; ``correction`` = "he_yuan" | "he_yuan_fixed" | callable(u, v, Au, Atv, r, s) ->
    (alpha, dx, dy=v); ``adapt`` = "average_spectrum" | "fixed" | object with accept / on_reject /
    after_accept; max_backtracks per iteration.
    """

    name = "apdhg"

    def __init__(self, r0=1.0, s0=1.0, *, nu=0.9, gamma=1.0, grow=1.5, shrink=0.7, loose=0.3,
                 correction="he_yuan", adapt="average_spectrum", max_backtracks=60):
        _check_positive("r0", r0)
        _check_positive("s0", s0)
        _check_positive("nu", nu, upper=4.0)
        self.r0, self.s0, self.nu = float(r0), float(s0), float(nu)
        if correction == "he_yuan":
            self.correction = HeYuanCorrection(gamma, "optimal")
        elif correction == "he_yuan_fixed":
            self.correction = HeYuanCorrection(gamma, "fixed")
        elif callable(correction):
            self.correction = correction
        else:
            raise ValueError(f"correction must be 'he_yuan', 'he_yuan_fixed' or a callable, got {correction!r}")
        if adapt == "average_spectrum":
            self.adapt = AverageSpectrumAdapt(nu, grow, shrink, loose)
        elif adapt == "fixed":
            self.adapt = FixedSteps(nu)
        elif all(hasattr(adapt, a) for a in ("accept", "on_reject", "after_accept")):
            self.adapt = adapt
        else:
            raise ValueError("adapt must be 'average_spectrum', 'fixed' or an object with accept / on_reject / "
                             f"after_accept, got {adapt!r}")
        if not isinstance(max_backtracks, int) or max_backtracks < 0:
            raise ValueError(f"max_backtracks must be a non-negative int, got {max_backtracks!r}")
        self.max_backtracks = max_backtracks

    def _init_state(self, problem, x, y, cnt):
        return {"r": self.r0, "s": self.s0, "Ax": cnt.mv(x), "Aty": cnt.rmv(y), "backtracks": 0}

    def _step(self, problem, x, y, st, cnt):
        r, s, Ax, Aty = st["r"], st["s"], st["Ax"], st["Aty"]
        for tries in range(self.max_backtracks + 1):
            xt, yt, Axt = predict(problem, x, y, Aty, r, s, cnt)
            u = x - xt
            Au = Ax - Axt
            rho = rho_along(Au, u, r, s)
            if self.adapt.accept(rho):
                break
            if tries == self.max_backtracks:
                raise RuntimeError(f"apdhg: step test ||A u||^2 <= nu r s ||u||^2 still fails after "
                                   f"{self.max_backtracks} backtracks (r={r:.3g}, s={s:.3g}, rho={rho:.3g})")
            r, s = self.adapt.on_reject(r, s, rho)
            st["backtracks"] += 1
        v = y - yt
        Atv = Aty - cnt.rmv(yt)
        alpha, dx, dy = self.correction(u, v, Au, Atv, r, s)
        x_new = x - alpha * dx
        y_new = y - alpha * dy
        st["Aty"] = Aty - alpha * Atv if dy is v else cnt.rmv(y_new)
        st["Ax"] = cnt.mv(x_new)
        info = {"r": r, "s": s, "alpha": alpha, "rho": rho}
        st["r"], st["s"] = self.adapt.after_accept(r, s, rho)
        return x_new, y_new, info


class FixedPCPDHG(AdaptivePDHG):
    """He-Yuan PC-PDHG with fixed max-spectrum steps: r = s = ||A|| / sqrt(nu) (so r s ||u||^2 nu >= ||A u||^2
    for every u) unless r, s are given; same prediction and correction as ``apdhg``."""

    name = "pc-pdhg"

    def __init__(self, r=None, s=None, *, nu=0.9, gamma=1.0, correction="he_yuan", op_norm=None):
        super().__init__(1.0, 1.0, nu=nu, gamma=gamma, correction=correction, adapt="fixed")
        for nm, v in (("r", r), ("s", s)):
            if v is not None:
                _check_positive(nm, v)
        if op_norm is not None and (not isinstance(op_norm, (int, float)) or not math.isfinite(op_norm)
                                    or op_norm < 0):
            raise ValueError(f"op_norm must be a finite non-negative number, got {op_norm!r}")
        self.r_fix, self.s_fix, self.op_norm = r, s, op_norm

    def _init_state(self, problem, x, y, cnt):
        st = super()._init_state(problem, x, y, cnt)
        L = self.op_norm if self.op_norm is not None else operator_norm(problem.A)
        # A = 0: every (r, s) passes the test; r = s = 1 (r = 0 would divide by zero in the prox)
        r_def = L / math.sqrt(self.nu) if L > 0 else 1.0
        st["r"] = float(self.r_fix) if self.r_fix is not None else r_def
        st["s"] = float(self.s_fix) if self.s_fix is not None else r_def
        return st


class PlainPDHG(_Solver):
    """Plain PDHG (Arrow-Hurwicz) with fixed steps: w^{k+1} = w~ (the prediction, no correction)."""

    name = "pdhg"

    def __init__(self, r=1.0, s=1.0):
        _check_positive("r", r)
        _check_positive("s", s)
        self.r, self.s = float(r), float(s)

    def _init_state(self, problem, x, y, cnt):
        return {"Aty": cnt.rmv(y)}

    def _step(self, problem, x, y, st, cnt):
        xt, yt, _ = predict(problem, x, y, st["Aty"], self.r, self.s, cnt)
        st["Aty"] = cnt.rmv(yt)
        return xt, yt, {"r": self.r, "s": self.s, "alpha": 1.0}


class ChambollePock(_Solver):
    """Chambolle-Pock (theta = 1 by default):  x+ = prox_f(x + tau A^T y, 1/tau);  xbar = x+ + theta (x+ - x);
    y+ = prox_g(y - sigma (A xbar - b), 1/sigma).  Requires tau sigma ||A||^2 < 1; default
    tau = sigma = 0.99 / ||A||."""

    name = "chambolle-pock"

    def __init__(self, tau=None, sigma=None, *, theta=1.0, op_norm=None, check_steps=True):
        for nm, v in (("tau", tau), ("sigma", sigma)):
            if v is not None:
                _check_positive(nm, v)
        if not isinstance(theta, (int, float)) or not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must be in [0, 1], got {theta!r}")
        if op_norm is not None and (not isinstance(op_norm, (int, float)) or not math.isfinite(op_norm)
                                    or op_norm < 0):
            raise ValueError(f"op_norm must be a finite non-negative number, got {op_norm!r}")
        self.tau, self.sigma, self.theta, self.op_norm, self.check_steps = tau, sigma, float(theta), op_norm, check_steps

    def _init_state(self, problem, x, y, cnt):
        L = self.op_norm if self.op_norm is not None else operator_norm(problem.A)
        # A = 0 (the problem decouples): any steps satisfy tau*sigma*||A||^2 < 1; default tau = sigma = 1
        tau = self.tau if self.tau is not None else (0.99 / L if L > 0 else 1.0)
        sigma = self.sigma if self.sigma is not None else (0.99 / L if L > 0 else 1.0)
        if self.check_steps and tau * sigma * L * L >= 1.0:
            raise ValueError(f"Chambolle-Pock needs tau*sigma*||A||^2 < 1, got {tau * sigma * L * L:.4g} "
                             f"(tau={tau:.4g}, sigma={sigma:.4g}, ||A||={L:.4g})")
        return {"tau": tau, "sigma": sigma, "Aty": cnt.rmv(y)}

    def _step(self, problem, x, y, st, cnt):
        tau, sigma = st["tau"], st["sigma"]
        v = x + tau * st["Aty"]
        x_new = _check_prox(problem.prox_f(v, 1.0 / tau), v, "prox_f", x.shape[0])
        xbar = x_new + self.theta * (x_new - x)
        w = y - sigma * (cnt.mv(xbar) - problem.b)
        y_new = _check_prox(problem.prox_g(w, 1.0 / sigma), w, "prox_g", y.shape[0])
        st["Aty"] = cnt.rmv(y_new)
        return x_new, y_new, {"r": 1.0 / tau, "s": 1.0 / sigma, "alpha": 1.0}
