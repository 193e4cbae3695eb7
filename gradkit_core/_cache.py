"""A cache of discovery results, so a cold ``gradkit list`` imports no plugin module (and not pluggy).

The cache is keyed on everything that can change what discovery finds, and is never shown stale:

* the interpreter, ``sys.path`` and the gradkit-core files that define registration;
* every entry point of the ``gradkit`` group: its name, value and distribution folder (with that
  folder's modification time and size, which change on every install, upgrade or removal);
* the source files of each entry-point module: its file, or every ``*.py`` directly in its
  package folder (an editable plugin whose ``__init__.py`` or hook module is edited is loaded again).

A result is stored only when every plugin loaded (no ``failed`` / ``incompatible`` plugin, whose
reason may be outside these files, e.g. a missing dependency installed later), every target is a
string, and every default is plain data (``marshal`` writes it and reads it back exactly, tuples as
tuples).  The file is written with :mod:`marshal` because that costs no import at all; it lives in
the user's own cache directory and is only ever read back by the interpreter version that wrote it.  ``GRADKIT_NO_CACHE=1`` switches the
cache off; ``GRADKIT_CACHE_DIR`` moves it (default ``$XDG_CACHE_HOME/gradkit`` or ``~/.cache/gradkit``).
"""

from __future__ import annotations

import marshal
import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only (typing is not imported on a cached `gradkit list`)
    from typing import Any, Dict, List, Optional, Tuple

from .spec import PluginRecord, Spec

FORMAT = 2
_CORE_FILES = ("spec.py", "discovery.py", "_kinds.py", "_cache.py", "registry.py")


class Uncacheable(Exception):
    pass


def enabled() -> bool:
    return os.environ.get("GRADKIT_NO_CACHE", "").strip().lower() in ("", "0", "false", "no")


def cache_dir() -> str:
    d = os.environ.get("GRADKIT_CACHE_DIR")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gradkit")


def _stat(path: str) -> List[int]:
    st = os.stat(path)
    return [st.st_mtime_ns, st.st_size]


def _module_files(value: str) -> List[Any]:
    module = value.partition(":")[0].strip()
    if not module or "." in module:
        raise Uncacheable(f"entry point {value!r} is not a top-level module")
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        raise Uncacheable(f"no source file for {module!r}")
    if spec.submodule_search_locations:
        folder = os.path.dirname(spec.origin)
        out = []
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    out.append([entry.name, st.st_mtime_ns, st.st_size])
        return [folder, sorted(out)]
    return [spec.origin, _stat(spec.origin)]


def fingerprint(entry_points: List[Any]) -> str:
    """A string that changes whenever discovery could find something else."""
    here = os.path.dirname(os.path.abspath(__file__))
    parts: List[Any] = [FORMAT, sys.version, sys.executable, list(sys.path)]
    parts.append([[f, *_stat(os.path.join(here, f))] for f in _CORE_FILES])
    for ep in sorted(entry_points, key=lambda e: (e.name, e.value)):
        dist_path = getattr(getattr(ep, "dist", None), "_path", None)
        if dist_path is None:
            raise Uncacheable(f"entry point {ep.name!r} has no distribution folder")
        dist_path = str(dist_path)
        parts.append([ep.name, ep.value, dist_path, _stat(dist_path), _module_files(ep.value)])
    return repr(parts)


def _path() -> str:
    """One file per interpreter and import path (a new fingerprint overwrites it)."""
    import zlib

    key = "\0".join([sys.executable, sys.prefix, *sys.path])
    return os.path.join(cache_dir(), f"discovery-{zlib.crc32(key.encode()):08x}.marshal")


def _spec_to_data(s: Spec) -> Dict[str, Any]:
    if not isinstance(s.target, str):
        raise Uncacheable("a callable target")
    defaults = dict(s.defaults)
    try:
        if marshal.loads(marshal.dumps(defaults)) != defaults:
            raise Uncacheable("defaults do not round-trip")
    except ValueError:  # an object marshal cannot write
        raise Uncacheable("a default that is not plain data") from None
    return {"name": s.name, "kind": s.kind, "target": s.target, "plugin": s.plugin, "summary": s.summary,
            "paper": s.paper.as_dict(), "tags": list(s.tags), "capabilities": list(s.capabilities),
            "defaults": defaults}


def load(fp: str) -> Optional[Tuple[Dict[Tuple[str, str], List[Spec]], Dict[str, PluginRecord]]]:
    """The stored discovery result for fingerprint ``fp``, or None."""
    try:
        with open(_path(), "rb") as fh:
            data = marshal.load(fh)
        if data.get("fingerprint") != fp:
            return None
        specs: Dict[Tuple[str, str], List[Spec]] = {}
        for d in data["specs"]:
            s = Spec(**d)
            specs.setdefault((s.kind, s.name), []).append(s)
        plugins = {p["name"]: PluginRecord(**p) for p in data["plugins"]}
        return specs, plugins
    except Exception:  # noqa: BLE001 - a missing or damaged cache is simply not used
        return None


def store(fp: str, specs: Dict[Tuple[str, str], List[Spec]], plugins: Dict[str, PluginRecord]) -> bool:
    """Write the result if it may be cached; never raises."""
    try:
        if any(p.status not in ("ok", "conflict") for p in plugins.values()):
            return False
        data = {"fingerprint": fp, "specs": [_spec_to_data(s) for group in specs.values() for s in group],
                "plugins": [p.as_dict() for p in plugins.values()]}
        path = _path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            marshal.dump(data, fh)
        os.replace(tmp, path)
        return True
    except Exception:  # noqa: BLE001 - an unwritable cache directory only costs speed
        return False
