"""gradkit plugin: TextGrad (Yuksekgonul et al., 2024).  Registers components only; imports nothing heavy.

Public API (imported lazily)::

    from gradkit_textgrad import Variable, LLMCall, TextLoss, StringBasedFunction, tg_sum, aggregate, TGD
    from gradkit_textgrad import ScriptedEngine, OpenAICompatibleEngine, TransformersEngine, CachedEngine
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title='TextGrad: Automatic "Differentiation" via Text', arxiv="2406.07496", year=2024)

_EXPORTS = {
    "Variable": "variable", "Gradient": "variable", "backward_engine": "variable",
    "LLMCall": "functions", "FormattedLLMCall": "functions", "StringBasedFunction": "functions",
    "TextLoss": "functions", "tg_sum": "functions", "aggregate": "functions", "MultiFieldEvaluation": "functions",
    "TGD": "optim", "MissingTagsError": "optim",
    "Engine": "engines", "EngineError": "engines", "ScriptedEngine": "engines", "CachedEngine": "engines",
    "OpenAICompatibleEngine": "engines", "TransformersEngine": "engines",
    "ChatServer": "server",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def gradkit_register_text_optimizers(register):
    register(
        "tgd",
        "gradkit_textgrad.optim:TGD",
        summary="Textual Gradient Descent: an LLM rewrites each text variable from its textual feedback "
                "(constraints, in-context examples, gradient memory, momentum, tag-recovery policies)",
        paper=PAPER,
        tags=["llm", "text"],
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "textgrad",
        "gradkit_textgrad.reproduce:run",
        summary="TGD vs no optimization vs resampling at equal model calls on string-tested answers "
                "(scripted critic in quick mode; SmolLM2-135M offline otherwise)",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "textgrad",
        "gradkit_textgrad.bench:run",
        summary="graph build + backward + TGD step overhead vs the reference textgrad 0.1.8 (same scripted engine)",
        paper=PAPER,
    )
