"""gradkit plugin: DCG-MAP-Elites (Faldor et al., GECCO 2023) with MAP-Elites and PGA-MAP-Elites.

Registers components only; imports no torch.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(
    title="MAP-Elites with Descriptor-Conditioned Gradients and Archive Distillation into a Single Policy",
    arxiv="2303.03832",
    year=2023,
)


@hookimpl
def gradkit_register_agents(register):
    register(
        "dcg-me",
        "gradkit_dcgme.algorithm:DCGME",
        summary="DCG-MAP-Elites: descriptor-conditioned TD3 critic (similarity-weighted rewards), PG offspring "
        "toward the parent's descriptor, descriptor-conditioned actor distilled from the archive",
        paper=PAPER,
        tags=["quality-diversity", "neuroevolution", "td3"],
    )
    register(
        "pga-me",
        "gradkit_dcgme.algorithm:PGAME",
        summary="PGA-MAP-Elites baseline: iso+line-DD GA + fitness-greedy TD3 policy-gradient offspring",
        paper=dict(title="Policy Gradient Assisted MAP-Elites", arxiv="", year=2021),
        tags=["quality-diversity", "baseline", "td3"],
    )
    register(
        "map-elites",
        "gradkit_dcgme.algorithm:MAPElites",
        summary="CVT-MAP-Elites baseline with iso+line-DD variation",
        paper=dict(title="Using Centroidal Voronoi Tessellations to Scale Up the MAP-Elites Algorithm",
                   arxiv="1610.05729", year=2018),
        tags=["quality-diversity", "baseline"],
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "dcgme",
        "gradkit_dcgme.reproduce:run",
        summary="DCG-ME vs PGA-ME vs MAP-Elites at equal evaluations on gradkit/PointOmni-v0 (--full: AntOmni)",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "dcgme",
        "gradkit_dcgme.bench:run",
        summary="batched policy evaluation vs one-policy-at-a-time, and archive insertion vs ribs",
        paper=PAPER,
    )
