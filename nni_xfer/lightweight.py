"""Lean NNI imports for trial processes (issue 13: trial start-up).

A trial builds one frozen network and trains it; it needs NNI's model-space classes
(``nni.nas.nn.pytorch``, ``nni.mutable``) and, for some spaces, NNI hub blocks — never NNI's
evaluators, one-shot strategies or PyTorch Lightning. With NNI's defaults, importing
``nni.nas.nn.pytorch`` pulls ``pytorch_lightning``, ``torchmetrics`` and ``torchvision`` (about
7 s of a cold trial on a 2-core CPU) through two paths:

* ``nni.nas.space.space`` imports ``nni.nas.evaluator``, whose package ``__init__`` aliases the
  framework subpackage ``nni.nas.evaluator.pytorch`` (Lightning) when NNI's default framework is
  ``pytorch``. NNI's documented switch ``NNI_FRAMEWORK=none`` (read when ``nni`` is first
  imported) turns that alias off; the model-space classes are still imported explicitly from
  ``nni.nas.nn.pytorch``.
* ``nni.nas.hub.pytorch`` (blocks reused by ``mbv2_blocks`` and ``nasnet_cells``) and
  ``nni.nas.oneshot.pytorch`` (imported by the hub's NASNet module) have package ``__init__`` files
  that import every hub space / the Lightning one-shot modules. :func:`enable` registers those two
  packages as *deferred*: their submodules import normally, and the package ``__init__`` runs on
  the first attribute that is not a loaded submodule (``from nni.nas.hub.pytorch import NASNet``
  still works, it just pays the import then).

:func:`enable` is called by ``python -m nni_xfer.trial`` before anything imports NNI. The strategy
side (tuner, ``NasExperiment``, tests) keeps NNI's defaults: spaces are the same NNI model spaces
there. ``NNI_XFER_LEAN_IMPORTS=0`` turns this off for a trial (the old behaviour).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

#: NNI packages whose ``__init__`` is deferred in a trial process (their submodules are used).
DEFERRED_PACKAGES = ('nni.nas.hub.pytorch', 'nni.nas.oneshot.pytorch')

#: Modules a trial process must not import (the test of issue 13 checks ``sys.modules``).
HEAVY_MODULES = ('pytorch_lightning', 'lightning', 'lightning_fabric', 'torchmetrics')


def enabled() -> bool:
    return os.environ.get('NNI_XFER_LEAN_IMPORTS', '1') not in ('0', 'false', 'no')


def enable() -> bool:
    """Make later NNI imports in this process lean; ``False`` (and no change) if NNI's NAS package
    is already imported or ``NNI_XFER_LEAN_IMPORTS=0``."""
    if not enabled() or 'nni.nas' in sys.modules:
        return False
    if 'nni.common.framework' in sys.modules:
        from nni.common.framework import set_default_framework
        set_default_framework('none')
    else:
        # Read by nni.common.framework at its import; only this process and its children see it.
        os.environ['NNI_FRAMEWORK'] = 'none'
    for name in DEFERRED_PACKAGES:
        defer_package(name)
    return True


def defer_package(name: str) -> types.ModuleType | None:
    """Register package ``name`` so that its submodules import without running its ``__init__``
    until an attribute other than a loaded submodule is read. Returns the placeholder module
    (``None`` if the package is already imported or cannot be found)."""
    if name in sys.modules:
        return sys.modules[name]
    parent, _, child = name.rpartition('.')
    try:
        spec = importlib.util.find_spec(name)  # imports the parent packages (cheap ones here)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    state = {'done': False}

    def load_real_init() -> None:
        if state['done']:
            return
        state['done'] = True
        module.__dict__.pop('__getattr__', None)
        spec.loader.exec_module(module)  # type: ignore[union-attr]

    def __getattr__(attr: str):  # PEP 562: only called for attributes not set yet
        if attr.startswith('__') and attr.endswith('__'):
            raise AttributeError(attr)
        load_real_init()
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def heavy_modules_loaded() -> list[str]:
    """The :data:`HEAVY_MODULES` (top-level names) present in ``sys.modules``."""
    return sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in HEAVY_MODULES})
