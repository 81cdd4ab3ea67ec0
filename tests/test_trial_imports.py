"""Trial processes import no PyTorch Lightning / torchmetrics (issue 13: trial start-up).

A fresh process runs ``nni_xfer.trial`` as ``python -m nni_xfer.trial --spec`` does (``__main__``)
on every registered space's example, then reports ``sys.modules``. The strategy side keeps NNI's
defaults (tests/test_registries.py builds the same spaces as NNI model spaces).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nni_xfer.datasets import dataset_info
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import build_space, space_info

ROOT = Path(__file__).resolve().parent.parent

RUNNER = r'''
import json, runpy, sys
specs = json.loads(sys.argv[1])
for spec in specs:
    sys.argv = ['nni_xfer.trial', '--spec', spec]
    try:
        runpy.run_module('nni_xfer.trial', run_name='__main__', alter_sys=True)
    except SystemExit as exc:
        if exc.code:
            raise SystemExit(f'trial {spec} exited with {exc.code}')
heavy = sorted({m.split('.')[0] for m in sys.modules
                if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'lightning_fabric', 'torchmetrics')})
import nni.nas.nn.pytorch as nas_nn
print('RESULT ' + json.dumps({'heavy': heavy, 'framework': __import__('nni').common.framework.get_default_framework(),
                              'model_space': hasattr(nas_nn, 'ModelSpace')}))
'''


def _specs(tmp_path: Path) -> list[str]:
    paths = []
    for name in SEARCH_SPACES.names():
        cls = SEARCH_SPACES.get(name)
        fn = getattr(cls, 'contract_space_args', None)
        space_args = fn(tmp_path / f'args-{name}') if fn is not None else {}
        size = getattr(cls, 'contract_image_size', None)
        dataset, dataset_args = (('synthetic', {'image_size': size, 'num_classes': 10, 'num_samples': 32})
                                 if size else ('digits', {'limit_train': 16}))
        space = build_space(name, space_args, dataset_info(dataset, **dataset_args))
        sample = space_info(name, space_args, space).extra.get('example') or space.example()
        spec = {'space': name, 'space_args': space_args, 'architecture': sample, 'dataset': dataset,
                'dataset_args': dataset_args, 'evaluator': 'train',
                'evaluator_args': {'epochs': 1, 'batch_size': 16}, 'checkpoint_root': str(tmp_path / 'ckpt'),
                'experiment_id': 'imports'}
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps(spec))
        paths.append(str(path))
    return paths


def _run(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code, *args], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.timeout(600)
def test_trial_process_imports_no_lightning(tmp_path):
    specs = _specs(tmp_path)
    env = dict(os.environ, NNI_XFER_HOME=str(tmp_path / 'home'), OMP_NUM_THREADS='1')
    env.pop('NNI_FRAMEWORK', None)
    env.pop('NNI_XFER_LEAN_IMPORTS', None)
    p = _run(RUNNER, json.dumps(specs), env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.count('[final]') == len(specs)
    result = json.loads(p.stdout.split('RESULT ', 1)[1])
    assert result['heavy'] == [], f'a trial imported {result["heavy"]}'
    assert result['framework'] == 'none' and result['model_space']


def test_lean_imports_off_restores_nni_defaults():
    """The switch is real: with NNI_XFER_LEAN_IMPORTS=0 NNI's model-space import pulls Lightning."""
    code = ('import sys; from nni_xfer.lightweight import enable, heavy_modules_loaded; '
            'assert not enable(); import nni.nas.nn.pytorch; print(heavy_modules_loaded())')
    env = dict(os.environ, NNI_XFER_LEAN_IMPORTS='0')
    env.pop('NNI_FRAMEWORK', None)
    p = _run(code, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'pytorch_lightning' in p.stdout


def test_deferred_hub_package_loads_on_attribute():
    """Hub submodules import without the hub's __init__; a hub class read from the package still works."""
    code = ('from nni_xfer.lightweight import enable, heavy_modules_loaded; assert enable(); '
            'from nni.nas.hub.pytorch.proxylessnas import InvertedResidual; '
            'assert heavy_modules_loaded() == [], heavy_modules_loaded(); '
            'import nni.nas.hub.pytorch as hub; assert hub.NASNet.__name__ == "NASNet"; print("ok")')
    env = dict(os.environ)
    env.pop('NNI_FRAMEWORK', None)
    env.pop('NNI_XFER_LEAN_IMPORTS', None)
    p = _run(code, env=env)
    assert p.returncode == 0 and 'ok' in p.stdout, p.stderr[-2000:]


def test_every_plugin_loads_lean():
    """Any initializer/evaluator a trial may name loads the whole plugin tables: still no Lightning."""
    code = ('from nni_xfer.lightweight import enable, heavy_modules_loaded; assert enable(); '
            'from nni_xfer.registry import ALL, IMPORT_ERRORS; [r.names() for r in ALL.values()]; '
            'assert not IMPORT_ERRORS, IMPORT_ERRORS; print("HEAVY", heavy_modules_loaded())')
    env = dict(os.environ)
    env.pop('NNI_FRAMEWORK', None)
    env.pop('NNI_XFER_LEAN_IMPORTS', None)
    p = _run(code, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'HEAVY []' in p.stdout, p.stdout[-500:]


def test_registry_get_imports_only_the_plugin_it_needs():
    code = ('import sys; from nni_xfer.registry import SEARCH_SPACES, INITIALIZERS, EVALUATORS; '
            'SEARCH_SPACES.get("simple_cnn"); INITIALIZERS.get("fresh"); EVALUATORS.get("train"); '
            'other = sorted(m for m in sys.modules if m.startswith(("nni_xfer.search_spaces.", "nni_xfer.strategies."))); '
            'assert other == ["nni_xfer.search_spaces.simple_cnn"], other; '
            'names = SEARCH_SPACES.names(); assert "nasnet_cells" in names and "mbv2_blocks" in names, names; '
            'assert "eatnas_share" in INITIALIZERS.names(); print("ok")')
    p = _run(code)
    assert p.returncode == 0 and 'ok' in p.stdout, p.stderr[-2000:]
