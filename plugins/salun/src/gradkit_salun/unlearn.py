"""SalUn and the classification-unlearning baselines of the paper.

Every unlearner follows the gradkit ``unlearners`` contract::

    model = SalUn(model, ratio=0.5).unlearn(forget_loader, retain_loader, epochs=10)

``forget`` / ``retain`` are re-iterable collections of ``(x, y)`` batches (a
``DataLoader``, a list of tuples).  The model is updated in place and returned.

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


def check_batch(batch: Any, role: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{role} batches must be (x, y) pairs of tensors; got a {type(batch).__name__}")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{role} batches must be (x, y) pairs of tensors; got ({type(x).__name__}, "
                        f"{type(y).__name__})")
    if y.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16) or y.dtype == torch.bool:
        raise TypeError(f"{role} labels y must be integer class indices; got dtype {y.dtype}")
    if y.dim() != 1 or len(x) != len(y):
        raise ValueError(f"{role} batch has x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}; "
                         "expected y of shape (B,) with B = len(x)")
    return x, y


def check_nonempty(data: Iterable, role: str) -> None:
    """An empty forget set is an error (checked without a full pass where ``len`` exists)."""
    if hasattr(data, "__len__") and len(data) == 0:  # type: ignore[arg-type]
        raise ValueError(f"the {role} set is empty: unlearning needs at least one {role} example")
    n = 0
    for batch in data:
        x, _ = check_batch(batch, role)
        n += len(x)
        if n > 0:
            return
    raise ValueError(f"the {role} set is empty: unlearning needs at least one {role} example")


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
    """Shared machinery: input checks, SGD with momentum / weight decay, seeding.

    Hyperparameters (paper / official code defaults): SGD, momentum 0.9,
    weight decay 5e-4, constant learning rate (the official MultiStepLR milestones
    91/136 never trigger within 10 unlearning epochs).
    """

    default_lr: float = 0.01
    default_epochs: int = 10

    def __init__(self, model: nn.Module, *, lr: Optional[float] = None, momentum: float = 0.9,
                 weight_decay: float = 5e-4, epochs: Optional[int] = None, seed: int = 0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        lr = self.default_lr if lr is None else lr
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.model = model
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.epochs = self._check_epochs(self.default_epochs if epochs is None else epochs)
        self.seed = int(seed)
        self.history: Dict[str, List[float]] = {"loss": []}

    @staticmethod
    def _check_epochs(epochs: Any) -> int:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        return epochs

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _prepare(self, forget: Any, retain: Any, epochs: Optional[int]):
        forget = check_data(forget, "forget")
        retain = check_data(retain, "retain")
        check_nonempty(forget, "forget")
        epochs = self.epochs if epochs is None else self._check_epochs(epochs)
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        return forget, retain, epochs, gen

    def _sgd_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._before_step()
        opt.step()
        self._after_step(opt)
        self.history["loss"].append(float(loss.detach()))

    def _before_step(self) -> None:
        pass

    def _after_step(self, opt: torch.optim.Optimizer) -> None:
        pass

    def unlearn(self, forget: Iterable, retain: Iterable, epochs: Optional[int] = None) -> nn.Module:
        forget, retain, epochs, gen = self._prepare(forget, retain, epochs)
        self.model.train()
        opt = self._optimizer()
        self._run(forget, retain, epochs, opt, gen)
        self.model.eval()
        return self.model

    def _run(self, forget, retain, epochs, opt, gen) -> None:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} does not define an unlearning loop")

    # shared loops ------------------------------------------------------
    def _retain_pass(self, retain, opt, extra: Optional[Callable[[], torch.Tensor]] = None) -> None:
        for batch in retain:
            x, y = check_batch(batch, "retain")
            if len(x) == 0:
                continue
            loss = F.cross_entropy(_logits(self.model, x), y)
            if extra is not None:
                loss = loss + extra()
            self._sgd_step(opt, loss)


def random_wrong_labels(y: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform labels ``y' ≠ y`` (the paper's random labeling)."""
    shift = torch.randint(1, num_classes, y.shape, generator=gen)
    return (y + shift) % num_classes


# ---------------------------------------------------------------------- random labeling (+ SalUn)
class RandomLabel(Unlearner):
    """Random labeling (RL): forget examples relabelled ``y' ≠ y``, retain examples kept.

    ``schedule="alternate"`` (default, the official CIFAR-10 loop): each epoch is one
    pass over the forget set with random labels, then one pass over the retain set;
    ``schedule="joint"``: each step minimises ``CE(forget batch, y') + α CE(retain
    batch, y)`` (the paper's eq. 7), cycling the forget batches along the retain ones.
    ``exclude_true=False`` draws labels uniformly from all classes as the code does.
    """

    default_lr = 0.013

    def __init__(self, model: nn.Module, *, schedule: str = "alternate", alpha: float = 1.0,
                 exclude_true: bool = True, **kw):
        super().__init__(model, **kw)
        if schedule not in ("alternate", "joint"):
            raise ValueError(f"schedule must be 'alternate' or 'joint', got {schedule!r}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.schedule, self.alpha, self.exclude_true = schedule, float(alpha), bool(exclude_true)

    def _relabel(self, y: torch.Tensor, c: int, gen: torch.Generator) -> torch.Tensor:
        if self.exclude_true:
            return random_wrong_labels(y, c, gen)
        return torch.randint(0, c, y.shape, generator=gen)

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        first = check_batch(next(iter(forget)), "forget")[0]
        c = _num_classes(self.model, first)
        if c < 2:
            raise ValueError("random labeling needs at least 2 classes")
        for _ in range(epochs):
            if self.schedule == "alternate":
                for batch in forget:
                    x, y = check_batch(batch, "forget")
                    if len(x) == 0:
                        continue
                    loss = F.cross_entropy(_logits(self.model, x), self._relabel(y, c, gen))
                    self._sgd_step(opt, loss)
                for batch in retain:
                    x, y = check_batch(batch, "retain")
                    if len(x) == 0:
                        continue
                    self._sgd_step(opt, self.alpha * F.cross_entropy(_logits(self.model, x), y))
            else:
                f_batches = list(forget)
                i = 0
                for batch in retain:
                    xr, yr = check_batch(batch, "retain")
                    xf, yf = check_batch(f_batches[i % len(f_batches)], "forget")
                    i += 1
                    loss = F.cross_entropy(_logits(self.model, xf), self._relabel(yf, c, gen))
                    if len(xr):
                        loss = loss + self.alpha * F.cross_entropy(_logits(self.model, xr), yr)
                    self._sgd_step(opt, loss)


class SalUn(RandomLabel):
    """SalUn (hard mask): random-label unlearning on the top-``ratio`` salient weights only.

    ``mask`` may be given (a dict name → 0/1 tensor); otherwise it is computed from
    the forget set at the start of :meth:`unlearn` (``self.mask`` holds it after).
    Masked-out weights are exactly ``θ_o`` after unlearning.
    """

    def __init__(self, model: nn.Module, *, ratio: float = 0.5, scope: str = "global",
                 mask: Optional[Mask] = None, **kw):
        super().__init__(model, **kw)
        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must be a fraction in [0, 1], got {ratio!r}")
        if scope not in ("global", "per_layer"):
            raise ValueError(f"scope must be 'global' or 'per_layer', got {scope!r}")
        self.ratio, self.scope = float(ratio), scope
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

    def unlearn(self, forget: Iterable, retain: Iterable, epochs: Optional[int] = None) -> nn.Module:
        forget, retain, epochs, gen = self._prepare(forget, retain, epochs)
        if not self._given_mask:
            self.mask = saliency_mask(self.model, forget, ratio=self.ratio, scope=self.scope)
        self._theta0 = {n: p.detach().clone() for n, p in self.model.named_parameters() if n in self.mask}
        self.model.train()
        opt = self._optimizer()
        self._run(forget, retain, epochs, opt, gen)
        restore_masked(self.model, self.mask, self._theta0, opt)
        self.model.eval()
        return self.model

    def _before_step(self) -> None:
        apply_mask_to_grads(self.model, self.mask)

    def _after_step(self, opt) -> None:
        restore_masked(self.model, self.mask, self._theta0, opt)


class SalUnSoft(RandomLabel):
    """SalUn-soft (official ``RL_proximal``): random labeling where, after each step,
    the weight change ``d = θ - θ_o`` is soft-thresholded at the ``k``-th smallest
    ``|d|`` with ``k = ratio · (1 - t/T) · N`` (the sparsity decays linearly to 0):
    ``θ ← θ_o + sign(d)·max(|d| - τ, 0)``.  No gradient mask.
    """

    def __init__(self, model: nn.Module, *, ratio: float = 0.5, **kw):
        super().__init__(model, **kw)
        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
            raise ValueError(f"ratio must be a fraction in [0, 1], got {ratio!r}")
        self.ratio = float(ratio)

    def unlearn(self, forget: Iterable, retain: Iterable, epochs: Optional[int] = None) -> nn.Module:
        forget, retain, epochs, gen = self._prepare(forget, retain, epochs)
        self._params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._theta0 = torch.cat([p.detach().flatten() for _, p in self._params]).clone()
        count = lambda d: len(d) if hasattr(d, "__len__") else sum(1 for _ in d)  # noqa: E731
        n_steps = count(retain) if self.schedule == "joint" else count(forget) + count(retain)
        self._total, self._t = max(epochs * n_steps, 1), 0
        self.model.train()
        opt = self._optimizer()
        self._run(forget, retain, epochs, opt, gen)
        self.model.eval()
        return self.model

    @torch.no_grad()
    def _after_step(self, opt) -> None:
        self._t += 1
        k = int(self.ratio * (self._total - self._t) / self._total * len(self._theta0))
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
    """FT: continue training on the retain set only (catastrophic forgetting of D_f)."""

    default_lr = 0.01

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        for _ in range(epochs):
            self._retain_pass(retain, opt)


class GradientAscent(Unlearner):
    """GA: maximise the cross-entropy on the forget set (minimise ``-CE``)."""

    default_lr = 1e-3
    default_epochs = 5

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        for _ in range(epochs):
            for batch in forget:
                x, y = check_batch(batch, "forget")
                if len(x) == 0:
                    continue
                self._sgd_step(opt, -F.cross_entropy(_logits(self.model, x), y))


class L1Sparse(Unlearner):
    """ℓ1-sparse unlearning: FT on retain with ``α_t‖θ‖₁``, ``α_t = α(1 - t/epochs)``."""

    default_lr = 0.01

    def __init__(self, model: nn.Module, *, alpha: float = 5e-4, **kw):
        super().__init__(model, **kw)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        for epoch in range(epochs):
            a = self.alpha * (1 - epoch / epochs)
            self._retain_pass(retain, opt, extra=lambda: a * sum(p.abs().sum() for p in params))


class Retrain(Unlearner):
    """Retrain from scratch on the retain set: every module with ``reset_parameters``
    is re-initialised (seeded), then trained for ``epochs`` on D_r.  The gold standard."""

    default_lr = 0.05
    default_epochs = 30

    def _run(self, forget, retain, epochs, opt, gen) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            n = 0
            for m in self.model.modules():
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
                    n += 1
        if n == 0:
            raise ValueError("retrain needs a model whose layers define reset_parameters() to re-initialise")
        opt.state.clear()
        for _ in range(epochs):
            self._retain_pass(retain, opt)
