"""gradkit plugin: TrAct (Petersen, Borgelt, Ermon, 2024).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="TrAct: Making First-layer Pre-Activations Trainable", arxiv="2410.23970", year=2024)


@hookimpl
def gradkit_register_transforms(register):
    register(
        "tract",
        "gradkit_tract.tract:TrAct",
        summary="TrAct: wrap a first Linear/Conv2d layer so its weight gradient becomes G^T X (X^T X/b + lambda I)^-1 "
                "(any optimizer then steps on it)",
        paper=PAPER,
        tags=["gradient-transform", "first-layer", "layer-wrapper"],
        capabilities=["linear", "conv2d", "direct", "woodbury"],
        defaults={"lam": 0.1},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "tract",
        "gradkit_tract.reproduce:run",
        summary="TrAct vs plain training of a CNN on digits with contrast/brightness jitter over several epoch budgets",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "tract",
        "gradkit_tract.bench:run",
        summary="TrAct first-layer forward+backward time vs the plain layer (and torch-tract if installed)",
        paper=PAPER,
    )
