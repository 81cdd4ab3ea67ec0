"""EAS's last step: `nni-xfer eas finalize` writes a `fixed` experiment over the last stage's top networks."""
import pytest
import yaml

from nni_xfer.errors import ConfigError
from nni_xfer.stages import write_stage_config
from nni_xfer.store import KnowledgeStore, arch_key
from nni_xfer.strategies.eas import EASRandomStrategy
from nni_xfer.strategies.eas.finalize import finalize_config
from nni_xfer.testing.strategy_contract import drive

from test_strategy_eas import eas_metrics, eas_space

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('one_torch_thread')]


def _search(tmp_path):
    s = EASRandomStrategy(eas_space(), seed=3, networks_per_episode=3, wider_steps=1, deeper_steps=1,
                          episodes_per_stage=[2, 2], stage_epochs=4)
    props = drive(s, 200, metrics=eas_metrics)
    assert s.done
    store = KnowledgeStore(tmp_path / 'store.db')
    store.save_strategy_state('search', s.state_dict())
    path = tmp_path / 'search.yml'
    path.write_text(yaml.safe_dump({
        'experimentName': 'eas', 'searchSpace': {}, 'trialCommand': 'python -m nni_xfer.trial',
        'trialCodeDirectory': '.', 'maxTrialNumber': 99, 'trialConcurrency': 1,
        'tuner': {'className': 'nni_xfer.tuner.XferTuner', 'codeDirectory': '.', 'classArgs': {
            'strategy': 'eas_random', 'space': 'eas_plain_cnn',
            'space_args': {'start': ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'fc-64']},
            'dataset': 'digits', 'dataset_args': {'val_size': 0.2},
            'strategy_args': {'episodes_per_stage': [2, 2], 'stage_epochs': 4},
            'evaluator': 'train', 'evaluator_args': {'epochs': 2, 'batch_size': 32}}},
        'trainingService': {'platform': 'local'}}))
    return s, props, store, path


def test_finalize_takes_the_last_stages_top_networks_from_their_checkpoints(tmp_path):
    s, props, store, path = _search(tmp_path)
    cfg = finalize_config(path, 'search', store=str(store.path), top_k=3, epochs=300)
    args = cfg['tuner']['classArgs']
    last = [h for h in s.history if h['status'] == 'SUCCEEDED' and h['meta']['stage'] == 1]
    ranked, seen = [], set()
    for h in sorted(last, key=lambda h: (-h['metrics']['val_acc'], h['id'])):
        if arch_key(h['architecture']) not in seen:
            seen.add(arch_key(h['architecture']))
            ranked.append(h)
    assert args['strategy'] == 'fixed' and cfg['maxTrialNumber'] == 3
    assert args['strategy_args']['architectures'] == [h['architecture'] for h in ranked[:3]]
    assert args['strategy_args']['inits'] == [{'kind': 'checkpoint', 'uri': h['metrics']['checkpoint'],
                                               'sha256': h['metrics']['sha256']} for h in ranked[:3]]
    assert args['evaluator'] == 'train' and args['evaluator_args'] == {'epochs': 300, 'batch_size': 32, 'test': True}
    assert args['dataset_args'] == {'val_size': 1}                     # the whole training set (one image held out)
    assert args['space_args'] == {'start': ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'fc-64']}
    assert 'stage 2' in cfg['experimentName']
    keep = finalize_config(path, 'search', store=str(store.path), top_k=2, from_scratch=True, full_train=False)
    kargs = keep['tuner']['classArgs']
    assert 'inits' not in kargs['strategy_args'] and kargs['strategy_args']['init'] == {'kind': 'fresh'}
    assert kargs['dataset_args'] == {'val_size': 0.2}
    out = write_stage_config(tmp_path / 'out' / 'final.yml', cfg, path)
    written = yaml.safe_load(out.read_text())
    assert written['trialCodeDirectory'] == str(tmp_path.resolve())
    from nni_xfer.config import check_config
    assert check_config(out) == []   # the written experiment passes `nni-xfer check`


def test_fixed_strategy_proposes_each_networks_own_init(tmp_path):
    from nni_xfer.strategies.fixed import FixedStrategy
    s, _, store, path = _search(tmp_path)
    sargs = finalize_config(path, 'search', store=str(store.path), top_k=2)['tuner']['classArgs']['strategy_args']
    fixed = FixedStrategy(eas_space(), **sargs)
    props = drive(fixed, 10, metrics=lambda st, a: {'default': 0.5})
    assert [p['init'] for p in props] == sargs['inits']
    state = fixed.state_dict()
    del state['extra']['inits']                     # a state saved before per-architecture inits
    old = FixedStrategy(eas_space(), **sargs)
    old.load_state_dict(state)
    assert old.inits is None
    with pytest.raises(ConfigError, match=r'^strategy_args\.inits'):
        FixedStrategy(eas_space(), architectures=sargs['architectures'], inits=[None])


def test_finalize_rejects_a_non_eas_search(tmp_path):
    _, _, store, path = _search(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw['tuner']['classArgs']['strategy'] = 'random'
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r'^tuner\.classArgs\.strategy'):
        finalize_config(path, 'search', store=str(store.path))
