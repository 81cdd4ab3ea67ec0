"""Silence the warnings nni-xfer knows to be harmless, and only those.

Called at every entry point (``nni-xfer``, ``python -m nni_xfer.trial``, the warm launcher, the
tuner, the ``NasExperiment`` adapter, the examples). Each filter names one message of one
third-party module; anything else NNI, torch or nni-xfer says still shows.

1. NNI 3.0 regenerates its ``torch.nn`` wrappers (``nni.nas.nn.pytorch.layers``) for a torch version
   it does not know and warns, for each class of ``torch.nn`` that is not a module, ``RuntimeWarning:
   <class '...'> is found to be not a nn.Module, which is unexpected. It means your PyTorch version
   might not be supported.``. With current torch that is ``torch.nn.parameter.Buffer`` and
   ``torch.nn.modules.linear_cross_entropy_options.LinearCrossEntropyOptions``: neither is a layer a
   model space wraps, and NNI keeps them as the plain torch classes. Only these two classes are hidden.
2. ``nnictl`` (``nni.tools.nnictl``) imports ``pkg_resources``, which setuptools deprecates with a
   ``UserWarning: pkg_resources is deprecated as an API ...`` on every call (setup pins
   ``setuptools<81``, so it keeps working). The ``nnictl`` processes nni-xfer starts get
   :data:`PYTHONWARNINGS_KNOWN` (:func:`quiet_env`); a ``nnictl`` you type yourself still prints it
   (README, Troubleshooting).
3. NNI's ``NasExperimentConfig`` logs ``WARNING: `training_service` will be ignored for sequential
   execution engine.`` each time it canonicalises a config, from the second time on about the
   local training service it set itself (14 lines for the 3-trial example). A sequential engine
   evaluates in-process whatever the training service says, so the line carries nothing; it is
   dropped from that logger only.

>>> import warnings
>>> with warnings.catch_warnings(record=True) as seen:
...     warnings.simplefilter('always')
...     filter_known_warnings()
...     warnings.warn_explicit(KNOWN_NNI_CLASSES[0] + ' is found to be not a nn.Module, which is unexpected.',
...                            RuntimeWarning, 'layers.py', 94, module='nni.nas.nn.pytorch.layers')
...     warnings.warn_explicit("<class 'torch.nn.Other'> is found to be not a nn.Module, which is unexpected.",
...                            RuntimeWarning, 'layers.py', 94, module='nni.nas.nn.pytorch.layers')
...     warnings.warn_explicit('pkg_resources is deprecated as an API.', UserWarning, 'nnictl.py', 7,
...                            module='nni.tools.nnictl.nnictl')
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


#: The ``PYTHONWARNINGS`` entry that hides setuptools' ``pkg_resources`` deprecation in a child
#: process (``nnictl``, and through it NNI's manager, dispatcher and trials). ``-W`` syntax matches the
#: start of the message; the category keeps it to that warning.
PYTHONWARNINGS_KNOWN = 'ignore:pkg_resources is deprecated:UserWarning'

_NNI_SEQUENTIAL_NOISE = '`training_service` will be ignored for sequential execution engine.'
_NNI_CONFIG_LOGGER = 'nni.nas.experiment.config.experiment'


class _DropMessage:
    """A ``logging`` filter dropping records whose message is exactly ``message``."""

    def __init__(self, message: str):
        self.message = message

    def filter(self, record) -> bool:
        return record.getMessage() != self.message


def filter_known_warnings() -> None:
    """Hide exactly the known messages above in this process (idempotent)."""
    for cls in KNOWN_NNI_CLASSES:
        warnings.filterwarnings('ignore', message=re.escape(f'{cls} is found to be not a nn.Module'),
                                category=RuntimeWarning, module=_NNI_MODULE)
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning,
                            module=r'nni\.tools\.nnictl')
    import logging
    logger = logging.getLogger(_NNI_CONFIG_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage(_NNI_SEQUENTIAL_NOISE))


def quiet_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's environment) with :data:`PYTHONWARNINGS_KNOWN` appended to its
    ``PYTHONWARNINGS`` (a later entry takes precedence: that one message is hidden even under a user's
    ``PYTHONWARNINGS=error``; every other warning follows the user's entries)."""
    import os
    env = dict(os.environ if env is None else env)
    current = env.get('PYTHONWARNINGS', '')
    if PYTHONWARNINGS_KNOWN not in current.split(','):
        env['PYTHONWARNINGS'] = ','.join(x for x in (current, PYTHONWARNINGS_KNOWN) if x)
    return env
