"""Loading the ``gradkit`` entry points (the slow path of discovery; pluggy is imported here only).

Each entry point is loaded in isolation: a plugin that fails to import, has a hook implementation
that does not match its spec, raises inside a register hook, declares an incompatible
``PLUGIN_API_VERSION`` or registers a name twice is recorded with its error and contributes
nothing; every other plugin keeps working.  Two distributions that use the same entry-point name
are both loaded under qualified plugin names (``lion@gradkit-lion``, ``lion@other-dist``) and both
marked ``conflict``: nothing replaces anything silently.

:func:`discover` builds its result in fresh containers and returns it whole, so a failure (strict
mode) can never leave a half-filled registry behind.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any, Callable, Dict, Iterable, List, Tuple

from . import _kinds
from .errors import PluginLoadError, RegistrationError
from .spec import NAME_RE, TARGET_RE, PluginRecord, Spec

PLUGIN_API_VERSION = 1
_META_KEYS = {"summary", "paper", "tags", "capabilities", "defaults"}
#: top-level modules that a plugin's entry-point module must not import at listing time
HEAVY_MODULES = frozenset({
    "torch", "numpy", "scipy", "sklearn", "jax", "tensorflow", "gymnasium", "mujoco", "matplotlib", "pandas",
    "transformers", "cvxpy",
})

Specs = Dict[Tuple[str, str], List[Spec]]


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


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


def dist_name(ep: Any) -> str:
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


def dist_version(ep: Any) -> str:
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


def _dist_info_parts(ep: Any):
    """(name, version) from an installed distribution's ``NAME-VERSION.dist-info`` folder name.

    Parsing the folder name avoids reading and email-parsing every plugin's METADATA file.
    """
    path = getattr(getattr(ep, "dist", None), "_path", None)
    name = getattr(path, "name", "")
    if name.endswith(".dist-info") and name.count("-") == 1:
        dist, version = name[: -len(".dist-info")].split("-")
        return dist.replace("_", "-"), version
    return None


class _Loader:
    def __init__(self) -> None:
        import pluggy

        from . import hookspecs

        self.pluggy = pluggy
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.specs: Specs = {}
        self.plugins: Dict[str, PluginRecord] = {}

    def load(self, ep: Any, plugin: str) -> None:
        record = dict(name=plugin, version=dist_version(ep), distribution=dist_name(ep),
                      module=getattr(ep, "value", ""))
        warnings: List[str] = []
        before = set(sys.modules)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - a plugin must never take the process down
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._echo(printed)
            self.plugins[plugin] = PluginRecord(status="failed", error=f"import failed: {one_line(exc)}", **record)
            return
        heavy = sorted({m.partition(".")[0] for m in set(sys.modules) - before} & HEAVY_MODULES)
        if heavy:
            warnings.append(f"its entry-point module imports {', '.join(heavy)} when gradkit lists components "
                            "(keep it light: register 'module:attr' string targets)")
        api = getattr(module, "PLUGIN_API_VERSION", None)
        if api is None:
            warnings.append(f"declares no PLUGIN_API_VERSION (assumed {PLUGIN_API_VERSION})")
            api = PLUGIN_API_VERSION
        record["api_version"] = api if isinstance(api, int) else None
        if not isinstance(api, int) or isinstance(api, bool) or api != PLUGIN_API_VERSION:
            if isinstance(api, int) and api > PLUGIN_API_VERSION:
                why = (f"written for gradkit plugin API {api}, this gradkit-core supports {PLUGIN_API_VERSION}: "
                       "upgrade gradkit-core")
            else:
                why = (f"written for gradkit plugin API {api!r}, this gradkit-core supports {PLUGIN_API_VERSION}: "
                       f"upgrade the plugin ({record['distribution'] or plugin})")
            self._echo(printed)
            self.plugins[plugin] = PluginRecord(status="incompatible", error=why, warnings=warnings, **record)
            return
        pm = self.pm
        try:
            pm.register(module, name=plugin)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._echo(printed)
            self.plugins[plugin] = PluginRecord(
                status="failed", error=f"invalid hook implementation: {one_line(exc)}", warnings=warnings, **record)
            return
        staged: List[Spec] = []
        try:
            impls = [
                (hook_name, impl)
                for hook_name, caller in pm.hook.__dict__.items()
                if isinstance(caller, self.pluggy.HookCaller)
                for impl in caller.get_hookimpls()
                if impl.plugin_name == plugin
            ]
            unknown = [h for h, _ in impls if h not in _kinds.KIND_HOOKS.values()]
            if unknown:
                raise RegistrationError(
                    f"unknown hook(s) {unknown}; gradkit hooks are {', '.join(_kinds.KIND_HOOKS.values())}"
                )
            hook_to_kind = {v: k for k, v in _kinds.KIND_HOOKS.items()}
            with contextlib.redirect_stdout(printed):
                for hook_name, impl in impls:
                    impl.function(register=self._stager(hook_to_kind[hook_name], plugin, staged))
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            pm.unregister(name=plugin)
            self._echo(printed)
            where = "registration failed" if isinstance(exc, RegistrationError) else "register hook raised"
            self.plugins[plugin] = PluginRecord(status="failed", error=f"{where}: {one_line(exc)}",
                                                warnings=warnings, **record)
            return
        if self._echo(printed):
            warnings.append("prints to stdout when loaded (moved to stderr so that --json output stays valid)")
        if not staged:
            warnings.append("registers no component")
        for spec in staged:
            self.specs.setdefault((spec.kind, spec.name), []).append(spec)
        self.plugins[plugin] = PluginRecord(status="ok", components=tuple(f"{s.kind}:{s.name}" for s in staged),
                                            warnings=warnings, **record)

    @staticmethod
    def _echo(printed: io.StringIO) -> bool:
        text = printed.getvalue()
        if text:
            sys.stderr.write(text)
        return bool(text)

    @staticmethod
    def _stager(kind: str, plugin: str, staged: List[Spec]) -> Callable[..., None]:
        def register(name: str, target: Any, **metadata: Any) -> None:
            spec = make_spec(kind, plugin, name, target, metadata)
            if any(s.kind == kind and s.name == name for s in staged):
                raise RegistrationError(f"plugin {plugin!r} registers {kind} {name!r} twice")
            staged.append(spec)

        register.__doc__ = f"Register a component of kind {kind!r} for plugin {plugin!r}."
        return register


def mark_conflicts(specs: Specs, plugins: Dict[str, PluginRecord]) -> None:
    """Every plugin that shares a (kind, name) with another plugin gets status ``conflict`` and says with whom."""
    for (kind, name), group in specs.items():
        owners = sorted({s.plugin for s in group})
        if len(owners) < 2:
            continue
        for p in owners:
            rec = plugins.get(p)
            if rec is None:
                continue
            others = [o for o in owners if o != p]
            msg = f"{kind} {name!r} is also registered by {', '.join(others)}; ask for '{p}/{name}' to pick this one"
            if msg in rec.error:
                continue
            plugins[p] = rec.evolve(status="conflict", error=f"{rec.error}; {msg}" if rec.error else msg)


def discover(entry_points: Iterable[Any], strict: bool) -> Tuple[Specs, Dict[str, PluginRecord]]:
    """Load every entry point; return ``(specs, plugin records)``, or raise in strict mode."""
    loader = _Loader()
    by_name: Dict[str, List[Any]] = {}
    for ep in entry_points:
        by_name.setdefault(ep.name, []).append(ep)
    for name in sorted(by_name):
        group = by_name[name]
        if len(group) == 1:
            loader.load(group[0], name)
            continue
        dists = [dist_name(ep) or getattr(ep, "value", "?") for ep in group]
        for ep, dist in zip(group, dists):
            plugin = f"{name}@{dist}"
            loader.load(ep, plugin)
            rec = loader.plugins[plugin]
            others = ", ".join(d for d in dists if d != dist) or "another distribution"
            msg = (f"entry-point name {name!r} is also used by {others}; this one is plugin '{plugin}' "
                   f"(ask for '{plugin}/NAME')")
            loader.plugins[plugin] = rec.evolve(
                status="conflict" if rec.status == "ok" else rec.status,
                error=f"{rec.error}; {msg}" if rec.error else msg,
            )
    mark_conflicts(loader.specs, loader.plugins)
    if strict:
        bad = [p for p in loader.plugins.values() if p.status != "ok"]
        if bad:
            lines = "; ".join(f"{p.name}: {p.status}: {p.error}" for p in bad)
            raise PluginLoadError(f"GRADKIT_STRICT is set and {len(bad)} plugin(s) did not load cleanly: {lines}")
    return loader.specs, loader.plugins
