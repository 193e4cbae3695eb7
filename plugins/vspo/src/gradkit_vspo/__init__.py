"""gradkit plugin: Progressive Reward Shaping + VSPO (arXiv 2512.07478).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Enhancing Agentic RL with Progressive Reward Shaping and Value-based Sampling Policy Optimization",
             arxiv="2512.07478", year=2025)


@hookimpl
def gradkit_register_rewards(register):
    register("prs", "gradkit_vspo.rewards:prs",
             summary="Progressive Reward Shaping: stage-gated format -> tool -> length-aware-BLEU answer reward",
             paper=PAPER, tags=["rl", "llm", "tool-use"])
    register("binary", "gradkit_vspo.rewards:binary",
             summary="Binary 0/1 exact-match answer reward (PRS baseline)", paper=PAPER, tags=["rl", "llm"])


@hookimpl
def gradkit_register_trainers(register):
    register("vspo", "gradkit_vspo.trainer:VSPOTrainer",
             summary="GRPO / DAPO dynamic sampling / VSPO (task-value refill of zero-advantage groups) in one loop",
             paper=PAPER, tags=["rl", "grpo", "llm"], defaults={"mode": "vspo", "group_size": 8, "lr": 1e-3})


@hookimpl
def gradkit_register_reproductions(register):
    register("vspo", "gradkit_vspo.reproduce:run",
             summary="PRS vs binary reward; GRPO vs DAPO vs VSPO (with and without value smoothing) at equal rollouts on a synthetic tool-calling KB task with 2-hop questions",
             paper=PAPER)


@hookimpl
def gradkit_register_benchmarks(register):
    register("vspo", "gradkit_vspo.bench:run",
             summary="GRPO loss/advantages vs trl 1.16 on identical inputs: parity and CPU-time ratio", paper=PAPER)
