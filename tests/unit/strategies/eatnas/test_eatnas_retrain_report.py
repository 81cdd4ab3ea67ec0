"""EAT-NAS stages after the search: ``nni-xfer eatnas retrain`` and the report section (per-cycle curves)."""
import pytest
import yaml

from nni_xfer.cli import main
from nni_xfer.config import validate_class_args
from nni_xfer.errors import ConfigError
from nni_xfer.report import make_report
from nni_xfer.search_spaces import mbv2_blocks as m
from nni_xfer.store import KnowledgeStore, arch_key
from nni_xfer.strategy import StrategyContext
from nni_xfer.strategies.eatnas import EATNASStrategy
from nni_xfer.strategies.eatnas.report import trials_to_reach
from nni_xfer.stages import write_stage_config
from nni_xfer.strategies.eatnas.retrain import retrain_config
from nni_xfer.testing.strategy_contract import drive

from test_eatnas_strategy import SMALL, fake_metrics, make_info

pytestmark = pytest.mark.timeout(120)

ARGS = {'strategy': 'eatnas', 'space': 'mbv2_blocks', 'space_args': SMALL, 'dataset': 'digits',
        'dataset_args': {'val_size': 0.2}, 'evaluator': 'train',
        'evaluator_args': {'epochs': 1, 'batch_size': 64, 'lr': 0.05, 'lr_schedule': 'constant'}}


def _record(store, exp, strategy, props, metrics, seed_from=None, ckpt=True):
    args = {**ARGS, 'strategy_args': {'population': 4, 'sample': 2, **({'seed_from': seed_from} if seed_from else {})}}
    store.record_experiment(exp, strategy='eatnas', space='mbv2_blocks', dataset='digits', config=args)
    for p in props:
        store.record_proposal(exp, p['id'], architecture=p['architecture'], space='mbv2_blocks', strategy='eatnas')
        store.record_result(exp, p['id'], {**metrics(strategy, p['architecture']),
                                           'checkpoint': f'/ckpt/{exp}/{p["id"]}.pt' if ckpt else None},
                            status='SUCCEEDED')
    store.save_strategy_state(exp, strategy.state_dict())


def _search(tmp_path, n=14):
    """A finished search recorded as the tuner records it (metrics carry the checkpoint path)."""
    store = KnowledgeStore(tmp_path / 'store.db')
    s = EATNASStrategy(make_info(), seed=0, population=4, sample=2, patience=None)
    props = drive(s, n, metrics=lambda st, a: {**fake_metrics(st, a), 'checkpoint': f'/ckpt/src/{a}.pt'})
    _record(store, 'src', s, props, fake_metrics)
    path = tmp_path / 'search.yml'
    path.write_text(yaml.safe_dump({
        'experimentName': 'eatnas', 'searchSpace': {}, 'trialCommand': 'python -m nni_xfer.trial',
        'trialCodeDirectory': '.', 'maxTrialNumber': n, 'trialConcurrency': 2,
        'tuner': {'className': 'nni_xfer.tuner.XferTuner', 'codeDirectory': '.',
                  'classArgs': {**ARGS, 'strategy_args': {'population': 4, 'sample': 2}}},
        'trainingService': {'platform': 'local'}}))
    return s, store, path


def test_retrain_takes_the_top_k_of_the_best_quality_population(tmp_path):
    s, store, path = _search(tmp_path)
    cfg = retrain_config(path, 'src', store=str(store.path), top_k=3, epochs=630)
    args = cfg['tuner']['classArgs']
    ranked = sorted(s.best_population, key=lambda x: (-x['score'], x['id']))[:3]
    assert args['strategy'] == 'fixed' and cfg['maxTrialNumber'] == 3
    assert args['strategy_args'] == {'architectures': [x['architecture'] for x in ranked], 'init': {'kind': 'fresh'}}
    assert args['evaluator_args'] == {'epochs': 630, 'batch_size': 64, 'lr': 0.05, 'lr_schedule': 'cosine',
                                      'test': True}
    assert args['dataset_args'] == {'val_size': 1} and args['space_args'] == SMALL
    assert 'top 3 of the best-quality population of src' in cfg['experimentName']
    errors, _ = validate_class_args(args)   # a valid config (the train evaluator is not run here)
    assert errors == []
    # the final population, by accuracy, from the search checkpoints, keeping the validation split
    cfg2 = retrain_config(path, 'src', store=str(store.path), top_k=8, population='final', rank='acc',
                          from_search=True, full_train=False, evaluator_args={'lr': 0.0125, 'cutout': 16})
    a2 = cfg2['tuner']['classArgs']
    final = sorted(s.population, key=lambda x: (-x['acc'], x['id']))
    assert a2['strategy_args']['architectures'] == [x['architecture'] for x in final]   # P = 4 < k
    assert a2['strategy_args']['inits'] == [{'kind': 'checkpoint', 'uri': x['checkpoint']} for x in final]
    assert a2['dataset_args'] == {'val_size': 0.2}
    assert a2['evaluator_args']['lr'] == 0.0125 and a2['evaluator_args']['cutout'] == 16
    out = write_stage_config(tmp_path / 'out' / 'retrain.yml', cfg, path)
    written = yaml.safe_load(out.read_text())
    assert written['trialCodeDirectory'] == str(tmp_path.resolve())


def test_retrain_errors_name_the_problem(tmp_path):
    _, store, path = _search(tmp_path)
    with pytest.raises(ConfigError) as e:
        retrain_config(path, 'nosuch', store=str(store.path))
    assert e.value.field == 'experiment'
    with pytest.raises(ConfigError) as e:
        retrain_config(path, 'src', store=str(store.path), top_k=0)
    assert e.value.field == 'top_k'
    other = tmp_path / 'other.yml'
    raw = yaml.safe_load(path.read_text())
    raw['tuner']['classArgs']['strategy'] = 'random'
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        retrain_config(other, 'src', store=str(store.path))
    assert e.value.field == 'tuner.classArgs.strategy'


def test_retrain_command_writes_the_experiment(tmp_path, capsys):
    _, store, path = _search(tmp_path)
    out = tmp_path / 'retrain.yml'
    rc = main(['eatnas', 'retrain', 'src', '--search-config', str(path), '--store', str(store.path), '--top-k', '2',
               '--epochs', '5', '--lr', '0.0125', '-o', str(out)])
    assert rc == 0 and 'top 2 of the best population of src' in capsys.readouterr().out
    args = yaml.safe_load(out.read_text())['tuner']['classArgs']
    assert len(args['strategy_args']['architectures']) == 2
    assert args['evaluator_args']['epochs'] == 5 and args['evaluator_args']['lr'] == 0.0125


def test_retrain_experiment_seeds_the_transfer_and_is_reported(tmp_path):
    _, store, path = _search(tmp_path)
    cfg = retrain_config(path, 'src', store=str(store.path), top_k=3)
    archs = cfg['tuner']['classArgs']['strategy_args']['architectures']
    store.record_experiment('rt', strategy='fixed', space='mbv2_blocks', dataset='digits',
                            config=cfg['tuner']['classArgs'])
    for i, (a, t) in enumerate(zip(archs, [0.81, 0.93, 0.88])):   # the second is the best after retraining
        # as NNI hands classArgs back: whole widths arrive as ints (1.0 -> 1)
        a = {'blocks': [{**b, 'width': int(b['width']) if b['width'] == int(b['width']) else b['width']}
                        for b in a['blocks']]}
        store.record_proposal('rt', i, architecture=a, space='mbv2_blocks', strategy='fixed')
        store.record_result('rt', i, {'default': 1.0, 'val_acc': 1.0, 'test_acc': t, 'params': 1e5, 'flops': 4e6},
                            status='SUCCEEDED')
    with pytest.raises(ConfigError):   # not in the default store
        EATNASStrategy(make_info(), population=4, sample=2, seed_from={'experiment': 'rt'})
    s = EATNASStrategy(make_info(), population=4, sample=2, seed_from={'experiment': 'rt', 'weights': False},
                       context=StrategyContext(store=str(store.path)))
    assert s.seed_info['architecture'] == archs[1] and s.seed_info['source']['proposal_id'] == 1
    text = make_report(store, 'rt', tmp_path / 'rep').table
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith('EAT-NAS retraining of rt'))
    assert 'basic model = #1 (test_acc 0.9300)' in lines[head]
    rows = [line.split() for line in lines[head + 3:head + 6]]
    assert [r[1] for r in rows] == ['#1', '#2', '#0'] and rows[0][2] == '0.9300'
    from nni_xfer.report import trial_name   # search trials named as in the report's table and lineage.png
    search_ids = {arch_key(ev.architecture): f'src:{trial_name(ev)}' for ev in store.evaluations(experiment_id='src')}
    assert rows[0][5] == search_ids[arch_key(archs[1])]


def test_report_draws_transfer_and_scratch_per_cycle(tmp_path):
    store = KnowledgeStore(tmp_path / 'store.db')
    scratch = EATNASStrategy(make_info(), seed=1, population=4, sample=2, patience=None)
    _record(store, 'scratch', scratch, drive(scratch, 12, metrics=fake_metrics), fake_metrics)
    transfer = EATNASStrategy(make_info(), seed=1, population=4, sample=2, patience=None,
                              seed_from={'architecture': m.EXAMPLE})

    def better(st, a):   # transfer starts higher
        return {**fake_metrics(st, a), 'default': fake_metrics(st, a)['default'] + 0.2}
    _record(store, 'transfer', transfer, drive(transfer, 12, metrics=better), better,
            seed_from={'architecture': m.EXAMPLE})
    other = EATNASStrategy(make_info(), seed=2, population=4, sample=2, patience=None)   # another task: not drawn
    props = drive(other, 6, metrics=fake_metrics)
    _record(store, 'other', other, props, fake_metrics)
    cfg = store.experiments()[-1]['config']
    store.record_experiment('other', strategy='eatnas', space='mbv2_blocks', dataset='digits',
                            config={**cfg, 'dataset_args': {'val_size': 0.3}})
    longer = EATNASStrategy(make_info(), seed=3, population=4, sample=2, patience=None)  # other training: not drawn
    _record(store, 'longer', longer, drive(longer, 6, metrics=fake_metrics), fake_metrics)
    store.record_experiment('longer', strategy='eatnas', space='mbv2_blocks', dataset='digits',
                            config={**cfg, 'evaluator_args': {**cfg['evaluator_args'], 'epochs': 2}})
    res = make_report(store, 'transfer', tmp_path / 'rep')
    text = res.table
    assert 'EAT-NAS population per cycle of transfer (transfer): 9 cycles' in text
    assert 'searches of the same task in the store (2):' in text and 'other' not in text.split('searches of')[1]
    assert 'longer' not in text.split('searches of')[1]
    assert (tmp_path / 'rep' / 'eatnas_cycles.png').stat().st_size > 1000
    assert tmp_path / 'rep' / 'eatnas_cycles.png' in res.plots
    # the per-cycle table equals the strategy state
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith('EAT-NAS population per cycle'))
    table = [line.split() for line in lines[i + 3:i + 3 + 9]]
    assert [float(r[3]) for r in table] == [round(c['mean_acc'], 4) for c in transfer.cycles]
    assert [int(r[1]) for r in table] == list(range(4, 13))     # trials when the cycle closed: P + cycle
    best_scratch = max(c['mean_acc'] for c in scratch.cycles)
    n = trials_to_reach([{**c, 'trials': 4 + c['cycle']} for c in transfer.cycles], best_scratch)
    assert f'reaches the best mean of scratch (scratch) ({best_scratch:.4f}) after {n} trials' in text
    assert n == 4   # its initial population already beats every scratch population
    # a scratch-only report still has its own curve
    alone = make_report(store, 'scratch', tmp_path / 'rep2').table
    assert 'of scratch (scratch)' in alone
