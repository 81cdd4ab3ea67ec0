"""A real nnictl NAO run on digits: random seed cells, one controller round, cells from gradient steps."""
import pytest

from nni_xfer.adapters.experiments import create, free_port, nnictl, wait, write_config, finished
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_nao_round_on_digits(tmp_path):
    n = 3 + 2
    config, store_path = write_config(
        tmp_path, max_trials=n, concurrency=2,
        evaluator_args={'epochs': 1, 'lr': 0.05, 'drop_path': 0.1, 'grad_clip': 5.0, 'num_threads': 1},
        class_args={'strategy': 'nao', 'space': 'nasnet_cells',
                    'space_args': {'B': 3, 'N': 1, 'F': 4, 'ops': 'nao_ws', 'drop_path': 0.1, 'aux_head': True},
                    'strategy_args': {'seed_archs': 3, 'iterations': 1, 'new_per_iteration': 2, 'top_k': 3,
                                      'fill_random': False,
                                      'controller': {'epochs': 30, 'batch_size': 3, 'hidden_size': 32}}})
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(n), timeout=250)
    finally:
        nnictl('stop', exp)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * n, [t['status'] for t in ts]
    evs = KnowledgeStore(store_path).evaluations(experiment_id=exp)
    assert len(evs) == n and all(e.status == 'SUCCEEDED' for e in evs)
    archs = {repr(sorted(e.architecture.items())) for e in evs}
    assert len(archs) == n
    assert all(e.metrics['default'] > 0.1 for e in evs)
