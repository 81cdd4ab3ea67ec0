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

Issue 23 removed two more imports a trial does not use:

* ``nni.mutable.mutable`` (imported by ``import nni``) runs ``from scipy.stats import norm,
  lognorm, uniform, loguniform`` at module level (``scipy.stats``: about 1.5 s of a cold trial on a
  2-core CPU) and uses those four names only to build ``nni.mutable.Numerical`` distributions,
  which no built-in space samples in a trial. :func:`enable` imports ``nni`` while a stand-in
  ``scipy.stats`` module is registered whose four attributes are :class:`LazyAttribute` objects:
  calling one (or reading any attribute of it) imports the real ``scipy.stats`` then. The stand-in
  is removed from ``sys.modules`` right after, so any later ``import scipy.stats`` gets the real
  module; NNI's files are not changed.
* ``torch._dynamo`` (about 1.9 s), which ``torch.utils.flop_counter`` pulls: the ``flops``
  metric is counted with module hooks (:func:`nni_xfer.training.evaluators.count_flops`).

:data:`REMOVED_MODULES` lists what a trial process no longer imports (tests/unit/core/runtime/test_trial_imports.py).

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

#: Modules (and their submodules) a trial process must not import either (issue 23): ``scipy.stats``
#: (NNI's ``Numerical`` distributions), ``torch._dynamo`` and ``torch.utils.flop_counter`` (FLOPs).
REMOVED_MODULES = ('scipy.stats', 'torch._dynamo', 'torch.utils.flop_counter')

#: The ``scipy.stats`` names ``nni.mutable.mutable`` imports at module level.
NNI_SCIPY_STATS_NAMES = ('norm', 'lognorm', 'uniform', 'loguniform')


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
    import_nni_without_scipy_stats()
    for name in DEFERRED_PACKAGES:
        defer_package(name)
    return True


class LazyAttribute:
    """Stands for ``module.name`` until used: a call, or reading an attribute, imports ``module``
    and forwards to the real object."""

    def __init__(self, module: str, name: str):
        self._module = module
        self._name = name

    def resolve(self):
        return getattr(importlib.import_module(self._module), self._name)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, attr: str):
        if attr.startswith('__') and attr.endswith('__'):
            raise AttributeError(attr)
        return getattr(self.resolve(), attr)

    def __repr__(self) -> str:
        return f'<lazy {self._module}.{self._name}>'


def trial_process() -> None:
    """Set up a trial process before the runner's imports: only the known third-party warnings
    silenced, no Lightning/torchmetrics behind NNI's model spaces (issue 13)."""
    from .known_warnings import filter_known_warnings
    filter_known_warnings()
    enable()


def import_nni_without_scipy_stats() -> bool:
    """Import ``nni`` (and so ``nni.mutable.mutable``) with its module-level ``scipy.stats`` names
    bound to :class:`LazyAttribute` objects; ``False`` (plain import) if ``scipy.stats`` or
    ``nni.mutable.mutable`` is already imported."""
    if 'scipy.stats' in sys.modules or 'nni.mutable.mutable' in sys.modules:
        import nni  # noqa: F401
        return False
    stand_in = types.ModuleType('scipy.stats', 'stand-in for scipy.stats while nni is imported (nni_xfer.runtime.lightweight)')
    for name in NNI_SCIPY_STATS_NAMES:
        setattr(stand_in, name, LazyAttribute('scipy.stats', name))
    sys.modules['scipy.stats'] = stand_in
    try:
        import nni  # noqa: F401
    finally:
        if sys.modules.get('scipy.stats') is stand_in:
            del sys.modules['scipy.stats']
        scipy = sys.modules.get('scipy')
        if scipy is not None and scipy.__dict__.get('stats') is stand_in:
            del scipy.stats
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


def removed_modules_loaded() -> list[str]:
    """The :data:`REMOVED_MODULES` (or their submodules) present in ``sys.modules``."""
    return sorted(m for m in sys.modules if any(m == r or m.startswith(r + '.') for r in REMOVED_MODULES))


def heavy_modules_loaded() -> list[str]:
    """The :data:`HEAVY_MODULES` (top-level names) present in ``sys.modules``."""
    return sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in HEAVY_MODULES})
