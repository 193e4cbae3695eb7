"""gradkit plugin: in-context learning of Boolean functions (Bhattamishra et al., 2023).

Registers components only; imports no torch.
"""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Understanding In-Context Learning in Transformers and LLMs by Learning to Learn Discrete Functions",
             arxiv="2310.03016", year=2023)


@hookimpl
def gradkit_register_architectures(register):
    register("icl-prompt-model", "gradkit_iclbool.models:PromptModel",
             summary="prompt model for (x1, y1, ..., xm, ym) prompts: read-in, causal backbone "
                     "(transformer | lstm | linrec), read-out logit at every x",
             paper=PAPER, tags=["in-context-learning", "sequence-model"],
             defaults={"n_dims": 10, "backbone": "transformer", "n_embd": 64, "n_layer": 3, "n_head": 4})
    register("icl-transformer", "gradkit_iclbool.models:PromptTransformer",
             summary="GPT-2-style causal transformer prompt model (the paper's main model)", paper=PAPER,
             tags=["in-context-learning", "transformer"])
    register("icl-lstm", "gradkit_iclbool.models:PromptLSTM",
             summary="LSTM prompt model (the paper's recurrent baseline)", paper=PAPER,
             tags=["in-context-learning", "recurrent"])
    register("icl-linrec", "gradkit_iclbool.models:PromptLinRec",
             summary="attention-free prompt model: gated linear recurrence blocks (RetNet-like stand-in)",
             paper=PAPER, tags=["in-context-learning", "attention-free"])


@hookimpl
def gradkit_register_reproductions(register):
    register("iclbool", "gradkit_iclbool.reproduce:run",
             summary="accuracy per in-context position: transformer vs LSTM vs optimal learners and baselines "
                     "on conjunction, parity and teach-conjunction, over seeds",
             paper=PAPER)


@hookimpl
def gradkit_register_benchmarks(register):
    register("iclbool", "gradkit_iclbool.bench:run",
             summary="the Boolean task suite (12 classes, incl. a no-teaching control) against every baseline and optimal learner, "
                     "and prompt-model step time as ratios",
             paper=PAPER)
