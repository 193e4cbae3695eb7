"""Entry-point discovery and the lazy component registry.

One scan of the ``gradkit`` entry-point group per process.  Each entry point is
loaded in isolation: a plugin that fails to import, has a hook implementation that
does not match its spec, raises inside a register hook, declares an incompatible
``PLUGIN_API_VERSION`` or registers a name twice is recorded with its error and
contributes nothing; every other plugin keeps working.  ``GRADKIT_STRICT=1`` turns
any such failure into a :class:`~gradkit_core.errors.PluginLoadError`.

Nothing named by a component's target is imported here.
"""

from __future__ import annotations

import builtins
import fnmatch
import os
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import pluggy

from . import hookspecs
from .errors import (
    AmbiguousNameError,
    PluginLoadError,
    RegistrationError,
    UnknownKindError,
    UnknownNameError,
)
from .spec import NAME_RE, TARGET_RE, PluginRecord, Spec

#: version of the plugin API this core implements (a plugin module declares the
#: version it was written for as a module-level ``PLUGIN_API_VERSION``)
PLUGIN_API_VERSION = 1
ENTRY_POINT_GROUP = "gradkit"
STRICT_ENV = "GRADKIT_STRICT"
USER_PLUGIN = "user"

_META_KEYS = {"summary", "paper", "tags", "capabilities", "defaults"}


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


def strict_enabled() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _check_kind(kind: Optional[str]) -> None:
    if kind is not None and kind not in hookspecs.KIND_HOOKS:
        import difflib

        close = difflib.get_close_matches(kind, hookspecs.KIND_HOOKS, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownKindError(f"unknown kind {kind!r}{hint} (kinds: {', '.join(hookspecs.KIND_HOOKS)})")


def make_spec(kind: str, plugin: str, name: Any, target: Any, metadata: Dict[str, Any]) -> Spec:
    """Validate one ``register`` call and build its frozen :class:`Spec`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RegistrationError(
            f"plugin {plugin!r} registered {kind} name {name!r}: a name is letters, digits "
            "and '-', '+', '.', '_', '/' (methods lower-case like 'cf-cam'; env ids like 'gradkit/AntOmni-v0')"
        )
    if isinstance(target, str):
        if not TARGET_RE.match(target):
            raise RegistrationError(
                f"plugin {plugin!r} registered {kind} {name!r} with target {target!r}: expected "
                "'package.module:attribute'"
            )
    elif not callable(target):
        raise RegistrationError(
            f"plugin {plugin!r} registered {kind} {name!r} with target of type {type(target).__name__}: "
            "expected a 'module:attribute' string or a callable"
        )
    unknown = set(metadata) - _META_KEYS
    if unknown:
        raise RegistrationError(
            f"plugin {plugin!r} registered {kind} {name!r} with unknown metadata {sorted(unknown)}; "
            f"allowed: {sorted(_META_KEYS)}"
        )
    try:
        return Spec(name=name, kind=kind, target=target, plugin=plugin, **metadata)
    except (TypeError, ValueError) as exc:
        raise RegistrationError(f"plugin {plugin!r} registered {kind} {name!r}: {exc}") from exc


class Registry:
    """All components of all plugins, discovered once and then queried.

    ``entry_points`` may be given (objects with ``name``, ``value``, ``load()`` and
    optionally ``dist``) to build a registry without scanning the environment.
    """

    def __init__(self, entry_points: Optional[Iterable[Any]] = None, strict: Optional[bool] = None):
        self._given_eps = None if entry_points is None else builtins.list(entry_points)
        self._strict = strict
        import threading

        self._lock = threading.RLock()
        self._discovered = False
        self._specs: Dict[Tuple[str, str], List[Spec]] = {}
        self._plugins: Dict[str, PluginRecord] = {}
        self._pm: Optional[pluggy.PluginManager] = None

    # ------------------------------------------------------------------ discovery
    @property
    def strict(self) -> bool:
        return strict_enabled() if self._strict is None else self._strict

    def _entry_points(self) -> List[Any]:
        if self._given_eps is not None:
            return self._given_eps
        from importlib.metadata import entry_points

        return builtins.list(entry_points(group=ENTRY_POINT_GROUP))

    def ensure(self) -> "Registry":
        if not self._discovered:
            with self._lock:
                if not self._discovered:
                    self._discover()
                    self._discovered = True
        return self

    def _discover(self) -> None:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        self._pm = pm
        seen: Dict[str, Any] = {}
        for ep in sorted(self._entry_points(), key=lambda e: e.name):
            if ep.name in seen:
                # two distributions use the same entry-point name: the second is refused
                dist = _dist_name(ep)
                self._plugins[f"{ep.name}@{dist}"] = PluginRecord(
                    name=ep.name,
                    version=_dist_version(ep),
                    distribution=dist,
                    module=getattr(ep, "value", ""),
                    status="failed",
                    error=f"entry-point name {ep.name!r} is already used by distribution "
                    f"{_dist_name(seen[ep.name])!r}",
                )
                continue
            seen[ep.name] = ep
            self._load_one(ep)
        self._mark_conflicts()
        if self.strict:
            bad = [p for p in self._plugins.values() if p.status in ("failed", "incompatible")]
            if bad:
                lines = "; ".join(f"{p.name}: {p.status}: {p.error}" for p in bad)
                raise PluginLoadError(f"{STRICT_ENV} is set and {len(bad)} plugin(s) did not load: {lines}")

    def _load_one(self, ep: Any) -> None:
        name = ep.name
        record = dict(
            name=name,
            version=_dist_version(ep),
            distribution=_dist_name(ep),
            module=getattr(ep, "value", ""),
        )
        try:
            module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - a plugin must never take the process down
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._plugins[name] = PluginRecord(status="failed", error=f"import failed: {_one_line(exc)}", **record)
            return
        api = getattr(module, "PLUGIN_API_VERSION", PLUGIN_API_VERSION)
        record["api_version"] = api if isinstance(api, int) else None
        if not isinstance(api, int) or api != PLUGIN_API_VERSION:
            if isinstance(api, int) and api > PLUGIN_API_VERSION:
                why = (
                    f"written for gradkit plugin API {api}, this gradkit-core supports {PLUGIN_API_VERSION}: "
                    "upgrade gradkit-core (pip install -U gradkit-core)"
                )
            else:
                dist = record["distribution"] or name
                why = (
                    f"written for gradkit plugin API {api!r}, this gradkit-core supports {PLUGIN_API_VERSION}: "
                    f"upgrade the plugin (pip install -U {dist})"
                )
            self._plugins[name] = PluginRecord(status="incompatible", error=why, **record)
            return
        pm = self._pm
        assert pm is not None
        try:
            pm.register(module, name=name)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._plugins[name] = PluginRecord(
                status="failed", error=f"invalid hook implementation: {_one_line(exc)}", **record
            )
            return
        staged: List[Spec] = []
        try:
            impls = [
                (hook_name, impl)
                for hook_name, caller in pm.hook.__dict__.items()
                if isinstance(caller, pluggy.HookCaller)
                for impl in caller.get_hookimpls()
                if impl.plugin_name == name
            ]
            unknown = [h for h, _ in impls if h not in hookspecs.KIND_HOOKS.values()]
            if unknown:
                raise RegistrationError(
                    f"unknown hook(s) {unknown}; gradkit hooks are {', '.join(hookspecs.KIND_HOOKS.values())}"
                )
            hook_to_kind = {v: k for k, v in hookspecs.KIND_HOOKS.items()}
            for hook_name, impl in impls:
                kind = hook_to_kind[hook_name]
                impl.function(register=self._stager(kind, name, staged))
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            pm.unregister(name=name)
            where = "registration failed" if isinstance(exc, RegistrationError) else "register hook raised"
            self._plugins[name] = PluginRecord(status="failed", error=f"{where}: {_one_line(exc)}", **record)
            return
        for spec in staged:
            self._specs.setdefault((spec.kind, spec.name), []).append(spec)
        self._plugins[name] = PluginRecord(
            status="ok", components=tuple(f"{s.kind}:{s.name}" for s in staged), **record
        )

    def _stager(self, kind: str, plugin: str, staged: List[Spec]) -> Callable[..., None]:
        def register(name: str, target: Any, **metadata: Any) -> None:
            spec = make_spec(kind, plugin, name, target, metadata)
            if any(s.kind == kind and s.name == name for s in staged):
                raise RegistrationError(f"plugin {plugin!r} registers {kind} {name!r} twice")
            staged.append(spec)

        register.__doc__ = f"Register a component of kind {kind!r} for plugin {plugin!r}."
        return register

    def _mark_conflicts(self) -> None:
        for (kind, name), specs in self._specs.items():
            plugins = sorted({s.plugin for s in specs})
            if len(plugins) < 2:
                continue
            for p in plugins:
                rec = self._plugins.get(p)
                if rec is None:
                    continue
                others = [o for o in plugins if o != p]
                msg = (
                    f"{kind} {name!r} is also registered by {', '.join(others)}; "
                    f"ask for '{p}/{name}' to pick this one"
                )
                err = f"{rec.error}; {msg}" if rec.error else msg
                self._plugins[p] = _evolve(rec, status="conflict", error=err)

    # ------------------------------------------------------------------ user registration
    def register_user(self, name: str, target: Any, kind: str, **metadata: Any) -> Spec:
        self.ensure()
        if kind is None:
            raise RegistrationError("register() needs kind=..., one of: " + ", ".join(hookspecs.KIND_HOOKS))
        _check_kind(kind)
        spec = make_spec(kind, USER_PLUGIN, name, target, metadata)
        with self._lock:
            key = (kind, name)
            # re-running a notebook cell replaces the user's own earlier registration
            kept = [s for s in self._specs.get(key, []) if s.plugin != USER_PLUGIN]
            kept.append(spec)
            self._specs[key] = kept
            rec = self._plugins.get(USER_PLUGIN) or PluginRecord(name=USER_PLUGIN, version="", status="ok")
            comps = tuple(c for c in rec.components if c != f"{kind}:{name}") + (f"{kind}:{name}",)
            self._plugins[USER_PLUGIN] = _evolve(rec, components=comps)
            if len(kept) > 1:
                self._mark_conflicts()
        return spec

    def unregister_user(self, name: str, kind: str) -> None:
        with self._lock:
            key = (kind, name)
            self._specs[key] = [s for s in self._specs.get(key, []) if s.plugin != USER_PLUGIN]
            if not self._specs[key]:
                del self._specs[key]

    # ------------------------------------------------------------------ queries
    def list(self, kind: Optional[str] = None, pattern: str = "*", plugin: Optional[str] = None) -> List[Spec]:
        self.ensure()
        _check_kind(kind)
        pats = [pattern] if isinstance(pattern, str) else builtins.list(pattern)
        out = [
            s
            for specs in self._specs.values()
            for s in specs
            if (kind is None or s.kind == kind)
            and (plugin is None or s.plugin == plugin)
            and any(fnmatch.fnmatch(s.name.lower(), p.lower()) for p in pats)
        ]
        kind_order = {k: i for i, k in enumerate(hookspecs.KIND_HOOKS)}
        return sorted(out, key=lambda s: (kind_order[s.kind], _natural_key(s.name), s.plugin))

    def kinds(self) -> List[str]:
        return builtins.list(hookspecs.KIND_HOOKS)

    def plugins(self) -> List[PluginRecord]:
        self.ensure()
        return sorted(self._plugins.values(), key=lambda p: _natural_key(p.name))

    def resolve(self, name: str, kind: Optional[str] = None) -> Spec:
        self.ensure()
        _check_kind(kind)
        if not isinstance(name, str) or not name:
            raise UnknownNameError(f"expected a component name as a non-empty string, got {name!r}")
        matches = self._matches(name, kind)
        if not matches and "/" in name:
            plugin, _, bare = name.partition("/")
            matches = [s for s in self._matches(bare, kind) if s.plugin == plugin]
        if not matches:
            raise UnknownNameError(self._unknown_message(name, kind))
        if len(matches) > 1 and kind is None:
            methods = [s for s in matches if s.kind not in hookspecs.EXPERIMENT_KINDS]
            kinds_of_methods = {s.kind for s in methods}
            if len(methods) >= 1 and len(kinds_of_methods) == 1:
                matches = methods
        if len(matches) == 1:
            return matches[0]
        kinds = {s.kind for s in matches}
        if len(kinds) > 1:
            cands = [f"{s.kind}:{s.qualified_name}" for s in matches]
            raise AmbiguousNameError(
                f"{name!r} names components of several kinds: {', '.join(cands)}; pass kind=... "
                f"(CLI: --kind) and, if needed, 'plugin/{name}'",
                cands,
            )
        cands = [s.qualified_name for s in matches]
        raise AmbiguousNameError(
            f"{name!r} ({matches[0].kind}) is registered by several plugins: {', '.join(cands)}; "
            f"ask for one of them by 'plugin/name'",
            cands,
        )

    def _matches(self, name: str, kind: Optional[str]) -> List[Spec]:
        if kind is not None:
            return builtins.list(self._specs.get((kind, name), []))
        return [s for (k, n), specs in self._specs.items() if n == name for s in specs]

    def _unknown_message(self, name: str, kind: Optional[str]) -> str:
        what = f"{kind[:-1] if kind and kind.endswith('s') else (kind or 'component')} {name!r}"
        installed = sorted({n for (k, n) in self._specs if kind is None or k == kind})
        msg = f"no installed {what}"
        hint = ""
        try:
            from . import catalog

            entry = catalog.find_component(name, kind)
        except Exception:  # noqa: BLE001 - a broken catalog must not hide the real error
            entry = None
        if entry is not None:
            status = self._plugins.get(entry.name)
            if status is not None and status.status in ("failed", "incompatible"):
                hint = f"; plugin {entry.name!r} is installed but {status.status}: {status.error}"
            else:
                hint = f"; it is provided by {entry.distribution}: run `gradkit install {entry.name}` " \
                       f"(or pip install {entry.distribution})"
        else:
            import difflib

            close = difflib.get_close_matches(name, installed, n=5, cutoff=0.5)
            if not close:
                close = [n for n in installed if name.lower() in n.lower()][:5]
            if close:
                hint = f"; close matches: {', '.join(close)}"
            elif installed:
                hint = f"; installed {kind or 'components'}: {', '.join(installed[:20])}" + (
                    " …" if len(installed) > 20 else ""
                )
            else:
                hint = "; nothing of that kind is installed (see `gradkit list --available`)"
        return msg + hint

    def get(self, name: str, kind: Optional[str] = None) -> Any:
        return self.resolve(name, kind).load()

    def create(self, name: str, *args: Any, kind: Optional[str] = None, **kwargs: Any) -> Any:
        spec = self.resolve(name, kind)
        factory = spec.load()
        merged = dict(spec.defaults)
        merged.update(kwargs)
        return factory(*args, **merged)


def _dist_info_parts(ep: Any) -> Optional[Tuple[str, str]]:
    """(name, version) from an installed distribution's ``NAME-VERSION.dist-info`` folder name.

    Parsing the folder name avoids reading and email-parsing every plugin's METADATA
    file, which would make a cold ``gradkit list`` several times slower than the
    entry-point scan itself.
    """
    path = getattr(getattr(ep, "dist", None), "_path", None)
    name = getattr(path, "name", "")
    if name.endswith(".dist-info") and name.count("-") == 1:
        dist, version = name[: -len(".dist-info")].split("-")
        return dist.replace("_", "-"), version
    return None


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ""
    parts = _dist_info_parts(ep)
    if parts is not None:
        return parts[0]
    try:
        return dist.metadata["Name"] or ""
    except Exception:  # noqa: BLE001
        return getattr(dist, "name", "") or ""


def _dist_version(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ""
    parts = _dist_info_parts(ep)
    if parts is not None:
        return parts[1]
    try:
        return dist.version
    except Exception:  # noqa: BLE001
        return ""


def _evolve(rec: PluginRecord, **changes: Any) -> PluginRecord:
    import attrs

    return attrs.evolve(rec, **changes)
