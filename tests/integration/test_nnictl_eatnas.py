"""Real nnictl EAT-NAS runs: a source search on a small task, then elastic transfer to another task.

Stage 1 searches ``digits`` (400 training images: the cheap proxy); stage 2 searches ``synthetic``
(4 classes, so the classifier is re-initialised) seeded from stage 1's experiment id through the
knowledge store (the stage-2 experiment's own ``classArgs.store``). Every stage-2 child records its
parent and inherits weights (shared_fraction > 0).
"""
import copy

import pytest
import yaml

from nni_xfer.adapters.experiments import create, finished, free_port, nnictl, wait, write_config
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SPACE_ARGS = {'stem_channels': 8, 'head_channels': 32}
EVAL = {'epochs': 1, 'batch_size': 64, 'lr': 0.05, 'num_threads': 1}


def _run(tmp_path, name, n, class_args):
    d = tmp_path / name
    d.mkdir()
    config, store = write_config(d, max_trials=n, concurrency=2, evaluator_args=EVAL, class_args=class_args)
    cfg = yaml.safe_load(config.read_text())
    cfg['tuner']['classArgs']['store'] = str(tmp_path / 'store.db')  # one store for both stages
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(n), timeout=500)
    finally:
        nnictl('stop', exp)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * n, [t['status'] for t in ts]
    # a proposal the tuner answered after the budget was spent stays WAITING: count the finished ones
    evs = {e.proposal_id: e for e in KnowledgeStore(tmp_path / 'store.db').evaluations(
        experiment_id=exp, status='SUCCEEDED')}
    assert len(evs) == n
    return exp, evs


def test_eatnas_source_search_then_elastic_transfer(tmp_path):
    strategy_args = {'population': 2, 'sample': 2, 'target': 2e5}
    src_args = {'strategy': 'eatnas', 'space': 'mbv2_blocks', 'space_args': SPACE_ARGS,
                'strategy_args': strategy_args, 'dataset': 'digits', 'dataset_args': {'limit_train': 400}}
    src, evs = _run(tmp_path, 'source', 3, src_args)
    children = [e for e in evs.values() if e.init['kind'] == 'eatnas_share']
    assert len(children) == 1  # P = 2 random initial members, then 1 mutated child
    for c in children:
        assert c.parent['experiment_id'] == src and c.parent['proposal_id'] in evs
        assert 0 < c.metrics['shared_fraction'] <= 1 and 0 <= c.metrics['inherited_acc'] <= 1
    dst_args = copy.deepcopy(src_args)
    dst_args.update(dataset='synthetic', dataset_args={'num_classes': 4, 'image_size': 8, 'num_samples': 256})
    # no seed_from.store: the source is read from this experiment's own classArgs.store (StrategyContext)
    dst_args['strategy_args'] = {**strategy_args, 'seed_from': {'experiment': src}}
    dst, evs2 = _run(tmp_path, 'target', 3, dst_args)
    assert dst != src
    for e in evs2.values():
        assert e.init['kind'] == 'eatnas_share'
        assert 0 < e.metrics['shared_fraction'] < 1  # classifier re-initialised (4 classes, not 10)
        assert 'inherited_acc' in e.metrics
        if e.init.get('parent'):  # the initial population: parent = the source's basic model
            assert e.init['parent']['experiment_id'] == src and e.init['parent']['proposal_id'] in evs
        else:  # mutated children: parent within the target search
            assert e.parent['experiment_id'] == dst
    assert sum(1 for e in evs2.values() if e.init.get('parent')) == 2
