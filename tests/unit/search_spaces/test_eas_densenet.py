"""EAS DenseNet space and the net2net initializer on DenseNet-BC (function preservation, real trials)."""
import random
from types import SimpleNamespace

import pytest
import torch

from nni_xfer.search_spaces.eas_densenet import transform_densenet, transform_densenet_arch
from nni_xfer.errors import ConfigError
from nni_xfer.space import build_space, freeze, space_info
from nni_xfer.runtime.trial import Reporter, run_trial

pytestmark = pytest.mark.timeout(120)
DIGITS = SimpleNamespace(in_channels=1, num_classes=10, image_size=8)
GROWTHS = [4, 6, 8, 10, 12]
START = {'growths': [[4, 4], [4, 4], [4]], 'stem': 8, 'transitions': [8, 10]}


class Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


def test_paper_start_is_densenet_bc_l40_k40():
    sp = build_space('eas_densenet', {}, SimpleNamespace(in_channels=3, num_classes=10, image_size=32))
    start = space_info('eas_densenet', {}, sp).extra['start']
    assert start['growths'] == [[40] * 6] * 3 and start['stem'] == 80
    assert start['transitions'] == [160, 200]  # (80+240)/2, (160+240)/2
    net = freeze(sp, start)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize('arch,field', [
    ({'growths': [[4]], 'stem': 8}, 'architecture'),
    ({'growths': [[5, 4], [4]], 'stem': 8, 'transitions': [8]}, r'architecture.growths\[0\]\[0\]'),
    ({'growths': [[4], [4]], 'stem': 8, 'transitions': []}, 'architecture.transitions'),
])
def test_bad_architectures_name_the_field(arch, field):
    sp = build_space('eas_densenet', {'growth_rates': GROWTHS, 'start': START}, DIGITS)
    with pytest.raises(ConfigError, match='^' + field):
        freeze(sp, arch)


@pytest.mark.parametrize('seed', range(3))
def test_random_op_sequences_preserve_function_and_rebuild(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    sp = build_space('eas_densenet', {'growth_rates': GROWTHS, 'start': START}, DIGITS)
    net = freeze(sp, START).eval()
    ops = []
    cur = net
    for _ in range(9):
        g = cur.growths()
        b = rng.randrange(len(g))
        l = rng.randrange(len(g[b]))
        r = rng.random()
        if r < 0.4 and g[b][l] < max(GROWTHS):
            op = {'op': 'wider', 'block': b, 'layer': l, 'growth': min(x for x in GROWTHS if x > g[b][l])}
        elif r < 0.8:
            op = {'op': 'deeper', 'block': b, 'layer': l}
        elif r < 0.9:
            op = {'op': 'widen_stem', 'channels': cur.stem.out_channels + 2}
        else:
            op = {'op': 'widen_transition', 'index': rng.randrange(2), 'channels': 12}
            if cur.transitions[op['index']].conv.out_channels >= 12:
                continue
        ops.append(op)
        cur = transform_densenet(cur, [op], noise=False).eval()
    child = transform_densenet(net, ops, noise=False).eval()
    x = torch.randn(8, 1, 8, 8)
    ref = net(x)
    assert (child(x) - ref).abs().max() / ref.abs().max() <= 1e-5
    rebuilt = freeze(sp, child.architecture())
    rebuilt.load_state_dict(child.state_dict())  # the space rebuilds exactly this network
    assert transform_densenet_arch(START, ops) == child.architecture()  # the pure arch helper agrees


def test_transform_densenet_arch_hand_cases_and_errors():
    ops = [{'op': 'wider', 'block': 0, 'layer': 1, 'growth': 6}, {'op': 'deeper', 'block': 0, 'layer': 1},
           {'op': 'deeper', 'block': 2, 'layer': 0}, {'op': 'widen_stem', 'channels': 10},
           {'op': 'widen_transition', 'index': 1, 'channels': 12}]
    assert transform_densenet_arch(START, ops) == {'growths': [[4, 6, 6], [4, 4], [4, 4]], 'stem': 10,
                                                   'transitions': [8, 12]}
    assert START == {'growths': [[4, 4], [4, 4], [4]], 'stem': 8, 'transitions': [8, 10]}  # untouched
    for ops, field in [([{'op': 'shuffle'}], r'init\.ops\[0\]:'),
                       ([{'op': 'wider', 'block': 0, 'layer': 0}], r'init\.ops\[0\]\.growth'),
                       ([{'op': 'deeper', 'block': 3, 'layer': 0}], r'init\.ops\[0\]\.block'),
                       ([{'op': 'deeper', 'block': 0, 'layer': 0}, {'op': 'deeper', 'block': 2, 'layer': 1}],
                        r'init\.ops\[1\]\.layer'),
                       ([{'op': 'wider', 'block': 0, 'layer': 0, 'growth': 2}], r'init\.ops\[0\]\.growth'),
                       ([{'op': 'widen_stem', 'channels': 4}], r'init\.ops\[0\]\.channels'),
                       ([{'op': 'widen_transition', 'index': 2, 'channels': 20}], r'init\.ops\[0\]\.index')]:
        with pytest.raises(ConfigError, match='^' + field):
            transform_densenet_arch(START, ops)


def test_unknown_op_names_the_field():
    sp = build_space('eas_densenet', {'growth_rates': GROWTHS, 'start': START}, DIGITS)
    with pytest.raises(ConfigError, match=r'^init\.ops\[0\]'):
        transform_densenet(freeze(sp, START), [{'op': 'shuffle'}])
    with pytest.raises(ConfigError, match=r'^init\.ops\[0\]\.growth'):
        transform_densenet(freeze(sp, START), [{'op': 'wider', 'block': 0, 'layer': 0}])


@pytest.mark.slow
def test_densenet_child_inherits_parent_accuracy_on_digits(tmp_path):
    base = dict(space='eas_densenet', dataset='digits', evaluator='train', experiment_id='eas-dn',
                space_args={'growth_rates': GROWTHS, 'start': START}, dataset_args={'val_size': 0.2},
                checkpoint_root=str(tmp_path))
    parent = run_trial(dict(base, architecture=START, proposal_id=0, evaluator_args={'epochs': 5, 'lr': 0.05}),
                       reporter=Quiet())
    assert parent['val_acc'] > 0.5
    ops = [{'op': 'wider', 'block': 0, 'layer': 1, 'growth': 6}, {'op': 'deeper', 'block': 1, 'layer': 0},
           {'op': 'widen_stem', 'channels': 10}]
    sp = build_space('eas_densenet', base['space_args'], DIGITS)
    arch = transform_densenet(freeze(sp, START), ops, noise=False).architecture()
    child = run_trial(dict(base, architecture=arch, proposal_id=1, parent=0, seed=1,
                           init={'kind': 'net2net', 'uri': parent['checkpoint'], 'sha256': parent['sha256'],
                                 'ops': ops},
                           evaluator_args={'epochs': 0}), reporter=Quiet())
    assert abs(child['inherited_acc'] - parent['val_acc']) <= 0.01
