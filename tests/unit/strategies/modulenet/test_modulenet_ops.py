"""ModuleNet building blocks: ChP/ChDP against the paper's formulas, decomposition of every family, score."""
import math

import pytest
import torch
import torchvision

from nni_xfer.errors import ConfigError
from nni_xfer.strategies.modulenet.connections import Connection, channel_depool, channel_pool, resize_spatial
from nni_xfer.strategies.modulenet.decompose import SOURCES, build_source, cell_shapes, decompose, head_of, reassemble
from nni_xfer.strategies.modulenet.score import lrate, score, sim

pytestmark = pytest.mark.timeout(120)


def reference_pool(x, c_out):
    """Eq. 1 / Eq. 3 written out channel by channel."""
    c = x.shape[1]
    if c % c_out == 0:
        k = c // c_out
        return torch.stack([x[:, k * l:k * l + k].mean(1) for l in range(c_out)], 1)
    eta = math.gcd(c, c_out)
    k = c // eta
    terms = []
    for i in range(c_out // eta):
        rolled = torch.cat([x[:, i:], x[:, :i]], 1)           # Concat(CIn[i:end], CIn[begin:i])
        terms.append(torch.stack([rolled[:, k * l:k * l + k].mean(1) for l in range(eta)], 1))
    return torch.cat(terms, 1)


@pytest.mark.parametrize('c,c_out', [(8, 4), (9, 3), (6, 4), (5, 3), (192, 128), (10, 4), (7, 1)])
def test_channel_pool_matches_the_formulas(c, c_out):
    x = torch.randn(2, c, 3, 3, generator=torch.Generator().manual_seed(c))
    out = channel_pool(x, c_out)
    assert out.shape == (2, c_out, 3, 3)
    assert torch.allclose(out, reference_pool(x, c_out), atol=1e-6)


def test_channel_pool_paper_example_192_to_128():
    """η = 64, k' = 3: channel 0 averages inputs 0,1,2; channel 64 averages 1,2,3; channel 127 averages 190,191,0."""
    x = torch.arange(192.).view(1, 192, 1, 1)
    out = channel_pool(x, 128).flatten()
    assert out[0] == 1.0 and out[63] == (189 + 190 + 191) / 3
    assert out[64] == 2.0 and out[127] == pytest.approx((190 + 191 + 0) / 3)


@pytest.mark.parametrize('c,c_out', [(3, 6), (4, 8), (3, 7), (5, 12), (64, 96)])
def test_channel_depool_matches_the_formula(c, c_out):
    x = torch.randn(2, c, 2, 2)
    out = channel_depool(x, c_out)
    assert out.shape == (2, c_out, 2, 2)
    for l in range(c_out):
        assert torch.equal(out[:, l], x[:, l % c])


def test_resize_and_connection():
    x = torch.randn(1, 4, 8, 8)
    assert resize_spatial(x, 4).shape[-1] == 4 and torch.equal(resize_spatial(x, 4), torch.nn.functional.max_pool2d(x, 2))
    assert resize_spatial(x, 16).shape[-1] == 16 and torch.equal(resize_spatial(x, 16)[..., ::2, ::2], x)
    assert resize_spatial(x, 3).shape[-1] == 3
    conn = Connection(4, 6, 8, 4)
    assert sum(p.numel() for p in conn.parameters()) == 0
    assert conn(x).shape == (1, 6, 4, 4) and 'ChDP' in repr(conn)
    conv = Connection(4, 6, 8, 4, kind='conv1x1')  # the paper's ablation: a plain 1x1 conv
    assert isinstance(conv.conv, torch.nn.Conv2d) and conv.conv.kernel_size == (1, 1)
    assert sum(p.numel() for p in conv.parameters()) == 4 * 6 + 6 and conv(x).shape == (1, 6, 4, 4)
    y = conv(x)
    ref = torch.nn.functional.conv2d(torch.nn.functional.max_pool2d(x, 2), conv.conv.weight, conv.conv.bias)
    assert torch.allclose(y, ref) and (y < 0).any()  # linear: no ReLU after it
    bn = Connection(4, 6, 8, 4, kind='conv1x1_bn_relu')
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) and bn(x).shape == (1, 6, 4, 4)
    with pytest.raises(ConfigError, match='^connection:.*allowed: pool, conv1x1, conv1x1_bn_relu'):
        Connection(4, 6, 8, 4, kind='dense')


@pytest.mark.parametrize('arch', SOURCES)
def test_every_family_decomposes_and_reassembles_exactly(arch):
    torch.manual_seed(0)
    model = build_source(arch, num_classes=7, in_channels=3, width=0.125).eval()
    cells = decompose(model, arch)
    assert len(cells) == 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reassemble(cells, head_of(model, arch)).eval()(x), model(x), atol=1e-6)
    for a, b in zip(cells, cells[1:]):
        assert a.out_channels == b.in_channels
    shapes = cell_shapes(cells, 3, 32)
    assert all(i // o == c.reduction for (i, o), c in zip(shapes, cells))
    if arch.startswith('resnet'):
        assert shapes == [(32, 16), (16, 16), (16, 8), (8, 4), (4, 2)]   # first max pool removed
    else:
        assert shapes == [(32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]


@pytest.mark.parametrize('arch,outs', [('resnet18', [64, 64, 128, 256, 512]), ('vgg11_bn', [64, 128, 256, 512, 512]),
                                       ('resnet50', [64, 256, 512, 1024, 2048])])
def test_full_width_is_torchvision(arch, outs):
    model = build_source(arch, num_classes=1000, small_input=False)
    ref = getattr(torchvision.models, arch)(weights=None)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    cells = decompose(model, arch)
    assert [c.out_channels for c in cells] == outs
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(reassemble(cells, head_of(model, arch))(x), model(x), atol=1e-5)


@pytest.mark.parametrize('arch,small', [('resnet18', True), ('resnet50', False), ('vgg11', True), ('vgg13_bn', True)])
def test_dropping_a_cells_reductions_keeps_its_weights_and_its_resolution(arch, small):
    from nni_xfer.strategies.modulenet.decompose import drop_reductions, reductions
    model = build_source(arch, num_classes=7, width=0.125, small_input=small).eval()
    cells = decompose(model, arch)
    shapes = cell_shapes(cells, 3, 32)
    for cell, (i, o) in zip(cells, shapes):
        factors = [f for _, f in reductions(cell.module)]
        assert math.prod(factors) == i // o == cell.reduction
        before = {k: v.clone() for k, v in cell.module.state_dict().items()}
        x = torch.randn(1, cell.in_channels, i, i)
        for n in range(1, len(factors) + 1):  # drop one more of the last reductions each time
            drop_reductions(cell.module, 1)
            with torch.no_grad():
                assert cell.module(x).shape[-1] == o * math.prod(factors[len(factors) - n:])
        assert not reductions(cell.module)
        assert all(torch.equal(v, before[k]) for k, v in cell.module.state_dict().items())
    if arch == 'resnet50':  # stem: conv stride 2 then max pool; the pool (last) goes first
        stem = decompose(build_source(arch, 7, width=0.125, small_input=False), arch)[0].module
        assert [n for n, _ in reductions(stem)] == ['0', '3']


def test_fewer_cells_merge_neighbours():
    model = build_source('resnet18', 10, width=0.125)
    cells = decompose(model, 'resnet18', cells=3)
    assert len(cells) == 3 and [c.reduction for c in cells] == [2, 2, 4]
    with pytest.raises(ConfigError, match='^cells:'):
        decompose(model, 'resnet18', cells=6)


def test_bad_source_arguments():
    with pytest.raises(ConfigError, match='^arch:.*allowed: resnet18'):
        build_source('alexnet', 10)
    with pytest.raises(ConfigError, match='^weights:.*not in the local cache'):
        build_source('resnet18', 10, weights='torchvision')
    with pytest.raises(ConfigError, match='^weights: torchvision weights need width 1'):
        build_source('resnet18', 10, width=0.5, weights='torchvision')


def test_user_checkpoint_weights(tmp_path):
    a = build_source('vgg11_bn', 10, width=0.125)
    torch.save(a.state_dict(), tmp_path / 'w.pt')
    b = build_source('vgg11_bn', 10, width=0.125, weights=str(tmp_path / 'w.pt'))
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize('code,expected', [
    ([1, 1, 1, 1, 1], 1.0), ([1, 1, 2, 1, 1], 0.4), ([2, 1, 1, 1, 1], 0.2), ([3, 3, 3, 3, 1], 0.8),
    (['r34', 'v16', 'v16', 'v16', 'v16'], 0.2)])
def test_sim_hand_cases(code, expected):
    assert sim(code) == pytest.approx(expected)


def test_lrate_and_score():
    assert lrate([2.0, 1.5, 0.5]) == pytest.approx(0.75)
    assert lrate([1.0]) == 0.0 and lrate([1.0, 2.0]) == 0.0 and lrate([0.0, 0.0]) == 0.0
    assert lrate([1.0, -1.0]) == 1.0                      # normalised to [0, 1]
    assert score(0.2, 0.5, 0.4, alpha=25, beta=25) == pytest.approx(0.2 - 12.5 + 10.0)
