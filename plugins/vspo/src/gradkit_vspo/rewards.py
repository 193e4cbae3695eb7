"""Rewards: length-aware BLEU, the Progressive Reward Shaper (PRS) and the binary 0/1 baseline.

Model outputs are strings in the tool-calling format of :mod:`gradkit_vspo.env`::

    <call> lookup ENTITY ATTRIBUTE </call> <result> VALUE </result> <answer> TEXT </answer>

The paper's text is available only as its abstract here: PRS "first rewards parseable and properly
formatted tool calls, then factual correctness and answer quality", short answers scored with a
length-aware BLEU.  The stage functions, weights and gates below are a documented reconstruction.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

CALL_RE = re.compile(r"<call>(.*?)</call>", re.S)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S)
TOOL_NAMES = ("lookup",)


def _check_text(name: str, s) -> str:
    if not isinstance(s, str):
        raise TypeError(f"{name} must be a str, got {type(s).__name__}")
    return s


def extract_answer(text: str) -> str:
    """The text inside the last ``<answer>…</answer>`` pair; ValueError when the output has no answer tags."""
    _check_text("text", text)
    found = ANSWER_RE.findall(text)
    if not found:
        raise ValueError(f"model output has no <answer>…</answer> tags: {text[:80]!r}; expected e.g. "
                         "'<answer> blue </answer>'")
    return found[-1].strip()


def parse_calls(text: str) -> List[Optional[Tuple[str, ...]]]:
    """Every ``<call>…</call>`` span: ``(tool, arg1, arg2)`` when it parses as ``lookup E A``, else None."""
    _check_text("text", text)
    out: List[Optional[Tuple[str, ...]]] = []
    for body in CALL_RE.findall(text):
        parts = body.split()
        out.append(tuple(parts) if len(parts) == 3 and parts[0] in TOOL_NAMES else None)
    return out


def length_aware_bleu(pred: str, ref: str, *, max_n: int = 4, short_len: int = 5, floor: float = 0.1,
                      lowercase: bool = False) -> float:
    """BLEU in [0, 1] that does not punish concise answers (reconstruction of the paper's short-form score).

    Tokens are whitespace-separated.  Orders ``n = 1..N`` with ``N = min(max_n, |ref|, |pred|)`` (a 1-word
    reference is scored on unigrams, not zeroed by missing 4-grams); a zero match count uses ``floor / t_n``
    (sacrebleu's "floor" smoothing); brevity penalty against ``min(|ref|, short_len)``.  For strings of at
    least ``max_n`` tokens and ``|ref| <= short_len`` this is sacrebleu's sentence BLEU (floor smoothing,
    no tokenizer) / 100.
    """
    _check_text("pred", pred)
    _check_text("ref", ref)
    if not isinstance(max_n, int) or isinstance(max_n, bool) or max_n < 1:
        raise ValueError(f"max_n must be a positive int, got {max_n!r}")
    if not isinstance(short_len, int) or isinstance(short_len, bool) or short_len < 1:
        raise ValueError(f"short_len must be a positive int, got {short_len!r}")
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and 0 < floor < 1):
        raise ValueError(f"floor must be in (0, 1), got {floor!r}")
    if lowercase:
        pred, ref = pred.lower(), ref.lower()
    p, r = pred.split(), ref.split()
    if not r:
        raise ValueError("reference answer is empty; length-aware BLEU needs a non-empty reference")
    if not p:
        return 0.0
    n_eff = min(max_n, len(r), len(p))
    log_prec = 0.0
    for n in range(1, n_eff + 1):
        pc = Counter(tuple(p[i:i + n]) for i in range(len(p) - n + 1))
        rc = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
        total = sum(pc.values())
        match = sum(min(c, rc[g]) for g, c in pc.items())
        log_prec += math.log((match if match > 0 else floor) / total)
    r_eff = min(len(r), short_len)
    bp = 1.0 if len(p) >= r_eff else math.exp(1.0 - r_eff / len(p))
    return float(bp * math.exp(log_prec / n_eff))


# --------------------------------------------------------------------------- stages

def format_score(text: str, expected_call=None, ref=None) -> float:
    """Stage 1: fraction of the format checks met — a call span, every call parseable, one answer span at the end."""
    calls = parse_calls(text)
    checks = [bool(calls), bool(calls) and all(c is not None for c in calls),
              len(ANSWER_RE.findall(text)) == 1 and text.rstrip().endswith("</answer>")]
    return sum(checks) / len(checks)


def _expected_keys(expected_call) -> List[Tuple[str, ...]]:
    """``(E, A)`` -> ``[(E, A)]``; a sequence of such pairs (a 2-hop question) -> the list of pairs."""
    if isinstance(expected_call, (list, tuple)) and expected_call and all(isinstance(x, str) for x in expected_call):
        return [tuple(expected_call)]
    if isinstance(expected_call, (list, tuple)) and expected_call and all(
            isinstance(k, (list, tuple)) and k and all(isinstance(x, str) for x in k) for k in expected_call):
        return [tuple(k) for k in expected_call]
    raise TypeError(f"expected_call must be an (entity, attribute) pair or a sequence of such pairs, got {expected_call!r}")


def tool_score(text: str, expected_call=None, ref=None) -> float:
    """Stage 2: the fraction of the expected keys that some call asked the tool for (1-hop: 0 or 1; a 2-hop
    question expects two keys, so one lookup scores 0.5 and keeps the answer stage locked at gate 1)."""
    if expected_call is None:
        return 1.0
    made = set(c for c in parse_calls(text) if c is not None)
    keys = _expected_keys(expected_call)
    return sum(("lookup",) + k in made for k in keys) / len(keys)


def answer_score(text: str, expected_call=None, ref=None, *, short_len: int = 5, judge=None,
                 long_form_len: int = 8) -> float:
    """Stage 3: length-aware BLEU of the answer against the reference (0 without answer tags); with a ``judge``,
    references longer than ``long_form_len`` words (long-form answers) are scored by ``judge(answer, ref)``."""
    try:
        ans = extract_answer(text)
    except ValueError:
        return 0.0
    if judge is not None and len(ref.split()) > long_form_len:
        return judge(ans, ref)
    return length_aware_bleu(ans, ref, short_len=short_len)


JUDGE_PROMPT = ("You grade answers. Reference answer: {ref}\nCandidate answer: {pred}\n"
                "How correct and complete is the candidate compared with the reference? "
                "Reply with one line 'Score: N' where N is an integer from 0 (wrong) to {max_score} (fully correct).")
_SCORE_RE = re.compile(r"Score:\s*([0-9]+(?:\.[0-9]+)?)")


class LLMJudge:
    """Pluggable long-form answer judge: ``generate(prompt) -> reply`` is any text generator (a chat model, an
    OpenAI-compatible client, a scripted function in tests).  The reply must contain ``Score: N`` with N in
    ``[0, max_score]``; the score is ``N / max_score``.  A reply without a score, or out of range, raises ValueError
    (never a silent 0).  The paper's judge is a strong LLM; none is available offline, so nothing here ships one."""

    def __init__(self, generate, *, template: str = JUDGE_PROMPT, max_score: int = 10):
        if not callable(generate):
            raise TypeError(f"generate must be callable (prompt: str) -> str, got {type(generate).__name__}")
        if not isinstance(max_score, int) or isinstance(max_score, bool) or max_score < 1:
            raise ValueError(f"max_score must be a positive int, got {max_score!r}")
        for key in ("{pred}", "{ref}"):
            if key not in template:
                raise ValueError(f"template must contain {key}")
        self.generate, self.template, self.max_score = generate, template, max_score

    def __call__(self, pred: str, ref: str) -> float:
        prompt = self.template.format(pred=_check_text("pred", pred), ref=_check_text("ref", ref),
                                      max_score=self.max_score)
        reply = self.generate(prompt)
        if not isinstance(reply, str):
            raise TypeError(f"the judge's generate returned {type(reply).__name__}; expected str")
        m = _SCORE_RE.search(reply)
        if m is None:
            raise ValueError(f"judge reply has no 'Score: N': {reply[:80]!r}")
        score = float(m.group(1))
        if not 0 <= score <= self.max_score:
            raise ValueError(f"judge score {score} outside [0, {self.max_score}]")
        return score / self.max_score


@dataclass
class Stage:
    """One PRS stage: ``fn(text, expected_call, ref) -> score in [0, 1]``; later stages count only once
    this stage's score reaches ``gate``."""
    name: str
    fn: Callable[..., float]
    weight: float
    gate: float = 1.0


class ProgressiveRewardShaper:
    """Stage-gated curriculum reward ``R = sum_k w_k s_k`` over the unlocked prefix of stages.

    Stage k is unlocked when every earlier stage j scored ``s_j >= gate_j``.  With the default stages
    (format 0.2, tool 0.3, answer 0.5) this is the brief's ``R = a r_fmt`` when the call does not parse,
    else ``a + b r_tool + c r_ans``.  ``schedule(progress) -> weights`` (progress in [0, 1]) may shift
    the weights over training.  ``judge`` (e.g. :class:`LLMJudge`) scores long-form answers (references of
    more than ``long_form_len`` words) in the answer stage instead of BLEU.  ``on_missing="zero"`` scores an output without tags 0 at that stage (what
    RL needs); ``"raise"`` raises ValueError instead.
    """

    def __init__(self, stages: Optional[Sequence[Stage]] = None, schedule: Optional[Callable] = None,
                 on_missing: str = "zero", judge: Optional[Callable[[str, str], float]] = None,
                 long_form_len: int = 8):
        if judge is not None and stages is not None:
            raise ValueError("judge applies to the default stages; with custom stages, put the judge in a stage's fn")
        if judge is not None and not callable(judge):
            raise TypeError(f"judge must be callable (answer, ref) -> score in [0, 1], got {type(judge).__name__}")
        if stages is None:
            ans = answer_score if judge is None else (
                lambda t, c, r: answer_score(t, c, r, judge=judge, long_form_len=long_form_len))
            stages = [Stage("format", format_score, 0.2, 1.0), Stage("tool", tool_score, 0.3, 1.0),
                      Stage("answer", ans, 0.5, 1.0)]
        stages = list(stages)
        if not stages:
            raise ValueError("ProgressiveRewardShaper needs at least one stage")
        for s in stages:
            if not isinstance(s, Stage):
                raise TypeError(f"stages must be Stage objects, got {type(s).__name__}")
            self._check_weight(s.name, s.weight)
            if not (isinstance(s.gate, (int, float)) and math.isfinite(s.gate) and 0 <= s.gate <= 1):
                raise ValueError(f"stage {s.name!r}: gate must be in [0, 1], got {s.gate!r}")
        if on_missing not in ("zero", "raise"):
            raise ValueError(f"on_missing must be 'zero' or 'raise', got {on_missing!r}")
        self.stages, self.schedule, self.on_missing = stages, schedule, on_missing
        self.progress = 0.0

    @staticmethod
    def _check_weight(name, w):
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"stage {name!r}: weight must be finite and >= 0, got {w!r}")

    def weights(self) -> List[float]:
        if self.schedule is None:
            return [s.weight for s in self.stages]
        w = list(self.schedule(self.progress))
        if len(w) != len(self.stages):
            raise ValueError(f"schedule returned {len(w)} weights for {len(self.stages)} stages")
        for s, x in zip(self.stages, w):
            self._check_weight(s.name, x)
        return w

    def score(self, text: str, ref: str, expected_call=None) -> Tuple[float, Dict[str, float]]:
        _check_text("text", text)
        _check_text("ref", ref)
        if not ref.strip():
            raise ValueError("reference answer is empty; every sample needs a non-empty reference")
        if self.on_missing == "raise":
            extract_answer(text)
        total, breakdown = 0.0, {}
        for s, w in zip(self.stages, self.weights()):
            sc = float(s.fn(text, expected_call, ref))
            if not (math.isfinite(sc) and 0 <= sc <= 1):
                raise ValueError(f"stage {s.name!r} returned {sc!r}; stage scores must be finite and in [0, 1]")
            breakdown[s.name] = sc
            total += w * sc
            if sc < s.gate:
                break
        return total, breakdown

    def __call__(self, texts, refs: Optional[Sequence[str]] = None, expected_calls=None) -> torch.Tensor:
        """``reward(texts, refs, expected_calls)`` or ``reward(batch)`` with samples ``(text, ref[, call])``."""
        return _batch(self.score, texts, refs, expected_calls)


class BinaryReward:
    """Baseline: 1 when the extracted answer equals the reference exactly, else 0."""

    def __init__(self, on_missing: str = "zero"):
        if on_missing not in ("zero", "raise"):
            raise ValueError(f"on_missing must be 'zero' or 'raise', got {on_missing!r}")
        self.on_missing = on_missing
        self.progress = 0.0

    def score(self, text: str, ref: str, expected_call=None) -> Tuple[float, Dict[str, float]]:
        _check_text("text", text)
        _check_text("ref", ref)
        if not ref.strip():
            raise ValueError("reference answer is empty; every sample needs a non-empty reference")
        try:
            ans = extract_answer(text)
        except ValueError:
            if self.on_missing == "raise":
                raise
            return 0.0, {"em": 0.0}
        em = float(ans.split() == ref.split())
        return em, {"em": em}

    def __call__(self, texts, refs: Optional[Sequence[str]] = None, expected_calls=None) -> torch.Tensor:
        """``reward(texts, refs, expected_calls)`` or ``reward(batch)`` with samples ``(text, ref[, call])``."""
        return _batch(self.score, texts, refs, expected_calls)


def _unpack(batch):
    """A single-argument batch (the rewards contract): samples ``(text, ref)``, ``(text, ref, call)`` or
    dicts with keys ``text``, ``ref`` and optionally ``call``."""
    if isinstance(batch, str) or not isinstance(batch, (list, tuple)):
        raise TypeError(f"a reward batch must be a list of (text, ref[, call]) samples, got {type(batch).__name__}")
    texts, refs, calls = [], [], []
    for s in batch:
        if isinstance(s, dict):
            if "text" not in s or "ref" not in s:
                raise ValueError(f"a sample dict needs keys 'text' and 'ref', got {sorted(s)}")
            s = (s["text"], s["ref"], s.get("call"))
        if not isinstance(s, (list, tuple)) or len(s) not in (2, 3):
            raise TypeError(f"a sample must be (text, ref) or (text, ref, call), got {s!r}")
        texts.append(s[0])
        refs.append(s[1])
        calls.append(s[2] if len(s) == 3 else None)
    return texts, refs, calls


def _batch(score, texts, refs, expected_calls) -> torch.Tensor:
    if refs is None:
        if expected_calls is not None:
            raise TypeError("expected_calls given without refs")
        texts, refs, expected_calls = _unpack(texts)
    if isinstance(texts, str) or isinstance(refs, str):
        raise TypeError("texts and refs must be sequences of strings, not a single string")
    texts, refs = list(texts), list(refs)
    if not texts:
        raise ValueError("empty batch: expected at least one model output")
    if len(texts) != len(refs):
        raise ValueError(f"{len(texts)} outputs but {len(refs)} references")
    calls = list(expected_calls) if expected_calls is not None else [None] * len(texts)
    if len(calls) != len(texts):
        raise ValueError(f"{len(texts)} outputs but {len(calls)} expected calls")
    return torch.tensor([score(t, r, c)[0] for t, r, c in zip(texts, refs, calls)], dtype=torch.float32)


def prs(**kw) -> ProgressiveRewardShaper:
    """Factory registered as reward ``prs``."""
    return ProgressiveRewardShaper(**kw)


def binary(**kw) -> BinaryReward:
    """Factory registered as reward ``binary``."""
    return BinaryReward(**kw)
