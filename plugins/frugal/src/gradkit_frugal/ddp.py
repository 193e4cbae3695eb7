"""Data-parallel training with FRUGAL under ``torch.distributed`` (DDP, gloo backend on CPU).

FRUGAL needs nothing special under DDP: gradients are all-reduced before ``step``, and every replica draws
the same subspaces because the optimizer's own generator is seeded identically (``seed=``) on every rank.
:func:`check_ddp_matches_single` trains the same small model with a global batch split over ``world_size``
processes and in one process, and returns both final parameter sets; the plugin's tests assert they agree.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from .optim import FRUGAL, frugal_param_groups


class _TinyNet(nn.Module):
    """Embedding → Linear → LayerNorm → GELU → Linear → head: projectable Linears plus AdamW-only params."""

    def __init__(self, vocab: int = 16, d: int = 12):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.norm = nn.LayerNorm(2 * d)
        self.fc2 = nn.Linear(2 * d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx).mean(1)
        return self.head(self.fc2(torch.nn.functional.gelu(self.norm(self.fc1(h)))))


def _make(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _TinyNet().double()


def _batches(steps: int, global_batch: int, seed: int):
    g = torch.Generator().manual_seed(seed + 17)
    for _ in range(steps):
        x = torch.randint(0, 16, (global_batch, 5), generator=g)
        y = (x.sum(1) % 16)
        yield x, y


def _train(model: nn.Module, steps: int, global_batch: int, seed: int, opt_kwargs: Dict, rank: int = 0,
           world: int = 1) -> None:
    inner = model.module if hasattr(model, "module") else model
    opt = FRUGAL(frugal_param_groups(inner), seed=seed, **opt_kwargs)
    per = global_batch // world
    for x, y in _batches(steps, global_batch, seed):
        xs, ys = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()


def _worker(rank: int, world: int, init_file: str, out_file: str, steps: int, global_batch: int, seed: int,
            opt_kwargs: Dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_make(seed))
        _train(model, steps, global_batch, seed, opt_kwargs, rank=rank, world=world)
        if rank == 0:
            torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()}, out_file)
    finally:
        dist.destroy_process_group()


def train_single(steps: int = 12, global_batch: int = 8, seed: int = 0, **opt_kwargs) -> Dict[str, torch.Tensor]:
    """Train the small model in this process on the full global batch; return its final state dict."""
    model = _make(seed)
    _train(model, steps, global_batch, seed, opt_kwargs)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_ddp(world_size: int = 2, steps: int = 12, global_batch: int = 8, seed: int = 0,
              **opt_kwargs) -> Dict[str, torch.Tensor]:
    """Train the same model with DDP over ``world_size`` spawned CPU processes (gloo); return rank 0's state."""
    if global_batch % world_size:
        raise ValueError(f"global_batch={global_batch} must be divisible by world_size={world_size}")
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        out_file = os.path.join(tmp, "out.pt")
        mp.spawn(_worker, args=(world_size, init_file, out_file, steps, global_batch, seed, opt_kwargs),
                 nprocs=world_size, join=True)
        return torch.load(out_file, weights_only=True)


def check_ddp_matches_single(world_size: int = 2, **kw) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(ddp_state, single_state)`` after identical training on the same global batches."""
    return train_ddp(world_size, **kw), train_single(**kw)
