"""Tests of nni_xfer.report: export, Pareto front, report table and plots."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

from nni_xfer.errors import ConfigError
from nni_xfer.report import (EXPORT_FIELDS, ReportResult, export_evaluations, make_report, pareto_front)
from nni_xfer.store import KnowledgeStore

pytestmark = pytest.mark.timeout(60)

EXP = 'exp1'


def _metrics(acc, params, **extra):
    m = {'default': acc, 'val_acc': acc, 'inherited_acc': acc - 0.1, 'params': params, 'trainable_params': params,
         'flops': params * 10, 'train_seconds': 1.5, 'images_per_second': 100.0}
    m.update(extra)
    return m


@pytest.fixture
def store(tmp_path):
    s = KnowledgeStore(tmp_path / 'store.db')
    s.record_experiment(EXP, strategy='random', space='tiny_cnn', dataset='digits', config={'seed': 0})
    common = dict(strategy='random', space='tiny_cnn', dataset='digits')
    s.record_proposal(EXP, 0, architecture={'width': 16, 'depth': 2}, trial_id='t0', **common)
    s.record_result(EXP, 0, _metrics(0.80, 1000), status='SUCCEEDED')
    s.record_proposal(EXP, 1, architecture={'width': 32, 'depth': 2}, trial_id='t1',
                      parent={'experiment_id': EXP, 'proposal_id': 0}, **common)
    s.record_result(EXP, 1, _metrics(0.92, 4000, checkpoint='/ckpt/t1.pt', sha256='abc'), status='SUCCEEDED')
    s.record_proposal(EXP, 2, architecture={'width': 64, 'depth': 3}, trial_id='t2', **common)
    s.record_result(EXP, 2, None, status='FAILED', error='CUDA out of memory')
    s.record_proposal(EXP, 3, architecture={'width': 8, 'depth': 4}, trial_id='t3', **common)
    s.record_result(EXP, 3, _metrics(0.85, 9000, extra_key=1), status='SUCCEEDED')
    # another experiment: must not leak into exports / reports of EXP
    s.record_proposal('other', 0, architecture={'width': 4}, **common)
    s.record_result('other', 0, {'default': 0.1}, status='SUCCEEDED')
    yield s
    s.close()


def test_export_json(store):
    out = io.StringIO()
    n = export_evaluations(store, 'json', out, experiment_id=EXP)
    assert n == 4
    rows = json.loads(out.getvalue())
    assert [r['trial_id'] for r in rows] == ['t0', 't1', 't2', 't3']
    assert set(EXPORT_FIELDS) <= set(rows[0])
    assert rows[0]['architecture'] == {'width': 16, 'depth': 2}
    assert rows[0]['parent'] is None
    assert rows[1]['parent'] == {'experiment_id': EXP, 'proposal_id': 0}
    assert rows[1]['metrics']['val_acc'] == pytest.approx(0.92)
    assert rows[2]['status'] == 'FAILED' and rows[2]['error'] == 'CUDA out of memory'
    assert rows[2]['metrics'] is None

    everything = io.StringIO()
    assert export_evaluations(store, 'json', everything) == 5
    assert {r['experiment_id'] for r in json.loads(everything.getvalue())} == {EXP, 'other'}


def test_export_csv(store):
    out = io.StringIO()
    n = export_evaluations(store, 'csv', out, experiment_id=EXP)
    assert n == 4
    reader = csv.DictReader(io.StringIO(out.getvalue()))
    rows = list(reader)
    assert len(rows) == 4
    metric_cols = [c for c in reader.fieldnames if c.startswith('metric.')]
    assert metric_cols == sorted(metric_cols)
    assert {'metric.val_acc', 'metric.params', 'metric.extra_key', 'metric.checkpoint'} <= set(metric_cols)
    assert 'metrics' not in reader.fieldnames
    assert reader.fieldnames[-1] == 'error'
    assert json.loads(rows[0]['architecture']) == {'width': 16, 'depth': 2}
    assert ' ' not in rows[0]['architecture']            # compact JSON
    assert rows[0]['parent'] == ''
    assert json.loads(rows[1]['parent']) == {'experiment_id': EXP, 'proposal_id': 0}
    assert float(rows[1]['metric.val_acc']) == pytest.approx(0.92)
    assert rows[1]['metric.checkpoint'] == '/ckpt/t1.pt'
    assert rows[0]['metric.extra_key'] == '' and rows[3]['metric.extra_key'] == '1'
    assert rows[2]['status'] == 'FAILED'
    assert rows[2]['error'] == 'CUDA out of memory'
    assert rows[2]['metric.val_acc'] == ''


def test_export_bad_format(store):
    with pytest.raises(ConfigError) as info:
        export_evaluations(store, 'xml', io.StringIO())
    assert info.value.field == '--format'
    assert info.value.allowed == ['json', 'csv']


def test_pareto_front():
    assert pareto_front([]) == []
    assert pareto_front([(5, 0.5)]) == [0]
    pts = [
        (100, 0.90),   # 0 front
        (50, 0.80),    # 1 front
        (200, 0.85),   # 2 dominated by 0
        (100, 0.90),   # 3 duplicate of 0: front too
        (100, 0.70),   # 4 same x as 0, lower y: dominated
        (300, 0.95),   # 5 front
        (400, 0.95),   # 6 same y as 5, larger x: dominated
        (10, 0.50),    # 7 front
        (float('nan'), 0.99),  # 8 ignored
    ]
    front = pareto_front(pts)
    assert sorted(front) == [0, 1, 3, 5, 7]
    xs = [pts[i][0] for i in front]
    assert xs == sorted(xs)          # ordered along x, ready to draw
    # all points identical: all on the front
    assert sorted(pareto_front([(1, 1)] * 3)) == [0, 1, 2]


def test_make_report(store, tmp_path):
    out_dir = tmp_path / 'report'
    res = make_report(store, EXP, out_dir, k=10)
    assert isinstance(res, ReportResult)
    names = sorted(p.name for p in res.plots)
    assert names == ['acc_vs_params.png', 'lineage.png', 'val_acc_over_trials.png']  # trial 1 has a parent
    for p in res.plots:
        assert p.parent == out_dir and p.stat().st_size > 0
        assert p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert [e.trial_id for e in res.best] == ['t1', 't3', 't0']
    lines = res.table.splitlines()
    assert '3 succeeded' in lines[0] and '1 failed' in lines[0] and '4 total' in lines[0]
    assert lines[1].split()[:5] == ['rank', 'trial', 'proposal', 'parent', 'default']
    first = lines[3].split()
    assert first[:5] == ['1', 't1', '1', 't0', '0.9200']   # trial 1's parent, by its NNI trial id
    assert 'width=32' in lines[3]
    assert (out_dir / 'report.txt').read_text() == res.text and res.table.startswith(res.text)

    top1 = make_report(store, EXP, tmp_path / 'top1', k=1)
    assert [e.trial_id for e in top1.best] == ['t1']


def test_make_report_minimize(tmp_path):
    s = KnowledgeStore(tmp_path / 'store.db')
    s.record_experiment('m', config={'mode': 'minimize'})
    for i, loss in enumerate([0.5, 0.2, 0.9]):
        s.record_proposal('m', i, architecture={'op': f'conv{i}'}, trial_id=f'm{i}')
        s.record_result('m', i, {'default': loss}, status='SUCCEEDED')
    res = make_report(s, 'm', tmp_path / 'out', k=2)
    assert [e.trial_id for e in res.best] == ['m1', 'm0']
    assert res.table.splitlines()[3].split()[1] == 'm1'
    # mock evaluator: no val_acc / params anywhere -> both plots skipped, and said so
    assert res.plots == []
    assert 'val_acc_over_trials.png' in res.table and 'acc_vs_params.png' in res.table
    assert 'skipped' in res.table
    assert not (tmp_path / 'out' / 'val_acc_over_trials.png').exists()
    s.close()


def test_make_report_unknown_experiment(store, tmp_path):
    with pytest.raises(ConfigError) as info:
        make_report(store, 'nope', tmp_path / 'out')
    msg = str(info.value)
    assert msg.startswith('EXPERIMENT_ID')
    assert "'nope'" in msg
    assert EXP in info.value.allowed and 'other' in info.value.allowed


def test_report_csv_and_each_plot_named_once(store, tmp_path):
    out_dir = tmp_path / 'report'
    res = make_report(store, EXP, out_dir, k=10)
    rows = list(csv.DictReader(open(out_dir / 'report.csv', encoding='utf-8')))
    assert [r['trial'] for r in rows] == [e.trial_id for e in res.best] == ['t1', 't3', 't0']
    assert float(rows[0]['default']) == pytest.approx(0.92) and rows[0]['checkpoint'] == '/ckpt/t1.pt'
    assert json.loads(rows[0]['architecture']) == {'width': 32, 'depth': 2}
    for p in res.plots:
        assert res.table.count(p.name) == 1, p.name
    assert "lineage.png (lineage of 4 trials, 2 generations; inherited_acc of 1 children: 0 within 0.01 of the " \
        "parent's val_acc)" in res.table


def test_lineage_plot_and_layout(tmp_path):
    from nni_xfer.report import lineage_layout
    s = KnowledgeStore(tmp_path / 'store.db')
    s.record_proposal('seed', 0, architecture={'w': 1})
    s.record_result('seed', 0, {'default': 0.7, 'val_acc': 0.7}, status='SUCCEEDED')
    parents = {0: ('seed', 0), 1: 0, 2: 0, 3: 1, 4: 1}
    for i, par in parents.items():
        pk = par if isinstance(par, tuple) else ('e', par)
        s.record_proposal('e', i, architecture={'w': i}, parent={'experiment_id': pk[0], 'proposal_id': pk[1]})
        if i == 4:
            s.record_result('e', i, None, status='FAILED', error='boom')
        else:
            s.record_result('e', i, {'default': 0.8 + i / 100, 'val_acc': 0.8 + i / 100, 'inherited_acc': 0.79},
                            status='SUCCEEDED')
    res = make_report(s, 'e', tmp_path / 'out')
    assert (tmp_path / 'out' / 'lineage.png').read_bytes()[:4] == b'\x89PNG'
    # 3 children of parents with a result (1, 2 of 0; 3 of 1) and the seed's child 0; 4 failed
    assert 'lineage of 5 trials, 4 generations; inherited_acc of 4 children: 0 within' in res.table
    lay = lineage_layout({('s', 0): None, ('e', 0): ('s', 0), ('e', 1): ('e', 0), ('e', 2): ('e', 0)})
    assert [lay[k][0] for k in [('s', 0), ('e', 0), ('e', 1), ('e', 2)]] == [0, 1, 2, 2]
    assert lay[('e', 1)][1] == -0.5 and lay[('e', 2)][1] == 0.5
    # a cycle (corrupt parents) does not hang
    assert set(lineage_layout({1: 2, 2: 1})) == {1, 2}
    # no parents: no lineage plot, and an old one is removed
    s.record_proposal('flat', 0, architecture={'w': 1})
    s.record_result('flat', 0, {'default': 0.5}, status='SUCCEEDED')
    (tmp_path / 'out' / 'lineage.png').touch()
    res = make_report(s, 'flat', tmp_path / 'out')
    assert not (tmp_path / 'out' / 'lineage.png').exists() and 'lineage.png' not in res.table


def test_generations_plot_from_strategy_state(tmp_path):
    s = KnowledgeStore(tmp_path / 'store.db')
    s.record_experiment('g', config={'mode': 'minimize'})
    history = []
    for i in range(6):
        arch = {'module_0': f'm{i}'}
        s.record_proposal('g', i, architecture=arch)
        s.record_result('g', i, {'default': 0.5 - i / 20}, status='SUCCEEDED')
        history.append({'id': i, 'status': 'SUCCEEDED', 'architecture': arch, 'metrics': {'default': 0.5 - i / 20},
                        'meta': {'generation': i // 3}})
    s.save_strategy_state('g', {'history': history, 'extra': {
        'population': [{'architecture': {'module_0': 'm5'}, 'objectives': [0.25]},
                       {'architecture': {'module_0': 'm4'}, 'objectives': [0.3]}],
        'log': [{'generation': 0, 'new_survivors': 3}, {'generation': 1, 'new_survivors': 2}]}})
    res = make_report(s, 'g', tmp_path / 'out')
    assert 'generations.png (6 trials over 2 generations, 2 final survivors)' in res.table
    assert (tmp_path / 'out' / 'generations.png').read_bytes()[:4] == b'\x89PNG'


def _figures(monkeypatch) -> dict:
    """The report's figures by file name (instead of only their PNGs)."""
    import nni_xfer.report as report
    figs = {}
    save = report._save

    def keep(fig, path):
        figs[path.name] = fig
        save(fig, path)
    monkeypatch.setattr(report, '_save', keep)
    return figs


def test_report_txt_is_only_the_report(store, tmp_path):
    res = make_report(store, EXP, tmp_path / 'out')
    text = (tmp_path / 'out' / 'report.txt').read_text()
    assert not [ln for ln in text.splitlines() if ln.startswith(('plot', 'written to'))], text
    console = res.table[len(res.text):]
    assert all(console.count(p.name) == 1 for p in res.plots) and 'written to' in console


def test_architecture_column_wraps_between_tokens(tmp_path):
    s = KnowledgeStore(tmp_path / 'store.db')
    layers = [f'conv-{16 * (i + 1)}-{3 if i % 2 else 5}' for i in range(14)] + ['pool', 'fc-1024']
    blocks = [{'op': 'mbconv6', 'kernel': 5, 'skip': 1, 'depth': 3, 'width': 1.5}] * 3
    for i, arch in enumerate([{'layers': layers}, {'blocks': blocks, 'stem': 'a_rather_long_token_' * 5}]):
        s.record_proposal('w', i, architecture=arch, trial_id=f'w{i}')
        s.record_result('w', i, {'default': 0.5 + i / 10, 'val_acc': 0.5 + i / 10}, status='SUCCEEDED')
    res = make_report(s, 'w', tmp_path / 'out')
    text = res.text
    assert '...' not in text
    for token in layers + ['a_rather_long_token_' * 5]:
        assert token in re.split(r'[\s=,]+', text), token   # every token whole, none cut
    assert text.count('{op:mbconv6,kernel:5,skip:1,depth:3,width:1.5}') == 3   # a block never split across lines
    column = text.splitlines()[1].index('architecture')
    body = text.splitlines()[3:]
    continuation = [ln for ln in body if ln and not ln[:column].strip()]
    assert continuation and all(len(ln) - column <= 60 or len(ln.split()) == 1 for ln in continuation)
    rows = list(csv.DictReader(open(tmp_path / 'out' / 'report.csv', encoding='utf-8')))
    assert json.loads(rows[1]['architecture']) == {'layers': layers}   # the whole architecture, as JSON
    s.close()


def test_lineage_plot_and_table_name_trials_alike(store, tmp_path, monkeypatch):
    figs = _figures(monkeypatch)
    res = make_report(store, EXP, tmp_path / 'out')
    ax = figs['lineage.png'].axes[0]
    labels = {t.get_text() for t in ax.texts}
    assert labels == {'t0', 't1', 't2', 't3'}            # NNI trial ids, not proposal numbers
    table_trials = {ln.split()[1] for ln in res.text.splitlines()[3:] if ln.strip()}
    assert table_trials <= labels


@pytest.mark.parametrize('params', [[44_870, 66_110, 77_660, 123_210], [1_000, 20_000, 900_000]])
def test_params_axis_has_readable_ticks(tmp_path, monkeypatch, params):
    figs = _figures(monkeypatch)
    s = KnowledgeStore(tmp_path / 'store.db')
    for i, p in enumerate(params):
        s.record_proposal('p', i, architecture={'w': i}, trial_id=f'p{i}')
        s.record_result('p', i, {'default': 0.9 - i / 50, 'val_acc': 0.9 - i / 50, 'params': p}, status='SUCCEEDED')
    make_report(s, 'p', tmp_path / 'out')
    fig = figs['acc_vs_params.png']
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]
    assert len(shown) >= 3, shown
    assert all(len(x) <= 6 for x in shown), shown          # 50K, 100K, 2M: no 1e5 offsets, no 10^5 alone
    s.close()
