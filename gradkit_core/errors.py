"""Exceptions raised by the gradkit core."""

from __future__ import annotations


class GradkitError(Exception):
    """Base class of every gradkit error."""


class UnknownNameError(GradkitError, LookupError):
    """No installed component has the requested name."""


class AmbiguousNameError(GradkitError, LookupError):
    """Several installed components share the requested name."""

    def __init__(self, message: str, candidates):
        super().__init__(message)
        self.candidates = list(candidates)


class UnknownKindError(GradkitError, ValueError):
    """The requested kind does not exist."""


class RegistrationError(GradkitError, ValueError):
    """A ``register(...)`` call was malformed or clashes inside one plugin."""


class PluginLoadError(GradkitError, RuntimeError):
    """A plugin failed to load while ``GRADKIT_STRICT`` is set."""


class ComponentImportError(GradkitError, ImportError):
    """A component's target could not be imported (its plugin, or a dependency of it, is broken)."""


class CatalogError(GradkitError, ValueError):
    """The first-party catalog (``registry.toml``) is missing or malformed."""
