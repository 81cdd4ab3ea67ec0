"""EAT-NAS space ``mbv2_blocks``: grammar, constraints, transformation function, network, sharing."""
import copy

import numpy as np
import pytest
import torch

from nni_xfer.data.pipeline import dataset_info
from nni_xfer.errors import ConfigError
from nni_xfer.search_spaces import mbv2_blocks as m
from nni_xfer.space import build_space, freeze, space_info
from nni_xfer.transfer.sharing import copy_overlap, share_state

pytestmark = pytest.mark.timeout(120)

SMALL = {'stem_channels': 8, 'head_channels': 32}


@pytest.fixture(scope='module')
def digits():
    return dataset_info('digits')


@pytest.fixture(scope='module')
def space(digits):
    return build_space('mbv2_blocks', SMALL, digits)


def _arch(**over):
    a = copy.deepcopy(m.EXAMPLE)
    for i, kw in over.items():
        a['blocks'][int(i[1:])].update(kw)
    return a


def test_presets_and_info(digits, space):
    assert space.preset == 'cifar' and space.strides == [1, 1, 2, 1, 2, 1, 1] and space.stem_stride == 1
    assert space.grammar.expansion_range == [4.0, 10.0] and space.grammar.layer_range is None
    big = build_space('mbv2_blocks', {'preset': 'imagenet'}, digits)
    assert big.strides == [1, 2, 2, 2, 1, 2, 1] and big.stem_stride == 2
    assert big.grammar.expansion_range == [8.0, 16.0] and big.grammar.layer_range == [16, 18]
    info = space_info('mbv2_blocks', SMALL, space)
    assert info.extra['kind'] == 'mbv2_blocks'
    assert m.grammar_from_info(info) == space.grammar


@pytest.mark.parametrize('args,field', [
    ({'expansion_range': [200, 300]}, 'space_args.expansion_range'),    # max product 2**7 = 128
    ({'expansion_range': [5, 4]}, 'space_args.expansion_range'),
    ({'layer_range': [30, 40]}, 'space_args.layer_range'),
    ({'layer_range': [16.5, 18]}, 'space_args.layer_range'),
    ({'ops': ['mbconv4']}, 'space_args.ops'),
    ({'kernels': [4]}, 'space_args.kernels'),
    ({'strides': [1, 2]}, 'space_args.strides'),
    ({'preset': 'mnist'}, 'space_args.preset'),
    ({'stem_channels': 0}, 'space_args.stem_channels'),
    ({'dropout': 1.5}, 'space_args.dropout'),
])
def test_bad_space_args_name_the_key(digits, args, field):
    with pytest.raises(ConfigError) as e:
        build_space('mbv2_blocks', args, digits)
    assert e.value.field == field
    assert '\n' not in str(e.value)


@pytest.mark.parametrize('mutate,field', [
    (lambda a: a['blocks'][2].update(op='conv'), 'architecture.blocks[2].op'),
    (lambda a: a['blocks'][0].update(kernel=4), 'architecture.blocks[0].kernel'),
    (lambda a: a['blocks'][6].update(depth=5), 'architecture.blocks[6].depth'),
    (lambda a: a['blocks'][3].update(width=3.0), 'architecture.blocks[3].width'),
    (lambda a: a['blocks'][3].update(skip=True), 'architecture.blocks[3].skip'),
    (lambda a: a['blocks'][1].pop('skip'), 'architecture.blocks[1].skip'),
    (lambda a: a['blocks'][1].update(extra=1), 'architecture.blocks[1].extra'),
    (lambda a: a['blocks'].pop(), 'architecture.blocks'),
    (lambda a: a['blocks'][1].update(width=0.5), 'architecture.blocks'),  # expansion 2.25 < 4
])
def test_bad_architectures_name_the_field(space, mutate, field):
    a = copy.deepcopy(m.EXAMPLE)
    mutate(a)
    with pytest.raises(ConfigError) as e:
        freeze(space, a)
    assert e.value.field == field, str(e.value)


def test_channels_chain_width_factors():
    assert m.channels(m.EXAMPLE, 32) == [32, 16, 32, 48, 96, 144, 144, 288]
    assert m.expansion_ratio(m.EXAMPLE) == 9.0 and m.num_layers(m.EXAMPLE) == 17


def test_generator_never_leaves_constraints_and_changes_every_block(digits):
    for preset in ('cifar', 'imagenet'):
        g = build_space('mbv2_blocks', {'preset': preset}, digits).grammar
        for seed in range(30):
            rng = np.random.default_rng(seed)
            a = m.random_architecture(rng, g)
            assert m.constraint_violation(a, g) is None
            for _ in range(20):
                b = m.transform(a, rng, g)
                assert m.constraint_violation(b, g) is None
                assert m.parse_architecture(b, g) == b
                assert all(sum(x[k] != y[k] for k in m.ELEMENTS) == 1 for x, y in zip(a['blocks'], b['blocks']))
                a = b


@pytest.mark.parametrize('preset', ['cifar', 'imagenet'])
def test_transform_changes_each_element_in_a_fifth_of_the_blocks(digits, preset):
    """Algorithm 3: a constraint breach redraws values in the offending blocks, not the element
    choice (redrawing whole children made width change in 11-12 % of the blocks, not 20 %)."""
    g = build_space('mbv2_blocks', {'preset': preset}, digits).grammar
    counts = dict.fromkeys(m.ELEMENTS, 0)
    rng = np.random.default_rng(1234)
    for walk in range(12):
        a = m.random_architecture(rng, g)
        for _ in range(50):
            b = m.transform(a, rng, g)
            for x, y in zip(a['blocks'], b['blocks']):
                (changed,) = [k for k in m.ELEMENTS if x[k] != y[k]]
                counts[changed] += 1
            a = b
    n = sum(counts.values())
    assert n == 12 * 50 * 7
    # binomial sd at n = 4200: 0.006; the tolerance is 4 sd
    assert all(abs(c / n - 0.2) < 0.025 for c in counts.values()), {k: c / n for k, c in counts.items()}


def test_transform_from_outside_the_constraints_lands_inside(digits):
    cifar = build_space('mbv2_blocks', {'preset': 'cifar'}, digits).grammar
    imagenet = build_space('mbv2_blocks', {'preset': 'imagenet'}, digits).grammar
    rng = np.random.default_rng(0)
    outside = 0
    for _ in range(60):
        a = m.random_architecture(rng, cifar)
        outside += m.constraint_violation(a, imagenet) is not None
        b = m.transform(a, rng, imagenet)
        assert m.constraint_violation(b, imagenet) is None
        assert all(sum(x[k] != y[k] for k in m.ELEMENTS) == 1 for x, y in zip(a['blocks'], b['blocks']))
    assert outside > 40
    # unreachable in one step: a named one-line error
    tight = m.Grammar(**{**imagenet.to_dict(), 'expansion_range': [1.0, 1.5], 'layer_range': [28, 28]})
    with pytest.raises(ConfigError, match='no single transformation') as e:
        m.transform(m.EXAMPLE, rng, tight)
    assert e.value.field == 'architecture.blocks'


def test_every_constrained_sample_builds_and_runs(space):
    rng = np.random.default_rng(0)
    x = torch.randn(2, 1, 8, 8)
    for _ in range(5):
        net = freeze(space, m.random_architecture(rng, space.grammar))
        assert net(x).shape == (2, 10)


def test_skip_semantics():
    # identity residual where shapes match, 1x1 projection where they do not (every layer, SepConv too)
    layer = m.MBV2Layer('sepconv', 3, 8, 16, 2, skip=1)
    assert layer.residual and isinstance(layer.shortcut, torch.nn.Sequential)
    assert m.MBV2Layer('mbconv3', 5, 16, 16, 1, skip=1).shortcut is None
    assert not m.MBV2Layer('mbconv3', 5, 8, 16, 1, skip=1, skip_projection=False).residual
    assert not m.MBV2Layer('mbconv6', 3, 16, 16, 1, skip=0).residual


# ---------------------------------------------------------------- sharing through the public API
def _net(space, arch, seed):
    torch.manual_seed(seed)
    net = freeze(space, arch)
    for mod in net.modules():  # non-trivial BN statistics so that sharing them matters
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_identical_child_reproduces_parent_exactly(space):
    parent = _net(space, m.EXAMPLE, 0)
    child = _net(space, m.EXAMPLE, 1)
    shared, total = share_state(child, parent.state_dict(), m.share_plan(m.EXAMPLE, m.EXAMPLE))
    assert shared == total == sum(p.numel() for p in child.parameters())
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(parent(x), child(x))


def test_wider_and_deeper_child_shares_leading_slices(space):
    parent_arch = _arch(b3={'depth': 2})
    child_arch = _arch(b3={'depth': 4}, b2={'width': 2.0}, b6={'width': 1.5})  # block 2 wider, 3 deeper
    parent, child = _net(space, parent_arch, 0), _net(space, child_arch, 1)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    shared, total = share_state(child, parent.state_dict(), m.share_plan(child_arch, parent_arch))
    ps, cs = parent.state_dict(), child.state_dict()
    # block 2's projection conv: 32 child filters vs 24 -> the first 24 are the parent's
    w_p, w_c = ps['blocks.2.0.body.6.weight'], cs['blocks.2.0.body.6.weight']
    assert w_c.shape[0] == 32 and w_p.shape[0] == 24
    assert torch.equal(w_c[:w_p.shape[0], :w_p.shape[1]], w_p)
    assert torch.equal(w_c[w_p.shape[0]:], fresh['blocks.2.0.body.6.weight'][w_p.shape[0]:])
    # block 3's expand conv: 32 input channels vs 24 -> the first 24 columns are the parent's
    e_p, e_c = ps['blocks.3.0.body.0.weight'], cs['blocks.3.0.body.0.weight']
    assert torch.equal(e_c[:e_p.shape[0], :24], e_p[:e_c.shape[0]])
    # depth: layers 0-1 of block 3 shared, 2-3 fresh (Eq. 4, random)
    assert torch.equal(cs['blocks.3.1.body.3.weight'][:ps['blocks.3.1.body.3.weight'].shape[0]],
                       ps['blocks.3.1.body.3.weight'][:cs['blocks.3.1.body.3.weight'].shape[0]])
    assert torch.equal(cs['blocks.3.2.body.3.weight'], fresh['blocks.3.2.body.3.weight'])
    assert 0 < shared < total


@pytest.mark.parametrize('over', [{'b5': {'width': 1.5}},     # identity residual -> 1x1 projection
                                  {'b2': {'width': 2.0}, 'b0': {'width': 1.0}}])
def test_widen_zero_preserves_the_parents_function(digits, over):
    """``widen: zero``: the consumers' new input slices start at zero, so a child that only widens
    computes its parent's function; the paper's ``random`` does not."""
    space = build_space('mbv2_blocks', {**SMALL, 'expansion_range': [1, 40]}, digits)
    child_arch = _arch(**over)
    parent = _net(space, m.EXAMPLE, 0)
    x = torch.randn(4, 1, 8, 8)
    outs = {}
    for widen in ('random', 'zero'):
        child = _net(space, child_arch, 1)
        plan = m.share_plan(child_arch, m.EXAMPLE, widen=widen)
        shared, total = share_state(child, parent.state_dict(), plan, widen=widen)
        assert 0 < shared < total
        outs[widen] = child(x)
    assert torch.allclose(outs['zero'], parent(x), atol=1e-5)
    assert not torch.allclose(outs['random'], parent(x), atol=1e-2)
    # narrowing cannot preserve it
    narrow = _arch(b5={'width': 0.5}, b6={'width': 2.0})
    child = _net(space, narrow, 1)
    share_state(child, parent.state_dict(), m.share_plan(narrow, m.EXAMPLE), widen='zero')
    assert not torch.allclose(child(x), parent(x), atol=1e-2)
    with pytest.raises(ConfigError):
        share_state(child, parent.state_dict(), m.share_plan(narrow, m.EXAMPLE), widen='net2net')


def test_kernel_change_shares_nothing_in_that_layer(space):
    parent_arch = m.EXAMPLE
    child_arch = _arch(b4={'kernel': 7})
    parent, child = _net(space, parent_arch, 0), _net(space, child_arch, 1)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    share_state(child, parent.state_dict(), m.share_plan(child_arch, parent_arch))
    for k, v in child.state_dict().items():
        if k.startswith('blocks.4.'):
            assert torch.equal(v, fresh[k]), k
    # centre option (docs/fidelity.md, EAT-NAS): 5x5 parent kernel sits in the centre of the 7x7 child kernel
    child2 = _net(space, child_arch, 1)
    share_state(child2, parent.state_dict(), m.share_plan(child_arch, parent_arch, kernel_mismatch='center'))
    assert torch.equal(child2.state_dict()['blocks.4.0.body.3.weight'][:, :, 1:6, 1:6],
                       parent.state_dict()['blocks.4.0.body.3.weight'])


def test_shared_fraction_hand_case():
    # conv 4->6 (k3) + BN(6): child sharing from a 4->4 parent inherits 4*4*9 + 4 + 4 of 6*4*9 + 6 + 6
    child = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, bias=False), torch.nn.BatchNorm2d(6))
    parent = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, bias=False), torch.nn.BatchNorm2d(4))
    shared, total = share_state(child, parent.state_dict(), {'0': '0', '1': '1'})
    assert (shared, total) == (4 * 4 * 9 + 8, 6 * 4 * 9 + 12)
    assert share_state(child, parent.state_dict(), {'0': None, '1': '1'}) == (8, total)


def test_copy_overlap_centre():
    dst, src = torch.zeros(1, 1, 3, 3), torch.arange(25.).view(1, 1, 5, 5)
    assert copy_overlap(dst, src) == 9
    assert torch.equal(dst[0, 0], src[0, 0, 1:4, 1:4])


def test_stem_and_classifier_reinitialised_across_tasks(digits):
    a = build_space('mbv2_blocks', SMALL, digits)
    b = build_space('mbv2_blocks', {**SMALL}, dataset_info('synthetic', in_channels=3, num_classes=5,
                                                               image_size=8))
    parent, child = _net(a, m.EXAMPLE, 0), _net(b, m.EXAMPLE, 1)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    share_state(child, parent.state_dict(), m.share_plan(m.EXAMPLE, m.EXAMPLE))
    cs = child.state_dict()
    assert torch.equal(cs['stem.0.weight'], fresh['stem.0.weight'])
    assert torch.equal(cs['classifier.weight'], fresh['classifier.weight'])
    assert torch.equal(cs['head.0.weight'], parent.state_dict()['head.0.weight'])
