"""Unlearning objectives (GradDiff, NPO) and an LLM unlearner that runs them with any optimizer grade.

* GradDiff: ``L = -l_f + lam * l_r`` with ``l`` the mean next-token cross-entropy.
* NPO:      ``L = (2/beta) * E_f log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) + lam * l_r``
  where ``log pi(y|x)`` is the sum of the (masked) token log-probabilities of a forget sample and
  ``pi_ref`` the frozen pre-unlearning model; ``log(1 + e^z) = softplus(z)``.

GradDiff with ``lam = 0`` is plain gradient ascent on the forget set (no retain data): the LM
gradient ascent of this plugin, not a separate method.

Batches (the gradkit unlearner convention): a dict ``{"input_ids": LongTensor (B, T),
"attention_mask"?: (B, T), "forget_mask"?: bool (B, T)}`` or a bare ``input_ids`` LongTensor.  In a
forget batch ``forget_mask`` marks the tokens to forget (default: every token after the first); a
retain batch may instead carry ``loss_mask``, the tokens whose retain loss counts.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from gradkit_core.checks import number
from gradkit_core.unlearning import check_budget, check_seed, materialize as _materialize, planned_steps, rollback_on_failure, run_record

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
    from gradkit_support.train import next_token_logprobs  # the one LM log-likelihood of the unlearners

    lp = next_token_logprobs(_logits(model, input_ids, attention_mask), input_ids)
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


def vocab_size(model: nn.Module) -> Optional[int]:
    """The input vocabulary (the shared :func:`gradkit_support.lm_batches.vocab_size`)."""
    from gradkit_support.lm_batches import vocab_size as _vocab

    return _vocab(model)


def parse_batch(batch: Any, what: str, index: int = 0, vocab: Optional[int] = None):
    """``(input_ids, mask, attention_mask)`` of a forget (``forget_mask``) or retain (``loss_mask``) batch,
    validated: integer ids (B, T) with T >= 2 inside the vocabulary, masks of the same shape, and a mask
    that leaves every sample at least one target token (position >= 1)."""
    from gradkit_support.lm_batches import parse_lm_batch

    where = f"{what} batch {index}"
    key = "forget_mask" if what == "forget" else "loss_mask"
    ids, m, attn = parse_lm_batch(batch, where, key, vocab,
                                  renamed=("loss_mask", "secret_mask") if what == "forget" else ())
    tgt = torch.ones_like(ids[:, 1:], dtype=torch.bool) if m is None else m[:, 1:]
    if attn is not None:
        tgt = tgt & attn[:, 1:]
    empty = (~tgt.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{where}: {key if m is not None else 'attention_mask'} of sample(s) {empty} leaves no target "
                         "token after position 0 (position 0 is never predicted); "
                         + ("the forget term would vanish and only the retain term would train" if what == "forget"
                            else "the retain term would vanish"))
    return ids, m, attn


def _batch(batch: Any, what: str):
    """:func:`parse_batch` that also takes an ``(input_ids, loss_mask)`` tuple (the attacks' batches)."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor) and what != "forget":
        batch = {"input_ids": batch[0], **({"loss_mask": batch[1]} if len(batch) > 1 else {})}
    return parse_batch(batch, what)


def _finite(name: str, v: Any, *, positive: bool = False) -> float:
    """A finite number >= 0 (> 0 if ``positive``) (:func:`gradkit_core.checks.number`)."""
    return number(name, v, low=0.0, low_open=positive)


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


#: default budget when ``unlearn`` gets neither ``epochs`` nor ``max_steps``
DEFAULT_MAX_STEPS = 100


class LMUnlearner:
    """GradDiff / NPO unlearning of a causal LM with any optimizer grade.

    ``LMUnlearner(model, objective="npo"|"graddiff", optimizer="adamw", lr=1e-4, beta=0.1, lam=1.0,
    ref_model=None, optimizer_kwargs=None, params=None, epochs=None, max_steps=None, seed=None)``.
    ``params(model)`` may pick the trained parameters (e.g. the last blocks for zeroth order).
    ``unlearn(forget, retain=None, *, epochs=None, max_steps=None, seed=None)`` runs update steps, each on
    the next forget and retain batch (an epoch is one pass over the forget batches; default budget
    ``max_steps=100``) and returns the model.  First-order optimizers get a closure that calls
    ``backward`` (model in train mode); ``zo`` gets a loss-only closure evaluated in eval mode without
    autograd (dropout would add noise to the loss differences, a graph would cost memory);
    ``hybrid-fo-zo`` gets both.  ``last_run`` reports ``steps``, ``epochs`` and ``stopped_by``.
    """

    def __init__(self, model: nn.Module, *, objective: str = "npo", optimizer: Any = "adamw", lr: float = 1e-4,
                 beta: float = 0.1, lam: float = 1.0, ref_model: Optional[nn.Module] = None,
                 optimizer_kwargs: Optional[dict] = None, params: Optional[Callable[[nn.Module], Iterable]] = None,
                 epochs: Optional[int] = None, max_steps: Optional[int] = None, seed: Optional[int] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module causal LM, got {type(model).__name__}")
        if objective not in ("npo", "graddiff"):
            raise ValueError(f"objective must be 'npo' or 'graddiff', got {objective!r}")
        if isinstance(optimizer, str) and optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
        self.model, self.objective, self.optimizer_spec = model, objective, optimizer
        self.lr = _finite("lr", lr, positive=True)
        self.beta = _finite("beta", beta, positive=True)
        self.lam = _finite("lam", lam)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        if isinstance(optimizer, str):  # fail at construction on bad optimizer hyperparameters
            make_optimizer(optimizer, [torch.nn.Parameter(torch.zeros(1))], self.lr, **self.optimizer_kwargs)
        self.params_fn = params
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            max_steps = DEFAULT_MAX_STEPS
        self.epochs, self.max_steps = epochs, max_steps
        self.seed = check_seed(seed)
        self.ref_model = None
        if objective == "npo":
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self.ref_model.eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)
        self.history: list = []
        self.steps_taken = 0
        self.last_run: Optional[Dict[str, Any]] = None
        self._ref_cache: dict = {}

    @property
    def uses_retain(self) -> bool:
        return self.lam > 0

    def loss(self, forget_batch, retain_batch=None) -> torch.Tensor:
        """The objective on one forget batch (and one retain batch when ``lam > 0``)."""
        fids, fmask, fattn = parse_batch(forget_batch, "forget")
        r = None
        if retain_batch is not None and self.lam > 0:
            rids, rmask, rattn = parse_batch(retain_batch, "retain")
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

    def unlearn(self, forget: Iterable, retain: Optional[Iterable] = None, *, epochs: Optional[int] = None,
                max_steps: Optional[int] = None, seed: Optional[int] = None,
                stop_fn: Optional[Callable[[nn.Module], bool]] = None, eval_every: int = 1,
                optimizer: Any = None) -> nn.Module:
        """Run the budget (``epochs`` and/or ``max_steps``, whichever ends first; neither: the constructor's,
        default ``max_steps=100``); ``stop_fn(model) -> True`` every ``eval_every`` steps stops early.
        ``seed`` seeds the run (and the ZO directions of an optimizer built here by name, unless
        ``optimizer_kwargs`` pins a seed); the caller's global RNG is left as it was.  Any error
        restores the model's parameters."""
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            epochs, max_steps = self.epochs, self.max_steps
        seed = check_seed(seed)
        seed = self.seed if seed is None else seed
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
        f_list = _materialize(forget, "forget")
        if not f_list:
            raise ValueError("the forget set is empty: pass at least one batch to unlearn")
        if retain is None:
            if self.uses_retain:
                raise ValueError(f"lam={self.lam} > 0 needs a retain set: pass retain=... (or lam=0 for plain "
                                 "gradient ascent / NPO without a retain term)")
            r_list = []
        else:
            r_list = _materialize(retain, "retain")
            if self.uses_retain and not r_list:
                raise ValueError(f"the retain set is empty: lam={self.lam} > 0 needs retain batches (or pass lam=0)")
        vocab = vocab_size(self.model)
        for i, b in enumerate(f_list):
            parse_batch(b, "forget", i, vocab)
        for i, b in enumerate(r_list):
            parse_batch(b, "retain", i, vocab)
        spe = len(f_list)
        total = planned_steps(epochs, max_steps, spe)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.history, self.steps_taken = [], 0
        stopped = None
        devices = sorted({p.device.index or 0 for p in self.model.parameters() if p.is_cuda})
        with rollback_on_failure(self.model, f"lower lr (lr={self.lr})"):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                stopped = self._loop(f_list, r_list if self.uses_retain else [], total, seed, stop_fn, eval_every,
                                     optimizer)
        self.model.eval()
        self.last_run = run_record(self.steps_taken, spe, seed=seed, epochs=epochs, max_steps=max_steps,
                                   stopped=stopped)
        return self.model

    def _loop(self, f_list, r_list, total, seed, stop_fn, eval_every, optimizer) -> Optional[str]:
        from .optim import HybridFOZO, ZOOptimizer

        params = list(self.params_fn(self.model)) if self.params_fn is not None else \
            [p for p in self.model.parameters() if p.requires_grad]
        spec = optimizer if optimizer is not None else self.optimizer_spec
        kw = dict(self.optimizer_kwargs)
        if spec in ("zo", "hybrid-fo-zo"):
            kw.setdefault("seed", seed)
        opt = make_optimizer(spec, params, self.lr, **kw)
        r_iter = itertools.cycle(r_list) if r_list else None
        model = self.model
        model.train()
        for step in range(total):
            fb = f_list[step % len(f_list)]
            rb = next(r_iter) if r_iter is not None else None

            def closure(fb=fb, rb=rb):
                opt.zero_grad(set_to_none=True)
                loss = self.loss(fb, rb)
                if not bool(torch.isfinite(loss.detach())):
                    raise ValueError(f"the unlearning loss became non-finite at step {step + 1}; lower lr "
                                     f"(lr={self.lr})")
                loss.backward()
                return loss

            def closure_zo(fb=fb, rb=rb):
                was = model.training
                model.eval()  # no dropout noise in the loss differences
                try:
                    with torch.no_grad():
                        return self.loss(fb, rb)
                finally:
                    model.train(was)

            if isinstance(opt, ZOOptimizer):
                loss = opt.step(closure_zo)
            elif isinstance(opt, HybridFOZO):
                loss = opt.step(closure, closure_zo=closure_zo)
            else:
                loss = opt.step(closure)
            self.history.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss))
            self.steps_taken = step + 1
            if (stop_fn is not None and self.steps_taken % eval_every == 0 and self.steps_taken < total
                    and stop_requested(model, stop_fn)):
                return "stop_fn"
        return None
