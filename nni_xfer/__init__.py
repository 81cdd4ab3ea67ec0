"""nni-xfer: knowledge-transfer neural architecture search as plugins for Microsoft NNI 3.0.

``strategies/`` and ``search_spaces/`` sit next to this package in the source tree and are
installed as ``nni_xfer.strategies`` / ``nni_xfer.search_spaces``. When this package is imported
from the source tree itself (the working directory is the repository, e.g. a trial whose code
directory is the repository, with an editable or a non-editable install), the source folders are
mapped here so those names resolve the same way.
"""
import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if (not _os.path.isdir(_os.path.join(_here, 'strategies'))
        and _os.path.isfile(_os.path.join(_root, 'strategies', '__init__.py'))
        and _os.path.isfile(_os.path.join(_root, 'search_spaces', '__init__.py'))):
    __path__.append(_root)  # noqa: F821  (package __path__): nni_xfer.strategies -> <root>/strategies
del _os, _here, _root
