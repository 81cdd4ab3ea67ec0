"""Issues 17, 25: trial parameters the web portal can plot, a few numeric final metrics for NNI (at most
PORTAL_MAX_AXES axes with the summary), every metric in the artifacts beside the checkpoint and in the store."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nni_xfer.report import export_evaluations
from nni_xfer.spec import (PARENT_KEY, PORTAL_KEY, PORTAL_MAX_AXES, PORTAL_MAX_CHARS, PORTAL_SUMMARY_MAX,
                           REPORTED_METRICS, TrialSpec, default_portal_summary, portal_summary, proposal_id_of,
                           reported_metrics)
from nni_xfer.store import KnowledgeStore
from nni_xfer.runtime.trial import NNIReporter, Reporter, run_trial
from nni_xfer.adapters.tuner import XferTuner, _proposal_of

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[4]


class Capture(Reporter):
    def __init__(self):
        self.finals = []

    def intermediate(self, m):
        pass

    def final(self, m):
        self.finals.append(json.loads(json.dumps(m)))  # what NNI would carry


def _args(tmp_path, **kw):
    args = dict(strategy='random', space='simple_cnn', dataset='digits', evaluator='mock',
                store=str(tmp_path / 'store.db'), checkpoint_root=str(tmp_path / 'ckpt'), seed=0)
    args.update(kw)
    return args


def _plottable(summary: dict) -> bool:
    """One readable portal axis per entry: a short name, a number or a short string, not too many."""
    return len(summary) <= PORTAL_SUMMARY_MAX and all(isinstance(k, str) and len(k) <= PORTAL_MAX_CHARS for k in summary) \
        and all((isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= PORTAL_MAX_CHARS))
                and not isinstance(v, bool) for v in summary.values())


def test_categorical_space_one_parameter_per_label(tmp_path, monkeypatch):
    monkeypatch.setenv('NNI_EXP_ID', 'exp-portal')
    t = XferTuner(**_args(tmp_path))
    params = t.generate_parameters(0)
    summary = params[PORTAL_KEY]
    assert set(summary) == set(t.space_info.dims) | {PARENT_KEY} and _plottable(summary)
    assert {k: v for k, v in summary.items() if k != PARENT_KEY} == params['architecture']
    assert summary[PARENT_KEY] == 'none' and list(summary)[-1] == PARENT_KEY
    # the spec still travels whole: the trial runner and the resume code read it
    spec = TrialSpec.from_parameters(params)
    assert spec.architecture == params['architecture'] and spec.proposal_id == 0
    assert TrialSpec.from_parameters(json.dumps(params)) == spec
    old = {k: v for k, v in params.items() if k != PORTAL_KEY}  # a spec from before issue 17
    assert TrialSpec.from_parameters(old) == spec and proposal_id_of(old) == 0
    hp = json.dumps({'parameter_id': 0, 'parameters': params})
    assert _proposal_of({'hyperParameters': [hp]}, 'exp-portal') == 0
    assert _proposal_of({'hyperParameters': [json.dumps({'parameters': old})]}, 'exp-portal') == 0
    assert _proposal_of({'hyperParameters': [hp]}, 'other-exp') is None
    # the store keeps the plain spec
    ev = KnowledgeStore(tmp_path / 'store.db').get('exp-portal', 0)
    assert PORTAL_KEY not in ev.spec


@pytest.mark.parametrize('name', ['eas_plain_cnn', 'eas_densenet', 'mbv2_blocks', 'nasnet_cells'])
def test_structured_spaces_summarise_in_short_axes(name):
    from nni_xfer.data.pipeline import dataset_info
    from nni_xfer.space import build_space
    space = build_space(name, {}, dataset_info('digits'))
    arch = space.example()
    summary = portal_summary(arch, space)
    assert _plottable(summary) and len(summary) <= PORTAL_SUMMARY_MAX - 1, summary
    from nni_xfer.space import space_hook
    assert len(space_hook(space, 'portal_summary')(arch)) == len(summary)   # the axis budget cuts no entry
    depth = summary.get('depth', summary.get('normal_depth'))
    assert isinstance(depth, int) and depth > 0
    assert 'architecture' not in summary   # the whole architecture stays in the parameters, not on an axis
    assert not any(isinstance(v, str) and v.startswith(('{', '[')) for v in summary.values()), summary
    # not the generic fallback: the space's own method answered
    assert summary != default_portal_summary(arch)


def test_summaries_follow_the_architecture():
    from nni_xfer.search_spaces.eas_plain_cnn import EASPlainCNN
    from nni_xfer.search_spaces.mbv2_blocks import EXAMPLE, MBV2Blocks
    from nni_xfer.search_spaces.nasnet_cells import NasnetCells, example
    plain = EASPlainCNN.portal_summary({'layers': ['conv-16-3', 'conv-32-5', 'pool', 'fc-64', 'fc-128']})
    assert plain == {'depth': 4, 'conv_layers': 2, 'fc_layers': 2, 'pools': 1, 'widest_conv': 32,
                     'conv_filters': 48, 'kernel_mean': 4.0, 'fc_units': 192}
    mb = MBV2Blocks.portal_summary(EXAMPLE)
    assert len(mb['ops']) == len(mb['kernels']) == len(mb['depths']) == len(EXAMPLE['blocks'])
    assert mb['depth'] == sum(b['depth'] for b in EXAMPLE['blocks'])
    from nni_xfer.search_spaces.module_chain import ModuleChain
    chain = {'module_0': 'resnet18', 'module_1': 'vgg11_bn', 'module_2': 'resnet18', 'module_3': 'resnet18',
             'module_4': 'resnet34'}
    assert ModuleChain.portal_summary(chain) == {'sources': 3, **chain}
    cells = NasnetCells.portal_summary(example())
    ops = example()
    for cell in ('normal', 'reduce'):   # the branches that are not identities, counted once
        identities = sum(v == 'identity' for k, v in ops.items() if k.startswith(f'{cell}/op_'))
        assert sum(cells[f'{cell}_{k}'] for k in ('sep', 'conv', 'pool')) == 10 - identities
        assert 1 <= cells[f'{cell}_depth'] <= 5


def test_generic_summary_and_a_failing_space_method():
    arch = {'a': 1, 'b': 'x', 'c': [1, 2, 3], 'd': {'e': 1}, 'f': True}
    s = default_portal_summary(arch)
    assert s == {'a': 1, 'b': 'x', 'c_count': 3, 'd_count': 1, 'f': 'true'}

    class Broken:
        def portal_summary(self, architecture):
            raise KeyError('layers')

    class Nested:
        def portal_summary(self, architecture):
            return {'depth': 2, 'blocks': [1, 2], 'cfg': {'k': 1}, 'ok': None}

    assert portal_summary(arch, Broken()) == s
    assert portal_summary(arch, Nested()) == {'depth': 2, 'blocks': '[1,2]', 'cfg': '{"k":1}', 'ok': 'none'}


def test_summary_is_bounded_and_names_the_parent():
    many = {f'a_choice_with_a_long_label_{i}': 'v' * 30 + str(i) for i in range(40)}
    s = portal_summary(many)
    assert len(s) == PORTAL_SUMMARY_MAX - 1 and _plottable(s), s
    # with the lineage entry and the reported metrics: the Hyper-parameter view's whole axis budget
    assert len(s) + 1 + len(REPORTED_METRICS) == PORTAL_MAX_AXES == 12
    assert len(set(s.values())) == len(s)   # shortened values stay distinct (digest)
    child = TrialSpec('simple_cnn', {'width1': 16}, parent=3, proposal_id=4)
    assert child.to_parameters(parent_trial='AbC12')[PORTAL_KEY][PARENT_KEY] == 'AbC12'
    assert child.to_parameters()[PORTAL_KEY][PARENT_KEY] == 'proposal 3'   # its trial id not known
    assert TrialSpec('simple_cnn', {'width1': 16}).to_parameters()[PORTAL_KEY][PARENT_KEY] == 'none'
    assert _plottable(child.to_parameters()[PORTAL_KEY])


def test_child_parameters_carry_the_parents_nni_trial_id(tmp_path, monkeypatch):
    """EAS proposes a child of the start network once its result (with its NNI trial id) is in."""
    monkeypatch.setenv('NNI_EXP_ID', 'exp-lineage')
    t = XferTuner(**_args(tmp_path, strategy='eas_random', space='eas_plain_cnn',
                          strategy_args={'networks_per_episode': 2, 'episodes_per_stage': [1]}))
    start = t.generate_parameters(0)
    assert start[PORTAL_KEY][PARENT_KEY] == 'none'
    t.receive_trial_result(0, start, {'default': 0.5, 'val_acc': 0.5, 'trial_id': 'StArT'})
    child = t.generate_parameters(1)
    assert child['parent'] == 0 and child[PORTAL_KEY][PARENT_KEY] == 'StArT'
    assert _plottable(child[PORTAL_KEY])


@pytest.fixture
def nni_finals(monkeypatch):
    """What the trial hands NNI as final results (``nni.report_final_result``), as NNI carries it."""
    import nni
    finals = []
    monkeypatch.setattr(nni, 'report_final_result', lambda m: finals.append(json.loads(json.dumps(m))))
    monkeypatch.setattr(nni, 'report_intermediate_result', lambda m: None)
    return finals


def test_reported_metrics_are_the_fixed_few():
    metrics = {'trial_seconds': 2.0, 'params': 1000, 'inherited_acc': 0.1, 'val_acc': 0.8, 'default': 0.8,
               'flops': 5e6, 'ok': True, 'checkpoint': '/c.pt', 'test_acc': 0.7}
    assert reported_metrics(metrics) == {'default': 0.8, 'inherited_acc': 0.1, 'params': 1000}
    assert list(reported_metrics(metrics)) == list(REPORTED_METRICS)
    assert reported_metrics({'default': 0.3, 'score': 0.1}) == {'default': 0.3}   # only the keys a trial has
    assert reported_metrics({'default': 0.3, 'inherited_acc': 'n/a', 'params': True}) == {'default': 0.3}


def test_final_metrics_are_numbers_and_artifacts_reach_the_store(tmp_path, monkeypatch, nni_finals):
    monkeypatch.setenv('NNI_EXP_ID', 'exp-art')
    monkeypatch.setenv('NNI_TRIAL_JOB_ID', 'Tr1aL')
    t = XferTuner(**_args(tmp_path))
    params = t.generate_parameters(0)
    returned = run_trial(params, reporter=NNIReporter())
    (final,) = nni_finals
    # NNI (and its portal, one axis per numeric key) gets only the reported few, default first
    assert list(final) == list(REPORTED_METRICS), final
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in final.values()), final
    numeric = {k: v for k, v in returned.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert {'val_acc', 'trainable_params', 'setup_seconds', 'trial_seconds'} <= set(numeric) - set(final)
    spec = TrialSpec.from_parameters(params)
    artifacts = json.loads(spec.artifacts_path().read_text())
    assert artifacts['checkpoint'] == str(spec.checkpoint_path().resolve()) and len(artifacts['sha256']) == 64
    assert artifacts['trial_id'] == 'Tr1aL' and returned['checkpoint'] == artifacts['checkpoint']
    assert {k: artifacts[k] for k in numeric} == numeric   # every metric, the unreported ones included
    # NNI hands the tuner the reported numbers; it adds the artifacts for the strategy and the store
    t.receive_trial_result(0, params, json.dumps(final))
    ev = KnowledgeStore(tmp_path / 'store.db').get('exp-art', 0)
    assert ev.status == 'SUCCEEDED' and ev.checkpoint == artifacts['checkpoint'] and ev.sha256 == artifacts['sha256']
    assert ev.trial_id == 'Tr1aL' and ev.metrics['default'] == final['default']
    assert ev.metrics == returned   # the store row keeps every metric the trial measured
    (hist,) = t.strategy.history
    assert hist['metrics'] == returned   # and so does what the strategy sees
    # the export carries checkpoint and sha256
    import io
    buf = io.StringIO()
    export_evaluations(KnowledgeStore(tmp_path / 'store.db'), 'json', buf, 'exp-art')
    (row,) = json.loads(buf.getvalue())
    assert row['checkpoint'] == artifacts['checkpoint'] and row['sha256'] == artifacts['sha256']


def test_unreadable_artifacts_give_the_expected_path(tmp_path, monkeypatch, caplog):
    """A remote trial whose checkpoint root the tuner does not see: expected path, no sha256, one warning."""
    monkeypatch.setenv('NNI_EXP_ID', 'exp-remote')
    t = XferTuner(**_args(tmp_path))
    params = [t.generate_parameters(i) for i in range(2)]
    with caplog.at_level('WARNING', logger='nni_xfer.adapters.tuner'):
        for i, p in enumerate(params):
            t.receive_trial_result(i, p, {'default': 0.5, 'inherited_acc': 0.1, 'params': 1000})
    st = KnowledgeStore(tmp_path / 'store.db')
    for i in range(2):
        ev = st.get('exp-remote', i)
        assert ev.status == 'SUCCEEDED' and ev.checkpoint == str(tmp_path / 'ckpt' / 'exp-remote' / f'{i}.pt')
        assert ev.sha256 is None
        # only what NNI carried: the metrics outside REPORTED_METRICS were in the unread file (README)
        assert {k for k in ev.metrics if k not in ('checkpoint', 'sha256', 'proposal_id')} == set(REPORTED_METRICS)
    (warning,) = [r.getMessage() for r in caplog.records if 'cannot read' in r.getMessage()]
    assert f"only the metrics the trial reported ({', '.join(REPORTED_METRICS)})" in warning, warning


def test_failure_report_still_reaches_the_tuner(tmp_path, monkeypatch):
    monkeypatch.setenv('NNI_EXP_ID', 'exp-fail')
    t = XferTuner(**_args(tmp_path, evaluator_args={'fail_on': [0]}))
    params = t.generate_parameters(0)
    from nni_xfer.runtime.trial import error_line, failure_report
    with pytest.raises(Exception) as info:
        run_trial(params, reporter=Capture())
    t.receive_trial_result(0, params, failure_report(error_line(info.value), proposal_id_of(params)))
    ev = KnowledgeStore(tmp_path / 'store.db').get('exp-fail', 0)
    assert ev.status == 'FAILED' and ev.error == error_line(info.value)


def test_trial_main_under_nni_reports_the_few_metrics_or_the_whole_failure(tmp_path, monkeypatch, nni_finals):
    """``python -m nni_xfer.trial``'s entry under NNI: a success reports REPORTED_METRICS, a failure its
    whole report (status, error, proposal and trial id) for the tuner to record."""
    import nni

    from nni_xfer.runtime.trial import main
    monkeypatch.setenv('NNI_EXP_ID', 'exp-main')
    monkeypatch.setenv('NNI_TRIAL_JOB_ID', 'M41n')
    t = XferTuner(**_args(tmp_path, evaluator_args={'fail_on': [1]}))
    params = [t.generate_parameters(i) for i in range(2)]
    for p in params:
        monkeypatch.setattr(nni, 'get_next_parameter', lambda p=p: p)
        main([])
    ok, failed = nni_finals
    assert list(ok) == list(REPORTED_METRICS)
    assert failed['status'] == 'FAILED' and failed['proposal_id'] == 1 and failed['trial_id'] == 'M41n'
    assert 'fail_on' in failed['error']
    for i, (p, final) in enumerate(zip(params, nni_finals)):
        t.receive_trial_result(i, p, json.dumps(final))
    st = KnowledgeStore(tmp_path / 'store.db')
    assert st.get('exp-main', 0).status == 'SUCCEEDED' and 'trainable_params' in st.get('exp-main', 0).metrics
    assert st.get('exp-main', 1).status == 'FAILED' and st.get('exp-main', 1).error == failed['error']


def test_trial_process_reads_new_parameters_and_is_quiet(tmp_path):
    """``python -m nni_xfer.trial`` on the parameters NNI carries; its stderr lacks NNI's known
    'Buffer is found to be not a nn.Module' warning (and the LinearCrossEntropyOptions one)."""
    spec = TrialSpec(space='simple_cnn', architecture={'width1': 16, 'depth1': 1, 'kernel1': 3, 'width2': 16,
                                                       'depth2': 1, 'kernel2': 3},
                     evaluator='mock', checkpoint_root=str(tmp_path / 'ckpt'), experiment_id='exp-proc')
    path = tmp_path / 'params.json'
    path.write_text(json.dumps(spec.to_parameters()))
    env = dict(os.environ, NNI_XFER_HOME=str(tmp_path / 'home'), PYTHONWARNINGS='default')
    r = subprocess.run([sys.executable, '-m', 'nni_xfer.trial', '--spec', str(path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr
    final = json.loads(next(line for line in r.stdout.splitlines() if line.startswith('[final] '))[8:])
    assert all(isinstance(v, (int, float)) for v in final.values())
    assert 'is found to be not a nn.Module' not in r.stderr, r.stderr
    assert json.loads(spec.artifacts_path().read_text())['sha256']
