"""CoFrGeNet blocks: the continued-fraction FFN (Cffn), the attention replacements (CAttnU, CAttnM), a function
that swaps them into a transformer, and the dyadic training schedule.

Sources.  Cffn: ``y = U x + V z``, ``z_j = f(W^(j) x_hat)``, ``x_hat = sigmoid(G x) * x`` (eq. 8 and §3.3 as
summarised by the paper notes and by a third-party model card; the paper's own §3 text was not readable here).
CAttnU / CAttnM: §3.2 as summarised by the paper notes (en.papernotes.org, ICML 2026): the definitions and
the parameter counts l(2d+l+1) and L(p+l)+p^2 below match that summary; every detail the summary leaves open is
a reconstruction and is named in the docstrings and the README.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ladder import CoFrLadder, ContinuedFraction, _check_eps, _check_positive_int

GATES = ("ladders", "input", "none")
ATTENTIONS = ("u", "m")


def _check_input(name: str, x, d_model: int, dims: Optional[int] = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if (dims is not None and x.dim() != dims) or x.dim() < 1 or x.shape[-1] != d_model:
        want = "(B, T, %d)" % d_model if dims == 3 else "(..., %d)" % d_model
        raise ValueError(f"{name} expects input of shape {want}, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} input contains NaN or inf")


def _init_linear(m: nn.Linear, std: float = 0.02) -> nn.Linear:
    nn.init.normal_(m.weight, std=std)
    if m.bias is not None:
        nn.init.zeros_(m.bias)
    return m


class Cffn(nn.Module):
    """Gated continued-fraction FFN (replaces a transformer FFN; no 4x expansion).

    ``y = U x_in + V z``,  ``z = ladders(x_hat)``,  ``x_hat = sigmoid(G x) * x``.

    ``gate`` says where the gate acts: ``"input"`` (default; ``x_in = x_hat``: the whole block takes the gated,
    non-expanded input, our reading of the paper notes; it trained best here, see the README), ``"ladders"``
    (``x_in = x``, only the ladders see ``x_hat``: the reading of a third-party reimplementation), ``"none"``
    (no G: CoFrNet ladders without gating, a baseline).
    ``mode``: ``"multivariate"`` (default, eq. 8: ladder j is a scalar function of the p-vector, V is p x L) or
    ``"elementwise"`` (each ladder gives p fractions, V_j is a per-feature scale).
    Parameters: 2p^2 + 2p (U, G with biases) + L d p + L d (ladders) + L p (V); ``gate="none"`` drops G.
    """

    def __init__(self, d_model: int, n_ladders: int = 2, depth: int = 5, gate: str = "input",
                 mode: str = "multivariate", eps: float = 1e-2, bias: bool = True):
        super().__init__()
        self.d_model = _check_positive_int("d_model", d_model)
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; expected one of {GATES}")
        self.gate_mode = gate
        self.U = _init_linear(nn.Linear(d_model, d_model))
        self.G = _init_linear(nn.Linear(d_model, d_model)) if gate != "none" else None
        self.ladders = CoFrLadder(d_model, depth=depth, n_ladders=n_ladders, mode=mode, eps=eps, bias=bias)
        if mode == "multivariate":
            self.V = nn.Parameter(torch.randn(d_model, n_ladders) * 0.02)
        else:
            self.V = nn.Parameter(torch.randn(n_ladders, d_model) * 0.02)

    @property
    def mode(self) -> str:
        return self.ladders.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("Cffn", x, self.d_model)
        x_hat = x if self.G is None else torch.sigmoid(self.G(x)) * x
        z = ContinuedFraction.apply(self.ladders.partial_denominators(x_hat), self.ladders.eps)
        y = self.U(x_hat if self.gate_mode == "input" else x)
        if self.mode == "multivariate":
            return y + F.linear(z, self.V)
        return y + (z * self.V).sum(-2)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, gate={self.gate_mode!r}"


class FFN(nn.Module):
    """The standard transformer FFN ``Linear(p, h) - GELU - Linear(h, p)``; ``hidden`` sets h (a 4x FFN or a
    narrower one matched to another block's parameter count, see :func:`matched_hidden`)."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.d_model = _check_positive_int("d_model", d_model)
        self.hidden = _check_positive_int("hidden", hidden)
        self.fc = _init_linear(nn.Linear(d_model, hidden))
        self.proj = _init_linear(nn.Linear(hidden, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("FFN", x, self.d_model)
        return self.proj(F.gelu(self.fc(x)))


def matched_hidden(d_model: int, n_params: int) -> int:
    """Hidden width h of an :class:`FFN` whose parameter count ``2 p h + h + p`` is closest to ``n_params``."""
    _check_positive_int("d_model", d_model)
    _check_positive_int("n_params", n_params)
    h = max(1, round((n_params - d_model) / (2 * d_model + 1)))
    return h


class _CausalMix(nn.Module):
    """``out[:, i] = sum_{j <= i} U[i, j] y[:, j]``: a lower-triangular l x l linear map over positions
    (the paper's "upper-triangular layer" acting on the transposed tensor).  Starts as the causal mean."""

    def __init__(self, block_size: int):
        super().__init__()
        init = torch.tril(torch.ones(block_size, block_size))
        init = init / init.sum(-1, keepdim=True)
        self.weight = nn.Parameter(init)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size, dtype=torch.bool)),
                             persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        t = y.shape[-2]
        w = self.weight[:t, :t].masked_fill(~self.mask[:t, :t], 0.0)
        return torch.matmul(w, y)


class CAttnU(nn.Module):
    """Univariate continued-fraction token mixer (replaces causal self-attention), reconstructed from §3.2.

    The sequence axis plays the role of the features (MLP-Mixer style): for each ensemble e = 1, 2 and each
    embedding channel c, ``y_e[t, c] = w_{e,0}[t] x[t, c] + f(w_{e,1}[t] x[t, c] + b_{e,1}[t], ...,
    w_{e,d-1}[t] x[t, c] + b_{e,d-1}[t])`` (univariate ladders with position-wise weights; for d = 2 this is the
    paper's ``w_0 * x + (w_1 * x)^-1``), then ``O = U_1 y_1 * U_2 y_2`` with causal (triangular) position
    mixers U_e.  Token t sees only tokens <= t.  Parameters l(2d + l + 1) as in the paper, plus the biases
    b (2(d-1)l, our addition: they keep the ladders away from the pole at x = 0 at initialisation).
    """

    def __init__(self, d_model: int, block_size: int, depth: int = 2, eps: float = 1e-2):
        super().__init__()
        self.d_model = _check_positive_int("d_model", d_model)
        self.block_size = _check_positive_int("block_size", block_size)
        self.depth = _check_positive_int("depth", depth)
        self.eps = _check_eps(eps)
        self.w0 = nn.Parameter(torch.ones(2, block_size))
        if depth > 1:
            self.w = nn.Parameter(torch.randn(2, block_size, depth - 1) * 0.02)
            self.b = nn.Parameter(torch.ones(2, block_size, depth - 1))
        self.mix = nn.ModuleList([_CausalMix(block_size), _CausalMix(block_size)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("CAttnU", x, self.d_model, dims=3)
        t = x.shape[1]
        if t > self.block_size:
            raise ValueError(f"CAttnU: sequence length {t} exceeds block_size {self.block_size}")
        out = None
        for e in range(2):
            y = self.w0[e, :t, None] * x
            if self.depth > 1:
                a = x.unsqueeze(-1) * self.w[e, :t, None, :] + self.b[e, :t, None, :]
                y = y + ContinuedFraction.apply(a, self.eps)
            y = self.mix[e](y)
            out = y if out is None else out * y
        return out

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, block_size={self.block_size}, depth={self.depth}"


class CAttnM(nn.Module):
    """Multivariate continued-fraction attention (replaces causal self-attention), reconstructed from §3.2.

    ``Y = ladders(X)`` (L multivariate ladders of depth d on each token, shape (T, L); the paper's two ladder
    ensembles y_1, y_2 concatenated), ``A = causal_softmax(Y F)`` with ``F`` in R^{L x l} (scores of query
    position i for key position j <= i), ``O = A X W^v``.  Parameters L d p + L d + L l + p^2 (the paper's
    L(p + l) + p^2 at d = 1, plus the ladder biases).  Reconstruction: the paper notes say token i attends to
    j <= i - 1, which leaves the first row empty; we use j <= i.
    """

    def __init__(self, d_model: int, block_size: int, n_ladders: int = 4, depth: int = 3, eps: float = 1e-2):
        super().__init__()
        self.d_model = _check_positive_int("d_model", d_model)
        self.block_size = _check_positive_int("block_size", block_size)
        self.ladders = CoFrLadder(d_model, depth=depth, n_ladders=n_ladders, mode="multivariate", eps=eps)
        self.F = nn.Parameter(torch.randn(n_ladders, block_size) * 0.02)
        self.value = nn.Linear(d_model, d_model, bias=False)
        nn.init.normal_(self.value.weight, std=0.02)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size, dtype=torch.bool)),
                             persistent=False)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        scores = torch.matmul(self.ladders(x), self.F[:, :t])  # (B, T, T)
        return torch.softmax(scores.masked_fill(~self.mask[:t, :t], float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("CAttnM", x, self.d_model, dims=3)
        if x.shape[1] > self.block_size:
            raise ValueError(f"CAttnM: sequence length {x.shape[1]} exceeds block_size {self.block_size}")
        return torch.matmul(self.attention_weights(x), self.value(x))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, block_size={self.block_size}"


class AsSelfAttention(nn.Module):
    """Lets a causal token mixer stand where ``nn.MultiheadAttention(batch_first=True)`` is called as
    ``attn(h, h, h, attn_mask=causal, need_weights=False)`` and returns ``(out, None)``.  Refuses cross
    attention and masks that are not the causal mask (the mixers are causal by construction)."""

    def __init__(self, mixer: nn.Module):
        super().__init__()
        self.mixer = mixer

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False, attn_mask=None,
                **kw):
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("continued-fraction attention is self-attention only: key and value must be the query")
        if key_padding_mask is not None:
            raise ValueError("continued-fraction attention does not support key_padding_mask")
        if need_weights:
            raise ValueError("continued-fraction attention has no attention weights to return (need_weights=True)")
        if attn_mask is not None:
            t = query.shape[1]
            causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=query.device), diagonal=1)
            am = attn_mask.bool() if attn_mask.dtype == torch.bool else torch.isinf(attn_mask)
            if am.shape != causal.shape or not torch.equal(am, causal):
                raise ValueError("continued-fraction attention is causal by construction; only the standard causal "
                                 "attn_mask is accepted")
        return self.mixer(query), None


def _linear_in_features(module: nn.Module) -> Optional[int]:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    return None


def cofrgenetify(model: nn.Module, *, ffn: bool = True, attn: Optional[str] = None,
                 block_size: Optional[int] = None, ffn_names: Iterable[str] = ("mlp",),
                 attn_names: Iterable[str] = ("attn",), **cffn_kwargs) -> nn.Module:
    """Swap CoFrGeNet blocks into a transformer, in place; returns ``model``.

    ``ffn=True``: every child module named in ``ffn_names`` (the FFN; its width is read from its first
    ``nn.Linear``) becomes a :class:`Cffn` (``cffn_kwargs`` go to Cffn).  ``attn="u"`` / ``"m"``: every child
    named in ``attn_names`` that is a batch-first ``nn.MultiheadAttention`` becomes :class:`CAttnU` /
    :class:`CAttnM` behind :class:`AsSelfAttention`; ``block_size`` defaults to ``model.block_size``.
    Raises ValueError when nothing matches, so a wrong name never passes silently.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cofrgenetify expects a torch.nn.Module, got {type(model).__name__}")
    if attn is not None and attn not in ATTENTIONS:
        raise ValueError(f"unknown attention replacement {attn!r}; expected None or one of {ATTENTIONS}")
    if not ffn and attn is None:
        raise ValueError("nothing to replace: pass ffn=True and/or attn='u'/'m'")
    if attn is not None:
        block_size = block_size if block_size is not None else getattr(model, "block_size", None)
        if block_size is None:
            raise ValueError("attention replacement needs block_size (the model has no .block_size)")
    ffn_names, attn_names = tuple(ffn_names), tuple(attn_names)
    n_ffn = n_attn = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if ffn and name in ffn_names and not isinstance(child, Cffn):
                p = _linear_in_features(child)
                if p is None:
                    raise ValueError(f"FFN {name!r} of {type(parent).__name__} has no nn.Linear to read its width")
                setattr(parent, name, Cffn(p, **cffn_kwargs))
                n_ffn += 1
            elif attn is not None and name in attn_names and isinstance(child, nn.MultiheadAttention):
                if not child.batch_first:
                    raise ValueError("only batch_first nn.MultiheadAttention can be replaced")
                mixer = CAttnU(child.embed_dim, block_size) if attn == "u" else CAttnM(child.embed_dim, block_size)
                setattr(parent, name, AsSelfAttention(mixer))
                n_attn += 1
    if ffn and n_ffn == 0:
        raise ValueError(f"found no FFN module named {ffn_names} to replace")
    if attn is not None and n_attn == 0:
        raise ValueError(f"found no batch-first nn.MultiheadAttention named {attn_names} to replace")
    return model


def cofrgenet_gpt(*, attn: Optional[str] = None, n_ladders: int = 2, depth: int = 5, gate: str = "input",
                  mode: str = "multivariate", eps: float = 1e-2, **gpt_kwargs) -> nn.Module:
    """The support package's TinyGPT with every FFN replaced by a Cffn (and attention by CAttnU/M if asked)."""
    from gradkit_support.models import TinyGPT

    return cofrgenetify(TinyGPT(**gpt_kwargs), attn=attn, n_ladders=n_ladders, depth=depth, gate=gate, mode=mode,
                        eps=eps)


def dyadic_depth(step: int, total_steps: int, depth: int) -> int:
    """Trainable ladder depth at ``step`` (0-based) of ``total_steps``: depth i is released at step
    (1 - 2^-i) total_steps, so the linear parts train alone for the first half, depth 1 from t/2, depth 2
    from 3t/4, ..."""
    _check_positive_int("total_steps", total_steps)
    _check_positive_int("depth", depth)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    i = 0
    while i < depth and step >= total_steps * (1.0 - 2.0 ** -(i + 1)):
        i += 1
    return i


class DyadicSchedule:
    """The paper's dyadic training schedule for every :class:`CoFrLadder` in ``model``.

    Call ``schedule(step)`` with the number of steps done (``train_lm``'s ``on_step``); the constructor sets
    step 0.  Frozen partial denominators get zero gradient; give ladder parameters no weight decay (see
    :func:`param_groups`), or a decoupled decay would still shrink the frozen ones.
    """

    def __init__(self, model: nn.Module, total_steps: int):
        self.ladders = [m for m in model.modules() if isinstance(m, CoFrLadder)]
        if not self.ladders:
            raise ValueError("DyadicSchedule: the model has no CoFrLadder")
        self.total_steps = _check_positive_int("total_steps", total_steps)
        self(0)

    def __call__(self, step: int) -> None:
        for lad in self.ladders:
            lad.set_trainable_depth(dyadic_depth(min(step, self.total_steps - 1), self.total_steps, lad.depth))


def param_groups(model: nn.Module, weight_decay: float):
    """AdamW groups: matrices of nn.Linear / nn.Embedding decay; ladder parameters, biases, norms do not."""
    ladder_ids = {id(p) for m in model.modules() if isinstance(m, (CoFrLadder, CAttnU)) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and id(p) not in ladder_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
