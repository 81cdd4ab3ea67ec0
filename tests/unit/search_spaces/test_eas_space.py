import pytest
import torch
from types import SimpleNamespace

from nni_xfer.errors import ConfigError
from nni_xfer.space import build_space, freeze, space_info

pytestmark = pytest.mark.timeout(60)

DIGITS = SimpleNamespace(in_channels=1, num_classes=10, image_size=8)


def test_paper_start_network_builds_one_module_per_token():
    sp = build_space('eas_plain_cnn', {}, DIGITS)
    info = space_info('eas_plain_cnn', {}, sp)
    start = info.extra['start']
    assert start['layers'][:2] == ['conv-16-3', 'pool'] and info.dims == {}
    net = freeze(sp, start)
    assert len(net.layers) == len(start['layers'])
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize('layers,field', [
    (['conv-16-3'], 'architecture.layers'),
    (['pool', 'conv-16-3'], 'architecture.layers[1]'),
    (['conv-17-3', 'pool'], 'architecture.layers[0]'),
    (['conv-16-2', 'pool'], 'architecture.layers[0]'),
    (['fc-256', 'pool'], 'architecture.layers[0]'),
    (['conv-16-3', 'pool', 'dense'], 'architecture.layers[2]'),
])
def test_bad_token_lists_name_the_position(layers, field):
    sp = build_space('eas_plain_cnn', {}, DIGITS)
    with pytest.raises(ConfigError, match='^' + field.replace('[', r'\[').replace(']', r'\]')):
        freeze(sp, {'layers': layers})


def test_bad_start_is_rejected_at_build():
    with pytest.raises(ConfigError, match=r'space_args'):
        build_space('eas_plain_cnn', {'start': ['conv-16-3']}, DIGITS)


def test_random_strategy_refuses_space_without_choices():
    from nni_xfer.strategies.random import RandomStrategy
    sp = build_space('eas_plain_cnn', {}, DIGITS)
    with pytest.raises(ConfigError, match='^space:'):
        RandomStrategy(space_info('eas_plain_cnn', {}, sp))
