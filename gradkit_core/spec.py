"""Frozen metadata records: what a plugin registers and what discovery found.

These are small immutable classes written out by hand rather than with attrs: they
are built on every ``gradkit list``, and importing attrs alone costs about as much
as the whole cached listing (see ``tools/bench_list.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._/-]*$")  # gymnasium ids keep their case
TARGET_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Frozen:
    """Immutable record: fields set once in ``__init__``; equality and hash over ``_eq_fields``."""

    __slots__ = ()
    _fields: Tuple[str, ...] = ()
    _eq_fields: Tuple[str, ...] = ()

    def _set(self, **values: Any) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def _key(self) -> tuple:
        return tuple(getattr(self, f) for f in self._eq_fields)

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + self._key())

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"

    def evolve(self, **changes: Any):
        """A copy with some fields replaced."""
        values = {f: getattr(self, f) for f in self._fields}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        values.update(changes)
        return type(self)(**values)


def _freeze_mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise TypeError(f"defaults must be a mapping of keyword arguments, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise TypeError(f"defaults keys must be keyword names (strings), got {k!r}")
    return MappingProxyType(dict(value))


def _tuple_of_str(field: str, value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(f"{field} must be a string or a list of strings, got {type(value).__name__}") from None
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{field} must be strings, got {v!r}")
    return out


class Paper(_Frozen):
    """Bibliographic pointer for a component."""

    __slots__ = ("title", "arxiv", "year")
    _fields = _eq_fields = ("title", "arxiv", "year")

    def __init__(self, title: str = "", arxiv: str = "", year: Optional[int] = None):
        if year is not None and (not isinstance(year, int) or isinstance(year, bool)):
            raise TypeError(f"paper year must be an int, got {year!r}")
        self._set(title=str(title), arxiv=str(arxiv), year=year)

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
            return cls(title=str(value.get("title", "")), arxiv=str(value.get("arxiv", "")), year=value.get("year"))
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


class Spec(_Frozen):
    """One registered component.  ``target`` is imported only by :meth:`load`."""

    __slots__ = ("name", "kind", "target", "plugin", "summary", "paper", "tags", "capabilities", "defaults")
    _fields = __slots__
    _eq_fields = ("name", "kind", "plugin", "summary", "paper", "tags", "capabilities")

    def __init__(self, name: str, kind: str, target: Union[str, Callable[..., Any]], plugin: str,
                 summary: str = "", paper: Any = None, tags: Any = (), capabilities: Any = (),
                 defaults: Any = None):
        if not isinstance(summary, str):
            raise TypeError(f"summary must be a string, got {type(summary).__name__}")
        self._set(name=name, kind=kind, target=target, plugin=plugin, summary=summary,
                  paper=Paper.coerce(paper), tags=_tuple_of_str("tags", tags),
                  capabilities=_tuple_of_str("capabilities", capabilities), defaults=_freeze_mapping(defaults))

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

    @property
    def what(self) -> str:
        """``"optimizer 'lion'"``: how errors name this component."""
        return f"{self.kind[:-1] if self.kind.endswith('s') else self.kind} {self.name!r}"

    def load(self) -> Any:
        """Import and return the target object (a :class:`~gradkit_core.errors.ComponentImportError` if it cannot)."""
        if not isinstance(self.target, str):
            return self.target
        import importlib

        from .errors import ComponentImportError

        module_name, _, attr = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise ComponentImportError(
                f"{self.what} from plugin '{self.plugin}': cannot import module '{module_name}': "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise ComponentImportError(
                    f"{self.what} from plugin '{self.plugin}': module '{module_name}' has no attribute "
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


class PluginRecord(_Frozen):
    """What discovery found for one entry point (or the built-in ``user`` plugin).

    ``status``: ``ok``, ``conflict`` (loaded, but a name it uses is used by another plugin too),
    ``failed`` or ``incompatible`` (contributes nothing).  ``warnings`` are problems that do not
    stop it from working (imports torch at listing time, prints at import, registers nothing, no
    ``PLUGIN_API_VERSION``); ``gradkit doctor`` reports them.
    """

    __slots__ = ("name", "version", "distribution", "module", "status", "error", "api_version", "components",
                 "warnings")
    _fields = _eq_fields = __slots__

    def __init__(self, name: str, version: str = "", distribution: str = "", module: str = "", status: str = "ok",
                 error: str = "", api_version: Optional[int] = None, components: Any = (), warnings: Any = ()):
        self._set(name=name, version=version, distribution=distribution, module=module, status=status, error=error,
                  api_version=api_version, components=tuple(components), warnings=tuple(warnings))

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
            "warnings": list(self.warnings),
        }
