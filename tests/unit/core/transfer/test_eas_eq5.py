"""EAS Eq. 5 DenseNet Net2Deeper (``dense_deeper: eq5``): function preservation, the construction, plumbing.

Tolerance as tests/unit/core/transfer/test_net2net.py: ``rel_err = max|a - b| / max|a|`` over the output batch,
``<= 1e-5`` in float32 and float64.
"""
from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces.eas_densenet import DenseNetBC, transform_densenet, transform_densenet_arch
from nni_xfer.space import build_space, freeze
from nni_xfer.strategies.eas import EASRandomStrategy
from nni_xfer.strategy import SpaceInfo
from nni_xfer.transfer.densenet import (_consumer_norms, densenet_deeper, densenet_deeper_eq5, densenet_widen_stem,
                                        densenet_widen_transition, densenet_wider, eq5_cuts)
from nni_xfer.transfer.net2net import calibrate_inserted, recalibrate_bn
from nni_xfer.runtime.trial import Reporter, run_trial

pytestmark = pytest.mark.timeout(120)
TOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def random_bns(net: nn.Module, gen: torch.Generator, negative: float = 0.0) -> None:
    """Non-trivial BN statistics; a fraction ``negative`` of the gammas negative (mixed-sign consumers)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                flip = torch.where(torch.rand(n, generator=gen) < negative, -1.0, 1.0)
                m.weight.copy_((torch.rand(n, generator=gen) + 0.5) * flip)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)


def random_densenet(rng: random.Random, gen: torch.Generator, negative: float) -> DenseNetBC:
    growths = [[rng.choice([2, 3, 4]) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(2, 3))]
    net = DenseNetBC(growths, in_channels=3, num_classes=5)
    random_bns(net, gen, negative)
    return net


def random_step(net: DenseNetBC, rng: random.Random, gen: torch.Generator, kind: str) -> DenseNetBC:
    b = rng.randrange(len(net.blocks))
    i = rng.randrange(len(net.blocks[b].layers))
    if kind == 'eq5':
        return densenet_deeper_eq5(net, b, i, growth=rng.choice([None, 2, 5]), generator=gen)
    if kind == 'deeper':
        return densenet_deeper(net, b, i, growth=rng.choice([None, 2, 5]), generator=gen)
    if kind == 'wider':
        k = net.blocks[b].layers[i].growth
        return densenet_wider(net, b, i, k + rng.randint(1, k), generator=gen)
    if kind == 'stem':
        return densenet_widen_stem(net, net.stem.out_channels + rng.randint(1, 4), generator=gen)
    t = rng.randrange(len(net.transitions))
    return densenet_widen_transition(net, t, net.transitions[t].conv.out_channels + rng.randint(1, 4), generator=gen)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('seed', range(6))
def test_eq5_random_sequences_preserve_function(seed, dtype):
    """Random DenseNets (half of the seeds with ~15% negative BN gammas, so some channels have
    consumers of both signs), sequences of Eq. 5 insertions mixed with every other transform."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = random_densenet(rng, gen, negative=0.15 if seed % 2 else 0.0).to(dtype).eval()
    x = torch.randn(8, 3, 8, 8, generator=gen, dtype=dtype)
    with torch.no_grad():
        ref = net(x)
    kinds = ['eq5'] * 4 + [rng.choice(['eq5', 'deeper', 'wider', 'stem', 'transition']) for _ in range(6)]
    rng.shuffle(kinds)
    new = net
    for kind in kinds:
        new = random_step(new, rng, gen, kind).eval()
    assert sum(map(len, new.growths())) == sum(map(len, net.growths())) + kinds.count('eq5') + kinds.count('deeper')
    with torch.no_grad():
        assert rel_err(ref, new(x)) <= TOL


def _one_insertion(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DenseNetBC([[3, 3, 3], [3]], in_channels=3, num_classes=4)
    random_bns(net, gen)
    net = net.double().eval()
    new = densenet_deeper_eq5(net, 0, 0, growth=6, generator=gen).eval()
    return net, new, gen


def test_eq5_layer_replicates_input_channels_clipped_at_the_consumers_threshold():
    """The new layer outputs max(x_n, c) for its chosen channels n (Eq. 5's identity filters, clipped
    where no consumer's ReLU is active); clipping really happens on random inputs, and without the
    cut (a bare identity filter after the pre-activation ReLU) the function is not preserved."""
    net, new, gen = _one_insertion()
    x = torch.randn(16, 3, 8, 8, generator=gen, dtype=torch.float64)
    feats = {}
    layer = new.blocks[0].layers[1]
    layer.register_forward_hook(lambda m, inp, out: feats.update(inp=inp[0], out=out))
    with torch.no_grad():
        assert rel_err(net(x), new(x)) <= 1e-12
    c_in = layer.norm1.num_features
    eligible, sign, cut = eq5_cuts(_consumer_norms(net, 0, 1), c_in)
    assert eligible.all() and (sign > 0).all()
    w = layer.conv2.weight
    assert torch.count_nonzero(w[:, :, [0, 0, 2, 2], [0, 2, 0, 2]]) == 0  # only centre taps (Eq. 5)
    clipped = 0
    for j in range(6):
        carriers = layer.conv1.weight[:, :, 0, 0].abs().sum(1) > 0  # bottleneck channels carrying an input
        row = int(torch.nonzero((w[j, :, 1, 1] != 0) & carriers).flatten()[0])
        n = int(torch.nonzero(layer.conv1.weight[row, :, 0, 0]).flatten()[0])  # the input channel it replicates
        expect = torch.clamp(feats['inp'][:, n], min=float(cut[n]))
        assert torch.allclose(feats['out'][:, j], expect, atol=1e-12)
        clipped += int((feats['inp'][:, n] < cut[n]).sum())
    assert clipped > 0
    bare = copy.deepcopy(new)
    with torch.no_grad():  # drop the cut: r = ReLU(x) instead of max(x, c)
        bl = bare.blocks[0].layers[1]
        used = bl.norm1.weight != 0
        bl.norm1.weight[used] = torch.sqrt(bl.norm1.running_var[used] + bl.norm1.eps)
        bl.norm1.bias[used] = bl.norm1.running_mean[used]
        bl.conv2.weight[:, :, 1, 1] = (bl.conv2.weight[:, :, 1, 1] == 1).double()
        assert rel_err(net(x), bare.eval()(x)) > 1e-3


def test_channels_with_mixed_sign_consumers_are_never_chosen():
    gen = torch.Generator().manual_seed(3)
    net = DenseNetBC([[3, 3], [3]], in_channels=3, num_classes=4)
    random_bns(net, gen)
    net = net.double().eval()
    c_in = net.blocks[0].layers[0].norm1.num_features + 3
    with torch.no_grad():  # every channel but 2 gets a negative slope in the transition's BN
        flip = torch.ones(net.transitions[0].norm.num_features, dtype=torch.float64)
        flip[:c_in] = -1.0
        flip[2] = 1.0
        net.transitions[0].norm.weight.mul_(flip)
    eligible, _, _ = eq5_cuts(_consumer_norms(net, 0, 1), c_in)
    assert eligible.tolist() == [n == 2 for n in range(c_in)]
    new = densenet_deeper_eq5(net, 0, 0, growth=5, generator=gen).eval()
    layer = new.blocks[0].layers[1]
    assert torch.nonzero(layer.conv1.weight[:, :, 0, 0])[:, 1].unique().tolist() == [2]
    x = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(net(x), new(x)) <= 1e-12
    with torch.no_grad():
        net.transitions[0].norm.weight[2] *= -1.0
        net.blocks[0].layers[1].norm1.weight[2] = abs(float(net.blocks[0].layers[1].norm1.weight[2]))
    with pytest.raises(ConfigError, match='^deeper: .*no input channel can be replicated'):
        densenet_deeper_eq5(net, 0, 0, generator=gen)


def test_calibration_keeps_the_function_and_matches_the_batch():
    """The net2net initializer's calibration (affine-preserving for the Eq. 5 layer's BNs) keeps the
    eval-mode function, and afterwards the new BNs normalise the calibration batch exactly as in eval."""
    net, new, gen = _one_insertion(1)
    layer = new.blocks[0].layers[1]
    assert layer.norm1.needs_calibration == 'affine' and layer.norm2.needs_calibration == 'affine'
    x = torch.randn(32, 3, 8, 8, generator=gen, dtype=torch.float64)
    calibrated = copy.deepcopy(new)
    assert len(calibrate_inserted(calibrated, x)) == 2
    with torch.no_grad():
        assert rel_err(net(x), calibrated.eval()(x)) <= 1e-12
        seen = {}
        h = calibrated.blocks[0].layers[1].norm1.register_forward_hook(lambda m, i, o: seen.update(i=i[0], o=o))
        calibrated(x)
        h.remove()
        bn = copy.deepcopy(calibrated.blocks[0].layers[1].norm1).train()
        assert torch.allclose(bn(seen['i']), seen['o'], atol=1e-9)
    bn = nn.BatchNorm2d(3).double()
    random_bns(bn, gen, negative=0.5)
    bn.eval()
    z = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    before = bn(z)
    recalibrate_bn(bn, z * 3 + 1)
    assert torch.allclose(bn(z), before, atol=1e-12)


def test_scheme_in_ops_rebuilds_and_names_bad_values():
    digits = SimpleNamespace(in_channels=1, num_classes=10, image_size=8)
    start = {'growths': [[4, 4], [4]], 'stem': 8, 'transitions': [8]}
    sp = build_space('eas_densenet', {'growth_rates': [4, 6, 8], 'start': start}, digits)
    torch.manual_seed(0)
    net = freeze(sp, start).eval()
    random_bns(net, torch.Generator().manual_seed(0))
    ops = [{'op': 'deeper', 'block': 0, 'layer': 1, 'scheme': 'eq5'},
           {'op': 'wider', 'block': 0, 'layer': 2, 'growth': 6},
           {'op': 'deeper', 'block': 1, 'layer': 0, 'scheme': 'eq5'}, {'op': 'deeper', 'block': 0, 'layer': 2}]
    child = transform_densenet(net, ops, noise=False, generator=torch.Generator().manual_seed(1)).eval()
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert rel_err(net(x), child(x)) <= TOL
    assert transform_densenet_arch(start, ops) == child.architecture()
    freeze(sp, child.architecture()).load_state_dict(child.state_dict())
    noisy = transform_densenet(net, ops, noise=True, generator=torch.Generator().manual_seed(1)).eval()
    with torch.no_grad():
        assert 0 < rel_err(net(x), noisy(x)) < 0.05
    bad = [{'op': 'deeper', 'block': 0, 'layer': 0, 'scheme': 'eq4'}]
    with pytest.raises(ConfigError, match=r'^init\.ops\[0\]\.scheme'):
        transform_densenet_arch(start, bad)
    with pytest.raises(ConfigError, match=r'^init\.ops\[0\]\.scheme'):
        transform_densenet(net, bad)


def _dense_space() -> SpaceInfo:
    return SpaceInfo('eas_densenet', {}, {}, extra={
        'kind': 'eas_densenet', 'start': {'growths': [[4, 4], [4]], 'stem': 8, 'transitions': [8]},
        'growth_rates': [4, 6, 8]})


def test_strategy_option_reaches_the_ops_and_is_checked():
    s = EASRandomStrategy(_dense_space(), seed=0, networks_per_episode=3, wider_steps=1, deeper_steps=2,
                          dense_deeper='eq5')
    child = s._sample_child()
    deeper = [op for op in child['ops'] if op['op'] == 'deeper']
    assert len(deeper) == 2 and all(op['scheme'] == 'eq5' for op in deeper)
    default = EASRandomStrategy(_dense_space(), seed=0, networks_per_episode=3, wider_steps=1, deeper_steps=2)
    assert all('scheme' not in op for op in default._sample_child()['ops'])  # duplicate: ops as before
    with pytest.raises(ConfigError, match='^strategy_args.dense_deeper'):
        EASRandomStrategy(_dense_space(), dense_deeper='identity')
    plain = SpaceInfo('eas_plain_cnn', {}, {}, extra={
        'kind': 'eas_plain_cnn', 'start': {'layers': ['conv-16-3', 'pool', 'fc-64']}, 'conv_widths': [16, 32],
        'kernels': [3], 'fc_units': [64]})
    with pytest.raises(ConfigError, match="^strategy_args.dense_deeper: has no effect with space 'eas_plain_cnn'"):
        EASRandomStrategy(plain, dense_deeper='eq5')


class _Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_eq5_child_inherits_parent_accuracy_on_digits(tmp_path):
    """Real trials: the net2net initializer (noise on, BN calibration from 64 training images)."""
    start = {'growths': [[4], [4]], 'stem': 8, 'transitions': [8]}
    base = dict(space='eas_densenet', dataset='digits', evaluator='train', experiment_id='eas-eq5',
                space_args={'growth_rates': [4, 6, 8], 'start': start}, dataset_args={'val_size': 0.2},
                checkpoint_root=str(tmp_path))
    parent = run_trial(dict(base, architecture=start, proposal_id=0, evaluator_args={'epochs': 3, 'lr': 0.1}),
                       reporter=_Quiet())
    assert parent['val_acc'] > 0.3   # well above chance (0.1), so equal accuracies mean something
    ops = [{'op': 'deeper', 'block': 0, 'layer': 0, 'scheme': 'eq5'}, {'op': 'deeper', 'block': 1, 'layer': 0,
                                                                        'scheme': 'eq5'}]
    arch = transform_densenet_arch(start, ops)
    child = run_trial(dict(base, architecture=arch, proposal_id=1, parent=0, seed=1,
                           init={'kind': 'net2net', 'uri': parent['checkpoint'], 'sha256': parent['sha256'],
                                 'ops': ops},
                           evaluator_args={'epochs': 0}), reporter=_Quiet())
    assert abs(child['inherited_acc'] - parent['val_acc']) <= 0.01
