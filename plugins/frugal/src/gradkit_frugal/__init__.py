"""gradkit plugin: FRUGAL (Zmushko et al., 2024).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(
    title="FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training",
    arxiv="2411.07837",
    year=2024,
)


@hookimpl
def gradkit_register_optimizers(register):
    register(
        "frugal",
        "gradkit_frugal.optim:FRUGAL",
        summary="FRUGAL: AdamW on a rho-dense gradient subspace (block/column/randk/SVD) + signSGD on the rest",
        paper=PAPER,
        tags=["memory-efficient", "gradient-splitting", "sign"],
        defaults={"lr": 1e-3, "density": 0.25, "update_gap": 200, "proj_type": "block", "state_free": "sign_sgd"},
    )
    register(
        "galore-style",
        "gradkit_frugal.optim:galore_style",
        summary="GaLore-style baseline: AdamW in a rank-rho SVD gradient subspace, nothing outside it (FRUGAL none+svd)",
        paper=dict(title="GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", arxiv="2403.03507",
                   year=2024),
        tags=["memory-efficient", "low-rank", "baseline"],
        defaults={"lr": 1e-3, "density": 0.25, "update_gap": 200},
    )
    register(
        "badam-style",
        "gradkit_frugal.optim:badam_style",
        summary="BAdam-style baseline: AdamW on a rotating rho fraction of weight blocks, others frozen (FRUGAL none+block)",
        paper=dict(title="BAdam: A Memory Efficient Full Parameter Optimization Method for Large Language Models",
                   arxiv="2404.02827", year=2024),
        tags=["memory-efficient", "block-coordinate", "baseline"],
        defaults={"lr": 1e-3, "density": 0.25, "update_gap": 200},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "frugal",
        "gradkit_frugal.reproduce:run",
        summary="FRUGAL vs AdamW / GaLore-style / BAdam-style / signSGD on the tiny GPT: val loss at equal steps, state bytes",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "frugal",
        "gradkit_frugal.bench:run",
        summary="FRUGAL step time and optimizer-state memory vs torch AdamW (foreach) (and galore-torch if installed)",
        paper=PAPER,
    )
