"""The lazy component registry: discovery once per process, then queries.

Discovery reads a cache keyed on the installed distributions and the plugins' hook modules
(:mod:`gradkit_core._cache`); on a miss it loads every entry point in isolation
(:mod:`gradkit_core.discovery`).  ``GRADKIT_STRICT=1`` turns any plugin that did not load cleanly
(failed, incompatible, or a name clash) into a :class:`~gradkit_core.errors.PluginLoadError`.

Nothing named by a component's target is imported here.
"""

from __future__ import annotations

import builtins
import os
import re
from . import _kinds
from .errors import AmbiguousNameError, PluginLoadError, RegistrationError, UnknownKindError, UnknownNameError
from .spec import PluginRecord, Spec

#: version of the plugin API this core implements (a plugin module declares the
#: version it was written for as a module-level ``PLUGIN_API_VERSION``)
PLUGIN_API_VERSION = 1
ENTRY_POINT_GROUP = "gradkit"
STRICT_ENV = "GRADKIT_STRICT"
USER_PLUGIN = "user"


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def strict_enabled() -> bool:
    """Whether ``GRADKIT_STRICT`` asks for strict discovery (``1``, ``yes``, ``true``; not ``0``/``no``/``false``)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _singular(kind: str) -> str:
    return kind[:-1] if kind.endswith("s") else kind


def _check_kind(kind: Optional[str]) -> None:
    if kind is None:
        return
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a string such as 'optimizers', got {type(kind).__name__}")
    if kind not in _kinds.KIND_HOOKS:
        import difflib

        close = difflib.get_close_matches(kind, _kinds.KIND_HOOKS, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownKindError(f"unknown kind {kind!r}{hint} (kinds: {', '.join(_kinds.KIND_HOOKS)})")


class Registry:
    """All components of all plugins, discovered once and then queried.

    ``entry_points`` may be given (objects with ``name``, ``value``, ``load()`` and
    optionally ``dist``) to build a registry without scanning the environment (and without
    the discovery cache).
    """

    def __init__(self, entry_points: Optional[Iterable[Any]] = None, strict: Optional[bool] = None,
                 use_cache: Optional[bool] = None):
        self._given_eps = None if entry_points is None else builtins.list(entry_points)
        self._strict = strict
        self._use_cache = use_cache
        import _thread  # threading's lock without importing threading (a cached list stays cheap)

        self._lock = _thread.RLock()
        self._discovered = False
        self._specs: Dict[Tuple[str, str], List[Spec]] = {}
        self._plugins: Dict[str, PluginRecord] = {}
        #: "cache" or "scan": where the last discovery came from
        self.source = ""

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
                    specs, plugins = self._discover()
                    # installed only once discovery succeeded: a strict-mode failure leaves nothing behind
                    user = {k: [s for s in v if s.plugin == USER_PLUGIN] for k, v in self._specs.items()}
                    for key, group in user.items():
                        if group:
                            specs.setdefault(key, []).extend(group)
                    if USER_PLUGIN in self._plugins:
                        plugins[USER_PLUGIN] = self._plugins[USER_PLUGIN]
                    if any(s.plugin == USER_PLUGIN for g in specs.values() for s in g):
                        from .discovery import mark_conflicts

                        mark_conflicts(specs, plugins)
                    self._specs, self._plugins = specs, plugins
                    self._discovered = True
        return self

    def _discover(self):
        eps = self._entry_points()
        use_cache = self._use_cache if self._use_cache is not None else self._given_eps is None
        fp = None
        if use_cache:
            from . import _cache

            if _cache.enabled():
                try:
                    fp = _cache.fingerprint(eps)
                except Exception:  # noqa: BLE001 - anything unusual: just scan
                    fp = None
                if fp is not None:
                    hit = _cache.load(fp)
                    if hit is not None:
                        self.source = "cache"
                        self._check_strict(hit[1])
                        return hit
        from .discovery import discover

        specs, plugins = discover(eps, strict=False)
        self.source = "scan"
        if fp is not None:
            from . import _cache

            _cache.store(fp, specs, plugins)
        self._check_strict(plugins)
        return specs, plugins

    def _check_strict(self, plugins: Dict[str, PluginRecord]) -> None:
        if not self.strict:
            return
        bad = [p for p in plugins.values() if p.status != "ok"]
        if bad:
            lines = "; ".join(f"{p.name}: {p.status}: {p.error}" for p in bad)
            raise PluginLoadError(f"{STRICT_ENV} is set and {len(bad)} plugin(s) did not load cleanly: {lines}")

    # ------------------------------------------------------------------ user registration
    def register_user(self, name: str, target: Any, kind: str, **metadata: Any) -> Spec:
        self.ensure()
        if kind is None:
            raise RegistrationError("register() needs kind=..., one of: " + ", ".join(_kinds.KIND_HOOKS))
        _check_kind(kind)
        from .discovery import make_spec, mark_conflicts

        spec = make_spec(kind, USER_PLUGIN, name, target, metadata)
        with self._lock:
            key = (kind, name)
            # re-running a notebook cell replaces the user's own earlier registration
            kept = [s for s in self._specs.get(key, []) if s.plugin != USER_PLUGIN]
            kept.append(spec)
            self._specs[key] = kept
            rec = self._plugins.get(USER_PLUGIN) or PluginRecord(name=USER_PLUGIN, version="", status="ok")
            comps = tuple(c for c in rec.components if c != f"{kind}:{name}") + (f"{kind}:{name}",)
            self._plugins[USER_PLUGIN] = rec.evolve(components=comps)
            if len(kept) > 1:
                mark_conflicts(self._specs, self._plugins)
        return spec

    # ------------------------------------------------------------------ queries
    def list(self, kind: Optional[str] = None, pattern: Any = "*", plugin: Optional[str] = None) -> List[Spec]:
        _check_kind(kind)
        if isinstance(pattern, str):
            pats = [pattern]
        elif isinstance(pattern, (builtins.list, tuple)) and all(isinstance(p, str) for p in pattern):
            pats = builtins.list(pattern)
        else:
            raise TypeError(f"pattern must be a shell wildcard string (e.g. '*cam*') or a list of them, "
                            f"got {pattern!r}")
        if plugin is not None and not isinstance(plugin, str):
            raise TypeError(f"plugin must be a plugin name (string), got {plugin!r}")
        self.ensure()
        import fnmatch

        out = [
            s
            for specs in self._specs.values()
            for s in specs
            if (kind is None or s.kind == kind)
            and (plugin is None or s.plugin == plugin)
            and any(fnmatch.fnmatch(s.name.lower(), p.lower()) for p in pats)
        ]
        kind_order = {k: i for i, k in enumerate(_kinds.KIND_HOOKS)}
        return sorted(out, key=lambda s: (kind_order[s.kind], _natural_key(s.name), s.plugin))

    def plugins(self) -> List[PluginRecord]:
        self.ensure()
        return sorted(self._plugins.values(), key=lambda p: _natural_key(p.name))

    def resolve(self, name: str, kind: Optional[str] = None) -> Spec:
        _check_kind(kind)
        if not isinstance(name, str) or not name:
            raise UnknownNameError(f"expected a component name as a non-empty string, got {name!r}")
        self.ensure()
        matches = self._matches(name, kind)
        if not matches and "/" in name:
            plugin, _, bare = name.partition("/")
            matches = [s for s in self._matches(bare, kind) if s.plugin == plugin]
        if not matches:
            raise UnknownNameError(self._unknown_message(name, kind))
        if len(matches) > 1 and kind is None:
            methods = [s for s in matches if s.kind not in _kinds.EXPERIMENT_KINDS]
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
        what = f"{_singular(kind) if kind else 'component'} {name!r}"
        msg = f"no installed {what}"
        if kind is not None:
            elsewhere = self._matches(name, None)
            if not elsewhere and "/" in name:
                plugin, _, bare = name.partition("/")
                elsewhere = [s for s in self._matches(bare, None) if s.plugin == plugin]
            if elsewhere:
                where = ", ".join(sorted({f"{_singular(s.kind)} (kind={s.kind!r})" for s in elsewhere}))
                return f"{msg}: {name!r} is an installed {where}"
        installed = sorted({n for (k, n) in self._specs if kind is None or k == kind})
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
                hint = f"; it is provided by the first-party plugin {entry.name!r}: run `gradkit install {entry.name}`"
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
        merged = _fill_defaults(spec, factory, args, kwargs)
        return factory(*args, **merged)


def _fill_defaults(spec: Spec, factory: Any, args: tuple, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword arguments for ``factory``: the caller's, plus registered defaults the caller did not give.

    A default is dropped when the caller passed that parameter positionally; a keyword the factory
    does not accept is a TypeError that names the gradkit component and what it accepts.
    """
    import inspect

    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: plain merge
        return {**spec.defaults, **kwargs}
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not var_kw:
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        bad = [k for k in kwargs if k not in accepted]
        if bad:
            raise TypeError(
                f"{spec.what} ({spec.target_path}) got unexpected keyword argument(s) {', '.join(map(repr, bad))}; "
                f"it accepts: {', '.join(accepted) or '(no keyword arguments)'}"
            )
    try:
        bound = sig.bind_partial(*args)
    except TypeError as exc:
        raise TypeError(f"{spec.what} ({spec.target_path}): {exc}") from None
    if not var_kw:
        stray = [k for k in spec.defaults if k not in params]
        if stray:
            raise TypeError(f"{spec.what} (plugin {spec.plugin!r}) registers default(s) {', '.join(map(repr, stray))} "
                            f"that {spec.target_path} does not accept: a bug in the plugin")
    given = set(bound.arguments) | set(kwargs)
    merged = {k: v for k, v in spec.defaults.items() if k not in given}
    merged.update(kwargs)
    return merged
