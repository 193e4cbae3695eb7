"""A fine-tuning trainer for LoRA-GGPO, plain LoRA, Flat-LoRA, LoRA-SAM and full fine-tuning.

``create("lora-ggpo", model, r=8).fit(loader, epochs=10)`` wraps the model's Linear layers
(in place), trains the LoRA factors with AdamW (SAM for ``lora-sam``) and returns the model.
After every backward the layers' weight/gradient norms are refreshed
(:func:`~gradkit_loraggpo.lora.update_norms`), so the next forward draws its perturbation
from the current scales; Flat-LoRA's sigma schedule follows the fraction of steps done.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .lora import lora_layers, lora_parameters, set_progress, update_norms, wrap_lora
from .sam import SAM

METHODS = ("ggpo", "lora", "flat", "mgpo", "sam", "full")
_MODE = {"ggpo": "ggpo", "lora": "none", "flat": "flat", "mgpo": "mgpo", "sam": "none"}


class LoRAFineTuner:
    """Fine-tune ``model`` with one of :data:`METHODS`.

    Parameters: ``r``, ``alpha`` (LoRA), ``sigma``/``beta``/``norm``/``grad_norm_power`` (perturbation,
    see :class:`~gradkit_loraggpo.lora.GGPOLoRALinear`), ``lr``, ``weight_decay``, ``epochs``,
    ``rho`` (SAM radius), ``include``/``exclude`` (which Linear layers get LoRA), ``train_modules``
    (names of submodules trained fully, e.g. a new classification head), ``loss_fn``,
    ``seed`` (seeds the perturbation generator).
    """

    def __init__(self, model: nn.Module, method: str = "ggpo", r: int = 8, alpha: float = 16.0,
                 sigma: Optional[float] = None, beta: float = 0.01, norm: str = "fan_out",
                 grad_norm_power: float = 2.0, lr: float = 1e-3, weight_decay: float = 0.0, epochs: int = 1,
                 rho: float = 0.05, include: Optional[Sequence[str]] = None, exclude: Sequence[str] = (),
                 train_modules: Sequence[str] = (), loss_fn: Callable = F.cross_entropy, seed: int = 0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        for key, v, lo_open in (("lr", lr, True), ("weight_decay", weight_decay, False), ("rho", rho, False)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (lo_open and v == 0):
                raise ValueError(f"{key} must be a finite number {'>' if lo_open else '>='} 0, got {v!r}")
        self.model, self.method, self.epochs, self.loss_fn = model, method, int(epochs), loss_fn
        if sigma is None:
            sigma = 0.05 if method == "flat" else 0.03
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        self.generator = torch.Generator(device=device).manual_seed(seed)  # the perturbation draws
        if method == "full":
            for p in model.parameters():
                p.requires_grad_(True)
            params = [p for p in model.parameters()]
        else:
            if not lora_layers(model):
                wrap_lora(model, r=r, alpha=alpha, sigma=sigma, beta=beta, norm=norm,
                          grad_norm_power=grad_norm_power, mode=_MODE[method], include=include, exclude=exclude,
                          generator=self.generator)
            params = lora_parameters(model)
            named = dict(model.named_modules())
            for name in train_modules:  # e.g. a fresh task head, trained fully next to the LoRA factors
                if name not in named:
                    raise ValueError(f"train_modules entry {name!r} is not a submodule name of the model")
                for p in named[name].parameters():
                    p.requires_grad_(True)
                    params.append(p)
        if method == "sam":
            self.optimizer = SAM(params, lr=lr, rho=rho, base="adamw", weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.step_count = 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor, total_steps: Optional[int] = None) -> float:
        self.model.train()
        if total_steps:
            set_progress(self.model, self.step_count / total_steps)

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            return loss

        if self.method == "sam":
            loss = self.optimizer.step(closure)
        else:
            loss = closure()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{self.method}: training loss became {float(loss.detach())} at step {self.step_count}; with GGPO the "
                    "noise scale beta*||G_i||^2 grows with the gradient, so lower beta (or sigma) or the lr")
            update_norms(self.model)  # scales for the next forward's perturbation
            self.optimizer.step()
        self.step_count += 1
        return float(loss.detach())

    def fit(self, data: Iterable, epochs: Optional[int] = None,
            on_epoch: Optional[Callable[[int, nn.Module], None]] = None) -> nn.Module:
        epochs = self.epochs if epochs is None else int(epochs)
        try:
            per_epoch = len(data)  # type: ignore[arg-type]
        except TypeError:
            per_epoch = None
        total = per_epoch * epochs if per_epoch else None
        for ep in range(epochs):
            for x, y in data:
                self.train_step(x, y, total)
            if on_epoch is not None:
                on_epoch(ep + 1, self.model)
        self.model.eval()
        return self.model


def trainable_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
