"""Real nnictl XferNAS run: imported source knowledge -> phase-1 proposals on digits; bad classArgs named."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from nni_xfer.config import check_config
from nni_xfer.adapters.experiments import create, finished, free_port, nnictl, wait, write_config
from nni_xfer.search_spaces.nasnet_cells import CellGrammar
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SPACE_ARGS = {'B': 2, 'N': 1, 'F': 4, 'ops': 'nao_ws'}


def test_xfernas_with_imported_sources(tmp_path):
    g = CellGrammar(2, 'nao_ws')
    rng = np.random.Generator(np.random.PCG64(0))
    rows = []
    for dataset, args in (('synthetic', {'num_classes': 6}), ('fashion_mnist', {})):
        for _ in range(10):
            arch = g.random_sample(rng)
            acc = 0.5 + 0.05 * sum(v == 'sep_conv 3x3' for v in arch.values()) + 0.01 * rng.random()
            rows.append({'architecture': g.to_tokens(arch), 'dataset': dataset, 'dataset_args': args,
                         'accuracy': acc})
    src = tmp_path / 'paper_sets.json'
    src.write_text(json.dumps(rows))
    store_path = tmp_path / 'store.db'
    out = subprocess.run([sys.executable, '-m', 'nni_xfer.cli', 'xfernas', 'import', str(src), '--space',
                          'nasnet_cells', '--space-args', json.dumps(SPACE_ARGS), '--store', str(store_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'imported 20 evaluations' in out.stdout

    # target (classArgs.dataset: digits) and store (classArgs.store) come from the experiment itself
    strategy_args = {'iterations': 1, 'new_per_iteration': 3,
                     'phase2_after': 3, 'top_k': 4, 'controller': {'epochs': 20, 'batch_size': 10}}
    config, _ = write_config(tmp_path, max_trials=3, concurrency=2, evaluator_args={'epochs': 1, 'num_threads': 1},
                             class_args={'strategy': 'xfernas', 'space': 'nasnet_cells', 'space_args': SPACE_ARGS,
                                         'strategy_args': strategy_args, 'store': str(store_path)})
    assert check_config(config) == []
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(3), timeout=240)
    finally:
        nnictl('stop', exp)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * 3
    store = KnowledgeStore(store_path)
    evs = store.evaluations(experiment_id=exp, status='SUCCEEDED')
    assert len(evs) == 3 and all(0 <= e.metric('val_acc') <= 1 for e in evs)
    state = store.strategy_state(exp)
    metas = [h['meta'] for h in state['history']]
    assert [m['phase'] for m in metas] == [1, 1, 1]
    assert all(m['lambda'] >= 10 for m in metas if m['role'] == 'nao')
    assert [t['key'] for t in state['extra']['xfernas']['sources']] == ['fashion_mnist', 'synthetic(num_classes=6)']
    from nni_xfer.strategies.xfernas.report import xfernas_phases
    assert 'phase 1 (source seeds): 3 trials' in '\n'.join(xfernas_phases(evs, exp, store=store))

    # bad classArgs: one line naming the key, before any trial
    raw = yaml.safe_load(config.read_text())
    for bad, key in (({'eta': 0}, 'strategy_args.eta'), ({'sources': ['no-such-experiment']}, 'strategy_args.sources'),
                     ({'sources': [exp], 'target': 'cifar10'}, None)):
        raw['tuner']['classArgs']['strategy_args'] = {**strategy_args, **bad}
        p = tmp_path / 'bad.yml'
        p.write_text(yaml.safe_dump(raw))
        problems = check_config(p)
        if key is None:
            assert problems == []  # an earlier xfernas run of digits is source knowledge for cifar10
        else:
            assert len(problems) == 1 and problems[0].startswith(f'tuner.classArgs.{key}:'), problems
