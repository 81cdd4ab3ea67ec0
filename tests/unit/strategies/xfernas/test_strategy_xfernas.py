"""Strategy ``xfernas``: contract suite, NAO without sources, phases, source knowledge, bad strategy_args."""
import json

import numpy as np
import pytest

from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces.nasnet_cells import CellGrammar
from nni_xfer.store import KnowledgeStore
from nni_xfer.strategies.nao import NAOStrategy
from nni_xfer.strategies.xfernas import TransferPredictor, XferNASStrategy
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import StrategyContract, drive, mock_metrics

pytestmark = [pytest.mark.usefixtures('one_torch_thread'), pytest.mark.timeout(90)]

TINY = {'epochs': 3, 'batch_size': 16, 'embedding_size': 8, 'hidden_size': 16, 'max_lambda': 5}
B, OPS = 2, 'nao_ws'


def nasnet_info() -> SpaceInfo:
    g = CellGrammar(B, OPS)
    return SpaceInfo('nasnet_cells', {'B': B, 'ops': OPS}, g.dims(), extra={'kind': 'nasnet_cells', 'B': B,
                                                                          'ops': g.ops})


def fill_store(path, per_task=12, tasks=(('digits', {}), ('synthetic', {'num_classes': 6})), seed=0, prefix='src'):
    """Random cells evaluated on source tasks, scored by the mock metric plus a per-task offset."""
    store = KnowledgeStore(path)
    g = CellGrammar(B, OPS)
    rng = np.random.Generator(np.random.PCG64(seed))
    info = nasnet_info()
    for t, (dataset, args) in enumerate(tasks):
        exp = f'{prefix}_{t}'
        store.record_experiment(exp, strategy='random', space='nasnet_cells', dataset=dataset)
        for i in range(per_task):
            arch = g.random_sample(rng)
            store.record_proposal(exp, i, architecture=arch, space='nasnet_cells', dataset=dataset,
                                  spec={'dataset_args': args, 'mode': 'maximize'})
            s = mock_metrics(type('S', (), {'space': info})(), arch)['default'] + 0.1 * t
            store.record_result(exp, i, {'default': s, 'val_acc': s}, status='SUCCEEDED')
    store.close()
    return path


def xfer(space, seed, store_path, **kw):
    args = dict(target='fashion_mnist', store=str(store_path), iterations=3, new_per_iteration=3, top_k=3,
                phase2_after=3, seed_archs=4, controller=dict(TINY))
    args.update(kw)
    return XferNASStrategy(space, seed=seed, **args)


#: a controller that learns enough on a dozen cells for its latent steps to decode new ones (with TINY,
#: 8 of the contract's 9 proposals after the sources were random fill, so no decision followed a score)
LEARNING = {'epochs': 30, 'batch_size': 8, 'embedding_size': 8, 'hidden_size': 16, 'max_lambda': 50}


class TestXferNASContract(StrategyContract):
    budget = 12

    @pytest.fixture
    def space(self):
        return nasnet_info()

    @pytest.fixture
    def make(self, tmp_path):
        store = fill_store(tmp_path / 'store.db')
        return lambda space, seed: xfer(space, seed, store, controller=dict(LEARNING))


@pytest.mark.parametrize('fill_random', [False, True])
def test_without_sources_it_proposes_exactly_what_nao_proposes(tmp_path, caplog, fill_random):
    # same arguments for both: xfernas's own defaults differ from NAO's on purpose (fill_random: true,
    # new_per_iteration: 11 for the paper's 33-trial budget), so nothing is left to the defaults here
    kw = dict(seed_archs=4, iterations=2, new_per_iteration=3, top_k=3, controller=dict(TINY),
              fill_random=fill_random)
    with caplog.at_level('WARNING'):
        x = XferNASStrategy(nasnet_info(), seed=3, target='digits', store=str(tmp_path / 'empty.db'), **kw)
    assert 'running as plain NAO' in caplog.text and not x.transfer
    n = NAOStrategy(nasnet_info(), seed=3, **kw)
    px, pn = drive(x, 20, batch=2), drive(n, 20, batch=2)
    assert x.done and n.done
    roles = [p['meta']['role'] for p in px]
    assert roles[:4] == ['seed'] * 4 and 'nao' in roles
    assert len(px) == 4 + 2 * 3 if fill_random else len(px) <= 4 + 2 * 3
    assert json.dumps(px, sort_keys=True) == json.dumps(pn, sort_keys=True)
    assert x.round_log() == n.round_log()
    # the target task's own earlier results are never source knowledge
    fill_store(tmp_path / 'own.db', tasks=(('digits', {'val_size': 0.3}),))
    assert not XferNASStrategy(nasnet_info(), target='digits', store=str(tmp_path / 'own.db'), **kw).transfer


def test_defaults_that_differ_from_nao(tmp_path):
    """The paper examines exactly 33 cells: xfernas fills short rounds; NAO (rounds of up to 100) does not."""
    x = XferNASStrategy(nasnet_info(), target='digits', store=str(tmp_path / 'empty.db'))
    n = NAOStrategy(nasnet_info())
    assert (x.fill_random, n.fill_random) == (True, False)
    # NAO's own defaults are the NAO paper's search: 600 random cells + 4 rounds x 100 (top 100 as start points)
    assert (n.seed_archs, n.iterations, n.new_per_iteration, n.top_k) == (600, 4, 100, 100)
    assert len(n.queue) == 600
    assert (x.iterations * x.new_per_iteration, x.eta) == (33, 10.0)


def test_phase_1_from_sources_then_phase_2_from_target(tmp_path):
    store = fill_store(tmp_path / 'store.db')
    s = xfer(nasnet_info(), 0, store, eta=10, phase2_after=3, iterations=3, new_per_iteration=3)
    assert s.transfer and [t.key for t in s.source_tasks] == ['digits', 'synthetic(num_classes=6)']
    assert s.predictor_task == 2
    props = drive(s, 100, batch=3)
    assert s.done and len(props) == 9                          # no random seed set with sources
    phases = [p['meta']['phase'] for p in props]
    assert phases == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert all(p['meta']['lambda'] >= 10 for p in props[:3] if p['meta']['role'] == 'nao')
    assert all(p['meta']['lambda'] < 10 for p in props[3:] if p['meta']['role'] == 'nao')
    assert any(p['meta']['role'] == 'nao' for p in props[:3])
    pred = s.controller.model.predictor
    assert isinstance(pred, TransferPredictor) and pred.num_tasks == 3
    seqs, targets, tasks = s._training_set()
    assert len(seqs) == 12 + 12 + 9 and tasks.count(2) == 9
    assert pred.residual_l2 == 1.0 and s.target_scaling == 'standard'   # defaults chosen in issue 20
    for k in range(3):  # per-task standard scores 0.5 + z / 6: mean 0.5, sd 1/6 within every task
        tk = np.asarray(targets)[np.asarray(tasks) == k]
        assert abs(tk.mean() - 0.5) < 1e-9 and abs(tk.std() - 1 / 6) < 1e-9
    assert [e['phase'] for e in s.round_log()] == [1, 2, 2]
    # phase 1 seeds: the best of each source task in turn
    best = [max(zip(t.scores, map(json.dumps, t.architectures)))[1] for t in s.source_tasks]
    s2 = xfer(nasnet_info(), 0, store)
    g = CellGrammar(B, OPS)
    assert [g.from_tokens(q) for q in s2._seeds()[:2]] == [json.loads(b) for b in best]


def test_sources_options(tmp_path):
    store = fill_store(tmp_path / 'store.db', per_task=10)
    s = xfer(nasnet_info(), 0, store, per_source_limit=4)
    assert [len(t) for t in s.source_tasks] == [4, 4]
    s = xfer(nasnet_info(), 0, store, sources=['src_1'])
    assert [t.key for t in s.source_tasks] == ['synthetic(num_classes=6)']
    s = xfer(nasnet_info(), 0, store, sources=['src_1'], target='synthetic(num_classes=6)')
    assert not s.transfer and len(s.prior_target) == 10       # an earlier run of the target task itself


def test_state_round_trip_keeps_the_source_set(tmp_path):
    store = fill_store(tmp_path / 'store.db')
    a = xfer(nasnet_info(), 1, store)
    drive(a, 4, batch=2)
    state = json.loads(json.dumps(a.state_dict()))
    fill_store(store, tasks=(('svhn', {}),), seed=5, prefix='later')          # more knowledge arrives meanwhile
    b = xfer(nasnet_info(), 1, store)
    assert len(b.source_tasks) == 3
    b.load_state_dict(state)
    assert [t.key for t in b.source_tasks] == [t.key for t in a.source_tasks] and b.predictor_task == 2
    ra = [a.propose(100 + i) for i in range(2)]
    rb = [b.propose(100 + i) for i in range(2)]
    assert [None if p is None else p.to_dict() for p in ra] == [None if p is None else p.to_dict() for p in rb]


@pytest.mark.parametrize('kwargs,field', [
    ({'eta': 0}, 'strategy_args.eta'),
    ({'eta': -1.5}, 'strategy_args.eta'),
    ({'eta': 'ten'}, 'strategy_args.eta'),
    ({'phase2_after': -1}, 'strategy_args.phase2_after'),
    ({'residual_l2': -0.1}, 'strategy_args.residual_l2'),
    ({'transfer_layers': -1}, 'strategy_args.transfer_layers'),
    ({'target_scaling': 'rank'}, 'strategy_args.target_scaling'),
    ({'per_source_limit': 0}, 'strategy_args.per_source_limit'),
    ({'sources': ['nope']}, 'strategy_args.sources'),
    ({'sources': ['other_space']}, 'strategy_args.sources'),
    ({'sources': 'everything'}, 'strategy_args.sources'),
    ({'sources': []}, 'strategy_args.sources'),
    ({'target': None}, 'strategy_args.target'),
    ({'target': {'dataset': 'x', 'oops': 1}}, 'strategy_args.target'),
    ({'store': 3}, 'strategy_args.store'),
])
def test_bad_strategy_args_name_the_key(tmp_path, kwargs, field):
    store = fill_store(tmp_path / 'store.db', per_task=2)
    db = KnowledgeStore(store)
    db.record_experiment('other_space', strategy='random', space='simple_cnn', dataset='digits')
    db.close()
    with pytest.raises(ConfigError) as e:
        xfer(nasnet_info(), 0, store, **kwargs)
    assert e.value.field == field
    assert '\n' not in str(e.value)


def test_config_check_names_the_key(tmp_path):
    from nni_xfer.config import validate_class_args
    args = {'strategy': 'xfernas', 'space': 'nasnet_cells', 'space_args': {'B': 2, 'N': 1, 'F': 4, 'ops': OPS},
            'dataset': 'digits', 'store': str(tmp_path / 's.db'), 'strategy_args': {'sources': ['missing_experiment']}}
    errors, _ = validate_class_args(args)
    assert [e.field for e in errors] == ['classArgs.strategy_args.sources']
    args['strategy_args'] = {'eta': 0}
    errors, _ = validate_class_args(args)
    assert [e.field for e in errors] == ['classArgs.strategy_args.eta']
    args['strategy_args'] = {'context': {}}
    errors, _ = validate_class_args(args)
    assert [e.field for e in errors] == ['classArgs.strategy_args.context']


def test_target_and_store_default_to_the_experiments_own(tmp_path):
    """classArgs.dataset (+ dataset_args) is the target task and classArgs.store the store read; the
    strategy_args keys override them."""
    from nni_xfer.config import validate_class_args
    own = fill_store(tmp_path / 'own.db', per_task=5)            # sources digits, synthetic(num_classes=6)
    other = fill_store(tmp_path / 'other.db', per_task=4, tasks=(('svhn', {}),), prefix='o')
    args = {'strategy': 'xfernas', 'space': 'nasnet_cells', 'space_args': {'B': B, 'N': 1, 'F': 4, 'ops': OPS},
            'dataset': 'synthetic', 'dataset_args': {'num_classes': 6, 'val_size': 0.2}, 'store': str(own),
            'strategy_args': {'controller': dict(TINY)}}

    def strategy(**strategy_args):
        errors, built = validate_class_args(dict(args, strategy_args={'controller': dict(TINY), **strategy_args}))
        assert errors == []
        return built.strategy

    s = strategy()
    assert s.target == 'synthetic(num_classes=6)'              # the split argument val_size is not the task
    assert [t.key for t in s.source_tasks] == ['digits'] and len(s.prior_target) == 0
    s = strategy(target='digits')
    assert [t.key for t in s.source_tasks] == ['synthetic(num_classes=6)']
    s = strategy(sources=['src_0', 'src_1'])                   # a named run of the target task: target knowledge
    assert [t.key for t in s.source_tasks] == ['digits'] and len(s.prior_target) == 5
    s = strategy(store=str(other))
    assert [t.key for t in s.source_tasks] == ['svhn'] and len(s.prior_target) == 0
    errors, _ = validate_class_args(dict(args, store=None, strategy_args={'controller': dict(TINY)}))
    assert errors == []                                        # $NNI_XFER_HOME/store.db: no sources, plain NAO


def test_report_section_marks_phases(tmp_path):
    from nni_xfer.strategies.xfernas.report import xfernas_phases
    store_path = fill_store(tmp_path / 'store.db')
    s = xfer(nasnet_info(), 0, store_path)
    props = drive(s, 100, batch=3)
    db = KnowledgeStore(store_path)
    for p in props:
        db.record_proposal('target', p['id'], architecture=p['architecture'], strategy='xfernas',
                           space='nasnet_cells', dataset='fashion_mnist')
        db.record_result('target', p['id'], mock_metrics(s, p['architecture']), status='SUCCEEDED')
    db.save_strategy_state('target', s.state_dict())
    lines = xfernas_phases(db.evaluations(experiment_id='target'), 'target', store=db)
    text = '\n'.join(lines)
    assert 'phase 1 (source seeds): 3 trials' in text and 'phase 2 (target seeds): 6 trials' in text
    assert len(lines) == 1 + 2 + 1 + 9
    assert xfernas_phases(db.evaluations(experiment_id='src_0'), 'src_0', store=db) == []
