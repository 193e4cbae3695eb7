"""Engines: anything with ``engine(prompt, system_prompt=None, **kw) -> str``.

* :class:`ScriptedEngine` -- deterministic rule-based replies, records every call (tests, parity, quick runs).
* :class:`OpenAICompatibleEngine` -- the ``openai`` client against any chat-completions endpoint (a provider, or
  a local server such as llama.cpp / vLLM / :mod:`gradkit_textgrad.server` on 127.0.0.1).
* :class:`TransformersEngine` -- a local ``transformers`` causal LM with a chat template (SmolLM2 via
  ``gradkit_support.llm.load_smollm2``).
* :class:`CachedEngine` -- wraps any engine with a persistent SQLite cache keyed on (system prompt, prompt, kw).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class Engine(Protocol):
    def __call__(self, prompt: str, system_prompt: str | None = None, **kw) -> str: ...


class EngineError(RuntimeError):
    """The engine could not produce a reply (unreachable endpoint, timeout, HTTP error after retries)."""


def _check_prompt(prompt, system_prompt):
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt must be non-empty text")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"system_prompt must be a str or None, got {type(system_prompt).__name__}")


class ScriptedEngine:
    """Rule-based replies: ``rules`` is a sequence of ``(match, reply)``; ``match`` is a regex searched in the
    prompt (``re.S``) or a callable ``(prompt, system_prompt) -> bool``; ``reply`` is a str or a callable
    ``(prompt, system_prompt) -> str``.  The first matching rule answers; with no match ``default`` answers, or a
    ValueError names the prompt.  Every call is appended to ``calls`` as ``(system_prompt, prompt)``."""

    def __init__(self, rules=(), default: str | Callable | None = None):
        self.rules = []
        for rule in rules:
            if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
                raise TypeError(f"each rule is a (match, reply) pair, got {rule!r}")
            match, reply = rule
            if isinstance(match, str):
                match = re.compile(match, re.S)
            if not (isinstance(match, re.Pattern) or callable(match)):
                raise TypeError(f"a rule's match is a regex or a callable, got {match!r}")
            if not (isinstance(reply, str) or callable(reply)):
                raise TypeError(f"a rule's reply is a str or a callable, got {reply!r}")
            self.rules.append((match, reply))
        self.default = default
        self.calls: list[tuple[str | None, str]] = []
        self._lock = threading.Lock()

    def __call__(self, prompt, system_prompt=None, **kw):
        _check_prompt(prompt, system_prompt)
        with self._lock:
            self.calls.append((system_prompt, prompt))
        for match, reply in self.rules:
            hit = match.search(prompt) if isinstance(match, re.Pattern) else match(prompt, system_prompt)
            if hit:
                return reply(prompt, system_prompt) if callable(reply) else reply
        if self.default is None:
            raise ValueError(f"ScriptedEngine: no rule matches the prompt {prompt[:200]!r}")
        return self.default(prompt, system_prompt) if callable(self.default) else self.default


class CachedEngine:
    """Persistent cache around an engine (SQLite file at ``path``); ``hits`` / ``misses`` count lookups."""

    def __init__(self, engine, path):
        if not callable(engine):
            raise TypeError("engine must be callable")
        self.engine = engine
        self.path = os.fspath(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
        self._db.commit()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(prompt, system_prompt, kw):
        return hashlib.sha256(json.dumps([system_prompt, prompt, kw], sort_keys=True, default=str).encode()).hexdigest()

    def __call__(self, prompt, system_prompt=None, **kw):
        _check_prompt(prompt, system_prompt)
        k = self.key(prompt, system_prompt, kw)
        with self._lock:
            row = self._db.execute("SELECT reply FROM cache WHERE key=?", (k,)).fetchone()
        if row is not None:
            self.hits += 1
            return row[0]
        self.misses += 1
        reply = self.engine(prompt, system_prompt=system_prompt, **kw)
        if not isinstance(reply, str):
            raise TypeError(f"the engine must return a str, got {type(reply).__name__}")
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?)", (k, reply))
            self._db.commit()
        return reply

    def close(self):
        self._db.close()


_LOOPBACK = re.compile(r"^https?://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)")


class OpenAICompatibleEngine:
    """Chat completions through the ``openai`` client.

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` and ``api_key`` to ``$OPENAI_API_KEY``; a loopback base URL
    without a key sends the key ``"local"`` (local servers ignore it).  ``timeout`` (seconds, per
    request) and ``max_retries`` (the client's own retries with backoff, on connection errors, timeouts, 408/409/
    429 and 5xx) are passed to the client.  Failures raise :class:`EngineError` naming the endpoint."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 2, temperature: float = 0.0,
                 max_tokens: int | None = 1024, system_prompt: str = "You are a helpful, creative, and smart assistant."):
        import math

        import openai

        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty model name")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if api_key is None:
            if base_url and _LOOPBACK.match(base_url):
                api_key = "local"
            else:
                raise ValueError("no API key: pass api_key= or set OPENAI_API_KEY (only a loopback base_url may "
                                 "go without one)")
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and 0 <= temperature <= 2):
            raise ValueError(f"temperature must be in [0, 2], got {temperature!r}")
        self.model, self.base_url = model, base_url
        self.temperature, self.max_tokens, self.system_prompt = float(temperature), max_tokens, system_prompt
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)

    def __call__(self, prompt, system_prompt=None, **kw):
        import openai

        _check_prompt(prompt, system_prompt)
        messages = [{"role": "system", "content": system_prompt or self.system_prompt},
                    {"role": "user", "content": prompt}]
        args = {"temperature": self.temperature, **kw}
        if self.max_tokens is not None:
            args.setdefault("max_tokens", self.max_tokens)
        where = self.base_url or "the default OpenAI endpoint"
        try:
            resp = self.client.chat.completions.create(model=self.model, messages=messages, **args)
        except openai.APITimeoutError as e:
            raise EngineError(f"request to {where} timed out (after retries): {e}") from e
        except openai.APIConnectionError as e:
            raise EngineError(f"cannot reach {where}: {e}") from e
        except openai.APIStatusError as e:
            raise EngineError(f"{where} answered HTTP {e.status_code}: {e.message}") from e
        if not resp.choices or resp.choices[0].message.content is None:
            raise EngineError(f"{where} returned no message content")
        return resp.choices[0].message.content


class TransformersEngine:
    """A local causal LM with a chat template; greedy by default (``do_sample=False``).  With sampling, each
    call draws from ``torch.Generator`` seeded by ``seed`` and a call counter, so a run is reproducible."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 256, do_sample: bool = False,
                 temperature: float = 0.7, top_p: float = 0.95, seed: int = 0,
                 system_prompt: str = "You are a helpful, creative, and smart assistant."):
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if do_sample and not (0 < temperature <= 5 and 0 < top_p <= 1):
            raise ValueError("sampling needs temperature in (0, 5] and top_p in (0, 1]")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_new_tokens, self.do_sample = max_new_tokens, do_sample
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.system_prompt = system_prompt
        self.n_calls = 0
        self.generated_tokens = 0

    def __call__(self, prompt, system_prompt=None, **kw):
        import torch

        _check_prompt(prompt, system_prompt)
        max_new = kw.pop("max_new_tokens", self.max_new_tokens)
        if kw:
            raise TypeError(f"unsupported generation options {sorted(kw)}")
        msgs = [{"role": "system", "content": system_prompt or self.system_prompt},
                {"role": "user", "content": prompt}]
        enc = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        gen = {"max_new_tokens": max_new, "do_sample": self.do_sample,
               "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}
        if self.do_sample:
            gen.update(temperature=self.temperature, top_p=self.top_p)
            torch.manual_seed(self.seed * 1_000_003 + self.n_calls)
        else:
            gen.update(temperature=None, top_p=None, top_k=None)
        self.n_calls += 1
        with torch.no_grad():
            out = self.model.generate(**enc, **gen)
        new = out[0, enc["input_ids"].shape[1]:]
        self.generated_tokens += int(new.numel())
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()
