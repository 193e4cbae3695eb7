"""One code path for GRPO, DAPO-style dynamic sampling and VSPO (value-based refill + value-smoothing clip).

Per iteration: draw ``batch_prompts`` training questions uniformly, roll out ``group_size`` episodes each,
score them, and find the zero-advantage groups (all G rewards equal).

* ``mode="grpo"``: keep every group (zero groups carry no gradient) — ``trl``'s GRPO.
* ``mode="dapo"``: drop zero groups and refill with *uniformly drawn* prompts, up to ``refill_rounds``.
* ``mode="vspo"``: drop them and refill with the prompts of highest task value
  ``V = (1 - p)^a [p (1 - p)]^b`` (``p`` = EMA of a prompt's mean reward; unseen prompts use ``prior``).
  ``trigger="zero-adv"`` (paper v2) or ``"low-value"`` (v1 wording: groups whose value
  ``V(mean reward) <= low_value`` are replaced).  ``value_smoothing=kappa`` (reconstruction, off by default)
  uses ``b = kappa * EMA_q + (1 - kappa) * mean_G`` as the baseline and clips advantages to ``+-adv_clip``.

Every episode rolled out, refills included, counts towards ``rollout_budget``: arms compare at equal rollouts.

The policy is any module mapping environment word ids ``(N, L)`` to logits ``(N, L, V)``: the tiny GPT, or a
Hugging Face causal LM wrapped by :class:`gradkit_vspo.llm.CausalLMPolicy` (KV-cached rollouts); only parameters
with ``requires_grad`` are optimised (:func:`gradkit_vspo.llm.train_last_layers` freezes the rest).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch

from .grpo import clipped_pg_loss, grpo_advantages, task_value, zero_advantage_mask
from .rewards import format_score

MODES = ("grpo", "dapo", "vspo")
TRIGGERS = ("zero-adv", "low-value")


class ValueBasedSampler:
    """Per-prompt EMA of the mean reward and the task value used to pick refill prompts."""

    def __init__(self, pool, *, ema: float = 0.9, prior: float = 0.5, a: float = 1.0, b: float = 1.0,
                 reward_max: float = 1.0):
        pool = list(pool)
        if not pool:
            raise ValueError("ValueBasedSampler needs a non-empty prompt pool")
        if not (math.isfinite(ema) and 0 <= ema < 1):
            raise ValueError(f"ema must be in [0, 1), got {ema!r}")
        if not (math.isfinite(prior) and 0 <= prior <= 1):
            raise ValueError(f"prior must be in [0, 1], got {prior!r}")
        if not (math.isfinite(reward_max) and reward_max > 0):
            raise ValueError(f"reward_max must be finite and > 0, got {reward_max!r}")
        self.pool, self.ema, self.prior, self.a, self.b, self.reward_max = pool, ema, prior, a, b, reward_max
        self.p: Dict[int, float] = {}

    def estimate(self, ids) -> torch.Tensor:
        return torch.tensor([self.p.get(int(i), self.prior) for i in ids], dtype=torch.float32)

    def update(self, ids, rewards: torch.Tensor) -> None:
        """``rewards`` ``(B, G)`` for prompts ``ids``: EMA of each group's mean reward / reward_max."""
        if rewards.dim() != 2 or rewards.shape[0] != len(ids):
            raise ValueError(f"rewards must have shape ({len(ids)}, G), got {tuple(rewards.shape)}")
        if not torch.isfinite(rewards).all():
            raise ValueError("rewards contain NaN or inf")
        means = (rewards.mean(1) / self.reward_max).clamp(0, 1).tolist()
        for i, m in zip(ids, means):
            i = int(i)
            self.p[i] = self.ema * self.p[i] + (1 - self.ema) * m if i in self.p else m

    def values(self, ids) -> torch.Tensor:
        return task_value(self.estimate(ids), a=self.a, b=self.b)

    def refill(self, k: int, exclude=(), generator: Optional[torch.Generator] = None) -> List[int]:
        """The ``k`` pool prompts of highest task value, not in ``exclude`` (ties broken at random)."""
        ex = set(int(i) for i in exclude)
        cand = [i for i in self.pool if i not in ex]
        if k <= 0 or not cand:
            return []
        v = self.values(cand) + 1e-9 * torch.rand(len(cand), generator=generator)
        top = torch.topk(v, min(k, len(cand))).indices.tolist()
        return [cand[j] for j in top]


class VSPOTrainer:
    """``create("vspo", model, **hp).fit(env, rollout_budget=...)``: trains ``model`` in place, returns history."""

    def __init__(self, model, *, mode: str = "vspo", reward=None, group_size: int = 8, batch_prompts: int = 16,
                 lr: float = 1e-3, clip=(0.2, 0.2), loss_type: str = "grpo", inner_steps: int = 1,
                 refill_rounds: int = 2, trigger: str = "zero-adv", low_value: float = 0.0,
                 value_ema: float = 0.9, value_prior: float = 0.5, value_a: float = 1.0, value_b: float = 1.0,
                 value_smoothing: Optional[float] = None, adv_clip: float = 3.0, temperature: float = 1.0,
                 seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}; expected one of {TRIGGERS}")
        for name, v, ok in (("group_size", group_size, group_size >= 2), ("batch_prompts", batch_prompts, batch_prompts >= 1),
                            ("inner_steps", inner_steps, inner_steps >= 1), ("refill_rounds", refill_rounds, refill_rounds >= 0)):
            if not isinstance(v, int) or isinstance(v, bool) or not ok:
                raise ValueError(f"{name} must be an int ({'>= 2' if name == 'group_size' else '>= 1' if name != 'refill_rounds' else '>= 0'}), got {v!r}")
        for name, v in (("lr", lr), ("adv_clip", adv_clip), ("temperature", temperature)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be finite and > 0, got {v!r}")
        if value_smoothing is not None and not (math.isfinite(value_smoothing) and 0 <= value_smoothing <= 1):
            raise ValueError(f"value_smoothing must be None or in [0, 1], got {value_smoothing!r}")
        if reward is None:
            from .rewards import ProgressiveRewardShaper
            reward = ProgressiveRewardShaper()
        if not callable(reward):
            raise TypeError(f"reward must be callable (texts, refs, expected_calls) -> Tensor, got {type(reward).__name__}")
        clipped_pg_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), clip=clip, loss_type=loss_type)  # validates
        self.model, self.mode, self.reward = model, mode, reward
        self.G, self.B, self.lr, self.clip, self.loss_type = group_size, batch_prompts, lr, tuple(clip), loss_type
        self.inner_steps, self.refill_rounds, self.trigger, self.low_value = inner_steps, refill_rounds, trigger, low_value
        self.value_cfg = dict(ema=value_ema, prior=value_prior, a=value_a, b=value_b)
        self.value_smoothing, self.adv_clip, self.temperature, self.seed = value_smoothing, adv_clip, temperature, seed
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the policy has no trainable parameters (every requires_grad is False)")
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.last_grad_norm = float("nan")

    # ------------------------------------------------------------------ pieces
    def _score(self, env, ro):
        refs = [env.ref(q) for q in ro.prompt_ids]
        calls = [env.expected_call(q) for q in ro.prompt_ids]
        r = self.reward(ro.texts, refs, calls)
        if not torch.is_tensor(r) or r.shape != (len(ro.texts),):
            raise ValueError(f"reward returned {type(r).__name__} of shape {getattr(r, 'shape', None)}; expected ({len(ro.texts)},)")
        if not torch.isfinite(r).all():
            raise ValueError("reward returned NaN or inf; rewards must be finite")
        return r.view(-1, self.G)

    def _bad_groups(self, rewards, sampler):
        zero = zero_advantage_mask(rewards)
        if self.mode == "vspo" and self.trigger == "low-value":
            v = task_value((rewards.mean(1) / sampler.reward_max).clamp(0, 1), a=sampler.a, b=sampler.b)
            return zero | (v <= self.low_value)
        return zero

    def collect(self, env, sampler, g):
        """One batch of groups after the mode's refill rule; returns (rollouts list, rewards list, stats)."""
        ids = [env.train_ids[int(i)] for i in torch.randint(len(env.train_ids), (self.B,), generator=g)]
        ro = env.rollout(self.model, ids, self.G, generator=g, temperature=self.temperature)
        rw = self._score(env, ro)
        sampler.update(ids, rw)
        used, zero0 = len(ro.texts), float(zero_advantage_mask(rw).float().mean())
        keep = [(ro, rw, torch.ones(len(ids), dtype=torch.bool))]
        if self.mode == "grpo":
            return keep, used, zero0, ro
        bad = self._bad_groups(rw, sampler)
        keep[0] = (ro, rw, ~bad)
        missing, seen = int(bad.sum()), set(ids)
        for _ in range(self.refill_rounds):
            if missing == 0:
                break
            if self.mode == "dapo":
                new = [env.train_ids[int(i)] for i in torch.randint(len(env.train_ids), (missing,), generator=g)]
            else:
                new = sampler.refill(missing, exclude=seen, generator=g)
            if not new:
                break
            seen.update(new)
            r2 = env.rollout(self.model, new, self.G, generator=g, temperature=self.temperature)
            w2 = self._score(env, r2)
            sampler.update(new, w2)
            used += len(r2.texts)
            ok = ~self._bad_groups(w2, sampler)
            keep.append((r2, w2, ok))
            missing -= int(ok.sum())
        return keep, used, zero0, ro

    def step(self, parts, sampler) -> Optional[float]:
        seqs, masks, advs = [], [], []
        for ro, rw, ok in parts:
            if not ok.any():
                continue
            rw_k = rw[ok]
            ids = [ro.prompt_ids[i * self.G] for i in range(rw.shape[0]) if ok[i]]
            if self.value_smoothing is not None:
                ema = sampler.estimate(ids) * sampler.reward_max
                base = self.value_smoothing * ema + (1 - self.value_smoothing) * rw_k.mean(1)
                adv = grpo_advantages(rw_k, baseline=base).clamp(-self.adv_clip, self.adv_clip)
            else:
                adv = grpo_advantages(rw_k)
            rows = ok.repeat_interleave(self.G)
            seqs.append(ro.seq[rows])
            masks.append(ro.policy_mask[rows])
            advs.append(adv.reshape(-1))
        if not seqs:
            self.last_grad_norm = float("nan")
            return None
        L = max(s.shape[1] for s in seqs)
        seq = torch.cat([torch.nn.functional.pad(s, (0, L - s.shape[1])) for s in seqs])
        mask = torch.cat([torch.nn.functional.pad(m, (0, L - 1 - m.shape[1])) for m in masks])
        adv = torch.cat(advs)
        from .env import token_logps
        with torch.no_grad():
            old = token_logps(self.model, seq)
        last = None
        for _ in range(self.inner_steps):
            logp = token_logps(self.model, seq)
            loss = clipped_pg_loss(logp, old, adv, clip=self.clip, token_mask=mask, loss_type=self.loss_type)
            if not torch.isfinite(loss):
                raise ValueError("policy loss is NaN or inf; no update applied")
            self.opt.zero_grad()
            loss.backward()
            self.last_grad_norm = float(torch.sqrt(sum((p.grad.detach().float() ** 2).sum() for p in self.params
                                                       if p.grad is not None)))
            self.opt.step()
            last = float(loss.detach())
        return last

    @torch.no_grad()
    def evaluate(self, env, ids=None) -> Dict[str, float]:
        from .rewards import BinaryReward
        ids = env.test_ids if ids is None else ids
        ro = env.rollout(self.model, ids, 1, greedy=True)
        em = BinaryReward()(ro.texts, [env.ref(q) for q in ids])
        fmt = [format_score(t) == 1.0 for t in ro.texts]
        out = {"em": float(em.mean()), "format_valid": sum(fmt) / len(fmt)}
        two = torch.tensor([env.is_two_hop(q) for q in ids]) if hasattr(env, "is_two_hop") else torch.zeros(len(ids), dtype=torch.bool)
        out["em_1hop"] = float(em[~two].mean()) if (~two).any() else float("nan")
        out["em_2hop"] = float(em[two].mean()) if two.any() else float("nan")
        return out

    def fit(self, env, *, rollout_budget: int = 4096, eval_every: int = 512) -> Dict[str, List[float]]:
        """Train until ``rollout_budget`` episodes (refills included) are used; evaluate every ``eval_every``."""
        if rollout_budget < self.B * self.G:
            raise ValueError(f"rollout_budget {rollout_budget} is below one batch ({self.B * self.G} episodes)")
        g = torch.Generator().manual_seed(self.seed)
        sampler = ValueBasedSampler(env.train_ids, **self.value_cfg)
        hist = {"rollouts": [], "em": [], "em_1hop": [], "em_2hop": [], "format_valid": [], "zero_adv_frac": [],
                "kept_zero_frac": [], "grad_norm": []}
        used, next_eval, zeros = 0, 0, []
        while True:
            if used >= next_eval:
                ev = self.evaluate(env)
                hist["rollouts"].append(used)
                hist["em"].append(ev["em"])
                hist["format_valid"].append(ev["format_valid"])
                hist["em_1hop"].append(ev["em_1hop"])
                hist["em_2hop"].append(ev["em_2hop"])
                next_eval += eval_every
            if used >= rollout_budget:
                break
            parts, n, z0, _ = self.collect(env, sampler, g)
            used += n
            zeros.append(z0)
            kept = torch.cat([ok for _, _, ok in parts])
            kept_rw = torch.cat([rw[ok] for _, rw, ok in parts]) if kept.any() else None
            hist["zero_adv_frac"].append(z0)
            trained_zero = float(zero_advantage_mask(kept_rw).float().mean()) if kept_rw is not None else 1.0
            hist["kept_zero_frac"].append(trained_zero)
            self.step(parts, sampler)
            hist["grad_norm"].append(self.last_grad_norm)
        return hist
