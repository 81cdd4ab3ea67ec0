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

    def _load_for(self, name: str) -> None:
        """Import the built-in modules in order until ``name`` is registered; a plugin package's
        own submodule ``name`` (if any) is imported first and its other submodules are left for
        :meth:`_load`. Errors are left for :meth:`_load` to report."""
        for mod in self._builtin_modules:
            if name in self._entries:
                return
            try:
                _DEFERRING.add(mod)
                try:
                    package = importlib.import_module(mod)
                finally:
                    _DEFERRING.discard(mod)
                if mod in _DEFERRED and name.isidentifier() and not name.startswith('_'):
                    import pkgutil
                    if any(i.name == name for i in pkgutil.iter_modules(getattr(package, '__path__', []))):
                        importlib.import_module(f'{mod}.{name}')
            except Exception:  # noqa: BLE001 - the full load reports it
                return

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtin_modules:
            importlib.import_module(mod)
            if mod in _DEFERRED:  # a plugin package a fast :meth:`get` imported without its plugins
                import_submodules(mod, _DEFERRED[mod])
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
        """The plugin called ``name``; a :class:`ConfigError` naming ``field`` if there is none.

        Before loading the whole table it tries the built-in plugin module named like the plugin
        (``simple_cnn`` in ``nni_xfer.search_spaces.simple_cnn``, ``fresh`` in
        ``nni_xfer.training.initializers``): a trial then imports only what it runs (issue 13)."""
        if not self._loaded and name not in self._entries:
            self._load_for(name)
        if not self._loaded and name in self._entries:
            return self._entries[name].obj
        self._load()
        if name not in self._entries:
            raise ConfigError(field or self.kind, f'unknown {self.kind} {name!r}', allowed=self.names())
        return self._entries[name].obj


#: plugin packages whose ``import_submodules`` is postponed while :meth:`Registry._load_for` imports them
_DEFERRING: set[str] = set()
#: postponed plugin packages (name -> ``__path__``); imported by the next full load of a registry
_DEFERRED: dict[str, list[str]] = {}


def import_submodules(package: str, path: list[str]) -> None:
    """Import every public module and package directly under ``path`` (a package's ``__path__``).

    A package whose plugins register by decorator calls this from its ``__init__`` so that a new
    plugin is one new file (or folder) and no edit of a list elsewhere."""
    if package in _DEFERRING:
        _DEFERRED[package] = list(path)
        return
    _DEFERRED.pop(package, None)
    import pkgutil

    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if info.name.startswith('_'):
            continue
        name = f'{package}.{info.name}'
        try:
            importlib.import_module(name)
        except Exception as exc:  # one broken plugin must not take the others down; tests assert none
            IMPORT_ERRORS[name] = f'{type(exc).__name__}: {exc}'
            _logger.warning('cannot import plugin module %s: %s', name, IMPORT_ERRORS[name])


#: plugin modules that failed to import (module name -> error), filled by :func:`import_submodules`
IMPORT_ERRORS: dict[str, str] = {}


# Method packages under ``strategies/`` register their own evaluators and initializers too, so
# those tables load the strategies package after the core modules.
STRATEGIES = Registry('strategy', 'nni_xfer.strategies', ('nni_xfer.strategies',))
SEARCH_SPACES = Registry('search space', 'nni_xfer.search_spaces', ('nni_xfer.search_spaces',))
# the streamed 'imagefolder' dataset builds on the in-memory contract of nni_xfer.data.pipeline (one way), like the built-in ones
DATASETS = Registry('dataset', 'nni_xfer.datasets', ('nni_xfer.data.builtin', 'nni_xfer.data.imagefolder'))
EVALUATORS = Registry('evaluator', 'nni_xfer.evaluators', ('nni_xfer.training.evaluators', 'nni_xfer.strategies'))
INITIALIZERS = Registry('initializer', 'nni_xfer.initializers', ('nni_xfer.training.initializers', 'nni_xfer.transfer',
                                                                       'nni_xfer.strategies'))

# Method packages add command-line subcommands and report sections without editing the core:
#   @COMMANDS.register('modulenet', description='ModuleNet stages')
#   def add_parser(subparsers): ...  # adds its parser(s); each sets ``func=`` returning an exit code
#   (or ``def add_parser(subparsers, group)``: ``group(name, help)`` gives the subcommand table of a
#   top-level command shared with others, e.g. ``group('kb', ...)`` for ``kb build``)
#   @REPORT_SECTIONS.register('modulenet')
#   def section(evaluations, experiment_id, store=None) -> list[str]: ...  # text lines ([] when not
#   relevant); ``store`` (the report's KnowledgeStore), ``out_dir`` (the report's folder) and ``plots`` (the
#   report's list of PNG paths, to append its own) are passed when the function has that parameter
COMMANDS = Registry('command', 'nni_xfer.commands', ('nni_xfer.strategies',))
REPORT_SECTIONS = Registry('report section', 'nni_xfer.report_sections', ('nni_xfer.strategies',))

ALL = {
    'strategies': STRATEGIES,
    'search spaces': SEARCH_SPACES,
    'datasets': DATASETS,
    'evaluators': EVALUATORS,
    'initializers': INITIALIZERS,
}
