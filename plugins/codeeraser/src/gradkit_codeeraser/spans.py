"""Secret span detection in source text and its mapping to token masks.

``secret_spans(text)`` finds character spans of secrets (emails, IPv4 addresses,
AWS-style access keys, keyword-assigned API keys / passwords, long hex tokens and
PEM private-key blocks and whatever ``detect-secrets``' pattern plugins report, each secret
masked whole).  ``spans_to_token_mask`` turns
spans into a boolean mask over tokens given each token's character offsets, so it
works for the byte-level tiny GPT (:func:`encode_bytes`) and for any Hugging Face
tokenizer that returns an offsets mapping (:func:`encode_with_secret_mask`).  A
token that overlaps a span by even one character is marked, so a secret split
across BPE merges is covered completely.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

Span = Tuple[int, int]

#: regex detectors; ``api_key`` marks only the assigned value (group 1), the others their whole match
PATTERNS = {
    "email": re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    "ipv4": re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)"),
    "aws_key": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "api_key": re.compile(
        r"(?i)\b\w*(?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key|auth)\w*\s*[:=]\s*[rbu]?['\"]([^'\"\s]{8,})['\"]"
    ),
    "hex": re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])"),
    "private_key": re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY( BLOCK)?-----.*?(?:-----END[A-Z ]*PRIVATE KEY( BLOCK)?-----|\Z)",
                              re.DOTALL),
}

DEFAULT_DETECTORS = ("email", "ipv4", "aws_key", "api_key", "hex", "private_key", "detect_secrets")

#: characters of a token: a secret reported in part (detect-secrets' GitHub / GitLab detectors report
#: only the prefix group, e.g. ``ghp``) is extended over these to the whole token
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.+/=")

_VERSION_LINE = re.compile(r"(?i)version|release|__version__|\bver\b")


def _line_before(text: str, i: int) -> str:
    return text[text.rfind("\n", 0, i) + 1 : i]


def _false_positive(kind: str, text: str, a: int, b: int) -> bool:
    """Known look-alikes that are not secrets (documented in the README).

    * ``ipv4``: a dotted quad on a line that names a version (``__version__ = "1.2.3.4"``);
    * ``hex``: exactly 40 hex digits, the length of a git SHA-1 (a 40-hex value assigned to a
      key/secret/token/password-like name is still found by the ``api_key`` detector).
    """
    if kind == "ipv4":
        return bool(_VERSION_LINE.search(_line_before(text, a)))
    if kind == "hex":
        return b - a == 40
    return False


def extend_to_token(text: str, a: int, b: int) -> Span:
    """Grow ``[a, b)`` to the maximal run of :data:`TOKEN_CHARS` around it."""
    while a > 0 and text[a - 1] in TOKEN_CHARS and text[a - 1] != "=":  # '=' only as trailing padding
        a -= 1
    while b < len(text) and text[b] in TOKEN_CHARS:
        b += 1
    return a, b

# detect-secrets plugins used: every pattern/keyword plugin; the two entropy plugins are left out because in
# line-by-line (ad-hoc) scanning they flag ordinary identifiers such as ``self`` or ``mail``.
_DS_PLUGINS = (
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "CloudantDetector",
    "DiscordBotTokenDetector", "GitHubTokenDetector", "GitLabTokenDetector", "IbmCloudIamDetector",
    "IbmCosHmacDetector", "JwtTokenDetector", "KeywordDetector", "MailchimpDetector", "NpmDetector",
    "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector",
    "SoftlayerDetector", "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
)


def _detect_secrets_spans(text: str) -> List[Span]:
    try:
        from detect_secrets.core.scan import scan_line
        from detect_secrets.settings import transient_settings
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ImportError("detector 'detect_secrets' needs the detect-secrets package: pip install detect-secrets") from exc
    spans: List[Span] = []
    with transient_settings({"plugins_used": [{"name": n} for n in _DS_PLUGINS]}):
        start = 0
        for line in text.splitlines(keepends=True):
            if line.strip():
                for found in scan_line(line.rstrip("\r\n")):
                    value = found.secret_value
                    if not value:
                        continue
                    i = line.find(value)
                    while i >= 0:
                        a, b = extend_to_token(line, i, i + len(value))
                        spans.append((start + a, start + b))
                        i = line.find(value, i + 1)
            start += len(line)
    return spans


def merge_spans(spans: Iterable[Span]) -> List[Span]:
    """Sorted union of half-open spans (overlapping or touching spans merge)."""
    out: List[List[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def secret_spans(text: str, detectors: Sequence[str] = DEFAULT_DETECTORS) -> List[Span]:
    """Character spans ``[(start, end), ...]`` (half-open, merged, sorted) of secrets in ``text``.

    ``detectors`` picks from ``email``, ``ipv4``, ``aws_key``, ``api_key`` (value assigned to a
    key/secret/token/password-like name), ``hex`` (32+ hex digits, not exactly 40: a git SHA-1),
    ``private_key`` (a whole PEM private-key block) and ``detect_secrets`` (its pattern plugins; each
    finding is extended to the whole token around it, so ``ghp_...`` is masked whole, not as ``ghp``).
    """
    if not isinstance(text, str):
        raise TypeError(f"secret_spans expects a str, got {type(text).__name__}")
    if isinstance(detectors, str):
        detectors = (detectors,)
    unknown = [d for d in detectors if d not in PATTERNS and d != "detect_secrets"]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; expected some of {sorted([*PATTERNS, 'detect_secrets'])}")
    spans: List[Span] = []
    for d in detectors:
        if d == "detect_secrets":
            spans.extend(_detect_secrets_spans(text))
            continue
        pat = PATTERNS[d]
        for m in pat.finditer(text):
            a, b = m.span(1) if d == "api_key" else m.span()
            if not _false_positive(d, text, a, b):
                spans.append((a, b))
    return merge_spans(spans)


def spans_to_token_mask(offsets, spans: Sequence[Span]) -> torch.Tensor:
    """Boolean mask over tokens: True where a token's character range overlaps any span.

    ``offsets`` is a sequence of ``(start, end)`` pairs or a tensor ``(T, 2)`` (one text), as
    returned by an HF tokenizer's ``offsets_mapping``.  Tokens with an empty range
    (special tokens, padding: ``(0, 0)``) are never marked.
    """
    off = torch.as_tensor(offsets, dtype=torch.long)
    if off.dim() != 2 or off.shape[-1] != 2:
        raise ValueError(f"offsets must have shape (T, 2), got {tuple(off.shape)}")
    mask = torch.zeros(off.shape[0], dtype=torch.bool)
    if not spans:
        return mask
    sp = torch.as_tensor([tuple(s) for s in spans], dtype=torch.long)
    if sp.dim() != 2 or sp.shape[-1] != 2:
        raise ValueError(f"spans must be (start, end) pairs, got {spans!r}")
    s, e = off[:, 0:1], off[:, 1:2]
    hit = (s < sp[:, 1]) & (sp[:, 0] < e) & (e > s)
    return hit.any(dim=1)


def encode_bytes(text: str) -> Tuple[torch.Tensor, List[Span]]:
    """Byte-level tokenization (UTF-8 bytes, vocab 256) with each byte's character offsets."""
    ids: List[int] = []
    offsets: List[Span] = []
    for i, ch in enumerate(text):
        b = ch.encode("utf-8")
        ids.extend(b)
        offsets.extend([(i, i + 1)] * len(b))
    return torch.tensor(ids, dtype=torch.long), offsets


def byte_secret_mask(text: str, detectors: Sequence[str] = DEFAULT_DETECTORS,
                     spans: Optional[Sequence[Span]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(ids, secret_mask)`` for the byte-level tiny GPT; ``spans`` overrides detection."""
    ids, offsets = encode_bytes(text)
    if spans is None:
        spans = secret_spans(text, detectors)
    if len(ids) == 0:
        return ids, torch.zeros(0, dtype=torch.bool)
    return ids, spans_to_token_mask(offsets, spans)


def encode_with_secret_mask(tokenizer, texts: Sequence[str], detectors: Sequence[str] = DEFAULT_DETECTORS,
                            **tokenizer_kw) -> dict:
    """Tokenize ``texts`` with an HF (fast) tokenizer and add a ``forget_mask`` (B, T) of secret tokens.

    Returns the tokenizer's ``input_ids`` / ``attention_mask`` tensors plus ``forget_mask`` (a
    forget batch for the unlearners as it stands);
    padding and special tokens are never secret.
    """
    if isinstance(texts, str):
        texts = [texts]
    kw = {"padding": True, "return_tensors": "pt", **tokenizer_kw, "return_offsets_mapping": True}
    try:
        enc = tokenizer(list(texts), **kw)
    except NotImplementedError as exc:
        raise TypeError("the tokenizer cannot return offsets; use a 'fast' tokenizer (use_fast=True)") from exc
    offsets = enc.pop("offset_mapping", None)
    if offsets is None:
        raise TypeError("the tokenizer returned no offset_mapping; use a 'fast' tokenizer (use_fast=True)")
    offsets = torch.as_tensor(offsets)
    masks = [spans_to_token_mask(offsets[i], secret_spans(t, detectors)) for i, t in enumerate(texts)]
    out = {k: torch.as_tensor(v) for k, v in dict(enc).items()}
    out["forget_mask"] = torch.stack(masks)
    return out
