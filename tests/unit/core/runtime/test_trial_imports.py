"""Trial processes import no PyTorch Lightning / torchmetrics (issue 13: trial start-up), no
``scipy.stats``, ``torch.utils.flop_counter`` or ``torch._dynamo`` (issue 23), and give the same
results as with NNI's default imports and PyTorch's FLOP counter.

A fresh process runs ``python -m nni_xfer.trial --spec`` (``__main__``)
on every registered space's example, then reports ``sys.modules``. The strategy side keeps NNI's
defaults (tests/unit/core/test_registries.py builds the same spaces as NNI model spaces).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nni_xfer.data.pipeline import dataset_info
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import build_space, space_info

ROOT = Path(__file__).resolve().parents[4]

RUNNER = r'''
import json, runpy, sys
specs = json.loads(sys.argv[1])
removed = {}
for spec in specs:
    sys.argv = ['nni_xfer.trial', '--spec', spec]
    try:
        runpy.run_module('nni_xfer.trial', run_name='__main__', alter_sys=True)
    except SystemExit as exc:
        if exc.code:
            raise SystemExit(f'trial {spec} exited with {exc.code}')
    from nni_xfer.runtime.lightweight import removed_modules_loaded
    removed[spec] = {'modules': removed_modules_loaded(), 'torchvision': 'torchvision' in sys.modules}
print('REMOVED ' + json.dumps(removed))
heavy = sorted({m.split('.')[0] for m in sys.modules
                if m.split('.')[0] in ('pytorch_lightning', 'lightning', 'lightning_fabric', 'torchmetrics')})
import nni.nas.nn.pytorch as nas_nn
print('RESULT ' + json.dumps({'heavy': heavy, 'framework': __import__('nni').common.framework.get_default_framework(),
                              'model_space': hasattr(nas_nn, 'ModelSpace')}))
'''


#: Spaces whose trial needs torchvision (module_chain rebuilds its knowledge base's torchvision source
#: networks); ``import torchvision`` loads ``torch._dynamo`` itself (torchvision.ops), as the bare
#: ``import torch, torchvision`` of the start-up benchmark does. Run last, so that the other spaces'
#: trials are checked for ``torch._dynamo`` too.
NEEDS_TORCHVISION = ('module_chain',)


def _specs(tmp_path: Path) -> list[str]:
    paths = []
    names = sorted(SEARCH_SPACES.names(), key=lambda n: (n in NEEDS_TORCHVISION, n))
    for name in names:
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
                'experiment_id': f'imports-{name}'}
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps(spec))
        paths.append(str(path))
    return paths


def _variant(specs: list[str], tag: str, root: Path, **evaluator_args) -> list[str]:
    """Copies of the specs that write their checkpoints under ``root``, with ``evaluator_args`` changed."""
    paths = []
    for spec in specs:
        data = json.loads(Path(spec).read_text())
        data['checkpoint_root'] = str(root)
        data['evaluator_args'] = {**data['evaluator_args'], **evaluator_args}
        path = Path(spec).with_name(f'{Path(spec).stem}-{tag}.json')
        path.write_text(json.dumps(data))
        paths.append(str(path))
    return paths


def _run(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code, *args], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=600)


def _finals(stdout: str) -> list[dict]:
    return [json.loads(line[len('[final] '):]) for line in stdout.splitlines() if line.startswith('[final] ')]


#: Final-metric keys that measure time (they differ between any two runs).
TIME_KEYS = ('train_seconds', 'images_per_second', 'setup_seconds', 'trial_seconds')


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trial_process_imports_no_lightning(tmp_path, monkeypatch):
    """Every space's trial, lean (the default) and then with NNI's default imports and PyTorch's
    FlopCounterMode (the code before issues 13 and 23): the lean trials import none of the removed
    modules, and both give the same final metrics (time measurements aside) and checkpoints.

    The lean process first runs every space's whole 0-epoch trial (issue 23's start-up target: data,
    model, evaluation, FLOPs, checkpoint), after each of which none of
    ``nni_xfer.runtime.lightweight.REMOVED_MODULES`` may be loaded; then the 1-epoch trials, which may load
    ``torch._dynamo`` only: ``torch.optim`` imports it when an optimizer is built
    (``torch._compile._disable_dynamo``), as ``import torchvision`` does in the bare baseline. The
    dataset cache is primed first: the first trial of a dataset on a machine builds it (digits comes
    from scikit-learn, which imports ``scipy.stats``); every later trial reads the cache."""
    import torch

    from nni_xfer.data.pipeline import load_dataset

    specs = _specs(tmp_path)
    monkeypatch.setenv('NNI_XFER_HOME', str(tmp_path / 'home'))
    for spec in specs:
        data = json.loads(Path(spec).read_text())
        load_dataset(data['dataset'], **data['dataset_args'])
    env = dict(os.environ, NNI_XFER_HOME=str(tmp_path / 'home'), OMP_NUM_THREADS='1')
    for key in ('NNI_FRAMEWORK', 'NNI_XFER_LEAN_IMPORTS', 'NNI_XFER_FLOPS'):
        env.pop(key, None)
    whole = _variant(specs, 'whole', tmp_path / 'ckpt-whole', epochs=0)
    p = _run(RUNNER, json.dumps(whole + specs), env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.count('[final]') == 2 * len(specs)
    result = json.loads(p.stdout.split('RESULT ', 1)[1])
    assert result['heavy'] == [], f'a trial imported {result["heavy"]}'
    assert result['framework'] == 'none' and result['model_space']
    removed = json.loads(p.stdout.split('REMOVED ', 1)[1].splitlines()[0])
    for spec in whole:
        r = removed[spec]
        unexpected = [m for m in r['modules'] if not (m.startswith('torch._dynamo') and r['torchvision'])]
        assert not unexpected, f'{Path(spec).stem} imported {unexpected[:5]}'
        if not Path(spec).stem.startswith(NEEDS_TORCHVISION):
            assert not r['torchvision'], f'{Path(spec).stem} imported torchvision'
    for spec in specs:
        unexpected = [m for m in removed[spec]['modules'] if not m.startswith('torch._dynamo')]
        assert not unexpected, f'{Path(spec).stem} imported {unexpected[:5]}'

    before = _variant(specs, 'before', tmp_path / 'ckpt-before')
    p2 = _run(RUNNER, json.dumps(before), env=dict(env, NNI_XFER_LEAN_IMPORTS='0', NNI_XFER_FLOPS='torch'))
    assert p2.returncode == 0, p2.stdout[-2000:] + p2.stderr[-3000:]
    assert json.loads(p2.stdout.split('RESULT ', 1)[1])['heavy'] != [], 'the "before" run was lean too'
    for spec, old_spec, new, old in zip(specs, before, _finals(p.stdout)[len(specs):], _finals(p2.stdout)):
        name = Path(spec).stem
        assert new['flops'] > 0, name
        assert {k: v for k, v in new.items() if k not in TIME_KEYS} == \
            {k: v for k, v in old.items() if k not in TIME_KEYS}, name
        ckpt_new = torch.load(_checkpoint(spec), weights_only=True)
        ckpt_old = torch.load(_checkpoint(old_spec), weights_only=True)
        assert ckpt_new.keys() == ckpt_old.keys(), name
        for ck in (ckpt_new, ckpt_old):
            ck['metrics'] = {k: v for k, v in ck['metrics'].items() if k not in TIME_KEYS}
        assert {k: v for k, v in ckpt_new.items() if k != 'state_dict'} == \
            {k: v for k, v in ckpt_old.items() if k != 'state_dict'}, name
        assert ckpt_new['state_dict'].keys() == ckpt_old['state_dict'].keys(), name
        for key, value in ckpt_new['state_dict'].items():
            assert torch.equal(value, ckpt_old['state_dict'][key]), f'{name}: {key}'


def _checkpoint(spec_path: str) -> Path:
    from nni_xfer.spec import TrialSpec
    return Path(TrialSpec.from_parameters(json.loads(Path(spec_path).read_text())).checkpoint_path())


@pytest.mark.slow
def test_lean_imports_off_restores_nni_defaults():
    """The switch is real: with NNI_XFER_LEAN_IMPORTS=0 NNI's model-space import pulls Lightning."""
    code = ('import sys; from nni_xfer.runtime.lightweight import enable, heavy_modules_loaded; '
            'assert not enable(); import nni.nas.nn.pytorch; print(heavy_modules_loaded())')
    env = dict(os.environ, NNI_XFER_LEAN_IMPORTS='0')
    env.pop('NNI_FRAMEWORK', None)
    p = _run(code, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'pytorch_lightning' in p.stdout


def test_deferred_hub_package_loads_on_attribute():
    """Hub submodules import without the hub's __init__; a hub class read from the package still works."""
    code = ('from nni_xfer.runtime.lightweight import enable, heavy_modules_loaded; assert enable(); '
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
    code = ('from nni_xfer.runtime.lightweight import enable, heavy_modules_loaded; assert enable(); '
            'from nni_xfer.registry import ALL, IMPORT_ERRORS; [r.names() for r in ALL.values()]; '
            'assert not IMPORT_ERRORS, IMPORT_ERRORS; print("HEAVY", heavy_modules_loaded())')
    env = dict(os.environ)
    env.pop('NNI_FRAMEWORK', None)
    env.pop('NNI_XFER_LEAN_IMPORTS', None)
    p = _run(code, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'HEAVY []' in p.stdout, p.stdout[-500:]


@pytest.mark.slow
def test_registry_get_imports_only_the_plugin_it_needs():
    code = ('import sys; from nni_xfer.registry import SEARCH_SPACES, INITIALIZERS, EVALUATORS; '
            'SEARCH_SPACES.get("simple_cnn"); INITIALIZERS.get("fresh"); EVALUATORS.get("train"); '
            'other = sorted(m for m in sys.modules if m.startswith(("nni_xfer.search_spaces.", "nni_xfer.strategies."))); '
            'assert other == ["nni_xfer.search_spaces.simple_cnn"], other; '
            'names = SEARCH_SPACES.names(); assert "nasnet_cells" in names and "mbv2_blocks" in names, names; '
            'assert "eatnas_share" in INITIALIZERS.names(); print("ok")')
    p = _run(code)
    assert p.returncode == 0 and 'ok' in p.stdout, p.stderr[-2000:]


def test_nni_numerical_still_samples_with_scipy_stats_deferred():
    """NNI's Numerical distributions work in a lean process: scipy.stats is imported on first use."""
    code = ('import sys; from nni_xfer.runtime.lightweight import enable, removed_modules_loaded; assert enable(); '
            'import nni; assert "scipy.stats" not in sys.modules, removed_modules_loaded(); '
            'import nni.mutable as m; import numpy as np; '
            'v = m.Numerical(0.5, 2.0, log_distributed=True, label="lr"); x = v.random(random_state=np.random.RandomState(0)); '
            'n = m.Numerical(mu=0.0, sigma=1.0, label="n"); n.random(); '
            'import scipy.stats; assert type(scipy.stats.norm).__module__.startswith("scipy.stats"); '
            'print("OK", 0.5 <= x <= 2.0, "scipy.stats" in sys.modules)')
    env = dict(os.environ)
    env.pop('NNI_FRAMEWORK', None)
    env.pop('NNI_XFER_LEAN_IMPORTS', None)
    p = _run(code, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'OK True True' in p.stdout, p.stdout[-500:]


def test_hook_flops_match_flop_counter_mode():
    """count_flops' module hooks give FlopCounterMode's numbers: on layers of every kind it counts (3-D
    linear input, grouped/strided/dilated/transposed convolutions, an unbatched input) and on random
    architectures of the built-in NNI choice spaces (every space's example: the trial test above)."""
    import random

    import numpy as np
    import torch
    import torch.nn as nn

    from nni_xfer.training.evaluators import count_flops
    from nni_xfer.space import freeze

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, groups=4, dilation=2, padding=2, bias=False)
            self.t = nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.c1d = nn.Conv1d(4, 6, 3)
            self.l3 = nn.Linear(14, 5)
            self.fc = nn.Linear(6 * 5, 3)

        def forward(self, x):
            x = self.t(self.c2(self.c1(x)))            # (1, 4, 16, 16)
            x = self.c1d(x.flatten(2)[:, :, :16])     # (1, 6, 14)
            x = self.l3(x)                            # (1, 6, 5): linear on a 3-D input
            return self.fc(x.flatten(1))

    model = Mixed()
    assert count_flops(model, (3, 16, 16)) == count_flops(model, (3, 16, 16), method='torch') > 0
    from torch.utils.flop_counter import FlopCounterMode

    from nni_xfer.training.evaluators import _module_flops
    unbatched, x = nn.Conv2d(2, 3, 3), torch.zeros(2, 5, 5)  # a (C, H, W) input, no batch dimension
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = unbatched(x)
    assert _module_flops(unbatched, (x,), out) == counter.get_total_flops() == 2 * (3 * 3) * 3 * 2 * (3 * 3)

    rng = random.Random(0)
    for name in ('simple_cnn', 'nasnet_cells'):  # spaces of plain NNI choices (others: structured samples)
        info = dataset_info('digits')
        space = build_space(name, {}, info)
        shape = (info.in_channels, info.image_size, info.image_size)
        sample: dict = {}
        space.random(memo=sample, random_state=np.random.RandomState(rng.randrange(1 << 30)))
        model = freeze(space, sample)
        assert count_flops(model, shape) == count_flops(model, shape, method='torch'), (name, sample)
