"""A non-editable install works from any working directory, the repository root included.

Builds the wheel, installs it (no dependencies: they come from the test environment through a
``.pth`` line) into a fresh virtual environment, then runs ``python -m nni_xfer.cli list`` and a
real trial (``python -m nni_xfer.trial --spec``) from the repository root — where the source
``nni_xfer/`` shadows the installed package — and from an unrelated folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def _run(cmd, cwd, env=None, timeout=300):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f'{cmd} in {cwd} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}'
    return res


@pytest.fixture(scope='module')
def wheel_python(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('wheel')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp / 'dist'),
          str(REPO)], cwd=tmp)
    wheel = next((tmp / 'dist').glob('nni_xfer-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ('nni_xfer/strategies/eas/controller.py', 'nni_xfer/strategies/modulenet/kb.py',
                 'nni_xfer/search_spaces/eas_plain_cnn.py', 'nni_xfer/transfer/net2net.py'):
        assert must in names, f'{must} missing from the wheel'
    venv = tmp / 'venv'
    _run([sys.executable, '-m', 'venv', str(venv)], cwd=tmp)
    py = venv / 'bin' / 'python'
    _run([str(py), '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', str(wheel)], cwd=tmp)
    site = Path(_run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], cwd=tmp)
                .stdout.strip())
    # the dependencies (torch, nni, ...) of the test environment, after the wheel's own site-packages
    (site / 'zz_test_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    return py


def _env(tmp_path):
    env = dict(os.environ, NNI_XFER_HOME=str(tmp_path / 'home'), PYTHONWARNINGS='ignore')
    env.pop('PYTHONPATH', None)
    return env


@pytest.mark.parametrize('where', ['repository', 'elsewhere'])
def test_cli_and_trial_run_from_any_folder(wheel_python, tmp_path, where):
    cwd = REPO if where == 'repository' else tmp_path
    env = _env(tmp_path)
    out = _run([str(wheel_python), '-m', 'nni_xfer.cli', 'list'], cwd=cwd, env=env).stdout
    for name in ('eas', 'modulenet', 'eas_plain_cnn', 'net2net'):
        assert name in out
    spec = {'space': 'simple_cnn', 'architecture': {'width1': 16, 'width2': 16, 'depth1': 1, 'depth2': 1, 'kernel1': 3, 'kernel2': 3}, 'evaluator': 'train',
            'evaluator_args': {'epochs': 1}, 'dataset_args': {'limit_train': 200},
            'experiment_id': f'pkg-{where}', 'checkpoint_root': str(tmp_path / 'ckpt')}
    path = tmp_path / 'spec.json'
    path.write_text(json.dumps(spec))
    res = _run([str(wheel_python), '-m', 'nni_xfer.trial', '--spec', str(path)], cwd=cwd, env=env)
    assert (tmp_path / 'ckpt' / f'pkg-{where}' / '0.pt').is_file(), res.stdout[-2000:]
    where_from = _run([str(wheel_python), '-c', 'import nni_xfer.strategies.eas as m; print(m.__file__)'],
                      cwd=cwd, env=env).stdout
    assert 'strategies' in where_from and (where == 'repository') == where_from.startswith(str(REPO))
