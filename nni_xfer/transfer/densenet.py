"""Function-preserving wider/deeper transforms of the EAS DenseNet-BC (the network itself lives in
:mod:`nni_xfer.search_spaces.eas_densenet`).

Structure (Huang et al., 2017, BC variant; methods.md §1.7): a 3×3 stem conv, dense blocks of
layers ``BN-ReLU-Conv1x1(b·k)-BN-ReLU-Conv3x3(k)`` whose outputs are concatenated to their
input, transitions ``BN-ReLU-Conv1x1(⌊compression·C⌋)-AvgPool2``, and a ``BN-ReLU-GAP-Linear``
head. Each layer may have its own growth ``k`` (widening changes it); all channel counts are
read from the modules, so nothing goes stale after a transform.

Transforms (each returns a transformed deep copy and leaves the input untouched):

* :func:`densenet_wider` — EAS Eq. 4: the layer's 3×3 conv gets ``k'`` filters by a Net2Wider
  map ``G`` (its bottleneck grows to ``b·k'`` the same way, with the pre-activation BN gathered
  in the consumer), and *every* later consumer in the block plus the following transition (or
  the head) receives the replicated channels: its BN entries are gathered and its input
  weights divided by the replica count.
* :func:`densenet_deeper` — methods.md §1.7: a duplicate of the chosen layer is inserted right
  after it. Its bottleneck is a copy that ignores the extra input channels (zero weights; BN
  entries γ=1, β=0, mean=0, var=1) and its 3×3 conv selects the original's filters with
  replacement, so its output replicates the original layer's output; later consumers see the
  duplicated channels scaled by ``1/count``. (EAS Eq. 5 builds the new layer as a replication
  of input channels instead; in a pre-activation network that needs non-negative features,
  so the duplicate variant is the one implemented.)
* :func:`densenet_widen_stem`, :func:`densenet_widen_transition` — widen the stem conv or a
  transition conv; the next block's consumers get the Eq. 4 remapping.

Example:
    >>> import torch
    >>> from nni_xfer.search_spaces.eas_densenet import DenseNetBC
    >>> from nni_xfer.transfer.densenet import densenet_wider, densenet_deeper
    >>> _ = torch.manual_seed(0)
    >>> net = DenseNetBC([[4, 4], [4]], in_channels=3, num_classes=5).eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> new = densenet_deeper(densenet_wider(net, 0, 0, 6, generator=g), 0, 1, generator=g).eval()
    >>> [len(b.layers) for b in new.blocks], new.growths()
    ([3, 1], [[6, 4, 4], [4]])
    >>> x = torch.randn(2, 3, 8, 8)
    >>> torch.allclose(net(x), new(x), atol=1e-5)
    True
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..errors import ConfigError
from .net2net import (_relative_noise, gather_bn, insert_mapping, net2wider_conv, widen_inputs, widen_outputs,
                      wider_mapping)

if TYPE_CHECKING:  # the network is the space's; the transforms only read and rewrite its modules
    from nni_xfer.search_spaces.eas_densenet import DenseLayer, DenseNetBC

__all__ = ['densenet_wider', 'densenet_deeper', 'densenet_widen_stem', 'densenet_widen_transition']


def _check_layer(net: DenseNetBC, block: int, layer: int) -> DenseLayer:
    if not 0 <= block < len(net.blocks):
        raise ConfigError('block', f'must be in [0, {len(net.blocks)}), got {block}')
    n = len(net.blocks[block].layers)
    if not 0 <= layer < n:
        raise ConfigError('layer', f'must be in [0, {n}) for block {block}, got {layer}')
    return net.blocks[block].layers[layer]


def _remap_consumers(net: DenseNetBC, block: int, start: int, position: int, sources: torch.Tensor) -> None:
    """Eq. 4 for every consumer of block ``block`` from layer ``start`` on (then transition/head).

    Each consumer's input gains channels replicating old channels ``sources``, inserted before
    old channel ``position``; its pre-activation BN is gathered and its conv/fc input weights
    are divided by the replica counts.
    """
    owners = [(layer, 'norm1', 'conv1') for layer in list(net.blocks[block].layers)[start:]]
    owners.append((net.transitions[block], 'norm', 'conv') if block < len(net.transitions) else (net, 'norm', 'fc'))
    for owner, norm_name, conv_name in owners:
        norm = getattr(owner, norm_name)
        mapping = insert_mapping(norm.num_features, position, sources)
        setattr(owner, norm_name, gather_bn(norm, mapping))
        setattr(owner, conv_name, widen_inputs(getattr(owner, conv_name), mapping))


def densenet_wider(net: DenseNetBC, block: int, layer: int, new_growth: int, *,
                   bottleneck_width: int | None = None, noise: float = 0.0,
                   generator: torch.Generator | None = None) -> DenseNetBC:
    """Widen dense layer ``layer`` of block ``block`` to growth ``new_growth`` (EAS Eq. 4).

    Args:
        net: the network (not modified).
        block, layer: position of the dense layer.
        new_growth: new number of 3×3 filters ``k' >= k``.
        bottleneck_width: new 1×1 width (default ``net.bottleneck × k'``; never shrinks).
        noise: relative noise on the new filter copies (EAS: ``1e-2``; ``0`` = exact).
        generator: RNG for the index maps and the noise.

    Returns:
        A transformed copy of ``net``.
    """
    net = copy.deepcopy(net)
    target = _check_layer(net, block, layer)
    k = target.growth
    bw = bottleneck_width if bottleneck_width is not None else net.bottleneck * new_growth
    if bw > target.conv1.out_channels:
        res = net2wider_conv(target.conv1, None, target.conv2, bw, noise=noise, generator=generator,
                             next_bn=target.norm2)
        target.conv1, target.norm2, target.conv2 = res.layer, res.next_bn, res.next_layer
    mapping = wider_mapping(k, new_growth, generator)
    target.conv2 = widen_outputs(target.conv2, mapping, noise=noise, generator=generator)
    off = target.norm1.num_features  # the layer's output starts right after its input
    _remap_consumers(net, block, layer + 1, off + k, off + mapping[k:])
    return net


def densenet_deeper(net: DenseNetBC, block: int, layer: int, *, growth: int | None = None,
                    noise: float = 0.0, generator: torch.Generator | None = None) -> DenseNetBC:
    """Insert a duplicate of dense layer ``layer`` right after it (methods.md §1.7).

    The duplicate's 1×1 bottleneck copies the original and gives zero weight to the original's
    output channels, which it additionally receives (their BN entries: γ=1, β=0, mean=0,
    var=1); its 3×3 conv takes ``growth`` (default ``k``) of the original's filters, chosen
    uniformly with replacement. Its output therefore replicates the original's output, and all
    later consumers get those channels with ``1/count`` scaling. With ``noise > 0``: Gaussian
    noise of std ``noise × std(kernel)`` on the whole bottleneck kernel and
    ``noise × std(copied filter)`` on every 3×3 filter (EAS: ``1e-2``).

    Returns:
        A transformed copy of ``net``.
    """
    net = copy.deepcopy(net)
    orig = _check_layer(net, block, layer)
    k, off = orig.growth, orig.norm1.num_features
    width = growth if growth is not None else k
    if width < 1:
        raise ConfigError('growth', f'must be >= 1, got {width}')
    dup = copy.deepcopy(orig)
    # the duplicate also sees the original's k output channels: pass them with zero weights
    in_map = torch.cat([torch.arange(off), torch.zeros(k, dtype=torch.long)])
    norm1 = gather_bn(orig.norm1, in_map)
    with torch.no_grad():
        norm1.weight[off:] = 1.0
        norm1.bias[off:] = 0.0
        norm1.running_mean[off:] = 0.0
        norm1.running_var[off:] = 1.0
        conv1 = copy.deepcopy(orig.conv1)
        w0 = orig.conv1.weight.detach()
        # zero columns for the k extra inputs; k may exceed the layer's input width
        w1 = torch.cat([w0, w0.new_zeros(w0.shape[0], k, *w0.shape[2:])], dim=1)
        if noise > 0:
            w1 = w1 + _relative_noise(w1, w1.shape, noise, generator)
        conv1.weight = nn.Parameter(w1)
        conv1.in_channels = off + k
        select = torch.randint(0, k, (width,), generator=generator)
        conv2 = copy.deepcopy(orig.conv2)
        w2 = orig.conv2.weight.detach()[select].clone()
        if noise > 0:
            for j, src in enumerate(select.tolist()):
                w2[j] += _relative_noise(orig.conv2.weight[src], w2[j].shape, noise, generator)
        conv2.weight = nn.Parameter(w2)
        conv2.out_channels = width
    dup.norm1, dup.conv1, dup.conv2 = norm1, conv1, conv2
    net.blocks[block].layers.insert(layer + 1, dup)
    _remap_consumers(net, block, layer + 2, off + k, off + select)
    return net


def densenet_widen_stem(net: DenseNetBC, new_channels: int, *, noise: float = 0.0,
                        generator: torch.Generator | None = None) -> DenseNetBC:
    """Widen the stem conv to ``new_channels`` filters; block 0's consumers get Eq. 4."""
    net = copy.deepcopy(net)
    c = net.stem.out_channels
    mapping = wider_mapping(c, new_channels, generator)
    net.stem = widen_outputs(net.stem, mapping, noise=noise, generator=generator)
    _remap_consumers(net, 0, 0, c, mapping[c:])
    return net


def densenet_widen_transition(net: DenseNetBC, index: int, new_channels: int, *, noise: float = 0.0,
                              generator: torch.Generator | None = None) -> DenseNetBC:
    """Widen transition ``index``'s conv to ``new_channels``; block ``index+1``'s consumers get Eq. 4."""
    if not 0 <= index < len(net.transitions):
        raise ConfigError('index', f'must be in [0, {len(net.transitions)}), got {index}')
    net = copy.deepcopy(net)
    t = net.transitions[index]
    c = t.conv.out_channels
    mapping = wider_mapping(c, new_channels, generator)
    t.conv = widen_outputs(t.conv, mapping, noise=noise, generator=generator)
    _remap_consumers(net, index + 1, 0, c, mapping[c:])
    return net
