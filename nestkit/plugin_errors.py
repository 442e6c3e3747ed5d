"""Errors raised by component code (a plugin's, or nestkit's own), as the one line a user needs.

A factory that raises ``ValueError``/``TypeError`` while it builds is rejecting its settings: that
is one line naming the recipe section and the component (``model.encoder (my-plugin:my_lstm):
hidden must be even``), exit code 2. Anything else a plugin raises is a bug in the plugin: one
line naming it and where, exit code 1, and ``--debug`` shows the traceback (the original
exception is the cause of this one).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from nestkit.errors import NestkitError, RecipeError

if TYPE_CHECKING:
    from nestkit.registry import Component, Registry

BUILTIN_PROVIDER = "nestkit"
DEBUG_HINT = "rerun with --debug for the traceback"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class ComponentError(RecipeError):
    """A component's own code refused to build (or crashed building) from the section at ``key``."""

    def __init__(self, message: str, key: str, component: str, file: str = "", exit_code: int = 2) -> None:
        self.component, self.exit_code = component, exit_code
        super().__init__(message, key, file)

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, f"{self.key} ({self.component})".lstrip()) if part)
        return f"{where}: {self.message}"

    def _copy(self, key: str, file: str) -> ComponentError:
        copy = ComponentError(self.message, key, self.component, file, self.exit_code)
        copy.__cause__ = self.__cause__
        return copy

    def at(self, file: str) -> ComponentError:
        return self._copy(self.key, self.file or file)

    def under(self, prefix: str) -> ComponentError:
        return self._copy(".".join(p for p in (prefix, self.key) if p), self.file)


def raise_build_error(component: Component, key: str, exc: Exception) -> None:
    """Raise the one-line error for ``exc`` out of ``component``'s factory (building the section at
    ``key``), caused by ``exc``; return when it should propagate as it is (a crash in nestkit's
    own code keeps its traceback)."""
    if isinstance(exc, NestkitError):  # already the line a user needs
        return
    if isinstance(exc, (ValueError, TypeError)):
        raise ComponentError(one_line(exc), key, component.qualified_name) from exc
    if component.provider != BUILTIN_PROVIDER:
        message = f"{type(exc).__name__}: {one_line(exc)} (a bug in {component.provider}? {DEBUG_HINT})"
        raise ComponentError(message, key, component.qualified_name, exit_code=1) from exc


def crash_line(exc: BaseException, registry: Registry) -> str | None:
    """``error: ...`` naming the plugin whose code raised ``exc`` (its innermost frame in a plugin's
    package), or None when no plugin's code is in the traceback."""
    packages = {
        c.factory.__module__.partition(".")[0]: c.provider
        for c in registry
        if c.provider != BUILTIN_PROVIDER and getattr(c.factory, "__module__", None)
    }
    packages.pop("nestkit", None)  # a plugin registering one of nestkit's own classes: not its code
    where = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] in packages:
            where = (packages[module.partition(".")[0]], module, tb.tb_lineno)
        tb = tb.tb_next
    if where is None:
        return None
    provider, module, line = where
    return f"error: plugin {provider} raised {type(exc).__name__}: {one_line(exc)} ({module}, line {line}); {DEBUG_HINT}"
