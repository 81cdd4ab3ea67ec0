"""Imports run one way: method (``strategies/``) → space (``search_spaces/``) → core (``nni_xfer/``),
and the import graph has no circle.

Every module's AST is walked, imports inside functions (and under ``TYPE_CHECKING``) included; the
source folders are mapped to their installed names (``strategies/`` is ``nni_xfer.strategies``,
``search_spaces/`` is ``nni_xfer.search_spaces``, see setup.py). Docstring examples are text, not
imports. Dynamic imports (``importlib``, the registries' plugin loading) are not edges: they load
plugins by name, which is what lets the core drive any method.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FOLDERS = {'nni_xfer': 'nni_xfer', 'strategies': 'nni_xfer.strategies', 'search_spaces': 'nni_xfer.search_spaces'}

#: the one documented exception (docs/architecture.md): the ModuleNet space reads the knowledge
#: base of its method (``strategies/modulenet/kb.py``) and its connections; see search_spaces/module_chain.py
EXCEPTIONS = {('nni_xfer.search_spaces.module_chain', 'nni_xfer.strategies.modulenet')}


def modules() -> dict[str, Path]:
    """Installed module name -> source file, for every module of the three source folders."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob('*.py')):
            rel = path.relative_to(ROOT / folder).with_suffix('')
            parts = [p for p in rel.parts if p != '__init__']
            out['.'.join([package, *parts])] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a dotted import target) is or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition('.')[0]
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                targets.add(f'{base}.{alias.name}' if f'{base}.{alias.name}' in known else base)
    return {t for t in (_resolve(t, known) for t in targets) if t is not None and t != module}


def layer(module: str) -> str:
    if module.startswith('nni_xfer.strategies'):
        return 'method'
    if module.startswith('nni_xfer.search_spaces'):
        return 'space'
    return 'core'


#: layer -> the layers it must not import
FORBIDDEN = {'space': {'method'}, 'core': {'space', 'method'}, 'method': set()}


@pytest.fixture(scope='module')
def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def _excepted(src: str, dst: str) -> bool:
    return any(src == a and (dst == b or dst.startswith(b + '.')) for a, b in EXCEPTIONS)


def test_the_walk_sees_function_level_and_relative_imports(graph):
    # a function-level import (nni_xfer/space.py imports nothing below; the EAS strategy imports its
    # controller inside RLPolicy) and a relative one (nni_xfer/transfer/densenet.py: .net2net)
    assert 'nni_xfer.strategies.eas.controller' in graph['nni_xfer.strategies.eas.strategy']
    assert 'nni_xfer.transfer.net2net' in graph['nni_xfer.transfer.densenet']
    assert len(graph) > 60


def test_imports_run_method_to_space_to_core(graph):
    bad = sorted(f'{src} ({layer(src)}) imports {dst} ({layer(dst)})'
                 for src, targets in graph.items() for dst in targets
                 if layer(dst) in FORBIDDEN[layer(src)] and not _excepted(src, dst))
    assert not bad, 'imports against the rule method -> space -> core:\n' + '\n'.join(bad)


def test_no_import_circle(graph):
    # Tarjan's strongly connected components; any component of two or more modules is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, 'import circles:\n' + '\n'.join(' <-> '.join(c) for c in circles)
