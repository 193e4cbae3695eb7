"""The one-layer attention model of the paper and its helpers (float64 throughout).

    f(X) = vᵀ Xᵀ softmax(X W z)                                   (W-parametrization)
    f(X) = vᵀ Xᵀ softmax(X K Qᵀ z)      W = K Qᵀ                  ((K, Q)-parametrization)

``X ∈ R^{T×d}`` holds the tokens of one example, ``z ∈ R^d`` is the query token: a separate
input ``z_i`` (cross-attention) or one of the example's own tokens ``z_i = x_{i, attn_idx}``
(self-attention).  ``v`` is a fixed linear head; training minimises the logistic loss
``mean_i log(1 + exp(-y_i f(X_i)))``.  The score of token ``t`` is ``x_tᵀ W z``, the
orientation used by the Att-SVM constraints, so ``model.W`` is directly comparable with
:func:`gradkit_attsvm.svm.solve_att_svm`.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPE = torch.float64
PARAMS = ("W", "KQ")
INITS = ("random", "zero")


def _as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        try:
            t = torch.as_tensor(a)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{name} must be a tensor or array, got {type(a).__name__}") from exc
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.to(DTYPE)


def check_inputs(X, Z=None, *, attn_idx: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate ``X`` (n, T, d) and the queries; return float64 ``(X, Z)`` with ``Z`` (n, d).

    ``Z=None`` with an integer ``attn_idx`` means self-attention: ``z_i = X[i, attn_idx]``.
    """
    X = _as_tensor(X, "X")
    if X.dim() != 3:
        raise ValueError(f"X must have shape (n, T, d) = (examples, tokens, dim), got shape {tuple(X.shape)}")
    n, T, d = X.shape
    if n < 1 or T < 2 or d < 1:
        raise ValueError(f"X needs n >= 1 examples, T >= 2 tokens and d >= 1 dims, got shape {tuple(X.shape)}")
    if Z is None:
        if attn_idx is None:
            raise ValueError("give the query tokens Z (n, d) for cross-attention, or attn_idx for self-attention")
        if not isinstance(attn_idx, int) or isinstance(attn_idx, bool) or not -T <= attn_idx < T:
            raise ValueError(f"attn_idx must be an integer token index in [-{T}, {T}), got {attn_idx!r}")
        Z = X[:, attn_idx]
    else:
        Z = _as_tensor(Z, "Z")
        if Z.shape != (n, d):
            raise ValueError(f"Z must have shape (n, d) = {(n, d)} to match X {tuple(X.shape)}, got {tuple(Z.shape)}")
    if not (torch.isfinite(X).all() and torch.isfinite(Z).all()):
        raise ValueError("X and Z must be finite (found NaN or inf)")
    return X, Z


def check_labels(y, n: int) -> torch.Tensor:
    y = _as_tensor(y, "y").reshape(-1)
    if y.numel() != n:
        raise ValueError(f"y must hold one label per example ({n}), got {y.numel()}")
    if not torch.all((y == 1) | (y == -1)):
        raise ValueError("y must hold labels in {-1, +1}")
    return y


def make_data(n: int = 6, T: int = 8, d: int = 10, seed: int = 0):
    """The notebooks' synthetic data: ``v`` a random unit head, ``y = ±1``, token rows and queries
    drawn from N(0, I) and normalised to unit length.  Returns ``(X, y, Z, v)`` in float64.

    The draws happen in the notebooks' order (v, y, X, Z) on a ``torch.Generator`` seeded with
    ``seed``, so a seed gives the same problem as the official notebooks' run with that seed.
    """
    for name, val in (("n", n), ("T", T), ("d", d)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if T < 2:
        raise ValueError(f"T must be >= 2 tokens, got {T}")
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(d, generator=g)
    v = v / v.norm()
    y = 2.0 * (torch.randn(n, generator=g) > 0).float() - 1.0
    X = torch.randn(n, T, d, generator=g)
    X = X / X.norm(dim=-1, keepdim=True)
    Z = torch.randn(n, d, generator=g)
    Z = Z / Z.norm(dim=-1, keepdim=True)
    return X.to(DTYPE), y.to(DTYPE), Z.to(DTYPE), v.to(DTYPE)


def token_scores(X: torch.Tensor, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``γ_{i,t} = y_i · vᵀ x_{i,t}``, the per-token score of the linear head, shape (n, T)."""
    return y.reshape(-1, 1) * (X @ v)


def global_tokens(X, y, v) -> torch.Tensor:
    """Globally optimal tokens: ``α_i = argmax_t y_i · x_{i,t}ᵀ v`` (LongTensor of length n)."""
    X = _as_tensor(X, "X")
    if X.dim() != 3:
        raise ValueError(f"X must have shape (n, T, d), got {tuple(X.shape)}")
    v = _as_tensor(v, "v").reshape(-1)
    if v.numel() != X.shape[-1]:
        raise ValueError(f"v must have d = {X.shape[-1]} entries, got {v.numel()}")
    y = check_labels(y, X.shape[0])
    return token_scores(X, v, y).argmax(dim=-1)


def corr(W1, W2) -> float:
    """Correlation coefficient ``⟨W1, W2⟩ / (‖W1‖_F ‖W2‖_F)`` of two same-shape matrices."""
    a = _as_tensor(W1, "W1")
    b = _as_tensor(W2, "W2")
    if a.shape != b.shape:
        raise ValueError(f"corr needs matrices of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        raise ValueError("corr is undefined for a zero matrix (its direction does not exist)")
    return float((a * b).sum()) / (na * nb)


def logistic_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_i log(1 + exp(-y_i out_i))`` computed stably (softplus)."""
    return F.softplus(-y * out).mean()


class AttentionModel(nn.Module):
    """One attention layer with a fixed linear head: ``f(X) = vᵀ Xᵀ softmax(X W z)``.

    Arguments
    ---------
    d: token dimension.
    param: ``"W"`` (one d×d matrix) or ``"KQ"`` (``K, Q ∈ R^{d×m}``, ``W = K Qᵀ``).
    m: inner dimension of (K, Q) (default ``d``).
    cross: cross-attention (``forward(X, Z)``) if True, else self-attention with
        ``z_i = X[i, attn_idx]``.
    attn_idx: query token index for self-attention.
    v: the fixed head (``d`` entries, a buffer; default a seeded random unit vector).
    init: ``"random"`` (entries ~ U(-1/√d, 1/√d), the default of ``nn.Linear`` used by the
        official code) or ``"zero"``.
    init_scale: multiplies the random initialisation.
    seed: seeds the initialisation (and the default ``v``).
    """

    def __init__(self, d: int, param: str = "W", *, m: Optional[int] = None, cross: bool = True,
                 attn_idx: int = 0, v=None, init: str = "random", init_scale: float = 1.0, seed: int = 0):
        super().__init__()
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"d must be a positive integer, got {d!r}")
        if param not in PARAMS:
            raise ValueError(f"param must be one of {PARAMS}, got {param!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        m = d if m is None else m
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"m must be a positive integer, got {m!r}")
        self.d, self.m, self.param, self.cross, self.attn_idx = d, m, param, bool(cross), int(attn_idx)
        g = torch.Generator().manual_seed(int(seed))
        bound = init_scale / math.sqrt(d)

        def new(shape):
            if init == "zero":
                return nn.Parameter(torch.zeros(shape, dtype=DTYPE))
            return nn.Parameter((torch.rand(shape, generator=g, dtype=DTYPE) * 2 - 1) * bound)

        if param == "W":
            self.W_ = new((d, d))
        else:
            self.K = new((d, m))
            self.Q = new((d, m))
        if v is None:
            v = torch.randn(d, generator=g, dtype=DTYPE)
            v = v / v.norm()
        v = _as_tensor(v, "v").reshape(-1)
        if v.numel() != d:
            raise ValueError(f"v must have d = {d} entries, got {v.numel()}")
        self.register_buffer("v", v.clone())
        self.last_attention: Optional[torch.Tensor] = None

    @property
    def W(self) -> torch.Tensor:
        """The combined attention matrix (``W`` or ``K Qᵀ``), detached."""
        return self.combined().detach()

    def combined(self) -> torch.Tensor:
        return self.W_ if self.param == "W" else self.K @ self.Q.T

    def regularizer(self) -> torch.Tensor:
        """``‖K‖² + ‖Q‖²`` for (K, Q) (the official code adds ``eps_machine`` times it to the loss), 0 for W."""
        if self.param == "W":
            return torch.zeros((), dtype=DTYPE)
        return self.K.pow(2).sum() + self.Q.pow(2).sum()

    def queries(self, X: torch.Tensor, Z=None) -> torch.Tensor:
        if self.cross:
            if Z is None:
                raise ValueError("cross-attention model: forward(X, Z) needs the query tokens Z (n, d)")
            return check_inputs(X, Z)[1]
        if Z is not None:
            raise ValueError("self-attention model takes its queries from X (z_i = X[i, attn_idx]); pass Z=None")
        return check_inputs(X, attn_idx=self.attn_idx)[1]

    def attention(self, X, Z=None) -> torch.Tensor:
        """Softmax attention weights ``softmax(X_i W z_i)`` of every example, shape (n, T)."""
        Zq = self.queries(X, Z)
        X = _as_tensor(X, "X") if not isinstance(X, torch.Tensor) else X.to(DTYPE)
        if X.shape[-1] != self.d:
            raise ValueError(f"X has token dimension {X.shape[-1]}, the model was built for d = {self.d}")
        if self.param == "W":
            scores = torch.einsum("ntd,de,ne->nt", X, self.W_, Zq)
        else:
            scores = torch.einsum("ntd,dk,ek,ne->nt", X, self.K, self.Q, Zq)
        return torch.softmax(scores, dim=-1)

    def forward(self, X, Z=None) -> torch.Tensor:
        s = self.attention(X, Z)
        self.last_attention = s.detach()
        X = X.to(DTYPE) if isinstance(X, torch.Tensor) else _as_tensor(X, "X")
        return torch.einsum("nt,ntd,d->n", s, X, self.v)

    def loss(self, X, y, Z=None, reg: float = 0.0) -> torch.Tensor:
        """Logistic loss; ``reg`` times :meth:`regularizer` is added (for (K, Q))."""
        y = check_labels(y, _as_tensor(X, "X").shape[0])
        out = logistic_loss(self(X, Z), y)
        if reg:
            out = out + reg * self.regularizer()
        return out


def optimal_tokens(model: Optional[AttentionModel], X, Z=None, *, y=None, v=None, rule: str = "local") -> torch.Tensor:
    """The selected token of every example (LongTensor of length n).

    ``rule="local"``: ``argmax_t softmax(X_i W z_i)_t`` of the (trained) model, the token the
    attention converged to (the target of the *locally* optimal SVM).
    ``rule="global"``: ``argmax_t y_i · x_{i,t}ᵀ v`` (needs ``y``; ``v`` defaults to the model's head).
    """
    if rule == "local":
        if model is None:
            raise ValueError("rule='local' reads the model's softmax: pass the trained model")
        with torch.no_grad():
            return model.attention(X, Z).argmax(dim=-1)
    if rule == "global":
        if y is None:
            raise ValueError("rule='global' needs the labels y")
        if v is None:
            if model is None:
                raise ValueError("rule='global' needs the head v (or a model holding it)")
            v = model.v
        return global_tokens(X, y, v)
    raise ValueError(f"rule must be 'local' or 'global', got {rule!r}")


#: the name used in the paper brief's suggested API
SelfAttnHead = AttentionModel
