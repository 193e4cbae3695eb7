"""gradkit plugin: GCond (Gradient Conductor) multi-task aggregator and its baselines.

Registers components only; imports no torch.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(
    title="GCond: Gradient Conflict Resolution via Accumulation-based Stabilization for Large-Scale "
          "Multi-Task Learning",
    arxiv="2509.07252",
    year=2025,
)
_TAGS = ["gradient-transform", "multi-task"]


@hookimpl
def gradkit_register_transforms(register):
    register(
        "gcond",
        "gradkit_gcond.conductor:GradientConductor",
        summary="GCond: per-task gradient accumulation (exact/stochastic), arbitrated smooth conflict "
                "projection, own momentum; writes p.grad for any optimizer",
        paper=PAPER,
        tags=_TAGS,
        capabilities=["writes-p.grad", "multi-task", "stochastic-accumulation"],
    )
    register(
        "linear-sum",
        "gradkit_gcond.baselines:LinearSum",
        summary="Multi-task baseline: plain sum of the weighted task gradients (gradient accumulation)",
        paper=PAPER,
        tags=_TAGS + ["baseline"],
    )
    register(
        "pcgrad",
        "gradkit_gcond.baselines:PCGrad",
        summary="PCGrad gradient surgery (Yu et al. 2020) on accumulated task gradients",
        paper=dict(title="Gradient Surgery for Multi-Task Learning", arxiv="2001.06782", year=2020),
        tags=_TAGS + ["baseline"],
    )
    register(
        "cagrad",
        "gradkit_gcond.baselines:CAGrad",
        summary="CAGrad conflict-averse gradient (Liu et al. 2021), c=0.5, rescaled by 1/(1+c^2)",
        paper=dict(title="Conflict-Averse Gradient Descent for Multi-task Learning", arxiv="2110.14048", year=2021),
        tags=_TAGS + ["baseline"],
        defaults={"c": 0.5},
    )
    register(
        "gradnorm",
        "gradkit_gcond.baselines:GradNorm",
        summary="GradNorm learned task weights (Chen et al. 2018), alpha=1.5, sum of weights = K",
        paper=dict(title="GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask "
                         "Networks", arxiv="1711.02257", year=2018),
        tags=_TAGS + ["baseline"],
        defaults={"alpha": 1.5},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "gcond",
        "gradkit_gcond.reproduce:run",
        summary="GCond (exact/stochastic) vs linear sum, PCGrad, CAGrad, GradNorm on masked reconstruction "
                "with conflicting L1 (clean) + SSIM (inverted) targets, 3 seeds, conflict rate, no-projection ablation",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "gcond",
        "gradkit_gcond.bench:run",
        summary="GCond step time (exact vs stochastic) and aggregation cost vs linear sum, PCGrad and torchjd",
        paper=PAPER,
    )
