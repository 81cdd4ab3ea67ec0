"""Built-in search spaces (installed as ``nni_xfer.search_spaces``)."""
from . import eas_densenet, eas_plain_cnn, module_chain, simple_cnn  # noqa: F401  (registers)
