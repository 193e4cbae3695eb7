"""CodeEraser and its baselines (GA, CU, SSGA) for any causal LM that returns logits.

Notation (paper / official code): ``l_t`` per-token cross-entropy of the next token,
``s_t`` = 1 on secret tokens (the batch's ``forget_mask``), ``KL_t = sum_v p_ref log(p_ref / p_theta)``
at the position that predicts token ``t`` with ``p_ref`` from the frozen original model.
NLL means are over the valid (attention-masked) target tokens of the batch.  ``KL[where]`` is,
by default (``kl_reduction="batchmean"``, the official code's ``F.kl_div(..., reduction="batchmean")``),
the sum of ``KL_t`` over the positions in ``where`` divided by the batch size; with
``kl_reduction="token_mean"`` it is the mean over those positions (about ``T - 1`` times weaker).

=============  ===================================================================  ==================
mode           forget-batch loss                                                    retain-batch loss
=============  ===================================================================  ==================
``cu``         ``-mean_t l_t + kl_sign_forget * lam * KL[all]``                     ``lam*alpha*KL[all]``
``ssga``       ``-mean_{s=1} l_t + gamma * mean_{s=0} l_t``                         (no retain step)
``codeeraser`` ``-mean_{s=1} l_t + gamma*mean_{s=0} l_t + kl_sign_forget*lam*KL[s=1]``  ``lam*alpha*KL[all]``
=============  ===================================================================  ==================

Gradient ascent (GA) is ``cu`` with ``lam=0`` (no KL term, no retain step): one implementation of
the ascent term, not a separate mode.  ``kl_sign_forget = -1`` is the official code's sign (the
forget step *pushes away* from the reference on the forgotten tokens); ``+1`` makes it a
constraint as some summaries describe it.  Forget and retain steps alternate.

Calling convention (gradkit ``unlearners``)::

    ul = CodeEraser(model, mode="codeeraser", lr=3e-6)
    model = ul.unlearn(forget, retain=None, *, epochs=None, max_steps=None, seed=None)
    ul.last_run    # {'steps', 'epochs', 'stopped_by', ...}

Batches: a dict ``{"input_ids": LongTensor (B, T), "attention_mask"?: (B, T), "forget_mask"?: bool
(B, T)}`` or a bare ``input_ids`` LongTensor.  ``forget_mask`` (the secret tokens) is required by the
selective modes, and every forget sample must mark at least one target token (position >= 1):
an all-False mask would turn the forget step into descent on the context.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from gradkit_core.checks import number
from gradkit_core.unlearning import check_budget, check_seed, materialize as _materialize, planned_steps, rollback_on_failure, run_record

from gradkit_support.models import logits_of
from gradkit_support.train import stop_requested

MODES = ("codeeraser", "cu", "ssga")
KL_REDUCTIONS = ("batchmean", "token_mean")
#: default budget when ``unlearn`` gets neither ``epochs`` nor ``max_steps``
DEFAULT_MAX_STEPS = 100


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
    if int(input_ids[:, 1:].max()) >= logits.shape[-1]:
        raise ValueError(f"token id {int(input_ids.max())} is out of range for the model's vocabulary of "
                         f"{logits.shape[-1]} tokens")
    return logits


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy ``(B, T-1)``: position ``t`` predicts ``input_ids[:, t+1]`` (the shared
    :func:`gradkit_support.train.next_token_logprobs`, negated)."""
    from gradkit_support.train import next_token_logprobs

    return -next_token_logprobs(logits, input_ids)


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


def masked_batchmean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(values where mask) / B``: torch's ``reduction="batchmean"`` restricted to ``mask``."""
    return (values * mask.to(values.dtype)).sum() / values.shape[0]


def _target_mask(mask: Optional[torch.Tensor], input_ids: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones(input_ids.shape[0], input_ids.shape[1] - 1, dtype=torch.bool, device=input_ids.device)
    if mask.shape != input_ids.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal input_ids shape {tuple(input_ids.shape)}")
    return mask[:, 1:].bool()


def vocab_size(model: nn.Module) -> Optional[int]:
    """The input vocabulary of a causal LM (the shared :func:`gradkit_support.lm_batches.vocab_size`)."""
    from gradkit_support.lm_batches import vocab_size as _vocab

    return _vocab(model)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def parse_batch(batch: Any, role: str, index: int, vocab: Optional[int]) -> Dict[str, Optional[torch.Tensor]]:
    """``{"input_ids", "attention_mask", "forget_mask"}`` of one batch, validated (ValueError / TypeError) by the
    shared :func:`gradkit_support.lm_batches.parse_lm_batch`."""
    from gradkit_support.lm_batches import parse_lm_batch

    ids, fm, attn = parse_lm_batch(batch, f"{role} batch {index}", "forget_mask", vocab,
                                   renamed=("secret_mask", "loss_mask"))
    return {"input_ids": ids, "attention_mask": attn, "forget_mask": fm}


def check_forget_mask(b: Dict[str, Optional[torch.Tensor]], index: int) -> None:
    """Every sample's forget_mask must mark at least one valid target token (position >= 1)."""
    fm = b["forget_mask"]
    if fm is None:
        return
    tgt = fm[:, 1:]
    if b["attention_mask"] is not None:
        tgt = tgt & b["attention_mask"][:, 1:].bool()
    empty = (~tgt.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"forget batch {index}: the forget_mask of sample(s) {empty} marks no token after position 0 "
                         "(position 0 is never predicted); the forget step would only train the context with "
                         "descent. Mark the secret tokens, or drop those samples")


def _finite(name: str, v: Any, *, positive: bool = False) -> float:
    """A finite number >= 0 (> 0 if ``positive``) (:func:`gradkit_core.checks.number`)."""
    return number(name, v, low=0.0, low_open=positive)


# ---------------------------------------------------------------------------- the unlearner
class CodeEraser:
    """Selective unlearning of memorized secrets (``mode="codeeraser"``) and its baselines.

    ``CodeEraser(model, ref_model=None, mode=..., gamma=0.1, lam=0.1, alpha=1.0, kl_sign_forget=-1,
    kl_reduction="batchmean", lr=3e-6, betas=(0.9, 0.98), epochs=None, max_steps=None, seed=None)``.
    ``lr=3e-6`` and ``betas`` are the official code's (for pretrained code LMs of 0.35-7B parameters;
    the tiny GPT of the reproduction, trained from scratch, uses 1e-4).  ``ref_model`` defaults to a
    frozen deep copy of ``model`` made here, i.e. the pre-unlearning weights.  ``epochs`` /
    ``max_steps`` given here are the default budget of :meth:`unlearn` (else ``max_steps=100``).
    """

    def __init__(self, model: nn.Module, ref_model: Optional[nn.Module] = None, *, mode: str = "codeeraser",
                 gamma: float = 0.1, lam: float = 0.1, alpha: float = 1.0, kl_sign_forget: int = -1,
                 kl_reduction: str = "batchmean", lr: float = 3e-6, betas: Tuple[float, float] = (0.9, 0.98),
                 epochs: Optional[int] = None, max_steps: Optional[int] = None, seed: Optional[int] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a causal LM returning logits), got {type(model).__name__}")
        if mode not in MODES:
            hint = " (gradient ascent is mode='cu' with lam=0)" if mode == "ga" else ""
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}{hint}")
        if kl_sign_forget not in (-1, 1):
            raise ValueError(f"kl_sign_forget must be -1 (official code) or +1, got {kl_sign_forget!r}")
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS}, got {kl_reduction!r}")
        self.gamma, self.lam, self.alpha = _finite("gamma", gamma), _finite("lam", lam), _finite("alpha", alpha)
        self.lr = _finite("lr", lr, positive=True)
        if len(tuple(betas)) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.model, self.mode = model, mode
        self.kl_sign_forget, self.kl_reduction = int(kl_sign_forget), kl_reduction
        self.betas = tuple(float(b) for b in betas)
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            max_steps = DEFAULT_MAX_STEPS
        self.epochs, self.max_steps = epochs, max_steps
        self.seed = check_seed(seed)
        if ref_model is None:
            ref_model = copy.deepcopy(model)
        ref_model.eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
        self.ref_model = ref_model
        self.history: list = []
        self.steps_taken = 0
        self.last_run: Optional[Dict[str, Any]] = None

    @property
    def uses_kl(self) -> bool:
        return self.mode in ("cu", "codeeraser") and self.lam > 0

    @property
    def uses_retain(self) -> bool:
        return self.uses_kl

    @property
    def selective(self) -> bool:
        return self.mode in ("ssga", "codeeraser")

    @torch.no_grad()
    def _ref_logits(self, ids, attn):
        return forward_logits(self.ref_model, ids, attn)

    def _kl(self, kl: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return masked_batchmean(kl, where) if self.kl_reduction == "batchmean" else masked_mean(kl, where)

    # -------------------------------------------------------------- losses
    def forget_loss(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                    forget_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The forget-batch loss of the chosen mode (minimised by the optimizer)."""
        b = parse_batch({"input_ids": input_ids, "attention_mask": attention_mask, "forget_mask": forget_mask},
                        "forget", 0, None)
        valid = _target_mask(attention_mask, input_ids)
        if self.selective:
            if forget_mask is None:
                raise ValueError(f"mode {self.mode!r} needs a forget_mask (B, T) marking the secret tokens of each "
                                 "forget sample; build it with gradkit_codeeraser.spans")
            check_forget_mask(b, 0)
            sec = _target_mask(forget_mask, input_ids) & valid
        logits = forward_logits(self.model, input_ids, attention_mask)
        nll = token_nll(logits, input_ids)
        if self.selective:
            loss = -masked_mean(nll, sec) + self.gamma * masked_mean(nll, valid & ~sec)
        else:
            loss = -masked_mean(nll, valid)
        if self.uses_kl:
            kl = token_kl(logits, self._ref_logits(input_ids, attention_mask))
            where = sec if self.selective else valid
            loss = loss + self.kl_sign_forget * self.lam * self._kl(kl, where)
        return loss

    def retain_loss(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None
                    ) -> Optional[torch.Tensor]:
        """``lam * alpha * KL`` on a retain batch (``cu`` / ``codeeraser`` with lam > 0); ``None`` otherwise."""
        if not self.uses_kl:
            return None
        parse_batch({"input_ids": input_ids, "attention_mask": attention_mask}, "retain", 0, None)
        valid = _target_mask(attention_mask, input_ids)
        logits = forward_logits(self.model, input_ids, attention_mask)
        kl = token_kl(logits, self._ref_logits(input_ids, attention_mask))
        return self.lam * self.alpha * self._kl(kl, valid)

    # -------------------------------------------------------------- loop
    def unlearn(self, forget: Iterable, retain: Optional[Iterable] = None, *, epochs: Optional[int] = None,
                max_steps: Optional[int] = None, seed: Optional[int] = None,
                optimizer: Optional[torch.optim.Optimizer] = None,
                stop_fn: Optional[Callable[[nn.Module], bool]] = None, eval_every: int = 1) -> nn.Module:
        """Alternate forget / retain steps; returns the (in-place) unlearned model.

        One step = one forget update (plus one retain update for ``cu`` / ``codeeraser``); an epoch
        is one pass over the forget batches.  Budget: ``epochs`` and/or ``max_steps`` (whichever
        ends first); neither: the constructor's budget (default ``max_steps=100``).
        ``stop_fn(model) -> bool`` is checked every ``eval_every`` steps (early stopping once
        memorization falls below the unseen-data thresholds).  ``self.last_run`` reports ``steps``,
        ``epochs`` (completed, float) and ``stopped_by`` (``"epochs"``, ``"max_steps"`` or
        ``"stop_fn"``); ``self.history`` the forget / retain losses.  Any error (bad batch, non-finite
        loss) restores the model's parameters.
        """
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            epochs, max_steps = self.epochs, self.max_steps
        seed = check_seed(seed)
        seed = self.seed if seed is None else seed
        if not isinstance(eval_every, int) or isinstance(eval_every, bool) or eval_every < 1:
            raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
        forget_list = _materialize(forget, "forget")
        retain_list = _materialize(retain, "retain") if retain is not None else None
        if len(forget_list) == 0:
            raise ValueError("the forget set is empty: pass at least one batch of samples to unlearn")
        if self.uses_retain and retain is None:
            raise ValueError(f"mode {self.mode!r} (lam={self.lam}) needs a retain set (batches of input_ids) for its "
                             "KL step; pass retain=... or use lam=0")
        if self.uses_retain and not retain_list:
            raise ValueError(f"the retain set is empty: mode {self.mode!r} needs retain batches for its KL step")
        vocab = vocab_size(self.model)
        f_batches = [parse_batch(b, "forget", i, vocab) for i, b in enumerate(forget_list)]
        for i, b in enumerate(f_batches):
            if self.selective and b["forget_mask"] is None:
                raise ValueError(f"forget batch {i}: mode {self.mode!r} needs a forget_mask (B, T) marking the secret "
                                 "tokens; build it with gradkit_codeeraser.spans")
            check_forget_mask(b, i)
        r_batches = [parse_batch(b, "retain", i, vocab) for i, b in enumerate(retain_list or [])]
        spe = len(f_batches)
        total = planned_steps(epochs, max_steps, spe)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.steps_taken, self.history = 0, []
        stopped = None
        devices = sorted({p.device.index or 0 for p in self.model.parameters() if p.is_cuda})
        with rollback_on_failure(self.model, f"lower lr (lr={self.lr})"):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                if optimizer is None:
                    optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.lr,
                                                 betas=self.betas)
                retain_iter: Optional[Iterator] = itertools.cycle(r_batches) if self.uses_kl else None
                self.model.train()
                for step in range(total):
                    b = f_batches[step % spe]
                    optimizer.zero_grad(set_to_none=True)
                    lf = self.forget_loss(b["input_ids"], b["attention_mask"], b["forget_mask"])
                    self._check_loss(lf, "forget", step)
                    lf.backward()
                    optimizer.step()
                    rec = {"forget_loss": float(lf.detach())}
                    if retain_iter is not None:
                        rb = next(retain_iter)
                        optimizer.zero_grad(set_to_none=True)
                        lr_ = self.retain_loss(rb["input_ids"], rb["attention_mask"])
                        self._check_loss(lr_, "retain", step)
                        lr_.backward()
                        optimizer.step()
                        rec["retain_loss"] = float(lr_.detach())
                    self.history.append(rec)
                    self.steps_taken = step + 1
                    if (stop_fn is not None and self.steps_taken % eval_every == 0 and self.steps_taken < total
                            and stop_requested(self.model, stop_fn)):
                        stopped = "stop_fn"
                        break
        self.model.eval()
        self.last_run = run_record(self.steps_taken, spe, seed=seed, epochs=epochs, max_steps=max_steps,
                                   stopped=stopped)
        return self.model

    def _check_loss(self, loss: torch.Tensor, what: str, step: int) -> None:
        if not bool(torch.isfinite(loss.detach())):
            raise ValueError(f"the {what} loss became non-finite ({float(loss.detach())}) at step {step + 1}; "
                             f"lower lr (lr={self.lr})")
