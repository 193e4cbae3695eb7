"""Benchmark: framework overhead of one TextGrad iteration (forward graph, backward, TGD step) against the
reference ``textgrad`` 0.1.8, both driven by the same instant scripted engine, side by side in one process.

The model calls dominate any real run; this measures what the framework adds around them (prompt building,
graph traversal), reported as CPU-time ratios ours / reference, and checks both made the same number of engine
calls.  Needs the ``test`` extra (``textgrad==0.1.8``); the reference imports ``litellm`` at import time for an
engine it does not use here, so a stand-in module is installed when ``litellm`` is absent.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import statistics
import tempfile
import sys
import time
import types

from gradkit_core.results import Result

from . import prompts as P
from .engines import ScriptedEngine


def _scripted():
    return ScriptedEngine([
        (lambda p, s: s is not None and "IMPROVED_VARIABLE" in s, "<IMPROVED_VARIABLE>new prompt</IMPROVED_VARIABLE>"),
        (lambda p, s: s == P.BACKWARD_SYSTEM_PROMPT, "be more specific"),
        (r".*", "an answer"),
    ])


def _iteration(V, llmcall, textloss, tgd, tg_sum, eng, width):
    sysp = V("You solve questions step by step and answer briefly.", role_description="system prompt",
             requires_grad=True)
    qs = [V(f"question number {i}: what is {i} + {i}?", role_description="question", requires_grad=False)
          for i in range(width)]
    answers = [llmcall(eng, sysp)(q) for q in qs]
    loss = textloss("Evaluate the answers.", eng)(tg_sum(answers))
    loss.backward(eng)
    tgd([sysp], eng).step()


def import_reference():
    """The reference ``textgrad`` module (0.1.8), or None when it is not installed.  It imports ``litellm`` at
    import time for an engine never used here (a stand-in module is installed when ``litellm`` is absent) and
    writes a JSONL log under ``./logs/`` unless ``TEXTGRAD_LOG_DIR`` says where (a temporary directory)."""
    if importlib.util.find_spec("textgrad") is None:
        return None
    if "litellm" not in sys.modules and importlib.util.find_spec("litellm") is None:
        stub = types.ModuleType("litellm")
        stub.completion = None
        stub.__spec__ = importlib.machinery.ModuleSpec("litellm", None)
        sys.modules["litellm"] = stub
    os.environ.setdefault("TEXTGRAD_LOG_DIR", tempfile.mkdtemp(prefix="textgrad-logs-"))  # not ./logs/
    # an installed litellm fetches its model cost map from GitHub at import: nothing is downloaded at run time
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import textgrad

    return textgrad


def reference_engine(tg):
    """The reference's engine class around one of our engines (``inner(prompt, system_prompt=...)``)."""
    from textgrad.engine import EngineLM

    class RefEngine(EngineLM):
        model_string = "scripted"

        def __init__(self, inner):
            self.inner = inner

        def generate(self, prompt, system_prompt=None, **kw):
            return self.inner(prompt, system_prompt=system_prompt)

        def __call__(self, prompt, system_prompt=None, **kw):
            return self.generate(prompt, system_prompt=system_prompt)

    return RefEngine


def _reference():
    tg = import_reference()
    if tg is None:
        return None
    Eng = reference_engine(tg)
    return dict(V=tg.Variable, llmcall=tg.autograd.LLMCall, textloss=tg.TextLoss,
                tgd=lambda ps, e: tg.TGD(parameters=ps, engine=e), tg_sum=tg.sum, wrap=Eng)


def run(*, quick=False, full=False, seed=0, out=None, progress=True, jobs=1, resume=False):
    import logging

    from . import LLMCall, TextLoss, TGD, Variable, tg_sum
    ours = dict(V=Variable, llmcall=LLMCall, textloss=TextLoss, tgd=TGD, tg_sum=tg_sum, wrap=lambda e: e)
    ref = _reference()
    logging.getLogger("textgrad").setLevel(logging.WARNING)
    widths = [4, 16] if quick else [4, 16, 64]
    reps = 5 if quick else 15
    res = Result(name="textgrad-bench", title="TextGrad iteration overhead (scripted engine): gradkit vs textgrad 0.1.8")
    res.meta.update(reps=reps, timer="time.process_time, median over repetitions")
    if ref is None:
        res.add_note("textgrad 0.1.8 is not installed (test extra): only gradkit timed")
    for width in widths:
        row = {"answers_in_graph": width}
        calls = {}
        for name, lib in (("gradkit", ours), ("textgrad", ref)):
            if lib is None:
                continue
            times = []
            for _ in range(reps):
                inner = _scripted()
                eng = lib["wrap"](inner)
                t = time.process_time()
                _iteration(lib["V"], lib["llmcall"], lib["textloss"], lib["tgd"], lib["tg_sum"], eng, width)
                times.append(time.process_time() - t)
                calls[name] = len(inner.calls)
            row[f"{name}_ms"] = round(1e3 * statistics.median(times), 3)
            row[f"{name}_engine_calls"] = calls[name]
        if ref is not None:
            row["ratio_gradkit/textgrad"] = round(row["gradkit_ms"] / row["textgrad_ms"], 3)
        res.add_row(**row)
    if ref is not None:
        res.add_claim("both libraries make the same number of engine calls for the same graph",
                      all(r["gradkit_engine_calls"] == r["textgrad_engine_calls"] for r in res.rows))
    return res
