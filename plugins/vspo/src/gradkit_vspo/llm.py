"""A Hugging Face causal LM as the policy of the tool-calling environment (the trainer's real-LM code path).

The environment speaks in words of its own vocabulary (``ToolKB.vocab``); :class:`CausalLMPolicy` maps word ``i``
to one token id ``token_ids[i]`` of the language model, runs the LM on the mapped ids and returns the LM's logits
at the mapped ids, shape ``(N, L, V_env)``: the policy's distribution is the LM's next-token distribution
restricted (renormalised by the softmax) to the environment's words.  Everything else — rollouts, PRS,
GRPO/DAPO/VSPO — is the same code path as for the tiny GPT.

* :func:`word_token_ids` picks the ids from a tokenizer: each word's surface form (default ``" " + word``; digits
  without the space; format tags get short English surfaces, ``<call>`` -> ``" call"``, ``<answer>`` ->
  ``" Answer"``...) when it is one token, else the next unused single-token English word of the vocabulary
  (in id order) — entity and value names such as ``e17`` have no single token, so they are arbitrary words.
* :meth:`CausalLMPolicy.next_logits` keeps the LM's key/value cache between rollout steps (the environment
  appends one token per step), so a rollout costs about one forward pass over its tokens.
* :func:`train_last_layers` freezes everything but the last ``n`` decoder layers and the final norm, to keep the
  backward pass cheap on CPU; the trainer optimises only parameters with ``requires_grad``.
"""

from __future__ import annotations

import inspect
import re
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

DEFAULT_SURFACES = {"<pad>": "\n", "<bos>": "\n", "Q": " Question", "<call>": " call", "</call>": " )",
                    "<result>": " =", "</result>": " ;", "<answer>": " Answer", "</answer>": " .", "<eos>": " END"}
_WORD = re.compile(r"^ [A-Za-z]{4,}$")


def word_token_ids(tokenizer, words: Sequence[str], surfaces: Optional[Dict[str, str]] = None) -> List[int]:
    """One distinct LM token id per environment word (see the module docstring for the rule)."""
    words = list(words)
    if not words:
        raise ValueError("word_token_ids needs at least one word")
    if len(set(words)) != len(words):
        raise ValueError("words must be distinct")
    table = dict(DEFAULT_SURFACES)
    table.update(surfaces or {})
    ids: List[Optional[int]] = []
    used = set()
    for w in words:
        s = table.get(w, w if w.isdigit() else " " + w)
        enc = tokenizer.encode(s, add_special_tokens=False)
        if len(enc) == 1 and enc[0] not in used:
            ids.append(int(enc[0]))
            used.add(int(enc[0]))
        else:
            ids.append(None)
    if None in ids:
        pool = (i for i in range(len(tokenizer)) if i not in used and _WORD.match(tokenizer.decode([i])))
        for k, v in enumerate(ids):
            if v is None:
                try:
                    ids[k] = next(pool)
                except StopIteration:
                    raise ValueError(f"the tokenizer has too few single-token words for {len(words)} "
                                     "environment words") from None
    return [int(i) for i in ids]


class CausalLMPolicy(nn.Module):
    """``policy(seq) -> logits (N, L, V_env)`` for environment word ids ``seq`` of shape ``(N, L)``."""

    def __init__(self, lm: nn.Module, token_ids: Sequence[int]):
        super().__init__()
        ids = torch.as_tensor(list(token_ids), dtype=torch.long)
        if ids.dim() != 1 or ids.numel() < 2:
            raise ValueError(f"token_ids must be a list of at least 2 token ids, got shape {tuple(ids.shape)}")
        n_vocab = lm.get_input_embeddings().num_embeddings
        if int(ids.min()) < 0 or int(ids.max()) >= n_vocab:
            raise ValueError(f"token_ids must lie in [0, {n_vocab}) (the LM's vocabulary), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        if len(set(ids.tolist())) != ids.numel():
            raise ValueError("token_ids must be distinct: two environment words map to the same LM token")
        self.lm = lm
        params = inspect.signature(lm.forward).parameters  # transformers 5.x renamed past_key_values -> cache
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.register_buffer("token_ids", ids, persistent=False)
        self.reset_cache()

    @property
    def vocab_size(self) -> int:
        return self.token_ids.numel()

    def _map(self, seq: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(seq) or seq.dim() != 2 or seq.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"expected environment word ids of shape (N, L), got {getattr(seq, 'shape', seq)!r}")
        if seq.numel() and (int(seq.min()) < 0 or int(seq.max()) >= self.vocab_size):
            raise IndexError(f"word ids must lie in [0, {self.vocab_size})")
        return self.token_ids[seq]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out = self.lm(input_ids=self._map(seq), use_cache=False)
        return out.logits[..., self.token_ids]

    def reset_cache(self) -> None:
        self._past, self._seq = None, None

    @torch.no_grad()
    def next_logits(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits of the next word ``(N, V_env)``; reuses the key/value cache when ``seq`` extends the last call's
        input by one token (the environment's rollout loop), else runs the whole sequence."""
        ids = self._map(seq)
        prev = self._seq
        if (prev is not None and prev.shape[0] == seq.shape[0] and prev.shape[1] + 1 == seq.shape[1]
                and torch.equal(prev, seq[:, :-1])):
            out = self.lm(input_ids=ids[:, -1:], use_cache=True, **{self._cache_kw: self._past})
        else:
            out = self.lm(input_ids=ids, use_cache=True)
        self._past, self._seq = getattr(out, self._cache_kw), seq.clone()
        return out.logits[:, -1][:, self.token_ids]

    def train(self, mode: bool = True):
        self.reset_cache()
        return super().train(mode)


def train_last_layers(lm: nn.Module, n: int) -> List[nn.Parameter]:
    """Freeze ``lm`` except its last ``n`` decoder layers and final norm; returns the trainable parameters."""
    layers = getattr(getattr(lm, "model", None), "layers", None)
    if layers is None:
        raise TypeError(f"train_last_layers needs a decoder LM with .model.layers (Llama-style), got {type(lm).__name__}")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(layers):
        raise ValueError(f"n must be an int in [1, {len(layers)}], got {n!r}")
    for p in lm.parameters():
        p.requires_grad_(False)
    train = list(layers[-n:])
    norm = getattr(lm.model, "norm", None)
    if norm is not None:
        train.append(norm)
    params = [p for m in train for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params
