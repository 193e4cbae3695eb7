"""The quark task (:mod:`gradkit_quark.task`) run by ``trl``'s ``GRPOTrainer`` (1.16), for the benchmark and the
parity test.

The policy is a tiny Llama built from a config (random initialization, nothing downloaded) with a word-level
tokenizer built in memory: the prompt is the single token ``Q``, a completion is exactly ``L = 8`` tokens out of
``t0 ... t7`` (``min_new_tokens = 8`` and the special tokens suppressed at generation), read as the task's slots.
The five objectives are trl reward functions (one column each, combined by ``reward_weights``) or, for gradkit's
aggregators, one reward function that computes the five columns and returns the aggregated reward (trl then
group-normalizes that one column).  ``trl``, ``transformers``, ``datasets`` and ``tokenizers`` are imported only
here, lazily.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .rewards import MultiObjectiveReward
from .task import BEST, L, OBJECTIVES, V, reference_stats, rewards as task_rewards

SPECIAL = ("<pad>", "<s>", "</s>", "Q")
#: token id of slot value ``v`` is ``OFFSET + v``
OFFSET = len(SPECIAL)


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    vocab.update({f"t{v}": OFFSET + v for v in range(V)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def policy(seed: int, hidden: int = 32):
    """A 1-layer Llama over the 12-token vocabulary, randomly initialized with ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=OFFSET + V, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def generation_kwargs() -> Dict[str, Any]:
    return {"min_new_tokens": L, "suppress_tokens": list(range(OFFSET))}


def slots(completion_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(n, L)`` slot values of trl's completion token ids (exactly ``L`` task tokens each)."""
    x = torch.as_tensor([list(c) for c in completion_ids], dtype=torch.long)
    if x.dim() != 2 or x.shape[1] != L or (x < OFFSET).any() or (x >= OFFSET + V).any():
        raise ValueError(f"completions must be {L} task tokens each, got {x.tolist()[:2]}...")
    return x - OFFSET


def sample_policy(model, n: int, seed: int) -> torch.Tensor:
    """``n`` completions ``(n, L)`` sampled from ``model`` with the trainer's generation settings."""
    torch.manual_seed(seed)
    prompt = torch.full((n, 1), SPECIAL.index("Q"), dtype=torch.long)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                             top_p=1.0, top_k=0, max_new_tokens=L, pad_token_id=0, **generation_kwargs())
    return slots(out[:, 1:].tolist())


class RewardColumns:
    """The task's five rewards as trl reward functions (one per objective), computed once per batch: trl calls
    every function on the same completions, in order, so the first one computes the matrix and the others read
    their column of it."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self._r: Optional[torch.Tensor] = None
        self.batches: List[torch.Tensor] = []

    def matrix(self, completion_ids) -> torch.Tensor:
        self._r = task_rewards(slots(completion_ids), self.gen)
        self.batches.append(self._r)
        return self._r

    def functions(self) -> List[Callable]:
        fns = []
        for j, name in enumerate(OBJECTIVES):
            def f(prompts, completions, completion_ids, _j=j, **kw):
                r = self.matrix(completion_ids) if _j == 0 else self._r
                if r.shape[0] != len(completion_ids):
                    raise RuntimeError("reward functions called out of order")
                return r[:, _j].tolist()
            f.__name__ = name
            fns.append(f)
        return fns


class AggregatedReward:
    """One trl reward function: gradkit's aggregator applied to the five task rewards of the batch.

    ``seconds`` accumulates the CPU time spent inside the aggregator (the reward processing)."""

    def __init__(self, agg: MultiObjectiveReward, seed: int):
        self.agg = agg
        self.cols = RewardColumns(seed)
        self.seconds = 0.0
        self.__name__ = "quark"

    def __call__(self, prompts, completions, completion_ids, **kw):
        r = self.cols.matrix(completion_ids)
        t = time.process_time()
        out = self.agg(r).tolist()
        self.seconds += time.process_time() - t
        return out


def trainer(model, reward_funcs, *, lr: float, steps: int, groups: int, group_size: int, seed: int, out_dir,
            reward_weights: Optional[Sequence[float]] = None, aggregation: str = "sum_then_normalize",
            scale_rewards: str = "group"):
    """A CPU ``GRPOTrainer``: ``groups`` prompts x ``group_size`` completions per step, one on-policy update per
    batch (``num_iterations = 1``, no KL: ``beta = 0``), Adam (trl's default AdamW, no weight decay)."""
    import logging

    import trl
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    args = trl.GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=groups * group_size, num_generations=group_size,
        max_completion_length=L, max_steps=steps, learning_rate=lr, lr_scheduler_type="constant",
        weight_decay=0.0, warmup_steps=0, reward_weights=list(reward_weights) if reward_weights else None,
        multi_objective_aggregation=aggregation, scale_rewards=scale_rewards, report_to=[], logging_steps=10 ** 9,
        use_cpu=True, save_strategy="no", temperature=1.0, top_p=1.0, top_k=0, beta=0.0, seed=seed,
        data_seed=seed, disable_tqdm=True, generation_kwargs=generation_kwargs(), loss_type="grpo",
        max_grad_norm=1e9)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    data = Dataset.from_dict({"prompt": ["Q"] * (groups * steps)})
    tr = trl.GRPOTrainer(model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=data,
                         processing_class=tokenizer())
    tr.remove_callback(PrinterCallback)          # no per-run metric printout
    tr.remove_callback(ProgressCallback)
    return tr


def progress(r: torch.Tensor) -> torch.Tensor:
    """Per-objective progress of raw rewards ``r`` (as in :func:`gradkit_quark.task.train`)."""
    mu, _ = reference_stats()
    return (r.mean(0) - mu) / (BEST - mu)
