"""Safe checkpoint reading for agents (dsact, dcgme, and any plugin that saves with ``torch.save``).

Nothing named inside a checkpoint is ever imported: files are read with ``torch.load(weights_only=True)``,
and a stored gymnasium id is used only if it is already registered and has no ``module:`` prefix (for
``module:Name-v0`` gymnasium would import ``module``). Every problem is a ValueError naming the file.
Imports torch and gymnasium only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence


def read_checkpoint(path: Any, fmt: str, required: Sequence[str], owner: str) -> Dict[str, Any]:
    """The dict saved at ``path``, checked: a non-empty readable file, only plain tensors and containers
    (``weights_only``), ``format == fmt`` and every key in ``required``. ``owner`` names the plugin in errors."""
    import pickle
    import zipfile

    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if p.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty (0 bytes)")
    try:
        state = torch.load(p, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:  # weights_only refused an object: never load it
        raise ValueError(f"{path}: not a {owner} checkpoint (it holds objects a safe loader refuses: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    except (OSError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{path}: the checkpoint cannot be read; the file is truncated or corrupt "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise ValueError(f"{path}: not a {owner} checkpoint (expected format {fmt!r})")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"{path}: the checkpoint lacks the key(s) {missing}")
    return state


def verified_env_id(env_id: Any, path: Any) -> str:
    """A gymnasium id read from a checkpoint, if it is safe to ``gymnasium.make``: a non-empty string with no
    ``module:`` prefix that is already registered. Else a ValueError telling to pass ``env=...``."""
    import gymnasium

    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"{path}: the checkpoint's env id {env_id!r} is not a gymnasium id; pass env=... to load()")
    if ":" in env_id:
        raise ValueError(f"{path}: the checkpoint's env id {env_id!r} names a module to import; such ids are never "
                         "loaded from a file. Pass env=... to load() (an env object or an id you trust)")
    if env_id not in gymnasium.registry:
        raise ValueError(f"{path}: the checkpoint's env id {env_id!r} is not a registered gymnasium id (install or "
                         "import the package that registers it, or pass env=... to load())")
    return env_id
