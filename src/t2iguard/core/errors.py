"""Exceptions. Every error names the input or setting it is about."""

from __future__ import annotations


class T2IGuardError(Exception):
    """Base class of all t2iguard errors."""


class InputError(T2IGuardError, ValueError):
    """An input (prompt, image, file) is malformed, too large or unreadable.

    ``source`` names the input (a path, ``"<prompt 3>"``, ...) so batch callers can report it.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)
        self.reason = message


class PolicyError(T2IGuardError, ValueError):
    """A policy file is invalid; the message says which field and why."""


class StageError(T2IGuardError):
    """A stage failed to run; the pipeline turns it into a fail-closed decision."""


class ConfigurationError(T2IGuardError):
    """A stage or backend is configured in a way that cannot work (missing model, bad path)."""


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional dependency is needed; the message names the extra that installs it."""

    def __init__(self, package: str, extra: str | None, purpose: str) -> None:
        how = f"pip install 't2iguard[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{purpose} needs the '{package}' package: {how}")
        self.package = package
        self.extra = extra
