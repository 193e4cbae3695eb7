"""Multi-objective reward aggregation: Reference-Frozen Normalization (RFN), Tri-Factor weighting, baselines.

Every aggregator is a :class:`MultiObjectiveReward`: a per-objective **normalizer** (``raw``, ``rfn``,
``batch-zscore``, ``popart``), a **weighting** (``equal``, ``fixed``, ``tri-factor``) and an optional GRPO
**group normalization** of the weighted sum.  Calling it on a batch returns one float reward per sample::

    agg = gradkit_core.create("tri-factor", objectives=["correct", "safety", "format"], safety=["safety"])
    agg.fit_reference(ref_rewards)          # (N, K) rewards of the frozen reference policy -> mu, sigma frozen
    R = agg(rewards)                        # (B, K) -> (B,)
    agg.last_contributions                  # (B, K): objective k's part of R (rows sum to R)

The RFN and Tri-Factor equations are not given in the paper's accessible text (abstract only); what is built
here is the reconstruction ``rfn_trifactor_v0`` (see ``VERSION`` and the README):

* RFN: ``r_hat_k = clip((r_k - mu_k) / (sigma_k + eps), -c, c)``, ``mu_k``, ``sigma_k`` (population std) from
  rollouts of the frozen reference policy, then fixed.
* Tri-Factor: ``W_k = exp(-kappa * S_k)`` (S_k: running mean of r_hat_k), ``R_k = 1 + rho * [k is safety]``,
  ``D_k = 1 / (1 + sum_{j != k} max(0, corr_kj))`` (running correlations of r_hat), ``w ∝ W * R * D`` with
  ``sum w = 1``, EMA-smoothed across calls.
"""

from __future__ import annotations

import abc

import copy
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch

from gradkit_core.checks import number

#: version tag of the reconstructed equations; kept in configs and result files
VERSION = "rfn_trifactor_v0"

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------- validation
def _finite_number(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                   low_open: bool = False, high_open: bool = False) -> float:
    """A finite real hyperparameter in its range (:func:`gradkit_core.checks.number`)."""
    return number(name, value, low=low, high=high, low_open=low_open, high_open=high_open)


def as_reward_matrix(rewards: Any, k: Optional[int] = None, *, what: str = "rewards") -> Tensor:
    """Validate and return a float64 ``(B, K)`` reward matrix (B >= 1, all finite)."""
    if isinstance(rewards, Tensor):
        r = rewards.detach()
    else:
        try:
            r = torch.as_tensor(rewards)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{what} must be a (B, K) tensor or nested sequence of numbers, got "
                            f"{type(rewards).__name__}: {e}") from None
    if r.dtype == torch.bool or r.is_complex() or not (r.is_floating_point() or r.dtype in
                                                        (torch.int8, torch.int16, torch.int32, torch.int64,
                                                         torch.uint8)):
        raise TypeError(f"{what} must hold real numbers, got dtype {r.dtype}")
    if r.dim() != 2:
        raise ValueError(f"{what} must be a 2-D (batch, objectives) matrix, got shape {tuple(r.shape)}")
    if r.shape[0] == 0:
        raise ValueError(f"{what} is an empty batch (shape {tuple(r.shape)}); at least one sample is needed")
    if k is not None and r.shape[1] != k:
        raise ValueError(f"{what} has {r.shape[1]} objectives (columns), expected {k}")
    r = r.to(torch.float64).cpu()
    bad = ~torch.isfinite(r)
    if bad.any():
        b, j = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{what} contains a non-finite value ({r[b, j].item()}) at sample {b}, objective {j}; "
                         f"every reward must be finite")
    return r


# ---------------------------------------------------------------------------------------------- normalizers
class Normalizer(abc.ABC):
    """Per-objective transform ``(B, K) -> (B, K)``; ``update`` says whether running statistics may change."""

    name = "base"
    needs_reference = False

    def __init__(self, k: int):
        self.k = k

    @abc.abstractmethod
    def transform(self, r: Tensor, update: bool = True) -> Tensor:
        """Normalized rewards of the (B, K) raw matrix ``r`` (updating running statistics if ``update``)."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class RawNormalizer(Normalizer):
    """No normalization (``r_hat = r``)."""

    name = "raw"

    def transform(self, r: Tensor, update: bool = True) -> Tensor:
        return r.clone()


class ReferenceFrozenNormalizer(Normalizer):
    """RFN: ``clip((r - mu) / (sigma + eps), -clip, clip)`` with ``mu``, ``sigma`` of the frozen reference policy.

    :meth:`fit` takes ``(N, K)`` rewards of ``N >= 2`` reference rollouts; ``mu`` is their mean and ``sigma``
    their population standard deviation.  Afterwards both stay fixed: nothing the current policy produces moves
    them, and a second :meth:`fit` is refused unless ``refit=True``.  An objective with zero variance under the
    reference maps every deviation to ``±clip`` (and an equal value to 0).
    """

    name = "rfn"
    needs_reference = True

    def __init__(self, k: int, *, clip: float = 5.0, eps: float = 1e-8):
        super().__init__(k)
        self.clip = _finite_number("clip", clip, low=0.0, low_open=True)
        self.eps = _finite_number("eps", eps, low=0.0, low_open=True)
        self.mu: Optional[Tensor] = None
        self.sigma: Optional[Tensor] = None
        self.n_reference = 0

    @property
    def fitted(self) -> bool:
        return self.mu is not None

    def fit(self, ref_rewards: Any, *, refit: bool = False) -> "ReferenceFrozenNormalizer":
        r = as_reward_matrix(ref_rewards, self.k, what="reference rewards")
        if r.shape[0] < 2:
            raise ValueError(f"RFN needs at least 2 reference rollouts to estimate a scale, got {r.shape[0]}")
        if self.fitted and not refit:
            raise ValueError("RFN statistics are frozen after the reference phase; pass refit=True to replace them "
                             "with a new reference policy's statistics")
        self.mu = r.mean(0)
        self.sigma = r.std(0, unbiased=False)
        self.n_reference = int(r.shape[0])
        return self

    def transform(self, r: Tensor, update: bool = True) -> Tensor:
        if not self.fitted:
            raise ValueError("RFN has no reference statistics yet: call fit_reference(ref_rewards) with rewards of "
                             "the frozen reference policy first")
        return ((r - self.mu) / (self.sigma + self.eps)).clamp(-self.clip, self.clip)

    def state_dict(self) -> Dict[str, Any]:
        return {"mu": self.mu, "sigma": self.sigma, "n_reference": self.n_reference}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mu, self.sigma, self.n_reference = state["mu"], state["sigma"], int(state["n_reference"])


class BatchZScoreNormalizer(Normalizer):
    """Baseline: ``(r - mean_batch) / (std_batch + eps)`` per objective (statistics of the current batch only)."""

    name = "batch-zscore"

    def __init__(self, k: int, *, eps: float = 1e-8):
        super().__init__(k)
        self.eps = _finite_number("eps", eps, low=0.0, low_open=True)

    def transform(self, r: Tensor, update: bool = True) -> Tensor:
        if r.shape[0] < 2:
            raise ValueError(f"a per-batch z-score needs a batch of at least 2 samples, got {r.shape[0]}")
        return (r - r.mean(0)) / (r.std(0, unbiased=False) + self.eps)


class PopArtNormalizer(Normalizer):
    """Baseline, PopArt-like: running EMA mean ``m`` and second moment ``v`` per objective, updated with each
    batch before normalizing, ``r_hat = (r - m) / (sqrt(max(v - m^2, 0)) + eps)``; the first batch initializes
    them.  (No value head here, so PopArt's output-preserving rescaling has nothing to act on.)"""

    name = "popart"

    def __init__(self, k: int, *, beta: float = 0.99, eps: float = 1e-8):
        super().__init__(k)
        self.beta = _finite_number("beta", beta, low=0.0, high=1.0, high_open=True)
        self.eps = _finite_number("eps", eps, low=0.0, low_open=True)
        self.mean: Optional[Tensor] = None
        self.sq_mean: Optional[Tensor] = None

    def transform(self, r: Tensor, update: bool = True) -> Tensor:
        m_b, v_b = r.mean(0), (r * r).mean(0)
        if update:
            if self.mean is None:
                self.mean, self.sq_mean = m_b, v_b
            else:
                self.mean = self.beta * self.mean + (1 - self.beta) * m_b
                self.sq_mean = self.beta * self.sq_mean + (1 - self.beta) * v_b
        if self.mean is None:
            raise ValueError("PopArt has no running statistics yet: call it with update=True first")
        std = (self.sq_mean - self.mean ** 2).clamp_min(0.0).sqrt()
        return (r - self.mean) / (std + self.eps)

    def state_dict(self) -> Dict[str, Any]:
        return {"mean": self.mean, "sq_mean": self.sq_mean}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean, self.sq_mean = state["mean"], state["sq_mean"]


NORMALIZERS = {"raw": RawNormalizer, "rfn": ReferenceFrozenNormalizer, "batch-zscore": BatchZScoreNormalizer,
               "popart": PopArtNormalizer}


# ---------------------------------------------------------------------------------------------- weightings
class Weighting(abc.ABC):
    name = "base"

    def __init__(self, k: int):
        self.k = k

    def update(self, r_hat: Tensor, violations: Optional[Tensor] = None) -> None:
        pass

    @abc.abstractmethod
    def weights(self) -> Tensor:
        """The current (K,) objective weights."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class FixedWeighting(Weighting):
    """Fixed weights (non-negative, finite, not all zero); ``equal`` is ``1/K`` each."""

    name = "fixed"

    def __init__(self, k: int, weights: Optional[Sequence[float]] = None):
        super().__init__(k)
        if weights is None:
            w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        else:
            w = torch.as_tensor(weights, dtype=torch.float64).flatten()
            if w.numel() != k:
                raise ValueError(f"weights has {w.numel()} entries, expected one per objective ({k})")
            if not torch.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
                raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
        self._w = w

    def weights(self) -> Tensor:
        return self._w.clone()


class TriFactorWeighting(Weighting):
    """Tri-Factor adaptive dynamic weighting (reconstruction ``rfn_trifactor_v0``).

    Running statistics of the normalized rewards (EMA with ``stat_beta``; the first batch initializes them):
    mean ``S`` and second moments, hence covariances and correlations ``corr_kj`` (0 where either objective has
    variance <= ``eps``).  Then

    * weakness ``W_k = exp(-kappa * S_k)``: objectives lagging behind the reference get more weight;
    * risk, ``risk="indicator"`` (default): ``R_k = 1 + rho * [k in safety]``; ``risk="violation-rate"``:
      ``R_k = 1 + rho * [k in safety] * v_k / max(v_k_ref, 1 / N_ref)``, proportional to the running (EMA,
      ``stat_beta``) violation rate ``v_k`` of safety objective k, relative to its rate ``v_k_ref`` under the frozen
      reference policy (``N_ref`` reference rollouts; a reference without violations counts as one in ``N_ref``):
      ``1 + rho`` while the policy violates as often as the reference, ``-> 1`` as violations vanish, above
      ``1 + rho`` when it violates more often;
    * redundancy ``D_k = 1 / (1 + sum_{j != k} max(0, corr_kj))``: positively correlated objectives share weight;

    ``w_new = W R D / sum(W R D)`` and ``w <- ema * w + (1 - ema) * w_new`` (``w = w_new`` on the first update);
    before any update ``w = 1/K``.  The weights always sum to 1.
    """

    name = "tri-factor"
    RISKS = ("indicator", "violation-rate")

    def __init__(self, k: int, *, safety_mask: Optional[Sequence[bool]] = None, kappa: float = 1.0,
                 rho: float = 1.0, ema: float = 0.9, stat_beta: float = 0.9, eps: float = 1e-8,
                 factors: Sequence[str] = ("weakness", "risk", "redundancy"), risk: str = "indicator"):
        super().__init__(k)
        if risk not in self.RISKS:
            raise ValueError(f"unknown risk {risk!r}; expected one of {self.RISKS}")
        self.risk_mode = risk
        self.kappa = _finite_number("kappa", kappa, low=0.0)
        self.rho = _finite_number("rho", rho, low=0.0)
        self.ema = _finite_number("ema", ema, low=0.0, high=1.0, high_open=True)
        self.stat_beta = _finite_number("stat_beta", stat_beta, low=0.0, high=1.0, high_open=True)
        self.eps = _finite_number("eps", eps, low=0.0, low_open=True)
        unknown = set(factors) - {"weakness", "risk", "redundancy"}
        if unknown:
            raise ValueError(f"unknown tri-factor factors {sorted(unknown)}; expected a subset of "
                             "('weakness', 'risk', 'redundancy')")
        self.factors = tuple(factors)
        mask = torch.zeros(k, dtype=torch.bool) if safety_mask is None else torch.as_tensor(safety_mask)
        if mask.dtype != torch.bool or mask.shape != (k,):
            raise ValueError(f"safety_mask must be {k} booleans (one per objective), got {safety_mask!r}")
        self.safety_mask = mask
        if risk == "violation-rate" and not bool(mask.any()):
            raise ValueError("risk='violation-rate' needs at least one safety objective (safety=[...])")
        self.violation_rate: Optional[Tensor] = None   # v_k, running
        self.reference_rate: Optional[Tensor] = None   # max(v_k_ref, 1/N_ref)
        self.mean: Optional[Tensor] = None      # S_k
        self.second: Optional[Tensor] = None    # E[r_hat r_hat^T]
        self._w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        self.n_updates = 0

    # the three factors, from the current running statistics
    def correlation(self) -> Tensor:
        if self.mean is None:
            return torch.eye(self.k, dtype=torch.float64)
        cov = self.second - torch.outer(self.mean, self.mean)
        var = cov.diagonal().clamp_min(0.0)
        ok = var > self.eps
        std = var.sqrt()
        denom = torch.outer(std, std)
        corr = torch.where(torch.outer(ok, ok), cov / torch.where(denom > 0, denom, torch.ones_like(denom)),
                           torch.zeros_like(cov))
        corr = corr.clamp(-1.0, 1.0)
        corr.fill_diagonal_(1.0)
        return corr

    def weakness(self) -> Tensor:
        s = torch.zeros(self.k, dtype=torch.float64) if self.mean is None else self.mean
        return torch.exp(-self.kappa * s)

    @property
    def needs_reference(self) -> bool:
        return self.risk_mode == "violation-rate"

    def fit_reference(self, violations: Tensor) -> None:
        """Reference violation rates from the ``(N, K)`` violation mask of the frozen reference policy's rollouts."""
        n = violations.shape[0]
        self.reference_rate = violations.to(torch.float64).mean(0).clamp_min(1.0 / n)

    def risk(self) -> Tensor:
        s = self.safety_mask.to(torch.float64)
        if self.risk_mode == "indicator":
            return 1.0 + self.rho * s
        if self.reference_rate is None:
            raise ValueError("risk='violation-rate' has no reference violation rate yet: call fit_reference(...) "
                             "with rewards of the frozen reference policy first")
        v = torch.zeros(self.k, dtype=torch.float64) if self.violation_rate is None else self.violation_rate
        return 1.0 + self.rho * s * v / self.reference_rate

    def redundancy(self) -> Tensor:
        c = self.correlation().clamp_min(0.0)
        off = c.sum(1) - c.diagonal()
        return 1.0 / (1.0 + off)

    def update(self, r_hat: Tensor, violations: Optional[Tensor] = None) -> None:
        if self.risk_mode == "violation-rate":
            if violations is None:
                raise ValueError("risk='violation-rate' needs the batch's (B, K) violation mask")
            if self.reference_rate is None:
                self.risk()   # raises the clear error
            v_b = violations.to(torch.float64).mean(0)
            self.violation_rate = v_b if self.violation_rate is None else \
                self.stat_beta * self.violation_rate + (1 - self.stat_beta) * v_b
        m_b = r_hat.mean(0)
        s_b = r_hat.T @ r_hat / r_hat.shape[0]
        if self.mean is None:
            self.mean, self.second = m_b, s_b
        else:
            self.mean = self.stat_beta * self.mean + (1 - self.stat_beta) * m_b
            self.second = self.stat_beta * self.second + (1 - self.stat_beta) * s_b
        prod = torch.ones(self.k, dtype=torch.float64)
        if "weakness" in self.factors:
            prod = prod * self.weakness()
        if "risk" in self.factors:
            prod = prod * self.risk()
        if "redundancy" in self.factors:
            prod = prod * self.redundancy()
        w_new = prod / prod.sum()
        self._w = w_new if self.n_updates == 0 else self.ema * self._w + (1 - self.ema) * w_new
        self._w = self._w / self._w.sum()
        self.n_updates += 1

    def weights(self) -> Tensor:
        return self._w.clone()

    def state_dict(self) -> Dict[str, Any]:
        return {"mean": self.mean, "second": self.second, "w": self._w, "n_updates": self.n_updates,
                "violation_rate": self.violation_rate, "reference_rate": self.reference_rate}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean, self.second, self._w = state["mean"], state["second"], state["w"]
        self.n_updates = int(state["n_updates"])
        self.violation_rate = state.get("violation_rate")
        self.reference_rate = state.get("reference_rate")


# ---------------------------------------------------------------------------------------------- aggregator
class MultiObjectiveReward:
    """One multi-objective reward interface for every normalizer/weighting combination.

    ``objectives``: the K objective names, in column order.  ``reward_fns`` (optional): ``{name: fn(batch) ->
    B numbers}`` for every objective; then a call takes a batch of samples, otherwise a ``(B, K)`` reward matrix.
    ``normalizer``: ``"raw" | "rfn" | "batch-zscore" | "popart"``; ``weighting``: ``"equal" | "fixed" |
    "tri-factor"`` (``weights`` for ``fixed``; ``safety`` names the safety objectives for the risk factor);
    ``group_size``: GRPO group normalization of the weighted sum over consecutive groups of that size
    (``(R - mean_g) / (std_g + eps)``; ``group_std="unbiased"`` divides by the Bessel-corrected std instead of
    the population one, as ``trl``'s ``GRPOTrainer`` does, with ``eps=1e-4`` for trl's constant).

    Safety: a sample *violates* safety objective k when its raw reward is below ``violation_below`` (default 0:
    safety rewards are penalties).  ``risk="violation-rate"`` makes Tri-Factor's risk factor proportional to the
    running violation rate (see :class:`TriFactorWeighting`).  ``safety_gate=True`` is the hard safety gate: a
    violating sample's aggregated reward becomes ``min(R_i, m - gate_margin)``, ``m`` the smallest reward of the
    batch's non-violating samples, so every violating sample ranks strictly below every safe one (applied before
    the group normalization; the shift is booked on the first violated safety objective's contribution, and
    ``last_gated`` marks the gated samples: the violating ones, none when all violate).

    After a call, ``last_normalized`` (B, K), ``last_weights`` (K) and ``last_contributions`` (B, K, rows summing
    to the returned rewards) hold what was computed.  A call that raises leaves every running statistic as it
    was.
    """

    def __init__(self, objectives: Sequence[str], *, normalizer: str = "rfn", weighting: str = "equal",
                 weights: Optional[Sequence[float]] = None, safety: Sequence[str] = (),
                 reward_fns: Optional[Mapping[str, Callable[[Any], Any]]] = None, group_size: Optional[int] = None,
                 clip: float = 5.0, eps: float = 1e-8, popart_beta: float = 0.99, kappa: float = 1.0,
                 rho: float = 1.0, ema: float = 0.9, stat_beta: float = 0.9,
                 factors: Sequence[str] = ("weakness", "risk", "redundancy"), risk: str = "indicator",
                 safety_gate: bool = False, gate_margin: float = 1.0, violation_below: float = 0.0,
                 group_std: str = "population"):
        if isinstance(objectives, str) or not isinstance(objectives, Sequence):
            raise TypeError(f"objectives must be a sequence of names, got {objectives!r}")
        objectives = tuple(objectives)
        if not objectives:
            raise ValueError("objectives is empty; at least one objective is needed")
        if not all(isinstance(o, str) and o for o in objectives) or len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives must be distinct non-empty strings, got {objectives!r}")
        self.objectives = objectives
        k = len(objectives)
        unknown = [s for s in safety if s not in objectives]
        if isinstance(safety, str) or unknown:
            raise ValueError(f"safety must list objective names out of {objectives}, got {safety!r}")
        self.safety = tuple(safety)
        if reward_fns is not None:
            if set(reward_fns) != set(objectives):
                raise ValueError(f"reward_fns must have exactly the objectives {sorted(objectives)} as keys, "
                                 f"got {sorted(reward_fns)}")
            if not all(callable(f) for f in reward_fns.values()):
                raise TypeError("every reward_fns entry must be callable")
        self.reward_fns = dict(reward_fns) if reward_fns is not None else None
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                       or group_size < 2):
            raise ValueError(f"group_size must be an integer >= 2 (or None), got {group_size!r}")
        self.group_size = group_size
        if group_std not in ("population", "unbiased"):
            raise ValueError(f"group_std must be 'population' or 'unbiased', got {group_std!r}")
        if group_std == "unbiased" and group_size is None:
            raise ValueError("group_std only applies with group_size (GRPO group normalization)")
        self.group_std = group_std
        self.eps = _finite_number("eps", eps, low=0.0, low_open=True)
        if not isinstance(safety_gate, bool):
            raise TypeError(f"safety_gate must be True or False, got {safety_gate!r}")
        if safety_gate and not self.safety:
            raise ValueError("safety_gate=True needs at least one safety objective (safety=[...])")
        self.safety_gate = safety_gate
        self.gate_margin = _finite_number("gate_margin", gate_margin, low=0.0, low_open=True)
        self.violation_below = _finite_number("violation_below", violation_below)
        self._safety_idx = [objectives.index(o) for o in self.safety]
        if normalizer == "raw":
            self.normalizer: Normalizer = RawNormalizer(k)
        elif normalizer == "rfn":
            self.normalizer = ReferenceFrozenNormalizer(k, clip=clip, eps=eps)
        elif normalizer == "batch-zscore":
            self.normalizer = BatchZScoreNormalizer(k, eps=eps)
        elif normalizer == "popart":
            self.normalizer = PopArtNormalizer(k, beta=popart_beta, eps=eps)
        else:
            raise ValueError(f"unknown normalizer {normalizer!r}; expected one of {sorted(NORMALIZERS)}")
        if weighting == "equal":
            if weights is not None:
                raise ValueError("weights are only used with weighting='fixed'")
            self.weighting: Weighting = FixedWeighting(k)
        elif weighting == "fixed":
            if weights is None:
                raise ValueError("weighting='fixed' needs weights (one per objective)")
            if isinstance(weights, Mapping):
                if set(weights) != set(objectives):
                    raise ValueError(f"weights must name exactly the objectives {sorted(objectives)}")
                weights = [weights[o] for o in objectives]
            self.weighting = FixedWeighting(k, weights)
        elif weighting == "tri-factor":
            if weights is not None:
                raise ValueError("weights are only used with weighting='fixed'")
            mask = [o in self.safety for o in objectives]
            self.weighting = TriFactorWeighting(k, safety_mask=mask, kappa=kappa, rho=rho, ema=ema,
                                                stat_beta=stat_beta, eps=eps, factors=factors, risk=risk)
        else:
            raise ValueError(f"unknown weighting {weighting!r}; expected 'equal', 'fixed' or 'tri-factor'")
        if risk != "indicator" and weighting != "tri-factor":
            raise ValueError(f"risk={risk!r} is an option of weighting='tri-factor' only")
        self.version = VERSION
        self.last_gated: Optional[Tensor] = None
        self.last_normalized: Optional[Tensor] = None
        self.last_weights: Optional[Tensor] = None
        self.last_contributions: Optional[Tensor] = None

    # ------------------------------------------------------------------ attributes of the running state
    @property
    def needs_reference(self) -> bool:
        return self.normalizer.needs_reference or getattr(self.weighting, "needs_reference", False)

    def violations(self, r: Tensor) -> Tensor:
        """``(B, K)`` bool: sample b violates safety objective k (raw reward below ``violation_below``)."""
        v = torch.zeros(r.shape, dtype=torch.bool)
        if self._safety_idx:
            v[:, self._safety_idx] = r[:, self._safety_idx] < self.violation_below
        return v

    @property
    def mu(self) -> Optional[Tensor]:
        return getattr(self.normalizer, "mu", None)

    @property
    def sigma(self) -> Optional[Tensor]:
        return getattr(self.normalizer, "sigma", None)

    def weights(self) -> Tensor:
        return self.weighting.weights()

    def config(self) -> Dict[str, Any]:
        return {"version": self.version, "objectives": list(self.objectives), "normalizer": self.normalizer.name,
                "weighting": self.weighting.name, "group_size": self.group_size, "group_std": self.group_std,
                "safety": list(self.safety), "risk": getattr(self.weighting, "risk_mode", None),
                "safety_gate": self.safety_gate, "gate_margin": self.gate_margin,
                "violation_below": self.violation_below}

    # ------------------------------------------------------------------ rewards
    def reward_matrix(self, batch: Any) -> Tensor:
        """``(B, K)`` float64 raw rewards: ``batch`` itself, or the ``reward_fns`` applied to it."""
        if self.reward_fns is None:
            return as_reward_matrix(batch, len(self.objectives))
        try:
            n = len(batch)
        except TypeError:
            raise TypeError(f"with reward_fns a batch must be a sized collection of samples, got "
                            f"{type(batch).__name__}") from None
        if n == 0:
            raise ValueError("empty batch: at least one sample is needed")
        cols = []
        for name in self.objectives:
            col = torch.as_tensor(self.reward_fns[name](batch), dtype=torch.float64).flatten()
            if col.numel() != n:
                raise ValueError(f"reward function {name!r} returned {col.numel()} rewards for {n} samples")
            if not torch.isfinite(col).all():
                raise ValueError(f"reward function {name!r} returned a non-finite reward")
            cols.append(col)
        return torch.stack(cols, 1)

    def fit_reference(self, batch: Any, *, refit: bool = False) -> "MultiObjectiveReward":
        """Fit the frozen reference statistics (RFN's mu, sigma; the reference violation rates of
        ``risk="violation-rate"``) on rewards (or samples) of the frozen reference policy."""
        if not self.needs_reference:
            raise ValueError(f"normalizer {self.normalizer.name!r} takes no reference statistics "
                             "(only 'rfn' and the tri-factor risk='violation-rate' do)")
        r = self.reward_matrix(batch)
        if r.shape[0] < 2:
            raise ValueError(f"reference statistics need at least 2 reference rollouts, got {r.shape[0]}")
        w = self.weighting
        if getattr(w, "needs_reference", False) and w.reference_rate is not None and not refit:
            raise ValueError("reference statistics are frozen after the reference phase; pass refit=True to "
                             "replace them with a new reference policy's statistics")
        if self.normalizer.needs_reference:
            self.normalizer.fit(r, refit=refit)
        if getattr(w, "needs_reference", False):
            w.fit_reference(self.violations(r))
        return self

    def __call__(self, batch: Any) -> Tensor:
        r = self.reward_matrix(batch)
        b = r.shape[0]
        if self.group_size is not None and b % self.group_size:
            raise ValueError(f"batch of {b} samples is not a whole number of groups of {self.group_size}")
        snapshot = (copy.deepcopy(self.normalizer.state_dict()), copy.deepcopy(self.weighting.state_dict()))
        try:
            viol = self.violations(r)
            r_hat = self.normalizer.transform(r, update=True)
            self.weighting.update(r_hat, viol)
            w = self.weighting.weights()
            contrib = r_hat * w
            out = contrib.sum(1)
            violating = viol.any(1)
            gated = torch.zeros(b, dtype=torch.bool)
            if self.safety_gate and violating.any() and not violating.all():
                gated = violating
                cap = out[~violating].min() - self.gate_margin
                new = torch.where(violating, torch.minimum(out, cap), out)
                col = torch.tensor(self._safety_idx)[viol[:, self._safety_idx].to(torch.int8).argmax(1)]
                contrib = contrib.clone()
                contrib[torch.arange(b), col] += new - out       # zero for safe samples
                out = new
            if self.group_size is not None:
                g = self.group_size
                og = out.view(-1, g)
                scale = og.std(1, unbiased=self.group_std == "unbiased", keepdim=True) + self.eps
                cg = contrib.view(-1, g, contrib.shape[1])
                contrib = ((cg - cg.mean(1, keepdim=True)) / scale.unsqueeze(-1)).reshape(b, -1)
                out = ((og - og.mean(1, keepdim=True)) / scale).reshape(b)
            if not torch.isfinite(out).all():
                raise ValueError("the aggregated reward is non-finite (overflow in normalization)")
        except Exception:
            self.normalizer.load_state_dict(snapshot[0])
            self.weighting.load_state_dict(snapshot[1])
            raise
        self.last_normalized, self.last_weights, self.last_contributions = r_hat, w, contrib
        self.last_gated = gated
        return out

    def state_dict(self) -> Dict[str, Any]:
        return {"config": self.config(), "normalizer": copy.deepcopy(self.normalizer.state_dict()),
                "weighting": copy.deepcopy(self.weighting.state_dict())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("config", {}).get("version") != self.version or \
                state["config"]["objectives"] != list(self.objectives):
            raise ValueError("state_dict was saved by an aggregator with other objectives or another version")
        self.normalizer.load_state_dict(copy.deepcopy(state["normalizer"]))
        self.weighting.load_state_dict(copy.deepcopy(state["weighting"]))


# ---------------------------------------------------------------------------------------------- registered factories
def rfn(objectives: Sequence[str], **kw: Any) -> MultiObjectiveReward:
    """RFN with equal weights."""
    return MultiObjectiveReward(objectives, normalizer="rfn", weighting=kw.pop("weighting", "equal"), **kw)


def tri_factor(objectives: Sequence[str], **kw: Any) -> MultiObjectiveReward:
    """RFN + Tri-Factor weighting (the paper's combination; ``normalizer=`` may swap the normalizer)."""
    return MultiObjectiveReward(objectives, normalizer=kw.pop("normalizer", "rfn"), weighting="tri-factor", **kw)


def raw_sum(objectives: Sequence[str], **kw: Any) -> MultiObjectiveReward:
    """Baseline: the plain sum of raw rewards (weights 1)."""
    return MultiObjectiveReward(objectives, normalizer="raw", weighting="fixed",
                                weights=[1.0] * len(tuple(objectives)), **kw)


def group_norm(objectives: Sequence[str], group_size: int = 8, **kw: Any) -> MultiObjectiveReward:
    """Baseline: GRPO group normalization of the raw sum."""
    return MultiObjectiveReward(objectives, normalizer="raw", weighting="fixed",
                                weights=[1.0] * len(tuple(objectives)), group_size=group_size, **kw)


def batch_zscore(objectives: Sequence[str], **kw: Any) -> MultiObjectiveReward:
    """Baseline: per-objective z-score over the current batch, equal weights."""
    return MultiObjectiveReward(objectives, normalizer="batch-zscore", weighting="equal", **kw)


def popart(objectives: Sequence[str], **kw: Any) -> MultiObjectiveReward:
    """Baseline: PopArt-like running normalization, equal weights."""
    return MultiObjectiveReward(objectives, normalizer="popart", weighting="equal", **kw)


def fixed_weights(objectives: Sequence[str], weights: Any = None, **kw: Any) -> MultiObjectiveReward:
    """Baseline: hand-set fixed weights on the raw rewards (``normalizer=`` may change that)."""
    if weights is None:
        raise ValueError("fixed-weights needs weights=[...] (one per objective) or {objective: weight}")
    return MultiObjectiveReward(objectives, normalizer=kw.pop("normalizer", "raw"), weighting="fixed",
                                weights=weights, **kw)
