"""gradkit core: one registry for gradient-based machine-learning methods.

    import gradkit_core as gk
    gk.list(kind="optimizers")            # what is installed (imports no torch)
    opt = gk.create("lion", model.parameters(), lr=3e-4)
    gk.info("lion").paper.arxiv           # '2302.06675'

Importing this module imports nothing heavy (pluggy and attrs only).
"""

from __future__ import annotations

import builtins as _builtins
TYPE_CHECKING = False

if TYPE_CHECKING:  # annotations only: typing costs milliseconds on every `gradkit list`
    from typing import Any, Callable, List as _List, Optional

from .errors import (
    AmbiguousNameError,
    GradkitError,
    CatalogError,
    ComponentImportError,
    PluginLoadError,
    RegistrationError,
    UnknownKindError,
    UnknownNameError,
)
from ._kinds import KIND_HOOKS
from .registry import ENTRY_POINT_GROUP, PLUGIN_API_VERSION, STRICT_ENV, Registry
from .spec import Paper, PluginRecord, Spec

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # hookimpl / hookspec come from pluggy, which a cached `gradkit list` never needs to import
    if name in ("hookimpl", "hookspec"):
        from . import hookspecs

        return getattr(hookspecs, name)
    raise AttributeError(f"module 'gradkit_core' has no attribute {name!r}")

__all__ = [
    "list",
    "info",
    "get",
    "create",
    "register",
    "plugins",
    "kinds",
    "hookimpl",
    "hookspec",
    "Spec",
    "Paper",
    "PluginRecord",
    "Registry",
    "PLUGIN_API_VERSION",
    "ENTRY_POINT_GROUP",
    "STRICT_ENV",
    "GradkitError",
    "UnknownNameError",
    "AmbiguousNameError",
    "UnknownKindError",
    "RegistrationError",
    "PluginLoadError",
    "ComponentImportError",
    "CatalogError",
]

_registry: Optional[Registry] = None


def registry() -> Registry:
    """The process-wide registry (entry points are scanned on first use)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def list(kind: Optional[str] = None, pattern: Any = "*", plugin: Optional[str] = None) -> _List[Spec]:  # noqa: A001
    """Installed components, optionally of one ``kind``, whose names match ``pattern``.

    ``pattern`` is a shell wildcard (``"*cam*"``) or a list of them; results are
    sorted by kind, then naturally by name.  Imports no component code.
    """
    return registry().list(kind=kind, pattern=pattern, plugin=plugin)


def info(name: str, kind: Optional[str] = None) -> Spec:
    """The :class:`Spec` of one component (``plugin/name`` picks among clashing plugins)."""
    return registry().resolve(name, kind)


def get(name: str, kind: Optional[str] = None) -> Any:
    """Import and return a component's target (class or function)."""
    return registry().get(name, kind)


def create(name: str, *args: Any, kind: Optional[str] = None, **kwargs: Any) -> Any:
    """Instantiate a component: ``target(*args, **kwargs)``, with the registered defaults filling in only
    the parameters the caller gave neither positionally nor by keyword."""
    return registry().create(name, *args, kind=kind, **kwargs)


def register(
    name: str,
    target: Any = None,
    *,
    kind: str,
    **metadata: Any,
) -> Any:
    """Register a method defined in your own script or notebook (plugin ``user``).

    ``target`` is a ``"module:attr"`` string or the object itself.  Without a
    target, returns a decorator::

        @gk.register("my-sgd", kind="optimizers", summary="plain SGD")
        class MySGD(torch.optim.Optimizer): ...

    Registering the same name again from your script replaces your earlier entry;
    a name that an installed plugin also uses becomes ambiguous (``user/NAME``
    picks yours).
    """
    if target is None:

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            registry().register_user(name, obj, kind=kind, **metadata)
            return obj

        return decorator
    return registry().register_user(name, target, kind=kind, **metadata)


def plugins() -> _List[PluginRecord]:
    """Every discovered plugin with its version, status (ok, conflict, failed, incompatible) and error."""
    return registry().plugins()


def kinds() -> _List[str]:
    """All component kinds, in display order."""
    return _builtins.list(KIND_HOOKS)
