"""GCond (Gradient Conductor) and the shared multi-task aggregator interface.

A *multi-task aggregator* owns the gradient-accumulation loop of one optimizer
step: it pulls ``accumulation_steps`` micro-batches from a ``data_provider``,
accumulates one gradient per task ``g_i = sum_micro grad(lambda_i * L_i / n_i)``,
combines them into one gradient and writes it into ``p.grad``.  Any
``torch.optim.Optimizer`` then steps::

    conductor = GradientConductor(model, {"l1": l1, "ssim": ssim}, {"l1": 0.85, "ssim": 0.15},
                                  accumulation_steps=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.0, 0.95))
    for _ in range(steps):
        opt.zero_grad()
        stats = conductor.step(data_provider)     # data_provider() -> (inputs, targets)
        opt.step()

Two accumulation modes (the paper's "classical" and "stochastic"):

* exact (``stochastic=False``): every micro-batch evaluates all K losses
  (one forward, K backward passes), ``n_i = N``;
* stochastic (``stochastic=True``): the N micro-batches are split N/K per task
  and each evaluates only its own loss (N backward passes instead of N*K);
  N must be divisible by K.

``GradientConductor`` then resolves conflicts between the task gradients
(arbitrator + smooth angle remapping, or the legacy 4-zone rule), sums them and
applies its own bias-corrected momentum (optionally sign * LARS trust ratio).
"""

from __future__ import annotations

import abc
import math
from collections import deque
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

GradList = List[torch.Tensor]
DataProvider = Callable[[], Tuple[Any, Any]]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class NonFiniteError(ValueError, FloatingPointError):
    """A non-finite task loss or task gradient: a ``ValueError`` (bad input) that is also the
    ``FloatingPointError`` raised before."""


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_finite_number(name: str, value, *, low: Optional[float] = None, low_open: bool = False) -> float:
    """``float(value)`` if it is a finite real number (>= / > ``low``); a clear ``ValueError`` otherwise."""
    if not _finite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------- flat-list helpers
def _dot(a: GradList, b: GradList) -> float:
    return float(sum(torch.sum(x.float() * y.float()) for x, y in zip(a, b)))


def _norm_sq(a: GradList) -> float:
    return float(sum(torch.sum(x.float() ** 2) for x in a))


def _call_model(model: nn.Module, x: Any) -> Any:
    if isinstance(x, Mapping) and ("args" in x or "kwargs" in x):
        return model(*x.get("args", ()), **x.get("kwargs", {}))
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, (tuple, list)):
        return model(*x)
    return model(x)


class MultiTaskAggregator(abc.ABC):
    """Base class: per-task gradient accumulation, combination, write into ``p.grad``.

    Parameters
    ----------
    model : the ``nn.Module`` being trained; its parameters with
        ``requires_grad=True`` receive the combined gradient.
    loss_fns : ``{task: fn(model_output, target) -> scalar tensor}``.
    lambdas : ``{task: weight}`` (default 1 for every task); task gradients are
        gradients of ``lambda_i * L_i``.
    accumulation_steps : micro-batches per optimizer step (N).
    stochastic : stochastic accumulation (N/K micro-batches per task) instead of exact.
    freeze_bn : put the model in ``eval()`` during accumulation (BatchNorm uses
        running statistics, dropout off) and restore its mode afterwards.
    buffer_dtype : dtype of the per-task accumulators (the paper/official code use bf16).
    shared_forward : in exact mode, evaluate all K losses on one forward pass (default) instead of
        one forward per loss as the official code does (same gradients, more compute).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fns: Mapping[str, Callable[..., torch.Tensor]],
        lambdas: Optional[Mapping[str, float]] = None,
        accumulation_steps: int = 1,
        *,
        stochastic: bool = False,
        freeze_bn: bool = True,
        buffer_dtype: torch.dtype = torch.float32,
        shared_forward: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(loss_fns, Mapping) or not loss_fns:
            raise ValueError("loss_fns must be a non-empty dict {task_name: loss_fn(output, target)}")
        for k, fn in loss_fns.items():
            if not callable(fn):
                raise TypeError(f"loss_fns[{k!r}] must be callable, got {type(fn).__name__}")
        lambdas = {k: 1.0 for k in loss_fns} if lambdas is None else dict(lambdas)
        if set(lambdas) != set(loss_fns):
            raise ValueError(f"lambdas keys {sorted(lambdas)} must match loss_fns keys {sorted(loss_fns)}")
        for k, v in lambdas.items():
            _check_finite_number(f"lambdas[{k!r}] (task weight lambda)", v, low=0.0)
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be a positive int, got {accumulation_steps!r}")
        self.tasks: List[str] = list(loss_fns)
        if stochastic and accumulation_steps % len(self.tasks):
            raise ValueError(
                f"stochastic accumulation splits accumulation_steps={accumulation_steps} micro-batches evenly "
                f"over {len(self.tasks)} tasks: it must be divisible by {len(self.tasks)}"
            )
        self.model = model
        self.loss_fns = dict(loss_fns)
        self.lambdas = {k: float(v) for k, v in lambdas.items()}
        self.accumulation_steps = accumulation_steps
        self.stochastic = bool(stochastic)
        self.freeze_bn = bool(freeze_bn)
        self.buffer_dtype = buffer_dtype
        self.shared_forward = bool(shared_forward)
        self.params: List[nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        for p in self.params:
            if p.is_sparse or p.is_complex():
                raise TypeError(f"parameter of shape {tuple(p.shape)} is sparse/complex; GCond needs dense real tensors")
        self.accumulators: Dict[str, GradList] = {
            k: [torch.zeros_like(p, dtype=buffer_dtype) for p in self.params] for k in self.tasks
        }
        self.last_losses: Dict[str, float] = {}
        self.step_count = 0

    # ------------------------------------------------------------------ accumulation
    def _task_losses(self, out: Any, y: Any, keys: Sequence[str]) -> Dict[str, torch.Tensor]:
        losses = {}
        for k in keys:
            loss = self.loss_fns[k](out, y)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"loss_fns[{k!r}] must return a scalar tensor, got {type(loss).__name__} "
                                 f"{getattr(loss, 'shape', '')}")
            losses[k] = loss.reshape(())
        return losses

    def _add_grads(self, key: str, loss: torch.Tensor, scale: float, retain: bool) -> None:
        grads = torch.autograd.grad(loss * scale, self.params, retain_graph=retain, allow_unused=True)
        for acc, g in zip(self.accumulators[key], grads):
            if g is not None:
                acc.add_(g.detach().to(acc.dtype))

    def accumulate(self, data_provider: DataProvider) -> Dict[str, float]:
        """Fill ``self.accumulators`` with the task gradients; return the mean (un-weighted) task losses."""
        if not callable(data_provider):
            raise TypeError("data_provider must be a callable returning (inputs, targets)")
        for accs in self.accumulators.values():
            for a in accs:
                a.zero_()
        sums = {k: 0.0 for k in self.tasks}
        was_training = self.model.training
        if self.freeze_bn:
            self.model.eval()
        try:
            with torch.enable_grad():
                if self.stochastic:
                    per_task = self.accumulation_steps // len(self.tasks)
                    for k in self.tasks:
                        for _ in range(per_task):
                            x, y = data_provider()
                            loss = self._task_losses(_call_model(self.model, x), y, [k])[k]
                            sums[k] += float(loss.detach()) / per_task
                            self._add_grads(k, loss, self.lambdas[k] / per_task, retain=False)
                else:
                    n = self.accumulation_steps
                    for _ in range(n):
                        x, y = data_provider()
                        if self.shared_forward:  # one forward, K backward passes
                            losses = self._task_losses(_call_model(self.model, x), y, self.tasks)
                            for i, k in enumerate(self.tasks):
                                sums[k] += float(losses[k].detach()) / n
                                self._add_grads(k, losses[k], self.lambdas[k] / n, retain=i < len(self.tasks) - 1)
                        else:  # the official code's cost model: one forward per loss
                            for k in self.tasks:
                                loss = self._task_losses(_call_model(self.model, x), y, [k])[k]
                                sums[k] += float(loss.detach()) / n
                                self._add_grads(k, loss, self.lambdas[k] / n, retain=False)
        finally:
            if self.freeze_bn:
                self.model.train(was_training)
        for k in self.tasks:
            if not math.isfinite(sums[k]):
                raise NonFiniteError(f"loss of task {k!r} is not finite ({sums[k]}); expected finite losses "
                                     "(nothing was changed: .grad and the aggregator's state are as before)")
        for k in self.tasks:
            for p, acc in zip(self.params, self.accumulators[k]):
                if not bool(torch.isfinite(acc).all()):
                    raise NonFiniteError(f"gradient of task {k!r} is not finite (NaN/inf) for a parameter of shape "
                                         f"{tuple(p.shape)} although its loss is finite; expected finite gradients "
                                         "(nothing was changed: .grad and the aggregator's state are as before)")
        self.last_losses = sums
        return sums

    # ------------------------------------------------------------------ combination
    @abc.abstractmethod
    def combine(self, grads: Dict[str, GradList]) -> Tuple[GradList, Dict[str, float]]:
        """Combine the task gradients ``{task: [tensor per parameter]}`` into one gradient (+ statistics)."""

    def _write(self, grad: GradList) -> None:
        for p, g in zip(self.params, grad):
            p.grad = g.detach().to(dtype=p.dtype).clone()

    def step(self, data_provider: DataProvider) -> Dict[str, float]:
        """Accumulate, combine and write the gradient into ``p.grad``; returns statistics."""
        losses = self.accumulate(data_provider)
        with torch.no_grad():
            final, stats = self.combine(self.accumulators)
            self.step_count += 1
            self._write(final)
        stats = dict(stats)
        stats["final_grad_norm"] = math.sqrt(_norm_sq(final))
        stats["step"] = self.step_count
        for k, v in losses.items():
            stats[f"loss/{k}"] = v
        return stats

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.step_count = int(sd["step_count"])

    def _check_list(self, name: str, lst: Sequence[torch.Tensor]) -> None:
        if len(lst) != len(self.params) or any(a.shape != p.shape for a, p in zip(lst, self.params)):
            raise ValueError(f"state {name!r} does not match this model's trainable parameters "
                             f"({len(lst)} tensors vs {len(self.params)} parameters)")


class GradientConductor(MultiTaskAggregator):
    """GCond: accumulate-then-resolve gradient conflict resolution (Limarenko & Studenikina, 2025).

    After accumulating one gradient per task (see :class:`MultiTaskAggregator`):

    1. norm EMA per task ``nu_i <- b*nu_i + (1-b)*||g_i||`` (init 1), optional per-task norm cap;
    2. up to ``projection_max_iters`` (default 2K) times: take the pair with the
       smallest cosine ``c``; stop if ``c >= t_weak``; the arbitrator picks a
       winner; resolve (smooth remapping or legacy 4-zone rule);
    3. ``g = sum_i g_i``; momentum ``m <- beta*m + (1-beta)*g``, ``m_hat = m/(1-beta^t)``;
       ``p.grad = m_hat`` or, with ``use_lion``, ``sign(m_hat)*min(||p||/||m_hat||, clip)*coef``
       (per tensor); ``return_raw_grad`` writes ``g`` instead;
    4. the post-projection task gradients become ``prev`` (used by the arbitrator's
       stability score next step).

    ``dominance_rule``: after one task won the last ``dominance_window``
    resolutions, ``"code"`` (default) makes the *other* task win the next one
    (official ``grad_conductor.py``), so no task is abandoned: on two conflicting
    quadratics GCond then converges near the middle of the segment between the
    optima, as the linear sum, PCGrad and CAGrad do.  ``"readme"`` lets the
    dominant task win again (the sentence in the authors' README); it locks one
    task in and abandons the other (position 0.99 on that segment), so it is
    opt-in only.  ``prev_mode="raw"`` stores the pre-projection
    gradients instead of the post-projection ones the official code keeps.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fns: Mapping[str, Callable[..., torch.Tensor]],
        lambdas: Optional[Mapping[str, float]] = None,
        accumulation_steps: int = 2,
        *,
        momentum_beta: float = 0.85,
        use_lion: bool = False,
        trust_ratio_coef: float = 1e-4,
        trust_ratio_clip: float = 100.0,
        dominance_window: int = 3,
        conflict_thresholds: Tuple[float, float, float] = (-0.8, -0.5, 0.0),
        tie_breaking_weights: Tuple[float, float] = (0.8, 0.2),
        norm_ema_beta: float = 0.95,
        norm_cap: Optional[float] = None,
        remap_power: float = 2.0,
        smooth: bool = True,
        stochastic: bool = True,
        freeze_bn: bool = True,
        shared_forward: bool = True,
        dominance_rule: str = "code",
        prev_mode: str = "projected",
        projection_max_iters: Optional[int] = None,
        return_raw_grad: bool = False,
        buffer_dtype: torch.dtype = torch.bfloat16,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(model, loss_fns, lambdas, accumulation_steps, stochastic=stochastic,
                         freeze_bn=freeze_bn, buffer_dtype=buffer_dtype, shared_forward=shared_forward)
        _check_finite_number("momentum_beta", momentum_beta, low=0.0)
        if not momentum_beta < 1.0:
            raise ValueError(f"momentum_beta must be in [0, 1), got {momentum_beta}")
        _check_finite_number("trust_ratio_coef", trust_ratio_coef, low=0.0, low_open=True)
        _check_finite_number("trust_ratio_clip", trust_ratio_clip, low=0.0, low_open=True)
        _check_finite_number("norm_ema_beta", norm_ema_beta, low=0.0)
        _check_finite_number("remap_power", remap_power, low=0.0, low_open=True)
        _check_finite_number("eps", eps, low=0.0, low_open=True)
        if norm_cap is not None:
            _check_finite_number("norm_cap", norm_cap, low=0.0, low_open=True)
        for i, t in enumerate(conflict_thresholds):
            _check_finite_number(f"conflict_thresholds[{i}]", t)
        for i, t in enumerate(tie_breaking_weights):
            _check_finite_number(f"tie_breaking_weights[{i}]", t, low=0.0)
        if not isinstance(dominance_window, int) or dominance_window < 0:
            raise ValueError(f"dominance_window must be a non-negative int, got {dominance_window!r}")
        if len(conflict_thresholds) != 3:
            raise ValueError(f"conflict_thresholds must be (critical, main, weak), got {conflict_thresholds!r}")
        t_crit, t_main, t_weak = (float(t) for t in conflict_thresholds)
        if not (-1.0 <= t_crit < t_main < t_weak <= 1.0):
            raise ValueError(f"conflict_thresholds must satisfy -1 <= critical < main < weak <= 1, got "
                             f"{conflict_thresholds!r}")
        if len(tie_breaking_weights) != 2 or min(tie_breaking_weights) < 0 or sum(tie_breaking_weights) <= 0:
            raise ValueError(f"tie_breaking_weights must be two non-negative numbers with a positive sum, got "
                             f"{tie_breaking_weights!r}")
        if not 0.0 <= norm_ema_beta < 1.0:
            raise ValueError(f"norm_ema_beta must be in [0, 1), got {norm_ema_beta}")
        if norm_cap is not None and norm_cap <= 0:
            raise ValueError(f"norm_cap must be positive or None, got {norm_cap}")
        if remap_power <= 0:
            raise ValueError(f"remap_power must be positive, got {remap_power}")
        if dominance_rule == "paper":
            raise ValueError("dominance_rule='paper' was renamed 'readme' (the dominant task keeps winning, as the "
                             "authors' README says; it abandons the other task); the default 'code' (the official "
                             "code: the other task wins after a streak) balances conflicting tasks")
        if dominance_rule not in ("code", "readme"):
            raise ValueError(f"dominance_rule must be 'code' (after a streak the other task wins; default) or "
                             f"'readme' (the dominant task keeps winning), got {dominance_rule!r}")
        if prev_mode not in ("projected", "raw"):
            raise ValueError(f"prev_mode must be 'projected' or 'raw', got {prev_mode!r}")
        if projection_max_iters is not None and projection_max_iters < 0:
            raise ValueError(f"projection_max_iters must be >= 0 or None, got {projection_max_iters}")
        self.beta = float(momentum_beta)
        self.use_lion = bool(use_lion)
        self.trust_ratio_coef = float(trust_ratio_coef)
        self.trust_ratio_clip = float(trust_ratio_clip)
        self.dominance_window = dominance_window
        self.thresholds = (t_crit, t_main, t_weak)
        self.tie_breaking_weights = (float(tie_breaking_weights[0]), float(tie_breaking_weights[1]))
        self.norm_ema_beta = float(norm_ema_beta)
        self.norm_cap = norm_cap
        self.remap_power = float(remap_power)
        self.smooth = bool(smooth)
        self.dominance_rule = dominance_rule
        self.prev_mode = prev_mode
        self.max_iters = 2 * len(self.tasks) if projection_max_iters is None else int(projection_max_iters)
        self.return_raw_grad = bool(return_raw_grad)
        self.eps = float(eps)
        # state
        self.momentum: GradList = [torch.zeros_like(p, dtype=buffer_dtype) for p in self.params]
        self.prev: Dict[str, GradList] = {k: [torch.zeros_like(p, dtype=buffer_dtype) for p in self.params]
                                          for k in self.tasks}
        self.norm_ema: Dict[str, float] = {k: 1.0 for k in self.tasks}
        self.history: deque = deque(maxlen=max(dominance_window, 1))

    # ------------------------------------------------------------------ pieces of the method
    def effective_angle(self, c: float) -> float:
        """Smooth remapping of a cosine ``c`` to an angle in ``[0, pi]``."""
        t_crit, t_main, t_weak = self.thresholds
        c = min(max(float(c), -1.0), 1.0)
        if c >= t_main:
            t = min(max((c - t_main) / (t_weak - t_main), 0.0), 1.0)
            return (math.pi / 2) * (1.0 - t)
        if c > t_crit:
            t = (c - t_main) / (t_crit - t_main)
            return math.pi / 2 + (math.pi / 2) * t ** self.remap_power
        return math.pi

    def _dominant(self) -> Optional[str]:
        w = self.dominance_window
        if w == 0 or len(self.history) < w:
            return None
        first = self.history[0]
        return first if all(h == first for h in self.history) else None

    def arbitrate(self, a: str, b: str, grads: Dict[str, GradList]) -> Tuple[str, str]:
        """Return ``(winner, loser)`` for the conflicting pair ``(a, b)``."""
        dom = self._dominant()
        if dom in (a, b):
            other = b if dom == a else a
            return (dom, other) if self.dominance_rule == "readme" else (other, dom)
        scaled = {k: math.sqrt(_norm_sq(grads[k])) / max(self.norm_ema[k], self.eps) for k in (a, b)}
        total = scaled[a] + scaled[b]
        w_stab, w_str = self.tie_breaking_weights
        score = {}
        for k in (a, b):
            n = math.sqrt(_norm_sq(grads[k]))
            n_prev = math.sqrt(_norm_sq(self.prev[k]))
            stability = _dot(grads[k], self.prev[k]) / (n * n_prev + self.eps)
            score[k] = w_stab * max(0.0, stability) + w_str * scaled[k] / (total + self.eps)
        return (b, a) if score[b] > score[a] else (a, b)

    def _record(self, winner: str) -> None:
        if self.dominance_window > 0:
            self.history.append(winner)

    def resolve_pair(self, a: str, b: str, grads: Dict[str, GradList], c: float) -> Optional[str]:
        """Resolve the conflict between tasks ``a`` and ``b`` (cosine ``c``) in place; return the winner."""
        t_crit, t_main, t_weak = self.thresholds
        ga, gb = grads[a], grads[b]
        dot = _dot(ga, gb)
        if self.smooth:
            winner, loser = self.arbitrate(a, b, grads)
            self._record(winner)
            gw, gl = grads[winner], grads[loser]
            nw2, nl2 = _norm_sq(gw), _norm_sq(gl)
            alpha = self.effective_angle(c)
            s_w = math.sin(alpha)
            s_l = math.sin(min(alpha, math.pi / 2))
            coef_w = -s_w * dot / (nl2 + self.eps)
            coef_l = -s_l * dot / (nw2 + self.eps)
            for pw, pl in zip(gw, gl):
                upd_w = pl.float() * coef_w
                upd_l = pw.float() * coef_l
                pw.copy_(pw.float() + upd_w)
                pl.copy_(pl.float() + upd_l)
            return winner
        # legacy 4-zone rule
        if c < t_crit:  # critical: winner takes all
            winner, loser = self.arbitrate(a, b, grads)
            for t in grads[loser]:
                t.zero_()
            self._record(winner)
            return winner
        if c < t_main:  # main: PCGrad the loser onto the winner's normal plane
            winner, loser = self.arbitrate(a, b, grads)
            gw, gl = grads[winner], grads[loser]
            coef = _dot(gl, gw) / (_norm_sq(gw) + self.eps)
            for pl, pw in zip(gl, gw):
                pl.copy_(pl.float() - coef * pw.float())
            self._record(winner)
            return winner
        if c < t_weak:  # weak: symmetric mutual projection (simultaneous)
            ca = dot / (_norm_sq(gb) + self.eps)
            cb = dot / (_norm_sq(ga) + self.eps)
            for pa, pb in zip(ga, gb):
                new_a = pa.float() - ca * pb.float()
                new_b = pb.float() - cb * pa.float()
                pa.copy_(new_a)
                pb.copy_(new_b)
        return None

    def project(self, grads: Dict[str, GradList]) -> Dict[str, float]:
        """Norm EMA update, optional cap and the conflict loop (modifies ``grads`` in place)."""
        stats: Dict[str, float] = {"proj_iters": 0.0, "min_cosine_sim": 1.0}
        norms = {k: math.sqrt(_norm_sq(grads[k])) for k in self.tasks}
        for k, n in norms.items():  # every task is checked before any state (norm EMA) changes
            if not math.isfinite(n):
                raise NonFiniteError(f"gradient of task {k!r} is not finite (norm {n}); expected finite gradients")
        for k in self.tasks:
            n = norms[k]
            stats[f"raw_norm/{k}"] = n
            self.norm_ema[k] = max(self.norm_ema_beta * self.norm_ema[k] + (1 - self.norm_ema_beta) * n, self.eps)
            if self.norm_cap is not None and n > self.norm_cap:
                for t in grads[k]:
                    t.mul_(self.norm_cap / (n + self.eps))
        if len(self.tasks) < 2:
            return stats
        t_weak = self.thresholds[2]
        for it in range(self.max_iters):
            best = None
            norms = {k: _norm_sq(grads[k]) for k in self.tasks}
            for i, a in enumerate(self.tasks):
                for b in self.tasks[i + 1:]:
                    if norms[a] < self.eps or norms[b] < self.eps:
                        continue
                    c = _dot(grads[a], grads[b]) / (math.sqrt(norms[a] * norms[b]) + self.eps)
                    if best is None or c < best[0]:
                        best = (c, a, b)
            if best is not None and it == 0:
                stats["min_cosine_sim"] = best[0]
            if best is None or best[0] >= t_weak:
                break
            c, a, b = best
            stats["proj_iters"] = float(it + 1)
            self.resolve_pair(a, b, grads, c)
        return stats

    def combine(self, grads: Dict[str, GradList]) -> Tuple[GradList, Dict[str, float]]:
        raw = {k: [t.clone() for t in grads[k]] for k in self.tasks} if self.prev_mode == "raw" else None
        stats = self.project(grads)
        g = [sum(grads[k][i].float() for k in self.tasks) for i in range(len(self.params))]
        self.raw_grad = g
        # momentum with bias correction (step_count is incremented after combine)
        t = self.step_count + 1
        bc = 1.0 - self.beta ** t
        out: GradList = []
        for m, g_i, p in zip(self.momentum, g, self.params):
            m.copy_(m.float() * self.beta + (1.0 - self.beta) * g_i)
            m_hat = m.float() / bc
            if self.return_raw_grad:
                out.append(g_i)
            elif self.use_lion:
                p_norm, m_norm = float(p.detach().float().norm()), float(m_hat.norm())
                ratio = 1.0 if (m_norm < self.eps or p_norm < self.eps) else p_norm / m_norm
                out.append(torch.sign(m_hat) * min(ratio, self.trust_ratio_clip) * self.trust_ratio_coef)
            else:
                out.append(m_hat)
        src = raw if raw is not None else grads
        for k in self.tasks:
            for pv, gv in zip(self.prev[k], src[k]):
                pv.copy_(gv)
        return out, stats

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {
            "step_count": self.step_count,
            "momentum": [m.clone() for m in self.momentum],
            "prev": {k: [t.clone() for t in v] for k, v in self.prev.items()},
            "norm_ema": dict(self.norm_ema),
            "history": list(self.history),
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        missing = {"step_count", "momentum", "prev", "norm_ema", "history"} - set(sd)
        if missing:
            raise ValueError(f"GCond state_dict lacks {sorted(missing)}")
        if set(sd["prev"]) != set(self.tasks):
            raise ValueError(f"state_dict tasks {sorted(sd['prev'])} differ from this conductor's {self.tasks}")
        self._check_list("momentum", sd["momentum"])
        self.step_count = int(sd["step_count"])
        for m, v in zip(self.momentum, sd["momentum"]):
            m.copy_(v)
        for k in self.tasks:
            self._check_list(f"prev/{k}", sd["prev"][k])
            for t, v in zip(self.prev[k], sd["prev"][k]):
                t.copy_(v)
        self.norm_ema = {k: float(sd["norm_ema"][k]) for k in self.tasks}
        self.history = deque(sd["history"], maxlen=max(self.dominance_window, 1))
