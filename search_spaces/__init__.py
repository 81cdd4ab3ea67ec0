"""Built-in search spaces (installed as ``nni_xfer.search_spaces``).

One module per paper space: the NNI model space, the one parser/validator of its architecture
format and its pure architecture -> architecture operators. Every public module here is imported
(and so registers) when the space table loads: adding a space is adding a file.
"""
from nni_xfer.registry import import_submodules

import_submodules(__name__, __path__)
