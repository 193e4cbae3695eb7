"""The first-party catalog, ``registry.toml``.

Installed entry points are the runtime truth; the catalog lists what *could* be
installed: each first-party plugin / env package with its directory, distribution,
components per kind and paper.  It is read only when asked (``gradkit list
--available``, ``gradkit install``, unknown-name hints), never for a plain list.

The file is found through ``$GRADKIT_CATALOG`` or next to the ``gradkit_core``
package (a source checkout / editable install).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import attrs

CATALOG_ENV = "GRADKIT_CATALOG"


@attrs.frozen
class CatalogEntry:
    name: str
    section: str  # "plugins" or "envs"
    directory: str
    distribution: str
    components: Dict[str, Tuple[str, ...]] = attrs.field(eq=False)
    paper: str = ""
    arxiv: str = ""
    year: Optional[int] = None
    root: str = ""

    @property
    def kinds(self) -> List[str]:
        return list(self.components)

    @property
    def path(self) -> Path:
        return Path(self.root) / self.directory

    def install_command(self) -> str:
        return f"gradkit install {self.name}"


def catalog_path() -> Optional[Path]:
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent / "registry.toml"
    return here if here.is_file() else None


def _toml_load(path: Path) -> dict:
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as fh:
        return tomllib.load(fh)


@lru_cache(maxsize=4)
def _load(path_str: str) -> Tuple[CatalogEntry, ...]:
    path = Path(path_str)
    data = _toml_load(path)
    entries = []
    for section in ("plugins", "envs"):
        for name, table in data.get(section, {}).items():
            missing = {"directory", "distribution", "components"} - set(table)
            if missing:
                raise ValueError(f"{path}: [{section}.{name}] lacks {sorted(missing)}")
            comps = {k: tuple(v) for k, v in table["components"].items()}
            entries.append(
                CatalogEntry(
                    name=name,
                    section=section,
                    directory=table["directory"],
                    distribution=table["distribution"],
                    components=comps,
                    paper=table.get("paper", ""),
                    arxiv=str(table.get("arxiv", "")),
                    year=table.get("year"),
                    root=str(path.parent),
                )
            )
    return tuple(entries)


def entries() -> List[CatalogEntry]:
    """All catalogued plugins and env packages ([] when no catalog is found)."""
    path = catalog_path()
    if path is None:
        return []
    return list(_load(str(path)))


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
