"""ModuleNet's NSGA-II strategy: the shared contract, convergence, failures, multi-objective, arguments."""
import json

import numpy as np
import pytest

from nni_xfer.errors import ConfigError
from nni_xfer.strategies.fixed import FixedStrategy
from nni_xfer.strategies.modulenet import ModuleNetStrategy
from nni_xfer.strategy import SpaceInfo, StrategyError
from nni_xfer.testing.strategy_contract import StrategyContract, drive, mock_metrics, toy_space

pytestmark = pytest.mark.timeout(60)

TARGET = [3, 1, 0, 2, 1]
SPACE = SpaceInfo('chain', {}, {f'module_{j}': ['a', 'b', 'c', 'd'] for j in range(5)})


def distance(strategy, arch):
    """Positions differing from TARGET (0 is the optimum); params grow with the choice index."""
    idx = [SPACE.dims[f'module_{j}'].index(arch[f'module_{j}']) for j in range(5)]
    return {'default': float(sum(i != t for i, t in zip(idx, TARGET))), 'params': float(sum(idx))}


class TestModuleNetContract(StrategyContract):
    def metrics(self, strategy, architecture):
        m = mock_metrics(strategy, architecture)
        return {**m, 'params': float(len(json.dumps(architecture)))}

    @pytest.fixture
    def make(self):
        return lambda space, seed: ModuleNetStrategy(space, seed=seed, population=4, generations=3)


class TestFixedContract(StrategyContract):
    @pytest.fixture
    def make(self):
        def make(space, seed):
            rng = np.random.default_rng(seed)
            archs, keys = [], set()
            while len(archs) < 12:
                a = {k: v[int(rng.integers(len(v)))] for k, v in space.dims.items()}
                if json.dumps(a, sort_keys=True) not in keys:
                    keys.add(json.dumps(a, sort_keys=True))
                    archs.append(a)
            return FixedStrategy(space, seed=seed, architectures=archs)
        return make


def test_converges_towards_the_optimum():
    s = ModuleNetStrategy(SPACE, seed=0, population=12, generations=8)
    drive(s, 1000, metrics=distance, batch=5)
    assert s.done
    log = s.generation_log()
    assert len(log) == 8
    assert log[-1]['best'] <= log[0]['best'] - 2
    assert log[-1]['mean'] < log[0]['mean']
    assert all(e['new_survivors'] >= 0 for e in log) and sum(e['new_survivors'] for e in log[1:]) > 0
    assert log[0]['new_survivors'] == 12          # generation 0: everyone is new
    assert s.best()[1]['default'] == log[-1]['best']


def test_failures_count_as_worst_and_search_goes_on():
    s = ModuleNetStrategy(SPACE, seed=1, population=6, generations=4)
    drive(s, 1000, metrics=distance, fail=lambda i: i % 4 == 0)
    assert s.done
    log = s.generation_log()
    assert len(log) == 4 and sum(e['failed'] for e in log) > 0
    # no failed individual survives while enough evaluated ones exist
    assert all(np.isfinite(p['objectives'][0]) for p in s.pop)


def test_multi_objective_keeps_a_front():
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
    s = ModuleNetStrategy(SPACE, seed=2, population=10, generations=5, objectives=['default', 'params'])
    drive(s, 1000, metrics=distance)
    F = np.array([p['objectives'] for p in s.pop])
    front = NonDominatedSorting().do(F, only_non_dominated_front=True)
    assert len(front) >= 2                        # a trade-off, not a single point
    assert min(F[:, 1]) == 0.0 or min(F[:, 0]) == 0.0


def test_population_larger_than_space_evaluates_each_once():
    tiny = SpaceInfo('tiny', {}, {'module_0': ['a', 'b'], 'module_1': ['a', 'b']})
    s = ModuleNetStrategy(tiny, seed=0, population=10, generations=3)
    props = drive(s, 100, metrics=lambda st, a: {'default': float(a['module_0'] == 'a')})
    assert len(props) == 4 and s.done


def test_waits_for_the_generation_then_continues():
    s = ModuleNetStrategy(SPACE, seed=3, population=3, generations=2)
    ps = [s.propose(i) for i in range(3)]
    assert s.propose(3) is None and not s.done    # generation 0 still running
    for i, p in enumerate(ps):
        s.observe(i, distance(s, p.architecture))
    assert s.propose(4) is not None               # generation 1 bred


def test_missing_objective_is_a_protocol_error():
    s = ModuleNetStrategy(SPACE, seed=0, population=2, generations=1, objectives=['default', 'flops'])
    p = s.propose(0)
    with pytest.raises(StrategyError, match="objective 'flops'"):
        s.observe(0, {'default': 1.0})
    assert s.is_pending(0)
    s.observe(0, {'default': 1.0, 'flops': 3})
    assert p is not None


@pytest.mark.parametrize('kwargs,field', [
    ({'population': 1}, 'strategy_args.population'),
    ({'generations': 0}, 'strategy_args.generations'),
    ({'objectives': ['params']}, 'strategy_args.objectives'),
    ({'objectives': 'default'}, 'strategy_args.objectives'),
    ({'crossover_prob': 1.5}, 'strategy_args.crossover_prob'),
    ({'mutation_prob': -0.1}, 'strategy_args.mutation_prob'),
    ({'mode': 'maximize'}, 'mode'),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        ModuleNetStrategy(toy_space(), **kwargs)
    assert str(e.value).startswith(field + ':')


@pytest.mark.parametrize('kwargs,field', [
    ({'architectures': []}, 'strategy_args.architectures'),
    ({'architectures': [{'a': 1, 'b': 'x'}]}, 'strategy_args.architectures[0].c'),
    ({'architectures': [{'a': 9, 'b': 'x', 'c': 8}]}, 'strategy_args.architectures[0].a'),
    ({'architectures': [{'a': 1, 'b': 'x', 'c': 8}] * 2}, 'strategy_args.architectures'),
])
def test_fixed_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        FixedStrategy(toy_space(), **kwargs)
    assert str(e.value).startswith(field + ':')
