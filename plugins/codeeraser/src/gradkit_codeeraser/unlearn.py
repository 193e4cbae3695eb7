"""CodeEraser and its baselines (GA, CU, SSGA) for any causal LM that returns logits.

Notation (paper / official code): ``l_t`` per-token cross-entropy of the next token,
``s_t`` = 1 on secret tokens, ``KL_t = sum_v p_ref log(p_ref / p_theta)`` at the
position that predicts token ``t`` with ``p_ref`` from the frozen original model.
Means are over the valid (attention-masked) target tokens of the batch.

=============  ===================================================================  ==================
mode           forget-batch loss                                                    retain-batch loss
=============  ===================================================================  ==================
``ga``         ``-mean_t l_t``                                                      (no retain step)
``cu``         ``-mean_t l_t + kl_sign_forget * lam * mean_t KL_t``                 ``lam*alpha*mean KL``
``ssga``       ``-mean_{s=1} l_t + gamma * mean_{s=0} l_t``                         (no retain step)
``codeeraser`` ``-mean_{s=1} l_t + gamma*mean_{s=0} l_t + kl_sign_forget*lam*mean_{s=1} KL_t``  ``lam*alpha*mean KL``
=============  ===================================================================  ==================

``kl_sign_forget = -1`` is the official code's sign (the forget step *pushes away* from
the reference on the forgotten tokens); ``+1`` makes it a constraint as some summaries
describe it.  Forget and retain steps alternate.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradkit_support.models import logits_of
from gradkit_support.train import stop_requested

MODES = ("codeeraser", "ga", "cu", "ssga")


# ---------------------------------------------------------------------------- building blocks
def forward_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
                   ) -> torch.Tensor:
    """Logits ``(B, T, V)`` of a causal LM: a TinyGPT-style ``model(ids)`` or an HF model (``.logits``)."""
    if attention_mask is None or bool(attention_mask.all()):
        out = model(input_ids)
    else:
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    try:
        logits = logits_of(out)
    except TypeError as exc:
        raise TypeError(f"the model must return logits (a tensor, a tuple starting with logits, or an object "
                        f"with .logits); got {type(out).__name__}") from exc
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(f"expected logits of shape (B, T, V) = ({input_ids.shape[0]}, {input_ids.shape[1]}, V) "
                         f"from a causal LM, got {tuple(logits.shape)}")
    return logits


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy ``(B, T-1)``: position ``t`` predicts ``input_ids[:, t+1]``."""
    lg = logits[:, :-1]
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), input_ids[:, 1:].reshape(-1),
                           reduction="none").view(input_ids.shape[0], -1)


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_ref || p_theta)`` per predicting position ``(B, T-1)``."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    logq = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    return (logq.exp() * (logq - logp)).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; an empty mask gives 0 (still attached to the graph)."""
    m = mask.to(values.dtype)
    n = m.sum()
    return (values * m).sum() / n.clamp_min(1.0)


def _target_mask(mask: Optional[torch.Tensor], input_ids: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones(input_ids.shape[0], input_ids.shape[1] - 1, dtype=torch.bool, device=input_ids.device)
    if mask.shape != input_ids.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal input_ids shape {tuple(input_ids.shape)}")
    return mask[:, 1:].bool()


def _as_forget_batch(batch: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(input_ids, attention_mask, secret_mask)`` from a dict, a tuple ``(ids, secret_mask)`` or a tensor."""
    if isinstance(batch, dict):
        if "input_ids" not in batch:
            raise ValueError(f"a forget batch dict needs 'input_ids' (and 'secret_mask'); got keys {sorted(batch)}")
        return batch["input_ids"], batch.get("attention_mask"), batch.get("secret_mask")
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        sm = batch[1] if len(batch) > 1 else None
        return batch[0], None, sm
    raise TypeError("a forget batch must be a dict {'input_ids', 'secret_mask', 'attention_mask'?}, a tuple "
                    f"(input_ids, secret_mask) or an input_ids tensor; got {type(batch).__name__}")


def _as_retain_batch(batch: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    if isinstance(batch, dict):
        if "input_ids" not in batch:
            raise ValueError(f"a retain batch dict needs 'input_ids'; got keys {sorted(batch)}")
        return batch["input_ids"], batch.get("attention_mask")
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], None
    raise TypeError(f"a retain batch must be a dict with 'input_ids', a tuple or a tensor; got {type(batch).__name__}")


def _materialize(data: Any, what: str) -> list:
    if isinstance(data, (str, bytes, torch.Tensor)) or not hasattr(data, "__iter__"):
        raise TypeError(f"the {what} set must be an iterable of batches (a list or DataLoader), got {type(data).__name__}")
    return list(data)


def _check_ids(ids: torch.Tensor) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype not in (torch.long, torch.int):
        raise ValueError("input_ids must be an integer tensor of shape (B, T)")
    if ids.shape[1] < 2:
        raise ValueError(f"sequences need at least 2 tokens for next-token losses, got T={ids.shape[1]}")


# ---------------------------------------------------------------------------- the unlearner
class CodeEraser:
    """Selective unlearning of memorized secrets (``mode="codeeraser"``) and its baselines.

    ``CodeEraser(model, ref_model=None, mode=..., gamma=0.1, lam=0.1, alpha=1.0, kl_sign_forget=-1,
    lr=1e-3, betas=(0.9, 0.98))``.  ``ref_model`` defaults to a frozen deep copy of ``model`` made
    here, i.e. the pre-unlearning weights.  ``unlearn(forget, retain, max_steps=...)`` alternates a
    forget step and (for ``cu`` / ``codeeraser``) a retain step and returns the model.
    """

    def __init__(self, model: nn.Module, ref_model: Optional[nn.Module] = None, *, mode: str = "codeeraser",
                 gamma: float = 0.1, lam: float = 0.1, alpha: float = 1.0, kl_sign_forget: int = -1,
                 lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.98)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a causal LM returning logits), got {type(model).__name__}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if kl_sign_forget not in (-1, 1):
            raise ValueError(f"kl_sign_forget must be -1 (official code) or +1, got {kl_sign_forget!r}")
        for name, v in (("gamma", gamma), ("lam", lam), ("alpha", alpha), ("lr", lr)):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        self.model, self.mode = model, mode
        self.gamma, self.lam, self.alpha, self.kl_sign_forget = float(gamma), float(lam), float(alpha), int(kl_sign_forget)
        self.lr, self.betas = float(lr), tuple(betas)
        if ref_model is None:
            ref_model = copy.deepcopy(model)
        ref_model.eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
        self.ref_model = ref_model
        self.history: list = []

    @property
    def uses_kl(self) -> bool:
        return self.mode in ("cu", "codeeraser")

    @property
    def selective(self) -> bool:
        return self.mode in ("ssga", "codeeraser")

    @torch.no_grad()
    def _ref_logits(self, ids, attn):
        return forward_logits(self.ref_model, ids, attn)

    # -------------------------------------------------------------- losses
    def forget_loss(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                    secret_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The forget-batch loss of the chosen mode (minimised by the optimizer)."""
        _check_ids(input_ids)
        valid = _target_mask(attention_mask, input_ids)
        if self.selective:
            if secret_mask is None:
                raise ValueError(f"mode {self.mode!r} needs a secret_mask (B, T) marking the secret tokens of each "
                                 "forget sample; build it with gradkit_codeeraser.spans")
            sec = _target_mask(secret_mask, input_ids) & valid
        logits = forward_logits(self.model, input_ids, attention_mask)
        nll = token_nll(logits, input_ids)
        if self.selective:
            loss = -masked_mean(nll, sec) + self.gamma * masked_mean(nll, valid & ~sec)
        else:
            loss = -masked_mean(nll, valid)
        if self.uses_kl:
            kl = token_kl(logits, self._ref_logits(input_ids, attention_mask))
            where = sec if self.selective else valid
            loss = loss + self.kl_sign_forget * self.lam * masked_mean(kl, where)
        return loss

    def retain_loss(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
                    ) -> Optional[torch.Tensor]:
        """``lam * alpha * mean KL`` on a retain batch (``cu`` / ``codeeraser``); ``None`` for GA / SSGA."""
        if not self.uses_kl:
            return None
        _check_ids(input_ids)
        valid = _target_mask(attention_mask, input_ids)
        logits = forward_logits(self.model, input_ids, attention_mask)
        kl = token_kl(logits, self._ref_logits(input_ids, attention_mask))
        return self.lam * self.alpha * masked_mean(kl, valid)

    # -------------------------------------------------------------- loop
    def unlearn(self, forget: Iterable, retain: Optional[Iterable] = None, *, max_steps: int = 100,
                optimizer: Optional[torch.optim.Optimizer] = None, stop_fn: Optional[Callable[[nn.Module], bool]] = None,
                eval_every: int = 1, epochs: Optional[int] = None) -> nn.Module:
        """Alternate forget / retain steps; returns the (in-place) unlearned model.

        ``forget`` yields forget batches (dict ``{'input_ids', 'secret_mask', 'attention_mask'?}`` or
        ``(input_ids, secret_mask)``), cycled until ``max_steps`` forget steps (or ``epochs`` passes)
        are done.  ``retain`` yields retain batches (dict / tuple / tensor of ids); needed by ``cu`` and
        ``codeeraser``.  ``stop_fn(model) -> bool`` is checked every ``eval_every`` forget steps (early
        stopping once memorization falls below the unseen-data thresholds).  ``self.steps_taken`` and
        ``self.history`` (forget / retain losses) record the run.
        """
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        forget_list = _materialize(forget, "forget")
        retain_list = _materialize(retain, "retain") if retain is not None else None
        if len(forget_list) == 0:
            raise ValueError("the forget set is empty: pass at least one batch of samples to unlearn")
        if self.uses_kl and retain is None:
            raise ValueError(f"mode {self.mode!r} needs a retain set (batches of input_ids) for its KL step")
        if epochs is not None:
            max_steps = min(max_steps, epochs * len(forget_list))
        if optimizer is None:
            optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.lr,
                                         betas=self.betas)
        if self.uses_kl and not retain_list:
            raise ValueError(f"mode {self.mode!r} needs a non-empty retain set for its KL step")
        for b in forget_list:  # fail on malformed batches before any update
            ids, _, sec = _as_forget_batch(b)
            _check_ids(ids)
        retain_iter: Optional[Iterator] = itertools.cycle(retain_list) if self.uses_kl else None
        self.model.train()
        self.steps_taken, self.history = 0, []
        for step, batch in enumerate(itertools.cycle(forget_list)):
            if step >= max_steps:
                break
            ids, attn, sec = _as_forget_batch(batch)
            optimizer.zero_grad(set_to_none=True)
            lf = self.forget_loss(ids, attn, sec)
            lf.backward()
            optimizer.step()
            rec = {"forget_loss": float(lf.detach())}
            if retain_iter is not None:
                rids, rattn = _as_retain_batch(next(retain_iter))
                optimizer.zero_grad(set_to_none=True)
                lr_ = self.retain_loss(rids, rattn)
                lr_.backward()
                optimizer.step()
                rec["retain_loss"] = float(lr_.detach())
            self.history.append(rec)
            self.steps_taken = step + 1
            if stop_fn is not None and self.steps_taken % eval_every == 0 and stop_requested(self.model, stop_fn):
                break
        self.model.eval()
        return self.model
