"""gradkit plugin: CoFrGeNet (Dhurandhar et al., 2026).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="CoFrGeNet: Continued Fraction Architectures for Language Generation", arxiv="2601.21766",
             year=2026)


@hookimpl
def gradkit_register_architectures(register):
    register(
        "cofr-ladder",
        "gradkit_cofrgenet.ladder:CoFrLadder",
        summary="continued-fraction ladders: continuant forward (one division), Prop. 1 closed-form backward, pole clamp",
        paper=PAPER,
        tags=["continued-fraction", "layer"],
        defaults={"depth": 5, "n_ladders": 1, "mode": "multivariate", "eps": 1e-2},
    )
    register(
        "cffn",
        "gradkit_cofrgenet.blocks:Cffn",
        summary="gated continued-fraction FFN y = U xh + V ladders(xh), xh = sigmoid(Gx)*x: replaces the 4x transformer FFN",
        paper=PAPER,
        tags=["continued-fraction", "ffn", "transformer-block"],
        defaults={"n_ladders": 2, "depth": 5, "gate": "input", "mode": "multivariate", "eps": 1e-2},
    )
    register(
        "cattn-u",
        "gradkit_cofrgenet.blocks:CAttnU",
        summary="univariate continued-fraction causal token mixer (attention replacement; reconstructed from §3.2)",
        paper=PAPER,
        tags=["continued-fraction", "attention", "transformer-block", "reconstructed"],
        defaults={"depth": 2, "eps": 1e-2},
    )
    register(
        "cattn-m",
        "gradkit_cofrgenet.blocks:CAttnM",
        summary="multivariate continued-fraction attention A = causal_softmax(ladders(X) F), O = A X Wv (reconstructed)",
        paper=PAPER,
        tags=["continued-fraction", "attention", "transformer-block", "reconstructed"],
        defaults={"n_ladders": 4, "depth": 3, "eps": 1e-2},
    )
    register(
        "cofrgenet-gpt",
        "gradkit_cofrgenet.blocks:cofrgenet_gpt",
        summary="the support TinyGPT with every FFN swapped for a Cffn (attn='u'/'m' also swaps attention)",
        paper=PAPER,
        tags=["continued-fraction", "language-model"],
        defaults={"attn": None, "n_ladders": 2, "depth": 5, "gate": "input", "mode": "multivariate"},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "cofrgenet",
        "gradkit_cofrgenet.reproduce:run",
        summary="char-level LM on stdlib text: 4x-FFN GPT vs Cffn vs a parameter-matched narrow FFN, over seeds",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "cofrgenet",
        "gradkit_cofrgenet.bench:run",
        summary="Prop. 1 backward vs autograd through the recursion (d = 4, 8, 16); Cffn vs an equal-parameter FFN",
        paper=PAPER,
    )
