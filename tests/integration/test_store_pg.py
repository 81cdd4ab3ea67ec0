"""Real nnictl experiments on a PostgreSQL knowledge store (a real server: NNI_XFER_TEST_PG_URL; .ci/run
starts one): a random search writes into it, then an XferNAS search on another dataset reads that
search as its source knowledge through the server; the report reads it; no password anywhere."""
import os
import subprocess

import pytest

from nni_xfer.config import check_config
from nni_xfer.adapters.experiments import create, finished, free_port, nnictl, wait, write_config
from nni_xfer.store import KnowledgeStore
from store_backends import PG_ENV, drop_pg_database, new_pg_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f'no PostgreSQL server ({PG_ENV} not set)')]

SPACE_ARGS = {'B': 2, 'N': 1, 'F': 4, 'ops': 'nao_ws'}


@pytest.fixture
def pg_url():
    url, name = new_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


def _run(config, trials: int) -> tuple[str, list[dict]]:
    assert check_config(config) == []
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(trials), timeout=300)
    finally:
        nnictl('stop', exp)
    return exp, ts


def test_a_search_reads_an_earlier_search_through_postgresql(tmp_path, pg_url, capsys):
    assert ':' not in pg_url.split('://', 1)[1].split('@')[0]   # no password in the URL: libpq's PGPASSWORD
    source_dir, target_dir = tmp_path / 'source', tmp_path / 'target'
    source_dir.mkdir()
    target_dir.mkdir()
    config, _ = write_config(source_dir, max_trials=3, concurrency=3, evaluator='mock', evaluator_args={},
                             class_args={'space': 'nasnet_cells', 'space_args': SPACE_ARGS, 'dataset': 'synthetic',
                                         'dataset_args': {'num_classes': 6}, 'store': pg_url})
    src_exp, ts = _run(config, 3)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * 3
    store = KnowledgeStore(pg_url, readonly=True)
    assert len(store.evaluations(experiment_id=src_exp, status='SUCCEEDED')) == 3

    strategy_args = {'iterations': 1, 'new_per_iteration': 2, 'phase2_after': 2, 'top_k': 2,
                     'controller': {'epochs': 5, 'batch_size': 4}}
    config, _ = write_config(target_dir, max_trials=2, concurrency=2, evaluator='mock', evaluator_args={},
                             class_args={'strategy': 'xfernas', 'space': 'nasnet_cells', 'space_args': SPACE_ARGS,
                                         'strategy_args': strategy_args, 'store': pg_url})
    exp, ts = _run(config, 2)
    assert [t['status'] for t in ts] == ['SUCCEEDED'] * 2
    state = store.strategy_state(exp)
    assert [t['key'] for t in state['extra']['xfernas']['sources']] == ['synthetic(num_classes=6)']
    assert [h['meta']['phase'] for h in state['history']] == [1, 1]
    assert {e.experiment_id for e in store.evaluations()} == {src_exp, exp}

    from nni_xfer.cli import main
    assert main(['report', exp, '--store', pg_url, '-o', str(tmp_path / 'report')]) == 0
    assert exp in capsys.readouterr().out
    # the password is nowhere: not in NNI's experiment folders and logs, nor in the store's rows
    password = os.environ.get('PGPASSWORD')
    if password:
        found = subprocess.run(['grep', '-rl', password, str(tmp_path)], capture_output=True, text=True).stdout
        assert found == ''
        assert password not in repr(store.experiments())
    store.close()
