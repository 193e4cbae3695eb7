"""Training the attention model by (normalized) gradient descent, one run or many at once.

The official notebooks train with ``torch.optim.SGD(lr=0.1)`` after dividing each gradient by
``‖g‖_F + eps`` (that is :class:`~gradkit_attsvm.optim.NormalizedGD`), in float64, for 2000
iterations; (K, Q) adds ``eps_machine · (‖K‖² + ‖Q‖²)`` to the loss.  ``optimizer="gd"`` is
the plain (unnormalized) gradient-descent baseline.

:func:`train_runs` trains many independent problems of the same shape in one autograd graph:
every run keeps its own parameter tensors (so NormalizedGD still normalises per run and per
tensor) and the summed loss separates, so each run follows exactly the trajectory it would
follow alone (tested against :func:`train_attention`).

**Saturation stop** (``saturation_tol``, default 1e-10): once the softmax of every example puts less than
``saturation_tol`` of its mass off the top token (computed in log space, so it is exact), float64 can no longer
represent ``1 - s_max`` to useful relative precision: the gradient is ~1e-16 and mostly rounding error, and
normalized GD, which rescales it to length ``lr``, then walks in a rounding-noise direction.  A run stops there (its
parameters are frozen and ``stopped_at`` records the iteration), so directions are judged before float64 saturation.
``saturation_tol=None`` trains blindly for ``iters`` steps (the official notebooks).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from .model import DTYPE, AttentionModel, check_inputs, check_labels
from .optim import EPS64, NormalizedGD

OPTIMIZERS = ("normalized", "gd")
SATURATION_TOL = 1e-12


def off_top_mass(scores: torch.Tensor) -> torch.Tensor:
    """Softmax mass off the top token, ``1 - max_t softmax(scores)_t``, computed without cancellation
    (logsumexp of the other scores minus logsumexp of all); shape ``scores.shape[:-1]``."""
    top = scores.argmax(dim=-1, keepdim=True)
    others = scores.scatter(-1, top, float("-inf"))
    return torch.exp(torch.logsumexp(others, dim=-1) - torch.logsumexp(scores, dim=-1))


def _check_sat(saturation_tol):
    if saturation_tol is None:
        return None
    if isinstance(saturation_tol, bool) or not isinstance(saturation_tol, (int, float)) or \
            not (0 < float(saturation_tol) < 1):
        raise ValueError(f"saturation_tol must be a number in (0, 1) or None, got {saturation_tol!r}")
    return float(saturation_tol)


def make_optimizer(params, optimizer: str, lr: float):
    if optimizer == "normalized":
        return NormalizedGD(params, lr=lr)
    if optimizer == "gd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def _checkpoints(iters: int, record_every: int) -> List[int]:
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be a positive integer, got {record_every!r}")
    pts = list(range(record_every, iters + 1, record_every))
    if not pts or pts[-1] != iters:
        pts.append(iters)
    return pts


@attrs.define
class TrainResult:
    """``model`` (trained), ``iters`` (checkpoint iterations), ``W`` (combined W at each checkpoint,
    (C, d, d) ndarray), ``loss`` and ``max_prob`` (mean over examples of the largest softmax
    probability) at each checkpoint, ``attention`` (final softmax, (n, T)), ``stopped_at`` (iteration at which
    the saturation stop froze the run, None if it trained all ``iters``)."""

    model: AttentionModel
    iters: List[int]
    W: np.ndarray
    loss: np.ndarray
    max_prob: np.ndarray
    attention: np.ndarray
    stopped_at: Optional[int] = None


def train_attention(X, y, Z=None, *, v, param: str = "W", optimizer: str = "normalized", lr: float = 0.1,
                    iters: int = 2000, init: str = "random", init_scale: float = 1.0, seed: int = 0,
                    cross: bool = True, attn_idx: int = 0, m: Optional[int] = None, reg: Optional[float] = None,
                    record_every: int = 1, saturation_tol: Optional[float] = SATURATION_TOL) -> TrainResult:
    """Train one :class:`AttentionModel` on ``(X, y, Z)`` with fixed head ``v``.

    ``reg`` defaults to ``eps_machine`` for (K, Q) and 0 for W (the official settings).  The run stops early
    (parameters frozen for the remaining checkpoints) once every example's off-top softmax mass is below
    ``saturation_tol`` (module doc); ``None`` disables the stop.
    """
    saturation_tol = _check_sat(saturation_tol)
    Xc, Zc = check_inputs(X, Z if cross else None, attn_idx=None if cross else attn_idx)
    y = check_labels(y, Xc.shape[0])
    model = AttentionModel(Xc.shape[-1], param, m=m, cross=cross, attn_idx=attn_idx, v=v, init=init,
                           init_scale=init_scale, seed=seed)
    reg = (EPS64 if param == "KQ" else 0.0) if reg is None else float(reg)
    opt = make_optimizer(list(model.parameters()), optimizer, lr)
    zq = Zc if cross else None
    pts = set(_checkpoints(iters, record_every))
    Ws, losses, probs, its = [], [], [], []
    stopped_at = None
    for it in range(1, iters + 1):
        if stopped_at is None and saturation_tol is not None:
            with torch.no_grad():
                if float(off_top_mass(torch.log(model.attention(Xc, zq))).max()) < saturation_tol:
                    stopped_at = it - 1
        if stopped_at is None:
            opt.zero_grad()
            loss = model.loss(Xc, y, zq, reg=reg)
            loss.backward()
            opt.step()
        if it in pts:
            with torch.no_grad():
                its.append(it)
                Ws.append(model.W.numpy().copy())
                losses.append(float(model.loss(Xc, y, zq, reg=reg)))
                probs.append(float(model.attention(Xc, zq).max(dim=-1).values.mean()))
    with torch.no_grad():
        att = model.attention(Xc, zq).numpy()
    d = Xc.shape[-1]
    return TrainResult(model, its, np.array(Ws).reshape(-1, d, d), np.array(losses), np.array(probs), att,
                       stopped_at)


@attrs.define
class RunsResult:
    """Many runs trained together: ``iters`` (C,), ``W`` (R, C, d, d), ``max_prob`` (R, C),
    ``loss`` (R,) final loss, ``attention`` (R, n, T) final softmax, ``stopped_at`` (R,) iteration at which the
    saturation stop froze each run (-1: trained all ``iters``)."""

    iters: List[int]
    W: np.ndarray
    max_prob: np.ndarray
    loss: np.ndarray
    attention: np.ndarray
    stopped_at: Optional[np.ndarray] = None


def train_runs(problems: Sequence, *, param: str = "W", optimizer: str = "normalized", lr: float = 0.1,
               iters: int = 2000, init: str = "random", init_scale: float = 1.0, seeds: Optional[Sequence[int]] = None,
               m: Optional[int] = None, reg: Optional[float] = None, record_every: int = 10,
               saturation_tol: Optional[float] = SATURATION_TOL) -> RunsResult:
    """Train one cross-attention model per problem ``(X, y, Z, v)`` (all of one shape) side by side.

    Run ``r`` is initialised like ``AttentionModel(..., seed=seeds[r])`` and takes exactly the
    steps :func:`train_attention` would take on its own, including its saturation stop.
    """
    saturation_tol = _check_sat(saturation_tol)
    if len(problems) == 0:
        raise ValueError("train_runs needs at least one problem (X, y, Z, v)")
    seeds = list(range(len(problems))) if seeds is None else list(seeds)
    if len(seeds) != len(problems):
        raise ValueError(f"need one seed per problem: {len(seeds)} seeds for {len(problems)} problems")
    Xs, ys, Zs, vs, models = [], [], [], [], []
    for (X, y, Z, v), s in zip(problems, seeds):
        Xc, Zc = check_inputs(X, Z)
        Xs.append(Xc)
        Zs.append(Zc)
        ys.append(check_labels(y, Xc.shape[0]))
        models.append(AttentionModel(Xc.shape[-1], param, m=m, v=v, init=init, init_scale=init_scale, seed=s))
        vs.append(models[-1].v)
    shapes = {tuple(x.shape) for x in Xs}
    if len(shapes) != 1:
        raise ValueError(f"train_runs needs problems of one shape (n, T, d), got {sorted(shapes)}")
    X, Z, y, v = torch.stack(Xs), torch.stack(Zs), torch.stack(ys), torch.stack(vs)
    reg = (EPS64 if param == "KQ" else 0.0) if reg is None else float(reg)
    if param == "W":
        groups = [[mdl.W_ for mdl in models]]
    else:
        groups = [[mdl.K for mdl in models], [mdl.Q for mdl in models]]
    opt = make_optimizer([p for g in groups for p in g], optimizer, lr)

    def combined():
        if param == "W":
            return torch.stack(groups[0])
        return torch.stack(groups[0]) @ torch.stack(groups[1]).transpose(-1, -2)

    def forward():
        if param == "W":
            scores = torch.einsum("rntd,rde,rne->rnt", X, torch.stack(groups[0]), Z)
        else:
            XK = torch.einsum("rntd,rdk->rntk", X, torch.stack(groups[0]))
            ZQ = torch.einsum("rne,rek->rnk", Z, torch.stack(groups[1]))
            scores = torch.einsum("rntk,rnk->rnt", XK, ZQ)
        s = torch.softmax(scores, dim=-1)
        out = torch.einsum("rnt,rntd,rd->rn", s, X, v)
        per_run = F.softplus(-y * out).mean(dim=-1)
        if reg:
            per_run = per_run + reg * sum(torch.stack(g).pow(2).sum(dim=(-1, -2)) for g in groups)
        return per_run, s, scores

    R = len(problems)
    stopped = np.full(R, -1, dtype=np.int64)
    pts = set(_checkpoints(iters, record_every))
    Ws, probs, its = [], [], []
    for it in range(1, iters + 1):
        opt.zero_grad()
        per_run, _, scores = forward()
        if saturation_tol is not None:
            with torch.no_grad():
                # same test as train_attention (log of the softmax, so both see the same numbers)
                mass = off_top_mass(torch.log(torch.softmax(scores, dim=-1))).amax(dim=-1).numpy()
            newly = (stopped < 0) & (mass < saturation_tol)
            stopped[newly] = it - 1
        active = stopped < 0
        if active.any():
            (per_run * torch.as_tensor(active, dtype=per_run.dtype)).sum().backward()
            if not active.all():
                for g in groups:
                    for r in np.flatnonzero(~active):
                        g[r].grad = None        # a frozen run takes no step (NormalizedGD / SGD skip grad None)
            opt.step()
        if it in pts:
            with torch.no_grad():
                its.append(it)
                Ws.append(combined().numpy().copy())
                probs.append(forward()[1].max(dim=-1).values.mean(dim=-1).numpy())
    with torch.no_grad():
        per_run, s, _ = forward()
    d = X.shape[-1]
    W_arr = np.stack(Ws, axis=1) if Ws else np.zeros((len(problems), 0, d, d))
    P_arr = np.stack(probs, axis=1) if probs else np.zeros((len(problems), 0))
    return RunsResult(its, W_arr, P_arr, per_run.numpy(), s.numpy(), stopped)
