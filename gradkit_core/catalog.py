"""The first-party catalog, ``registry.toml``, and where first-party packages are installed from.

Installed entry points are the runtime truth; the catalog lists what *could* be installed: each
first-party plugin / env package with its directory, distribution, the first-party packages it
requires, its components per kind and its paper.  It is read only when asked (``gradkit list
--available``, ``gradkit install``, unknown-name hints), never for a plain list.

The catalog ships inside the ``gradkit_core`` package (``gradkit_core/registry.toml``; in a source
checkout that file links to the top-level ``registry.toml``), so it works from a wheel install.  The
only other place it is taken from is an explicit ``$GRADKIT_CATALOG``: never from a ``registry.toml``
that happens to lie in site-packages or the working directory.

First-party packages are installed from a *source*: a checkout of the gradkit repository (the
directories the catalog names) or a wheelhouse built from it (``python tools/build_wheels.py``).
They are never looked up by name on a package index, where nobody here owns the names.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import attrs

from .errors import CatalogError

CATALOG_ENV = "GRADKIT_CATALOG"
SOURCE_ENV = "GRADKIT_SOURCE"
CORE_DISTRIBUTION = "gradkit-core"


@attrs.frozen
class CatalogEntry:
    name: str
    section: str  # "plugins" or "envs"
    directory: str
    distribution: str
    components: Dict[str, Tuple[str, ...]] = attrs.field(eq=False)
    requires: Tuple[str, ...] = ()
    paper: str = ""
    arxiv: str = ""
    year: Optional[int] = None

    def install_command(self) -> str:
        return f"gradkit install {self.name}"


def catalog_path() -> Optional[Path]:
    """``$GRADKIT_CATALOG`` if set, else the file shipped in the package (None if neither exists)."""
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent / "registry.toml"
    return here if here.is_file() else None


def _toml_load(path: Path) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as fh:
        return tomllib.load(fh)


@lru_cache(maxsize=4)
def _load(path_str: str, mtime_ns: int) -> Tuple[CatalogEntry, ...]:
    path = Path(path_str)
    try:
        data = _toml_load(path)
    except OSError as exc:
        raise CatalogError(f"cannot read the gradkit catalog {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise CatalogError(f"the gradkit catalog {path} is not valid TOML: {exc}") from None
    entries = []
    for section in ("plugins", "envs"):
        for name, table in data.get(section, {}).items():
            missing = {"directory", "distribution", "components"} - set(table)
            if missing:
                raise CatalogError(f"{path}: [{section}.{name}] lacks {sorted(missing)}")
            comps = {k: tuple(v) for k, v in table["components"].items()}
            entries.append(
                CatalogEntry(
                    name=name,
                    section=section,
                    directory=table["directory"],
                    distribution=table["distribution"],
                    components=comps,
                    requires=tuple(table.get("requires", ())),
                    paper=table.get("paper", ""),
                    arxiv=str(table.get("arxiv", "")),
                    year=table.get("year"),
                )
            )
    names = {e.name for e in entries}
    for e in entries:
        unknown = [r for r in e.requires if r not in names]
        if unknown:
            raise CatalogError(f"{path}: [{e.section}.{e.name}] requires {unknown}, which the catalog does not list")
    return tuple(entries)


def entries() -> List[CatalogEntry]:
    """All catalogued plugins and env packages ([] when no catalog is found).

    A ``$GRADKIT_CATALOG`` that names a missing or malformed file is a :class:`CatalogError`.
    """
    path = catalog_path()
    if path is None:
        return []
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise CatalogError(f"the gradkit catalog {path} does not exist ({CATALOG_ENV}={os.environ.get(CATALOG_ENV)!r})"
                           if os.environ.get(CATALOG_ENV) else f"cannot read the gradkit catalog {path}: {exc}") from None
    return list(_load(str(path), mtime))


def find(name: str) -> Optional[CatalogEntry]:
    """The catalog entry of plugin ``name`` (or of distribution ``gradkit-name``)."""
    for e in entries():
        if name in (e.name, e.distribution):
            return e
    return None


def find_component(name: str, kind: Optional[str] = None) -> Optional[CatalogEntry]:
    """The entry providing component ``name`` (of ``kind`` if given)."""
    for e in entries():
        for k, names in e.components.items():
            if (kind is None or k == kind) and name in names:
                return e
    return None


def closure(names: List[str]) -> List[CatalogEntry]:
    """The entries for ``names`` and every first-party package they require, dependencies first."""
    by_name = {e.name: e for e in entries()}
    order: List[CatalogEntry] = []
    seen: Dict[str, bool] = {}

    def visit(n: str, chain: Tuple[str, ...]) -> None:
        if n in chain:
            raise CatalogError(f"circular first-party requirement: {' -> '.join(chain + (n,))}")
        if seen.get(n):
            return
        e = by_name[n]
        for r in e.requires:
            visit(r, chain + (n,))
        seen[n] = True
        order.append(e)

    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise CatalogError(f"not in the catalog: {', '.join(map(repr, unknown))}; catalogued: {', '.join(sorted(by_name))}")
    for n in names:
        visit(n, ())
    return order


# ---------------------------------------------------------------------- sources
def _is_checkout(d: Path) -> bool:
    return (d / "registry.toml").is_file() and (d / "gradkit_core").is_dir() and (d / "pyproject.toml").is_file()


def default_source() -> Optional[Path]:
    """``$GRADKIT_SOURCE``, else the checkout this core was installed from in editable mode (None otherwise)."""
    env = os.environ.get(SOURCE_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent  # editable install: the checkout; wheel: site-packages
    return here if _is_checkout(here) else None


def _normalise(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


def locate(source: Path, distributions: List[str]) -> Dict[str, Path]:
    """Where each first-party distribution is in ``source`` (a checkout's directory or a wheel file).

    Raises :class:`CatalogError` naming what is missing: nothing is ever looked up on an index.
    """
    source = Path(source)
    if not source.is_dir():
        raise CatalogError(f"install source {source} is not a directory (expected a gradkit checkout or a "
                           "wheelhouse made by tools/build_wheels.py)")
    found: Dict[str, Path] = {}
    if _is_checkout(source):
        by_dist = {e.distribution: e for e in entries()}
        for d in distributions:
            if d == CORE_DISTRIBUTION:
                found[d] = source
            elif d in by_dist and (source / by_dist[d].directory / "pyproject.toml").is_file():
                found[d] = source / by_dist[d].directory
    else:
        wheels: Dict[str, List[Path]] = {}
        for w in source.glob("*.whl"):
            wheels.setdefault(_normalise(w.name.split("-")[0]), []).append(w)
        for d in distributions:
            cands = sorted(wheels.get(_normalise(d), []))
            if len(cands) > 1:
                raise CatalogError(f"wheelhouse {source} holds several wheels of {d}: "
                                   f"{', '.join(c.name for c in cands)}; keep one")
            if cands:
                found[d] = cands[0]
    missing = [d for d in distributions if d not in found]
    if missing:
        kind = "checkout" if _is_checkout(source) else "wheelhouse"
        raise CatalogError(f"{kind} {source} does not hold {', '.join(missing)}")
    return found


def constraints_file(source: Path) -> Optional[Path]:
    """The pinned versions that go with a source (``tools/constraints.txt`` or ``constraints.txt`` in a wheelhouse)."""
    for p in (Path(source) / "tools" / "constraints.txt", Path(source) / "constraints.txt"):
        if p.is_file():
            return p
    return None
