"""Benchmark: gradkit's GRPO loss/advantages vs ``trl``'s (1.16) on identical inputs, side by side.

Times forward+backward of the clipped loss (``loss_type="grpo"``) with ``trl.GRPOTrainer._compute_loss``
driven through a minimal stand-in trainer (its log-prob hook returns the same tensor), and the group
advantages against trl's formula with ``trl.trainer.utils.nanstd``.  Reports CPU-time ratios (median of
repetitions, ``time.process_time``) and the largest absolute difference (parity).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from types import SimpleNamespace

from gradkit_core.results import Result


class _Acc:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_trainer(logp, loss_type, clip=(0.2, 0.2)):
    """A ``trl.GRPOTrainer`` whose ``_compute_loss`` runs on the given per-token log-probs (no model, one
    process): what the bench times and the parity test compares our loss with."""
    import torch
    import trl
    t = trl.GRPOTrainer.__new__(trl.GRPOTrainer)
    t.__dict__.update(top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
                      beta=0.0, loss_type=loss_type, epsilon_low=clip[0], epsilon_high=clip[1],
                      args=SimpleNamespace(delta=None, use_bias_correction_kl=False), model=SimpleNamespace(training=False),
                      current_gradient_accumulation_steps=1, accelerator=_Acc(), aux_loss_enabled=False,
                      _entropy_bonus_enabled=False, use_vllm=False, _metrics=defaultdict(lambda: defaultdict(list)))
    t._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
    return t


def _time(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return statistics.median(ts)


def run(*, quick: bool = False, seed: int = 0) -> Result:
    import torch
    from trl.trainer.utils import nanstd

    from .grpo import clipped_pg_loss, grpo_advantages

    res = Result(name="vspo", title="GRPO loss/advantages: gradkit vs trl 1.16 (CPU time ratios, parity)")
    reps = 5 if quick else 20
    g = torch.Generator().manual_seed(seed)
    for n, T, G in ([(128, 32, 8)] if quick else [(128, 32, 8), (512, 128, 8)]):
        logp = (-torch.rand(n, T, generator=g) * 3).requires_grad_(True)
        old = logp.detach() + 0.3 * torch.randn(n, T, generator=g)
        adv = torch.randn(n, generator=g)
        mask = (torch.rand(n, T, generator=g) > 0.2).long()
        t = trl_trainer(logp, "grpo")
        inputs = dict(prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1, dtype=torch.long),
                      completion_ids=torch.zeros(n, T, dtype=torch.long), completion_mask=mask, advantages=adv,
                      old_per_token_logps=old)
        ref = t._compute_loss(None, inputs).detach()
        ours = clipped_pg_loss(logp, old, adv, token_mask=mask).detach()
        t_trl = _time(lambda: torch.autograd.grad(t._compute_loss(None, inputs), logp), reps)
        t_ours = _time(lambda: torch.autograd.grad(clipped_pg_loss(logp, old, adv, token_mask=mask), logp), reps)
        r = torch.rand(n, generator=g)
        mean = torch.nanmean(r.view(-1, G), 1).repeat_interleave(G)
        std = nanstd(r.view(-1, G), dim=1).repeat_interleave(G)
        adv_diff = float(((r - mean) / (std + 1e-4) - grpo_advantages(r.view(-1, G)).reshape(-1)).abs().max())
        res.add_row(sequences=n, tokens=T, loss_abs_diff=float((ours - ref).abs()), adv_abs_diff=adv_diff,
                    trl_ms=round(1e3 * t_trl, 3), gradkit_ms=round(1e3 * t_ours, 3),
                    trl_over_gradkit=round(t_trl / max(t_ours, 1e-9), 2))
        res.add_claim(f"loss and advantages equal trl's to 1e-6 ({n}x{T})",
                      float((ours - ref).abs()) < 1e-6 and adv_diff < 1e-6, f"loss {float((ours - ref).abs()):.2e}, adv {adv_diff:.2e}")
    res.add_note("trl's _compute_loss also computes logging metrics (clip fractions, entropy), which gradkit's loss does not.")
    return res
