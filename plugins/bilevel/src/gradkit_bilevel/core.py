"""Building blocks of inexact bilevel optimisation (float64, autograd).

Problem: ``min_θ f(θ) = g(x̂(θ))`` with ``x̂(θ) = argmin_x h(x, θ)``, ``h(·, θ)`` μ-strongly
convex and L-smooth.  Implicit differentiation gives

    ∇f(θ) = −B(x̂)ᵀ A(x̂)⁻¹ ∇g(x̂),   A = ∇²_xx h,   B = ∂²_{θx} h  (∂/∂θ of ∇_x h).

This module holds the pieces every solver here shares: the problem record
(:class:`BilevelProblem`), the lower-level solver (:func:`fista`, stopping on the
certificate ``‖∇_x h(x̃)‖/μ ≤ ε`` which implies ``‖x̃ − x̂‖ ≤ ε``), conjugate gradients
(:func:`cg`, residual ``‖Aq − b‖ ≤ δ``), second-derivative products by autograd
(:class:`SecondOrder`) and the a-posteriori hypergradient error bound
(:class:`OnlineConstants` / :class:`KnownConstants`).  Work is counted in lower-level
gradient evaluations (``ll``), CG Hessian-vector products (``cg``) and the extra
derivative products of the constant estimation (``extra``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import torch

D = torch.float64
Scalar = Union[float, Callable[[torch.Tensor], float]]


def _as_tensor(v, name: str) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float64 expected), got dtype {v.dtype}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return v.detach().to(D).clone()


def _positive(v: float, name: str) -> float:
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {v}")
    return v


def _nonneg(v: float, name: str) -> float:
    v = float(v)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


@dataclass
class Counter:
    """Work counters: lower-level gradient evaluations, CG Hessian-vector products, extra products."""

    ll: int = 0
    cg: int = 0
    extra: int = 0

    @property
    def work(self) -> int:
        return self.ll + self.cg + self.extra


class BilevelProblem:
    """A bilevel problem given by torch callables.

    Args:
        lower: ``h(x, theta) -> scalar``, μ-strongly convex and L-smooth in ``x``.
        upper: ``g(x) -> scalar``, with ``L_g``-Lipschitz gradient.
        theta0, x0: initial hyperparameters and lower-level starting point (float tensors).
        mu, L: strong convexity / smoothness of ``h(·, θ)``; numbers or callables of ``θ``.
        Lg: Lipschitz constant of ``∇g`` (used in the line search and the error bound).
        name: label for tables.
    """

    def __init__(self, lower: Callable, upper: Callable, theta0: torch.Tensor, x0: torch.Tensor, *,
                 mu: Scalar, L: Scalar, Lg: float, name: str = "bilevel"):
        if not callable(lower):
            raise TypeError(f"lower must be a callable h(x, theta) -> scalar tensor, got {type(lower).__name__}")
        if not callable(upper):
            raise TypeError(f"upper must be a callable g(x) -> scalar tensor, got {type(upper).__name__}")
        self.lower, self.upper = lower, upper
        self.theta0 = _as_tensor(theta0, "theta0")
        self.x0 = _as_tensor(x0, "x0")
        for nm, v in (("mu", mu), ("L", L)):
            if not callable(v):
                _positive(v, nm)
        self._mu, self._L = mu, L
        self.Lg = _positive(Lg, "Lg")
        self.name = name
        out = lower(self.x0, self.theta0)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError(f"lower(x0, theta0) must return a scalar tensor, got {type(out).__name__} "
                             f"with shape {getattr(out, 'shape', None)}")
        out = upper(self.x0)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError(f"upper(x0) must return a scalar tensor, got shape {getattr(out, 'shape', None)}")

    def mu(self, theta: torch.Tensor) -> float:
        return _positive(self._mu(theta) if callable(self._mu) else self._mu, "mu(theta)")

    def L(self, theta: torch.Tensor) -> float:
        return _positive(self._L(theta) if callable(self._L) else self._L, "L(theta)")

    # ---- first-order oracles -------------------------------------------------
    def grad_lower_x(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.lower(xr, theta.detach()), xr)
        if not bool(torch.isfinite(g).all()):
            raise ValueError(f"problem {self.name!r}: the lower-level gradient ∇_x h(x, θ) is not finite (NaN/inf) "
                             f"at θ = {theta.detach().flatten().tolist()[:6]}; check lower() for overflow or "
                             "invalid values")
        return g.detach()

    def upper_value_grad(self, x: torch.Tensor):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            v = self.upper(xr)
            (g,) = torch.autograd.grad(v, xr)
        val = float(v.detach())
        if not math.isfinite(val) or not bool(torch.isfinite(g).all()):
            raise ValueError(f"problem {self.name!r}: the upper-level objective g(x) or its gradient is not finite "
                             f"(g = {val}); check upper() for NaN/inf")
        return val, g.detach()

    # ---- reference (not counted) ---------------------------------------------
    def solve_lower(self, theta: torch.Tensor, tol: float = 1e-10, x0: Optional[torch.Tensor] = None,
                    max_iter: int = 200000) -> torch.Tensor:
        """High-accuracy lower-level solution (for evaluation only; its work is not counted)."""
        x, _ = fista(lambda z: self.grad_lower_x(z, theta), self.x0 if x0 is None else x0,
                     self.mu(theta), self.L(theta), tol, max_iter=max_iter)
        return x

    def value(self, theta: torch.Tensor, tol: float = 1e-10) -> float:
        """Reference upper-level value f(θ) = g(x̂(θ)) from a high-accuracy lower solve."""
        return float(self.upper(self.solve_lower(theta, tol)).detach())


# ---------------------------------------------------------------------------------
def fista(grad: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, mu: float, L: float, eps: float,
          max_iter: int = 100000):
    """FISTA for a μ-strongly convex, L-smooth function (constant momentum (√L−√μ)/(√L+√μ)).

    Stops at the first point ``y`` with ``‖∇(y)‖/μ ≤ eps`` and returns it, so ``‖y − x̂‖ ≤ eps``.
    Returns ``(x, n_grad_evals)``.  ``max_iter`` caps the gradient evaluations (the point then
    carries no certificate).
    """
    mu, L, eps = _positive(mu, "mu"), _positive(L, "L"), _positive(eps, "eps")
    if mu > L:
        raise ValueError(f"mu ({mu}) must not exceed L ({L})")
    mom = (math.sqrt(L) - math.sqrt(mu)) / (math.sqrt(L) + math.sqrt(mu))
    x_prev = x = x0.detach().clone()
    for k in range(1, max_iter + 1):
        y = x + mom * (x - x_prev)
        g = grad(y)
        if float(torch.linalg.vector_norm(g)) / mu <= eps:
            return y, k
        x_prev, x = x, y - g / L
    return x, max_iter


def cg(hvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, tol: float, max_iter: int = 10000,
       x0: Optional[torch.Tensor] = None):
    """Conjugate gradients for ``A q = b`` (A symmetric positive definite, given as ``hvp``).

    Stops when the residual norm ``‖b − A q‖ ≤ tol``; the residual is recomputed exactly
    (one extra product) before returning, and iterations resume if rounding left it above tol.
    Returns ``(q, n_products, residual_norm)``.
    """
    tol = _positive(tol, "tol")
    q = torch.zeros_like(b) if x0 is None else x0.detach().clone()
    n = 0
    if x0 is None:
        r = b.clone()
    else:
        r = b - hvp(q)
        n += 1
    while True:
        rr = float(r.flatten() @ r.flatten())
        if math.sqrt(rr) <= tol or n >= max_iter:
            return q, n, math.sqrt(rr)
        d = r.clone()
        while n < max_iter:
            Ad = hvp(d)
            n += 1
            dAd = float(d.flatten() @ Ad.flatten())
            if dAd <= 0:
                raise ValueError("cg: the lower-level Hessian is not positive definite along a search direction "
                                 f"(d'Ad = {dAd:.3e}); the lower level must be strongly convex in x")
            a = rr / dAd
            q = q + a * d
            r = r - a * Ad
            rr_new = float(r.flatten() @ r.flatten())
            if math.sqrt(rr_new) <= tol:
                break
            d = r + (rr_new / rr) * d
            rr = rr_new
        # exact residual check (guards against drift of the recurrence)
        r = b - hvp(q)
        n += 1


class SecondOrder:
    """Second-derivative products of ``h`` at a fixed ``(x, θ)`` by autograd (the graph of ∇_x h is built once).

    ``A(v) = ∇²_xx h · v``, ``BT(v) = (∂²_{θx} h)ᵀ v`` (θ-sized), ``B(u) = ∂²_{θx} h · u`` (x-sized).
    """

    def __init__(self, lower: Callable, x: torch.Tensor, theta: torch.Tensor):
        self.x = x.detach().requires_grad_(True)
        self.theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            out = lower(self.x, self.theta)
            (self.gx,) = torch.autograd.grad(out, self.x, create_graph=True)

    def A(self, v: torch.Tensor) -> torch.Tensor:
        (hv,) = torch.autograd.grad(self.gx, self.x, grad_outputs=v, retain_graph=True)
        return hv.detach()

    def BT(self, v: torch.Tensor) -> torch.Tensor:
        (jv,) = torch.autograd.grad(self.gx, self.theta, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(self.theta).detach() if jv is None else jv.detach()

    def B(self, u: torch.Tensor) -> torch.Tensor:
        # B u = d/dt ∇_x h(x, θ + t u) = ∇_x <∇_θ h, u>  (double-backward trick through BT)
        v = torch.zeros_like(self.x, requires_grad=True)
        with torch.enable_grad():
            (jv,) = torch.autograd.grad(self.gx, self.theta, grad_outputs=v, create_graph=True, allow_unused=True)
            if jv is None:
                return torch.zeros_like(self.x).detach()
            (bu,) = torch.autograd.grad(jv, v, grad_outputs=u, retain_graph=True)
        return bu.detach()


# ---------------------------------------------------------------------------------
class KnownConstants:
    """Error-bound constants given by the user: ``B ≥ ‖∂²_{θx}h‖``, ``L_B`` (Lipschitz constant of
    x ↦ ∂²_{θx}h), ``L_Ainv`` (Lipschitz constant of x ↦ (∇²_xx h)⁻¹)."""

    def __init__(self, B: float, L_B: float = 0.0, L_Ainv: float = 0.0):
        for nm, v in (("B", B), ("L_B", L_B), ("L_Ainv", L_Ainv)):
            if not math.isfinite(float(v)) or float(v) < 0:
                raise ValueError(f"{nm} must be a finite non-negative number, got {v}")
        self.B, self.L_B, self.L_Ainv = float(B), float(L_B), float(L_Ainv)

    def update(self, problem, so: SecondOrder, q, grad_g, mu, eps, counter: Counter) -> None:
        return None


class OnlineConstants(KnownConstants):
    """Online estimates kept as running maxima (they never decrease), as in the official code.

    * ``B``: ``power_steps`` power-method steps on ``BᵀB`` (warm-started vector), each one B·u and one Bᵀ·v product.
    * ``L_B``: ``‖(B(x̃+s·u) − B(x̃))ᵀ q‖ / (s‖q‖)`` for a random unit ``u``.
    * ``L_Ainv``: ``L_A / μ²`` with ``L_A ≈ ‖(A(x̃+s·u) − A(x̃)) q‖ / (s‖q‖)`` (``‖A'⁻¹ − A⁻¹‖ ≤ ‖A'⁻¹‖‖A' − A‖‖A⁻¹‖``).

    Products are counted in ``counter.extra``.  Subclass and override :meth:`update` for another strategy.
    """

    def __init__(self, power_steps: int = 1, perturbation: float = 1e-3, seed: int = 0):
        super().__init__(0.0, 0.0, 0.0)
        if int(power_steps) < 1:
            raise ValueError(f"power_steps must be >= 1, got {power_steps}")
        self.power_steps = int(power_steps)
        self.perturbation = _positive(perturbation, "perturbation")
        self._gen = torch.Generator().manual_seed(int(seed))
        self._u: Optional[torch.Tensor] = None

    def update(self, problem, so: SecondOrder, q, grad_g, mu, eps, counter: Counter) -> None:
        theta, x = so.theta.detach(), so.x.detach()
        if self._u is None or self._u.shape != theta.shape:
            self._u = torch.randn(theta.shape, generator=self._gen, dtype=D)
        u = self._u / torch.linalg.vector_norm(self._u).clamp_min(1e-300)
        for _ in range(self.power_steps):
            Bu = so.B(u)
            w = so.BT(Bu)
            counter.extra += 2
            nb = float(torch.linalg.vector_norm(Bu))
            self.B = max(self.B, nb)
            nw = float(torch.linalg.vector_norm(w))
            if nw == 0:
                break
            u = w / nw
        self._u = u
        nq = float(torch.linalg.vector_norm(q))
        if nq == 0:
            return
        s = self.perturbation * (1.0 + float(torch.linalg.vector_norm(x)))
        d = torch.randn(x.shape, generator=self._gen, dtype=D)
        d = d / torch.linalg.vector_norm(d)
        so2 = SecondOrder(problem.lower, x + s * d, theta)
        dB = so2.BT(q) - so.BT(q)
        dA = so2.A(q) - so.A(q)
        counter.extra += 4
        self.L_B = max(self.L_B, float(torch.linalg.vector_norm(dB)) / (s * nq))
        self.L_Ainv = max(self.L_Ainv, float(torch.linalg.vector_norm(dA)) / (s * nq) / mu ** 2)


def error_bound(consts: KnownConstants, *, mu: float, Lg: float, eps: float, delta: float,
                grad_g_norm: float, q_norm: float) -> float:
    """A-posteriori bound ω ≥ ‖∇f(θ) − p‖ for ``p = −B(x̃)ᵀq̃`` with ``‖x̃ − x̂‖ ≤ ε``, ``‖A(x̃)q̃ − ∇g(x̃)‖ ≤ δ``:

        ∇f − p = (B(x̃) − B(x̂))ᵀ q̃ + B(x̂)ᵀ (q̃ − q̂),
        ‖q̃ − q̂‖ ≤ δ/μ + L_{A⁻¹} ε ‖∇g(x̃)‖ + L_g ε/μ,

    hence ``ω = (B + L_B ε)(δ/μ + L_{A⁻¹}‖∇g(x̃)‖ε + L_g ε/μ) + L_B ε ‖q̃‖``.
    """
    Bx = consts.B + consts.L_B * eps
    return Bx * (delta / mu + consts.L_Ainv * grad_g_norm * eps + Lg * eps / mu) + consts.L_B * eps * q_norm


@dataclass
class Hypergradient:
    p: torch.Tensor            # inexact hypergradient −B(x̃)ᵀq̃
    x: torch.Tensor            # x̃, ‖x̃ − x̂‖ ≤ eps
    q: torch.Tensor            # q̃, ‖A q̃ − ∇g(x̃)‖ ≤ delta
    g: float                   # g(x̃)
    grad_g: torch.Tensor       # ∇g(x̃)
    eps: float
    delta: float
    cg_residual: float
    omega: float = float("nan")


def inexact_hypergradient(problem: BilevelProblem, theta: torch.Tensor, x_init: torch.Tensor, eps: float,
                          delta: float, counter: Optional[Counter] = None, q_init: Optional[torch.Tensor] = None,
                          consts: Optional[KnownConstants] = None, ll_max_iter: int = 100000,
                          cg_max_iter: int = 10000, work_left: Optional[int] = None) -> Hypergradient:
    """One inexact hypergradient: FISTA to ``eps``, CG to residual ``delta``, ``p = −Bᵀq``; ``omega`` if ``consts``.

    ``work_left`` caps the products of this call (FISTA gradients, then CG products with what FISTA left)."""
    counter = counter if counter is not None else Counter()
    mu, L = problem.mu(theta), problem.L(theta)
    if work_left is not None:
        ll_max_iter = max(1, min(ll_max_iter, int(work_left)))
    x, n = fista(lambda z: problem.grad_lower_x(z, theta), x_init, mu, L, eps, max_iter=ll_max_iter)
    counter.ll += n
    if work_left is not None:
        cg_max_iter = max(1, min(cg_max_iter, int(work_left) - n))
    gval, gg = problem.upper_value_grad(x)
    so = SecondOrder(problem.lower, x, theta)
    q, m, res = cg(so.A, gg, delta, max_iter=cg_max_iter, x0=q_init)
    counter.cg += m
    p = -so.BT(q)
    counter.cg += 1
    hg = Hypergradient(p=p, x=x.detach(), q=q.detach(), g=gval, grad_g=gg, eps=eps, delta=delta, cg_residual=res)
    if consts is not None:
        consts.update(problem, so, q, gg, mu, eps, counter)
        hg.omega = error_bound(consts, mu=mu, Lg=problem.Lg, eps=eps, delta=delta,
                               grad_g_norm=float(torch.linalg.vector_norm(gg)),
                               q_norm=float(torch.linalg.vector_norm(q)))
    return hg


@dataclass
class BilevelResult:
    """Solver output: final θ and x̃, and a per-iteration history (lists of equal length)."""

    theta: torch.Tensor
    x: torch.Tensor
    history: Dict[str, List] = field(default_factory=dict)
    counter: Counter = field(default_factory=Counter)
    stop_reason: str = ""

    @property
    def iterations(self) -> int:
        return max(0, len(self.history.get("theta", [])) - 1)


def new_history() -> Dict[str, List]:
    return {k: [] for k in ("theta", "loss", "ll", "cg", "extra", "work", "eps", "delta", "step", "omega",
                            "grad_norm", "accepted")}


def record(hist: Dict[str, List], counter: Counter, *, theta, loss, eps, delta, step, omega=float("nan"),
           grad_norm=float("nan"), accepted=True) -> None:
    hist["theta"].append(theta.detach().clone())
    hist["loss"].append(float(loss))
    hist["ll"].append(counter.ll)
    hist["cg"].append(counter.cg)
    hist["extra"].append(counter.extra)
    hist["work"].append(counter.work)
    hist["eps"].append(float(eps))
    hist["delta"].append(float(delta))
    hist["step"].append(float(step))
    hist["omega"].append(float(omega))
    hist["grad_norm"].append(float(grad_norm))
    hist["accepted"].append(bool(accepted))
