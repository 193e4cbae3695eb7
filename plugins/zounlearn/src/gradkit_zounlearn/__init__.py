"""gradkit plugin: optimizer grades for robust LLM unlearning (Lang et al., 2025).  Imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(
    title="Downgrade to Upgrade: Optimizer Simplification Enhances Robustness in LLM Unlearning",
    arxiv="2510.00761",
    year=2025,
)

_ZO = {"mu": 1e-3, "num_queries": 1, "estimator": "central", "direction": "gaussian", "seed": 0}


@hookimpl
def gradkit_register_optimizers(register):
    register(
        "zo",
        "gradkit_zounlearn.optim:ZOOptimizer",
        summary="Zeroth-order optimizer: seeded random-direction (central/forward) loss differences fed to SGD or Adam",
        paper=PAPER,
        tags=["zeroth-order", "gradient-free", "needs-closure", "unlearning"],
        capabilities=["needs-closure"],
        defaults={"lr": 1e-4, "base": "adam", **_ZO},
    )
    register(
        "sign-adam",
        "gradkit_zounlearn.optim:SignAdam",
        summary="Sign-compressed Adam: step along Q(Adam direction; N), sign for N = 1",
        paper=PAPER,
        tags=["sign", "compressed", "unlearning"],
        defaults={"lr": 1e-4, "betas": (0.9, 0.999), "bits": 1},
    )
    register(
        "hybrid-fo-zo",
        "gradkit_zounlearn.optim:HybridFOZO",
        summary="Hybrid FO-ZO: alternating gradient and zeroth-order updates, separate Adam moments (schedule pluggable)",
        paper=PAPER,
        tags=["zeroth-order", "hybrid", "unlearning"],
        defaults={"lr": 1e-4, "base": "adam", "schedule": "alternate", "period": 1, **_ZO},
    )


@hookimpl
def gradkit_register_unlearners(register):
    register(
        "graddiff",
        "gradkit_zounlearn.objectives:LMUnlearner",
        summary="GradDiff LLM unlearning (-l_forget + lam*l_retain) with any optimizer grade (AdamW, sign, ZO, hybrid)",
        paper=PAPER,
        tags=["language-model"],
        defaults={"objective": "graddiff", "optimizer": "adamw", "lam": 1.0},
    )
    register(
        "npo",
        "gradkit_zounlearn.objectives:LMUnlearner",
        summary="NPO LLM unlearning ((2/beta) E log(1+(pi/pi_ref)^beta) + lam*l_retain) with any optimizer grade",
        paper=PAPER,
        tags=["language-model"],
        defaults={"objective": "npo", "optimizer": "adamw", "beta": 0.1, "lam": 1.0},
    )


@hookimpl
def gradkit_register_metrics(register):
    register(
        "rtn-quantization-recovery",
        "gradkit_zounlearn.attacks:quantization_recovery",
        summary="Attack: forget-set score after round-to-nearest N-bit weight quantization minus before (lower = more robust)",
        paper=PAPER,
        tags=["robustness", "attack"],
        defaults={"bits": 4, "group_size": 32},
    )
    register(
        "relearn-recovery",
        "gradkit_zounlearn.attacks:relearn_recovery",
        summary="Attack: forget-set score after a few fine-tuning steps on a forget subset minus before (lower = more robust)",
        paper=PAPER,
        tags=["robustness", "attack"],
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "zounlearn",
        "gradkit_zounlearn.reproduce:run",
        summary="Synthetic facts on a tiny GPT: NPO/GradDiff with AdamW, sign, ZO, hybrid; recovery under int4 RTN and relearning",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "zounlearn",
        "gradkit_zounlearn.bench:run",
        summary="Step time and optimizer-state memory of sign-SGD, sign-Adam, ZO, hybrid vs torch AdamW on the tiny GPT",
        paper=PAPER,
    )
