"""LoRA linear layers with weight perturbation: LoRA-GGPO, Flat-LoRA, LoRA-MGPO and plain LoRA.

``GGPOLoRALinear`` wraps a frozen ``nn.Linear`` ``W0 (out x in)``:

    y = W0 x + b + s * B A x  [+ eps x  while training]

with ``A (r x in)``, ``B (out x r)`` trainable, ``s = alpha / r`` and ``B`` initialised to
zero (so the wrapped model starts equal to the base model).  The perturbation ``eps`` is a
fresh ``out x in`` Gaussian draw on every training forward (never stored, absent in
``eval()``), whose rows ``eps_i ~ N(0, sigma_i^2 I)`` have

* ``mode="ggpo"`` (LoRA-GGPO, arXiv 2502.14538 v1):
  ``sigma_i = (sigma * ||W'_i|| + beta * ||G_i||^p) / sqrt(fan)`` where ``W' = W0 + s B A`` is
  the merged weight, ``G = s (B dA + dB A)`` the chain-rule approximation of the full-weight
  gradient from the last backward (``p = grad_norm_power``, default 2), ``fan`` = out
  (``norm="fan_out"``, the kohya port) or in (``norm="fan_in"``);
* ``mode="flat"`` (Flat-LoRA, arXiv 2409.14396): ``sigma_i = sigma_t ||W'_i|| / sqrt(in)``
  with the cosine-increasing schedule ``sigma_t = sigma (1 - cos(pi t / T)) / 2`` (set through
  :func:`set_progress`);
* ``mode="mgpo"`` (LoRA-MGPO, v2 of the same arXiv id; reconstruction, unverified): a
  deterministic perturbation along the momentum of ``G``, normalised by an EMA of ``||G||``:
  ``eps = rho * M / (EMA||G|| + 1e-12)`` with ``rho = sigma``;
* ``mode="none"``: plain LoRA.

The perturbation enters the autograd graph as a constant matrix, so gradients are those of
the loss at the perturbed weights ``W' + eps`` (the random-weight-perturbation objective).
The norms used by the next draw are refreshed by :func:`update_norms` after each backward
(from the unperturbed merged weight and the LoRA gradients).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

MODES = ("ggpo", "flat", "mgpo", "none")
#: caches that the next perturbation is drawn from; persistent buffers, so ``state_dict`` round trips keep them
_CACHES = ("weight_row_norms", "grad_row_norms", "mgpo_m")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class GGPOLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a rank-``r`` LoRA update and a training-time weight perturbation."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, sigma: float = 0.03, beta: float = 0.01,
                 norm: str = "fan_out", grad_norm_power: float = 2.0, mode: str = "ggpo",
                 weight_norm: str = "exact", mgpo_momentum: float = 0.9, mgpo_ema: float = 0.99,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"GGPOLoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if norm not in ("fan_out", "fan_in"):
            raise ValueError(f"norm must be 'fan_out' or 'fan_in', got {norm!r}")
        if weight_norm not in ("exact", "port"):
            raise ValueError(f"weight_norm must be 'exact' or 'port', got {weight_norm!r}")
        for key, v in (("sigma", sigma), ("beta", beta)):
            if not _finite(v) or v < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {v!r}")
        if not _finite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0 (the LoRA scale is alpha/r; alpha = 0 would switch "
                             f"the adapter off), got {alpha!r}")
        if not _finite(grad_norm_power) or grad_norm_power <= 0:
            raise ValueError(f"grad_norm_power must be a finite number > 0, got {grad_norm_power!r}")
        for key, v in (("mgpo_momentum", mgpo_momentum), ("mgpo_ema", mgpo_ema)):
            if not _finite(v) or not 0 <= v < 1:
                raise ValueError(f"{key} must be a number in [0, 1), got {v!r}")
        if base.weight.is_complex() or base.weight.is_sparse:
            raise TypeError("GGPOLoRALinear needs a dense real weight")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scale = r, float(alpha), float(alpha) / r
        self.sigma, self.beta = float(sigma), float(beta)
        self.norm, self.grad_norm_power, self.mode, self.weight_norm = norm, float(grad_norm_power), mode, weight_norm
        self.mgpo_momentum, self.mgpo_ema = float(mgpo_momentum), float(mgpo_ema)
        self.generator = generator
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.progress = 1.0  # fraction of training done (Flat-LoRA's sigma schedule)
        # caches filled by update_norms: persistent buffers (saved in state_dict, moved with .to()); empty until
        # the first update_norms.  MGPO's norm EMA and Flat-LoRA's progress travel as extra state.
        for name in _CACHES:
            self.register_buffer(name, torch.empty(0, dtype=w.dtype, device=w.device))
        self.mgpo_norm_ema = 0.0
        self.last_perturbation_std: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ state_dict
    def get_extra_state(self):
        return {"mgpo_norm_ema": float(self.mgpo_norm_ema), "progress": float(self.progress)}

    def set_extra_state(self, state) -> None:
        self.mgpo_norm_ema = float(state["mgpo_norm_ema"])
        self.progress = float(state["progress"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # the caches are empty until the first update_norms: take the saved tensor's shape when it is a valid one
        expected = {"weight_row_norms": (self.out_features,), "grad_row_norms": (self.out_features,),
                    "mgpo_m": (self.out_features, self.in_features)}
        for name in _CACHES:
            src = state_dict.get(prefix + name)
            if src is None:
                continue
            if tuple(src.shape) not in ((0,), expected[name]):
                error_msgs.append(f"{prefix}{name}: shape {tuple(src.shape)}, expected {expected[name]} or (0,)")
                state_dict = {k: v for k, v in state_dict.items() if k != prefix + name}
                continue
            cur = getattr(self, name)
            setattr(self, name, torch.empty(src.shape, dtype=cur.dtype, device=cur.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ------------------------------------------------------------------ weights
    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.lora_B @ self.lora_A)

    def merged_weight(self) -> torch.Tensor:
        """``W0 + s B A`` (what the layer computes in eval mode)."""
        return self.base.weight + self.delta_weight()

    def approx_full_grad(self) -> Optional[torch.Tensor]:
        """``s (B dA + dB A)``: the full-weight gradient seen through the LoRA factors, or None before backward."""
        if self.lora_A.grad is None or self.lora_B.grad is None:
            return None
        return self.scale * (self.lora_B.detach() @ self.lora_A.grad + self.lora_B.grad @ self.lora_A.detach())

    @torch.no_grad()
    def update_norms(self) -> None:
        """Cache ``||W'_i||`` and ``||G_i||`` (and MGPO's momentum) from the current weights and LoRA gradients.

        A no-op for plain LoRA (``mode="none"``), which draws no perturbation."""
        if self.mode == "none":
            return
        if self.weight_norm == "exact":
            wn = self.merged_weight().norm(dim=1)
        else:  # kohya port: sqrt(mean_i ||W0_i||^2 + ||dW_i||^2)
            w0 = self.base.weight.norm(dim=1)
            wn = torch.sqrt((w0 ** 2).mean() + self.delta_weight().norm(dim=1) ** 2)
        self.weight_row_norms = wn.detach().clone()
        G = self.approx_full_grad()
        if G is not None:
            self.grad_row_norms = G.norm(dim=1).detach().clone()
            if self.mode == "mgpo":
                if self.mgpo_m.numel() == 0:
                    self.mgpo_m = torch.zeros_like(G)
                self.mgpo_m.mul_(self.mgpo_momentum).add_(G, alpha=1 - self.mgpo_momentum)
                self.mgpo_norm_ema = self.mgpo_ema * self.mgpo_norm_ema + (1 - self.mgpo_ema) * float(G.norm())

    def row_std(self) -> Optional[torch.Tensor]:
        """Per-row standard deviation ``sigma_i`` of the next perturbation (``None``: no perturbation)."""
        if self.mode in ("none", "mgpo") or self.weight_row_norms.numel() == 0:
            return None
        if self.mode == "flat":
            sigma_t = self.sigma * (1 - math.cos(math.pi * min(max(self.progress, 0.0), 1.0))) / 2
            return sigma_t * self.weight_row_norms / math.sqrt(self.in_features)
        fan = self.out_features if self.norm == "fan_out" else self.in_features
        g = self.grad_row_norms if self.grad_row_norms.numel() else torch.zeros_like(self.weight_row_norms)
        return (self.sigma * self.weight_row_norms + self.beta * g ** self.grad_norm_power) / math.sqrt(fan)

    def perturbation(self) -> Optional[torch.Tensor]:
        """A fresh perturbation matrix ``(out, in)`` for this forward (never stored)."""
        if self.mode == "mgpo":
            if self.mgpo_m.numel() == 0 or self.mgpo_norm_ema <= 0:
                return None
            return self.sigma * self.mgpo_m / (self.mgpo_norm_ema + 1e-12)
        std = self.row_std()
        if std is None:
            return None
        self.last_perturbation_std = std
        w = self.base.weight
        noise = torch.randn(w.shape, generator=self.generator, dtype=w.dtype, device=w.device)
        return noise * std[:, None]

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"GGPOLoRALinear expects inputs with last dimension {self.in_features}, got "
                             f"shape {tuple(x.shape)}")
        y = self.base(x) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)
        if self.training:
            eps = self.perturbation()
            if eps is not None:
                y = y + F.linear(x, eps.detach())
        return y

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}, mode={self.mode}, "
                f"sigma={self.sigma}, beta={self.beta}, norm={self.norm}")


# ---------------------------------------------------------------------- model-level helpers
def lora_layers(model: nn.Module) -> List[GGPOLoRALinear]:
    return [m for m in model.modules() if isinstance(m, GGPOLoRALinear)]


def wrap_lora(model: nn.Module, target: Type[nn.Module] = nn.Linear, include: Optional[Sequence[str]] = None,
              exclude: Sequence[str] = (), freeze_base: bool = True, **kw) -> nn.Module:
    """Replace (in place) every ``target`` submodule (optionally only names containing one of ``include``,
    never those containing one of ``exclude``) with a :class:`GGPOLoRALinear`; freeze every other
    parameter when ``freeze_base``.  Returns the model.  ``kw`` goes to ``GGPOLoRALinear``.
    The ``out_proj`` of ``nn.MultiheadAttention`` is skipped (that module never calls its forward)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"wrap_lora needs an nn.Module, got {type(model).__name__}")
    if target is not nn.Linear and not (isinstance(target, type) and issubclass(target, nn.Linear)):
        raise TypeError(f"wrap_lora wraps nn.Linear (or subclasses), got target={target!r}")
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    wrapped = {id(m.base) for m in lora_layers(model)}  # never wrap a LoRA layer's own base again
    # nn.MultiheadAttention reads out_proj.weight directly (its forward is never called): leave it alone
    wrapped |= {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    names = [(n, m) for n, m in model.named_modules() if isinstance(m, target) and id(m) not in wrapped]
    count = 0
    for name, mod in names:
        if include is not None and not any(s in name for s in include):
            continue
        if any(s in name for s in exclude):
            continue
        parent = model
        *path, leaf = name.split(".")
        for pth in path:
            parent = getattr(parent, pth)
        setattr(parent, leaf, GGPOLoRALinear(mod, **kw))
        count += 1
    if count == 0:
        raise ValueError(f"wrap_lora found no {target.__name__} modules to wrap (include={include}, exclude={exclude})")
    return model


@torch.no_grad()
def update_norms(model: nn.Module) -> None:
    """Refresh every LoRA layer's cached weight/gradient row norms; call after ``loss.backward()``."""
    for m in lora_layers(model):
        m.update_norms()


def set_progress(model: nn.Module, fraction: float) -> None:
    """Tell every LoRA layer how far training is (``0..1``; drives Flat-LoRA's sigma schedule)."""
    for m in lora_layers(model):
        m.progress = float(fraction)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`GGPOLoRALinear` by a plain ``nn.Linear`` holding ``W0 + s B A`` (in place)."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, GGPOLoRALinear):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.base.bias is not None,
                            dtype=mod.base.weight.dtype, device=mod.base.weight.device)
            lin.weight.copy_(mod.merged_weight())
            if mod.base.bias is not None:
                lin.bias.copy_(mod.base.bias)
            parent = model
            *path, leaf = name.split(".")
            for pth in path:
                parent = getattr(parent, pth)
            setattr(parent, leaf, lin)
    return model


def lora_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for m in lora_layers(model) for p in (m.lora_A, m.lora_B)]
