"""Synthetic secrets injected into standard-library source (the reproduction's data).

A *secret sample* is a window of real stdlib code with one assignment line such as
``API_KEY = "AKIA..."`` inserted at a line boundary, ``length`` bytes long.  Its
secret mask comes from :func:`gradkit_codeeraser.spans.secret_spans` (the real
detection pipeline, not from the generator), so the experiment also exercises
detection.  Everything is generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

import random
import string
from typing import Dict, List, Tuple

import torch

from .spans import secret_spans, spans_to_token_mask

KINDS = ("aws_key", "email", "ipv4", "hex")
_NAMES = {
    "aws_key": ("AWS_KEY", "key_id", "ACCESS"),
    "email": ("ADMIN", "contact", "owner"),
    "ipv4": ("DB_HOST", "HOST", "server"),
    "hex": ("TOKEN", "SECRET", "auth"),
}


def make_secret(kind: str, rng: random.Random) -> str:
    """One fresh synthetic secret of ``kind`` (``aws_key``, ``email``, ``ipv4``, ``hex``)."""
    if kind == "aws_key":
        return "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    if kind == "email":
        user = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 8)))
        return f"{user}@corp.example"
    if kind == "ipv4":
        return ".".join(str(rng.randint(11, 254)) for _ in range(4))
    if kind == "hex":
        return "".join(rng.choice("0123456789abcdef") for _ in range(32))
    raise ValueError(f"unknown secret kind {kind!r}; expected one of {KINDS}")


def secret_line(kind: str, secret: str, rng: random.Random) -> str:
    return f'{rng.choice(_NAMES[kind])} = "{secret}"\n'


def _windows(text: str, length: int, count: int, rng: random.Random, used: set) -> List[str]:
    """Distinct windows of ``text`` starting at line starts (byte == char: latin-1 text)."""
    starts = [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 + length < len(text)]
    rng.shuffle(starts)
    out = []
    for s in starts:
        if len(out) == count:
            break
        if any(abs(s - u) < length for u in used):
            continue
        used.add(s)
        out.append(text[s : s + length])
    if len(out) < count:
        raise ValueError(f"corpus too small for {count} windows of {length} bytes")
    return out


def secret_samples(source: bytes, count: int, length: int, seed: int, min_prefix: int = 12,
                   used: set | None = None) -> Dict[str, torch.Tensor]:
    """``count`` windows of ``source`` (bytes) with one injected secret each.

    Returns ``input_ids`` (count, length), ``detected_mask`` (from :func:`secret_spans`), ``true_mask``
    (the injected span), ``secret_mask`` (their union) and ``kind`` (index into :data:`KINDS`).
    """
    rng = random.Random(seed)
    text = source.decode("latin-1")
    used = set() if used is None else used
    # windows of length + 1 lines' worth: the secret line goes in at a line start, after a prefix of real code
    wins = _windows(text, 2 * length, count, rng, used)
    ids, sec, det, true, kinds = [], [], [], [], []
    for i, w in enumerate(wins):
        kind = KINDS[i % len(KINDS)]
        secret = make_secret(kind, rng)
        line = secret_line(kind, secret, rng)
        if len(line) + min_prefix + 2 > length:
            raise ValueError(f"length={length} is too short for a {len(line)}-byte secret line after {min_prefix} bytes")
        cuts = [j + 1 for j, c in enumerate(w) if c == "\n" and min_prefix <= j + 1 <= len(w) - length]
        cut = rng.choice(cuts) if cuts else length
        pre = rng.randint(min_prefix, length - len(line) - 2)
        pre = min(pre, cut)
        s = (w[cut - pre : cut] + line + w[cut:])[:length]
        a = pre + line.index('"') + 1
        span = (a, a + len(secret))
        # the text is latin-1 decoded bytes: one character per byte token
        x = torch.tensor(list(s.encode("latin-1")), dtype=torch.long)
        m = spans_to_token_mask([(j, j + 1) for j in range(len(s))], secret_spans(s))
        tm = torch.zeros(length, dtype=torch.bool)
        tm[span[0] : span[1]] = True
        ids.append(x)
        det.append(m)
        sec.append(m | tm)  # the injected secret is always covered; detection may add stdlib's own secrets
        true.append(tm)
        kinds.append(KINDS.index(kind))
    return {"input_ids": torch.stack(ids), "secret_mask": torch.stack(sec), "detected_mask": torch.stack(det),
            "true_mask": torch.stack(true),
            "kind": torch.tensor(kinds)}


def plain_samples(source: bytes, count: int, length: int, seed: int, used: set | None = None) -> torch.Tensor:
    """``count`` distinct windows of ``source`` without secrets (memorized non-sensitive code)."""
    rng = random.Random(seed)
    text = source.decode("latin-1")
    wins = _windows(text, length, count, rng, set() if used is None else used)
    return torch.stack([torch.tensor(list(w.encode("latin-1")), dtype=torch.long) for w in wins])


def batches(data: Dict[str, torch.Tensor] | torch.Tensor, batch_size: int, keys: Tuple[str, ...] = ("input_ids", "secret_mask")
            ) -> list:
    """Split a dict of tensors (or one tensor) into a list of batches (dicts / tensors).

    A ``secret_mask`` entry becomes the batch's ``forget_mask`` (the unlearners' name for it)."""
    if isinstance(data, torch.Tensor):
        return [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    n = len(data["input_ids"])
    name = {"secret_mask": "forget_mask"}
    return [{name.get(k, k): data[k][i : i + batch_size] for k in keys} for i in range(0, n, batch_size)]
