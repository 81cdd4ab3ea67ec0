"""Silence the warnings nni-xfer knows to be harmless, and only those.

NNI 3.0 regenerates its ``torch.nn`` wrappers (``nni.nas.nn.pytorch.layers``) for a torch version it
does not know and warns, for each class of ``torch.nn`` that is not a module, ``RuntimeWarning:
<class '...'> is found to be not a nn.Module, which is unexpected. It means your PyTorch version
might not be supported.``. With current torch that is ``torch.nn.parameter.Buffer`` and
``torch.nn.modules.linear_cross_entropy_options.LinearCrossEntropyOptions``: neither is a layer a
model space wraps, and NNI keeps them as the plain torch classes. Every trial (and the dispatcher)
printed both into its stderr; :func:`filter_known_warnings` hides exactly these two messages, from
that NNI module, so a trial's stderr shows real problems. Anything else NNI or torch says still shows.

>>> import warnings
>>> with warnings.catch_warnings(record=True) as seen:
...     warnings.simplefilter('always')
...     filter_known_warnings()
...     warnings.warn_explicit(KNOWN_NNI_CLASSES[0] + ' is found to be not a nn.Module, which is unexpected.',
...                            RuntimeWarning, 'layers.py', 94, module='nni.nas.nn.pytorch.layers')
...     warnings.warn_explicit("<class 'torch.nn.Other'> is found to be not a nn.Module, which is unexpected.",
...                            RuntimeWarning, 'layers.py', 94, module='nni.nas.nn.pytorch.layers')
>>> [str(w.message)[:28] for w in seen]
["<class 'torch.nn.Other'> is "]
"""
from __future__ import annotations

import re
import warnings

#: The torch classes NNI 3.0 warns about (``repr`` of the class, as in its message).
KNOWN_NNI_CLASSES = ("<class 'torch.nn.parameter.Buffer'>",
                     "<class 'torch.nn.modules.linear_cross_entropy_options.LinearCrossEntropyOptions'>")

_NNI_MODULE = r'nni\.nas\.nn\.pytorch\.layers'


def filter_known_warnings() -> None:
    """Ignore the NNI ``... is found to be not a nn.Module`` RuntimeWarning for the known classes only."""
    for cls in KNOWN_NNI_CLASSES:
        warnings.filterwarnings('ignore', message=re.escape(f'{cls} is found to be not a nn.Module'),
                                category=RuntimeWarning, module=_NNI_MODULE)
