import pytest

from nni_xfer.errors import ConfigError
from nni_xfer.strategies.random import RandomStrategy
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import StrategyContract, drive, toy_space


class TestRandomContract(StrategyContract):
    @pytest.fixture
    def make(self):
        return lambda space, seed: RandomStrategy(space, seed=seed)


@pytest.mark.timeout(30)
def test_exhausts_finite_space_without_repeats():
    space = SpaceInfo('tiny', {}, {'a': [1, 2], 'b': [3, 4]})
    s = RandomStrategy(space, seed=0)
    props = drive(s, 10)
    assert len(props) == 4
    assert s.done
    assert s.propose(50) is None


@pytest.mark.timeout(30)
def test_failed_architecture_can_be_retried():
    space = SpaceInfo('one', {}, {'a': [1]})
    s = RandomStrategy(space, seed=0)
    p = s.propose(0)
    s.fail(0, 'crash')
    q = s.propose(1)
    assert q is not None and q.architecture == p.architecture


@pytest.mark.timeout(30)
def test_max_trials():
    s = RandomStrategy(toy_space(), seed=0, max_trials=3)
    assert len(drive(s, 10)) == 3
    assert s.done


@pytest.mark.timeout(30)
@pytest.mark.parametrize('kwargs,field', [
    ({'max_trials': 0}, 'strategy_args.max_trials'),
    ({'max_trials': 'x'}, 'strategy_args.max_trials'),
    ({'seed': 1.5}, 'seed'),
    ({'mode': 'up'}, 'mode'),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        RandomStrategy(toy_space(), **kwargs)
    assert str(e.value).startswith(field + ':')
