"""SalUn and the classification-unlearning baselines of the paper.

Every unlearner follows the gradkit ``unlearners`` calling convention::

    unlearner = SalUn(model, ratio=0.5)          # bad / non-finite hyperparameters: ValueError
    model = unlearner.unlearn(forget_loader, retain_loader, epochs=10, max_steps=None, seed=0)
    unlearner.last_run                           # {'steps', 'epochs', 'stopped_by', ...}

``forget`` / ``retain`` are re-iterable collections of ``(x, y)`` batches (a
``DataLoader``, a list of tuples).  The model is updated in place and returned.
NaN/inf inputs, labels outside ``[0, C)`` and empty sets raise ``ValueError``
before any update; a run that fails leaves the parameters as they were.

Equations followed (Fan et al., 2024, Sec. 4):

* weight saliency ``g = |∇_θ ℓ_f(θ_o; D_f)|`` with ``ℓ_f = -CE`` (the GA forgetting
  loss), summed over the forget batches, model in eval mode, no optimizer step;
  mask ``m = 1[g ≥ γ]`` with ``γ`` chosen so that the top ``ratio`` fraction of all
  weights (one global ranking) is salient (eq. 5, γ = median for ratio 0.5);
* saliency-masked unlearning ``θ_u = m ⊙ (Δθ + θ_o) + (1 - m) ⊙ θ_o`` (eq. 6),
  implemented as: gradient ⊙ m before the SGD step, then masked-out weights are
  put back to ``θ_o`` and their momentum zeroed (weight decay and momentum would
  otherwise move them);
* objective (eq. 7, random labeling):
  ``E_{D_f}[CE(θ; x, y')] + α E_{D_r}[CE(θ; x, y)]`` with ``y' ≠ y`` uniform.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from gradkit_core.checks import number
from gradkit_core.unlearning import check_budget, check_seed, rollback_on_failure, run_record

from gradkit_support.models import logits_of

Mask = Dict[str, torch.Tensor]

__all__ = [
    "saliency_gradients",
    "saliency_mask",
    "mask_density",
    "apply_mask_to_grads",
    "restore_masked",
    "Unlearner",
    "SalUn",
    "SalUnSoft",
    "RandomLabel",
    "FineTune",
    "GradientAscent",
    "L1Sparse",
    "Retrain",
]


# ---------------------------------------------------------------------- input checks
def check_data(data: Any, role: str) -> Iterable:
    """Return a re-iterable collection of batches, or raise a clear TypeError.

    One-shot iterators (generators) are materialised into a list so that several
    epochs can iterate them.
    """
    if data is None or isinstance(data, (str, bytes, int, float, bool, torch.Tensor)) or not hasattr(data, "__iter__"):
        raise TypeError(f"{role} must be an iterable of (x, y) batches such as a DataLoader or a list of "
                        f"(inputs, labels) tensor pairs; got {type(data).__name__}")
    if iter(data) is data:  # generator / iterator: materialise once
        data = list(data)
    return data


def check_batch(batch: Any, role: str, num_classes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a batch; NaN/inf inputs and labels outside ``[0, num_classes)`` are a ValueError."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{role} batches must be (x, y) pairs of tensors; got a {type(batch).__name__}")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{role} batches must be (x, y) pairs of tensors; got ({type(x).__name__}, "
                        f"{type(y).__name__})")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{role} labels y must be integer class indices; got dtype {y.dtype}")
    if y.dim() != 1 or len(x) != len(y):
        raise ValueError(f"{role} batch has x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}; "
                         "expected y of shape (B,) with B = len(x)")
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{role} batch has {bad} non-finite (NaN/inf) input values; inputs must be finite")
    if len(y) and num_classes is not None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{role} batch has class labels out of range [{lo}, {hi}]; the model has "
                             f"{num_classes} classes, so labels must lie in [0, {num_classes - 1}]")
    return x, y


def count_batches(data: Iterable, role: str, num_classes: Optional[int] = None) -> int:
    """Validate every batch (types, finite inputs, label range) and count the non-empty ones."""
    n = 0
    for batch in data:
        x, _ = check_batch(batch, role, num_classes)
        n += int(len(x) > 0)
    return n


def check_nonempty(data: Iterable, role: str) -> None:
    """An empty set is an error (checked without a full pass where ``len`` exists)."""
    if hasattr(data, "__len__") and len(data) == 0:  # type: ignore[arg-type]
        raise ValueError(f"the {role} set is empty: unlearning needs at least one {role} example")
    n = 0
    for batch in data:
        x, _ = check_batch(batch, role)
        n += len(x)
        if n > 0:
            return
    raise ValueError(f"the {role} set is empty: unlearning needs at least one {role} example")


def check_finite(name: str, value: Any, *, low: float = 0.0, low_open: bool = False,
                 high: Optional[float] = None, high_open: bool = False) -> float:
    """A finite real hyperparameter in the given range (default: >= 0), else an error naming it
    (:func:`gradkit_core.checks.number`)."""
    return number(name, value, low=low, low_open=low_open, high=high, high_open=high_open)


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        was = model.training
        model.eval()
        out = logits_of(model(x[:1]))
        model.train(was)
    if out.dim() != 2:
        raise ValueError(f"the model must return class logits of shape (B, C); got shape {tuple(out.shape)}")
    return int(out.shape[-1])


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = logits_of(model(x))
    if out.dim() != 2:
        raise ValueError(f"the model must return class logits of shape (B, C); got shape {tuple(out.shape)}")
    return out


def _rng_devices(model: nn.Module) -> List[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.is_cuda})


# ---------------------------------------------------------------------- weight saliency
def saliency_gradients(model: nn.Module, forget: Iterable, loss_fn: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """``|Σ_batches ∇_θ ℓ_f|`` for every trainable parameter (model in eval mode, no step).

    ``loss_fn(logits, y)`` defaults to the GA forgetting loss ``-CE``.  The model's
    parameters and ``.grad`` fields are left as they were.
    """
    forget = check_data(forget, "forget")
    loss_fn = loss_fn or (lambda logits, y: -F.cross_entropy(logits, y))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters to rank")
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    was = model.training
    model.eval()
    seen = 0
    try:
        for batch in forget:
            x, y = check_batch(batch, "forget")
            if len(x) == 0:
                continue
            seen += len(x)
            loss = loss_fn(_logits(model, x), y)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), grads):
                if g is not None:
                    acc[n] += g.detach()
    finally:
        model.train(was)
    if seen == 0:
        raise ValueError("the forget set is empty: the saliency mask needs at least one forget example")
    return {n: g.abs() for n, g in acc.items()}


def saliency_mask(model: nn.Module, forget: Iterable, loss_fn: Optional[Callable] = None, *, ratio: float = 0.5,
                  scope: str = "global", gradients: Optional[Dict[str, torch.Tensor]] = None) -> Mask:
    """Hard weight-saliency mask: 1 for the top ``ratio`` fraction of ``|∇_θ ℓ_f|``.

    ``scope="global"`` ranks all weights together (the paper's and the official
    code's default: exactly ``int(ratio · N)`` ones over all ``N`` weights);
    ``scope="per_layer"`` keeps the top ``ratio`` of each tensor instead.
    Ties are broken by ``torch.topk``'s order.
    """
    if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"ratio must be a fraction in [0, 1], got {ratio!r}")
    if scope not in ("global", "per_layer"):
        raise ValueError(f"scope must be 'global' or 'per_layer', got {scope!r}")
    g = gradients if gradients is not None else saliency_gradients(model, forget, loss_fn)
    names = list(g)
    if scope == "global":
        flat = torch.cat([g[n].flatten() for n in names])
        k = int(len(flat) * ratio)
        m = torch.zeros_like(flat)
        if k > 0:
            m[torch.topk(flat, k, sorted=False).indices] = 1.0
        out, i = {}, 0
        for n in names:
            cnt = g[n].numel()
            out[n] = m[i : i + cnt].view_as(g[n])
            i += cnt
        return out
    out = {}
    for n in names:
        flat = g[n].flatten()
        k = int(len(flat) * ratio)
        m = torch.zeros_like(flat)
        if k > 0:
            m[torch.topk(flat, k, sorted=False).indices] = 1.0
        out[n] = m.view_as(g[n])
    return out


def mask_density(mask: Mask) -> float:
    """Fraction of ones in a mask."""
    tot = sum(v.numel() for v in mask.values())
    return float(sum(float(v.sum()) for v in mask.values()) / max(tot, 1))


def apply_mask_to_grads(model: nn.Module, mask: Mask) -> None:
    for n, p in model.named_parameters():
        if p.grad is not None and n in mask:
            p.grad.mul_(mask[n].to(p.grad))


@torch.no_grad()
def restore_masked(model: nn.Module, mask: Mask, theta0: Dict[str, torch.Tensor],
                   optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Put masked-out weights back to ``θ_o`` and zero their momentum (eq. 6)."""
    for n, p in model.named_parameters():
        if n not in mask:
            continue
        m = mask[n].to(p)
        p.mul_(m).add_(theta0[n] * (1 - m))
        if optimizer is not None:
            st = optimizer.state.get(p)
            if st:
                for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
                    buf = st.get(key)
                    if isinstance(buf, torch.Tensor) and buf.shape == p.shape:
                        buf.mul_(m)


# ---------------------------------------------------------------------- base class
class Unlearner:
    """Shared machinery: the gradkit calling convention, input checks, SGD, seeding, rollback.

    ``Unlearner(model, lr=None, momentum=0.9, weight_decay=5e-4, epochs=None, max_steps=None, seed=None)``;
    ``epochs`` / ``max_steps`` given here are the default budget of :meth:`unlearn` (used when the
    call gives neither).  Hyperparameters (paper / official code defaults): SGD, momentum 0.9,
    weight decay 5e-4, constant learning rate (the official MultiStepLR milestones 91/136 never
    trigger within 10 unlearning epochs).
    """

    default_lr: float = 0.01
    default_epochs: int = 10
    #: the update loop trains on the retain set (``retain=None`` is then a ValueError)
    uses_retain: bool = True
    #: the update loop iterates the forget set (else one epoch is one pass over the retain set)
    uses_forget: bool = True

    def __init__(self, model: nn.Module, *, lr: Optional[float] = None, momentum: float = 0.9,
                 weight_decay: float = 5e-4, epochs: Optional[int] = None, max_steps: Optional[int] = None,
                 seed: Optional[int] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        lr = self.default_lr if lr is None else lr
        self.model = model
        self.lr = check_finite("lr", lr, low=0.0, low_open=True)
        self.momentum = check_finite("momentum", momentum, high=1.0, high_open=True)
        self.weight_decay = check_finite("weight_decay", weight_decay)
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            epochs = self.default_epochs
        self.epochs, self.max_steps = epochs, max_steps
        self.seed = check_seed(seed)
        self.history: Dict[str, List[float]] = {"loss": []}
        self.last_run: Optional[Dict[str, Any]] = None

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _steps_per_epoch(self, n_forget: int, n_retain: int) -> int:
        if not self.uses_forget:
            return n_retain
        return n_forget + (n_retain if self.uses_retain else 0)

    @property
    def _done(self) -> bool:
        return self._steps >= self._total_steps

    def _sgd_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach())):
            raise ValueError(f"the unlearning loss became non-finite ({float(loss.detach())}) at step "
                             f"{self._steps + 1}; lower the learning rate (lr={self.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._before_step()
        opt.step()
        self._after_step(opt)
        self._steps += 1
        self.history["loss"].append(float(loss.detach()))

    def _before_step(self) -> None:
        pass

    def _after_step(self, opt: torch.optim.Optimizer) -> None:
        pass

    def _epoch_start(self, epoch: int) -> None:
        pass

    def _begin(self, forget, retain) -> None:
        pass

    def _end(self, opt: torch.optim.Optimizer) -> None:
        pass

    def unlearn(self, forget: Iterable, retain: Optional[Iterable] = None, *, epochs: Optional[int] = None,
                max_steps: Optional[int] = None, seed: Optional[int] = None) -> nn.Module:
        """Unlearn ``forget`` (keeping ``retain``); returns the model, updated in place.

        Budget: ``epochs`` passes (over the forget set, alternating with the retain set for
        methods that use both; over the retain set for FT / l1-sparse / Retrain) and/or at most
        ``max_steps`` SGD updates, whichever ends first; neither: the budget given at
        construction (default ``default_epochs``).  ``self.last_run`` reports ``steps``,
        ``epochs`` (completed, float) and ``stopped_by``.  ``seed`` (default: the constructor's,
        else drawn from the global RNG) seeds random labels, shuffles and dropout inside a
        forked RNG.  Any error restores the model's parameters.
        """
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            epochs, max_steps = self.epochs, self.max_steps
        seed = check_seed(seed)
        seed = self.seed if seed is None else seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        with torch.random.fork_rng(devices=_rng_devices(self.model)):
            torch.manual_seed(seed)
            return self._unlearn(forget, retain, epochs, max_steps, seed)

    def _unlearn(self, forget, retain, epochs, max_steps, seed) -> nn.Module:
        forget = check_data(forget, "forget")
        if retain is None:
            if self.uses_retain:
                raise ValueError(f"{type(self).__name__} trains on the retain set: pass retain=... (a non-empty "
                                 "iterable of (x, y) batches)")
        else:
            retain = check_data(retain, "retain")
        check_nonempty(forget, "forget")
        first = next(x for x, _ in (check_batch(b, "forget") for b in forget) if len(x))
        check_batch((first, torch.zeros(len(first), dtype=torch.long)), "forget")  # finite before the forward
        c = _num_classes(self.model, first)
        n_f = count_batches(forget, "forget", c)
        n_r = count_batches(retain, "retain", c) if retain is not None else 0
        if self.uses_retain and n_r == 0:
            raise ValueError(f"the retain set is empty: {type(self).__name__} needs at least one retain example")
        self.num_classes = c
        spe = self._steps_per_epoch(n_f, n_r)
        planned = epochs if epochs is not None else -(-max_steps // spe)
        total = planned * spe if max_steps is None else min(planned * spe, max_steps)
        self._total_steps, self._planned_epochs, self._spe, self._steps = total, planned, spe, 0
        self.history = {"loss": []}
        with rollback_on_failure(self.model):
            gen = torch.Generator().manual_seed(seed)
            self._begin(forget, retain)
            self.model.train()
            opt = self._optimizer()
            self._run(forget, retain, planned, opt, gen)
            self._end(opt)
        self.model.eval()
        self.last_run = run_record(self._steps, spe, seed=seed, epochs=epochs, max_steps=max_steps)
        return self.model

    def _run(self, forget, retain, epochs, opt, gen) -> None:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} does not define an unlearning loop")

    # shared loops ------------------------------------------------------
    def _retain_pass(self, retain, opt, extra: Optional[Callable[[], torch.Tensor]] = None, scale: float = 1.0) -> None:
        for batch in retain:
            if self._done:
                return
            x, y = check_batch(batch, "retain", self.num_classes)
            if len(x) == 0:
                continue
            loss = scale * F.cross_entropy(_logits(self.model, x), y)
            if extra is not None:
                loss = loss + extra()
            self._sgd_step(opt, loss)


def random_wrong_labels(y: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform labels ``y' != y`` (the paper's random labeling)."""
    shift = torch.randint(1, num_classes, y.shape, generator=gen)
    return (y + shift) % num_classes


# ---------------------------------------------------------------------- random labeling (+ SalUn)
class RandomLabel(Unlearner):
    """Random labeling (RL): forget examples relabelled ``y' != y``, retain examples kept.

    ``schedule="alternate"`` (default, the official CIFAR-10 loop): each epoch is one
    pass over the forget set with random labels, then one pass over the retain set
    (``len(forget) + len(retain)`` steps);
    ``schedule="joint"``: each step minimises ``CE(forget batch, y') + alpha CE(retain
    batch, y)`` (the paper's eq. 7), cycling the forget batches along the retain ones
    (an epoch is one pass over the retain set).
    ``exclude_true=False`` draws labels uniformly from all classes as the code does.
    """

    default_lr = 0.013

    def __init__(self, model: nn.Module, *, schedule: str = "alternate", alpha: float = 1.0,
                 exclude_true: bool = True, **kw):
        super().__init__(model, **kw)
        if schedule not in ("alternate", "joint"):
            raise ValueError(f"schedule must be 'alternate' or 'joint', got {schedule!r}")
        self.schedule, self.alpha, self.exclude_true = schedule, check_finite("alpha", alpha), bool(exclude_true)

    def _steps_per_epoch(self, n_forget: int, n_retain: int) -> int:
        return n_retain if self.schedule == "joint" else n_forget + n_retain

    def _relabel(self, y: torch.Tensor, c: int, gen: torch.Generator) -> torch.Tensor:
        if self.exclude_true:
            return random_wrong_labels(y, c, gen)
        return torch.randint(0, c, y.shape, generator=gen)

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        c = self.num_classes
        if c < 2:
            raise ValueError("random labeling needs at least 2 classes")
        f_batches = [b for b in forget] if self.schedule == "joint" else None
        i = 0
        for epoch in range(epochs):
            if self._done:
                return
            self._epoch_start(epoch)
            if self.schedule == "alternate":
                for batch in forget:
                    if self._done:
                        return
                    x, y = check_batch(batch, "forget", c)
                    if len(x) == 0:
                        continue
                    self._sgd_step(opt, F.cross_entropy(_logits(self.model, x), self._relabel(y, c, gen)))
                self._retain_pass(retain, opt, scale=self.alpha)
            else:
                for batch in retain:
                    if self._done:
                        return
                    xr, yr = check_batch(batch, "retain", c)
                    if len(xr) == 0:
                        continue
                    xf, yf = check_batch(f_batches[i % len(f_batches)], "forget", c)
                    i += 1
                    loss = self.alpha * F.cross_entropy(_logits(self.model, xr), yr)
                    if len(xf):
                        loss = loss + F.cross_entropy(_logits(self.model, xf), self._relabel(yf, c, gen))
                    self._sgd_step(opt, loss)


class SalUn(RandomLabel):
    """SalUn (hard mask): random-label unlearning on the top-``ratio`` salient weights only.

    ``mask`` may be given (a dict name -> 0/1 tensor); otherwise it is computed from
    the forget set at the start of :meth:`unlearn` (``self.mask`` holds it after).
    Masked-out weights are exactly ``theta_o`` after unlearning.
    """

    def __init__(self, model: nn.Module, *, ratio: float = 0.5, scope: str = "global",
                 mask: Optional[Mask] = None, **kw):
        super().__init__(model, **kw)
        self.ratio = check_finite("ratio", ratio, high=1.0)
        if scope not in ("global", "per_layer"):
            raise ValueError(f"scope must be 'global' or 'per_layer', got {scope!r}")
        self.scope = scope
        if mask is not None:
            self._check_mask(mask)
        self.mask: Optional[Mask] = mask
        self._given_mask = mask is not None

    def _check_mask(self, mask: Mask) -> None:
        params = dict(self.model.named_parameters())
        for n, m in mask.items():
            if n not in params:
                raise ValueError(f"mask entry {n!r} is not a parameter of the model")
            if m.shape != params[n].shape:
                raise ValueError(f"mask for {n} has shape {tuple(m.shape)}, parameter has {tuple(params[n].shape)}")
            if not bool(torch.isfinite(m).all()) or not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"mask for {n} must hold only 0 and 1")

    def _begin(self, forget, retain) -> None:
        if not self._given_mask:
            self.mask = saliency_mask(self.model, forget, ratio=self.ratio, scope=self.scope)
        self._theta0 = {n: p.detach().clone() for n, p in self.model.named_parameters() if n in self.mask}

    def _end(self, opt) -> None:
        restore_masked(self.model, self.mask, self._theta0, opt)

    def _before_step(self) -> None:
        apply_mask_to_grads(self.model, self.mask)

    def _after_step(self, opt) -> None:
        restore_masked(self.model, self.mask, self._theta0, opt)


class SalUnSoft(RandomLabel):
    """SalUn-soft, following the official ``RL_proximal`` schedule.

    Random labeling where, after every step, the weight change ``d = theta - theta_e`` from the
    parameters ``theta_e`` at the start of the current epoch is soft-thresholded:
    ``theta <- theta_e + sign(d) max(|d| - tau, 0)`` with ``tau`` the ``k_e``-th smallest ``|d|``
    over all weights.  ``k_e = int(ratio (T - (e L + 1)) / T N)`` is constant within epoch ``e``
    (``L`` steps per epoch, ``T = E L`` planned steps, ``N`` weights), so the sparsity of each
    epoch's change decays linearly over the epochs; ``theta_e`` is re-captured every epoch (the
    official code captures the initial parameters inside its per-epoch function).  No gradient mask.
    """

    def __init__(self, model: nn.Module, *, ratio: float = 0.5, **kw):
        super().__init__(model, **kw)
        self.ratio = check_finite("ratio", ratio, high=1.0)

    def _begin(self, forget, retain) -> None:
        self._params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._n = sum(p.numel() for _, p in self._params)
        self.k_history: List[int] = []

    def _epoch_start(self, epoch: int) -> None:
        self._theta0 = torch.cat([p.detach().flatten() for _, p in self._params]).clone()
        T = self._planned_epochs * self._spe
        self._k = int(self.ratio * (T - (epoch * self._spe + 1)) / T * self._n)
        self.k_history.append(self._k)

    @torch.no_grad()
    def _after_step(self, opt) -> None:
        k = min(self._k, self._n)
        if k <= 0:
            return
        theta = torch.cat([p.detach().flatten() for _, p in self._params])
        d = theta - self._theta0
        tau = torch.kthvalue(d.abs(), k).values
        new = self._theta0 + torch.sign(d) * (d.abs() - tau).clamp_min(0)
        i = 0
        for _, p in self._params:
            p.copy_(new[i : i + p.numel()].view_as(p))
            i += p.numel()


# ---------------------------------------------------------------------- other baselines
class FineTune(Unlearner):
    """FT: continue training on the retain set only (catastrophic forgetting of D_f).
    One epoch is one pass over the retain set."""

    default_lr = 0.01
    uses_forget = False

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        for _ in range(epochs):
            self._retain_pass(retain, opt)


class GradientAscent(Unlearner):
    """GA: maximise the cross-entropy on the forget set (minimise ``-CE``); no retain data."""

    default_lr = 1e-3
    default_epochs = 5
    uses_retain = False

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        for _ in range(epochs):
            for batch in forget:
                if self._done:
                    return
                x, y = check_batch(batch, "forget", self.num_classes)
                if len(x) == 0:
                    continue
                self._sgd_step(opt, -F.cross_entropy(_logits(self.model, x), y))


class L1Sparse(Unlearner):
    """l1-sparse unlearning: FT on retain with ``alpha_t ||theta||_1``, ``alpha_t = alpha(1 - t/epochs)``."""

    default_lr = 0.01
    uses_forget = False

    def __init__(self, model: nn.Module, *, alpha: float = 5e-4, **kw):
        super().__init__(model, **kw)
        self.alpha = check_finite("alpha", alpha)

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        for epoch in range(epochs):
            a = self.alpha * (1 - epoch / epochs)
            self._retain_pass(retain, opt, extra=lambda: a * sum(p.abs().sum() for p in params))


class Retrain(Unlearner):
    """Retrain from scratch on the retain set: every module with ``reset_parameters``
    is re-initialised (under the run's seed), then trained for ``epochs`` passes over D_r.
    The gold standard."""

    default_lr = 0.05
    default_epochs = 30
    uses_forget = False

    def _begin(self, forget, retain) -> None:
        n = 0
        for m in self.model.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
                n += 1
        if n == 0:
            raise ValueError("retrain needs a model whose layers define reset_parameters() to re-initialise")

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        for _ in range(epochs):
            self._retain_pass(retain, opt)
