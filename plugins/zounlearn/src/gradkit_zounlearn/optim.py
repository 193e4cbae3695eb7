"""The optimizer "grades" of Downgrade to Upgrade (Lang et al., 2025), as torch optimizers.

* :class:`SignSGD`  — compressed first order: ``theta <- theta - lr * Q(m_t; N)`` with ``m_t`` the
  gradient (or its EMA when ``momentum > 0``); ``N = 1`` is the sign.
* :class:`SignAdam` — ``m_t`` is Adam's direction ``m_hat / (sqrt(v_hat) + eps)``; ``N = 1`` gives
  ``sign(m_hat / (sqrt(v_hat) + eps)) = sign(m)``, i.e. exactly Signum (sign of the gradient's EMA with
  ``beta1``), so 1-bit SignAdam keeps no second moment (state: one buffer, half of AdamW's); the
  second moment is kept only for ``bits > 1``, where the magnitudes it normalises survive quantization.
* :class:`ZOOptimizer` — zeroth order: the randomized-smoothing estimate
  ``g = 1/q sum_i [L(theta + mu u_i) - L(theta - mu u_i)] / (2 mu) * u_i`` (central) or
  ``[L(theta + mu u_i) - L(theta)] / mu * u_i`` (forward), with directions ``u_i`` regenerated from a
  per-step seed (MeZO style: parameters are perturbed in place and restored; no copy of ``u`` is
  kept), fed to an SGD or Adam update.  ``step(closure)`` is required; the closure returns the loss
  and must not call ``backward``: it runs under ``torch.no_grad()`` (no autograd graph, ZO's memory
  advantage).  A non-finite loss at any point raises ``ValueError`` after the parameters are put back.
* :class:`HybridFOZO` — alternating first-order and zeroth-order updates, each with its own Adam
  (or SGD) moments (a ZO estimate's coordinates are ~d times larger than a gradient's, so sharing
  Adam's second moment would freeze the FO steps).  The paper's schedule is not confirmed (see README): ``"alternate"``
  (``period`` FO steps, then ``period`` ZO steps; default, a reconstruction), ``"prob"`` (ZO with
  probability ``p_zo``) and ``"split_loss"`` (at every step the FO gradient of ``closure`` and the ZO
  estimate of ``closure_zo`` are both taken at the same point ``theta_t`` and their two updates added).

Zeroth-order variables are the parameters with ``requires_grad=True``: a ZO step never looks at
``.grad``.  Parameters with ``requires_grad=False`` are never perturbed or updated.

Bad input: a NaN / inf / negative ``lr``, ``weight_decay`` or ``eps`` (constructor or
``add_param_group``) is a ``ValueError``; a NaN/inf gradient (first-order steps) or zeroth-order
estimate raises ``ValueError`` before any parameter or state of any group changes.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
from torch.optim import Optimizer

from gradkit_support.baselines import SignSGD, quantize_update  # noqa: F401  (shared baseline, re-exported)

_EST = ("central", "forward")
_DIR = ("gaussian", "rademacher", "sphere")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_group(name: str, group: dict) -> None:
    """Every hyperparameter of a param group: finite and in range (ValueError naming it)."""
    lr, wd = group.get("lr"), group.get("weight_decay", 0.0)
    if not (_finite(lr) and lr >= 0):
        raise ValueError(f"{name}: invalid learning rate lr={lr!r}: expected a finite number >= 0")
    if not (_finite(wd) and wd >= 0):
        raise ValueError(f"{name}: invalid weight_decay {wd!r}: expected a finite number >= 0")
    if "eps" in group and not (_finite(group["eps"]) and group["eps"] >= 0):
        raise ValueError(f"{name}: invalid eps {group['eps']!r}: expected a finite number >= 0")
    if "betas" in group:
        b = tuple(group["betas"])
        if len(b) != 2 or not all(_finite(x) and 0.0 <= x < 1.0 for x in b):
            raise ValueError(f"{name}: invalid betas {group['betas']!r}: each must be in [0, 1)")
    if "bits" in group:
        bits = group["bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"{name}: bits must be an int in [1, 16], got {bits!r}")
    if "mu" in group and not (_finite(group["mu"]) and group["mu"] > 0):
        raise ValueError(f"{name}: mu (perturbation radius) must be a finite number > 0, got {group['mu']!r}")
    if "zo_lr_scale" in group and not (_finite(group["zo_lr_scale"]) and group["zo_lr_scale"] >= 0):
        raise ValueError(f"{name}: zo_lr_scale must be a finite number >= 0, got {group['zo_lr_scale']!r}")


def _check_finite_grads(name: str, param_groups) -> list:
    """``[(group, [(i, p), ...]), ...]`` of the params with a gradient; raises on any NaN/inf gradient
    before anything is changed (every group is checked first)."""
    work = []
    for gi, group in enumerate(param_groups):
        live = []
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{name} does not support sparse gradients")
            if not bool(torch.isfinite(p.grad).all()):
                raise ValueError(f"{name}: non-finite gradient (nan/inf) in param_groups[{gi}]['params'][{i}] "
                                 f"(shape {tuple(p.shape)}); no parameter was changed")
            live.append((i, p))
        work.append((group, live))
    return work


class _Checked:
    """Validate every param group's hyperparameters, in the constructor and in ``add_param_group``."""

    def add_param_group(self, param_group):
        group = dict(self.defaults)
        group.update(param_group)
        _check_group(type(self).__name__, group)
        super().add_param_group(param_group)


class SignAdam(_Checked, Optimizer):
    """Sign-compressed Adam: ``theta <- theta(1 - lr*wd) - lr * Q(m_hat / (sqrt(v_hat) + eps); bits)``.

    With ``bits=1`` this is exactly Signum, ``theta <- theta(1 - lr*wd) - lr * sign(m)`` with
    ``m <- beta1 m + (1 - beta1) g``: the sign ignores the positive normaliser ``sqrt(v_hat) + eps`` and
    the bias correction, so no second moment is kept (state ``step``, ``exp_avg``).  ``bits > 1``
    keeps Adam's ``exp_avg_sq``.  A NaN/inf gradient raises before any parameter or state changes.
    """

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 bits: int = 1):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, bits=bits))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = _check_finite_grads("SignAdam", self.param_groups)
        for group, live in work:
            lr, (b1, b2), eps, wd, bits = group["lr"], group["betas"], group["eps"], group["weight_decay"], group["bits"]
            for _, p in live:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    if bits > 1:
                        state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m = state["exp_avg"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                if bits == 1:
                    d = m  # sign(m_hat / (sqrt(v_hat) + eps)) = sign(m)
                else:
                    v = state["exp_avg_sq"]
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    d = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(quantize_update(d, bits), alpha=-lr)
        return loss


# ---------------------------------------------------------------------------- zeroth order
class _ZOMixin:
    """Seeded-direction zeroth-order gradient estimation shared by :class:`ZOOptimizer` and the hybrid."""

    def _variables(self) -> List[tuple]:
        out = []
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.requires_grad:
                    out.append((gi, p))
        return out

    @staticmethod
    def _direction(p: torch.Tensor, gen: torch.Generator, kind: str) -> torch.Tensor:
        if kind == "rademacher":
            u = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int8).to(p.dtype).mul_(2).sub_(1)
        else:
            u = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        return u.to(p.device)

    def _directions(self, variables, seed: int, kind: str):
        """Yield ``(group_index, p, u)`` for one direction; regenerated identically for the same seed."""
        gen = torch.Generator()
        scale = 1.0
        if kind == "sphere":  # u = sqrt(d) z / ||z|| over all variables jointly (E[u u^T] = I)
            gen.manual_seed(seed)
            sq, d = 0.0, 0
            for _, p in variables:
                z = self._direction(p, gen, "gaussian")
                sq += float(z.double().pow(2).sum())
                d += p.numel()
            scale = math.sqrt(d / sq) if sq > 0 else 1.0
        gen.manual_seed(seed)
        for gi, p in variables:
            u = self._direction(p, gen, "gaussian" if kind == "sphere" else kind)
            if scale != 1.0:
                u.mul_(scale)
            yield gi, p, u

    def _perturb(self, variables, seed: int, kind: str, coef: float) -> None:
        for gi, p, u in self._directions(variables, seed, kind):
            p.add_(u, alpha=coef * self.param_groups[gi]["mu"])

    @staticmethod
    def _eval(closure, grad: bool = False) -> float:
        """The closure's loss; without autograd (``no_grad``) unless ``grad``."""
        try:
            with torch.set_grad_enabled(grad):
                loss = closure()
        except RuntimeError as exc:
            if not grad and "does not require grad" in str(exc):
                raise RuntimeError("a zeroth-order closure runs under torch.no_grad() (no autograd graph) and must "
                                   "only return the loss, without calling backward()") from exc
            raise
        val = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(val):
            raise ValueError(f"the closure returned a non-finite loss ({val}) during a zeroth-order step; the "
                             "parameters were restored")
        return val

    def _zo_estimate(self, closure, step: int, accumulate: Dict[torch.Tensor, torch.Tensor],
                     loss0: Optional[float] = None, grad: bool = False) -> float:
        """Add ``g_hat`` of ``closure`` to ``accumulate[p]``; returns the loss at the unperturbed point.

        If the closure fails (or returns a non-finite loss) at a perturbed point, the perturbation is
        undone before the error propagates."""
        g0 = self.param_groups[0]
        q, est, kind, seed = g0["num_queries"], g0["estimator"], g0["direction"], g0["seed"]
        variables = self._variables()
        if loss0 is None:
            loss0 = self._eval(closure, grad)
        for i in range(q):
            s = (int(seed) * 1_000_003 + step * 1_009 + i) % (2**62)
            offset = 0.0
            try:
                self._perturb(variables, s, kind, +1.0)
                offset = 1.0
                lp = self._eval(closure, grad)
                if est == "central":
                    self._perturb(variables, s, kind, -2.0)
                    offset = -1.0
                    lm = self._eval(closure, grad)
                    self._perturb(variables, s, kind, +1.0)
                    offset = 0.0
                    c = (lp - lm) / 2.0
                else:
                    self._perturb(variables, s, kind, -1.0)
                    offset = 0.0
                    c = lp - loss0
            except BaseException:
                if offset:
                    self._perturb(variables, s, kind, -offset)
                raise
            for gi, p, u in self._directions(variables, s, kind):
                acc = accumulate.get(p)
                if acc is None:
                    acc = accumulate[p] = torch.zeros_like(p)
                acc.add_(u, alpha=c / (q * self.param_groups[gi]["mu"]))
        for acc in accumulate.values():
            if not bool(torch.isfinite(acc).all()):
                raise ValueError("the zeroth-order gradient estimate is not finite (loss differences overflowed); "
                                 "no parameter was changed")
        return loss0


def _check_zo(mu, num_queries, estimator, direction):
    if not (_finite(mu) and mu > 0):
        raise ValueError(f"mu (perturbation radius) must be a finite number > 0, got {mu!r}")
    if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
        raise ValueError(f"num_queries must be a positive int, got {num_queries!r}")
    if estimator not in _EST:
        raise ValueError(f"estimator must be one of {_EST}, got {estimator!r}")
    if direction not in _DIR:
        raise ValueError(f"direction must be one of {_DIR}, got {direction!r}")


def _apply_update(opt: Optimizer, group: dict, p: torch.Tensor, g: torch.Tensor, prefix: str = "",
                  lr_scale: float = 1.0) -> None:
    """SGD or Adam update of ``p`` with gradient (estimate) ``g``; state is created here (lazily).

    ``prefix`` selects a separate set of moment buffers (the hybrid keeps FO and ZO moments apart).
    """
    lr, wd = group["lr"] * lr_scale, group["weight_decay"]
    state = opt.state[p]
    if prefix + "step" not in state:
        state[prefix + "step"] = 0
        if group["base"] == "adam":
            state[prefix + "exp_avg"] = torch.zeros_like(p)
            state[prefix + "exp_avg_sq"] = torch.zeros_like(p)
    state[prefix + "step"] += 1
    if wd:
        p.mul_(1 - lr * wd)
    if group["base"] == "sgd":
        p.add_(g, alpha=-lr)
        return
    b1, b2 = group["betas"]
    t = state[prefix + "step"]
    m, v = state[prefix + "exp_avg"], state[prefix + "exp_avg_sq"]
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
    p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


class ZOOptimizer(_ZOMixin, _Checked, Optimizer):
    """Zeroth-order optimizer (ZO-SGD / ZO-Adam) with seeded random directions.

    ``ZOOptimizer(params, lr=1e-4, mu=1e-3, num_queries=1, estimator="central", direction="gaussian",
    base="adam", betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, seed=0)``.  ``step(closure)``: the
    closure returns the loss (no ``backward`` needed); it is evaluated at ``theta`` (the returned loss)
    and at ``theta +- mu u_i``.  ``mu`` may differ per parameter group; ``num_queries``,
    ``estimator``, ``direction`` and ``seed`` are read from the first group.  The closure runs
    under ``torch.no_grad()``: it returns the loss and must not call ``backward``.
    """

    def __init__(self, params, lr: float = 1e-4, mu: float = 1e-3, num_queries: int = 1, estimator: str = "central",
                 direction: str = "gaussian", base: str = "adam", betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, seed: int = 0):
        _check_zo(mu, num_queries, estimator, direction)
        if base not in ("sgd", "adam"):
            raise ValueError(f"base must be 'sgd' or 'adam', got {base!r}")
        super().__init__(params, dict(lr=lr, mu=mu, num_queries=num_queries, estimator=estimator, direction=direction,
                                      base=base, betas=tuple(betas), eps=eps, weight_decay=weight_decay, seed=seed))

    def _step_count(self) -> int:
        for _, p in self._variables():
            st = self.state.get(p)
            if st:
                return int(st["step"])
        return 0

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        if closure is None:
            raise RuntimeError("ZOOptimizer.step() needs a closure that returns the loss (no backward needed): "
                               "opt.step(lambda: loss_fn(model(x), y))")
        est: Dict[torch.Tensor, torch.Tensor] = {}
        loss = self._zo_estimate(closure, self._step_count(), est)
        for gi, p in self._variables():
            _apply_update(self, self.param_groups[gi], p, est[p])
        return torch.tensor(loss)


class HybridFOZO(_ZOMixin, _Checked, Optimizer):
    """Hybrid first-/zeroth-order optimizer: FO steps and ZO steps, each with its own Adam (or SGD) moments.

    ``step(closure, closure_zo=None)``: on a first-order step ``closure`` is called with autograd (it
    must call ``backward``) and the gradients in ``p.grad`` are used; on a zeroth-order step the
    loss-only closure ``closure_zo`` is evaluated at seeded perturbations under ``torch.no_grad()``
    (without ``closure_zo`` the ZO step evaluates ``closure`` with autograd on, building graphs it
    does not need).  A closure is always required, so every step works whichever kind the schedule
    picks.  With ``schedule="split_loss"`` every step takes the FO gradient of ``closure`` and the ZO
    estimate of ``closure_zo`` at the same point ``theta_t`` (e.g. retain term by FO, forget term by
    ZO) and applies both updates: ``theta_{t+1} = theta_t - u_FO(g_FO(theta_t)) - u_ZO(g_ZO(theta_t))``,
    each ``u`` with its own moments.  ZO steps use ``lr * zo_lr_scale``.  The kind of the last step is
    in ``self.last_step_kind``.  A NaN/inf gradient or estimate raises before anything changes.
    """

    def __init__(self, params, lr: float = 1e-4, mu: float = 1e-3, num_queries: int = 1, estimator: str = "central",
                 direction: str = "gaussian", base: str = "adam", betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, seed: int = 0, schedule: str = "alternate", period: int = 1,
                 p_zo: float = 0.5, zo_lr_scale: float = 1.0):
        _check_zo(mu, num_queries, estimator, direction)
        if base not in ("sgd", "adam"):
            raise ValueError(f"base must be 'sgd' or 'adam', got {base!r}")
        if schedule not in ("alternate", "prob", "split_loss"):
            raise ValueError(f"schedule must be 'alternate', 'prob' or 'split_loss', got {schedule!r}")
        if not isinstance(period, int) or period < 1:
            raise ValueError(f"period must be a positive int, got {period!r}")
        if not (_finite(p_zo) and 0.0 <= p_zo <= 1.0):
            raise ValueError(f"p_zo must be in [0, 1], got {p_zo!r}")
        super().__init__(params, dict(lr=lr, mu=mu, num_queries=num_queries, estimator=estimator, direction=direction,
                                      base=base, betas=tuple(betas), eps=eps, weight_decay=weight_decay, seed=seed,
                                      schedule=schedule, period=period, p_zo=p_zo, zo_lr_scale=zo_lr_scale))
        self.last_step_kind: Optional[str] = None

    def _hybrid_step(self) -> int:
        st = self.state.get("hybrid")
        return int(st["step"]) if st else 0

    def _is_zo(self, t: int) -> bool:
        g0 = self.param_groups[0]
        if g0["schedule"] == "alternate":
            return (t // g0["period"]) % 2 == 1
        if g0["schedule"] == "prob":
            gen = torch.Generator().manual_seed((int(g0["seed"]) * 7_919 + t) % (2**62))
            return bool(torch.rand((), generator=gen) < g0["p_zo"])
        return False

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None,
             closure_zo: Optional[Callable[[], torch.Tensor]] = None):
        t = self._hybrid_step()
        g0 = self.param_groups[0]
        split = g0["schedule"] == "split_loss"
        zo = split or self._is_zo(t)
        if closure is None:
            raise RuntimeError("HybridFOZO.step() needs a closure: closure() computes the loss and calls backward "
                               "(used on first-order steps); pass closure_zo=... for a loss-only closure on "
                               "zeroth-order steps (default: closure)")
        zo_closure = closure_zo if closure_zo is not None else closure
        if split and closure_zo is None:
            raise RuntimeError("schedule='split_loss' needs both closure (FO part) and closure_zo (ZO part)")
        loss = None
        fo_work = None
        if not zo or split:
            with torch.enable_grad():
                loss = closure()
            fo_work = _check_finite_grads("HybridFOZO", self.param_groups)
            grads = {p: p.grad.clone() for _, live in fo_work for _, p in live if p.requires_grad}
        est: Dict[torch.Tensor, torch.Tensor] = {}
        if zo:  # estimated at theta_t, before any update of this step
            lz = self._zo_estimate(zo_closure, t, est, grad=closure_zo is None)
            if loss is None:
                loss = torch.tensor(lz)
        if fo_work is not None:
            for gi, p in self._variables():
                if p in grads:
                    _apply_update(self, self.param_groups[gi], p, grads[p], prefix="")
        if zo:
            for gi, p in self._variables():
                _apply_update(self, self.param_groups[gi], p, est[p], prefix="zo_", lr_scale=g0["zo_lr_scale"])
        self.state["hybrid"] = {"step": t + 1}
        self.last_step_kind = "split" if split else ("zo" if zo else "fo")
        return loss
