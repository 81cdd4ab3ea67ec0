"""EAS action order (eas_random interleaving, issue 15 item 7)."""
from __future__ import annotations

import copy
import math

import pytest

from nni_xfer.errors import ConfigError
from nni_xfer.strategies.eas import EASRandom
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import drive

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('one_torch_thread')]

START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-64']
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
    s = EASRandom(space(), seed=3, networks_per_episode=3, wider_steps=3, deeper_steps=3, episodes_per_stage=20)
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
    s = EASRandom(space(), seed=3, networks_per_episode=2, wider_steps=2, deeper_steps=3, action_order='sequential')
    orders = episode_orders(s, 7)
    assert len(orders) >= 3 and all(o == ['wider'] * 2 + ['deeper'] * 3 for batch in orders for o in batch)
    with pytest.raises(ConfigError, match='^strategy_args.action_order'):
        EASRandom(space(), action_order='shuffled')


def test_state_round_trip_mid_episode_and_old_states_load():
    def make():
        return EASRandom(space(), seed=5, networks_per_episode=4, wider_steps=2, deeper_steps=2)
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
