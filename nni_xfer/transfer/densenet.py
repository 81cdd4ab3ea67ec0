"""Function-preserving wider/deeper transforms of the EAS DenseNet-BC.

Structure (Huang et al., 2017, BC variant): a 3×3 stem conv, dense blocks of
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
* :func:`densenet_deeper` — the authors' code (docs/fidelity.md, EAS): a duplicate of the chosen
  layer is inserted right after it. Its bottleneck is a copy that ignores the extra input channels (zero weights; BN
  entries γ=1, β=0, mean=0, var=1) and its 3×3 conv selects the original's filters with
  replacement, so its output replicates the original layer's output; later consumers see the
  duplicated channels scaled by ``1/count``. This is the authors' code and the default.
* :func:`densenet_deeper_eq5` — EAS Eq. 5: the new layer's 3×3 filters are identity filters
  replicating chosen input channels. A pre-activation layer reads ``ReLU(BN(x))``, so it cannot
  output a signed ``x``; it outputs ``max(x, c)`` (or ``min(x, c)``) with ``c`` the common ReLU
  threshold of the channel's consumers, which every consumer's ``ReLU(BN(·))`` cannot tell from
  ``x``: exactly function-preserving for channels whose consumers' BN slopes share a sign (the
  only ones chosen). Selected by ``'scheme': 'eq5'`` in a deeper op.
* :func:`densenet_widen_stem`, :func:`densenet_widen_transition` — widen the stem conv or a
  transition conv; the next block's consumers get the Eq. 4 remapping.

The network is the ``eas_densenet`` space's (``DenseNetBC``; its docstring shows these transforms
at work); this module reads it by structure only — ``stem``, ``blocks[i].layers[j]`` (dense
layers), ``transitions[i]`` and the head — and imports no space.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import ConfigError
from .net2net import (_relative_noise, gather_bn, insert_mapping, net2wider_conv, widen_inputs, widen_outputs,
                      wider_mapping)

__all__ = ['densenet_wider', 'densenet_deeper', 'densenet_deeper_eq5', 'eq5_cuts', 'densenet_widen_stem',
           'densenet_widen_transition']


def _check_layer(net: nn.Module, block: int, layer: int) -> nn.Module:
    if not 0 <= block < len(net.blocks):
        raise ConfigError('block', f'must be in [0, {len(net.blocks)}), got {block}')
    n = len(net.blocks[block].layers)
    if not 0 <= layer < n:
        raise ConfigError('layer', f'must be in [0, {n}) for block {block}, got {layer}')
    return net.blocks[block].layers[layer]


def _remap_consumers(net: nn.Module, block: int, start: int, position: int, sources: torch.Tensor) -> None:
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


def densenet_wider(net: nn.Module, block: int, layer: int, new_growth: int, *,
                   bottleneck_width: int | None = None, noise: float = 0.0,
                   generator: torch.Generator | None = None) -> nn.Module:
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


def densenet_deeper(net: nn.Module, block: int, layer: int, *, growth: int | None = None,
                    noise: float = 0.0, generator: torch.Generator | None = None) -> nn.Module:
    """Insert a duplicate of dense layer ``layer`` right after it (the authors' code; docs/fidelity.md, EAS).

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


def _consumer_norms(net: nn.Module, block: int, start: int) -> list[nn.BatchNorm2d]:
    """Pre-activation BNs of every consumer of block ``block`` from layer ``start`` on."""
    norms = [layer.norm1 for layer in list(net.blocks[block].layers)[start:]]
    norms.append(net.transitions[block].norm if block < len(net.transitions) else net.norm)
    return norms


def eq5_cuts(norms: list[nn.BatchNorm2d], channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per input channel ``n < channels``: is it replicable (Eq. 5), the sign ``s`` and the cut ``c``.

    Each consumer applies ``ReLU(a·x + b)`` (its BN in eval mode) to channel ``n``. A channel whose
    consumers' slopes ``a`` never have opposite signs is replicable: with ``s = +1`` (no negative
    slope) and ``c = min(−b/a)`` over the positive slopes, ``r = max(x, c)`` gives every consumer
    exactly ``ReLU(a·x + b)``; with ``s = −1``, ``c = max(−b/a)`` over the negative slopes and
    ``r = min(x, c)``. (``c = 0`` when all slopes are zero.)

    Returns:
        ``(eligible: bool[channels], sign: ±1.0[channels], cut: [channels])`` in float64.
    """
    a = torch.stack([(bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps))[:channels]
                     for bn in norms])
    b = torch.stack([bn.bias.detach().double()[:channels] for bn in norms]) - a * torch.stack(
        [bn.running_mean.double()[:channels] for bn in norms])
    pos, neg = a > 0, a < 0
    t = torch.where(a != 0, -b / torch.where(a != 0, a, torch.ones_like(a)), torch.zeros_like(a))
    inf = torch.tensor(float('inf'), dtype=torch.float64)
    lo = torch.where(pos, t, inf).min(0).values
    hi = torch.where(neg, t, -inf).max(0).values
    sign = torch.where(neg.any(0), -1.0, 1.0).double()
    cut = torch.where(sign > 0, torch.where(pos.any(0), lo, 0.0), hi)
    return ~(pos.any(0) & neg.any(0)), sign, cut


def densenet_deeper_eq5(net: nn.Module, block: int, layer: int, *, growth: int | None = None,
                        noise: float = 0.0, generator: torch.Generator | None = None) -> nn.Module:
    """Insert after dense layer ``layer`` a new layer whose filters replicate input channels (EAS Eq. 5).

    The new layer sees ``[O_0, …, O_l]`` (its block input plus layer ``l``'s output) and its
    3×3 conv holds Eq. 5's identity filters: filter ``j`` has only a centre tap, on the bottleneck
    channel that carries input channel ``n_j`` (``n_j`` uniform with replacement over the
    replicable channels, see below). Later consumers get Eq. 4's remapping (BN entries gathered,
    weights divided by the replica count).

    In this pre-activation network the new layer reads ``ReLU(BN(x))``, not ``x``, so a bare
    identity filter cannot output the signed feature ``x_n``. The layer is therefore set so that
    its output is ``r = max(x_n, c)`` (or ``min(x_n, c)``): ``norm1`` maps channel ``n`` to
    ``s·(x_n − c)``, the ReLU clips it, the 1×1 conv passes it to its own bottleneck channel (and
    one bottleneck channel is the constant 1: zero weights, ``norm2`` β = 1, γ = 0), and the
    identity filter adds back ``c`` through the constant channel with sign ``s``. ``c`` is the
    consumers' common ReLU threshold (:func:`eq5_cuts`), so every consumer's ``ReLU(BN(r))`` equals
    its ``ReLU(BN(x_n))`` for every input: function-preserving exactly (eval mode), up to rounding
    that grows with ``|c|``. A channel whose consumers' BN slopes have opposite signs cannot be
    replicated this way (one ReLU of ``x_n`` keeps one side of it only) and is never chosen; if no
    channel qualifies, :class:`ConfigError`. ``norm1``/``norm2`` carry
    ``needs_calibration = 'affine'``: the ``net2net`` initializer gives them real-activation
    statistics without changing their eval-mode function (:func:`.net2net.recalibrate_bn`).

    With ``noise > 0``: Gaussian noise of std ``noise × std(kernel)`` on the whole 3×3 kernel.

    Returns:
        A transformed copy of ``net``.
    """
    net = copy.deepcopy(net)
    orig = _check_layer(net, block, layer)
    k, off = orig.growth, orig.norm1.num_features
    c_in = off + k
    width = growth if growth is not None else k
    if width < 1:
        raise ConfigError('growth', f'must be >= 1, got {width}')
    bw = net.bottleneck * width
    norms = _consumer_norms(net, block, layer + 1)
    eligible, sign, cut = eq5_cuts(norms, c_in)
    candidates = torch.nonzero(eligible).flatten()
    if len(candidates) == 0:
        raise ConfigError('deeper', f'block {block} layer {layer}: no input channel can be replicated (every '
                                    "channel's consumers have BN slopes of both signs); use the duplicate scheme")
    sources = candidates[torch.randint(0, len(candidates), (width,), generator=generator)]
    distinct = sorted(set(sources.tolist()))
    if len(distinct) + 1 > bw:
        raise ConfigError('bottleneck', f'Eq. 5 needs {len(distinct) + 1} bottleneck channels, the layer has {bw}')
    row = {n: i for i, n in enumerate(distinct)}
    const = len(distinct)  # the bottleneck channel that is the constant 1
    ref = orig.conv2.weight
    new = copy.deepcopy(orig)
    new.norm1 = nn.BatchNorm2d(c_in, eps=orig.norm1.eps, momentum=orig.norm1.momentum).to(ref)
    new.conv1 = nn.Conv2d(c_in, bw, 1, bias=False).to(ref)
    new.norm2 = nn.BatchNorm2d(bw, eps=orig.norm2.eps, momentum=orig.norm2.momentum).to(ref)
    new.conv2 = nn.Conv2d(bw, width, 3, padding=1, bias=False).to(ref)
    first = norms[0]  # statistics of the input channels, for a data-consistent parametrisation
    with torch.no_grad():
        # norm1: a replicated channel n -> s·(x − c) in eval mode, with the consumers' running
        # statistics of x; the other channels -> 0 (slope 0, so they constrain no later Eq. 5 cut)
        used = torch.zeros(c_in, dtype=torch.float64)
        used[distinct] = 1.0
        mean, var = first.running_mean[:c_in].double(), first.running_var[:c_in].double()
        std = torch.sqrt(var + new.norm1.eps)
        new.norm1.running_mean.copy_(mean.to(ref))
        new.norm1.running_var.copy_(var.to(ref))
        new.norm1.weight.copy_((used * sign * std).to(ref))
        new.norm1.bias.copy_((used * sign * (mean - cut)).to(ref))
        w1 = torch.zeros_like(new.conv1.weight)
        for n, i in row.items():
            w1[i, n] = 1.0
        new.conv1.weight.copy_(w1)
        # norm2: identity on every channel but the constant one (γ = 0, β = 1)
        new.norm2.running_mean.zero_()
        new.norm2.running_var.fill_(1.0 - new.norm2.eps)
        new.norm2.weight.fill_(1.0)
        new.norm2.bias.zero_()
        new.norm2.weight[const] = 0.0
        new.norm2.bias[const] = 1.0
        # conv2: Eq. 5's identity filters (centre tap) plus the cut through the constant channel
        w2 = torch.zeros(new.conv2.weight.shape, dtype=torch.float64)
        for j, n in enumerate(sources.tolist()):
            w2[j, row[n], 1, 1] = sign[n]
            w2[j, const, 1, 1] = cut[n]
        if noise > 0:
            w2 += _relative_noise(w2, w2.shape, noise, generator).double()
        new.conv2.weight.copy_(w2.to(ref))
    new.norm1.needs_calibration = 'affine'
    new.norm2.needs_calibration = 'affine'
    net.blocks[block].layers.insert(layer + 1, new)
    _remap_consumers(net, block, layer + 2, c_in, sources)
    return net


def densenet_widen_stem(net: nn.Module, new_channels: int, *, noise: float = 0.0,
                        generator: torch.Generator | None = None) -> nn.Module:
    """Widen the stem conv to ``new_channels`` filters; block 0's consumers get Eq. 4."""
    net = copy.deepcopy(net)
    c = net.stem.out_channels
    mapping = wider_mapping(c, new_channels, generator)
    net.stem = widen_outputs(net.stem, mapping, noise=noise, generator=generator)
    _remap_consumers(net, 0, 0, c, mapping[c:])
    return net


def densenet_widen_transition(net: nn.Module, index: int, new_channels: int, *, noise: float = 0.0,
                              generator: torch.Generator | None = None) -> nn.Module:
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
