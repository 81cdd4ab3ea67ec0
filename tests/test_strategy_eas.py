import math

import pytest

from nni_xfer.errors import ConfigError
from nni_xfer.strategies.eas import EASRandom, blocks_of
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import StrategyContract, drive

START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-64']


def eas_space() -> SpaceInfo:
    return SpaceInfo('eas_plain_cnn', {}, {}, extra={
        'kind': 'eas_plain_cnn', 'start': {'layers': START}, 'conv_widths': [16, 32, 64, 96, 128],
        'kernels': [1, 3, 5], 'fc_units': [64, 128, 256]})


def eas_metrics(strategy, architecture):
    """Closed-form stand-in for training: more capacity scores higher, saturating below 1."""
    cap = sum(int(t.split('-')[1]) for t in architecture['layers'] if t != 'pool')
    acc = 1 - math.exp(-cap / 400)
    return {'default': acc, 'val_acc': acc, 'checkpoint': f'/ckpt/{cap}.pt', 'sha256': '0' * 64}


class TestEASRandomContract(StrategyContract):
    budget = 14

    def metrics(self, strategy, architecture):
        return eas_metrics(strategy, architecture)

    @pytest.fixture
    def space(self):
        return eas_space()

    @pytest.fixture
    def make(self):
        return lambda space, seed: EASRandom(space, seed=seed, networks_per_episode=4, wider_steps=2,
                                             deeper_steps=2, episodes_per_stage=50)


@pytest.mark.timeout(60)
def test_blocks_of():
    assert blocks_of(START) == [[0], [2], [4], [6]]


@pytest.mark.timeout(60)
def test_episode_structure_and_lineage():
    s = EASRandom(eas_space(), seed=0, networks_per_episode=3, wider_steps=1, deeper_steps=1,
                  episodes_per_stage=2, stages=2, stage_epochs=7)
    props = drive(s, 100, metrics=eas_metrics)
    roles = [p['meta']['role'] for p in props]
    assert roles[0] == 'start' and 'stage_best' in roles and s.done
    start_id = props[0]['id']
    for p in props[1:roles.index('stage_best')]:
        assert p['init']['kind'] == 'net2net' and p['parent'] == start_id
        assert len(p['init']['ops']) >= 1  # at least the deeper step
    best = props[roles.index('stage_best')]
    assert best['init']['kind'] == 'checkpoint' and best['meta']['evaluator_args'] == {'epochs': 7}
    log = s.episode_log()
    assert len(log) == 4 and all(0 < e['mean'] <= e['best'] < 1 for e in log)


@pytest.mark.timeout(60)
def test_cache_never_trains_a_child_twice():
    s = EASRandom(eas_space(), seed=1, networks_per_episode=6, wider_steps=0, deeper_steps=1,
                  episodes_per_stage=5)
    props = drive(s, 200, metrics=eas_metrics)
    keys = [tuple(p['architecture']['layers']) for p in props]
    assert len(keys) == len(set(keys))
    assert s.done and len(s.episode_log()) == 5


@pytest.mark.timeout(60)
def test_rejects_non_eas_space_and_bad_args():
    with pytest.raises(ConfigError, match='^space:'):
        EASRandom(SpaceInfo('simple_cnn', {}, {'a': [1]}))
    with pytest.raises(ConfigError, match=r'^strategy_args\.networks_per_episode'):
        EASRandom(eas_space(), networks_per_episode=0)


class TestEASContract(TestEASRandomContract):
    @pytest.fixture
    def make(self):
        from nni_xfer.strategies.eas import EAS
        return lambda space, seed: EAS(space, seed=seed, networks_per_episode=4, wider_steps=2,
                                       deeper_steps=2, episodes_per_stage=50)


@pytest.mark.timeout(120)
def test_rl_controller_is_updated_each_episode():
    from nni_xfer.strategies.eas import EAS
    s = EAS(eas_space(), seed=0, networks_per_episode=3, wider_steps=1, deeper_steps=1, episodes_per_stage=3)
    drive(s, 100, metrics=eas_metrics)
    log = s.episode_log()
    assert len(log) == 3 and all('loss' in e and 'baseline' in e for e in log)
    assert log[0]['baseline'] != log[-1]['baseline']


@pytest.mark.timeout(120)
@pytest.mark.parametrize('name', ['eas', 'eas_random'])
def test_every_proposal_is_a_valid_network_of_the_space(name):
    from types import SimpleNamespace

    from nni_xfer.config import make_strategy
    from nni_xfer.space import build_space, freeze, space_info
    start = ['conv-16-3', 'pool', 'conv-96-3', 'pool', 'fc-64']  # conv width after the pool is no FC width
    sp = build_space('eas_plain_cnn', {'start': start}, SimpleNamespace(in_channels=1, num_classes=10, image_size=8))
    s = make_strategy(name, space_info('eas_plain_cnn', {'start': start}, sp),
                      {'episodes_per_stage': 6, 'networks_per_episode': 5, 'wider_steps': 2, 'deeper_steps': 3},
                      seed=3)
    for p in drive(s, 200, metrics=eas_metrics):
        freeze(sp, p['architecture'])
