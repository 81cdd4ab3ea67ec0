"""Built-in search strategies (installed as ``nni_xfer.strategies``).

One package per method (``eas/``, ``modulenet/``, ...) holding the strategy plugin and its private
parts; baselines as single files. Every public module or package here is imported (and so
registers) when the strategy table loads: adding a method is adding a folder.
"""
from nni_xfer.registry import import_submodules

import_submodules(__name__, __path__)
