"""Shared experiment fixtures and baselines for gradkit plugins (registers two architectures and sign-sgd).

Heavy code lives in ``gradkit_support.data``, ``.models`` and ``.train``; this
module only registers components and imports nothing heavy.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1


@hookimpl
def gradkit_register_architectures(register):
    register(
        "small-cnn",
        "gradkit_support.models:SmallCNN",
        summary="Small 2-conv CNN for 8x8 digits / small generated images (experiment fixture)",
        tags=["fixture", "vision"],
    )
    register(
        "tiny-gpt",
        "gradkit_support.models:TinyGPT",
        summary="Tiny byte-level GPT (pre-LN decoder) for CPU-scale language-model experiments",
        tags=["fixture", "language-model"],
    )


@hookimpl
def gradkit_register_optimizers(register):
    register(
        "sign-sgd",
        "gradkit_support.baselines:SignSGD",
        summary="signSGD / Signum baseline: p <- p(1 - lr*wd) - lr*Q(m; bits); sign for bits=1, no state without momentum",
        tags=["sign", "baseline", "stateless"],
        defaults={"lr": 1e-4, "momentum": 0.0, "bits": 1},
    )
