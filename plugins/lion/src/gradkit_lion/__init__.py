"""gradkit plugin: Lion (Chen et al., 2023).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Symbolic Discovery of Optimization Algorithms", arxiv="2302.06675", year=2023)


@hookimpl
def gradkit_register_optimizers(register):
    register(
        "lion",
        "gradkit_lion.optim:Lion",
        summary="Lion: sign of interpolated momentum, decoupled weight decay, one state buffer",
        paper=PAPER,
        tags=["sign", "memory-efficient"],
        defaults={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "lion",
        "gradkit_lion.reproduce:run",
        summary="Lion vs AdamW (lr/wd scaling rule) on the tiny GPT (stdlib corpus) and the digits CNN",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "lion",
        "gradkit_lion.bench:run",
        summary="Lion step time and state memory vs torch AdamW (foreach) and lion-pytorch",
        paper=PAPER,
    )
