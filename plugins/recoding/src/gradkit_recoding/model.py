"""Recoding LSTM (Ulmer, 2021, arXiv 2101.00674): gradient-based modification of an LSTM LM's own states.

At every time step t, after the stacked LSTM has produced (h_t^l, c_t^l) for every layer l and the
output logits o_t = W h_t^L + b:

1. an error signal δ_t (one scalar per batch element) is computed from o_t (see the signals below);
2. its gradients g = ∂δ_t/∂h_t^l and ∂δ_t/∂c_t^l are taken for every layer (torch.autograd.grad; an
   element's δ depends only on its own row, so the gradient of Σ_b δ_b is the per-element gradient);
   non-finite entries of g are replaced by 0 (the code replaces NaN);
3. every selected state is recoded, s̃ = s − α_{l,s}·g, with one step-size predictor per (layer, state);
4. the output is re-decoded from the recoded top state, õ_t = W h̃_t^L + b, and the recurrence continues
   from the recoded states.

Gradient semantics (``detach``):

* ``"grad"`` (default): g is a constant for the LM loss (computed without ``create_graph``). The LM
  loss flows through s̃ = s − α·g into s exactly as through the baseline LSTM (full BPTT) and into a
  learned step size α.  With α = 0 the model is exactly the baseline LSTM, forward and backward.
* ``"state"`` (the official code: ``recode`` returns ``hidden.detach()``): the state carried to the
  next step is detached, so LM gradients do not cross time steps (BPTT of one step).  The re-decoded
  output at step t keeps its graph to s and α (in the code it does not; there the LSTM weights are
  instead trained by the δ-gradients that ``backward(δ)`` accumulates into the parameters, a side
  effect not reproduced here).
* ``"none"``: g is computed with ``create_graph=True``; the LM loss also flows through the recoding
  gradient (second order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["RecodingLSTM", "RecodingOutput", "SurprisalSignal", "MCDropoutVariance", "EnsembleVariance",
           "FixedStep", "LearnedStep", "MLPStep", "PerplexityStep", "make_signal", "make_step", "recode"]

DETACH_MODES = ("grad", "state", "none")


def _check_finite_float(name: str, value, low: float = -math.inf, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < low or (low_open and value == low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    return value


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


# ------------------------------------------------------------------------------------------ signals
class SurprisalSignal(nn.Module):
    """Gold-token surprisal of the current prediction (a training-time signal: it needs the target).

    * ``form="code"`` — the official code's form, δ = 2^{−log₂ σ(o_t[y])} = 1/σ(o_t[y]) with σ the
      logistic sigmoid of the target's logit (the code gathers the target entry of its output and
      applies ``torch.sigmoid``);
    * ``form="nll"`` — the plain surprisal δ = −log softmax(o_t)[y] (nats).

    Without targets (test time) the code falls back to the most likely token (``missing="argmax"``);
    ``missing="error"`` raises instead.
    """

    needs_hidden = False

    def __init__(self, form: str = "code", missing: str = "argmax"):
        super().__init__()
        if form not in ("code", "nll"):
            raise ValueError(f"unknown surprisal form {form!r}; expected 'code' or 'nll'")
        if missing not in ("argmax", "error"):
            raise ValueError(f"unknown missing-target rule {missing!r}; expected 'argmax' or 'error'")
        self.form, self.missing = form, missing

    def forward(self, logits: Tensor, targets: Optional[Tensor] = None, hidden_top: Optional[Tensor] = None,
                decoder: Optional[nn.Module] = None) -> Tensor:
        if targets is None:
            if self.missing == "error":
                raise ValueError("the surprisal signal needs the gold targets (it is a training-time signal); "
                                 "pass targets or use missing='argmax'")
            targets = logits.detach().argmax(dim=-1)
        idx = targets.long().unsqueeze(-1)
        if self.form == "code":
            p = torch.sigmoid(logits.gather(-1, idx).squeeze(-1))
            return torch.pow(2.0, -torch.log2(p))
        return -F.log_softmax(logits, dim=-1).gather(-1, idx).squeeze(-1)


class MCDropoutVariance(nn.Module):
    """MC-dropout predictive variance (Gal & Ghahramani, 2016), as in the official code.

    K dropout masks (rate ``p``) on the decoder's input (``on="hidden"``, Gal's estimator) or on the
    output logits (``on="logits"``, what the official code does), softmax, then
    δ = Σ_v Var_k p_k[v] + 2·p·ℓ²/(2Nλ) (unbiased variance over the K samples; the last term is the
    code's prior term with ℓ = ``prior_scale``, N = ``data_length``, λ = ``weight_decay``; a constant,
    it shifts δ but not its gradient).  Dropout masks are drawn even in eval mode (that is the point).
    """

    needs_hidden = True

    def __init__(self, num_samples: int = 10, p: float = 0.5, on: str = "hidden", prior_scale: float = 1.0,
                 weight_decay: float = 1e-5, data_length: int = 100_000):
        super().__init__()
        self.num_samples = _check_int("num_samples", num_samples, 2)
        self.p = _check_finite_float("p", p, 0.0, low_open=True)
        if self.p >= 1.0:
            raise ValueError(f"p must be in (0, 1), got {p}")
        if on not in ("hidden", "logits"):
            raise ValueError(f"unknown dropout site {on!r}; expected 'hidden' or 'logits'")
        self.on = on
        self.prior_scale = _check_finite_float("prior_scale", prior_scale, 0.0)
        self.weight_decay = _check_finite_float("weight_decay", weight_decay, 0.0, low_open=True)
        self.data_length = _check_int("data_length", data_length, 1)

    @property
    def prior_term(self) -> float:
        return 2 * self.p * self.prior_scale ** 2 / (2 * self.data_length * self.weight_decay)

    def forward(self, logits: Tensor, targets: Optional[Tensor] = None, hidden_top: Optional[Tensor] = None,
                decoder: Optional[nn.Module] = None) -> Tensor:
        k = self.num_samples
        if self.on == "hidden":
            if hidden_top is None or decoder is None:
                raise ValueError("MCDropoutVariance(on='hidden') needs the top hidden state and the decoder")
            x = hidden_top.unsqueeze(0).expand(k, *hidden_top.shape)
            samples = decoder(F.dropout(x, self.p, training=True))
        else:
            x = logits.unsqueeze(0).expand(k, *logits.shape)
            samples = F.dropout(x, self.p, training=True)
        probs = F.softmax(samples, dim=-1)
        return probs.var(dim=0).sum(dim=-1) + self.prior_term


class EnsembleVariance(nn.Module):
    """Variance of an ensemble of decoder heads: δ = Σ_v Var_k softmax(W_k h_t^L + b_k)[v].

    A reconstruction of the paper's anchored-ensemble signal at the decoder: ``num_members`` linear
    heads, each with its own random anchor θ_k⁰ (its initialisation).  Train them with
    :meth:`anchored_loss` (Pearce et al.'s anchored ensembling: each head's cross-entropy plus
    λ‖θ_k − θ_k⁰‖²/N); the LM loss alone does not reach them.
    """

    needs_hidden = True

    def __init__(self, hidden_size: int, vocab_size: int, num_members: int = 4, anchor_weight: float = 1e-3,
                 init_std: float = 0.1):
        super().__init__()
        _check_int("hidden_size", hidden_size, 1)
        _check_int("vocab_size", vocab_size, 1)
        self.num_members = _check_int("num_members", num_members, 2)
        self.anchor_weight = _check_finite_float("anchor_weight", anchor_weight, 0.0)
        init_std = _check_finite_float("init_std", init_std, 0.0, low_open=True)
        self.weight = nn.Parameter(torch.randn(num_members, vocab_size, hidden_size) * init_std)
        self.bias = nn.Parameter(torch.zeros(num_members, vocab_size))
        self.register_buffer("anchor_weight_", self.weight.detach().clone())
        self.register_buffer("anchor_bias_", self.bias.detach().clone())

    def member_logits(self, hidden_top: Tensor) -> Tensor:
        """``(K, *batch, V)`` logits of every member."""
        return torch.einsum("kvh,...h->k...v", self.weight, hidden_top) + self.bias.view(
            self.num_members, *([1] * (hidden_top.dim() - 1)), -1)

    def anchored_loss(self, hidden_top: Tensor, targets: Tensor, data_length: int = 1) -> Tensor:
        """Σ_k CE(member_k(h), y) + λ‖θ_k − θ_k⁰‖²/N, on detached hidden states (trains only the heads)."""
        logits = self.member_logits(hidden_top.detach())
        ce = sum(F.cross_entropy(logits[k].reshape(-1, logits.shape[-1]), targets.reshape(-1))
                 for k in range(self.num_members))
        reg = ((self.weight - self.anchor_weight_) ** 2).sum() + ((self.bias - self.anchor_bias_) ** 2).sum()
        return ce + self.anchor_weight * reg / data_length

    def forward(self, logits: Tensor, targets: Optional[Tensor] = None, hidden_top: Optional[Tensor] = None,
                decoder: Optional[nn.Module] = None) -> Tensor:
        if hidden_top is None:
            raise ValueError("EnsembleVariance needs the top hidden state")
        return F.softmax(self.member_logits(hidden_top), dim=-1).var(dim=0).sum(dim=-1)


# ------------------------------------------------------------------------------------------ step sizes
class FixedStep(nn.Module):
    """A constant step size α ≥ 0."""

    def __init__(self, alpha: float = 0.1):
        super().__init__()
        self.alpha = _check_finite_float("alpha", alpha, 0.0)

    def forward(self, state: Tensor, history: Sequence[Tensor], logits: Tensor, targets: Optional[Tensor]) -> Tensor:
        return state.new_tensor(self.alpha)


class LearnedStep(nn.Module):
    """A learned scalar α = ReLU(a) + ε (the code's ``LearnedFixedStepPredictor``; ``a`` starts at ``init``)."""

    def __init__(self, init: float = 0.1, eps: float = 1e-5):
        super().__init__()
        init = _check_finite_float("init", init, 0.0)
        self.eps = _check_finite_float("eps", eps, 0.0)
        self.a = nn.Parameter(torch.tensor(float(init)))

    def forward(self, state: Tensor, history: Sequence[Tensor], logits: Tensor, targets: Optional[Tensor]) -> Tensor:
        return torch.relu(self.a) + self.eps


class MLPStep(nn.Module):
    """α_t = ReLU(MLP([s_{t−w+1}, …, s_t])) per batch element: an MLP over a window of the (detached) states
    of this (layer, state), zero-padded at the start of a sequence (the code's ``AdaptiveStepPredictor``)."""

    def __init__(self, hidden_size: int, window: int = 5, layers: Sequence[int] = (32,)):
        super().__init__()
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.window = _check_int("window", window, 1)
        if len(layers) == 0:
            raise ValueError("layers must name at least one hidden width of the step MLP")
        mods: List[nn.Module] = []
        width = hidden_size * window
        for w in layers:
            mods += [nn.Linear(width, _check_int("layer width", w, 1)), nn.ReLU()]
            width = w
        mods += [nn.Linear(width, 1), nn.ReLU()]
        self.net = nn.Sequential(*mods)

    def forward(self, state: Tensor, history: Sequence[Tensor], logits: Tensor, targets: Optional[Tensor]) -> Tensor:
        past = [h.detach() for h in history][-(self.window - 1):] if self.window > 1 else []
        pad = [state.new_zeros(state.shape)] * (self.window - 1 - len(past))
        x = torch.cat(pad + past + [state.detach()], dim=-1)
        return self.net(x)  # (B, 1)


class PerplexityStep(nn.Module):
    """The code's perplexity-based step (no parameters): α = 2^{−p·log₂ p} − 1 with p = σ(o_t[y]) (target
    or, without targets, the most likely token), detached."""

    def forward(self, state: Tensor, history: Sequence[Tensor], logits: Tensor, targets: Optional[Tensor]) -> Tensor:
        idx = (logits.argmax(-1) if targets is None else targets.long()).unsqueeze(-1)
        p = torch.sigmoid(logits.detach().gather(-1, idx))
        return torch.pow(2.0, -p * torch.log2(p)) - 1.0


SIGNALS = ("surprisal-code", "surprisal-nll", "mc-dropout", "mc-dropout-logits", "ensemble")
STEPS = ("fixed", "learned", "mlp", "perplexity")


def make_signal(name: Union[str, nn.Module], hidden_size: int, vocab_size: int, **kw) -> nn.Module:
    if isinstance(name, nn.Module):
        if kw:
            raise ValueError("signal_kwargs are only used with a signal given by name")
        return name
    if name == "surprisal-code":
        return SurprisalSignal("code", **kw)
    if name == "surprisal-nll":
        return SurprisalSignal("nll", **kw)
    if name == "mc-dropout":
        return MCDropoutVariance(on="hidden", **kw)
    if name == "mc-dropout-logits":
        return MCDropoutVariance(on="logits", **kw)
    if name == "ensemble":
        return EnsembleVariance(hidden_size, vocab_size, **kw)
    raise ValueError(f"unknown error signal {name!r}; expected an nn.Module or one of {', '.join(SIGNALS)}")


def make_step(name: str, alpha: float, hidden_size: int, **kw) -> nn.Module:
    if name == "fixed":
        return FixedStep(alpha)
    if name == "learned":
        return LearnedStep(init=alpha, **kw)
    if name == "mlp":
        return MLPStep(hidden_size, **kw)
    if name == "perplexity":
        return PerplexityStep()
    raise ValueError(f"unknown step size {name!r}; expected one of {', '.join(STEPS)}")


def recode(states: Sequence[Tensor], delta: Tensor, steps: Sequence[Union[Tensor, float]], *,
           create_graph: bool = False) -> Tuple[List[Tensor], List[Tensor]]:
    """One recoding step: ``(s − α·∂(Σδ)/∂s for s in states, gradients)``; non-finite gradients → 0.

    ``steps`` holds one α per state (a scalar or a ``(B, 1)`` tensor).  The gradients are taken with
    ``retain_graph=True`` so the caller can still backpropagate the LM loss.
    """
    if len(steps) != len(states):
        raise ValueError(f"need one step size per state: got {len(steps)} for {len(states)} states")
    grads = torch.autograd.grad(delta.sum(), list(states), create_graph=create_graph, retain_graph=True,
                                allow_unused=True)
    out, gs = [], []
    for s, g, a in zip(states, grads, steps):
        g = torch.zeros_like(s) if g is None else torch.where(torch.isfinite(g), g, torch.zeros_like(g))
        gs.append(g)
        out.append(s - a * g)
    return out, gs


@dataclass
class RecodingOutput:
    logits: Tensor                      # (B, T, V) re-decoded logits (the model's prediction)
    hidden: List[Tuple[Tensor, Tensor]]  # final (h, c) per layer, recoded
    deltas: Tensor                      # (B, T) error signal before recoding
    steps: Tensor                       # (B, T, L, S) step sizes used, S = number of recoded states
    logits_before: Tensor               # (B, T, V) logits before recoding
    hidden_top: Tensor                  # (B, T, H) top-layer hidden state before recoding (for ensemble heads)
    grad_norms: Tensor                  # (B, T, L, S) ‖∂δ/∂s‖ per recoded state


class RecodingLSTM(nn.Module):
    """A stacked-LSTM language model that recodes its own states at every step (see the module docstring).

    ``signal``: an error-signal module or one of ``surprisal-code`` (official code's form),
    ``surprisal-nll``, ``mc-dropout`` (dropout on the decoder input), ``mc-dropout-logits`` (code),
    ``ensemble``.  ``step``: ``fixed`` (α = ``alpha``), ``learned`` (ReLU(a)+ε, a starts at ``alpha``),
    ``mlp`` (MLP over a window of past states), ``perplexity`` (the code's perplexity-based rule).
    ``states``: which of ``h``/``c`` are recoded.  ``recoding=False`` gives the plain LSTM LM of the
    same size (no signal, no gradient step, no re-decoding).
    """

    def __init__(self, vocab_size: int, emb_size: int = 128, hidden_size: int = 256, num_layers: int = 2,
                 dropout: float = 0.0, *, signal: Union[str, nn.Module] = "surprisal-code", step: str = "fixed",
                 alpha: float = 0.1, states: Sequence[str] = ("h", "c"), detach: str = "grad",
                 recoding: bool = True, signal_kwargs: Optional[Dict] = None, step_kwargs: Optional[Dict] = None):
        super().__init__()
        self.vocab_size = _check_int("vocab_size", vocab_size, 2)
        self.emb_size = _check_int("emb_size", emb_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.dropout_p = _check_finite_float("dropout", dropout, 0.0)
        if self.dropout_p >= 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if detach not in DETACH_MODES:
            raise ValueError(f"unknown detach mode {detach!r}; expected one of {', '.join(DETACH_MODES)}")
        states = tuple(states)
        if not states or any(s not in ("h", "c") for s in states) or len(set(states)) != len(states):
            raise ValueError(f"states must be a non-empty subset of ('h', 'c') without repeats, got {states!r}")
        _check_finite_float("alpha", alpha, 0.0)
        self.detach, self.states, self.recoding = detach, states, bool(recoding)
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.cells = nn.ModuleList(nn.LSTMCell(emb_size if l == 0 else hidden_size, hidden_size)
                                   for l in range(num_layers))
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.drop = nn.Dropout(self.dropout_p)
        if self.recoding:
            self.signal = make_signal(signal, hidden_size, vocab_size, **(signal_kwargs or {}))
            self.steps = nn.ModuleList(
                nn.ModuleList(make_step(step, alpha, hidden_size, **(step_kwargs or {})) for _ in states)
                for _ in range(num_layers))

    # ---------------------------------------------------------------------------------------------
    def init_hidden(self, batch_size: int) -> List[Tuple[Tensor, Tensor]]:
        w = self.decoder.weight
        z = w.new_zeros(batch_size, self.hidden_size)
        return [(z, z) for _ in range(self.num_layers)]

    def _check_inputs(self, input_ids: Tensor, hidden, targets: Optional[Tensor]):
        if not isinstance(input_ids, Tensor):
            raise TypeError(f"input_ids must be a tensor, got {type(input_ids).__name__}")
        if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape (batch, time) with both > 0, got {tuple(input_ids.shape)}")
        if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        if input_ids.min() < 0 or input_ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got range "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if targets is not None:
            if not isinstance(targets, Tensor) or targets.shape != input_ids.shape:
                raise ValueError(f"targets must be a tensor of shape {tuple(input_ids.shape)}, got "
                                 f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__}")
            if targets.dtype.is_floating_point or targets.min() < 0 or targets.max() >= self.vocab_size:
                raise ValueError(f"targets must be integer token ids in [0, {self.vocab_size})")
        if hidden is not None:
            if len(hidden) != self.num_layers:
                raise ValueError(f"hidden must hold one (h, c) pair per layer ({self.num_layers}), got {len(hidden)}")
            for l, (h, c) in enumerate(hidden):
                for name, s in (("h", h), ("c", c)):
                    if s.shape != (input_ids.shape[0], self.hidden_size):
                        raise ValueError(f"hidden[{l}].{name} must have shape ({input_ids.shape[0]}, "
                                         f"{self.hidden_size}), got {tuple(s.shape)}")
                    if not torch.isfinite(s).all():
                        raise ValueError(f"hidden[{l}].{name} contains NaN or inf")

    def forward(self, input_ids: Tensor, hidden: Optional[List[Tuple[Tensor, Tensor]]] = None,
                targets: Optional[Tensor] = None) -> RecodingOutput:
        self._check_inputs(input_ids, hidden, targets)
        grad_enabled = torch.is_grad_enabled()
        with torch.enable_grad():  # the recoding gradient is needed at test time too
            out = self._forward(input_ids, hidden, targets, grad_enabled)
        if not grad_enabled:
            out = RecodingOutput(*(_detach_all(getattr(out, f)) for f in out.__dataclass_fields__))
        return out

    def _forward(self, input_ids, hidden, targets, grad_enabled) -> RecodingOutput:
        B, T = input_ids.shape
        hid = list(hidden) if hidden is not None else self.init_hidden(B)
        emb = self.drop(self.embedding(input_ids))
        logits_all, before_all, deltas, step_all, gnorm_all, top_all = [], [], [], [], [], []
        history: List[List[List[Tensor]]] = [[[] for _ in self.states] for _ in range(self.num_layers)]
        rec = self.recoding
        for t in range(T):
            if rec and (self.detach == "state" or not grad_enabled):
                # leaves so that ∂δ/∂s exists even when nothing upstream requires grad
                hid = [(h.detach().requires_grad_(), c.detach().requires_grad_()) for h, c in hid]
            elif rec and not any(s.requires_grad for hc in hid for s in hc) and not any(
                    p.requires_grad for p in self.cells.parameters()):
                hid = [(h.detach().requires_grad_(), c.detach().requires_grad_()) for h, c in hid]
            x = emb[:, t]
            new = []
            for l, cell in enumerate(self.cells):
                h, c = lstm_cell(cell, x, *hid[l])
                new.append((h, c))
                x = self.drop(h)
            logits = self.decoder(x)
            top_all.append(new[-1][0])
            if not rec:
                logits_all.append(logits)
                hid = new
                continue
            tgt = None if targets is None else targets[:, t]
            delta = self.signal(logits, tgt, hidden_top=new[-1][0], decoder=self.decoder)
            if delta.shape != (B,):
                raise RuntimeError(f"error signal returned shape {tuple(delta.shape)}, expected ({B},)")
            flat = [hc[0 if s == "h" else 1] for hc in new for s in self.states]
            alphas = []
            for l in range(self.num_layers):
                for j, s in enumerate(self.states):
                    st = new[l][0 if s == "h" else 1]
                    alphas.append(self.steps[l][j](st, history[l][j], logits, tgt))
                    history[l][j].append(st.detach())
                    if len(history[l][j]) > 64:
                        history[l][j].pop(0)
            recoded, grads = recode(flat, delta, alphas, create_graph=self.detach == "none")
            k = 0
            rec_hid = []
            for l in range(self.num_layers):
                h, c = new[l]
                for s in self.states:
                    if s == "h":
                        h = recoded[k]
                    else:
                        c = recoded[k]
                    k += 1
                rec_hid.append((h, c))
            re_logits = self.decoder(self.drop(rec_hid[-1][0]))
            logits_all.append(re_logits)
            before_all.append(logits.detach())
            deltas.append(delta.detach())
            step_all.append(torch.stack([a.detach().reshape(-1).expand(B) if a.numel() == 1 else
                                         a.detach().reshape(B) for a in alphas], -1).view(B, self.num_layers, -1))
            gnorm_all.append(torch.stack([g.norm(dim=-1) for g in grads], -1).detach().view(B, self.num_layers, -1))
            hid = [(h.detach(), c.detach()) for h, c in rec_hid] if self.detach == "state" else rec_hid
        logits_t = torch.stack(logits_all, 1)
        if rec:
            return RecodingOutput(logits_t, hid, torch.stack(deltas, 1), torch.stack(step_all, 1),
                                  torch.stack(before_all, 1), torch.stack(top_all, 1), torch.stack(gnorm_all, 1))
        S = len(self.states)
        empty = logits_t.new_zeros(B, T, self.num_layers, S)
        return RecodingOutput(logits_t, hid, logits_t.new_zeros(B, T), empty, logits_t.detach(),
                              torch.stack(top_all, 1), empty)


def lstm_cell(cell: nn.LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """One LSTM step with ``cell``'s weights, written out so that h' = o ⊙ tanh(c') is computed from c'
    on every device (fused kernels make ∂δ/∂c' vanish otherwise): gates i, f, g, o as in ``nn.LSTMCell``."""
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def _detach_all(x):
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach_all(v) for v in x)
    return x
