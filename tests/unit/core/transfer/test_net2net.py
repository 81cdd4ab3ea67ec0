"""Function preservation of the Net2Net transforms (plain CNNs, FC layers, DenseNet-BC).

Tolerance: ``rel_err(a, b) = max|a - b| / max|a|`` over the whole output batch. Exactness tests
run in float64 and in float32, both asserted at ``<= 1e-5``; the digits tests train and run in
float32.
"""
from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn as nn

from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces.eas_densenet import DenseNetBC
from nni_xfer.transfer.densenet import densenet_deeper, densenet_widen_stem, densenet_widen_transition, densenet_wider
from nni_xfer.transfer.net2net import (
    WiderResult,
    calibrate_identity_bn,
    calibrate_inserted,
    collect_activations,
    deepen_sequential,
    insert_mapping,
    net2deeper_conv,
    net2deeper_linear,
    net2wider_conv,
    net2wider_linear,
    widen_sequential,
    wider_mapping,
)

TOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def randomize_bns(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics so a wrong gather/scale would show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)


# --------------------------------------------------------------------------- random plain CNNs

def random_plain_cnn(rng: random.Random, size: int = 12) -> nn.Sequential:
    mods: list[nn.Module] = []
    c, s = 3, size
    for _ in range(rng.randint(1, 3)):
        for _ in range(rng.randint(1, 2)):
            w, k = rng.choice([2, 3, 5, 8]), rng.choice([1, 3, 5])
            mods += [nn.Conv2d(c, w, k, padding=k // 2, bias=rng.random() < 0.5), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        if s >= 4:
            mods.append(rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)]))
            s //= 2
    if rng.random() < 0.5:
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        feat = c
    else:
        mods.append(nn.Flatten())  # the first FC reads C×H×W
        feat = c * s * s
    for _ in range(rng.randint(1, 2)):
        u = rng.choice([3, 6, 10])
        mods += [nn.Linear(feat, u), nn.BatchNorm1d(u), nn.ReLU()]
        feat = u
    mods.append(nn.Linear(feat, 4))
    return nn.Sequential(*mods)


def _flatten_pos(seq: nn.Sequential) -> int:
    return next(i for i, m in enumerate(seq) if isinstance(m, nn.Flatten))


def random_step(seq: nn.Sequential, kind: str, rng: random.Random, gen: torch.Generator, *,
                wider_noise: float = 0.0, deeper_noise: float = 0.0) -> nn.Sequential:
    """One transform: 'wc'/'wf' widen a conv / hidden FC, 'dc'/'df' deepen in the conv / FC part."""
    flat = _flatten_pos(seq)
    last = len(seq) - 1  # the classifier is never widened
    if kind == 'wc':
        idx = rng.choice([i for i, m in enumerate(seq) if isinstance(m, nn.Conv2d)])
    elif kind == 'wf':
        idx = rng.choice([i for i, m in enumerate(seq) if isinstance(m, nn.Linear) and i != last])
    elif kind == 'dc':
        # after a ReLU or a pool of ReLU output: non-negative, still spatial
        after = rng.choice([i for i, m in enumerate(seq[:flat]) if isinstance(m, (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d))])
        return deepen_sequential(seq, after, kernel_size=rng.choice([1, 3, 5]), noise=deeper_noise, generator=gen)
    else:
        after = rng.choice([i for i in range(flat, len(seq)) if isinstance(seq[i], nn.ReLU)])
        return deepen_sequential(seq, after, noise=deeper_noise, generator=gen)
    old = seq[idx].weight.shape[0]
    return widen_sequential(seq, idx, old + rng.randint(1, old), noise=wider_noise, generator=gen)


def random_program(rng: random.Random, n: int = 10) -> list[str]:
    kinds = ['wc', 'wf', 'dc', 'df'] + [rng.choice(['wc', 'wf', 'dc', 'df']) for _ in range(n - 4)]
    rng.shuffle(kinds)
    return kinds


@pytest.mark.timeout(60)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('seed', range(6))
def test_plain_cnn_random_sequences_preserve_function(seed, dtype):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = random_plain_cnn(rng)
    randomize_bns(net, gen)
    net = net.to(dtype).eval()
    x = torch.randn(16, 3, 12, 12, generator=gen, dtype=dtype)
    with torch.no_grad():
        ref = net(x)
    new = net
    program = random_program(rng, 10)
    for kind in program:
        new = random_step(new, kind, rng, gen).eval()
    assert len(new) == len(net) + 3 * sum(k in ('dc', 'df') for k in program)
    assert sum(p.numel() for p in new.parameters()) > sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        assert rel_err(ref, new(x)) <= TOL
        # calibrating every inserted BN from data keeps the eval-mode function too
        xs = torch.rand(64, 3, 12, 12, generator=gen, dtype=dtype)
        assert len(calibrate_inserted(new, xs)) == sum(k in ('dc', 'df') for k in program)
        assert rel_err(ref, new(x)) <= TOL
        assert rel_err(ref, net(x)) == 0.0  # the original network is untouched


# --------------------------------------------------------------------------- unit checks

@pytest.mark.timeout(60)
def test_wider_mapping_keeps_old_units_and_is_seeded():
    m = wider_mapping(5, 12, torch.Generator().manual_seed(3))
    assert m[:5].tolist() == list(range(5)) and len(m) == 12
    assert 0 <= int(m.min()) and int(m.max()) < 5
    assert torch.equal(m, wider_mapping(5, 12, torch.Generator().manual_seed(3)))
    with pytest.raises(ConfigError, match='new_width'):
        wider_mapping(5, 4)
    assert insert_mapping(6, 4, torch.tensor([0, 0])).tolist() == [0, 1, 2, 3, 0, 0, 4, 5]


@pytest.mark.timeout(60)
def test_wider_conv_noise_only_on_new_copies_and_replica_scaling():
    torch.manual_seed(0)
    conv, bn, nxt = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 3)
    res = net2wider_conv(conv, bn, nxt, 9, noise=1e-2, generator=torch.Generator().manual_seed(0))
    assert isinstance(res, WiderResult) and res.next_bn is None
    new_conv, new_bn, new_next, mapping = res
    assert torch.equal(new_conv.weight[:4], conv.weight) and torch.equal(new_conv.bias[:4], conv.bias)
    diff = new_conv.weight[4:] - conv.weight[mapping[4:]]
    assert diff.abs().max() > 0
    assert diff.std() < 5e-2 * conv.weight.std()  # ~1e-2 relative
    assert torch.equal(new_bn.running_var, bn.running_var[mapping])
    summed = torch.zeros_like(nxt.weight).index_add_(1, mapping, new_next.weight.detach())
    assert torch.allclose(summed, nxt.weight, atol=1e-7)
    with pytest.raises(ConfigError, match='next_layer'):
        net2wider_conv(conv, bn, nn.Linear(7, 2), 6)


@pytest.mark.timeout(60)
def test_wider_conv_into_flattened_linear_and_next_bn():
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    conv, bn, fc = nn.Conv2d(2, 3, 3, padding=1).double(), nn.BatchNorm2d(3).double(), nn.Linear(3 * 4 * 4, 5).double()
    randomize_bns(bn, gen)
    net = nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), fc).eval()
    x = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    c2, b2, f2, m = net2wider_conv(conv, bn, fc, 7, generator=gen)
    assert f2.in_features == 7 * 16
    assert rel_err(net(x), nn.Sequential(c2, b2, nn.ReLU(), nn.Flatten(), f2).eval()(x)) <= 1e-12
    # pre-activation consumer: conv -> (BN -> ReLU -> conv), the BN belongs to the consumer
    pre_bn, nxt = nn.BatchNorm2d(3).double(), nn.Conv2d(3, 2, 1).double()
    randomize_bns(pre_bn, gen)
    net = nn.Sequential(conv, pre_bn, nn.ReLU(), nxt).eval()
    res = net2wider_conv(conv, None, nxt, 6, next_bn=pre_bn, generator=gen)
    assert res.bn is None and res.next_bn.num_features == 6
    new = nn.Sequential(res.layer, res.next_bn, nn.ReLU(), res.next_layer).eval()
    assert rel_err(net(x), new(x)) <= 1e-12


@pytest.mark.timeout(60)
def test_wider_linear_and_deeper_blocks_are_identities():
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(2)
    fc, bn, nxt = nn.Linear(6, 4).double(), nn.BatchNorm1d(4).double(), nn.Linear(4, 3).double()
    randomize_bns(bn, gen)
    net = nn.Sequential(fc, bn, nn.ReLU(), nxt).eval()
    x = torch.randn(10, 6, dtype=torch.float64)
    f2, b2, n2, _ = net2wider_linear(fc, bn, nxt, 10, generator=gen)
    assert rel_err(net(x), nn.Sequential(f2, b2, nn.ReLU(), n2).eval()(x)) <= 1e-12
    with pytest.raises(ConfigError, match='fc'):
        net2wider_linear(nn.Conv2d(1, 1, 1), None, nxt, 5)

    img = torch.rand(3, 5, 6, 6, dtype=torch.float64)
    for k in (1, 3, 5):
        block = net2deeper_conv(5, k, dtype=torch.float64).eval()
        assert block[0].padding == (k // 2, k // 2) and block[0].stride == (1, 1)
        assert torch.equal(block[0](img), img)
        assert rel_err(img, block(img)) <= 1e-12
        assert block[1].needs_calibration
    noisy = net2deeper_conv(5, 3, noise=1e-3, generator=gen, dtype=torch.float64)
    delta = noisy[0].weight - net2deeper_conv(5, 3, dtype=torch.float64)[0].weight
    assert (delta != 0).float().mean() > 0.9  # noise over the whole kernel
    vec = torch.rand(7, 4, dtype=torch.float64)
    block = net2deeper_linear(4, dtype=torch.float64).eval()
    assert torch.equal(block[0].bias, torch.zeros(4, dtype=torch.float64))
    assert rel_err(vec, block(vec)) <= 1e-12
    with pytest.raises(ConfigError, match='kernel_size'):
        net2deeper_conv(4, 2)


# --------------------------------------------------------------------------- digits (trained)

@pytest.fixture(scope='module')
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1297], y[:1297], x[1297:], y[1297:]


@pytest.fixture(scope='module')
def trained(digits):
    """A small conv-BN-ReLU CNN trained 4 epochs with plain SGD (seeded; ~1 s on 2 cores)."""
    xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(12, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(4):
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
    return net.eval()


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net.eval()(x).argmax(1) == y).float().mean().item()


@pytest.mark.timeout(60)
def test_noisy_transforms_move_digits_accuracy_by_at_most_one_point(trained, digits):
    xtr, _, xte, yte = digits
    base = accuracy(trained, xte, yte)
    assert base > 0.85  # training made the accuracy meaningful
    gen = torch.Generator().manual_seed(0)
    net = trained
    net = widen_sequential(net, 0, 12, noise=1e-2, generator=gen)
    net = widen_sequential(net, 3, 20, noise=1e-2, generator=gen)
    net = widen_sequential(net, 7, 24, noise=1e-2, generator=gen)
    net = widen_sequential(net, 12, 48, noise=1e-2, generator=gen)
    net = deepen_sequential(net, 5, kernel_size=3, noise=1e-3, generator=gen)   # after conv ReLU
    net = deepen_sequential(net, 13, kernel_size=5, noise=1e-3, generator=gen)  # after a max pool
    net = deepen_sequential(net, 20, noise=1e-3, generator=gen)                 # after the FC ReLU
    assert isinstance(net[21], nn.Linear) and isinstance(net[6], nn.Conv2d) and isinstance(net[14], nn.Conv2d)
    assert len(calibrate_inserted(net, xtr[:64])) == 3
    with torch.no_grad():
        logits_err = rel_err(trained(xte), net.eval()(xte))
    assert 0 < logits_err < 0.05  # the noise is there, and small
    assert abs(accuracy(net, xte, yte) - base) <= 0.01


@pytest.mark.timeout(60)
def test_identity_bn_calibration_on_digits_activations(trained, digits):
    xtr, _, xte, _ = digits
    batch = xtr[:64]
    for after, kind in ((5, 'conv'), (14, 'fc')):
        net = deepen_sequential(trained, after, kernel_size=3).eval()
        block = net[after + 1:after + 4]
        acts = collect_activations(net, net[after], batch)  # the preceding ReLU's output
        assert acts.min() >= 0
        bn = calibrate_identity_bn(block[1], acts)
        dims = [0, 2, 3] if kind == 'conv' else [0]
        assert torch.allclose(bn.running_mean, acts.mean(dims), atol=1e-6)
        assert torch.allclose(bn.running_var, acts.var(dims, unbiased=False), atol=1e-6)
        assert torch.allclose(bn.bias, bn.running_mean) and torch.allclose(bn.weight, (bn.running_var + bn.eps).sqrt())
        with torch.no_grad():
            assert rel_err(trained(xte), net(xte)) <= TOL
            # training-mode BN on the calibration batch normalises and undoes it exactly
            assert rel_err(acts, copy.deepcopy(block).train()(acts)) <= TOL
        # the input-hooking helper gives the same statistics when the identity has no noise
        net2 = deepen_sequential(trained, after, kernel_size=3)
        calibrate_inserted(net2, batch)
        assert torch.allclose(net2[after + 2].running_var, bn.running_var, atol=1e-6)
        assert not net2[after + 2].needs_calibration


# --------------------------------------------------------------------------- DenseNet-BC

def random_densenet(rng: random.Random, gen: torch.Generator) -> DenseNetBC:
    growths = [[rng.choice([2, 3, 4]) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(2, 3))]
    net = DenseNetBC(growths, in_channels=3, num_classes=5)
    randomize_bns(net, gen)
    return net


def random_dense_step(net: DenseNetBC, rng: random.Random, gen: torch.Generator, kind: str) -> DenseNetBC:
    b = rng.randrange(len(net.blocks))
    i = rng.randrange(len(net.blocks[b].layers))
    if kind == 'wider':
        k = net.blocks[b].layers[i].growth
        return densenet_wider(net, b, i, k + rng.randint(1, k), generator=gen)
    if kind == 'deeper':
        return densenet_deeper(net, b, i, growth=rng.choice([None, 2, 5]), generator=gen)
    if kind == 'stem':
        return densenet_widen_stem(net, net.stem.out_channels + rng.randint(1, 4), generator=gen)
    t = rng.randrange(len(net.transitions))
    return densenet_widen_transition(net, t, net.transitions[t].conv.out_channels + rng.randint(1, 4), generator=gen)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('seed', range(4))
def test_densenet_random_sequences_preserve_function(seed, dtype):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = random_densenet(rng, gen).to(dtype).eval()
    x = torch.randn(4, 3, 8, 8, generator=gen, dtype=dtype)
    with torch.no_grad():
        ref = net(x)
    kinds = ['wider', 'deeper', 'stem', 'transition'] + [rng.choice(['wider', 'deeper']) for _ in range(6)]
    rng.shuffle(kinds)
    new = net
    for kind in kinds:
        new = random_dense_step(new, rng, gen, kind).eval()
    n_layers = sum(len(g) for g in new.growths())
    assert n_layers == sum(len(g) for g in net.growths()) + kinds.count('deeper')
    with torch.no_grad():
        assert rel_err(ref, new(x)) <= TOL
        assert rel_err(ref, net(x)) == 0.0


@pytest.mark.timeout(60)
def test_densenet_deeper_growth_wider_than_layer_input():
    """Regression: a layer whose growth k exceeds its input width (stem 2, growth 6)."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    net = DenseNetBC([[6, 6], [6]], in_channels=3, num_classes=4, stem_channels=2,
                     transition_channels=[3])
    randomize_bns(net, gen)
    net = net.double().eval()
    x = torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    new = densenet_deeper(net, 0, 0, generator=gen)
    new = densenet_deeper(new, 1, 0, growth=9, generator=gen).eval()
    dup = new.blocks[0].layers[1]
    assert dup.conv1.weight.shape[1] == 2 + 6 and dup.norm1.num_features == 8
    assert torch.count_nonzero(dup.conv1.weight[:, 2:]) == 0
    with torch.no_grad():
        assert rel_err(net(x), new(x)) <= TOL


@pytest.mark.timeout(60)
def test_densenet_wider_grows_bottleneck_and_noise_stays_small():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = DenseNetBC([[4, 4, 4], [4, 4]], in_channels=3, num_classes=5)
    randomize_bns(net, gen)
    net = net.double().eval()
    new = densenet_wider(net, 0, 1, 6, generator=gen)
    layer = new.blocks[0].layers[1]
    assert layer.conv1.out_channels == 24 and layer.norm2.num_features == 24 and layer.growth == 6
    assert new.blocks[0].layers[2].norm1.num_features == net.blocks[0].layers[2].norm1.num_features + 2
    assert new.transitions[0].norm.num_features == net.transitions[0].norm.num_features + 2
    x = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64)
    noisy = densenet_deeper(densenet_wider(net, 1, 0, 8, noise=1e-2, generator=gen), 1, 1, noise=1e-2, generator=gen)
    with torch.no_grad():
        err = rel_err(net(x), noisy.eval()(x))
    assert 0 < err < 0.05
    with pytest.raises(ConfigError, match='layer'):
        densenet_wider(net, 0, 3, 6)


@pytest.mark.timeout(60)
def test_docstring_examples_run():
    import doctest

    import nni_xfer.search_spaces.eas_densenet  # the DenseNet transforms at work on the space's network
    import nni_xfer.transfer
    import nni_xfer.transfer.net2net

    for module in (nni_xfer.transfer, nni_xfer.transfer.net2net, nni_xfer.search_spaces.eas_densenet):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
