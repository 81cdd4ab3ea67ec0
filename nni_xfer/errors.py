"""Error types. Every user-facing error names the offending field in one line."""
from __future__ import annotations

import math
from typing import Any, Iterable


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


def check_number(value: Any, field: str, *, integer: bool = False, minimum: float | None = None,
                 maximum: float | None = None, above: float | None = None, below: float | None = None,
                 allow_none: bool = False) -> Any:
    """The one validator of every number in a configuration (strategies', spaces', evaluators' and
    datasets' arguments): a one-line :class:`ConfigError` naming ``field`` unless ``value`` is a finite
    number (an integer if ``integer``; YAML's ``true``/``false`` are not numbers) within the bounds
    (``minimum <= value <= maximum``, ``above < value < below``). ``null`` passes only if ``allow_none``
    (an optional limit is ``null``, never ``.inf``: no built-in argument takes infinity).

    >>> check_number(0.5, 'strategy_args.eta', above=0)
    0.5
    >>> check_number(float('nan'), 'strategy_args.alpha')
    Traceback (most recent call last):
    ...
    nni_xfer.errors.ConfigError: strategy_args.alpha: expected a finite number, got nan
    """
    if value is None and allow_none:
        return None
    kind = 'an integer' if integer else 'a finite number'
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(field, f'expected {kind}{" or null" if allow_none else ""}, got {value!r}')
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(field, f'expected a finite number, got {value!r}')
    for bound, ok, sign in ((minimum, lambda b: value >= b, '>='), (maximum, lambda b: value <= b, '<='),
                            (above, lambda b: value > b, '>'), (below, lambda b: value < b, '<')):
        if bound is not None and not ok(bound):
            raise ConfigError(field, f'must be {sign} {bound}, got {value!r}')
    return value if integer else float(value)
