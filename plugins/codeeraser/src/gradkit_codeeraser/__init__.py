"""gradkit plugin: CodeEraser (Chu et al., ICSE 2026).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(
    title="Scrub It Out! Erasing Sensitive Memorization in Code Language Models via Machine Unlearning",
    arxiv="2509.13755",
    year=2025,
)

#: the official code's optimizer settings (Adam, lr 3e-6, betas (0.9, 0.98)) for pretrained code LMs
_HP = {"lr": 3e-6, "betas": (0.9, 0.98)}


@hookimpl
def gradkit_register_unlearners(register):
    register(
        "codeeraser",
        "gradkit_codeeraser.unlearn:CodeEraser",
        summary="CodeEraser: ascent on secret tokens, descent on their context, KL to the frozen model (forget); KL on retain",
        paper=PAPER,
        tags=["language-model", "secrets", "selective"],
        defaults={"mode": "codeeraser", "gamma": 0.1, "lam": 0.1, "alpha": 1.0, "kl_sign_forget": -1,
                  "kl_reduction": "batchmean", **_HP},
    )
    register(
        "lm-cu",
        "gradkit_codeeraser.unlearn:CodeEraser",
        summary="Constraint-based unlearning (CU): ascent on the forget samples with KL to the frozen model, KL on retain "
        "(lam=0: plain gradient ascent)",
        paper=PAPER,
        tags=["language-model", "baseline"],
        defaults={"mode": "cu", "lam": 0.1, "alpha": 1.0, "kl_sign_forget": -1, "kl_reduction": "batchmean", **_HP},
    )
    register(
        "ssga",
        "gradkit_codeeraser.unlearn:CodeEraser",
        summary="Sensitivity-selective GA: ascent on secret tokens, descent on their context (CodeEraser without KL)",
        paper=PAPER,
        tags=["language-model", "baseline", "selective"],
        defaults={"mode": "ssga", "gamma": 0.1, **_HP},
    )


@hookimpl
def gradkit_register_metrics(register):
    register(
        "memorization-accuracy",
        "gradkit_codeeraser.metrics:memorization_accuracy",
        summary="MA: teacher-forced argmax accuracy on masked (secret) tokens, per sample; lower = less memorized",
        paper=PAPER,
        tags=["language-model", "memorization"],
    )
    register(
        "extraction-likelihood",
        "gradkit_codeeraser.metrics:extraction_likelihood",
        summary="EL_n: share of secret n-grams reproduced exactly by greedy decoding from their prefix; lower = less extractable",
        paper=PAPER,
        tags=["language-model", "memorization"],
        defaults={"n": 3},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "codeeraser",
        "gradkit_codeeraser.reproduce:run",
        summary="Tiny GPT memorizes injected secrets in stdlib code; GA, CU, SSGA and CodeEraser erase them; utility compared",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "codeeraser",
        "gradkit_codeeraser.bench:run",
        summary="Time per unlearning step and per forgotten sample: CodeEraser vs GA, CU, SSGA on the tiny GPT",
        paper=PAPER,
    )
