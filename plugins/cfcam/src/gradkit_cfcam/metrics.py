"""Faithfulness, localisation, robustness and latency metrics for saliency maps.

Definitions follow the CF-CAM paper's metric code (``metrics/{ad,ai,auc,robust}.py``)
except where noted.  ``model`` is any classifier returning ``(B, C)`` logits; ``x`` is
``(B, C, H, W)``; ``cams`` is ``(B, H, W)`` in ``[0, 1]``; ``targets`` is ``(B,)`` class ids.
All model evaluations run under ``torch.no_grad()`` in eval mode, batched, and the
model's training flags are restored afterwards.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .cams import _logits_of


# ---------------------------------------------------------------------- helpers
@contextmanager
def _eval_mode(model):
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in modes.items():
            m.training = flag


def _check(x: torch.Tensor, cams: torch.Tensor, targets) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(cams, torch.Tensor) or cams.dim() != 3:
        raise ValueError(f"cams must be a (B, H, W) tensor, got {getattr(cams, 'shape', type(cams).__name__)}")
    if cams.shape[0] != x.shape[0] or cams.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"cams {tuple(cams.shape)} do not match inputs {tuple(x.shape)}: expected (B, H, W) of the inputs")
    t = torch.as_tensor(targets, device=x.device).long().reshape(-1)
    if t.numel() == 1 and x.shape[0] > 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise ValueError(f"got {t.numel()} targets for {x.shape[0]} inputs")
    return t


@torch.no_grad()
def class_probs(model, x: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probability of ``targets`` for every input (batched)."""
    out = []
    for s in range(0, len(x), batch_size):
        p = F.softmax(_logits_of(model(x[s : s + batch_size])).float(), dim=1)
        out.append(p.gather(1, targets[s : s + batch_size].view(-1, 1))[:, 0])
    return torch.cat(out)


def explanation_masks(cams: torch.Tensor, mode: str = "threshold", threshold: float = 0.5) -> torch.Tensor:
    """The mask ``M`` applied to the image: ``cam > threshold`` (official code) or the map itself (``soft``)."""
    if mode == "threshold":
        return (cams > threshold).to(cams.dtype)
    if mode == "soft":
        return cams
    raise ValueError(f"mode must be 'threshold' or 'soft', got {mode!r}")


# ---------------------------------------------------------------------- Average Drop / Increase
def average_drop(model, x, cams, targets, *, mode: str = "threshold", threshold: float = 0.5,
                 clip: bool = True, reduce: bool = True):
    """Average Drop in percent (lower is better): ``100 * mean(max(0, p_c(x) - p_c(x*M)) / p_c(x))``.

    ``M`` is ``cam > 0.5`` (the paper's code, ``mode="threshold"``) or the map itself
    (``mode="soft"``, Grad-CAM++'s definition).  ``clip=False`` drops the ``max(0, .)``
    like the official code.  ``reduce=False`` returns per-example drops.
    """
    t = _check(x, cams, targets)
    with _eval_mode(model):
        p = class_probs(model, x, t)
        pm = class_probs(model, x * explanation_masks(cams, mode, threshold)[:, None], t)
    d = p - pm
    if clip:
        d = d.clamp_min(0)
    drop = 100.0 * d / p.clamp_min(1e-12)
    return float(drop.mean()) if reduce else drop


def average_increase(model, x, cams, targets, *, mode: str = "threshold", threshold: float = 0.5,
                     reduce: bool = True):
    """Average Increase in percent (higher is better): share of inputs with ``p_c(x*M) > p_c(x)``."""
    t = _check(x, cams, targets)
    with _eval_mode(model):
        p = class_probs(model, x, t)
        pm = class_probs(model, x * explanation_masks(cams, mode, threshold)[:, None], t)
    inc = 100.0 * (pm > p).float()
    return float(inc.mean()) if reduce else inc


# ---------------------------------------------------------------------- Deletion / Insertion
@torch.no_grad()
def deletion_insertion_curves(model, x, cams, targets, *, steps: int = 101, baseline: float = 0.0,
                              batch_size: int = 128) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Per-example deletion and insertion curves ``(B, steps)`` and the fractions ``(steps,)``.

    Pixels are ranked by the map (highest first).  Step ``k < steps - 1`` removes
    (deletion) or reveals (insertion) the top ``k * floor(HW / (steps - 1))`` pixels,
    the last step all of them (as in the paper's ``metrics/auc.py``); removed pixels
    take the value ``baseline``; the score is the softmax probability of the target.
    """
    t = _check(x, cams, targets)
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    b, _, h, w = x.shape
    hw = h * w
    step = hw // (steps - 1)
    counts = torch.tensor([hw if k == steps - 1 else k * step for k in range(steps)], device=x.device)
    dels, inss = [], []
    with _eval_mode(model):
        for i in range(b):
            order = torch.argsort(cams[i].flatten(), descending=True, stable=True)
            rank = torch.empty(hw, dtype=torch.long, device=x.device)
            rank[order] = torch.arange(hw, device=x.device)
            top = (rank[None, :] < counts[:, None]).view(steps, 1, h, w).to(x.dtype)  # (steps, 1, H, W)
            xi = x[i : i + 1]
            base = torch.full_like(xi, baseline)
            deleted = xi * (1 - top) + base * top
            inserted = xi * top + base * (1 - top)
            ti = t[i].expand(steps)
            dels.append(class_probs(model, deleted, ti, batch_size))
            inss.append(class_probs(model, inserted, ti, batch_size))
    return torch.stack(dels), torch.stack(inss), np.linspace(0.0, 1.0, steps)


def _auc(curves: torch.Tensor, frac: np.ndarray) -> np.ndarray:
    return np.trapezoid(curves.cpu().numpy(), frac, axis=1) if hasattr(np, "trapezoid") else np.trapz(curves.cpu().numpy(), frac, axis=1)


def deletion_insertion_auc(model, x, cams, targets, *, steps: int = 101, baseline: float = 0.0,
                           batch_size: int = 128, reduce: bool = True):
    """Deletion AUC (lower is better) and insertion AUC (higher is better), trapezoid rule."""
    d, i, frac = deletion_insertion_curves(model, x, cams, targets, steps=steps, baseline=baseline,
                                           batch_size=batch_size)
    da, ia = _auc(d, frac), _auc(i, frac)
    return (float(da.mean()), float(ia.mean())) if reduce else (da, ia)


def deletion_auc(model, x, cams, targets, *, steps: int = 101, baseline: float = 0.0, reduce: bool = True):
    """Deletion AUC (lower is better): area under p_c as the most salient pixels are removed."""
    d, _, frac = deletion_insertion_curves(model, x, cams, targets, steps=steps, baseline=baseline)
    a = _auc(d, frac)
    return float(a.mean()) if reduce else a


def insertion_auc(model, x, cams, targets, *, steps: int = 101, baseline: float = 0.0, reduce: bool = True):
    """Insertion AUC (higher is better): area under p_c as the most salient pixels are revealed."""
    _, i, frac = deletion_insertion_curves(model, x, cams, targets, steps=steps, baseline=baseline)
    a = _auc(i, frac)
    return float(a.mean()) if reduce else a


# ---------------------------------------------------------------------- localisation
def energy_in_mask(cams: torch.Tensor, masks: torch.Tensor, reduce: bool = True):
    """Share of the map's energy inside the ground-truth mask (higher is better; 0 for an all-zero map)."""
    if cams.shape != masks.shape:
        raise ValueError(f"cams {tuple(cams.shape)} and masks {tuple(masks.shape)} must have the same shape")
    m = masks.to(cams.dtype)
    tot = cams.flatten(1).sum(1)
    inside = (cams * m).flatten(1).sum(1)
    e = torch.where(tot > 0, inside / tot.clamp_min(1e-12), torch.zeros_like(tot))
    return float(e.mean()) if reduce else e


def pointing_game(cams: torch.Tensor, masks: torch.Tensor, reduce: bool = True):
    """Share of maps whose maximum lies inside the ground-truth mask (higher is better)."""
    if cams.shape != masks.shape:
        raise ValueError(f"cams {tuple(cams.shape)} and masks {tuple(masks.shape)} must have the same shape")
    idx = cams.flatten(1).argmax(1)
    hit = masks.flatten(1).gather(1, idx[:, None])[:, 0].float()
    return float(hit.mean()) if reduce else hit


# ---------------------------------------------------------------------- robustness
def ssim_mse(a: torch.Tensor, b: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Per-example SSIM (scikit-image, ``data_range=1``) and MSE between two batches of maps."""
    from skimage.metrics import structural_similarity

    an, bn = a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()
    win = min(7, *an.shape[-2:])
    win = win if win % 2 == 1 else win - 1
    s = np.array([structural_similarity(p, q, data_range=1.0, win_size=win) for p, q in zip(an, bn)])
    m = ((an - bn) ** 2).reshape(len(an), -1).mean(1)
    return s, m


def cam_robustness(explainer, x, targets, *, sigmas: Sequence[float] = (0.5, 1.0, 2.0, 4.0), seed: int = 0,
                   clean: Optional[torch.Tensor] = None) -> Dict[float, Dict[str, float]]:
    """Stability of the map under Gaussian noise on the raw gradient (SSIM: higher is better; MSE: lower).

    For each ``sigma`` the explainer is called with ``grad_noise=sigma`` (noise of std
    ``sigma * std(G)`` added to the raw gradient ``d y_c / d A`` before any
    method-specific processing) and compared with the noise-free map.
    """
    if clean is None:
        clean = explainer(x, targets=targets)
    out = {}
    for j, s in enumerate(sigmas):
        gen = torch.Generator().manual_seed(int(seed) * 1000 + j)
        noisy = explainer(x, targets=targets, grad_noise=float(s), generator=gen)
        ss, mm = ssim_mse(clean, noisy)
        out[float(s)] = {"ssim": float(ss.mean()), "mse": float(mm.mean())}
    return out


def class_sensitivity(explainer, x, class_a, class_b) -> Dict[str, float]:
    """How different the maps for two classes are: mean absolute difference (higher means more
    class-discriminative), SSIM between them (lower means more class-discriminative)."""
    ma = explainer(x, targets=class_a)
    mb = explainer(x, targets=class_b)
    s, _ = ssim_mse(ma, mb)
    return {"mean_abs_diff": float((ma - mb).abs().mean()), "ssim": float(s.mean())}


# ---------------------------------------------------------------------- latency
def cam_latency(explainer, x, targets=None, *, repeats: int = 3, warmup: int = 1, clock: str = "wall") -> float:
    """Median seconds per input for explaining the inputs one at a time (lower is better).

    ``clock="wall"`` times with ``time.perf_counter``; ``clock="process"`` with ``time.process_time``
    (CPU time of this process: robust on a shared machine, and equal to the wall time of single-threaded
    work on an idle one; it counts every thread, so use it with ``torch.set_num_threads(1)``).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if clock not in ("wall", "process"):
        raise ValueError(f"clock must be 'wall' or 'process', got {clock!r}")
    now = time.perf_counter if clock == "wall" else time.process_time
    t = None if targets is None else torch.as_tensor(targets).reshape(-1)
    for _ in range(warmup):
        explainer(x[:1], targets=None if t is None else t[:1])
    times = []
    for _ in range(repeats):
        for i in range(len(x)):
            t0 = now()
            explainer(x[i : i + 1], targets=None if t is None else t[i : i + 1])
            times.append(now() - t0)
    return float(np.median(times))
