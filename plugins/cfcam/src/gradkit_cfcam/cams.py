"""Class activation maps: CF-CAM and the Grad-CAM family, behind one base class.

Every explainer here follows gradkit's ``explainers`` contract::

    with CFCAM(model, target_layer=model.layer4) as cam:      # or gk.create("cf-cam", ...)
        maps = cam(x, targets=None)        # (B, H, W) float in [0, 1], on x's device

* ``target_layer`` is a submodule of ``model`` (the module itself or its dotted
  name) whose output is a ``(B, K, h, w)`` activation tensor ``A``.
* Hooks live only for the duration of a call (installed and removed inside
  ``__call__``); leaving the context checks that none is left.
* The raw gradient ``G = d y_c / d A`` of the target-class *logit* is taken with
  :func:`torch.autograd.grad` with respect to a detached copy of ``A``, so no
  parameter's ``.grad`` is touched, frozen models work, and in-place operations
  after the layer are harmless.  The model is switched to ``eval()`` for the call
  and every module's training flag is restored afterwards.
* ``grad_noise=s`` adds ``s * std(G_b) * N(0, 1)`` to each sample's raw gradient
  right where it is obtained, before any method-specific processing, so gradient
  robustness is measured the same way for every method (the official CF-CAM
  robustness test adds its noise after CF-CAM's weights were computed, which
  cannot move CF-CAM's map).

A new CAM subclasses :class:`BaseCAM` and overrides :meth:`BaseCAM.cam_weights`
(``(B, K)`` channel weights); the base class forms ``ReLU(sum_k w_k A_k)``,
upsamples it bilinearly to the input and divides each map by its maximum.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Targets = Union[None, int, Sequence[int], torch.Tensor]


@dataclass
class CAMResult:
    """Everything an explainer computed for one batch."""

    cam: torch.Tensor          #: (B, H, W) maps in [0, 1] at input resolution
    raw: torch.Tensor          #: (B, h, w) ReLU(sum_k w_k A_k) at layer resolution, not normalised
    targets: torch.Tensor      #: (B,) explained classes
    logits: torch.Tensor       #: (B, C) model output on the clean input
    weights: torch.Tensor      #: (B, K) channel weights (0 for discarded channels)
    activations: torch.Tensor  #: (B, K, h, w) target-layer activations
    extras: Dict[str, Any] = field(default_factory=dict)  #: method-specific details (CF-CAM: cluster labels, ...)


def resolve_layer(model: nn.Module, target_layer: Union[nn.Module, str]) -> nn.Module:
    """The target submodule of ``model``, or a clear error."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(target_layer, str):
        try:
            return model.get_submodule(target_layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][:25]
            raise ValueError(
                f"target_layer {target_layer!r} is not a submodule of {type(model).__name__}; "
                f"expected one of its module names, e.g. {names}"
            ) from None
    if not isinstance(target_layer, nn.Module):
        raise TypeError(
            f"target_layer must be an nn.Module inside the model or its dotted name, got {type(target_layer).__name__}"
        )
    if not any(m is target_layer for m in model.modules()):
        raise ValueError(
            f"target_layer {type(target_layer).__name__} is not a submodule of the model "
            f"{type(model).__name__}; pass a module from model.modules() (e.g. the last conv block) or its name"
        )
    return target_layer


def _logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        logits = output
    elif hasattr(output, "logits"):
        logits = output.logits
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    else:
        raise TypeError(f"cannot find logits in model output of type {type(output).__name__}; expected a "
                        "(B, C) tensor, a tuple starting with it, or an object with .logits")
    if logits.dim() != 2:
        raise ValueError(f"an explainer needs classifier logits of shape (B, C), got {tuple(logits.shape)}")
    return logits


def normalize_maps(raw: torch.Tensor, size) -> torch.Tensor:
    """Upsample (B, h, w) maps bilinearly to ``size`` and divide each by its maximum (zero maps stay zero)."""
    up = F.interpolate(raw[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    up = up.clamp_min(0)
    mx = up.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(mx > 0, up / mx.clamp_min(torch.finfo(up.dtype).tiny), torch.zeros_like(up)).clamp(0, 1)


class BaseCAM(abc.ABC):
    """Shared machinery of the CAM explainers (hooks, targets, gradient, noise, output)."""

    #: whether :meth:`cam_weights` needs the raw gradient G (False: gradient-free method)
    uses_gradients: bool = True

    def __init__(self, model: nn.Module, target_layer: Union[nn.Module, str], *, batch_size: int = 64):
        self.model = model
        self.target_layer = resolve_layer(model, target_layer)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self._handles: list = []

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "BaseCAM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove any hook this explainer still holds (normally none outside a call)."""
        while self._handles:
            self._handles.pop().remove()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={type(self.target_layer).__name__})"

    # ------------------------------------------------------------------ public API
    def __call__(self, x: torch.Tensor, targets: Targets = None, *, grad_noise: float = 0.0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Maps ``(B, H, W)`` in ``[0, 1]`` for ``targets`` (``None``: the predicted classes)."""
        return self.explain(x, targets, grad_noise=grad_noise, generator=generator).cam

    def explain(self, x: torch.Tensor, targets: Targets = None, *, grad_noise: float = 0.0,
                generator: Optional[torch.Generator] = None) -> CAMResult:
        """Like ``__call__`` but returns a :class:`CAMResult` with weights, raw maps and extras."""
        x = self._check_input(x)
        if not (isinstance(grad_noise, (int, float)) and math.isfinite(grad_noise) and grad_noise >= 0):
            raise ValueError(f"grad_noise must be a finite float >= 0 (a multiple of the gradient std), got {grad_noise!r}")
        self._grad_noise = float(grad_noise)
        self._generator = generator
        was_training = [m for m in self.model.modules() if m.training]
        if was_training:
            self.model.eval()
        try:
            acts, logits, grads, targets_t = self._forward_backward(x, targets)
            extras: Dict[str, Any] = {}
            weights = self.cam_weights(x=x, activations=acts, gradients=grads, targets=targets_t,
                                       logits=logits, extras=extras)
            raw = torch.relu(torch.einsum("bk,bkhw->bhw", weights.to(acts.dtype), acts))
            cam = normalize_maps(raw, x.shape[-2:]).to(x.dtype)
        finally:
            self.close()
            for m in was_training:
                m.training = True
            self._generator = None
        return CAMResult(cam=cam, raw=raw, targets=targets_t, logits=logits, weights=weights,
                         activations=acts, extras=extras)

    # ------------------------------------------------------------------ to override
    @abc.abstractmethod
    def cam_weights(self, *, x: torch.Tensor, activations: torch.Tensor, gradients: Optional[torch.Tensor],
                    targets: torch.Tensor, logits: torch.Tensor, extras: Dict[str, Any]) -> torch.Tensor:
        """Channel weights ``(B, K)`` from the clean-input activations ``(B, K, h, w)`` and, when
        :attr:`uses_gradients`, the raw (possibly noised) gradient of the target logits."""

    # ------------------------------------------------------------------ helpers for subclasses
    def forward_with_layer(self, x: torch.Tensor, *, need_grad: bool, modify=None):
        """Run the model; return ``(activations, logits)``.

        With ``need_grad`` the activations are a leaf that requires grad (the
        graph after the layer hangs on it).  ``modify(A) -> A'`` replaces the
        layer's output (used by Ablation-CAM).
        """
        store: Dict[str, torch.Tensor] = {}

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
                raise ValueError(f"target layer {type(module).__name__} must output a (B, K, h, w) tensor, got {shape}")
            a = output.detach().clone()
            if need_grad:
                a.requires_grad_(True)
            store["A"] = a
            out = a if modify is None else modify(a)
            return out.clone()

        handle = self.target_layer.register_forward_hook(hook)
        self._handles.append(handle)
        try:
            with torch.set_grad_enabled(need_grad):
                logits = _logits_of(self.model(x))
        finally:
            handle.remove()
            self._handles.remove(handle)
        if "A" not in store:
            raise ValueError(f"target layer {type(self.target_layer).__name__} was not called by the model's forward")
        return store["A"], logits

    def gradient_of(self, acts: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Raw gradient ``d y_c / d A`` per sample, with the call's gradient noise added."""
        score = logits.gather(1, targets.view(-1, 1)).sum()
        (grads,) = torch.autograd.grad(score, acts, allow_unused=True)
        if grads is None:
            raise ValueError("the model's logits do not depend on the target layer's output; pick a layer on the path to the logits")
        grads = grads.detach()
        if self._grad_noise > 0:
            std = grads.flatten(1).std(1).view(-1, 1, 1, 1)
            noise = torch.randn(grads.shape, generator=self._generator, dtype=grads.dtype, device="cpu").to(grads.device)
            grads = grads + self._grad_noise * std * noise
        return grads

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check_input(x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch")
        return x.detach()

    @staticmethod
    def resolve_targets(targets: Targets, logits: torch.Tensor) -> torch.Tensor:
        b, c = logits.shape
        if targets is None:
            return logits.detach().argmax(1)
        if isinstance(targets, bool):
            raise TypeError("targets must be None, an int, or a sequence/tensor of ints, got a bool")
        if isinstance(targets, (int, np.integer)):
            t = torch.full((b,), int(targets), dtype=torch.long)
        else:
            try:
                t = torch.as_tensor(targets)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(f"targets must be None, an int, or a sequence/tensor of ints, got {targets!r}") from exc
            if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
                raise TypeError(f"targets must be integer class indices, got dtype {t.dtype}")
            t = t.long().reshape(-1)
            if t.numel() == 1 and b > 1:
                t = t.expand(b).clone()
            if t.numel() != b:
                raise ValueError(f"got {t.numel()} targets for a batch of {b} inputs; pass one class per input, one int, or None")
        bad = (t < 0) | (t >= c)
        if bool(bad.any()):
            raise ValueError(f"target class {int(t[bad][0])} is out of range: the model has {c} classes (0..{c - 1})")
        return t.to(logits.device)

    def _forward_backward(self, x: torch.Tensor, targets: Targets):
        acts, logits = self.forward_with_layer(x, need_grad=self.uses_gradients)
        targets_t = self.resolve_targets(targets, logits)
        grads = self.gradient_of(acts, logits, targets_t) if self.uses_gradients else None
        return acts.detach(), logits.detach(), grads, targets_t


# ====================================================================== gradient-based CAMs
class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., 2017): ``w_k = mean_ij G_kij``."""

    def cam_weights(self, *, gradients, **_):
        return gradients.mean(dim=(2, 3))


def _gradcampp_weights(acts: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ weights from gradient moments (closed form of Chattopadhay et al., 2018, eq. 19)."""
    sum_a = acts.sum(dim=(2, 3), keepdim=True)
    denom = 2 * g2 + sum_a * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(denom))
    return (alpha * torch.relu(g1)).sum(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: ``alpha = G^2 / (2 G^2 + sum_ab A_ab G^3)``, ``w_k = sum_ij alpha_kij ReLU(G_kij)``."""

    def cam_weights(self, *, activations, gradients, **_):
        return _gradcampp_weights(activations, gradients, gradients ** 2, gradients ** 3)


class SmoothGradCAMPlusPlus(BaseCAM):
    """Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ with gradient moments averaged over
    ``n_samples`` inputs perturbed by Gaussian noise of std ``sigma * (max(x_b) - min(x_b))``.

    The noise is drawn from a generator seeded with ``seed`` on every call, so
    the maps are deterministic.
    """

    def __init__(self, model, target_layer, *, n_samples: int = 10, sigma: float = 0.1, seed: int = 0,
                 batch_size: int = 64):
        super().__init__(model, target_layer, batch_size=batch_size)
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.n_samples, self.sigma, self.seed = n_samples, float(sigma), int(seed)

    def cam_weights(self, *, x, activations, targets, **_):
        gen = torch.Generator().manual_seed(self.seed)
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
        g1 = g2 = g3 = 0.0
        for _ in range(self.n_samples):
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            acts_n, logits_n = self.forward_with_layer(x + self.sigma * span * noise, need_grad=True)
            g = self.gradient_of(acts_n, logits_n, targets)
            g1, g2, g3 = g1 + g, g2 + g ** 2, g3 + g ** 3
        n = float(self.n_samples)
        return _gradcampp_weights(activations, g1 / n, g2 / n, g3 / n)


# ====================================================================== gradient-free CAMs
class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., 2020): ``w_k = softmax(f(x * H_k))_c`` with ``H_k`` the upsampled,
    min-max normalised activation map (the official code's form, without the baseline term)."""

    uses_gradients = False

    @torch.no_grad()
    def cam_weights(self, *, x, activations, targets, **_):
        b, k = activations.shape[:2]
        up = F.interpolate(activations, size=x.shape[-2:], mode="bilinear", align_corners=False)
        flat = up.flatten(2)
        lo, hi = flat.amin(2, keepdim=True), flat.amax(2, keepdim=True)
        span = hi - lo
        masks = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                            torch.zeros_like(flat)).view_as(up)
        weights = torch.empty(b, k, dtype=x.dtype, device=x.device)
        for i in range(b):
            masked = x[i : i + 1] * masks[i][:, None]  # (K, C, H, W)
            for s in range(0, k, self.batch_size):
                probs = F.softmax(_logits_of(self.model(masked[s : s + self.batch_size])), dim=1)
                weights[i, s : s + self.batch_size] = probs[:, targets[i]]
        return weights


class AblationCAM(BaseCAM):
    """Ablation-CAM (Desai & Ramaswamy, 2020): ``w_k = (y_c - y_c^k) / y_c`` where ``y_c^k`` is the
    target logit with channel ``k`` of the layer set to zero."""

    uses_gradients = False

    @torch.no_grad()
    def cam_weights(self, *, x, activations, targets, logits, **_):
        b, k = activations.shape[:2]
        weights = torch.empty(b, k, dtype=x.dtype, device=x.device)
        for i in range(b):
            y = logits[i, targets[i]]
            for s in range(0, k, self.batch_size):
                chans = torch.arange(s, min(k, s + self.batch_size), device=x.device)
                n = len(chans)

                def ablate(a, chans=chans, n=n):
                    a = a.clone()
                    a[torch.arange(n, device=a.device), chans] = 0
                    return a

                xb = x[i : i + 1].expand(n, *x.shape[1:])
                _, lg = self.forward_with_layer(xb, need_grad=False, modify=ablate)
                yk = lg[:, targets[i]]
                denom = y if y.abs() > 1e-12 else y.new_tensor(1e-12)
                weights[i, s : s + n] = (y - yk) / denom
        return weights


# ====================================================================== CF-CAM
def importance_split(acts: np.ndarray, percentile: float = 75.0):
    """Step 1: ``n_k = ||vec(A_k)||_2``; important channels have ``n_k >= P_percentile(n)``.

    ``acts`` is ``(K, h*w)``; returns ``(important_idx, remaining_idx, norms)``.
    """
    norms = np.linalg.norm(acts, ord=2, axis=1)
    thr = np.percentile(norms, percentile)
    important = norms >= thr
    return np.flatnonzero(important), np.flatnonzero(~important), norms


def pairwise_distances(feats: np.ndarray) -> np.ndarray:
    """Condensed Euclidean distances between the rows of ``feats`` (scipy ``pdist``)."""
    from scipy.spatial.distance import pdist

    return pdist(feats.astype(np.float64), metric="euclidean")


def dbscan_parameters(feats: np.ndarray, eps_percentile: float = 25.0, min_samples_frac: float = 0.05,
                      min_samples_floor: int = 2, eps_floor: float = 1e-5, distances: Optional[np.ndarray] = None):
    """Step 2's data-driven parameters for ``|R|`` channel vectors ``feats`` (``(|R|, h*w)``).

    ``eps`` is the ``eps_percentile``-th percentile of the off-diagonal pairwise
    Euclidean distances (each pair counted twice, as in the full distance matrix),
    floored at ``eps_floor``; ``min_samples = max(floor, floor_int(frac * |R|))``.
    """
    n = len(feats)
    min_samples = max(int(min_samples_floor), int(math.floor(min_samples_frac * n)))
    if n < 2:
        return float(eps_floor), min_samples
    d = pairwise_distances(feats) if distances is None else distances
    eps = float(np.percentile(np.repeat(d, 2), eps_percentile))
    return max(eps, float(eps_floor)), min_samples


def gaussian_filter2d(g: np.ndarray, sigma: float) -> np.ndarray:
    """The paper's filter: a 2-D Gaussian (scipy.ndimage, reflect boundary, truncate 4 sigma)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(g, sigma=sigma, mode="reflect")


def bilateral_like_filter(g: np.ndarray, sigma_spatial: float = 5.0, sigma_range: float = 0.1) -> np.ndarray:
    """The official code's "bilateral" filter: one ``h x w`` kernel = centred spatial Gaussian
    (``sigma_s``) times ``exp(-(g - mean g)^2 / (2 sigma_r^2))``, normalised to sum 1, applied as a
    zero-padded 'same' cross-correlation."""
    h, w = g.shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64) - h / 2, np.arange(w, dtype=np.float64) - w / 2, indexing="ij")
    spatial = np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma_spatial ** 2))
    rng = np.exp(-((g - g.mean()) ** 2) / (2 * sigma_range ** 2))
    kern = spatial * rng
    kern = kern / (kern.sum() + 1e-6)
    t = torch.from_numpy(np.ascontiguousarray(g, dtype=np.float64))[None, None]
    k = torch.from_numpy(np.ascontiguousarray(kern))[None, None]
    # torch's padding="same" split (extra row/column of zeros at the bottom/right for even sizes)
    t = F.pad(t, ((w - 1) // 2, w - 1 - (w - 1) // 2, (h - 1) // 2, h - 1 - (h - 1) // 2))
    return F.conv2d(t, k)[0, 0].numpy()


def guided_filter(g: np.ndarray, radius: Optional[int] = None, eps: Optional[float] = None) -> np.ndarray:
    """Self-guided Guided Filter (He et al.) as in the repository's ``ver6.py``:
    ``r = floor(sqrt(hw) / 4)`` (at least 1), ``eps = 0.1 * Var(g)``, box means via scipy."""
    from scipy.ndimage import uniform_filter

    h, w = g.shape
    r = max(1, int(math.sqrt(h * w) / 4)) if radius is None else int(radius)
    e = 0.1 * float(np.var(g)) if eps is None else float(eps)
    size = 2 * r + 1
    box = lambda a: uniform_filter(a, size=size, mode="reflect")  # noqa: E731
    mean_g = box(g)
    var_g = box(g * g) - mean_g ** 2
    a = var_g / (var_g + e) if e > 0 else np.ones_like(g)
    b = mean_g - a * mean_g
    return box(a) * g + box(b)


FILTERS = ("gaussian", "bilateral", "guided", "none")
WEIGHT_NORMS = ("softmax", "relu", "none")


class CFCAM(BaseCAM):
    """CF-CAM (He, Pan, Yao, 2025; arXiv:2504.00060), per sample:

    1. importance split by channel L2 norm: ``I = {k : n_k >= P75(n)}``, the rest ``R``;
    2. DBSCAN (scikit-learn) on the flattened channels of ``R`` with ``eps`` = P25 of the
       pairwise distances and ``min_samples = max(2, floor(0.05 |R|))``; noise (label -1) is dropped;
    3. ``w_k = mean_ij G_k`` for ``k`` in ``I`` (raw gradient);
    4. for every cluster ``C``: ``w_k = mean_ij Filter(mean_{k in C} G_k)`` for ``k`` in ``C``;
    5. ``alpha = softmax(w_V)`` over the valid channels ``V`` (``weight_norm``), CAM = ReLU(sum alpha_k A_k).

    ``filter``: ``"gaussian"`` (paper; ``sigma`` is a gradkit default, the paper gives none),
    ``"bilateral"`` (the official code's kernel), ``"guided"`` (``ver6.py``), ``"none"``.
    ``weight_norm``: ``"softmax"`` (paper), ``"relu"`` (ReLU then divide by the sum) or ``"none"``.
    ``extras`` of :meth:`explain` holds per-sample ``labels`` (-2 important, -1 noise, >= 0 cluster),
    ``eps``, ``min_samples`` and ``valid`` masks.
    """

    def __init__(self, model, target_layer, *, importance_percentile: float = 75.0, eps_percentile: float = 25.0,
                 min_samples_frac: float = 0.05, min_samples_floor: int = 2, filter: str = "gaussian",  # noqa: A002
                 sigma: float = 1.0, sigma_spatial: float = 5.0, sigma_range: float = 0.1,
                 weight_norm: str = "softmax", batch_size: int = 64):
        super().__init__(model, target_layer, batch_size=batch_size)
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
        if weight_norm not in WEIGHT_NORMS:
            raise ValueError(f"weight_norm must be one of {WEIGHT_NORMS}, got {weight_norm!r}")
        for nm, v in (("importance_percentile", importance_percentile), ("eps_percentile", eps_percentile)):
            if not 0 <= v <= 100:
                raise ValueError(f"{nm} must be in [0, 100], got {v!r}")
        if not 0 <= min_samples_frac <= 1:
            raise ValueError(f"min_samples_frac must be in [0, 1], got {min_samples_frac!r}")
        if not isinstance(min_samples_floor, int) or min_samples_floor < 1:
            raise ValueError(f"min_samples_floor must be a positive int, got {min_samples_floor!r}")
        for nm, v in (("sigma", sigma), ("sigma_spatial", sigma_spatial), ("sigma_range", sigma_range)):
            if not v > 0:
                raise ValueError(f"{nm} must be > 0, got {v!r}")
        self.importance_percentile = float(importance_percentile)
        self.eps_percentile = float(eps_percentile)
        self.min_samples_frac = float(min_samples_frac)
        self.min_samples_floor = min_samples_floor
        self.filter = filter
        self.sigma, self.sigma_spatial, self.sigma_range = float(sigma), float(sigma_spatial), float(sigma_range)
        self.weight_norm = weight_norm

    # -------------------------------------------------------------- steps
    def filter_gradient(self, g: np.ndarray) -> np.ndarray:
        """Apply the configured filter to one cluster's mean gradient ``(h, w)``."""
        if self.filter == "gaussian":
            return gaussian_filter2d(g, self.sigma)
        if self.filter == "bilateral":
            return bilateral_like_filter(g, self.sigma_spatial, self.sigma_range)
        if self.filter == "guided":
            return guided_filter(g)
        return g

    def cluster_channels(self, acts: np.ndarray):
        """Steps 1-2 for one sample (``acts``: ``(K, h*w)``): labels ``(K,)`` with -2 important,
        -1 DBSCAN noise, >= 0 cluster ids; plus ``eps`` and ``min_samples`` (None without DBSCAN)."""
        import sklearn
        from scipy.spatial.distance import squareform
        from sklearn.cluster import DBSCAN

        important, remaining, _ = importance_split(acts, self.importance_percentile)
        labels = np.full(len(acts), -2, dtype=int)
        eps = min_samples = None
        if len(remaining) > 0:
            feats = acts[remaining]
            dist = pairwise_distances(feats)
            eps, min_samples = dbscan_parameters(feats, self.eps_percentile, self.min_samples_frac,
                                                 self.min_samples_floor, distances=dist)
            # Euclidean DBSCAN on the precomputed distance matrix (same result, distances computed once)
            with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                db = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(squareform(dist))
            labels[remaining] = db.labels_
        return labels, eps, min_samples

    def channel_weights(self, grads: np.ndarray, labels: np.ndarray):
        """Steps 3-4 for one sample: raw weights ``(K,)`` and the valid mask (noise channels invalid)."""
        w = np.zeros(len(grads), dtype=np.float64)
        imp = labels == -2
        w[imp] = grads[imp].mean(axis=(1, 2))
        for c in np.unique(labels[labels >= 0]):
            members = labels == c
            filtered = self.filter_gradient(grads[members].mean(axis=0))
            w[members] = float(np.mean(filtered))
        return w, labels != -1

    def normalise(self, w: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Step 5's weight normalisation over the valid channels (invalid ones get 0)."""
        out = np.zeros_like(w)
        if not valid.any():
            return out
        wv = w[valid]
        if self.weight_norm == "softmax":
            e = np.exp(wv - wv.max())
            out[valid] = e / e.sum()
        elif self.weight_norm == "relu":
            r = np.maximum(wv, 0)
            s = r.sum()
            out[valid] = r / s if s > 0 else r
        else:
            out[valid] = wv
        return out

    def cam_weights(self, *, activations, gradients, extras, **_):
        acts = activations.detach().cpu().double().numpy()
        grads = gradients.detach().cpu().double().numpy()
        b, k = acts.shape[:2]
        weights = np.zeros((b, k))
        all_labels, eps_l, ms_l, valid_l = [], [], [], []
        for i in range(b):
            labels, eps, ms = self.cluster_channels(acts[i].reshape(k, -1))
            w, valid = self.channel_weights(grads[i], labels)
            weights[i] = self.normalise(w, valid)
            all_labels.append(labels)
            eps_l.append(eps)
            ms_l.append(ms)
            valid_l.append(valid)
        extras.update(labels=np.stack(all_labels), eps=eps_l, min_samples=ms_l, valid=np.stack(valid_l),
                      filter=self.filter, weight_norm=self.weight_norm)
        return torch.from_numpy(weights).to(device=activations.device, dtype=activations.dtype)
