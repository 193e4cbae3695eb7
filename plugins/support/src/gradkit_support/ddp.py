"""Scale-out check for optimizers: DDP (gloo, CPU processes) vs one process on the same global batch.

    ddp_state, single_state = compare_ddp_single("lion", lr=1e-3)

trains the same small model with ``torch.distributed`` DistributedDataParallel
over ``world_size`` spawned processes (each on its slice of every global batch)
and in one process on the whole global batch, and returns both final state dicts.
With a mean loss, DDP's gradient all-reduce makes them equal up to float
reduction order (the model runs in float64 so the comparison can be tight).

``optimizer`` is a registered gradkit optimizer name (a string, so it pickles
into the workers); ``param_groups`` optionally names a ``"module:function"``
that maps the model to param groups (e.g. FRUGAL's projectable / AdamW split).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


class DDPNet(nn.Module):
    """Embedding → Linear → LayerNorm → GELU → Linear → head (matrices plus embedding/norm params)."""

    def __init__(self, vocab: int = 16, d: int = 12):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.norm = nn.LayerNorm(2 * d)
        self.fc2 = nn.Linear(2 * d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx).mean(1)
        return self.head(self.fc2(nn.functional.gelu(self.norm(self.fc1(h)))))


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return DDPNet().double()


def initial_state(seed: int = 0) -> Dict[str, torch.Tensor]:
    """The state dict both runs start from (to check that training moved the weights)."""
    return {k: v.detach().clone() for k, v in _model(seed).state_dict().items()}


def _batches(steps: int, global_batch: int, seed: int):
    g = torch.Generator().manual_seed(seed + 17)
    for _ in range(steps):
        x = torch.randint(0, 16, (global_batch, 5), generator=g)
        yield x, x.sum(1) % 16


def _load(path: str):
    import importlib

    mod, _, attr = path.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _train(model: nn.Module, optimizer: str, param_groups: Optional[str], steps: int, global_batch: int,
           seed: int, opt_kwargs: Dict[str, Any], rank: int = 0, world: int = 1) -> None:
    import gradkit_core as gk

    inner = model.module if hasattr(model, "module") else model
    params = _load(param_groups)(inner) if param_groups else inner.parameters()
    opt = gk.create(optimizer, params, kind="optimizers", **opt_kwargs)
    per = global_batch // world
    for x, y in _batches(steps, global_batch, seed):
        xs, ys = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()


def _worker(rank: int, world: int, init_file: str, out_file: str, optimizer: str, param_groups: Optional[str],
            steps: int, global_batch: int, seed: int, opt_kwargs: Dict[str, Any]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_model(seed))
        _train(model, optimizer, param_groups, steps, global_batch, seed, opt_kwargs, rank, world)
        if rank == 0:
            torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()}, out_file)
    finally:
        dist.destroy_process_group()


def train_single(optimizer: str, steps: int = 12, global_batch: int = 8, seed: int = 0,
                 param_groups: Optional[str] = None, **opt_kwargs: Any) -> Dict[str, torch.Tensor]:
    """Train :class:`DDPNet` in this process on the whole global batch; return its final state dict."""
    model = _model(seed)
    _train(model, optimizer, param_groups, steps, global_batch, seed, opt_kwargs)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_ddp(optimizer: str, world_size: int = 2, steps: int = 12, global_batch: int = 8, seed: int = 0,
              param_groups: Optional[str] = None, **opt_kwargs: Any) -> Dict[str, torch.Tensor]:
    """Train the same model under DDP over ``world_size`` spawned CPU processes (gloo); rank 0's final state."""
    if world_size < 1 or global_batch % world_size:
        raise ValueError(f"global_batch={global_batch} must be a positive multiple of world_size={world_size}")
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        mp.spawn(_worker, nprocs=world_size, join=True,
                 args=(world_size, init_file, out_file, optimizer, param_groups, steps, global_batch, seed,
                       opt_kwargs))
        return torch.load(out_file, weights_only=True)


def compare_ddp_single(optimizer: str, world_size: int = 2, **kw: Any
                       ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(ddp_state, single_state)`` after identical training on the same global batches."""
    return train_ddp(optimizer, world_size, **kw), train_single(optimizer, **kw)
