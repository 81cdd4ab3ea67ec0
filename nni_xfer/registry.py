"""Plugin registries.

Plugins register by decorator into a named table; other packages add theirs through the
entry-point group of the same name (``nni_xfer.strategies``, ``nni_xfer.search_spaces``,
``nni_xfer.datasets``, ``nni_xfer.evaluators``, ``nni_xfer.initializers``)::

    from nni_xfer.registry import STRATEGIES

    @STRATEGIES.register('my_search', description='My search strategy')
    class MySearch(BaseStrategy):
        ...

``nni-xfer list`` prints every table.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator

from .errors import ConfigError

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    description: str


class Registry:
    """A name → plugin table filled by :meth:`register` and by package entry points."""

    def __init__(self, kind: str, group: str, builtin_modules: tuple[str, ...] = ()):
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def register(self, name: str, description: str | None = None) -> Callable[[Any], Any]:
        """Decorator that adds a class or function under ``name``; warns on overwrite."""

        def deco(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                warnings.warn(f'{self.kind} {name!r} is registered twice; the later one wins', stacklevel=2)
            doc = description or (obj.__doc__ or '').strip().splitlines()[0:1]
            if isinstance(doc, list):
                doc = doc[0] if doc else ''
            self._entries[name] = Entry(name, obj, doc)
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtin_modules:
            importlib.import_module(mod)
        try:
            eps = metadata.entry_points(group=self.group)
        except Exception:  # pragma: no cover - broken environments
            eps = []
        for ep in eps:
            if ep.name in self._entries:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the toolkit
                _logger.warning('cannot load %s plugin %r from %s: %s', self.kind, ep.name, ep.value, exc)
                continue
            if ep.name not in self._entries:
                doc = (getattr(obj, '__doc__', '') or '').strip().splitlines()
                self._entries[ep.name] = Entry(ep.name, obj, doc[0] if doc else '')

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        self._load()
        for name in sorted(self._entries):
            yield self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str, field: str | None = None) -> Any:
        """The plugin called ``name``; a :class:`ConfigError` naming ``field`` if there is none."""
        self._load()
        if name not in self._entries:
            raise ConfigError(field or self.kind, f'unknown {self.kind} {name!r}', allowed=self.names())
        return self._entries[name].obj


STRATEGIES = Registry('strategy', 'nni_xfer.strategies', ('nni_xfer.strategies',))
SEARCH_SPACES = Registry('search space', 'nni_xfer.search_spaces', ('nni_xfer.search_spaces',))
DATASETS = Registry('dataset', 'nni_xfer.datasets', ('nni_xfer.datasets',))
EVALUATORS = Registry('evaluator', 'nni_xfer.evaluators', ('nni_xfer.evaluators', 'nni_xfer.modulenet.evaluate'))
INITIALIZERS = Registry('initializer', 'nni_xfer.initializers', ('nni_xfer.initializers', 'nni_xfer.eas',
                                                                       'nni_xfer.modulenet.evaluate'))

ALL = {
    'strategies': STRATEGIES,
    'search spaces': SEARCH_SPACES,
    'datasets': DATASETS,
    'evaluators': EVALUATORS,
    'initializers': INITIALIZERS,
}
