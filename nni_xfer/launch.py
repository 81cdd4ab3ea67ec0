"""``python -m nni_xfer.launch``: run one trial through the warm trial launcher (a ``trialCommand``).

Kept at this short name because the example configs and the docs use it; the client is
:mod:`nni_xfer.runtime.warm_client`, its server :mod:`nni_xfer.runtime.warm_server`.
"""
import sys

from nni_xfer.runtime.warm_client import main

if __name__ == '__main__':
    sys.exit(main())
