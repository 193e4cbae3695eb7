"""Benchmark: the cost of a recoding LSTM training step relative to a plain LSTM step.

One training step = forward over a (batch, BPTT) chunk, cross-entropy, backward.  Candidates, timed
interleaved in one process (CPU time, ``time.process_time``; median over repetitions and rounds):

* ``lstm-loop``      the same module with ``recoding=False`` (the same per-step Python loop, no signal);
* ``torch-lstm``     ``torch.nn.LSTM`` + decoder of the same size (the fused reference);
* ``surprisal``      recoding, code-form surprisal, fixed α, ``detach='grad'``;
* ``surprisal-none`` the same with ``detach='none'`` (second-order: the LM loss flows through ∂δ/∂s);
* ``mc-dropout``     recoding with MC-dropout variance, K = 10 samples;
* ``mlp-step``       recoding (surprisal) with an MLP step-size predictor per (layer, state).

Ratios are to ``lstm-loop`` (the recoding overhead proper) and, for it, to ``torch-lstm``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar

from .model import RecodingLSTM


class _TorchLSTMLM(nn.Module):
    def __init__(self, vocab: int, emb: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x, targets=None):
        out, _ = self.lstm(self.embedding(x))
        return self.decoder(out)


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, vocab: int) -> Callable[[], None]:
    def step():
        out = model(x, targets=y)
        logits = out.logits if hasattr(out, "logits") else out
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        model.zero_grad(set_to_none=True)
        loss.backward()
    return step


def run(*, quick: bool = False, out: Optional[Path] = None, seed: int = 0, progress: bool = True) -> Result:
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool, seed: int, progress: bool) -> Result:
    vocab, emb, hidden, layers = (1000, 64, 128, 2) if quick else (10_000, 128, 256, 2)
    batch, bptt = (16, 20) if quick else (32, 35)
    reps, rounds = (3, 3) if quick else (5, 3)
    res = Result("recoding-bench", title="Recoding LSTM training-step cost vs a plain LSTM step (CPU, 1 thread)")
    res.meta.update(vocab=vocab, emb=emb, hidden=hidden, layers=layers, batch=batch, bptt=bptt, reps=reps,
                    rounds=rounds)
    common = dict(vocab_size=vocab, emb_size=emb, hidden_size=hidden, num_layers=layers)
    models: Dict[str, nn.Module] = {
        "lstm-loop": RecodingLSTM(**common, recoding=False),
        "torch-lstm": _TorchLSTMLM(vocab, emb, hidden, layers),
        "surprisal": RecodingLSTM(**common, alpha=0.3),
        "surprisal-none": RecodingLSTM(**common, alpha=0.3, detach="none"),
        "mc-dropout": RecodingLSTM(**common, alpha=0.3, signal="mc-dropout", signal_kwargs={"num_samples": 10}),
        "mlp-step": RecodingLSTM(**common, alpha=0.3, step="mlp"),
    }
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (batch, bptt), generator=g)
    y = torch.randint(0, vocab, (batch, bptt), generator=g)
    steps = {k: _step_fn(m, x, y, vocab) for k, m in models.items()}
    for f in steps.values():
        f()  # warm-up
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in progress_bar(range(rounds), desc="recoding bench rounds", enabled=progress):
        for name, f in steps.items():  # interleaved, to share the machine's noise
            for _ in range(reps):
                t0 = time.process_time()
                f()
                times[name].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["lstm-loop"]
    for name, t in med.items():
        res.add_row(candidate=name, median_ms=round(1000 * t, 2), ratio_to_lstm_loop=round(t / ref, 3),
                    params=sum(p.numel() for p in models[name].parameters()))
    r = med["surprisal"] / ref
    res.add_claim("a recoding step (surprisal, detach='grad') costs 1.3-4x a plain LSTM step of the same loop "
                  "(brief: ~2-3x; one extra backward through the step's graph per time step)", 1.3 <= r <= 4.0,
                  f"ratio {r:.2f}")
    r2 = med["surprisal-none"] / med["surprisal"]
    res.add_claim("second-order recoding (detach='none') costs more than first-order (detach='grad')", r2 > 1.05,
                  f"ratio {r2:.2f}")
    res.add_note(f"torch.nn.LSTM (fused) vs the module's Python loop without recoding: "
                 f"{med['torch-lstm'] / ref:.2f}x the loop's time; all times are CPU time on 1 thread of a shared "
                 "machine, so only the ratios mean something.")
    return res
