"""The nnictl tuner adapter driven by hand (no NNI manager): store writes, failures, restart."""
import pytest

from nni import NoMoreTrialError

from nni_xfer.errors import ConfigError
from nni_xfer.store import KnowledgeStore
from nni_xfer.runtime.trial import Reporter, run_trial
from nni_xfer.adapters.tuner import XferTuner

pytestmark = pytest.mark.timeout(120)


def _args(tmp_path, **kw):
    args = dict(strategy='random', space='simple_cnn', dataset='digits', evaluator='mock',
                store=str(tmp_path / 'store.db'), checkpoint_root=str(tmp_path / 'ckpt'), seed=0)
    args.update(kw)
    return args


class Quiet(Reporter):
    def __init__(self):
        self.intermediates, self.finals = [], []

    def intermediate(self, m):
        self.intermediates.append(m)

    def final(self, m):
        self.finals.append(m)


@pytest.fixture
def exp_env(monkeypatch):
    monkeypatch.setenv('NNI_EXP_ID', 'exp-test')


def test_tuner_round_trip_and_store(tmp_path, exp_env):
    t = XferTuner(**_args(tmp_path))
    specs = [t.generate_parameters(i) for i in range(3)]
    assert [s['proposal_id'] for s in specs] == [0, 1, 2]
    # run the real trial code with the mock evaluator, report out of order, one failure
    results = {s['proposal_id']: run_trial(s, reporter=Quiet()) for s in specs[:2]}
    t.receive_trial_result(1, specs[1], results[1])
    t.receive_trial_result(0, specs[0], results[0])
    t.trial_end(2, False)
    evs = {e.proposal_id: e for e in KnowledgeStore(tmp_path / 'store.db').evaluations(experiment_id='exp-test')}
    assert evs[0].status == evs[1].status == 'SUCCEEDED' and evs[2].status == 'FAILED'
    assert evs[0].metrics['checkpoint'].endswith('0.pt') and len(evs[0].metrics['sha256']) == 64
    # a new dispatcher (crash + nnictl resume) restores the strategy from the store
    t2 = XferTuner(**_args(tmp_path))
    assert t2.resumed
    nxt = t2.generate_parameters(10)
    assert nxt['proposal_id'] == 3
    done = {str(sorted(s['architecture'].items())) for s in specs[:2]}
    assert str(sorted(nxt['architecture'].items())) not in done


def test_tuner_rejects_bad_class_args_before_any_trial(tmp_path, exp_env):
    with pytest.raises(ConfigError, match=r'^classArgs\.strategy: unknown strategy .*allowed: .*random'):
        XferTuner(**_args(tmp_path, strategy='nope'))
    with pytest.raises(ConfigError, match=r'^classArgs\.strategy_args\.max_trials'):
        XferTuner(**_args(tmp_path, strategy_args={'max_trials': 0}))


def test_no_more_trials_when_space_exhausted(tmp_path, exp_env):
    t = XferTuner(**_args(tmp_path, space_args={'widths': [8], 'depths': [1], 'kernels': [3], 'stages': 1}))
    s = t.generate_parameters(0)
    with pytest.raises(NoMoreTrialError):
        t.generate_parameters(1)
    t.receive_trial_result(0, s, {'default': 0.5})
    assert KnowledgeStore(tmp_path / 'store.db').search_finished('exp-test')  # TUNER_NO_MORE_TRIAL is final


def test_search_over_tells_a_waiting_strategy_from_a_finished_one(tmp_path, exp_env):
    """NNI sets TUNER_NO_MORE_TRIAL whenever the tuner hands out fewer trials than asked; only the
    strategy's own mark in the store makes it an end (CI once stopped an EAT-NAS run after 2 of 8)."""
    from nni_xfer.adapters.experiments import finished, search_over
    ended = [{'status': 'SUCCEEDED'}, {'status': 'FAILED'}]
    assert not search_over('TUNER_NO_MORE_TRIAL', ended, 8, search_finished=False)
    assert search_over('TUNER_NO_MORE_TRIAL', ended, 8, search_finished=True)
    assert not search_over('TUNER_NO_MORE_TRIAL', ended + [{'status': 'RUNNING'}], 8, search_finished=True)
    assert not search_over('NO_MORE_TRIAL', ended, 3) and search_over('NO_MORE_TRIAL', ended, 2)
    assert search_over('DONE', ended, 8) and not search_over('RUNNING', ended, 2)
    # a stateful strategy waiting for its first batch is not finished; it is once it says so
    t = XferTuner(**_args(tmp_path, strategy='eatnas', space='mbv2_blocks',
                          strategy_args={'population': 2, 'sample': 2, 'patience': None}))
    assert len(t.generate_multiple_parameters([0, 1, 2], st_callback=lambda *a: None)) == 2
    store = KnowledgeStore(tmp_path / 'store.db')
    assert not store.search_finished('exp-test')
    assert not finished(8, store, 'exp-test')('TUNER_NO_MORE_TRIAL', ended)


def test_fixed_strategy_tuner_class(tmp_path, exp_env):
    from nni_xfer.adapters import tuner
    cls = tuner.XferTuner_random
    t = cls(**{k: v for k, v in _args(tmp_path).items() if k != 'strategy'})
    assert t.config.strategy == 'random'
    tuner.XferValidator_random().validate_class_args(space='simple_cnn')
    with pytest.raises(ConfigError):
        tuner.XferValidator_random().validate_class_args(space='nope')


def test_missing_and_corrupt_checkpoint_name_the_file(tmp_path, exp_env):
    from nni_xfer.errors import CheckpointError
    t = XferTuner(**_args(tmp_path))
    spec = t.generate_parameters(0)
    first = run_trial(spec, reporter=Quiet())
    again = dict(spec, proposal_id=1, init={'kind': 'checkpoint', 'uri': first['checkpoint'],
                                              'sha256': first['sha256']})
    assert run_trial(again, reporter=Quiet())['default'] == first['default']
    missing = dict(again, init={'kind': 'checkpoint', 'uri': str(tmp_path / 'nope.pt')})
    with pytest.raises(CheckpointError, match='nope.pt'):
        run_trial(missing, reporter=Quiet())
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='bad.pt'):
        run_trial(dict(again, init={'kind': 'checkpoint', 'uri': str(bad)}), reporter=Quiet())
    with pytest.raises(CheckpointError, match='sha256 mismatch'):
        run_trial(dict(again, init={'kind': 'checkpoint', 'uri': first['checkpoint'], 'sha256': '0' * 64}),
                  reporter=Quiet())


def test_trial_main_exits_nonzero_on_crash(tmp_path, exp_env):
    import json
    from nni_xfer.runtime.trial import main
    spec = XferTuner(**_args(tmp_path, evaluator_args={'fail_on': [0]})).generate_parameters(0)
    p = tmp_path / 'spec.json'
    p.write_text(json.dumps(spec))
    assert main(['--spec', str(p)]) == 1


def test_cli_list_and_check(tmp_path, capsys):
    from nni_xfer.cli import main
    assert main(['list']) == 0
    out = capsys.readouterr().out
    for section in ('strategies:', 'search spaces:', 'datasets:', 'evaluators:', 'initializers:'):
        assert section in out
    assert 'random' in out and 'simple_cnn' in out and 'digits' in out


def test_requests_refused_while_a_batch_waits_are_answered_later(tmp_path, exp_env):
    """NNI asks only when trials end; slots refused mid-batch must be filled once the batch is done."""
    from nni_xfer.registry import STRATEGIES
    from nni_xfer.strategies.random import RandomStrategy

    @STRATEGIES.register('_test_batch2', description='test only: batches of 2, synchronous')
    class Batch2(RandomStrategy):
        in_batch = 0

        def _propose(self, trial_id):
            if self.in_batch >= 2:
                return None
            self.in_batch += 1
            return super()._propose(trial_id)

        def _observe(self, trial_id, proposal, metrics):
            if not self.pending:
                self.in_batch = 0

    t = XferTuner(**_args(tmp_path, strategy='_test_batch2'))
    sent = []
    first = t.generate_multiple_parameters([0, 1, 2], st_callback=lambda pid, p: sent.append((pid, p)))
    assert len(first) == 2 and t._owed == [2]
    t.receive_trial_result(0, first[0], {'default': 0.1})
    assert sent == []  # batch not complete: nothing can be proposed yet
    again = t.generate_multiple_parameters([3], st_callback=lambda pid, p: sent.append((pid, p)))
    assert again == [] and t._owed == [2, 3]
    t.receive_trial_result(1, first[1], {'default': 0.2})
    assert [pid for pid, _ in sent] == [2, 3]  # both owed slots filled with the next batch
    assert t._owed == []


def test_never_more_parameters_than_nni_budget_left(tmp_path, exp_env):
    """Issue 24: NNI runs at most maxTrialNumber trials (those before a resume included); the tuner
    reads the limit from the experiment profile and hands out no proposal beyond it, owed slots
    included (the extra proposal stayed in the store as a CANCELED row)."""
    from nni_xfer.registry import STRATEGIES
    from nni_xfer.strategies.random import RandomStrategy
    from nni_xfer.adapters.tuner import BudgetSpent

    @STRATEGIES.register('_test_batch2b', description='test only: batches of 2, synchronous')
    class Batch2(RandomStrategy):
        in_batch = 0

        def _propose(self, trial_id):
            if self.in_batch >= 2:
                return None
            self.in_batch += 1
            return super()._propose(trial_id)

        def _observe(self, trial_id, proposal, metrics):
            if not self.pending:
                self.in_batch = 0

    limit = {'params': {'maxTrialNumber': 3}}
    t = XferTuner(**_args(tmp_path, strategy='_test_batch2b'))
    t.profile_reader, t.trial_lister = (lambda: limit), (lambda: [])
    sent = []
    first = t.generate_multiple_parameters([0, 1, 2], st_callback=lambda pid, p: sent.append((pid, p)))
    assert len(first) == 2 and t._owed == [2]
    t.receive_trial_result(0, first[0], {'default': 0.1})
    t.receive_trial_result(1, first[1], {'default': 0.2})
    assert [pid for pid, _ in sent] == [2]            # the owed slot: the third and last trial NNI runs
    assert t.generate_multiple_parameters([3, 4]) == [] and t._owed == []   # nothing owed beyond the budget
    with pytest.raises(BudgetSpent):
        t.generate_parameters(5)
    rows = KnowledgeStore(tmp_path / 'store.db').evaluations(experiment_id='exp-test')
    assert [e.proposal_id for e in rows] == [0, 1, 2]
    limit['params']['maxTrialNumber'] = 4                # nnictl update trialnum
    assert t.generate_parameters(6)['proposal_id'] == 3   # the batch's second slot, now within the budget
    with pytest.raises(BudgetSpent):
        t.generate_parameters(7)
    # a resumed dispatcher counts NNI's earlier trials (cancelled ones too, as NNI does)
    t2 = XferTuner(**_args(tmp_path, strategy='_test_batch2b'))
    t2.profile_reader, t2.trial_lister = (lambda: {'params': {'maxTrialNumber': 5}}), (lambda: [{}] * 4)
    t2._reconciled = True
    assert len(t2.generate_multiple_parameters([10, 11])) == 1
