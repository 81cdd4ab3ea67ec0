"""docs/architecture.md's package map names every module of the core, and only modules that exist."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def mapped_paths() -> set[str]:
    """Paths (``nni_xfer/adapters/tuner.py``, ``nni_xfer/runtime/``) named in the map's first column."""
    text = (ROOT / 'docs' / 'architecture.md').read_text()
    block = text.split('## Packages', 1)[1].split('```', 2)[1]
    out, stack = set(), []   # stack of (indent, folder)
    for line in block.splitlines():
        m = re.match(r'^( *)(\S.*?)(?: {2,}|$)', line)
        if not m or len(m.group(1)) > 12:      # a description's continuation line
            continue
        indent = len(m.group(1))
        stack = [(i, f) for i, f in stack if i < indent]
        prefix = ''.join(f for _, f in stack)
        for name in m.group(2).split():
            if name.endswith('/') or name.endswith('.py'):
                out.add(prefix + name)
                if name.endswith('/'):
                    stack.append((indent, name))
    return out


def test_every_core_module_is_on_the_map_and_every_mapped_one_exists():
    mapped = mapped_paths()
    core = {str(p.relative_to(ROOT)) for p in (ROOT / 'nni_xfer').rglob('*.py')
            if '__pycache__' not in p.parts and p.name != '__init__.py'}
    core |= {str(p.relative_to(ROOT)) + '/' for p in (ROOT / 'nni_xfer').iterdir()
             if p.is_dir() and (p / '__init__.py').exists()}
    mapped_core = {p for p in mapped if p.startswith('nni_xfer/') and p != 'nni_xfer/'}
    assert core - mapped_core == set(), 'not on the map in docs/architecture.md'
    missing = {p for p in mapped if not (ROOT / p).exists()}
    assert missing == set(), 'on the map but not in the tree'
