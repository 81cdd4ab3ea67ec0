"""The space protocol (nni_xfer/space.py): every declared hook of every registered space does what
its declaration says, and a missing hook is a one-line error naming the space, the hook and the
spaces that have it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import HOOKS, XferSpace, build_space, freeze, space_hook, space_info, spaces_with
from nni_xfer.strategy import SpaceInfo

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures('one_torch_thread')]

#: hooks whose check needs a built space (the others are checked on the class)
INSTANCE_HOOKS = ('eas_operators', 'net2net_transform', 'architecture_of', 'portal_summary', 'xfer_space_info',
                  'grammar')


class _Data:
    in_channels, num_classes, image_size = 1, 10, 8


def test_hooks_are_declared_on_xferspace_and_every_space_is_one():
    for hook in HOOKS:
        assert hook in vars(XferSpace) and getattr(XferSpace, hook) is None, hook
    for entry in SEARCH_SPACES.entries():
        assert issubclass(entry.obj, XferSpace), f'{entry.name} is not an XferSpace: its hooks have no defaults'


def test_missing_hook_is_one_line_naming_space_hook_and_owners():
    with pytest.raises(ConfigError) as e:
        space_hook('simple_cnn', 'eas_operators')
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith('space: ') and "'simple_cnn'" in msg and "'eas_operators'" in msg
    assert 'allowed: eas_densenet, eas_plain_cnn' in msg
    with pytest.raises(ConfigError, match=r"^init\.kind: space 'simple_cnn' has no 'grammar' with share_plan hook "
                                          r"\(allowed: mbv2_blocks\)$"):
        space_hook('simple_cnn', 'grammar', needs=('share_plan',), field='init.kind')
    assert space_hook('not_a_space', 'grammar', optional=True) is None
    with pytest.raises(ValueError, match='not a hook'):
        space_hook('simple_cnn', 'no_such_hook')
    assert set(spaces_with('grammar')) >= {'mbv2_blocks', 'nasnet_cells'}


def _built(name: str, tmp_path):
    cls = SEARCH_SPACES.get(name)
    args = cls.contract_space_args(tmp_path) if cls.contract_space_args is not None else {}
    data = _Data()
    if cls.contract_image_size is not None:
        data.image_size, data.in_channels = cls.contract_image_size, 3
    space = build_space(name, args, data)
    info = space_info(name, args, space)
    sample = info.extra.get('example') or space.example()
    return space, info, sample


@pytest.mark.parametrize('name', SEARCH_SPACES.names())
def test_every_declared_hook_of_every_space(name, tmp_path):
    cls = SEARCH_SPACES.get(name)
    present = [h for h in HOOKS if getattr(cls, h) is not None]
    for hook in present:
        assert space_hook(name, hook) is getattr(cls, hook)
    if cls.contract_image_size is not None:
        assert isinstance(cls.contract_image_size, int) and cls.contract_image_size > 0
    if not any(h in present for h in INSTANCE_HOOKS):
        return
    space, info, sample = _built(name, tmp_path)
    assert isinstance(info, SpaceInfo) and info.name == name
    if cls.xfer_space_info is not None:
        assert info.extra.get('kind') == name      # the space described itself to strategies
    if cls.portal_summary is not None:
        summary = cls.portal_summary(sample)
        assert isinstance(summary, dict) and summary
        assert all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in summary.values()), summary
    net = freeze(space, sample)
    if cls.architecture_of is not None:
        assert cls.architecture_of(net) == sample
    if cls.net2net_transform is not None:
        child = cls.net2net_transform(net, [], noise=False, generator=torch.Generator().manual_seed(0))
        assert cls.architecture_of(child) == sample   # no ops: the same network
    if cls.eas_operators is not None:
        ops = cls.eas_operators(info)
        assert isinstance(cls.eas_operators.options, dict) and len(ops.default_steps) == 2
        start = ops.start()
        tokens = ops.tokens(start)
        # the controller's token grammar: every token known, masks and layout within the heads
        assert set(tokens) <= set(ops.vocabulary) and len(set(ops.vocabulary)) == len(ops.vocabulary)
        assert len(tokens) <= ops.max_len and ops.max_layers > 0
        assert all(0 <= i < len(tokens) for i in ops.widenable(tokens))
        assert len(ops.layout(tokens)) == ops.n_blocks
        assert ops.apply(start, ops.finish(start)) is not None
    if cls.grammar is not None:
        grammar = cls.grammar.from_info(info)
        rng = np.random.default_rng(0)
        if hasattr(grammar, 'random'):              # mbv2_blocks: parse / random / transform / share_plan
            arch = grammar.random(rng)
            assert grammar.parse(arch) == arch
            child = grammar.transform(arch, rng)
            assert grammar.parse(child) == child
            plan = grammar.share_plan(child, arch)
            assert isinstance(plan, dict) and plan
            freeze(space, child)
        else:                                       # nasnet_cells: the NAO cell grammar
            arch = grammar.random_sample(rng)
            assert grammar.validate(arch) == arch and grammar.from_tokens(grammar.to_tokens(arch)) == arch
            freeze(space, arch)
