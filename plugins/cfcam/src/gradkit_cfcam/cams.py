"""Class activation maps: CF-CAM and the Grad-CAM family, behind one base class.

Every explainer here follows gradkit's ``explainers`` contract::

    with CFCAM(model, target_layer=model.layer4) as cam:      # or gk.create("cf-cam", ...)
        maps = cam(x, targets=None)        # (B, H, W) float in [0, 1], on x's device

* ``target_layer`` is a submodule of ``model`` (the module itself or its dotted
  name) whose output is a ``(B, K, h, w)`` activation tensor ``A`` -- or a list of
  such layers (pytorch-grad-cam's ``target_layers``: one map per layer, each
  normalised to [0, 1] at input resolution, averaged, and the mean divided by its
  maximum).  ``reshape_transform`` turns another layer output into ``(B, K, h, w)``
  (e.g. :class:`TokenReshape` for ViT tokens ``(B, N, C)``); it is applied to the
  activations and to their gradient, as in pytorch-grad-cam, and must only select
  and reorder elements (indexing, reshape, permute).
* Hooks live only for the duration of a call (installed and removed inside
  ``__call__``); leaving the context checks that none is left.
* The raw gradient ``G = d y_c / d A`` of the target-class *logit* is taken with
  :func:`torch.autograd.grad` with respect to a zero tensor added to the layer's
  output, so no parameter's ``.grad`` is touched, frozen models work, in-place
  operations after the layer are harmless, and nested target layers each get
  their full gradient.  The model is switched to ``eval()`` for the call and every
  module's training flag is restored afterwards.
* ``grad_noise=s`` adds ``s * std(G_b) * N(0, 1)`` to each sample's raw gradient
  right where it is obtained, before any method-specific processing, so gradient
  robustness is measured the same way for every method (the official CF-CAM
  robustness test adds its noise after CF-CAM's weights were computed, which
  cannot move CF-CAM's map).
* Bad input is a clear error, never a silent all-zero map: NaN/inf in ``x``, in
  the model's logits, in the layer's activations or gradients, a target layer the
  logits do not depend on (for every method, Score-CAM and Ablation-CAM included),
  a layer that runs more than once per forward, classes out of range.

A new CAM subclasses :class:`BaseCAM` and overrides :meth:`BaseCAM.cam_weights`
(``(B, K)`` channel weights of one target layer); the base class forms
``ReLU(sum_k w_k A_k)``, upsamples it bilinearly to the input and divides each map
by its maximum.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

Targets = Union[None, int, Sequence[int], torch.Tensor]
LayerSpec = Union[nn.Module, str]


@dataclass
class CAMResult:
    """Everything an explainer computed for one batch.

    With one target layer ``raw``, ``weights``, ``activations`` are tensors and
    ``extras`` a dict; with a list of target layers each is a list (one entry per
    layer, in the given order) and ``layer_maps`` holds the per-layer maps.
    """

    cam: torch.Tensor          #: (B, H, W) maps in [0, 1] at input resolution
    raw: Any                   #: (B, h, w) ReLU(sum_k w_k A_k) at layer resolution, not normalised
    targets: torch.Tensor      #: (B,) explained classes
    logits: torch.Tensor       #: (B, C) model output on the clean input
    weights: Any               #: (B, K) channel weights (0 for discarded channels)
    activations: Any           #: (B, K, h, w) target-layer activations (after reshape_transform)
    extras: Any = field(default_factory=dict)  #: method-specific details (CF-CAM: cluster labels, ...)
    layer_maps: Optional[torch.Tensor] = None  #: (B, L, H, W) per-layer maps in [0, 1] (list of layers only)


def resolve_layer(model: nn.Module, target_layer: LayerSpec) -> nn.Module:
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
            f"target_layer must be an nn.Module inside the model, its dotted name, or a list of those, "
            f"got {type(target_layer).__name__}"
        )
    if not any(m is target_layer for m in model.modules()):
        raise ValueError(
            f"target_layer {type(target_layer).__name__} is not a submodule of the model "
            f"{type(model).__name__}; pass a module from model.modules() (e.g. the last conv block) or its name"
        )
    return target_layer


def resolve_layers(model: nn.Module, target_layer: Any) -> List[nn.Module]:
    """One layer or a non-empty list/tuple of distinct layers, resolved with :func:`resolve_layer`."""
    if isinstance(target_layer, (list, tuple)):
        if len(target_layer) == 0:
            raise ValueError("target_layer is an empty list; pass at least one layer")
        layers = [resolve_layer(model, t) for t in target_layer]
        for i, a in enumerate(layers):
            for j in range(i):
                if layers[j] is a:
                    raise ValueError(f"target layers {j} and {i} are the same module {type(a).__name__}; "
                                     "list each layer once")
        return layers
    return [resolve_layer(model, target_layer)]


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


def _check_finite(t: torch.Tensor, what: Union[str, Callable[[], str]], hint: str = "") -> None:
    """ValueError naming ``what`` (a string or a function giving it) and the offending samples when ``t``
    (batch first) has NaN/inf."""
    if bool(torch.isfinite(t.detach()).all()):
        return
    bad = ~torch.isfinite(t.detach())
    if bool(bad.any()):
        what = what() if callable(what) else what
        per = bad.flatten(1).any(1) if bad.dim() > 1 else bad
        idx = torch.nonzero(per).flatten().tolist()
        kinds = []
        if bool(torch.isnan(t.detach()).any()):
            kinds.append("NaN")
        if bool(torch.isinf(t.detach()).any()):
            kinds.append("inf")
        raise ValueError(f"{what} contains {' and '.join(kinds)} ({int(bad.sum())} value(s), in sample(s) "
                         f"{idx[:10]}){hint}")


def _divide_by_max(m: torch.Tensor) -> torch.Tensor:
    mx = m.flatten(1).amax(1).view(-1, *([1] * (m.dim() - 1)))
    return torch.where(mx > 0, m / mx.clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(m)).clamp(0, 1)


def normalize_maps(raw: torch.Tensor, size) -> torch.Tensor:
    """Upsample (B, h, w) maps bilinearly to ``size`` and divide each by its maximum (zero maps stay zero)."""
    up = F.interpolate(raw[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return _divide_by_max(up.clamp_min(0))


def aggregate_layer_maps(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """pytorch-grad-cam's multi-layer aggregation: mean of the per-layer maps (each already in [0, 1] at
    input resolution), divided by its maximum."""
    if len(maps) == 1:
        return maps[0]
    return _divide_by_max(torch.stack(list(maps), 1).clamp_min(0).mean(1))


class TokenReshape:
    """A ``reshape_transform`` for ViT-style token outputs ``(B, N, C)`` (pytorch-grad-cam's recipe):
    drop the first ``prefix_tokens`` tokens (the CLS token) and lay the remaining ``h * w`` tokens out as
    ``(B, C, h, w)``; ``h = w = sqrt(N - prefix_tokens)`` unless given."""

    def __init__(self, height: Optional[int] = None, width: Optional[int] = None, prefix_tokens: int = 1):
        for nm, v in (("height", height), ("width", width)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{nm} must be a positive int or None, got {v!r}")
        if not isinstance(prefix_tokens, int) or prefix_tokens < 0:
            raise ValueError(f"prefix_tokens must be an int >= 0, got {prefix_tokens!r}")
        self.height, self.width, self.prefix_tokens = height, width, prefix_tokens

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"TokenReshape expects token outputs (B, N, C), got {shape}")
        b, n, c = t.shape
        m = n - self.prefix_tokens
        h, w = self.height, self.width
        if h is None and w is None:
            h = w = int(round(math.sqrt(max(m, 0))))
        elif h is None:
            h = m // w
        elif w is None:
            w = m // h
        if m <= 0 or h * w != m:
            raise ValueError(f"cannot lay out {n} tokens minus {self.prefix_tokens} prefix token(s) = {m} as a "
                             f"{h} x {w} grid; pass height=/width= or the right prefix_tokens")
        return t[:, self.prefix_tokens:, :].reshape(b, h, w, c).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokenReshape(height={self.height}, width={self.width}, prefix_tokens={self.prefix_tokens})"


def _reached_leaves(root: torch.Tensor, leaves: Sequence[torch.Tensor]) -> set:
    """ids of the ``leaves`` that ``root`` depends on through its autograd graph (no arithmetic)."""
    want = {id(t) for t in leaves}
    found: set = set()
    if root.grad_fn is None:
        return found
    stack, seen = [root.grad_fn], set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)
        if var is not None and id(var) in want:
            found.add(id(var))
        stack.extend(nf for nf, _ in fn.next_functions if nf is not None)
    return found


class BaseCAM(abc.ABC):
    """Shared machinery of the CAM explainers (hooks, targets, gradient, noise, checks, output)."""

    #: whether :meth:`cam_weights` needs the raw gradient G (False: gradient-free method)
    uses_gradients: bool = True

    def __init__(self, model: nn.Module, target_layer: Any = None, *, target_layers: Any = None,
                 reshape_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, batch_size: int = 64):
        if target_layer is not None and target_layers is not None:
            raise TypeError("pass the layers once: target_layer=... or target_layers=..., not both")
        spec = target_layers if target_layers is not None else target_layer
        if spec is None:
            raise TypeError("an explainer needs target_layer= (a submodule of the model, its dotted name, "
                            "or a list of them)")
        self.model = model
        self.target_layers: List[nn.Module] = resolve_layers(model, spec)
        self.target_layer = self.target_layers[0]
        self.multi_layer = isinstance(spec, (list, tuple))
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(f"reshape_transform must be callable (tensor -> (B, K, h, w) tensor) or None, "
                            f"got {type(reshape_transform).__name__}")
        self.reshape_transform = reshape_transform
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self._handles: list = []
        self._cache: Dict[str, Any] = {}
        self._grad_noise = 0.0
        self._generator: Optional[torch.Generator] = None

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
        names = ", ".join(type(m).__name__ for m in self.target_layers)
        return f"{type(self).__name__}(target_layer={names})"

    # ------------------------------------------------------------------ public API
    def __call__(self, x: torch.Tensor, targets: Targets = None, *, grad_noise: float = 0.0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Maps ``(B, H, W)`` in ``[0, 1]`` for ``targets`` (``None``: the predicted classes)."""
        return self.explain(x, targets, grad_noise=grad_noise, generator=generator).cam

    def explain(self, x: torch.Tensor, targets: Targets = None, *, grad_noise: float = 0.0,
                generator: Optional[torch.Generator] = None) -> CAMResult:
        """Like ``__call__`` but returns a :class:`CAMResult` with weights, raw maps and extras."""
        x = self._check_input(x)
        if isinstance(grad_noise, bool) or not (isinstance(grad_noise, (int, float)) and math.isfinite(grad_noise)
                                                and grad_noise >= 0):
            raise ValueError(f"grad_noise must be a finite float >= 0 (a multiple of the gradient std), got {grad_noise!r}")
        self._grad_noise = float(grad_noise)
        self._generator = generator
        self._cache = {}
        was_training = [m for m in self.model.modules() if m.training]
        if was_training:
            self.model.eval()
        try:
            acts, logits, grads, targets_t = self._forward_backward(x, targets)
            raws, weights_l, extras_l, maps = [], [], [], []
            for i, a in enumerate(acts):
                extras: Dict[str, Any] = {}
                w = self.cam_weights(x=x, activations=a, gradients=None if grads is None else grads[i],
                                     targets=targets_t, logits=logits, extras=extras, layer=i)
                w = w.to(device=a.device, dtype=a.dtype)
                _check_finite(w, lambda: f"{type(self).__name__}'s channel weights at {self._layer_name(i)}")
                raw = torch.relu(torch.einsum("bk,bkhw->bhw", w, a))
                raws.append(raw)
                weights_l.append(w)
                extras_l.append(extras)
                maps.append(normalize_maps(raw, x.shape[-2:]).to(x.dtype))
            cam = aggregate_layer_maps(maps)
        finally:
            self.close()
            for m in was_training:
                m.training = True
            self._generator = None
            self._cache = {}
        if not self.multi_layer:
            return CAMResult(cam=cam, raw=raws[0], targets=targets_t, logits=logits, weights=weights_l[0],
                             activations=acts[0], extras=extras_l[0])
        return CAMResult(cam=cam, raw=raws, targets=targets_t, logits=logits, weights=weights_l,
                         activations=list(acts), extras=extras_l, layer_maps=torch.stack(maps, 1))

    # ------------------------------------------------------------------ to override
    @abc.abstractmethod
    def cam_weights(self, *, x: torch.Tensor, activations: torch.Tensor, gradients: Optional[torch.Tensor],
                    targets: torch.Tensor, logits: torch.Tensor, extras: Dict[str, Any], layer: int) -> torch.Tensor:
        """Channel weights ``(B, K)`` of target layer number ``layer`` from its clean-input activations
        ``(B, K, h, w)`` and, when :attr:`uses_gradients`, the raw (possibly noised) gradient of the target
        logits with respect to them."""

    # ------------------------------------------------------------------ helpers for subclasses
    def _layer_name(self, i: int) -> str:
        names = self.__dict__.get("_layer_names")
        if names is None:
            ids = {id(m): n for n, m in self.model.named_modules()}
            names = self._layer_names = [f"target layer {ids.get(id(m)) or '<model>'} ({type(m).__name__})"
                                         for m in self.target_layers]
        return names[i]

    def model_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``x`` (no hooks), checked to be finite."""
        logits = _logits_of(self.model(x))
        _check_finite(logits, "the model's output (logits)", "; an explainer cannot explain a non-finite prediction")
        return logits

    def to_bkhw(self, t: torch.Tensor, i: int) -> torch.Tensor:
        """Apply ``reshape_transform`` (if any) and check the result is ``(B, K, h, w)``."""
        out = self.reshape_transform(t) if self.reshape_transform is not None else t
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != t.shape[0]:
            got = tuple(t.shape)
            if self.reshape_transform is None:
                hint = ("; for token outputs (B, N, C) pass reshape_transform=TokenReshape() "
                        "(gradkit_cfcam.cams) or your own function returning (B, C, h, w)") if t.dim() == 3 else ""
                raise ValueError(f"{self._layer_name(i)} must output a (B, K, h, w) tensor, got {got}{hint}")
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"reshape_transform must map the output {got} of {self._layer_name(i)} to "
                             f"(B, K, h, w) with the same batch size, got {shape}")
        return out

    def _modify_raw(self, raw: torch.Tensor, modify: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Apply ``modify`` (defined on ``(B, K, h, w)`` activations) to a layer output in its own layout:
        without ``reshape_transform`` directly, otherwise through the transform's adjoint (exact for
        transforms that only select and reorder elements)."""
        if self.reshape_transform is None:
            return modify(raw)
        with torch.enable_grad():
            r = raw.detach().requires_grad_(True)
            a = self.reshape_transform(r)
            delta = modify(a.detach()) - a.detach()
            (back,) = torch.autograd.grad(a, r, grad_outputs=delta)
        return raw.detach() + back

    def forward_with_layers(self, x: torch.Tensor, *, need_grad: bool, modify=None, modify_layer: int = 0):
        """Run the model once with every target layer hooked; return ``(acts, leaves, logits)``.

        ``acts[i]`` is layer ``i``'s output after ``reshape_transform`` (detached, ``(B, K, h, w)``).
        With ``need_grad`` the layer output gets a zero tensor ``leaves[i]`` that requires grad added to
        it, so ``d logits / d leaves[i]`` is the gradient with respect to the layer's output.
        ``modify(A) -> A'`` replaces the output of layer ``modify_layer`` (used by Ablation-CAM).
        """
        n = len(self.target_layers)
        raws: List[Optional[torch.Tensor]] = [None] * n
        leaves: List[Optional[torch.Tensor]] = [None] * n
        calls = [0] * n

        def make_hook(i):
            def hook(module, inputs, output):
                calls[i] += 1
                if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                    kind = f"a {output.dtype} tensor" if isinstance(output, torch.Tensor) else type(output).__name__
                    raise ValueError(f"{self._layer_name(i)} must output a floating-point tensor, got {kind}")
                raws[i] = output.detach().clone()
                out = output
                if modify is not None and i == modify_layer:
                    out = self._modify_raw(output.detach(), modify)
                if need_grad:
                    z = torch.zeros_like(output, requires_grad=True)
                    leaves[i] = z
                    out = out + z
                return out if out is not output else None
            return hook

        handles = []
        try:
            for i, layer in enumerate(self.target_layers):
                h = layer.register_forward_hook(make_hook(i))
                handles.append(h)
                self._handles.append(h)
            with torch.set_grad_enabled(need_grad):
                logits = _logits_of(self.model(x))
        finally:
            for h in handles:
                h.remove()
                if h in self._handles:
                    self._handles.remove(h)
        for i in range(n):
            if calls[i] == 0:
                raise ValueError(f"{self._layer_name(i)} was not called by the model's forward; pick a layer "
                                 "the forward pass runs")
            if calls[i] > 1:
                raise ValueError(f"{self._layer_name(i)} ran {calls[i]} times in one forward pass (a module "
                                 "reused at several places); its activations are ambiguous: pick a module that "
                                 "runs once, or give each use its own module")
        _check_finite(logits, "the model's output (logits)", "; an explainer cannot explain a non-finite prediction")
        acts = []
        for i in range(n):
            a = self.to_bkhw(raws[i], i).detach()
            _check_finite(a, lambda: f"the activations of {self._layer_name(i)}")
            acts.append(a)
        return acts, leaves, logits

    def gradients_of(self, leaves: Sequence[torch.Tensor], logits: torch.Tensor,
                     targets: torch.Tensor) -> List[torch.Tensor]:
        """Raw gradient ``d y_c / d A`` of every target layer, per sample, with the call's gradient noise."""
        score = logits.gather(1, targets.view(-1, 1)).sum()
        if not score.requires_grad:
            grads: Sequence[Optional[torch.Tensor]] = [None] * len(leaves)
        else:
            grads = torch.autograd.grad(score, list(leaves), allow_unused=True)
        out = []
        for i, g in enumerate(grads):
            if g is None:
                raise ValueError(f"the model's logits do not depend on {self._layer_name(i)}; pick a layer on "
                                 "the path to the logits")
            g = self.to_bkhw(g.detach(), i)
            _check_finite(g, lambda: f"the gradient of the target logits at {self._layer_name(i)}")
            if self._grad_noise > 0:
                std = g.flatten(1).std(1).view(-1, 1, 1, 1)
                noise = torch.randn(g.shape, generator=self._generator, dtype=g.dtype, device="cpu").to(g.device)
                g = g + self._grad_noise * std * noise
            out.append(g)
        return out

    def check_on_path(self, leaves: Sequence[torch.Tensor], logits: torch.Tensor) -> None:
        """ValueError if the logits do not depend on some target layer (found in the autograd graph)."""
        found = _reached_leaves(logits, leaves)
        for i, z in enumerate(leaves):
            if id(z) not in found:
                raise ValueError(f"the model's logits do not depend on {self._layer_name(i)}; pick a layer on "
                                 f"the path to the logits ({type(self).__name__} would otherwise return maps of "
                                 "a layer the prediction never sees)")

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
        _check_finite(x, "the input x", "; explainers need finite inputs (replace or drop those samples)")
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
            if t.dim() > 1:
                raise ValueError(f"targets must be one class per input (a 1-D sequence or tensor), got shape "
                                 f"{tuple(t.shape)}")
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
        acts, leaves, logits = self.forward_with_layers(x, need_grad=True)
        targets_t = self.resolve_targets(targets, logits)
        if self.uses_gradients:
            grads = self.gradients_of(leaves, logits, targets_t)
        else:
            self.check_on_path(leaves, logits)
            grads = None
        return acts, logits.detach(), grads, targets_t


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
    the maps are deterministic.  With several target layers one set of noisy
    passes serves all of them.
    """

    def __init__(self, model, target_layer=None, *, n_samples: int = 10, sigma: float = 0.1, seed: int = 0,
                 target_layers=None, reshape_transform=None, batch_size: int = 64):
        super().__init__(model, target_layer, target_layers=target_layers, reshape_transform=reshape_transform,
                         batch_size=batch_size)
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite float >= 0, got {sigma!r}")
        self.n_samples, self.sigma, self.seed = n_samples, float(sigma), int(seed)

    def _moments(self, x, targets):
        gen = torch.Generator().manual_seed(self.seed)
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
        sums = None
        for _ in range(self.n_samples):
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            _, leaves, logits_n = self.forward_with_layers(x + self.sigma * span * noise, need_grad=True)
            grads = self.gradients_of(leaves, logits_n, targets)
            if sums is None:
                sums = [[g, g ** 2, g ** 3] for g in grads]
            else:
                for s, g in zip(sums, grads):
                    s[0], s[1], s[2] = s[0] + g, s[1] + g ** 2, s[2] + g ** 3
        n = float(self.n_samples)
        return [[m / n for m in s] for s in sums]

    def cam_weights(self, *, x, activations, targets, layer, **_):
        if "moments" not in self._cache:
            self._cache["moments"] = self._moments(x, targets)
        g1, g2, g3 = self._cache["moments"][layer]
        return _gradcampp_weights(activations, g1, g2, g3)


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
                probs = F.softmax(self.model_logits(masked[s : s + self.batch_size]), dim=1)
                weights[i, s : s + self.batch_size] = probs[:, targets[i]]
        return weights


class AblationCAM(BaseCAM):
    """Ablation-CAM (Desai & Ramaswamy, 2020): ``w_k = (y_c - y_c^k) / y_c`` where ``y_c^k`` is the
    target logit with channel ``k`` of the layer set to zero."""

    uses_gradients = False

    @torch.no_grad()
    def cam_weights(self, *, x, activations, targets, logits, layer, **_):
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
                _, _, lg = self.forward_with_layers(xb, need_grad=False, modify=ablate, modify_layer=layer)
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
    """The paper's filter: a 2-D Gaussian (scipy.ndimage, truncated at 4 sigma) with a **zero-padded**
    boundary, the boundary handling of the official ``cfcam.py`` (its kernel is applied by
    ``F.conv2d(..., padding='same')``, which pads with zeros).

    CF-CAM uses only the spatial mean of the filtered gradient.  A Gaussian with a sum-preserving
    boundary (reflect, wrap) leaves that mean exactly unchanged, so the filter would have no effect on
    the weights.  With zero padding the mean becomes a centre-weighted mean of ``g``::

        mean(gaussian_filter2d(g)) = mean(g * c),   c = gaussian_filter2d(ones)   (kernel mass inside the map)

    (the kernel is symmetric, so the filter is its own adjoint); ``c < 1`` near the border.
    """
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(g, dtype=np.float64), sigma=sigma, mode="constant", cval=0.0)


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


def _box_mean(a: np.ndarray, size: int) -> np.ndarray:
    """``size x size`` box mean with a zero-padded border (sum over the window, zeros outside the map,
    divided by ``size**2``): the boundary handling of the official ``cfcam.py``."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(a, size=size, mode="constant", cval=0.0)


def guided_filter(g: np.ndarray, radius: Optional[int] = None, eps: Optional[float] = None) -> np.ndarray:
    """Self-guided Guided Filter (He, Sun, Tang) with the parameters of the repository's ``ver6.py``:
    ``r = floor(sqrt(hw) / 4)`` (at least 1), ``eps = 0.1 * Var(g)``; box means with a zero-padded
    border, as the official ``cfcam.py`` pads its filter.

    ``ver6.py`` calls OpenCV's ``guidedFilter``, whose box means use a reflected border; that filter
    preserves the spatial mean exactly (the reflected box filter is symmetric and doubly stochastic), so
    it cannot change a CF-CAM weight, and with He et al.'s clipped-window means the weight moves by about
    1e-4 of the gradient's scale.  With zero padding the border is discounted, as for the Gaussian.
    """
    g = np.asarray(g, dtype=np.float64)
    h, w = g.shape
    r = max(1, int(math.sqrt(h * w) / 4)) if radius is None else int(radius)
    e = 0.1 * float(np.var(g)) if eps is None else float(eps)
    size = 2 * r + 1
    mean_g = _box_mean(g, size)
    var_g = np.maximum(_box_mean(g * g, size) - mean_g ** 2, 0.0)
    a = var_g / (var_g + e) if e > 0 else np.ones_like(g)
    b = mean_g - a * mean_g
    return _box_mean(a, size) * g + _box_mean(b, size)


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

    ``filter``: ``"gaussian"`` (paper; zero-padded boundary as in the official code, so that the
    weight is a centre-weighted mean of the cluster gradient; ``sigma`` is a gradkit default, the paper
    gives none), ``"bilateral"`` (the official code's kernel), ``"guided"`` (``ver6.py``'s parameters,
    zero-padded box means), ``"none"``.  A filter can change a weight only through its boundary:
    the weight is the spatial mean of the filtered gradient, which any sum-preserving filter keeps.
    ``weight_norm``: ``"softmax"`` (paper), ``"relu"`` (ReLU then divide by the sum) or ``"none"``.
    ``extras`` of :meth:`explain` holds per-sample ``labels`` (-2 important, -1 noise, >= 0 cluster),
    ``eps``, ``min_samples`` and ``valid`` masks.
    """

    def __init__(self, model, target_layer=None, *, importance_percentile: float = 75.0, eps_percentile: float = 25.0,
                 min_samples_frac: float = 0.05, min_samples_floor: int = 2, filter: str = "gaussian",  # noqa: A002
                 sigma: float = 1.0, sigma_spatial: float = 5.0, sigma_range: float = 0.1,
                 weight_norm: str = "softmax", target_layers=None, reshape_transform=None, batch_size: int = 64):
        super().__init__(model, target_layer, target_layers=target_layers, reshape_transform=reshape_transform,
                         batch_size=batch_size)
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
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"{nm} must be a finite float > 0, got {v!r}")
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
