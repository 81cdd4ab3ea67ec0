"""Real nnictl runs of ModuleNet on digits: NSGA-II search over kb modules, then the fine-tuning stage."""
import pytest
import torch
import yaml

from nni_xfer.stages import write_stage_config
from nni_xfer.strategies.modulenet.finetune import finetune_config
from nni_xfer.strategies.modulenet.kb import KnowledgeBase, build_kb
from nni_xfer.adapters.experiments import create, finished, free_port, nnictl, wait, write_config
from nni_xfer.report import make_report
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_modulenet_search_then_finetune(tmp_path):
    kb_root = tmp_path / 'kb'
    build_kb({'root': str(kb_root), 'dataset': 'digits', 'dataset_args': {'val_size': 0.2},
              'train': {'epochs': 2, 'augment': False},
              'sources': [{'name': 'r18', 'arch': 'resnet18', 'width': 0.125},
                          {'name': 'v11', 'arch': 'vgg11_bn', 'width': 0.125}]}, progress=lambda m: None)
    pop, gens = 3, 2
    n = pop * gens
    config, store_path = write_config(
        tmp_path, max_trials=n, concurrency=2, evaluator='modulenet',
        evaluator_args={'epochs': 4, 'alpha': 1.0, 'beta': 0.5},
        class_args={'strategy': 'modulenet', 'mode': 'minimize', 'space': 'module_chain',
                    'space_args': {'kb': str(kb_root), 'head_units': [64]},
                    'strategy_args': {'population': pop, 'generations': gens}})
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(n), timeout=800)
    finally:
        nnictl('stop', exp)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * n, [t['status'] for t in ts]
    store = KnowledgeStore(store_path)
    evs = store.evaluations(experiment_id=exp)
    assert len(evs) == n and len({str(e.architecture) for e in evs}) == n   # no chain trained twice
    state = store.strategy_state(exp)['extra']
    assert len(state['log']) == gens and state['log'][0]['new_survivors'] == pop
    kb = KnowledgeBase(kb_root)
    for e in evs:  # frozen modules leave the search trial exactly as the knowledge base holds them
        m = e.metrics
        assert m['default'] == pytest.approx(m['err_val'] - 1.0 * m['lrate'] + 0.5 * m['sim'])
        saved = torch.load(e.checkpoint, weights_only=True)['state_dict']
        for j in range(5):
            src = e.architecture[f'module_{j}']
            for k, v in kb.module_state(src, j).items():
                assert torch.equal(saved[f'positions.{j}.module.module.{k}'], v)

    ft = finetune_config(config, exp, top_k=1, epochs=2)
    ft['experimentWorkingDirectory'] = str(tmp_path / 'nni-ft')
    ft_path = write_stage_config(tmp_path / 'finetune.yml', ft, config)
    m = ft['maxTrialNumber']
    assert m == 3  # top-1 searched + 2 originals
    port = free_port()
    exp2 = create(ft_path, port)
    try:
        _, ts = wait(port, finished(m), timeout=800)
    finally:
        nnictl('stop', exp2)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * m
    table = make_report(store, exp2, tmp_path / 'report').table
    assert 'original r18' in table and 'original v11' in table and 'searched' in table
    assert all('test_acc' in e.metrics for e in store.evaluations(experiment_id=exp2))
    assert yaml.safe_load(ft_path.read_text())['tuner']['classArgs']['space_args']['frozen'] is False
