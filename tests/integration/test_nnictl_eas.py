"""A real nnictl EAS run on digits: children start from the parent's weights (Net2Net)."""
import pytest

from nni_xfer.adapters.experiments import create, final_metrics, finished, free_port, nnictl, wait, write_config
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-64']


def test_eas_quick_children_inherit_parent_accuracy(tmp_path):
    n = 1 + 2 * 3
    config, store_path = write_config(
        tmp_path, max_trials=n, concurrency=2, evaluator_args={'epochs': 3, 'lr': 0.02},
        class_args={'strategy': 'eas', 'space': 'eas_plain_cnn', 'space_args': {'start': START},
                    'strategy_args': {'episodes_per_stage': 2, 'networks_per_episode': 3, 'wider_steps': 2,
                                      'deeper_steps': 1}})
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(n), timeout=800)
    finally:
        nnictl('stop', exp)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * n, [t['status'] for t in ts]
    evs = {e.proposal_id: e for e in KnowledgeStore(store_path).evaluations(experiment_id=exp)}
    assert len(evs) == n and all(e.status == 'SUCCEEDED' for e in evs.values())
    children = [e for e in evs.values() if e.init['kind'] == 'net2net']
    assert len(children) == n - 1
    for child in children:
        parent = evs[child.parent['proposal_id']]
        assert abs(child.metrics['inherited_acc'] - parent.metrics['val_acc']) <= 0.01, (child, parent)
    assert all(final_metrics(t)['default'] > 0.5 for t in ts)
