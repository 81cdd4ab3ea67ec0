"""Real ``nnictl`` experiments on the local training service: real trainer, ``digits``."""
import pytest

from nni_xfer.spec import REPORTED_METRICS
from nni_xfer.store import KnowledgeStore

from nni_xfer.adapters.experiments import create, final_metrics, finished, free_port, nnictl, trials, wait, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_quick_random_search_local(tmp_path):
    config, store_path = write_config(tmp_path, max_trials=3, epochs=2)
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(3), timeout=600)
        assert len(ts) == 3
        assert [t['status'] for t in ts] == ['SUCCEEDED'] * 3
        for t in ts:
            m = final_metrics(t)
            assert m is not None and 0.0 <= m['default'] <= 1.0
            # what NNI (and its web portal, one axis per numeric key) gets: the few numbers of
            # REPORTED_METRICS, `default` first (issues 17, 25)
            assert list(m) == list(REPORTED_METRICS), m
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values()), m
            assert m['default'] > 0.3  # real training on digits beats chance (0.1) by far
    finally:
        nnictl('stop', exp)
    store = KnowledgeStore(store_path)
    evs = store.evaluations(experiment_id=exp)
    assert [e.status for e in evs] == ['SUCCEEDED'] * 3
    assert {e.trial_id for e in evs} == {t['trialJobId'] for t in ts}
    reported = {t['trialJobId']: final_metrics(t) for t in ts}
    for e in evs:
        # the store has NNI's numbers and, through the trial's artifacts file, every other metric,
        # the checkpoint and its sha256
        assert {k: e.metrics[k] for k in REPORTED_METRICS} == reported[e.trial_id]
        for key in ('inherited_acc', 'trainable_params', 'flops', 'train_seconds', 'images_per_second',
                    'setup_seconds', 'trial_seconds'):
            assert isinstance(e.metrics.get(key), (int, float)), (key, e.metrics)
        assert e.checkpoint.endswith(f'/{exp}/{e.proposal_id}.pt') and len(e.sha256) == 64
        assert e.metrics['checkpoint'] == e.checkpoint and e.metrics['sha256'] == e.sha256
    assert len({str(sorted(e.architecture.items())) for e in evs}) == 3


def test_resume_loses_nothing_and_repeats_nothing(tmp_path):
    config, store_path = write_config(tmp_path, max_trials=5, epochs=1)
    port = free_port()
    exp = create(config, port)
    try:
        wait(port, lambda s, ts: sum(t['status'] == 'SUCCEEDED' for t in ts) >= 2, timeout=600)
    finally:
        nnictl('stop', exp)
    before = {e.proposal_id: e for e in KnowledgeStore(store_path).evaluations(experiment_id=exp, status='SUCCEEDED')}
    assert len(before) >= 2
    port2 = free_port()
    nnictl('resume', exp, '--port', str(port2))
    try:
        wait(port2, finished(5), timeout=600)
        ts = trials(port2)
    finally:
        nnictl('stop', exp)
    after = KnowledgeStore(store_path).evaluations(experiment_id=exp, status='SUCCEEDED')
    by_id = {e.proposal_id: e for e in after}
    for pid, e in before.items():  # nothing completed is lost or changed
        assert by_id[pid].metrics == e.metrics
    assert len(after) > len(before)  # the resumed search went on
    keys = [str(sorted(e.architecture.items())) for e in after]
    assert len(keys) == len(set(keys)), 'an architecture was evaluated twice'
    assert sum(t['status'] == 'SUCCEEDED' for t in ts) >= len(after) - len(before)


def test_crashing_trial_is_failed_and_search_goes_on(tmp_path):
    config, store_path = write_config(tmp_path, max_trials=4, evaluator='mock', evaluator_args={'fail_on': [1]})
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(4), timeout=600)
    finally:
        nnictl('stop', exp)
    assert sorted(t['status'] for t in ts) == ['FAILED', 'SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']
    evs = {e.proposal_id: e for e in KnowledgeStore(store_path).evaluations(experiment_id=exp)}
    assert evs[1].status == 'FAILED' and evs[1].error
    assert sum(e.status == 'SUCCEEDED' for e in evs.values()) == 3


def test_bad_config_under_plain_nnictl_shows_its_cause(tmp_path):
    """`nnictl create` (no `nni-xfer check` first) with a config our tuner rejects: the tuner still
    connects (no "did not connect in 10 seconds"), the experiment goes to ERROR, no trial runs, and
    the one-line cause is in the experiment's logs (the portal shows NNI's own "Dispatcher stream
    error" text for any tuner error: README, troubleshooting)."""
    config, _ = write_config(tmp_path, max_trials=2, evaluator='mock', evaluator_args={},
                             class_args={'space_args': {'widths': [16, -32]}})
    port = free_port()
    exp = create(config, port)
    try:
        deadline = __import__('time').time() + 120
        status = None
        while __import__('time').time() < deadline:
            from nni_xfer.adapters.experiments import rest
            status = rest(port, 'check-status')
            if status['status'] == 'ERROR':
                break
            __import__('time').sleep(2)
        assert status is not None and status['status'] == 'ERROR', status
        assert 'did not connect' not in str(status.get('errors'))
        assert trials(port) == []
        logs = ''.join(p.read_text() for p in (tmp_path / 'nni-experiments' / exp / 'log').glob('*.log'))
        assert 'nni-xfer: the tuner cannot start: classArgs.space_args.widths: -32' in logs
    finally:
        nnictl('stop', exp)
