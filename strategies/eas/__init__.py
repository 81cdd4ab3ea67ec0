"""EAS (Efficient Architecture Search by network transformation, Cai et al. 2018): one package.

- :mod:`.strategy` — the ``eas`` (RL meta-controller) and ``eas_random`` strategies;
- :mod:`.controller` — the bi-LSTM encoder, Net2Wider / Net2Deeper actors and REINFORCE;
- :mod:`.finalize`, :mod:`.cli` — the last step (top networks of the last stage, full schedule):
  ``nni-xfer eas finalize``.

The spaces (``eas_plain_cnn``, ``eas_densenet``) own the token grammar and the architecture
operators (their ``eas_operators``); the weights move through the ``net2net`` initializer of
:mod:`nni_xfer.transfer.net2net`.
"""
from . import cli, strategy  # noqa: F401  (registers)
from .strategy import EASRandomStrategy, EASStrategy  # noqa: F401
