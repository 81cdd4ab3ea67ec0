"""Built-in search strategies (installed as ``nni_xfer.strategies``)."""
from . import random  # noqa: F401  (registers)
