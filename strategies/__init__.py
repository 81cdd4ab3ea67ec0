"""Built-in search strategies (installed as ``nni_xfer.strategies``)."""
from . import eas, fixed, modulenet, random  # noqa: F401  (registers)
