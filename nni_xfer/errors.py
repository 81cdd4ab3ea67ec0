"""Error types. Every user-facing error names the offending field in one line."""
from __future__ import annotations

from typing import Iterable


class XferError(Exception):
    """Base class of nni-xfer errors."""


class ConfigError(XferError, ValueError):
    """A bad value in a configuration, with the field it came from.

    >>> str(ConfigError('classArgs.strategy', "unknown value 'foo'", allowed=['random']))
    "classArgs.strategy: unknown value 'foo' (allowed: random)"
    """

    def __init__(self, field: str, message: str, allowed: Iterable[object] | None = None):
        self.field = field
        self.message = message
        self.allowed = list(allowed) if allowed is not None else None
        text = f'{field}: {message}'
        if self.allowed is not None:
            text += f" (allowed: {', '.join(str(a) for a in self.allowed)})"
        super().__init__(text)


class CheckpointError(XferError, RuntimeError):
    """A checkpoint named in a trial spec is missing or corrupt."""
