"""TrAct: training first-layer activations (Petersen, Borgelt, Ermon; NeurIPS 2024, arXiv 2410.23970).

The first layer computes ``Z = X Wᵀ`` with inputs ``X ∈ R^{b×n}`` (``b`` rows: batch items, or batch items ×
output positions for a convolution, whose ``X`` is the unfolded input).  TrAct takes a gradient step on the
activations ``Z`` and solves for the weight ``W`` closest to the proposed activations under a λ-regularised
least-squares fit; the closed form replaces only the weight gradient of that layer:

    direct    (n ≤ b):  ∇̃_W = (∂L/∂Z)ᵀ X (XᵀX/b + λ I_n)⁻¹
    Woodbury  (b < n):  ∇̃_W = (∂L/∂Z)ᵀ (I_b − (1/λ)(XXᵀ/b)(XXᵀ/(bλ) + I_b)⁻¹) X / λ

Both are the same matrix (push-through identity).  The input and bias gradients are the ordinary ones, and
any optimizer steps on ``∇̃_W`` as if it were the gradient.  As λ → ∞, ``λ·∇̃_W`` → the plain gradient.

Under ``torch.autocast`` (bf16 / fp16) the forward is the autocast layer's; the backward computes in at least
float32 (the small ``n×n`` or ``b×b`` system is solved in float32: half-precision linear algebra is not
available and would lose the system's conditioning) and returns each gradient in its tensor's dtype.
Wrapping is idempotent: ``TrAct`` of a TrAct layer returns it unchanged, and ``apply_tract`` on a model whose
first layer is already wrapped changes nothing.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

BRANCHES = ("auto", "direct", "woodbury")
INVERSES = ("inverse", "cholesky", "solve")


def _check(lam: float, branch: str, inv: str) -> None:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0 or lam != lam or lam == float("inf"):
        raise ValueError(f"lam (λ) must be a finite number > 0, got {lam!r}")
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    if inv not in INVERSES:
        raise ValueError(f"inv must be one of {INVERSES}, got {inv!r}")


def _compute_dtype(*ts: torch.Tensor) -> torch.dtype:
    """float64 if any tensor is float64, else float32 (bf16/fp16 are promoted for the solve)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _check_finite_input(x: torch.Tensor, where: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where}: the input contains NaN or inf; TrAct's least-squares system needs finite inputs")


def _check_finite_grad(gz: torch.Tensor, where: str) -> None:
    if not bool(torch.isfinite(gz).all()):
        raise ValueError(f"{where}: the gradient arriving from the layers above contains NaN or inf (non-finite loss "
                         "or activations); nothing was written to this layer's .grad")


def _spd_solve(M: torch.Tensor, R: torch.Tensor, inv: str) -> torch.Tensor:
    """``M⁻¹ R`` for a symmetric positive-definite ``M``."""
    if inv == "inverse":
        return torch.linalg.inv(M) @ R
    if inv == "cholesky":
        L = torch.linalg.cholesky(M)
        return torch.cholesky_solve(R, L)
    return torch.linalg.solve(M, R)


def tract_weight_grad(x: torch.Tensor, grad_z: torch.Tensor, lam: float = 0.1, branch: str = "auto",
                      inv: str = "inverse", plain_grad: Optional[torch.Tensor] = None) -> torch.Tensor:
    """TrAct's weight gradient ``(out, n)`` from inputs ``x (b, n)`` and activation gradients ``grad_z (b, out)``.

    ``branch='auto'`` uses the Woodbury form when ``b < n`` (a ``b×b`` system) and the direct form otherwise
    (an ``n×n`` system), as the paper does.  ``plain_grad`` may pass the already computed ``grad_zᵀ x``
    (``(out, n)``; e.g. from ``conv2d_weight``) for the direct branch.
    """
    _check(lam, branch, inv)
    if x.dim() != 2 or grad_z.dim() != 2 or x.shape[0] != grad_z.shape[0]:
        raise ValueError(f"tract_weight_grad needs x (b, n) and grad_z (b, out) with the same b; got "
                         f"{tuple(x.shape)} and {tuple(grad_z.shape)}")
    b, n = x.shape
    if branch == "auto":
        branch = "woodbury" if b < n else "direct"
    if branch == "direct":
        M = x.T @ x / b
        M.diagonal().add_(lam)
        # Gᵀ X M⁻¹ = (M⁻¹ (Gᵀ X)ᵀ)ᵀ since M is symmetric
        gtx = grad_z.T @ x if plain_grad is None else plain_grad
        return _spd_solve(M, gtx.T, inv).T
    K = x @ x.T / b  # (b, b)
    A = K / lam
    A.diagonal().add_(1.0)
    inner = x - (K @ _spd_solve(A, x, inv)) / lam  # (I_b − (1/λ) K (K/λ + I_b)⁻¹) X
    return grad_z.T @ inner / lam


class _TrActLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lam, branch, inv):
        _check_finite_input(x, "TrActLinear")
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.cfg = (lam, branch, inv)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, gz):
        x, weight = ctx.saved_tensors
        _check_finite_grad(gz, "TrActLinear backward")
        with torch.autocast(device_type=gz.device.type, enabled=False):
            dt = _compute_dtype(x, weight, gz)
            xf, wf, gzf = x.to(dt), weight.to(dt), gz.to(dt)
            gx = (gzf @ wf).to(x.dtype) if ctx.needs_input_grad[0] else None
            gw = tract_weight_grad(xf, gzf, *ctx.cfg).to(weight.dtype) if ctx.needs_input_grad[1] else None
            gb = gzf.sum(0).to(ctx.bias_dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None


class _TrActConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, lam, branch, inv):
        _check_finite_input(x, "TrActConv2d")
        ctx.save_for_backward(x, weight)  # the input, not its unfolding: unfold again in backward
        ctx.has_bias = bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.conv = (stride, padding)
        ctx.cfg = (lam, branch, inv)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, gz):
        x, weight = ctx.saved_tensors
        _check_finite_grad(gz, "TrActConv2d backward")
        with torch.autocast(device_type=gz.device.type, enabled=False):
            return _TrActConv2dFn._backward(ctx, x, weight, gz)

    @staticmethod
    def _backward(ctx, x_in, w_in, gz_in):
        dt = _compute_dtype(x_in, w_in, gz_in)
        x, weight, gz = x_in.to(dt), w_in.to(dt), gz_in.to(dt)
        stride, padding = ctx.conv
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(x.shape, weight, gz, stride=stride, padding=padding).to(x_in.dtype)
        if ctx.needs_input_grad[1]:
            cols = F.unfold(x, weight.shape[2:], padding=padding, stride=stride)  # (B, n, L)
            X = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B·L, n)
            lam, branch, inv = ctx.cfg
            b, n = X.shape
            if branch == "direct" or (branch == "auto" and b >= n):
                # Gᵀ X is the plain weight gradient: let the conv kernel compute it
                plain = torch.nn.grad.conv2d_weight(x, weight.shape, gz, stride=stride, padding=padding)
                gw = tract_weight_grad(X, gz.new_empty(b, 0), lam, "direct", inv,
                                       plain_grad=plain.reshape(weight.shape[0], -1))
            else:
                G = gz.flatten(2).transpose(1, 2).reshape(-1, gz.shape[1])  # (B·L, C_out)
                gw = tract_weight_grad(X, G, lam, "woodbury", inv)
            gw = gw.reshape(weight.shape).to(w_in.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gz.sum((0, 2, 3)).to(ctx.bias_dtype)
        return gx, gw, gb, None, None, None, None, None


class TrActLinear(nn.Module):
    """A Linear layer whose weight gradient is TrAct's.  Shares ``weight``/``bias`` with the wrapped layer
    (same parameter objects, same state-dict keys).  Inputs ``(..., in_features)``: every leading index is a row."""

    def __init__(self, layer: nn.Linear, lam: float = 0.1, branch: str = "auto", inv: str = "inverse"):
        super().__init__()
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"TrActLinear wraps an nn.Linear, got {type(layer).__name__}")
        _check(lam, branch, inv)
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight = layer.weight
        self.bias = layer.bias
        self.lam, self.branch, self.inv = float(lam), branch, inv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"TrActLinear expects inputs (..., {self.in_features}), got {tuple(x.shape)}")
        lead = x.shape[:-1]
        out = _TrActLinearFn.apply(x.reshape(-1, self.in_features), self.weight, self.bias, self.lam, self.branch,
                                   self.inv)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, lam={self.lam}"


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class TrActConv2d(nn.Module):
    """A Conv2d layer (stride and zero padding; dilation 1, groups 1) whose weight gradient is TrAct's,
    with ``X`` the unfolded input ``(B·H_out·W_out, C_in·k_h·k_w)``.  Shares the wrapped layer's parameters."""

    def __init__(self, layer: nn.Conv2d, lam: float = 0.1, branch: str = "auto", inv: str = "inverse"):
        super().__init__()
        if not isinstance(layer, nn.Conv2d):
            raise TypeError(f"TrActConv2d wraps an nn.Conv2d, got {type(layer).__name__}")
        if _pair(layer.dilation) != (1, 1) or layer.groups != 1:
            raise ValueError(f"TrAct supports Conv2d with dilation=1 and groups=1 only, got dilation={layer.dilation}, "
                             f"groups={layer.groups}")
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"TrAct supports integer zero padding only, got padding={layer.padding!r}, "
                             f"padding_mode={layer.padding_mode!r}")
        _check(lam, branch, inv)
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        self.kernel_size, self.stride, self.padding = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
        self.weight = layer.weight
        self.bias = layer.bias
        self.lam, self.branch, self.inv = float(lam), branch, inv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"TrActConv2d expects inputs (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return _TrActConv2dFn.apply(x, self.weight, self.bias, self.stride, self.padding, self.lam, self.branch,
                                    self.inv)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, lam={self.lam}")


def TrAct(layer: Union[nn.Linear, nn.Conv2d], lam: float = 0.1, branch: str = "auto",
          inv: str = "inverse") -> nn.Module:
    """Wrap a first layer (``nn.Linear`` or ``nn.Conv2d``) so that its weight gradient is TrAct's.

    The returned module shares the layer's weight and bias, so an optimizer built before or after wrapping
    steps the same parameters.  ``lam`` is λ (paper default 0.1).  Wrapping a TrAct layer again returns it
    unchanged (idempotent); asking for a different configuration of an already wrapped layer is a clear error.
    """
    if isinstance(layer, (TrActLinear, TrActConv2d)):
        _check(lam, branch, inv)
        if (layer.lam, layer.branch, layer.inv) != (float(lam), branch, inv):
            raise ValueError(f"the layer is already a TrAct layer with lam={layer.lam}, branch={layer.branch!r}, "
                             f"inv={layer.inv!r}; set those attributes to change it instead of wrapping it again "
                             f"(asked for lam={lam}, branch={branch!r}, inv={inv!r})")
        return layer
    if isinstance(layer, nn.Conv2d):
        return TrActConv2d(layer, lam=lam, branch=branch, inv=inv)
    if isinstance(layer, nn.Linear):
        return TrActLinear(layer, lam=lam, branch=branch, inv=inv)
    raise TypeError(f"TrAct wraps an nn.Linear or nn.Conv2d (the model's first layer), got {type(layer).__name__}")


def apply_tract(model: nn.Module, first_layer_name: Optional[str] = None, lam: float = 0.1, **kwargs) -> nn.Module:
    """Replace ``model``'s first layer (by dotted name, or the first Linear/Conv2d in module order) with its
    TrAct wrapper, in place; returns ``model``.  Parameters and state-dict keys are unchanged.

    Idempotent: if the first layer (in module order) is already a TrAct layer, nothing changes (the next
    layer is never wrapped by a second call)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply_tract expects an nn.Module, got {type(model).__name__}")
    if first_layer_name is None:
        for name, mod in model.named_modules():
            if isinstance(mod, (TrActLinear, TrActConv2d)):
                TrAct(mod, lam=lam, **kwargs)  # same configuration, or a clear error
                return model
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                first_layer_name = name
                break
        else:
            raise ValueError("the model has no nn.Linear or nn.Conv2d layer to apply TrAct to")
    modules = dict(model.named_modules())
    if first_layer_name not in modules:
        raise ValueError(f"no submodule named {first_layer_name!r}; candidates: "
                         f"{[n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))]}")
    layer = modules[first_layer_name]
    wrapped = TrAct(layer, lam=lam, **kwargs)
    if first_layer_name == "":
        raise ValueError("apply_tract needs a model that contains the layer; call TrAct(layer) on a bare layer")
    parent_name, _, child = first_layer_name.rpartition(".")
    setattr(modules[parent_name] if parent_name else model, child, wrapped)
    return model
