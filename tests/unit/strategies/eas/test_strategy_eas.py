import math

import pytest
import torch

from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces.eas_densenet import densenet_finish_ops
from nni_xfer.search_spaces.eas_plain_cnn import block_layout
from nni_xfer.strategies.eas import EASRandomStrategy
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import StrategyContract, drive


# the controller's tensors are tiny: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('one_torch_thread')

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
        return lambda space, seed: EASRandomStrategy(space, seed=seed, networks_per_episode=4, wider_steps=2,
                                                     deeper_steps=2, episodes_per_stage=50)


@pytest.mark.timeout(60)
def test_block_layout():
    assert block_layout(START) == [[0], [2], [4], [], [6]]


@pytest.mark.timeout(60)
def test_episode_structure_and_lineage():
    s = EASRandomStrategy(eas_space(), seed=0, networks_per_episode=3, wider_steps=1, deeper_steps=1,
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
def test_per_stage_budgets_are_honoured():
    """episodes_per_stage as a list (paper: [30, 15]): each stage runs its own number of episodes, the
    stage best trains stage_epochs more between stages and is the next stage's start point."""
    s = EASRandomStrategy(eas_space(), seed=0, networks_per_episode=3, wider_steps=1, deeper_steps=1,
                          episodes_per_stage=[3, 1], stage_epochs=5)
    assert s.stages == 2 and s.stage_budgets == [3, 1]
    props = drive(s, 200, metrics=eas_metrics)
    assert s.done
    assert [e['stage'] for e in s.episode_log()] == [0, 0, 0, 1]
    roles = [p['meta']['role'] for p in props]
    assert roles.count('start') == 1 and roles.count('stage_best') == 1
    best = props[roles.index('stage_best')]
    assert best['meta']['evaluator_args'] == {'epochs': 5} and best['init']['kind'] == 'checkpoint'
    children = [p for p in props if p['meta']['role'] == 'child']
    assert {p['meta']['stage'] for p in children} == {0, 1}
    assert all(p['parent'] == best['id'] for p in children if p['meta']['stage'] == 1)
    assert len([p for p in children if p['meta']['stage'] == 0]) <= 9   # 3 episodes x 3 networks (cache may skip)
    # an int budget still means the same number of episodes per stage
    s2 = EASRandomStrategy(eas_space(), seed=0, networks_per_episode=2, wider_steps=1, deeper_steps=0,
                           episodes_per_stage=2, stages=2, stage_epochs=3)
    drive(s2, 200, metrics=eas_metrics)
    assert [e['stage'] for e in s2.episode_log()] == [0, 0, 1, 1]
    with pytest.raises(ConfigError, match=r'^strategy_args\.stages: 3 contradicts'):
        EASRandomStrategy(eas_space(), episodes_per_stage=[3, 1], stages=3)
    with pytest.raises(ConfigError, match=r'^strategy_args\.episodes_per_stage\[1\]'):
        EASRandomStrategy(eas_space(), episodes_per_stage=[3, 0])
    with pytest.raises(ConfigError, match=r'^strategy_args\.stage_epochs: has no effect with one stage'):
        EASRandomStrategy(eas_space(), episodes_per_stage=30, stage_epochs=300)


@pytest.mark.timeout(60)
def test_cache_never_trains_a_child_twice():
    s = EASRandomStrategy(eas_space(), seed=1, networks_per_episode=6, wider_steps=0, deeper_steps=1,
                          episodes_per_stage=5)
    props = drive(s, 200, metrics=eas_metrics)
    keys = [tuple(p['architecture']['layers']) for p in props]
    assert len(keys) == len(set(keys))
    assert s.done and len(s.episode_log()) == 5


@pytest.mark.timeout(60)
def test_rejects_non_eas_space_and_bad_args():
    with pytest.raises(ConfigError, match='^space:'):
        EASRandomStrategy(SpaceInfo('simple_cnn', {}, {'a': [1]}))
    with pytest.raises(ConfigError, match=r'^strategy_args\.networks_per_episode'):
        EASRandomStrategy(eas_space(), networks_per_episode=0)


@pytest.mark.timeout(120)
def test_baseline_rule_reaches_the_controller():
    from nni_xfer.strategies.eas import EASStrategy
    assert EASStrategy(eas_space(), seed=0).policy.controller.baseline_rule == 'code'
    s = EASStrategy(eas_space(), seed=0, baseline='paper', baseline_decay=0.9, networks_per_episode=2, wider_steps=1,
                    deeper_steps=0, episodes_per_stage=1)
    assert (s.policy.controller.baseline_rule, s.policy.controller.baseline_decay) == ('paper', 0.9)
    drive(s, 10, metrics=eas_metrics)
    log = s.episode_log()
    assert log[0]['mean_reward'] > 0
    assert log[0]['baseline'] == pytest.approx(0.1 * log[0]['mean_reward'])   # b = 0.9·0 + 0.1·r̄
    with pytest.raises(ConfigError, match=r'^strategy_args\.baseline: .*allowed: code, paper'):
        EASStrategy(eas_space(), baseline='ema')
    with pytest.raises(ConfigError, match=r'^strategy_args\.baseline_decay'):
        EASStrategy(eas_space(), baseline_decay=1.5)


class TestEASContract(TestEASRandomContract):
    @pytest.fixture
    def make(self):
        from nni_xfer.strategies.eas import EASStrategy
        return lambda space, seed: EASStrategy(space, seed=seed, networks_per_episode=4, wider_steps=2,
                                               deeper_steps=2, episodes_per_stage=50)


@pytest.mark.timeout(120)
def test_rl_controller_is_updated_each_episode():
    from nni_xfer.strategies.eas import EASStrategy
    s = EASStrategy(eas_space(), seed=0, networks_per_episode=3, wider_steps=1, deeper_steps=1, episodes_per_stage=3)
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


# ------------------------------------------------------------------ DenseNet space (docs/fidelity.md, EAS)

DN_GROWTHS = [4, 6, 8]
DN_START = {'growths': [[4, 4], [4, 4], [4]], 'stem': 8, 'transitions': [8, 10]}


def dn_space() -> SpaceInfo:
    return SpaceInfo('eas_densenet', {}, {}, extra={'kind': 'eas_densenet', 'start': DN_START,
                                                    'growth_rates': DN_GROWTHS})


def dn_metrics(strategy, architecture):
    """Closed-form stand-in for training a DenseNet: more capacity scores higher, below 1."""
    cap = sum(map(sum, architecture['growths'])) + architecture['stem'] + sum(architecture['transitions'])
    acc = 1 - math.exp(-cap / 150)
    return {'default': acc, 'val_acc': acc, 'checkpoint': f'/ckpt/{cap}.pt', 'sha256': '0' * 64}


class TestEASRandomDenseNetContract(StrategyContract):
    budget = 14

    def metrics(self, strategy, architecture):
        return dn_metrics(strategy, architecture)

    @pytest.fixture
    def space(self):
        return dn_space()

    @pytest.fixture
    def make(self):
        return lambda space, seed: EASRandomStrategy(space, seed=seed, networks_per_episode=4, wider_steps=3,
                                                     deeper_steps=2, episodes_per_stage=50)


class TestEASDenseNetContract(TestEASRandomDenseNetContract):
    @pytest.fixture
    def make(self):
        from nni_xfer.strategies.eas import EASStrategy
        return lambda space, seed: EASStrategy(space, seed=seed, networks_per_episode=4, wider_steps=3,
                                               deeper_steps=2, episodes_per_stage=50)


@pytest.mark.timeout(60)
def test_default_steps_per_space_and_kind_check():
    from nni_xfer.strategies.eas import EASStrategy
    for cls in (EASRandomStrategy, EASStrategy):
        d, p = cls(dn_space()), cls(eas_space())
        assert (d.wider_steps, d.deeper_steps) == (10, 5) and (p.wider_steps, p.deeper_steps) == (4, 5)
        d = cls(dn_space(), wider_steps=0, deeper_steps=1)
        assert (d.wider_steps, d.deeper_steps) == (0, 1)
    with pytest.raises(ConfigError, match=r'^strategy_args\.wider_steps'):
        EASRandomStrategy(dn_space(), wider_steps=-1)
    bad = dn_space()
    bad.extra['start'] = {'growths': [[5]], 'stem': 8, 'transitions': []}
    with pytest.raises(ConfigError, match=r'^space_args\.start'):
        EASRandomStrategy(bad)
    with pytest.raises(ConfigError, match='^space:'):
        EASRandomStrategy(SpaceInfo('x', {}, {}, extra={'kind': 'eas_resnet'}))


@pytest.mark.timeout(60)
def test_densenet_finish_ops_hand_cases():
    # stem -> int(2 * mean growth) = 12; transition 0 input 12 + 12 -> 12
    assert densenet_finish_ops({'growths': [[4, 8], [6, 6]], 'stem': 8, 'transitions': [8]}) == [
        {'op': 'widen_stem', 'channels': 12}, {'op': 'widen_transition', 'index': 0, 'channels': 12}]
    # each transition sees the already-widened width before it: 8 (+4) -> 6, 6 (+4) -> 5
    assert densenet_finish_ops({'growths': [[4], [4], [4]], 'stem': 4, 'transitions': [4, 4]}) == [
        {'op': 'widen_stem', 'channels': 8}, {'op': 'widen_transition', 'index': 0, 'channels': 6},
        {'op': 'widen_transition', 'index': 1, 'channels': 5}]
    # only if larger; int() truncates: 2 * mean(5, 6) = 11, (20 + 4) // 2 = 12 < 16, (16 + 4) // 2 = 10 > 4
    assert densenet_finish_ops({'growths': [[5, 6], [4], [4]], 'stem': 20, 'transitions': [16, 4]}) == [
        {'op': 'widen_transition', 'index': 1, 'channels': 10}]
    assert densenet_finish_ops({'growths': [[4, 6]], 'stem': 9, 'transitions': []}) == [
        {'op': 'widen_stem', 'channels': 10}]


def _check_densenet_proposals(props, growth_rates, in_channels=1):
    """Every proposal is a valid architecture, and every child is its parent transformed by its
    init ops (same architecture, same function with noise off)."""
    from nni_xfer.search_spaces.eas_densenet import DenseNetBC, check_architecture, transform_densenet

    def build(a):
        return DenseNetBC(a['growths'], in_channels=in_channels, num_classes=10, stem_channels=a['stem'],
                          transition_channels=a['transitions']).eval()
    archs = {p['id']: p['architecture'] for p in props}
    x = torch.randn(4, in_channels, 8, 8)
    torch.manual_seed(0)
    children = 0
    for p in props:
        arch = p['architecture']
        check_architecture(arch, growth_rates)
        if p['init']['kind'] != 'net2net':
            continue
        children += 1
        ops = p['init']['ops']
        assert p['parent'] in archs
        parent = build(archs[p['parent']])
        child = transform_densenet(parent, ops, noise=False).eval()
        assert child.architecture() == arch
        build(arch).load_state_dict(child.state_dict())       # the space's network of the proposal
        with torch.no_grad():
            ref = parent(x)
            assert (child(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
        # the episode-end widening is applied last and leaves nothing more to widen
        end = densenet_finish_ops(arch)
        assert end == []
        assert [o['op'] for o in ops if o['op'] in ('widen_stem', 'widen_transition')] == \
            [o['op'] for o in ops[len(ops) - sum(o['op'].startswith('widen_') for o in ops):]]
    return children


@pytest.mark.timeout(60)
@pytest.mark.parametrize('name', ['eas', 'eas_random'])
def test_every_densenet_proposal_is_a_valid_child_of_its_parent(name):
    from types import SimpleNamespace

    from nni_xfer.config import make_strategy
    from nni_xfer.space import build_space, freeze, space_info
    args = {'growth_rates': DN_GROWTHS, 'start': DN_START}
    sp = build_space('eas_densenet', args, SimpleNamespace(in_channels=1, num_classes=10, image_size=8))
    info = space_info('eas_densenet', args, sp)
    assert info.extra['kind'] == 'eas_densenet'
    s = make_strategy(name, info, {'episodes_per_stage': 2, 'networks_per_episode': 3, 'stages': 2,
                                   'stage_epochs': 2}, seed=5)
    assert (s.wider_steps, s.deeper_steps) == (10, 5)
    props = drive(s, 100, metrics=dn_metrics)
    assert s.done
    roles = [p['meta']['role'] for p in props]
    assert roles[0] == 'start' and roles.count('stage_best') == 1
    for p in props:
        freeze(sp, p['architecture'])
    assert _check_densenet_proposals(props, DN_GROWTHS) >= 4
    # every DenseNet child: 5 deeper steps = 5 more layers than its parent
    archs = {p['id']: p['architecture'] for p in props}
    n_layers = lambda a: sum(map(len, a['growths']))  # noqa: E731
    for p in props:
        if p['meta']['role'] == 'child':
            assert sum(o['op'] == 'deeper' for o in p['init']['ops']) == 5
            assert n_layers(p['architecture']) == n_layers(archs[p['parent']]) + 5


@pytest.mark.timeout(60)
def test_densenet_multi_stage_cache_and_controller_updates():
    from nni_xfer.strategies.eas import EASStrategy
    s = EASStrategy(dn_space(), seed=0, networks_per_episode=3, wider_steps=2, deeper_steps=1, episodes_per_stage=2,
                    stages=2, stage_epochs=7)
    props = drive(s, 100, metrics=dn_metrics)
    roles = [p['meta']['role'] for p in props]
    assert roles[0] == 'start' and s.done
    i = roles.index('stage_best')
    best = props[i]
    assert best['init']['kind'] == 'checkpoint' and best['meta']['evaluator_args'] == {'epochs': 7}
    assert all(p['parent'] == props[0]['id'] for p in props[1:i])
    assert all(p['parent'] == best['id'] for p in props[i + 1:])   # the next stage starts from the best
    keys = [str(p['architecture']) for p in props if p['meta']['role'] != 'stage_best']  # (a deliberate retrain)
    assert len(keys) == len(set(keys))                             # no child trained twice
    log = s.episode_log()
    assert len(log) == 4 and all('loss' in e and 'baseline' in e for e in log)
    assert log[0]['baseline'] != log[-1]['baseline']
    _check_densenet_proposals(props, DN_GROWTHS)
