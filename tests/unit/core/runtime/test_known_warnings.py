"""Quiet by default (issue 25): the known third-party messages are hidden at our entry points, ours are not."""
import logging
import os
import subprocess
import sys
import warnings

import pytest

from nni_xfer.runtime.known_warnings import PYTHONWARNINGS_KNOWN, filter_known_warnings, quiet_env

pytestmark = pytest.mark.timeout(120)


def test_quiet_env_appends_and_keeps_the_users_entries():
    assert quiet_env({})['PYTHONWARNINGS'] == PYTHONWARNINGS_KNOWN
    env = quiet_env({'PYTHONWARNINGS': 'error::DeprecationWarning', 'X': '1'})
    assert env['PYTHONWARNINGS'] == f'error::DeprecationWarning,{PYTHONWARNINGS_KNOWN}' and env['X'] == '1'
    assert quiet_env(env)['PYTHONWARNINGS'] == env['PYTHONWARNINGS']   # once


def test_nnictl_we_start_prints_no_pkg_resources_warning():
    from nni_xfer.adapters.experiments import nnictl
    assert 'pkg_resources' not in nnictl('--version')
    exe = os.path.join(os.path.dirname(sys.executable), 'nnictl')   # the same nnictl typed by hand
    raw = subprocess.run([exe, '--version'], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != 'PYTHONWARNINGS'})
    assert 'pkg_resources is deprecated' in raw.stderr   # the warning is real: only our env hides it


def test_nni_sequential_engine_line_dropped_other_lines_kept(caplog):
    filter_known_warnings()
    filter_known_warnings()   # idempotent: one filter
    logger = logging.getLogger('nni.nas.experiment.config.experiment')
    assert len(logger.filters) == len({type(f) for f in logger.filters})
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning('`training_service` will be ignored for sequential execution engine.')
        logger.warning('something else NNI says')
    assert [r.getMessage() for r in caplog.records] == ['something else NNI says']


def test_our_own_warnings_still_show():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        filter_known_warnings()
        warnings.warn_explicit('pkg_resources is deprecated as an API.', UserWarning, 'x.py', 1,
                               module='nni_xfer.something')   # same text, not from nnictl: shown
        warnings.warn('nni-xfer: a warning of ours', UserWarning)
    assert [str(w.message) for w in seen] == ['pkg_resources is deprecated as an API.', 'nni-xfer: a warning of ours']


@pytest.mark.slow
def test_cli_prints_no_known_warning():
    r = subprocess.run([sys.executable, '-W', 'default', '-c', 'from nni_xfer.cli import main; main(["list"])'],
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0 and 'random' in r.stdout
    assert 'is found to be not a nn.Module' not in r.stderr and 'pkg_resources' not in r.stderr, r.stderr
