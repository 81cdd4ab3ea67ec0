"""One search session behind both NNI adapters (nni_xfer/session.py): the same scenario through the
nnictl tuner and through NasExperiment gives the same store rows, search_finished included, every
metric the trial measured in them (NNI carries only REPORTED_METRICS, NasExperiment only ``default``);
the session records a trial's NNI id from the artifacts the trial wrote."""
from __future__ import annotations

import json

import pytest

from nni_xfer.store import KnowledgeStore

pytestmark = pytest.mark.timeout(300)

#: two architectures: the strategy finishes after them (search_finished)
SPACE_ARGS = {'widths': [8], 'depths': [1], 'kernels': [3, 5], 'stages': 1}


def _rows(store_path, experiment_id: str) -> list[dict]:
    """The experiment's rows without what names the experiment or the moment (ids, times, paths,
    durations)."""
    out = []
    for e in KnowledgeStore(store_path).evaluations(experiment_id=experiment_id):
        d = e.to_dict()
        for key in ('experiment_id', 'created', 'updated', 'checkpoint', 'sha256'):
            d.pop(key)
        d['spec'] = {k: v for k, v in d['spec'].items() if k not in ('experiment_id', 'checkpoint_root')}
        d['metrics'] = {k: v for k, v in (d['metrics'] or {}).items()
                        if k not in ('checkpoint', 'sha256') and not k.endswith('_seconds')}
        out.append(d)
    return sorted(out, key=lambda d: d['proposal_id'])


def _through_tuner(tmp_path, monkeypatch) -> tuple[list[dict], bool]:
    import nni
    from nni import NoMoreTrialError

    from nni_xfer.runtime.trial import NNIReporter, run_trial
    from nni_xfer.adapters.tuner import XferTuner

    monkeypatch.setenv('NNI_EXP_ID', 'exp-tuner')
    store = tmp_path / 'tuner.db'
    t = XferTuner(strategy='random', space='simple_cnn', space_args=SPACE_ARGS, dataset='digits', evaluator='mock',
                  store=str(store), checkpoint_root=str(tmp_path / 'ckpt-tuner'), seed=0)
    finals = []   # what the trial hands NNI, as NNI carries it to the tuner
    with monkeypatch.context() as m:
        m.setattr(nni, 'report_final_result', lambda r: finals.append(json.dumps(r)))
        m.setattr(nni, 'report_intermediate_result', lambda r: None)
        for i in range(4):
            try:
                params = t.generate_parameters(i)
            except NoMoreTrialError:
                break
            run_trial(params, reporter=NNIReporter())
            t.receive_trial_result(i, params, finals[-1])
    assert all(list(json.loads(f)) == ['default', 'inherited_acc', 'params'] for f in finals), finals
    return _rows(store, 'exp-tuner'), KnowledgeStore(store).search_finished('exp-tuner')


def _through_nas_experiment(tmp_path) -> tuple[list[dict], bool]:
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni_xfer.adapters.nas import XferEvaluator, XferStrategy, make_space

    store = tmp_path / 'nas.db'
    space = make_space('simple_cnn', dataset='digits', **SPACE_ARGS)
    evaluator = XferEvaluator(dataset='digits', evaluator='mock', checkpoint_root=str(tmp_path / 'ckpt-nas'))
    strategy = XferStrategy('random', seed=0, store=str(store), experiment_id='exp-nas')
    exp = NasExperiment(space, evaluator, strategy, config=NasExperimentConfig('sequential', 'raw', max_trial_number=4))
    try:
        exp.run(port=0)
    finally:
        exp.stop()
    return _rows(store, 'exp-nas'), KnowledgeStore(store).search_finished('exp-nas')


def test_same_scenario_same_rows_through_both_adapters(tmp_path, monkeypatch):
    tuner_rows, tuner_finished = _through_tuner(tmp_path, monkeypatch)
    nas_rows, nas_finished = _through_nas_experiment(tmp_path)
    assert len(tuner_rows) == 2 and all(r['status'] == 'SUCCEEDED' for r in tuner_rows)
    assert tuner_finished and nas_finished
    for r in tuner_rows:   # the metrics NNI did not carry reach the store through the artifacts file
        assert {'default', 'val_acc', 'params', 'trainable_params', 'inherited_acc', 'proposal_id'} <= set(r['metrics'])
    assert json.dumps(nas_rows, sort_keys=True, default=str) == json.dumps(tuner_rows, sort_keys=True, default=str)


def test_session_records_the_trial_id_the_trial_wrote(tmp_path):
    from nni_xfer.session import SearchSession
    from nni_xfer.spec import TrialSpec
    from nni_xfer.strategies.random import RandomStrategy
    from nni_xfer.strategy import SpaceInfo

    store = KnowledgeStore(tmp_path / 'store.db')
    s = SearchSession(RandomStrategy(SpaceInfo('toy', {}, {'a': [1, 2]}), seed=0), store, 'e',
                      {'strategy': 'random', 'space': 'toy', 'dataset': 'digits', 'evaluator': 'mock',
                       'checkpoint_root': str(tmp_path / 'ckpt')})
    pid, spec = s.propose()
    path = TrialSpec.from_dict(spec).artifacts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({'checkpoint': 'c.pt', 'sha256': '0' * 64, 'trial_id': 'AbC12'}))
    s.observe(pid, {'default': 0.5})
    row = store.get('e', pid)
    assert row.trial_id == 'AbC12' and row.status == 'SUCCEEDED' and row.metrics['sha256'] == '0' * 64
    pid2, _ = s.propose()
    s.fail(pid2, 'boom', 'XyZ9')
    assert store.get('e', pid2).trial_id == 'XyZ9' and store.get('e', pid2).error == 'boom'
    pid3, _ = s.propose()                                       # the failed architecture again
    s.observe(pid3, {'default': 0.4}, 'QrS3')
    assert store.get('e', pid3).trial_id == 'QrS3'
    assert store.search_finished('e') and s.propose() is None   # both architectures evaluated: done
