import json

import numpy as np
import pytest
import torch

from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces.nasnet_cells import XFERNASNET_DAGS, CellGrammar, example
from nni_xfer.strategies.nao import NAOController, NAOStrategy, minmax
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import StrategyContract, drive, mock_metrics

pytestmark = pytest.mark.usefixtures('one_torch_thread')

TINY = {'epochs': 3, 'batch_size': 8, 'embedding_size': 8, 'hidden_size': 16, 'max_lambda': 5}


def nasnet_info(B=2, ops='nao_ws') -> SpaceInfo:
    g = CellGrammar(B, ops)
    return SpaceInfo('nasnet_cells', {'B': B, 'ops': ops}, g.dims(), extra={'kind': 'nasnet_cells', 'B': B,
                                                                          'ops': g.ops})


class TestNAOContract(StrategyContract):
    budget = 12

    @pytest.fixture
    def space(self):
        return nasnet_info()

    @pytest.fixture
    def make(self):
        return lambda space, seed: NAOStrategy(space, seed=seed, seed_archs=4, iterations=3, new_per_iteration=3,
                                               top_k=3, controller=dict(TINY))


@pytest.mark.timeout(60)
def test_rounds_propose_only_new_architectures_and_resume_keeps_controller():
    s = NAOStrategy(nasnet_info(), seed=0, seed_archs=6, iterations=2, new_per_iteration=4, top_k=4,
                    fill_random=True, controller=dict(TINY))
    props = drive(s, 100, batch=3)
    assert s.done and len(props) == 6 + 2 * 4
    keys = [json.dumps(p['architecture'], sort_keys=True) for p in props]
    assert len(set(keys)) == len(keys)
    roles = [p['meta']['role'] for p in props]
    assert roles[:6] == ['seed'] * 6 and set(roles[6:]) <= {'nao', 'random_fill'}
    assert [e['iteration'] for e in s.round_log()] == [1, 2]
    assert 'held_out' in s.round_log()[1]
    state = json.loads(json.dumps(s.state_dict()))
    assert state['extra']['controller']['weights']
    t = NAOStrategy(nasnet_info(), seed=5, controller=dict(TINY))
    t.load_state_dict(state)
    for a, b in zip(s.controller.model.state_dict().values(), t.controller.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.timeout(60)
def test_gradient_step_raises_prediction_for_every_proposal():
    s = NAOStrategy(nasnet_info(B=3, ops='naonet'), seed=1, seed_archs=12, iterations=1, new_per_iteration=6,
                    top_k=6, fill_random=False, controller=dict(TINY, epochs=20))
    props = drive(s, 100)
    nao = [p for p in props if p['meta']['role'] == 'nao']
    assert nao, 'the gradient step found no new architecture'
    for p in nao:
        assert p['meta']['pred_after'] > p['meta']['pred_before']
        assert p['parent'] is not None


@pytest.mark.timeout(60)
def test_initial_dags_are_evaluated_first():
    info = nasnet_info(B=5, ops='xfernas')
    s = NAOStrategy(info, seed=0, seed_archs=3, iterations=0, initial_dags=[json.dumps(XFERNASNET_DAGS)],
                    controller=dict(TINY))
    p = s.propose(0)
    assert p.architecture == example() and p.meta['role'] == 'initial_dag'


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kwargs, field', [
    ({'seed_archs': 0}, 'strategy_args.seed_archs'),
    ({'iterations': -1}, 'strategy_args.iterations'),
    ({'controller': {'epochs': 'many'}}, 'strategy_args.controller.epochs'),
    ({'controller': {'trade_off': 1.5}}, 'strategy_args.controller.trade_off'),
    ({'controller': {'bogus': 1}}, 'strategy_args.controller.bogus'),
    ({'initial_dags': [{'conv_dag': {}, 'reduc_dag': {}}]}, 'strategy_args.initial_dags[0].conv_dag.node_3'),
])
def test_bad_strategy_args(kwargs, field):
    with pytest.raises(ConfigError) as e:
        NAOStrategy(nasnet_info(B=5, ops='xfernas'), **kwargs)
    assert e.value.field == field and '\n' not in str(e.value)


@pytest.mark.timeout(60)
def test_needs_the_nasnet_cells_space():
    with pytest.raises(ConfigError) as e:
        NAOStrategy(SpaceInfo('toy', {}, {'a': [1, 2]}))
    assert e.value.field == 'space'


def _synthetic(g, n, rng):
    """Score = share of conv ops minus share of pools in the normal cell (a smooth function of the cell)."""
    seqs = [g.to_tokens(g.random_sample(rng)) for _ in range(n)]
    conv = g.op_tokens('conv 3x3')[0]
    pools = {g.op_tokens(o)[0] for o in g.ops if 'pool' in o}
    y = [sum(t == conv for t in s[:30]) - 0.5 * sum(t in pools for t in s[:30]) for s in seqs]
    return seqs, np.array(y, dtype=float)


@pytest.mark.timeout(120)
def test_predictor_learns_a_held_out_ranking():
    from scipy.stats import kendalltau
    g = CellGrammar(5, 'naonet')
    rng = np.random.default_rng(0)
    seqs, y = _synthetic(g, 160, rng)
    c = NAOController(g, seed=0, epochs=40, batch_size=20)
    before = kendalltau(c.predict(seqs[120:]), y[120:])[0]
    c.fit(seqs[:120], minmax(y[:120]), seed=0)
    tau = kendalltau(c.predict(seqs[120:]), y[120:])[0]
    assert tau > 0.3, (before, tau)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('ops', ['xfernas', 'naonet', 'nao_ws'])
def test_decoding_random_codes_always_gives_valid_cells(ops):
    g = CellGrammar(5, ops)
    c = NAOController(g, seed=0, **TINY)
    gen = torch.Generator().manual_seed(0)
    enc = torch.randn(200, g.seq_len // 3, TINY['hidden_size'], generator=gen) * 5
    seqs = c.decode_outputs(enc)
    assert len(seqs) == 200 and all(g.is_valid_tokens(s) for s in seqs)


@pytest.mark.timeout(60)
def test_a_round_with_no_new_cell_does_not_stall_the_search():
    """Rounds 2-4 of this tiny controller decode no new cell: propose() goes on to the next round
    instead of returning None while the search is neither done nor waiting (the tuner would stop)."""
    s = NAOStrategy(nasnet_info(), seed=3, seed_archs=4, iterations=4, new_per_iteration=3, top_k=3,
                    controller=dict(TINY))
    props = drive(s, 30, batch=2)
    assert [(e['iteration'], e['new']) for e in s.round_log()] == [(1, 3), (2, 0), (3, 0), (4, 0)]
    assert s.done and not s.pending and len(props) == 7
