"""gradkit plugin: recoding LSTM (Ulmer, 2021).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Recoding latent sentence representations -- Dynamic gradient-based activation modification in RNNs",
             arxiv="2101.00674", year=2021)


@hookimpl
def gradkit_register_architectures(register):
    register(
        "recoding-lstm",
        "gradkit_recoding.model:RecodingLSTM",
        summary="LSTM LM that recodes every layer's (h, c) by a gradient step on an error signal, then re-decodes",
        paper=PAPER,
        tags=["rnn", "language-model", "uncertainty"],
        defaults={"emb_size": 128, "hidden_size": 256, "num_layers": 2, "signal": "surprisal-code", "step": "fixed",
                  "alpha": 0.1, "detach": "grad"},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "recoding",
        "gradkit_recoding.reproduce:run",
        summary="LSTM vs recoding LSTM vs the alpha=0 ablation on a garden-path PCFG and stdlib words",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "recoding",
        "gradkit_recoding.bench:run",
        summary="recoding LSTM step cost vs a plain LSTM step (ratio)",
        paper=PAPER,
    )
