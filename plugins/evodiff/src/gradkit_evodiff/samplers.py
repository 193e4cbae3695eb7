"""Diffusion ODE samplers: EVODiff and the baselines it is compared with (DDIM, DPM-Solver++(2M/3M), EDM-Heun).

Common interface (gradkit kind ``samplers``)::

    sampler = create("evodiff", model, schedule, prediction="noise")
    x0 = sampler.sample(x_T, nfe)          # nfe = model-evaluation budget
    sampler.nfe_used                       # model evaluations actually made (== nfe except Heun with even nfe)

``model(x, t)`` takes ``x`` of shape (B, ...) and ``t`` of shape (B,) (times of the schedule; for
:class:`~gradkit_evodiff.schedules.EDMSchedule` t is the noise level sigma) and returns a tensor shaped like ``x``:
the noise prediction eps(x, t) (``prediction="noise"``, default, as in the official code) or the data prediction
x0(x, t) (``prediction="data"``).  Every sampler works internally with the data prediction
x0 = (x - sigma_t * eps) / alpha_t.

All multistep samplers use ``denoise_to_zero=True`` by default: ``steps = nfe - 1`` solver steps from ``t_max`` to
``t_min`` and a final data prediction at ``t_min`` (one extra evaluation), as in the official EVODiff driver.
"""

from __future__ import annotations

import abc
import math
from typing import Callable, Optional

import torch

from gradkit_core.checks import number

from .schedules import EDMSchedule, SKIP_TYPES, time_grid


def _f(v) -> float:
    return float(v)


class SamplerDivergedError(FloatingPointError):
    """An ODE iterate (or the data prediction computed from a finite model output) became non-finite (nan/inf);
    the sampler stops instead of returning non-finite samples.  ``step`` is the solver step, ``t`` its time."""

    def __init__(self, msg, step=None, t=None):
        super().__init__(msg)
        self.step, self.t = step, t


def _finite_number(name, val, *, low=None, high=None, low_open=False):
    """A finite real hyperparameter in its range (:func:`gradkit_core.checks.number`)."""
    return number(name, val, low=low, high=high, low_open=low_open)


class DiffusionSampler(abc.ABC):
    """Base class: model wrapping, input checks, NFE accounting, time grid."""

    name = "base"

    def __init__(self, model: Callable, schedule=None, *, prediction: str = "noise", skip_type: str = "logSNR",
                 t_max: Optional[float] = None, t_min: Optional[float] = None, denoise_to_zero: bool = True):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t) -> tensor, got {type(model).__name__}")
        if prediction not in ("noise", "data"):
            raise ValueError(f"prediction must be 'noise' or 'data', got {prediction!r}")
        schedule = EDMSchedule() if schedule is None else schedule
        for attr in ("alpha", "sigma", "lambda_", "inverse_lambda"):
            if not callable(getattr(schedule, attr, None)):
                raise TypeError(f"schedule must provide {attr}(t); got {type(schedule).__name__} without it "
                                "(see gradkit_evodiff.schedules)")
        if skip_type not in SKIP_TYPES:
            raise ValueError(f"skip_type must be one of {SKIP_TYPES}, got {skip_type!r}")
        self.model, self.schedule, self.prediction, self.skip_type = model, schedule, prediction, skip_type
        self.t_max = float(schedule.t_max if t_max is None else t_max)
        self.t_min = float(schedule.t_min if t_min is None else t_min)
        if not (0 < self.t_min < self.t_max):
            raise ValueError(f"need 0 < t_min < t_max, got t_min={self.t_min}, t_max={self.t_max}")
        self.denoise_to_zero = bool(denoise_to_zero)
        self.nfe_used = 0

    # ---------------------------------------------------------------- helpers
    @property
    def min_nfe(self) -> int:
        return 2 if self.denoise_to_zero else 1

    def prior_sample(self, shape, generator: Optional[torch.Generator] = None, dtype=torch.float32):
        """x_T ~ N(0, sigma(t_max)^2 I) (for VP alpha(T) ~ 0 so this is ~N(0, I))."""
        std = _f(self.schedule.sigma(torch.tensor(self.t_max, dtype=torch.float64)))
        return std * torch.randn(*shape, generator=generator, dtype=dtype)

    def data_prediction(self, x: torch.Tensor, t) -> torch.Tensor:
        t = _f(t)
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        out = self.model(x, tt)
        self.nfe_used += 1
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model(x, t) must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        if not torch.isfinite(out).all():
            raise ValueError(f"model returned non-finite values (nan/inf) at t={t:.6g} "
                             f"(model evaluation {self.nfe_used})")
        if self.prediction == "noise":
            t64 = torch.tensor(t, dtype=torch.float64)
            a, s = _f(self.schedule.alpha(t64)), _f(self.schedule.sigma(t64))
            out = (x - s * out) / a
            if not bool(torch.isfinite(out).all()):
                raise SamplerDivergedError(
                    f"{self.name}: the data prediction x0 = (x - sigma*eps)/alpha overflowed at t={t:.6g} (alpha="
                    f"{a:.3g}, sigma={s:.3g}; model evaluation {self.nfe_used}) although the model output was finite; "
                    f"use a wider dtype (x is {x.dtype}) or a larger t_min / smaller t_max", t=t)
        return out

    def check_iterate(self, x: torch.Tensor, step: int, t) -> torch.Tensor:
        """Raise :class:`SamplerDivergedError` if the iterate ``x`` after solver step ``step`` is non-finite."""
        if not bool(torch.isfinite(x).all()):
            raise SamplerDivergedError(
                f"{self.name}: the ODE iterate became non-finite (nan/inf) at solver step {step} (t={_f(t):.6g}, "
                f"{self.nfe_used} model evaluations); the solver is unstable for this budget/model - try another "
                "NFE or sampler", step=step, t=_f(t))
        return x

    def timesteps(self, steps: int) -> torch.Tensor:
        return time_grid(self.schedule, self.t_max, self.t_min, steps, self.skip_type)

    def _check(self, x_T, nfe):
        if not isinstance(x_T, torch.Tensor):
            raise TypeError(f"x_T must be a torch.Tensor, got {type(x_T).__name__}")
        if x_T.dim() < 2 or x_T.shape[0] < 1:
            raise ValueError(f"x_T must be batched with shape (B, ...) and B >= 1, got {tuple(x_T.shape)}")
        if not x_T.is_floating_point():
            raise TypeError(f"x_T must be a floating point tensor, got {x_T.dtype}")
        if not torch.isfinite(x_T).all():
            raise ValueError("x_T contains non-finite values")
        if isinstance(nfe, bool) or not isinstance(nfe, int):
            raise TypeError(f"nfe must be an int, got {type(nfe).__name__}")
        if nfe < self.min_nfe:
            raise ValueError(f"{self.name} needs nfe >= {self.min_nfe} (denoise_to_zero={self.denoise_to_zero}), "
                             f"got nfe={nfe}")

    def sample(self, x_T: torch.Tensor, nfe: int) -> torch.Tensor:
        """Solve the diffusion ODE from ``x_T`` at ``t_max`` with a budget of ``nfe`` model evaluations."""
        self._check(x_T, nfe)
        self.nfe_used = 0
        with torch.no_grad():
            x = self._sample(x_T, nfe)
        assert self.nfe_used <= nfe, (self.name, self.nfe_used, nfe)
        return self.check_iterate(x, "final", self.t_min)

    def _steps(self, nfe: int) -> int:
        return nfe - 1 if self.denoise_to_zero else nfe

    def _coef(self, ts, i):
        """sigma_i, alpha_i, sigma_i / sigma_{i-1}, h_kappa = 1/kappa_i - 1/kappa_{i-1}, h_lambda."""
        sch = self.schedule
        s_i, s_p = _f(sch.sigma(ts[i])), _f(sch.sigma(ts[i - 1]))
        a_i, a_p = _f(sch.alpha(ts[i])), _f(sch.alpha(ts[i - 1]))
        return s_i, a_i, s_i / s_p, a_i / s_i - a_p / s_p, _f(sch.lambda_(ts[i]) - sch.lambda_(ts[i - 1]))

    @abc.abstractmethod
    def _sample(self, x, nfe):
        """Run the solver from ``x`` at ``t_max`` using at most ``nfe`` model calls (each subclass's method)."""


class DDIM(DiffusionSampler):
    """DDIM = first-order DPM-Solver++ (data prediction):
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} + sigma_i h m_{i-1},  h = 1/kappa_i - 1/kappa_{i-1}."""

    name = "ddim"

    def _sample(self, x, nfe):
        steps = self._steps(nfe)
        ts = self.timesteps(steps)
        m = self.data_prediction(x, ts[0])
        for i in range(1, steps + 1):
            s_i, _, ratio, h, _ = self._coef(ts, i)
            x = self.check_iterate(ratio * x + s_i * h * m, i, ts[i])
            if i < steps:
                m = self.data_prediction(x, ts[i])
        if self.denoise_to_zero:
            x = self.data_prediction(x, self.t_min)
        return x


class DPMSolverPP(DiffusionSampler):
    """Multistep DPM-Solver++ (Lu et al. 2022, data prediction), order 2 ("2M") or 3 ("3M").

    With h = lambda_i - lambda_{i-1}, phi1 = expm1(-h), r0 = h_{i-1}/h, D1 = (m_{i-1} - m_{i-2}) / r0:
    2M: x_i = (sigma_i/sigma_{i-1}) x - alpha_i phi1 m_{i-1} - 0.5 alpha_i phi1 D1.
    Warm-up with lower orders; ``lower_order_final`` drops the order on the last steps (as EVODiff's code).
    """

    name = "dpmpp"

    def __init__(self, model, schedule=None, *, order: int = 2, lower_order_final: bool = True, **kw):
        super().__init__(model, schedule, **kw)
        if order not in (1, 2, 3):
            raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order}")
        self.order, self.lower_order_final = order, bool(lower_order_final)
        self.name = f"dpmpp-{order}m"

    def _sample(self, x, nfe):
        steps = self._steps(nfe)
        ts = self.timesteps(steps)
        lam = [_f(self.schedule.lambda_(t)) for t in ts]
        ms = [self.data_prediction(x, ts[0])]
        for i in range(1, steps + 1):
            order = min(self.order, i, steps + 1 - i) if self.lower_order_final else min(self.order, i)
            s_i, a_i, ratio, _, h = self._coef(ts, i)
            phi1 = math.expm1(-h)
            if order == 1:
                x = ratio * x - a_i * phi1 * ms[-1]
            elif order == 2:
                r0 = (lam[i - 1] - lam[i - 2]) / h
                d1 = (ms[-1] - ms[-2]) / r0
                x = ratio * x - a_i * phi1 * ms[-1] - 0.5 * a_i * phi1 * d1
            else:
                r0, r1 = (lam[i - 1] - lam[i - 2]) / h, (lam[i - 2] - lam[i - 3]) / h
                d1_0, d1_1 = (ms[-1] - ms[-2]) / r0, (ms[-2] - ms[-3]) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi2 = phi1 / h + 1.0
                phi3 = phi2 / h - 0.5
                x = ratio * x - a_i * phi1 * ms[-1] + a_i * phi2 * d1 - a_i * phi3 * d2
            self.check_iterate(x, i, ts[i])
            if i < steps:
                ms = (ms + [self.data_prediction(x, ts[i])])[-3:]
        if self.denoise_to_zero:
            x = self.data_prediction(x, self.t_min)
        return x


def DPMSolverPP2M(model, schedule=None, **kw):
    """DPM-Solver++(2M)."""
    return DPMSolverPP(model, schedule, order=2, **kw)


def DPMSolverPP3M(model, schedule=None, **kw):
    """DPM-Solver++(3M)."""
    return DPMSolverPP(model, schedule, order=3, **kw)


class EDMHeun(DiffusionSampler):
    """EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1) in the scaled variable xbar = x / alpha,
    kappa = sigma / alpha:  d xbar / d kappa = (xbar - x0(x, t)) / kappa.  N intervals on the Karras grid plus a last
    Euler step to kappa = 0 cost 2N - 1 evaluations; with an even budget one evaluation stays unused."""

    name = "heun"

    def __init__(self, model, schedule=None, *, skip_type: str = "edm", **kw):
        super().__init__(model, schedule, skip_type=skip_type, **kw)

    @property
    def min_nfe(self) -> int:
        return 1

    def _sample(self, x, nfe):
        n = (nfe + 1) // 2
        ts = self.timesteps(n - 1) if n > 1 else torch.tensor([self.t_max], dtype=torch.float64)
        sch = self.schedule
        kap = [math.exp(-_f(sch.lambda_(t))) for t in ts] + [0.0]
        alp = [_f(sch.alpha(t)) for t in ts]
        xb = x / alp[0]
        for i in range(len(ts)):
            d = (xb - self.data_prediction(alp[i] * xb, ts[i])) / kap[i]
            xn = xb + (kap[i + 1] - kap[i]) * d
            if kap[i + 1] > 0:
                d2 = (xn - self.data_prediction(alp[i + 1] * xn, ts[i + 1])) / kap[i + 1]
                xn = xb + (kap[i + 1] - kap[i]) * 0.5 * (d + d2)
            xb = self.check_iterate(xn, i + 1, ts[i + 1] if i + 1 < len(ts) else 0.0)
        return xb


class EVODiff(DiffusionSampler):
    """EVODiff (Li, Chen, Zeng, NeurIPS 2025): second-order multistep data-prediction solver whose balance factors
    beta, interpolation weight eta and corrector scale zeta are closed-form conditional-variance minimisers
    (projection coefficients), following the official ``EVODiff_edm`` sampler.  One model evaluation per step.

    Heuristic constants of the official code are arguments: ``temperature`` (0.25), ``r_clip`` (0.25, 1.5),
    ``shift_mu`` (0.5), ``proj_clip`` (2.0), ``consistency_above`` (the consistency-gated zeta is used when the
    number of solver steps exceeds it; the official code uses 20; default ``None``: never gate, because the gated
    branch made the error worse at every NFE tested, see the README).  ``zeta_floor`` bounds the corrector scale zeta
    from below (the corrector multiplies by 1/zeta): ``"auto"`` (default) = sigmoid(-shift_mu), the smallest value
    the ungated zeta = sigmoid(|zeta*| - shift_mu) can take, so the gated branch can never take a larger corrector
    step than the ungated one; ``None`` = no floor (the official code, whose gated zeta reaches 1e-3 and below and
    makes the sampler diverge above 20 steps).  Ablation switches: ``balance=False`` (beta = 1), ``adaptive_r=False``
    (r_i = r), ``corrector=False`` (x_i = probe), ``final_step="ddim"`` (first-order last step instead of the
    code's variance-scaled last step).  ``record=True`` stores per-step coefficients in ``self.trace``.
    """

    name = "evodiff"

    def __init__(self, model, schedule=None, *, temperature: float = 0.25, r_clip=(0.25, 1.5), shift_mu: float = 0.5,
                 proj_clip: float = 2.0, consistency_above: Optional[int] = None, zeta_floor="auto",
                 balance: bool = True, adaptive_r: bool = True, corrector: bool = True, final_step: str = "evodiff",
                 record: bool = False, **kw):
        super().__init__(model, schedule, **kw)
        if final_step not in ("evodiff", "ddim"):
            raise ValueError(f"final_step must be 'evodiff' or 'ddim', got {final_step!r}")
        try:
            r_clip = tuple(r_clip)
        except TypeError:
            raise TypeError(f"r_clip must be a pair (low, high), got {r_clip!r}") from None
        if len(r_clip) != 2:
            raise ValueError(f"r_clip must be a pair (low, high) with 0 < low <= high, got {r_clip}")
        lo = _finite_number("r_clip[0]", r_clip[0], low=0.0, low_open=True)
        hi = _finite_number("r_clip[1]", r_clip[1], low=lo)
        self.temperature = _finite_number("temperature", temperature, low=0.0)
        self.shift_mu = _finite_number("shift_mu", shift_mu)
        self.proj_clip = _finite_number("proj_clip", proj_clip, low=0.0, low_open=True)
        self.r_clip = (lo, hi)
        if consistency_above is not None and (isinstance(consistency_above, bool)
                                              or not isinstance(consistency_above, int) or consistency_above < 0):
            raise ValueError(f"consistency_above must be a non-negative int or None, got {consistency_above!r}")
        self.consistency_above = consistency_above
        if zeta_floor == "auto":
            zeta_floor = 1.0 / (1.0 + math.exp(self.shift_mu))       # sigmoid(-shift_mu)
        elif zeta_floor is not None:
            zeta_floor = _finite_number("zeta_floor", zeta_floor, low=0.0, high=1.0, low_open=True)
        self.zeta_floor = zeta_floor
        self.balance, self.adaptive_r, self.corrector = bool(balance), bool(adaptive_r), bool(corrector)
        self.final_step, self.record = final_step, bool(record)
        self.trace = []

    @property
    def min_nfe(self) -> int:  # needs >= 2 solver steps (order 2)
        return 3 if self.denoise_to_zero else 2

    @staticmethod
    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """<a, b> per sample and channel over the remaining dims (B, C, H, W) -> (B, C, 1, 1); for (B, D) inputs the
        whole feature vector is one channel: -> (B, 1)."""
        if a.dim() >= 3:
            v = (a * b).flatten(2).sum(-1)
            return v.reshape(*v.shape, *([1] * (a.dim() - 2)))
        return (a * b).flatten(1).sum(-1, keepdim=True)

    def proj(self, a, b, bb=None):
        """clip(<a, b> / <b, b>, -proj_clip, proj_clip); 0 where <b, b> = 0 (no direction to project on; the
        official code returns nan there)."""
        bb = self.dot(b, b) if bb is None else bb
        return self._ratio(self.dot(a, b), bb)

    def _ratio(self, num, den):
        ok = den > 0
        q = num / torch.where(ok, den, torch.ones_like(den))
        return torch.where(ok, torch.clamp(q, -self.proj_clip, self.proj_clip), torch.zeros_like(q))

    def _sample(self, x, nfe):
        steps = self._steps(nfe)
        ts = self.timesteps(steps)
        sch = self.schedule
        kap = [math.exp(-_f(sch.lambda_(t))) for t in ts]
        sig = [_f(sch.sigma(t)) for t in ts]
        t_T, t_0 = _f(ts[0]), _f(ts[-1])
        self.trace = []
        m_prev1 = None
        m_prev0 = self.data_prediction(x, ts[0])
        # step 1: DDIM
        h = 1 / kap[1] - 1 / kap[0]
        x = self.check_iterate((sig[1] / sig[0]) * x + sig[1] * h * m_prev0, 1, ts[1])
        m_prev1, m_prev0 = m_prev0, self.data_prediction(x, ts[1])
        m0m0, m1m1, m0m1 = self.dot(m_prev0, m_prev0), self.dot(m_prev1, m_prev1), self.dot(m_prev0, m_prev1)
        for i in range(2, steps + 1):
            s_t, s_0, s_1 = sig[i], sig[i - 1], sig[i - 2]
            h = 1 / kap[i] - 1 / kap[i - 1]
            ratio0 = s_t / s_0
            x_euler = ratio0 * x + s_t * h * m_prev0
            if i == steps:  # lower-order final step
                if self.final_step == "ddim":
                    x = x_euler
                else:
                    scale = 1 - math.sqrt(s_t * s_0)
                    r_f = 1 - 0.5 * math.sqrt(ratio0) if ratio0 < 0.5 else 1 - 0.5 * math.sqrt(ratio0 - 0.5)
                    x = scale * x_euler + 0.5 * s_t * h * (m_prev0 - r_f * m_prev1)
                    if self.record:
                        self.trace.append(dict(step=i, final=True, scale=scale, r_final=r_f))
                self.check_iterate(x, i, ts[i])
                break
            r = math.log(kap[i - 2] / kap[i - 1]) / math.log(kap[i - 1] / kap[i])
            t_norm = (_f(ts[i]) + t_0) / (t_T + t_0)
            w = 0.5 * (1 - t_norm ** 2)
            base = math.sqrt(ratio0 / (s_0 / s_1))
            if self.balance:
                beta1 = (1 - w) * base + w * self._ratio(m0m1, m1m1)
            else:
                beta1 = torch.ones_like(m0m1)
            d1 = m_prev0 - beta1 * m_prev1
            if self.adaptive_r:
                r_i = torch.clamp(torch.sigmoid(self.temperature * beta1.abs()) * r,
                                  self.r_clip[0] * r, self.r_clip[1] * r)
            else:
                r_i = torch.full_like(beta1, r)
            x_probe = self.check_iterate(x_euler + 0.5 * s_t * h / r_i * d1, i, ts[i])
            m_t = self.data_prediction(x_probe, ts[i])
            mtmt, mtm0 = self.dot(m_t, m_t), self.dot(m_t, m_prev0)
            rec = dict(step=i, r=r, w=w, base=base, beta1=beta1.clone(), r_i=r_i.clone())
            if self.corrector:
                if self.balance:
                    beta2 = (1 - w) * base + w * self._ratio(mtm0, m0m0)
                else:
                    beta2 = torch.ones_like(mtm0)
                d2 = m_t - beta2 * m_prev0
                b_minus, b_plus = d1 / (r * h), r * d2 / h
                eta_star = 0.5 * self.proj(b_plus + b_minus, b_plus - b_minus)
                eta = 0.5 * torch.sigmoid(eta_star.abs())
                b_theta = (-eta / r) * d1 + r * (1 - eta) * d2
                p = x_probe - x_euler - 0.5 * s_t * h / r_i * b_theta
                zeta_star = self.proj(p, d1) / (h * s_t)
                shifted = zeta_star.abs() - self.shift_mu
                if self.consistency_above is not None and steps > self.consistency_above:
                    d10 = (m_prev0 - m_prev1) / h
                    consistency = torch.sigmoid(self.proj(m_prev0, d10) * (2 - ratio0 ** 2))
                    zeta = torch.sigmoid(-shifted * consistency)
                    rec["consistency"] = consistency.clone()
                else:
                    zeta = torch.sigmoid(shifted)
                if self.zeta_floor is not None:
                    zeta = torch.clamp(zeta, min=self.zeta_floor)
                x = x_euler + 0.5 * s_t * h / zeta * b_theta
                rec.update(beta2=beta2.clone(), eta_star=eta_star.clone(), eta=eta.clone(),
                           zeta_star=zeta_star.clone(), zeta=zeta.clone())
            else:
                x = x_probe
            self.check_iterate(x, i, ts[i])
            if self.record:
                self.trace.append(rec)
            m_prev1, m_prev0 = m_prev0, m_t
            m1m1, m0m0, m0m1 = m0m0, mtmt, mtm0
        if self.denoise_to_zero:
            x = self.data_prediction(x, self.t_min)
        return x


SAMPLERS = {"evodiff": EVODiff, "ddim": DDIM, "dpmpp-2m": DPMSolverPP2M, "dpmpp-3m": DPMSolverPP3M, "heun": EDMHeun}
