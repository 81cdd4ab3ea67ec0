"""``NasExperiment`` with the nni-xfer strategy adapter (sequential engine, in process)."""
import importlib.util
from pathlib import Path

import pytest

from nni_xfer.store import KnowledgeStore

EXAMPLE = Path(__file__).resolve().parents[4] / 'examples' / 'quickstart' / 'nas_experiment.py'


def _load_example():
    spec = importlib.util.spec_from_file_location('nas_example', EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nas_experiment_example_runs_and_stores(tmp_path):
    store = tmp_path / 'store.db'
    strategy = _load_example().main(['--trials', '3', '--epochs', '1', '--store', str(store), '--port', '0'])
    evs = KnowledgeStore(store).evaluations(experiment_id=strategy.experiment_id)
    assert [e.status for e in evs] == ['SUCCEEDED'] * 3
    assert all(e.metrics['default'] > 0.1 for e in evs)
    assert strategy.core.best() is not None


@pytest.mark.timeout(300)
def test_nas_experiment_mock_evaluator(tmp_path):
    store = tmp_path / 'store.db'
    strategy = _load_example().main(['--trials', '5', '--evaluator', 'mock', '--store', str(store), '--port', '0'])
    evs = KnowledgeStore(store).evaluations(experiment_id=strategy.experiment_id)
    assert len(evs) == 5 and all(e.status == 'SUCCEEDED' for e in evs)
    assert len({str(sorted(e.architecture.items())) for e in evs}) == 5
    # numeric final results; checkpoint and sha256 come from the trial's artifacts file (issue 17)
    assert all(e.checkpoint and len(e.sha256) == 64 and e.metrics['sha256'] == e.sha256 for e in evs)
