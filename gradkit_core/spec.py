"""Frozen metadata records: what a plugin registers and what discovery found."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import attrs

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._/-]*$")  # gymnasium ids keep their case
TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _freeze_mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise TypeError(f"defaults must be a mapping of keyword arguments, got {type(value).__name__}")
    return MappingProxyType(dict(value))


def _tuple_of_str(field: str):
    def convert(value: Any) -> Tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        out = tuple(value)
        for v in out:
            if not isinstance(v, str):
                raise TypeError(f"{field} must be strings, got {v!r}")
        return out

    return convert


@attrs.frozen
class Paper:
    """Bibliographic pointer for a component."""

    title: str = ""
    arxiv: str = ""
    year: Optional[int] = None

    @classmethod
    def coerce(cls, value: Any) -> "Paper":
        if value is None:
            return cls()
        if isinstance(value, Paper):
            return value
        if isinstance(value, str):
            return cls(title=value)
        if isinstance(value, Mapping):
            unknown = set(value) - {"title", "arxiv", "year"}
            if unknown:
                raise ValueError(f"paper has unknown keys {sorted(unknown)}; expected title, arxiv, year")
            year = value.get("year")
            if year is not None and not isinstance(year, int):
                raise TypeError(f"paper year must be an int, got {year!r}")
            return cls(title=str(value.get("title", "")), arxiv=str(value.get("arxiv", "")), year=year)
        raise TypeError(f"paper must be a dict with title/arxiv/year, got {type(value).__name__}")

    def cite(self) -> str:
        parts = [self.title or "?"]
        if self.arxiv:
            parts.append(f"arXiv:{self.arxiv}")
        if self.year:
            parts.append(str(self.year))
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {"title": self.title, "arxiv": self.arxiv, "year": self.year}


@attrs.frozen
class Spec:
    """One registered component.  ``target`` is imported only by :meth:`load`."""

    name: str
    kind: str
    target: Union[str, Callable[..., Any]] = attrs.field(eq=False)
    plugin: str
    summary: str = ""
    paper: Paper = attrs.field(factory=Paper, converter=Paper.coerce)
    tags: Tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str("tags"))
    capabilities: Tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str("capabilities"))
    defaults: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping, eq=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}/{self.name}"

    @property
    def target_path(self) -> str:
        if isinstance(self.target, str):
            return self.target
        mod = getattr(self.target, "__module__", "?")
        qual = getattr(self.target, "__qualname__", getattr(self.target, "__name__", repr(self.target)))
        return f"{mod}:{qual}"

    def load(self) -> Any:
        """Import and return the target object."""
        if not isinstance(self.target, str):
            return self.target
        import importlib

        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ImportError(
                f"{self.kind[:-1] if self.kind.endswith('s') else self.kind} '{self.name}' from plugin "
                f"'{self.plugin}': cannot import module '{module_name}': {type(exc).__name__}: {exc}"
            ) from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise ImportError(
                    f"'{self.name}' from plugin '{self.plugin}': module '{module_name}' has no attribute "
                    f"'{attr}' (target {self.target!r})"
                ) from exc
        return obj

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "qualified_name": self.qualified_name,
            "target": self.target_path,
            "summary": self.summary,
            "paper": self.paper.as_dict(),
            "tags": list(self.tags),
            "capabilities": list(self.capabilities),
            "defaults": {k: _jsonable(v) for k, v in self.defaults.items()},
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


@attrs.frozen
class PluginRecord:
    """What discovery found for one entry point (or the built-in ``user`` plugin)."""

    name: str
    version: str = ""
    distribution: str = ""
    module: str = ""
    status: str = "ok"  # ok | conflict | failed | incompatible
    error: str = ""
    api_version: Optional[int] = None
    components: Tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "api_version": self.api_version,
            "components": list(self.components),
        }
