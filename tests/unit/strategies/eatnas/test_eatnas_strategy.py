"""Strategy ``eatnas``: contract suite, constraints, scores, elastic-transfer seed, sharing in real trials."""
import json

import numpy as np
import pytest

from nni_xfer.config import validate_class_args
from nni_xfer.data.pipeline import dataset_info
from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces import mbv2_blocks as m
from nni_xfer.space import build_space, space_info
from nni_xfer.store import KnowledgeStore
from nni_xfer.strategy import StrategyContext
from nni_xfer.strategies.eatnas import EATNASStrategy
from nni_xfer.testing.strategy_contract import StrategyContract, drive

pytestmark = pytest.mark.timeout(120)

SMALL = {'stem_channels': 8, 'head_channels': 32}


def make_info(space_args=None):
    args = {**SMALL, **(space_args or {})}
    return space_info('mbv2_blocks', args, build_space('mbv2_blocks', args, dataset_info('digits')))


def fake_metrics(strategy, arch):
    """Deterministic stand-in for training: MBConv6 and larger kernels help, size from the widths."""
    acc = 0.5 + sum(0.04 * (b['op'] == 'mbconv6') + 0.01 * b['kernel'] / 7 + 0.005 * b['depth']
                    for b in arch['blocks'])
    return {'default': acc, 'val_acc': acc, 'params': 1e6 * m.expansion_ratio(arch) / 3 + 1e5 * m.num_layers(arch)}


class TestEATNASContract(StrategyContract):
    budget = 14

    def metrics(self, strategy, architecture):
        return fake_metrics(strategy, architecture)

    @pytest.fixture
    def space(self):
        return make_info()

    @pytest.fixture
    def make(self):
        return lambda space, seed: EATNASStrategy(space, seed=seed, population=4, sample=2, patience=None)


def test_generator_and_mutation_never_leave_the_constraints():
    for preset in ('cifar', 'imagenet'):
        info = make_info({'preset': preset})
        g = m.grammar_from_info(info)
        for seed in range(3):
            s = EATNASStrategy(info, seed=seed, population=8, sample=4, patience=None,
                       seed_from={'architecture': m.EXAMPLE} if seed == 0 else None)
            props = drive(s, 120, batch=3, metrics=fake_metrics)
            assert len(props) == 120
            for p in props:
                assert m.constraint_violation(p['architecture'], g) is None
                assert m.parse_architecture(p['architecture'], g) == p['architecture']


def test_explicit_seed_generates_offspring_of_the_basic_architecture():
    s = EATNASStrategy(make_info(), seed=0, population=6, sample=3, seed_from={'architecture': m.EXAMPLE})
    props = drive(s, 6, metrics=fake_metrics)
    for p in props:
        assert p['meta']['role'] == 'init' and p['init'] == {'kind': 'fresh'}
        changed = [sum(a[k] != b[k] for k in m.ELEMENTS) for a, b in zip(p['architecture']['blocks'],
                                                                       m.EXAMPLE['blocks'])]
        assert changed == [1] * 7


#: searched under the CIFAR preset (expansion 4.5 in [4, 10], 12 layers): outside ImageNet's [8, 16] and [16, 18]
CIFAR_BASIC = {'blocks': [{**b, 'width': w, 'depth': d} for b, w, d in
                          zip(m.EXAMPLE['blocks'], [0.5, 2.0, 1.5, 2.0, 1.5, 1.0, 1.0], [1, 2, 2, 2, 2, 2, 1])]}


def test_a_cifar_basic_seeds_an_imagenet_population_inside_its_constraints():
    cifar, imagenet = (m.grammar_from_info(make_info({'preset': p})) for p in ('cifar', 'imagenet'))
    assert m.constraint_violation(CIFAR_BASIC, cifar) is None
    assert m.expansion_ratio(CIFAR_BASIC) == 4.5 and m.num_layers(CIFAR_BASIC) == 12
    assert 'outside [8, 16]' in m.constraint_violation(CIFAR_BASIC, imagenet)
    s = EATNASStrategy(make_info({'preset': 'imagenet'}), seed=0, population=12, sample=4, patience=None,
                       seed_from={'architecture': CIFAR_BASIC})
    assert s.seed_info['architecture'] == CIFAR_BASIC
    props = drive(s, 40, batch=3, metrics=fake_metrics)
    assert len(props) == 40
    for p in props:
        assert m.constraint_violation(p['architecture'], imagenet) is None
        assert m.parse_architecture(p['architecture'], imagenet) == p['architecture']
    for p in props[:12]:   # the initial population: one transformation of the basic architecture
        assert p['meta'] == {'role': 'init', 'transfer': True}
        assert [sum(a[k] != b[k] for k in m.ELEMENTS) for a, b in
                zip(p['architecture']['blocks'], CIFAR_BASIC['blocks'])] == [1] * 7


def test_tournament_cycle_replaces_the_worst_of_its_sample_and_tracks_quality():
    s = EATNASStrategy(make_info(), seed=1, population=4, sample=4, patience=None, sub_objective=None)
    drive(s, 4, metrics=fake_metrics)
    assert len(s.cycles) == 1 and len(s.population) == 4
    worst = min(s.population, key=lambda x: x['score'])
    best = max(s.population, key=lambda x: x['score'])
    p = s.propose(10)
    assert p.parent == best['id'] and p.meta['role'] == 'child'   # S = P: the best of all is mutated
    s.observe(10, {'default': 0.99})
    assert worst['id'] not in [x['id'] for x in s.population] and len(s.population) == 4
    accs = [x['acc'] for x in s.population]
    mean, std = np.mean(accs), np.std(accs)
    c = s.cycles[-1]
    assert c['mean_acc'] == pytest.approx(mean) and c['std_acc'] == pytest.approx(std)
    assert c['Q'] == pytest.approx(mean * (std / 0.01) ** -0.07)
    assert s.history[-1]['population'] == c


def test_out_of_order_results_remove_the_worst_of_each_childs_own_sample():
    s = EATNASStrategy(make_info(), seed=2, population=6, sample=2, patience=None)
    drive(s, 6, metrics=fake_metrics)
    a, b = s.propose(20), s.propose(21)
    sample_b = list(s.samples[21])
    s.observe(21, fake_metrics(s, b.architecture))
    removed = s.cycles[-1]['removed']
    assert removed in sample_b
    s.observe(20, fake_metrics(s, a.architecture))
    assert len(s.population) == 6 and len(s.cycles) == 3


def test_eq1_score_hand_cases():
    s = EATNASStrategy(make_info(), population=4, sample=2, target=3e6, alpha=-0.07, beta=-0.5)
    assert s.objective({'default': 0.9, 'params': 3e6}) == pytest.approx(0.9)
    assert s.objective({'default': 0.9, 'params': 1.5e6}) == pytest.approx(0.9 * 0.5 ** -0.07)
    assert s.objective({'default': 0.9, 'params': 6e6}) == pytest.approx(0.9 * 2 ** -0.5)
    t = EATNASStrategy(make_info(), population=4, sample=2, sub_objective='mult_adds', target=5e8)
    assert t.objective({'default': 0.7, 'flops': 2e9}) == pytest.approx(0.7 * 2 ** -0.07)


def test_patience_stops_on_flat_quality():
    s = EATNASStrategy(make_info(), seed=0, population=4, sample=2, patience=3)
    props = drive(s, 200, metrics=lambda st, a: {'default': 0.5, 'params': 3e6})
    assert s.done and len(props) == 4 + 3


@pytest.mark.parametrize('strategy_args,space_args,field', [
    ({'sample': 8, 'population': 4}, {}, 'strategy_args.sample'),
    ({'target': 0}, {}, 'strategy_args.target'),
    ({'target': -1.0}, {}, 'strategy_args.target'),
    ({'sub_objective': 'latency'}, {}, 'strategy_args.sub_objective'),
    ({'widen': 'net2net'}, {}, 'strategy_args.widen'),
    ({}, {'ops': ['sepconv', 'conv3']}, 'space_args.ops'),
    ({}, {'expansion_range': [300, 400]}, 'space_args.expansion_range'),
    # outside the constraints is fine (test below) unless no single transformation reaches them:
    # from 7 layers of width factor 2, 22 layers need five blocks deeper, whose widths keep the ratio >= 8
    ({'seed_from': {'architecture': {'blocks': [{**b, 'width': 2.0, 'depth': 1} for b in m.EXAMPLE['blocks']]}}},
     {'expansion_range': [4, 6], 'layer_range': [22, 28]}, 'strategy_args.seed_from.architecture.blocks'),
    ({'seed_from': {'architecture': {'blocks': [{**b, 'kernel': 4} for b in m.EXAMPLE['blocks']]}}}, {},
     'strategy_args.seed_from.architecture.blocks[0].kernel'),
    ({'seed_from': {'experiment': 'nosuch'}}, {}, 'strategy_args.seed_from.experiment'),
    ({'seed_from': {'experiment': 'cnn'}}, {}, 'strategy_args.seed_from.experiment'),
    ({'seed_from': {'experiment': 'src', 'pick': 'worst'}}, {}, 'strategy_args.seed_from.pick'),
    ({'seed_from': {'checkpoint': 'x'}}, {}, 'strategy_args.seed_from'),
    ({'seed_from': {'experiment': 'src', 'store': '/nonexistent/store.db'}}, {}, 'strategy_args.seed_from.store'),
])
def test_bad_class_args_give_one_named_line(tmp_path, strategy_args, space_args, field):
    store = tmp_path / 'store.db'
    ks = KnowledgeStore(store)
    ks.record_proposal('cnn', 0, architecture={'width': 16}, space='simple_cnn', strategy='random')
    ks.record_result('cnn', 0, {'default': 0.5}, status='SUCCEEDED')
    ks.close()
    # seed_from.store defaults to the experiment's own classArgs.store
    args = {'strategy': 'eatnas', 'space': 'mbv2_blocks', 'space_args': {**SMALL, **space_args},
            'strategy_args': strategy_args, 'dataset': 'digits', 'evaluator': 'mock', 'store': str(store)}
    errors, _ = validate_class_args(args)
    assert len(errors) == 1, errors
    assert errors[0].field == f'classArgs.{field}', str(errors[0])
    assert '\n' not in str(errors[0])


def test_seed_from_store_picks_the_best_of_the_best_population(tmp_path):
    store = KnowledgeStore(tmp_path / 'store.db')
    src = EATNASStrategy(make_info(), seed=0, population=4, sample=2, patience=None)
    for p in drive(src, 8, metrics=fake_metrics):
        store.record_proposal('src', p['id'], architecture=p['architecture'], space='mbv2_blocks', strategy='eatnas')
        store.record_result('src', p['id'], {**fake_metrics(src, p['architecture']), 'checkpoint': None},
                            status='SUCCEEDED')
    store.save_strategy_state('src', src.state_dict())
    store.close()
    best = max(src.best_population, key=lambda x: x['score'])
    dst = EATNASStrategy(make_info(), seed=0, population=4, sample=2,
                         seed_from={'experiment': 'src', 'store': str(tmp_path / 'store.db')})
    assert dst.seed_info['architecture'] == best['architecture']
    assert dst.seed_info['source'] == {'experiment_id': 'src', 'proposal_id': best['id']}
    # without seed_from.store: the experiment's own store (classArgs.store through the context) ...
    ctx = StrategyContext(store=str(tmp_path / 'store.db'), dataset='digits')
    via_ctx = EATNASStrategy(make_info(), seed=0, population=4, sample=2, seed_from={'experiment': 'src'}, context=ctx)
    assert via_ctx.seed_info == dst.seed_info
    # ... else $NNI_XFER_HOME/store.db (empty here); an explicit key overrides the context
    with pytest.raises(ConfigError, match='the default store') as e:
        EATNASStrategy(make_info(), population=4, sample=2, seed_from={'experiment': 'src'})
    assert e.value.field == 'strategy_args.seed_from.store'
    with pytest.raises(ConfigError, match='no knowledge store at /nowhere.db$'):
        EATNASStrategy(make_info(), population=4, sample=2, context=ctx,
                       seed_from={'experiment': 'src', 'store': '/nowhere.db'})
    # round trip keeps the seed
    again = EATNASStrategy(make_info(), seed=5, population=4, sample=2)
    again.load_state_dict(json.loads(json.dumps(dst.state_dict())))
    assert again.seed_info == dst.seed_info


@pytest.mark.slow
def test_children_inherit_through_real_trials(tmp_path):
    """Real training: parent trial -> child trial with eatnas_share; identical child keeps the parent's accuracy."""
    from nni_xfer.runtime.trial import run_trial
    spec = {'space': 'mbv2_blocks', 'space_args': SMALL, 'architecture': m.EXAMPLE, 'dataset': 'digits',
            'dataset_args': {'limit_train': 400},
            'evaluator': 'train', 'evaluator_args': {'epochs': 1, 'batch_size': 64, 'lr': 0.05, 'num_threads': 1},
            'checkpoint_root': str(tmp_path), 'experiment_id': 'e', 'proposal_id': 0}
    parent = run_trial(spec)
    same = run_trial({**spec, 'proposal_id': 1, 'seed': 9,
                      'init': {'kind': 'eatnas_share', 'uri': parent['checkpoint'], 'sha256': parent['sha256']}})
    assert same['shared_fraction'] == 1.0
    assert same['inherited_acc'] == pytest.approx(parent['val_acc'])
    g = build_space('mbv2_blocks', SMALL, dataset_info('digits')).grammar
    child_arch = m.transform(m.EXAMPLE, np.random.default_rng(0), g)
    child = run_trial({**spec, 'proposal_id': 2, 'architecture': child_arch,
                       'init': {'kind': 'eatnas_share', 'uri': parent['checkpoint']}})
    assert 0 < child['shared_fraction'] < 1
    with pytest.raises(ConfigError):
        run_trial({**spec, 'proposal_id': 3, 'init': {'kind': 'eatnas_share', 'uri': parent['checkpoint'],
                                                      'depth_extra': 'twice'}})
