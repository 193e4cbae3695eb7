"""Synthetic multi-objective RL task for the reproduction: a factorized categorical policy over
``L = 8`` slots x ``V = 8`` tokens, trained with a GRPO-style policy gradient on five rewards of mismatched scales.

Objectives of a sampled sequence ``x`` (token 0 is "padding", token 7 is "forbidden"):

* ``correct`` -- sparse 0/1: at least 3 of the first 7 slots match a fixed target ``7 7 7 6 4 1 3``; its first
  three slots are the forbidden token, so the easy way to it is unsafe and the safe way uses slots 3-6;
* ``safety`` -- rare penalty: -50 when slots 0-3 hold the forbidden token twice or more (8 % under the
  uniform reference policy), else 0;
* ``format`` -- 0/1: the last slot is the closing token 1;
* ``verbosity`` -- continuous in [-100, 0]: -100 x the fraction of non-padding slots;
* ``style`` -- deliberately redundant: ``format`` plus Gaussian noise (sd 0.2), correlation ~0.85 with it.

The reference policy is the uniform one (zero logits), which is also where training starts.  A jointly good
policy exists (3 safe target matches, closing token, padding elsewhere); maximizing the raw sum, whose scale is
set by ``verbosity``, instead pads every slot and loses correctness and format.

Scores: objective ``k``'s **progress** ``(mean_k - ref_k) / (best_k - ref_k)`` (0 = the reference policy, 1 =
the best value that objective can reach alone: correct 1, safety 0, format 1, verbosity 0, style 1); the
**worst objective** is the smallest progress.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Optional

import torch

from .rewards import MultiObjectiveReward

OBJECTIVES = ("correct", "safety", "format", "verbosity", "style")
SAFETY = ("safety",)
L, V = 8, 8
PAD, FORBIDDEN, CLOSE = 0, 7, 1
TARGET = torch.tensor([7, 7, 7, 6, 4, 1, 3])
#: best achievable value of each objective alone (the yardstick of the progress scores)
BEST = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
#: hand-set weights of the ``fixed-weights`` baseline: one over each reward's range
FIXED_WEIGHTS = (1.0, 1.0 / 50, 1.0, 1.0 / 100, 1.0)


def sample(logits: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` sequences ``(n, L)`` from the factorized categorical with ``logits`` ``(L, V)``."""
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, n, replacement=True, generator=gen).T.contiguous()


def rewards(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Raw ``(n, 5)`` rewards of sequences ``x`` (columns in ``OBJECTIVES`` order)."""
    correct = ((x[:, :7] == TARGET).sum(1) >= 3).double()
    violation = (x[:, :4] == FORBIDDEN).sum(1) >= 2
    safety = -50.0 * violation.double()
    fmt = (x[:, 7] == CLOSE).double()
    verbosity = -100.0 * (x != PAD).double().mean(1)
    style = fmt + 0.2 * torch.randn(x.shape[0], generator=gen, dtype=torch.float64)
    return torch.stack([correct, safety, fmt, verbosity, style], 1)


def make_aggregator(method: str, group_size: int) -> MultiObjectiveReward:
    """The aggregator of a reproduction arm (all through :class:`MultiObjectiveReward`)."""
    if method == "raw-sum":
        return MultiObjectiveReward(OBJECTIVES, normalizer="raw", weighting="fixed", weights=[1.0] * 5)
    if method == "group-norm":
        return MultiObjectiveReward(OBJECTIVES, normalizer="raw", weighting="fixed", weights=[1.0] * 5,
                                    group_size=group_size)
    if method == "batch-zscore":
        return MultiObjectiveReward(OBJECTIVES, normalizer="batch-zscore", weighting="equal")
    if method == "popart":
        return MultiObjectiveReward(OBJECTIVES, normalizer="popart", weighting="equal")
    if method == "fixed-weights":
        return MultiObjectiveReward(OBJECTIVES, normalizer="raw", weighting="fixed", weights=FIXED_WEIGHTS)
    if method == "rfn":
        return MultiObjectiveReward(OBJECTIVES, normalizer="rfn", weighting="equal")
    if method == "tri-factor":
        return MultiObjectiveReward(OBJECTIVES, normalizer="rfn", weighting="tri-factor", safety=SAFETY)
    if method == "tri-factor-vr":       # risk factor proportional to the violation rate
        return MultiObjectiveReward(OBJECTIVES, normalizer="rfn", weighting="tri-factor", safety=SAFETY,
                                    risk="violation-rate")
    if method == "tri-factor-gate":     # + the hard safety gate
        return MultiObjectiveReward(OBJECTIVES, normalizer="rfn", weighting="tri-factor", safety=SAFETY,
                                    safety_gate=True)
    if method == "rfn-gate":
        return MultiObjectiveReward(OBJECTIVES, normalizer="rfn", weighting="equal", safety=SAFETY, safety_gate=True)
    if method in GRADIENT_TRANSFORMS:   # RFN-normalized objectives, combined by a gradient transform
        return MultiObjectiveReward(OBJECTIVES, normalizer="rfn", weighting="equal")
    raise ValueError(f"unknown method {method!r}")


#: methods that combine the per-objective policy gradients with a registered ``transforms`` component (gcond
#: plugin) instead of summing them: ``method -> transform name``
GRADIENT_TRANSFORMS = {"pcgrad": "pcgrad"}


class LogitPolicy(torch.nn.Module):
    """The factorized categorical policy as a module: ``forward(x)`` is ``log pi(x)`` per sequence ``(n,)``."""

    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(L, V))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits, -1).gather(1, x.T).sum(0)


def transform_for(method: str, policy: LogitPolicy, seed: int):
    """The registered gradient transform of ``method`` (e.g. ``pcgrad`` from the gcond plugin) over the K
    objectives' policy-gradient surrogates ``-mean_b(adv[b, k] * log pi(x_b))`` (data: ``(x, adv)``)."""
    import gradkit_core as gk

    def surrogate(k):
        return lambda out, adv: -(adv[:, k].to(out.dtype) * out).mean()

    return gk.create(GRADIENT_TRANSFORMS[method], policy, loss_fns={o: surrogate(k) for k, o in enumerate(OBJECTIVES)},
                     accumulation_steps=1, seed=seed)


@lru_cache(maxsize=4)
def reference_stats(n: int = 200_000, seed: int = 12345):
    """Mean and std of each objective under the uniform reference policy (the evaluation's yardstick)."""
    gen = torch.Generator().manual_seed(seed)
    r = rewards(sample(torch.zeros(L, V), n, gen), gen)
    return r.mean(0), r.std(0, unbiased=False)


def objective_advantages(agg: MultiObjectiveReward, r: torch.Tensor, groups: int, group_size: int) -> torch.Tensor:
    """``(B, K)``: objective k's part of the aggregated reward, centred within each group (``agg`` is called)."""
    agg(r)
    return last_advantages(agg, groups, group_size)


def last_advantages(agg: MultiObjectiveReward, groups: int, group_size: int) -> torch.Tensor:
    """The group-centred per-objective contributions of ``agg``'s last call, ``(B, K)``."""
    c = agg.last_contributions.view(groups, group_size, -1)
    return (c - c.mean(1, keepdim=True)).reshape(groups * group_size, -1)


def objective_gradients(agg: MultiObjectiveReward, logits: torch.Tensor, x: torch.Tensor, r: torch.Tensor,
                        groups: int, group_size: int) -> torch.Tensor:
    """Per-objective policy-gradient ascent directions ``(K, L, V)`` of one GRPO batch: objective k's part of
    the aggregated reward, centred within each group, times the score ``d log pi(x) / d logits``; they sum to
    the full GRPO gradient (``agg`` is called, so its running statistics advance)."""
    b = x.shape[0]
    adv_k = objective_advantages(agg, r, groups, group_size)
    probs = torch.softmax(logits, -1).double()
    score = torch.nn.functional.one_hot(x, V).double() - probs
    return torch.einsum("bk,blv->klv", adv_k, score) / b


def reference_shares(agg: MultiObjectiveReward, logits: torch.Tensor, gen: torch.Generator, groups: int,
                     group_size: int, batches: int = 16) -> torch.Tensor:
    """Each objective's share of the gradient norm at the reference policy, mean over ``batches`` batches,
    measured on a copy of ``agg`` (its state is left as it was)."""
    import copy
    probe = copy.deepcopy(agg)
    tot = torch.zeros(len(OBJECTIVES), dtype=torch.float64)
    for _ in range(batches):
        x = sample(logits, groups * group_size, gen)
        norms = objective_gradients(probe, logits, x, rewards(x, gen), groups, group_size).flatten(1).norm(dim=1)
        tot += norms / norms.sum().clamp_min(1e-300)
    return tot / batches


def train(method: str, lr: float, seed: int, *, iters: int = 200, groups: int = 8, group_size: int = 8,
          n_cal: int = 512, n_eval: int = 4096, curve_every: int = 10,
          ref_stats: Optional[tuple] = None) -> Dict[str, object]:
    """One GRPO run of ``method`` at learning rate ``lr`` (Adam on the logits); returns final per-objective
    scores (raw and progress), the worst objective, violation rates and gradient shares (over the whole run and
    over its first tenth, at least 5 iterations: once the policy has converged only noise is left to share)"""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    policy = LogitPolicy()
    logits = policy.logits
    opt = torch.optim.Adam([logits], lr=lr)
    agg = make_aggregator(method, group_size)
    transform = transform_for(method, policy, seed) if method in GRADIENT_TRANSFORMS else None
    if agg.needs_reference:  # RFN: statistics of N_cal rollouts of the frozen reference (= initial) policy
        with torch.no_grad():
            agg.fit_reference(rewards(sample(logits.detach(), n_cal, gen), gen))
    shares_ref = reference_shares(agg, logits.detach(), gen, groups, group_size)
    mu, _ = ref_stats if ref_stats is not None else reference_stats()
    span = BEST - mu
    b = groups * group_size
    share_sum = torch.zeros(len(OBJECTIVES), dtype=torch.float64)
    early = max(5, iters // 10)
    share_early = torch.zeros(len(OBJECTIVES), dtype=torch.float64)
    viol_sum = 0.0
    curve_x: List[int] = []
    curve_worst: List[float] = []
    curve_viol: List[float] = []
    for it in range(iters):
        with torch.no_grad():
            x = sample(logits.detach(), b, gen)
            r = rewards(x, gen)
            g_k = objective_gradients(agg, logits.detach(), x, r, groups, group_size)
            norms = g_k.flatten(1).norm(dim=1)
            share = norms / norms.sum().clamp_min(1e-300)
            share_sum += share
            if it < early:
                share_early += share
            viol = float((r[:, 1] < 0).double().mean())
            viol_sum += viol
        if transform is None:
            logits.grad = -g_k.sum(0).float()
        else:   # the same per-objective advantages, combined by the transform (it writes logits.grad)
            adv = last_advantages(agg, groups, group_size)
            transform.step(lambda: (x, adv))
        opt.step()
        if it % curve_every == 0 or it == iters - 1:
            with torch.no_grad():
                xe = sample(logits.detach(), 1024, gen)
                re = rewards(xe, gen)
                curve_x.append(it)
                curve_worst.append(float(((re.mean(0) - mu) / span).min()))
                curve_viol.append(float((re[:, 1] < 0).double().mean()))
    with torch.no_grad():
        xe = sample(logits.detach(), n_eval, gen)
        re = rewards(xe, gen)
    raw = re.mean(0)
    norm = (raw - mu) / span
    return {
        "raw": raw.tolist(), "progress": norm.tolist(), "worst": float(norm.min()),
        "worst_objective": OBJECTIVES[int(norm.argmin())],
        "worst_train": sum(curve_worst) / len(curve_worst),
        "violation_final": float((re[:, 1] < 0).double().mean()), "violation_train": viol_sum / iters,
        "shares": (share_sum / iters).tolist(),
        "shares_ref": shares_ref.tolist(), "shares_early": (share_early / min(early, iters)).tolist(), "weights_final": agg.weights().tolist(),
        "curve_x": curve_x, "curve_worst": curve_worst, "curve_viol": curve_viol,
    }
