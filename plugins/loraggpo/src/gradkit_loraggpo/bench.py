"""Benchmark: LoRA-GGPO training-step time vs plain LoRA, Flat-LoRA, LoRA-SAM, full fine-tuning and peft LoRA.

One process, interleaved, one thread, CPU process times reported as ratios to plain LoRA
(gradkit's own layer with ``mode="none"``).  Model: the TinyGPT of gradkit-support (its
MLP Linear layers get LoRA; attention projections are inside ``nn.MultiheadAttention``) and a
3-layer 512-wide MLP.  A step is forward + backward + (GGPO/Flat: norm refresh) + AdamW.
GGPO's extra work per wrapped layer and forward is one ``out x in`` Gaussian draw and one
extra ``x eps^T`` matmul, about a full fine-tune's forward cost for that layer; SAM doubles
the forward/backward.  ``peft`` (needs ``transformers``) is timed when it is installed.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar
from gradkit_support.models import MLP, TinyGPT

from .trainer import LoRAFineTuner


def _peft():
    try:
        import peft  # type: ignore

        return peft
    except Exception:  # noqa: BLE001 - optional peer
        return None


def _cpu(fn: Callable[[], None]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _peft_step(model: nn.Module, x, y, loss_fn, targets: List[str]):
    peft = _peft()
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0)
    pm = peft.get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(pm(x), y).backward()
        opt.step()

    return step


def _case(res: Result, label: str, make_model: Callable[[], nn.Module], x, y, loss_fn, include, reps: int,
          progress: bool, peft_targets: Optional[List[str]]) -> None:
    torch.manual_seed(0)
    base = make_model()
    steps: Dict[str, Callable[[], None]] = {}
    for method in ["lora", "ggpo", "flat", "sam", "full"]:
        tuner = LoRAFineTuner(copy.deepcopy(base), method=method, r=8, alpha=16, include=include, lr=1e-3,
                              loss_fn=loss_fn)
        steps[method] = (lambda t=tuner: t.train_step(x, y, total_steps=1000))
    if peft_targets is not None and _peft() is not None:
        steps["peft LoRA"] = _peft_step(copy.deepcopy(base), x, y, loss_fn, peft_targets)
    for fn in steps.values():
        fn()  # warm-up and state creation
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in progress_bar(range(reps), desc=label, enabled=progress):
        for k, fn in steps.items():
            times[k].append(_cpu(fn))
    ref = statistics.median(times["lora"])
    names = {"lora": "LoRA (gradkit)", "ggpo": "LoRA-GGPO", "flat": "Flat-LoRA", "sam": "LoRA-SAM", "full": "full FT"}
    for k, ts in times.items():
        res.add_row(model=label, method=names.get(k, k), cpu_ms=1e3 * statistics.median(ts),
                    ratio_to_lora=statistics.median(ts) / ref)
    res.meta[f"{label}/ggpo_over_lora"] = statistics.median(times["ggpo"]) / ref
    res.meta[f"{label}/sam_over_lora"] = statistics.median(times["sam"]) / ref
    if "peft LoRA" in times:
        res.meta[f"{label}/lora_over_peft"] = ref / statistics.median(times["peft LoRA"])
    # interleaved repetitions: paired differences SAM - GGPO, one per repetition
    d = [b - a for a, b in zip(times["ggpo"], times["sam"])]
    res.meta[f"{label}/sam_minus_ggpo_ms"] = (1e3 * statistics.mean(d),
                                             1e3 * statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("inf"))


def run(*, quick: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True) -> Result:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    res = Result("loraggpo-bench", title="LoRA-GGPO training step vs LoRA, Flat-LoRA, LoRA-SAM, full FT (and peft)")
    reps = 5 if quick else 15
    g = torch.Generator().manual_seed(seed)
    try:
        width = 256 if quick else 512
        x = torch.randn(64, width, generator=g)
        y = torch.randint(0, 10, (64,), generator=g)
        _case(res, f"MLP {width}x3", lambda: MLP([width, width, width, 10]), x, y, F.cross_entropy, None, reps,
              progress, None)
        d = 96 if quick else 128
        tok = torch.randint(0, 256, (8, 64), generator=g)

        def lm_loss(logits, targets):
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

        _case(res, f"TinyGPT d={d}", lambda: TinyGPT(block_size=64, d_model=d, n_layer=2), tok, tok, lm_loss,
              ["mlp"], reps, progress, None)
    finally:
        torch.set_num_threads(threads)
    for key, (m, se) in [(k, v) for k, v in res.meta.items() if k.endswith("sam_minus_ggpo_ms")]:
        label = key.rsplit("/", 1)[0]
        res.add_claim(f"{label}: LoRA-GGPO costs less CPU time per step than LoRA-SAM (one pass instead of two), "
                      f"by more than 2 SE over {reps} interleaved repetitions",
                      m > 0 and m > 2 * se,
                      f"SAM - GGPO = {m:+.2f} ± {se:.2f} ms; GGPO {res.meta[label + '/ggpo_over_lora']:.2f}x, "
                      f"SAM {res.meta[label + '/sam_over_lora']:.2f}x of LoRA")
    if _peft() is None:
        res.add_note("peft is not installed (it pulls in transformers): ratios are to gradkit's plain LoRA layer")
    return res
