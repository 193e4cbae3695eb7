"""Unlearning objectives (GradDiff, NPO) and an LLM unlearner that runs them with any optimizer grade.

* GradDiff: ``L = -l_f + lam * l_r`` with ``l`` the mean next-token cross-entropy.
* NPO:      ``L = (2/beta) * E_f log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) + lam * l_r``
  where ``log pi(y|x)`` is the sum of the (masked) token log-probabilities of a forget sample and
  ``pi_ref`` the frozen pre-unlearning model; ``log(1 + e^z) = softplus(z)``.

Batches are ``{'input_ids', 'loss_mask'?, 'attention_mask'?}`` dicts, ``(input_ids, loss_mask)``
tuples or ``input_ids`` tensors; ``loss_mask`` (B, T) marks the tokens whose prediction counts
(default: all tokens after the first).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradkit_support.models import logits_of
from gradkit_support.train import stop_requested

OPTIMIZERS = ("adamw", "adam", "sgd", "sign-sgd", "sign-adam", "zo", "hybrid-fo-zo")


def _logits(model, ids, attn=None):
    out = model(ids) if attn is None or bool(attn.all()) else model(input_ids=ids, attention_mask=attn)
    try:
        lg = logits_of(out)
    except TypeError as exc:
        raise TypeError(f"the model must return logits (tensor, tuple or .logits), got {type(out).__name__}") from exc
    if lg.dim() != 3 or lg.shape[:2] != ids.shape:
        raise ValueError(f"expected causal-LM logits of shape (B, T, V) for ids {tuple(ids.shape)}, got {tuple(lg.shape)}")
    return lg


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, loss_mask: Optional[torch.Tensor] = None,
                   attention_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x_t | x_<t), mask)`` for targets ``t = 1..T-1``, each ``(B, T-1)``."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError("input_ids must be an integer tensor of shape (B, T)")
    lg = _logits(model, input_ids, attention_mask)[:, :-1].float()
    lp = torch.log_softmax(lg, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    m = torch.ones_like(lp, dtype=torch.bool)
    if loss_mask is not None:
        if loss_mask.shape != input_ids.shape:
            raise ValueError(f"loss_mask shape {tuple(loss_mask.shape)} must equal input_ids shape {tuple(input_ids.shape)}")
        m = m & loss_mask[:, 1:].bool()
    if attention_mask is not None:
        m = m & attention_mask[:, 1:].bool()
    return lp, m


def sequence_logprob(model, input_ids, loss_mask=None, attention_mask=None) -> torch.Tensor:
    """``log pi(y|x)`` per sample ``(B,)``: the sum of masked token log-probabilities."""
    lp, m = token_logprobs(model, input_ids, loss_mask, attention_mask)
    return (lp * m).sum(-1)


def mean_nll(model, input_ids, loss_mask=None, attention_mask=None) -> torch.Tensor:
    """Mean next-token cross-entropy over the masked target tokens."""
    lp, m = token_logprobs(model, input_ids, loss_mask, attention_mask)
    return -(lp * m).sum() / m.sum().clamp_min(1)


def graddiff_loss(forget_nll: torch.Tensor, retain_nll: Optional[torch.Tensor], lam: float = 1.0) -> torch.Tensor:
    """GradDiff: ``-l_f + lam * l_r``."""
    loss = -forget_nll
    return loss if retain_nll is None or lam == 0 else loss + lam * retain_nll


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float = 0.1,
             retain_nll: Optional[torch.Tensor] = None, lam: float = 1.0) -> torch.Tensor:
    """NPO: ``(2/beta) mean log(1 + exp(beta (logp - logp_ref))) + lam * l_r``."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    loss = (2.0 / beta) * F.softplus(beta * (logp - logp_ref)).mean()
    return loss if retain_nll is None or lam == 0 else loss + lam * retain_nll


def _batch(batch: Any, what: str):
    if isinstance(batch, dict):
        if "input_ids" not in batch:
            raise ValueError(f"a {what} batch dict needs 'input_ids'; got keys {sorted(batch)}")
        return batch["input_ids"], batch.get("loss_mask"), batch.get("attention_mask")
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], (batch[1] if len(batch) > 1 else None), None
    raise TypeError(f"a {what} batch must be a dict with 'input_ids', a tuple (input_ids, loss_mask) or an ids "
                    f"tensor; got {type(batch).__name__}")


def _materialize(data, what):
    if isinstance(data, (str, bytes, torch.Tensor)) or not hasattr(data, "__iter__"):
        raise TypeError(f"the {what} set must be an iterable of batches (a list or DataLoader), got {type(data).__name__}")
    out = list(data)
    for b in out:
        ids, _, _ = _batch(b, what)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.shape[1] < 2:
            raise ValueError(f"{what} input_ids must be integer tensors of shape (B, T) with T >= 2")
    return out


def make_optimizer(name_or_opt, params, lr: float, **kw) -> torch.optim.Optimizer:
    """An optimizer by name (``adamw``, ``adam``, ``sgd``, ``sign-sgd``, ``sign-adam``, ``zo``, ``hybrid-fo-zo``),
    a ready optimizer, or a callable ``f(params) -> Optimizer``."""
    from .optim import HybridFOZO, SignAdam, SignSGD, ZOOptimizer

    if isinstance(name_or_opt, torch.optim.Optimizer):
        return name_or_opt
    if callable(name_or_opt) and not isinstance(name_or_opt, str):
        return name_or_opt(params)
    table = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD, "sign-sgd": SignSGD,
             "sign-adam": SignAdam, "zo": ZOOptimizer, "hybrid-fo-zo": HybridFOZO}
    if name_or_opt not in table:
        raise ValueError(f"unknown optimizer {name_or_opt!r}; expected one of {sorted(table)}, an Optimizer or a factory")
    if name_or_opt == "adamw":
        kw.setdefault("weight_decay", 0.0)
    return table[name_or_opt](params, lr=lr, **kw)


class LMUnlearner:
    """GradDiff / NPO unlearning of a causal LM with any optimizer grade.

    ``LMUnlearner(model, objective="npo"|"graddiff", optimizer="adamw", lr=1e-4, beta=0.1, lam=1.0,
    ref_model=None, optimizer_kwargs=None, params=None)``.  ``params(model)`` may pick the trained
    parameters (e.g. the last blocks for zeroth order).  ``unlearn(forget, retain, steps=...)`` runs
    ``steps`` updates, each on the next forget and retain batch, and returns the model.
    First-order optimizers get a closure that calls ``backward``; ``zo`` gets a loss-only closure
    evaluated without autograd; ``hybrid-fo-zo`` gets both.
    """

    def __init__(self, model: nn.Module, *, objective: str = "npo", optimizer: Any = "adamw", lr: float = 1e-4,
                 beta: float = 0.1, lam: float = 1.0, ref_model: Optional[nn.Module] = None,
                 optimizer_kwargs: Optional[dict] = None, params: Optional[Callable[[nn.Module], Iterable]] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module causal LM, got {type(model).__name__}")
        if objective not in ("npo", "graddiff"):
            raise ValueError(f"objective must be 'npo' or 'graddiff', got {objective!r}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if isinstance(optimizer, str) and optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
        self.model, self.objective, self.optimizer_spec = model, objective, optimizer
        self.lr, self.beta, self.lam = float(lr), float(beta), float(lam)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.params_fn = params
        self.ref_model = None
        if objective == "npo":
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self.ref_model.eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
        self.history: list = []
        self.steps_taken = 0
        self._ref_cache: dict = {}

    def loss(self, forget_batch, retain_batch=None) -> torch.Tensor:
        """The objective on one forget batch (and one retain batch when ``lam > 0``)."""
        fids, fmask, fattn = _batch(forget_batch, "forget")
        r = None
        if retain_batch is not None and self.lam > 0:
            rids, rmask, rattn = _batch(retain_batch, "retain")
            r = mean_nll(self.model, rids, rmask, rattn)
        if self.objective == "graddiff":
            return graddiff_loss(mean_nll(self.model, fids, fmask, fattn), r, self.lam)
        lp = sequence_logprob(self.model, fids, fmask, fattn)
        key = (id(fids), id(fmask), id(fattn))
        hit = self._ref_cache.get(key)
        if hit is not None and hit[0] is fids:
            lref = hit[1]
        else:  # the reference is frozen: its log-likelihood of a batch is computed once
            with torch.no_grad():
                lref = sequence_logprob(self.ref_model, fids, fmask, fattn)
            self._ref_cache[key] = (fids, lref)
        return npo_loss(lp, lref, self.beta, r, self.lam)

    def unlearn(self, forget: Iterable, retain: Optional[Iterable] = None, *, steps: int = 100,
                stop_fn: Optional[Callable[[nn.Module], bool]] = None, eval_every: int = 1,
                optimizer: Any = None) -> nn.Module:
        """Run ``steps`` unlearning updates (``stop_fn(model) -> True`` every ``eval_every`` steps stops early)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        f_list = _materialize(forget, "forget") if forget is not None else None
        if f_list is None:
            raise TypeError("the forget set must be an iterable of batches, got None")
        if not f_list:
            raise ValueError("the forget set is empty: pass at least one batch to unlearn")
        r_list = _materialize(retain, "retain") if retain is not None else []
        if self.lam > 0 and not r_list:
            raise ValueError(f"lam={self.lam} > 0 needs a non-empty retain set (or pass lam=0)")
        params = list(self.params_fn(self.model)) if self.params_fn is not None else \
            [p for p in self.model.parameters() if p.requires_grad]
        opt = make_optimizer(optimizer if optimizer is not None else self.optimizer_spec, params, self.lr,
                             **self.optimizer_kwargs)
        from .optim import HybridFOZO, ZOOptimizer

        r_iter = itertools.cycle(r_list) if r_list else None
        self.model.train()
        self.history, self.steps_taken = [], 0
        for step, fb in enumerate(itertools.cycle(f_list)):
            if step >= steps:
                break
            rb = next(r_iter) if r_iter is not None else None

            def closure(fb=fb, rb=rb):
                opt.zero_grad(set_to_none=True)
                loss = self.loss(fb, rb)
                loss.backward()
                return loss

            def closure_zo(fb=fb, rb=rb):
                with torch.no_grad():
                    return self.loss(fb, rb)

            if isinstance(opt, ZOOptimizer):
                loss = opt.step(closure_zo)
            elif isinstance(opt, HybridFOZO):
                loss = opt.step(closure, closure_zo=closure_zo)
            else:
                loss = opt.step(closure)
            self.history.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss))
            self.steps_taken = step + 1
            if stop_fn is not None and self.steps_taken % eval_every == 0 and stop_requested(self.model, stop_fn):
                break
        self.model.eval()
        return self.model
