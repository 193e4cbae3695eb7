"""gradkit plugin: DSAC-T (Duan et al., 2023) with DSAC-v1, SAC and TD3 baselines.

Registers components only; imports no torch.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Distributional Soft Actor-Critic with Three Refinements", arxiv="2310.05858", year=2023)
SAC_PAPER = dict(
    title="Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement Learning with a Stochastic Actor",
    arxiv="1801.01290",
    year=2018,
)
TD3_PAPER = dict(title="Addressing Function Approximation Error in Actor-Critic Methods", arxiv="1802.09477", year=2018)


@hookimpl
def gradkit_register_agents(register):
    register(
        "dsac-t",
        "gradkit_dsact.agent:DSACT",
        summary="DSAC-T: twin Gaussian value distributions, expected value substitution, "
        "variance-based critic gradient adjustment, target policy, delayed updates, auto temperature",
        paper=PAPER,
        tags=["off-policy", "distributional", "continuous-control", "model-free"],
        capabilities=["box-action", "checkpoint", "q-distribution"],
    )
    register(
        "dsac-v1",
        "gradkit_dsact.agent:DSACv1",
        summary="DSAC-v1 baseline: one Gaussian value distribution, sampled target, fixed TD bound",
        paper=PAPER,
        tags=["off-policy", "distributional", "continuous-control", "baseline"],
        capabilities=["box-action", "checkpoint", "q-distribution"],
    )
    register(
        "sac",
        "gradkit_dsact.agent:SAC",
        summary="Soft actor-critic with twin Q and automatic temperature (DSAC-T's baseline, same API)",
        paper=SAC_PAPER,
        tags=["off-policy", "continuous-control", "baseline"],
        capabilities=["box-action", "checkpoint"],
    )
    register(
        "td3",
        "gradkit_dsact.agent:TD3",
        summary="TD3: twin Q critics, target policy smoothing, delayed actor/target updates (off-policy reference, "
        "same API)",
        paper=TD3_PAPER,
        tags=["off-policy", "continuous-control", "baseline", "deterministic-policy"],
        capabilities=["box-action", "checkpoint"],
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "dsact",
        "gradkit_dsact.reproduce:run",
        summary="Pendulum-v1 curves of DSAC-T / DSAC-v1 / SAC and the reward-scale (x0.1, x1, x10) experiment",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "dsact",
        "gradkit_dsact.bench:run",
        summary="Gradient updates per second of DSAC-T, DSAC-v1, SAC and TD3 vs stable-baselines3 SAC and TD3",
        paper=PAPER,
    )
