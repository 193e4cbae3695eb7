"""Small models for CPU-scale experiments (written directly in torch; no torchvision)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    """conv-ReLU-conv-ReLU-maxpool-conv-ReLU (``self.features``) → global average pool → linear.

    ``self.last_conv`` is the last convolution, the usual CAM target layer; ``features[0]``
    is the first layer.  Inputs in ``[0, 1]`` are standardised inside the model with
    ``(x - input_mean) / input_std``.  On digits (8x8), width 16 reaches about 92 % test
    accuracy after 8 epochs of AdamW (lr 3e-3, batch 64).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, image_size: int = 8,
                 input_mean: float = 0.3, input_std: float = 0.4):
        super().__init__()
        if in_channels < 1 or num_classes < 2 or width < 1:
            raise ValueError(f"bad SmallCNN sizes: in_channels={in_channels}, num_classes={num_classes}, width={width}")
        if input_std <= 0:
            raise ValueError(f"input_std must be positive, got {input_std}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.last_conv = self.features[5]
        self.head = nn.Linear(2 * width, num_classes)
        self.image_size = image_size
        self.input_mean, self.input_std = float(input_mean), float(input_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"SmallCNN expects (B, C, H, W) input, got shape {tuple(x.shape)}")
        h = self.features((x - self.input_mean) / self.input_std)
        return self.head(h.mean(dim=(2, 3)))


class MLP(nn.Module):
    """Plain MLP: Linear-act-…-Linear."""

    def __init__(self, sizes, activation: type = nn.ReLU):
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least input and output sizes, got {sizes}")
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class Bigram(nn.Module):
    """``logits[b, t] = W[ids[b, t]]``: a causal LM whose log-probabilities are easy to compute by hand
    (tests of LM losses, unlearning objectives and training loops). ``W`` is ``N(0, 1)`` under ``seed``."""

    def __init__(self, vocab: int = 7, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.W[ids]


class _Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, block_size: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model),
                                 nn.Dropout(dropout))
        mask = torch.triu(torch.ones(block_size, block_size, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=self.causal_mask[:t, :t], need_weights=False)
        x = x + a
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Byte-level (vocab 256 by default) pre-LN decoder-only transformer.

    ``forward(idx)`` returns logits ``(B, T, vocab_size)``.  With ``targets`` it
    returns ``(logits, loss)``.  Weight-tied embedding / output head.
    """

    def __init__(self, vocab_size: int = 256, block_size: int = 128, d_model: int = 128, n_layer: int = 4,
                 n_head: int = 4, dropout: float = 0.0):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList([_Block(d_model, n_head, block_size, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None):
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"TinyGPT expects token ids (B, T), got shape {shape}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"TinyGPT expects integer token ids (torch.long), got {idx.dtype}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.tok.num_embeddings):
            raise IndexError(f"token ids must lie in [0, {self.tok.num_embeddings}), got "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        b, t = idx.shape
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, greedy: bool = True,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.block_size:])[:, -1]
            if greedy:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def logits_of(output) -> torch.Tensor:
    """Logits from a model output: a tensor, a ``(logits, loss)`` tuple or an HF-style object with ``.logits``."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in model output of type {type(output).__name__}; expected a tensor, "
                    "a tuple starting with logits, or an object with .logits")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in an optimizer's per-parameter state tensors."""
    total = 0
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total

