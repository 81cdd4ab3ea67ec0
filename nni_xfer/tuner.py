"""``className: nni_xfer.tuner.XferTuner``: the NNI tuner every exp.yml names.

Kept at this short name because the example configs, the docs and registered tuners
(``nni_xfer.tuner.XferTuner_<strategy>``) use it; the adapter is :mod:`nni_xfer.adapters.tuner`.
"""
from nni_xfer.adapters import tuner as _adapter
from nni_xfer.adapters.tuner import XferClassArgsValidator, XferTuner

__all__ = ['XferTuner', 'XferClassArgsValidator']


def __getattr__(attr: str):  # per-strategy classes, made on demand by the adapter (PEP 562)
    return getattr(_adapter, attr)
