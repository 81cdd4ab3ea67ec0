"""EAS action order (eas_random interleaving, issue 15 item 7) and start-network robustness (item 8):
more than 4 pooling layers, no FC layer, ``fc_block: paper``."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces.eas_plain_cnn import PlainEASOps, block_layout, deeper_ops, parse_layers
from nni_xfer.space import build_space, freeze
from nni_xfer.strategies.eas import EASStrategy, EASRandomStrategy
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import drive
from nni_xfer.transfer.net2net import calibrate_inserted

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('one_torch_thread')]

START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-64']
FIVE_POOLS = ['conv-16-3', 'pool', 'conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-32-3', 'pool',
              'conv-64-3', 'pool', 'conv-64-3', 'pool']          # 6 conv blocks, no FC layer
LIMITS = {'conv_widths': [16, 32, 64, 96, 128], 'kernels': [1, 3, 5], 'fc_units': [64, 128, 256]}


def space(start=START, **limits) -> SpaceInfo:
    return SpaceInfo('eas_plain_cnn', {}, {}, extra={'kind': 'eas_plain_cnn', 'start': {'layers': list(start)},
                                                     **(limits or LIMITS)})


def metrics(strategy, architecture):
    cap = sum(int(t.split('-')[1]) for t in architecture['layers'] if t != 'pool')
    acc = 1 - math.exp(-cap / 400)
    return {'default': acc, 'val_acc': acc, 'checkpoint': f'/ckpt/{cap}.pt', 'sha256': '0' * 64}


def episode_orders(strategy, proposals: int) -> list[list[list[str]]]:
    """Per episode, each sampled network's step kinds (cached repeats included), over ``proposals`` trials."""
    seen: dict[int, list[list[str]]] = {}
    sample = strategy._sample_child

    def recording():
        child = sample()
        seen.setdefault(strategy.st['episode'], []).append([kind for kind, _, _ in child['traj']])
        return child
    strategy._sample_child = recording
    drive(strategy, proposals, metrics=metrics)
    return [seen[e] for e in sorted(seen)]


# --------------------------------------------------------------------------- item 7: interleaving

def test_random_baseline_interleaves_wider_and_deeper_per_episode():
    s = EASRandomStrategy(space(), seed=3, networks_per_episode=3, wider_steps=3, deeper_steps=3, episodes_per_stage=20)
    assert s.action_order == 'interleaved'
    orders = episode_orders(s, 25)
    assert len(orders) >= 6
    sequential = ['wider'] * 3 + ['deeper'] * 3
    for batch in orders:
        assert all(sorted(o) == sorted(sequential) for o in batch)   # 3 + 3 steps each
        assert all(o == batch[0] for o in batch)                     # one order per episode, shared
    firsts = [tuple(batch[0]) for batch in orders]
    assert any(o != tuple(sequential) for o in firsts)               # interleaving happens
    assert len(set(firsts)) > 2                                      # and varies between episodes
    assert any(o[0] == 'deeper' for o in firsts)


def test_sequential_order_is_the_old_behaviour_and_bad_order_is_named():
    s = EASRandomStrategy(space(), seed=3, networks_per_episode=2, wider_steps=2, deeper_steps=3, action_order='sequential')
    orders = episode_orders(s, 7)
    assert len(orders) >= 3 and all(o == ['wider'] * 2 + ['deeper'] * 3 for batch in orders for o in batch)
    with pytest.raises(ConfigError, match='^strategy_args.action_order'):
        EASRandomStrategy(space(), action_order='shuffled')


def test_state_round_trip_mid_episode_and_old_states_load():
    def make():
        return EASRandomStrategy(space(), seed=5, networks_per_episode=4, wider_steps=2, deeper_steps=2)
    a = make()
    drive(a, 3, metrics=metrics)                      # start + 2 children: mid-episode
    state = copy.deepcopy(a.state_dict())
    assert state['extra']['st']['order'] is not None
    b = make()
    b.load_state_dict(state)
    assert [p.to_dict() if p else None for p in (a.propose(10), a.propose(11))] == \
           [p.to_dict() if p else None for p in (b.propose(10), b.propose(11))]
    old = copy.deepcopy(state)
    del old['extra']['st']['order']                          # saved before the interleaved order existed
    c = make()
    c.load_state_dict(old)
    assert c.st['order'] is None and c.propose(10) is not None


# --------------------------------------------------------------------------- item 8: robustness

@pytest.mark.parametrize('cls', [EASRandomStrategy, EASStrategy])
def test_start_with_more_than_four_pools_and_no_fc(cls):
    """Six pools (the controller's block head grows to 7) and no FC: every proposal is a valid network,
    deeper actions reach the 5th/6th conv blocks, and children gain FC layers of listed widths."""
    s = cls(space(FIVE_POOLS), seed=0, networks_per_episode=4, wider_steps=1, deeper_steps=4, episodes_per_stage=6)
    assert s.adapter.n_blocks == 7 and block_layout(FIVE_POOLS, 7)[-1] == [11]
    props = drive(s, 25, metrics=metrics)
    assert len(props) == 25
    gained_fc = deep_blocks = 0
    for p in props:
        layers = p['architecture']['layers']
        parse_layers(layers, **LIMITS)                # valid under the space's width lists
        gained_fc += any(t.startswith('fc-') for t in layers)
        blocks = block_layout(layers, 7)
        deep_blocks += len(blocks[4]) + len(blocks[5]) > 2
    assert gained_fc > 0 and deep_blocks > 0


def test_first_fc_after_the_global_pool_is_function_preserving():
    digits = SimpleNamespace(in_channels=1, num_classes=10, image_size=8)
    start = ['conv-16-3', 'pool', 'conv-32-3', 'pool']
    sp = build_space('eas_plain_cnn', {'start': start, **LIMITS}, digits)
    ops = deeper_ops(start, (4, 0, 3), fc_units=LIMITS['fc_units'])
    assert ops == [{'op': 'deeper', 'after': 3, 'kernel': 3}, {'op': 'wider', 'layer': 4, 'width': 64}]
    torch.manual_seed(0)
    net = freeze(sp, {'layers': start})
    x = torch.randn(32, 1, 8, 8)
    net.train()(x)                                    # non-trivial BN statistics
    net.eval()
    for noise in (False, True):
        child = sp.net2net_transform(net, ops, noise=noise, generator=torch.Generator().manual_seed(1))
        assert child.tokens == ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'fc-64']
        calibrate_inserted(child, x)
        with torch.no_grad():
            err = ((child.eval()(x) - net(x)).abs().max() / net(x).abs().max()).item()
        assert (err <= 1e-5) if not noise else (0 < err < 0.05)
    freeze(sp, {'layers': child.tokens}).load_state_dict(child.state_dict())


def test_fc_block_modes():
    paper = PlainEASOps(space(), fc_block='paper')
    assert paper.layout(START) == [[0], [2], [4], [], [5, 6]]
    ops = paper.deeper_ops(START, (4, 0, 5))          # right after the global pool, before fc-64
    assert ops == [{'op': 'deeper', 'after': 5, 'kernel': 5}]   # pooled width 64 is a listed fc width
    assert paper.apply({'layers': START}, ops)['layers'][-2:] == ['fc-64', 'fc-64']
    code = PlainEASOps(space())
    assert code.layout(START)[-1] == [6]             # the authors' code: after an FC only
    s = EASStrategy(space(), seed=0, networks_per_episode=2, wider_steps=1, deeper_steps=2, fc_block='paper')
    assert s.policy.controller.grammar.fc_block == 'paper'   # the controller reads the space's grammar
    drive(s, 5, metrics=metrics)
    with pytest.raises(ConfigError, match='^strategy_args.fc_block'):
        EASRandomStrategy(space(), fc_block='always')
    dense = SpaceInfo('eas_densenet', {}, {}, extra={
        'kind': 'eas_densenet', 'start': {'growths': [[4], [4]], 'stem': 8, 'transitions': [8]},
        'growth_rates': [4, 6]})
    with pytest.raises(ConfigError, match="^strategy_args.fc_block: has no effect with space 'eas_densenet'"):
        EASRandomStrategy(dense, fc_block='paper')


def test_fc_less_start_needs_an_fc_width_for_the_pooled_channels():
    small = dict(LIMITS, fc_units=[32, 64])           # conv widths go up to 128
    with pytest.raises(ConfigError, match='^space_args.fc_units'):
        EASRandomStrategy(space(['conv-16-3', 'pool'], **small))
    EASRandomStrategy(space(['conv-16-3', 'pool', 'fc-32'], **small))     # has an FC: the gpool is never offered


def test_check_accepts_such_starts(tmp_path):
    import yaml

    from nni_xfer.config import check_config
    from pathlib import Path
    cfg = yaml.safe_load((Path(__file__).resolve().parents[4] / 'examples/eas/quick_digits.yml').read_text())
    args = cfg['tuner']['classArgs']
    args['space_args']['start'] = FIVE_POOLS
    args['strategy_args']['fc_block'] = 'paper'
    path = tmp_path / 'exp.yml'
    path.write_text(yaml.safe_dump(cfg))
    assert check_config(path) == []
    args['strategy_args']['fc_block'] = 'sometimes'
    path.write_text(yaml.safe_dump(cfg))
    assert any('strategy_args.fc_block' in p for p in check_config(path))
