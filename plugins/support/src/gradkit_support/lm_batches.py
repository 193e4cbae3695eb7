"""Batches of the LM unlearners (CodeEraser, Downgrade-to-Upgrade): one parser, one vocabulary probe.

A batch is an ``input_ids`` LongTensor ``(B, T)`` or a dict with ``input_ids`` and optional
``attention_mask`` and one token mask (``forget_mask`` for the tokens to forget; zounlearn's retain
batches call theirs ``loss_mask``). Everything is validated with errors that name the batch.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .train import logits_of


def vocab_size(model: nn.Module) -> Optional[int]:
    """The input vocabulary of a causal LM: HF ``get_input_embeddings``, its first ``nn.Embedding``, else the
    logits' width on a harmless input (None when even that fails: the first real batch then gives the error)."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is None:
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if isinstance(emb, nn.Embedding):
        return int(emb.num_embeddings)
    p = next(model.parameters(), None)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = logits_of(model(torch.zeros(1, 2, dtype=torch.long, device=p.device if p is not None else "cpu")))
        return int(out.shape[-1]) if out.dim() == 3 else None
    except Exception:  # noqa: BLE001 - checked again, with a clear error, on the first batch
        return None
    finally:
        model.train(was)


def as_mask(m: Any, ids: torch.Tensor, name: str, where: str) -> Optional[torch.Tensor]:
    """A bool mask of ``ids``' shape (a 0/1 integer tensor is accepted), or None."""
    if m is None:
        return None
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a tensor of shape {tuple(ids.shape)}, got {type(m).__name__}")
    if m.shape != ids.shape:
        raise ValueError(f"{where}: {name} has shape {tuple(m.shape)}; expected the input_ids shape {tuple(ids.shape)}")
    if m.dtype != torch.bool:
        if m.is_floating_point() or not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"{where}: {name} must be a bool (or 0/1 integer) tensor")
        m = m.bool()
    return m


def parse_lm_batch(batch: Any, where: str, mask_key: str, vocab: Optional[int],
                   renamed: Sequence[str] = ()) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(input_ids, mask, attention_mask)`` of one batch: integer ids ``(B, T)`` with ``B >= 1``, ``T >= 2``,
    inside the vocabulary, masks of the same shape. ``renamed``: keys that are old names of ``mask_key``."""
    if isinstance(batch, torch.Tensor):
        batch = {"input_ids": batch}
    if not isinstance(batch, dict):
        raise TypeError(f"{where}: a batch must be a dict {{'input_ids', 'attention_mask'?, '{mask_key}'?}} or an "
                        f"input_ids LongTensor (B, T); got {type(batch).__name__}")
    if any(k in batch for k in renamed):
        raise ValueError(f"{where}: the mask of tokens to forget is called '{mask_key}' in every gradkit LM "
                         f"unlearner; got keys {sorted(batch)}")
    unknown = set(batch) - {"input_ids", "attention_mask", mask_key}
    if unknown:
        raise ValueError(f"{where}: unknown batch keys {sorted(unknown)}; expected 'input_ids', 'attention_mask', "
                         f"'{mask_key}'")
    if "input_ids" not in batch:
        raise ValueError(f"{where}: a batch dict needs 'input_ids'; got keys {sorted(batch)}")
    ids = batch["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype not in (torch.long, torch.int32):
        raise ValueError(f"{where}: input_ids must be an integer (long) tensor of shape (B, T); got "
                         f"{type(ids).__name__} {getattr(ids, 'dtype', '')} {tuple(getattr(ids, 'shape', ()))}")
    if ids.shape[0] == 0:
        raise ValueError(f"{where} is empty (B = 0)")
    if ids.shape[1] < 2:
        raise ValueError(f"{where}: sequences need at least 2 tokens for next-token losses, got T={ids.shape[1]}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        raise ValueError(f"{where}: token ids range over [{lo}, {hi}], out of range for the vocabulary "
                         f"[0, {vocab if vocab is not None else 'V'})")
    attn = as_mask(batch.get("attention_mask"), ids, "attention_mask", where)
    m = as_mask(batch.get(mask_key), ids, mask_key, where)
    return ids.long(), m, attn
