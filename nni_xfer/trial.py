"""``python -m nni_xfer.trial``: run one trial (every experiment's ``trialCommand``).

Kept at this short name because every exp.yml, the docs and the container image use it; the runner
is :mod:`nni_xfer.runtime.trial`. The trial process is set up before the runner's imports.
"""
import os
import sys

if __name__ == '__main__':
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch loads OpenMP (see the runner)
    from nni_xfer.runtime.lightweight import trial_process
    trial_process()
    from nni_xfer.runtime.trial import main
    sys.exit(main())
