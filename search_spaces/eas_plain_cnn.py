"""EAS plain-CNN space (Cai et al., AAAI 2018): variable-length conv/pool/FC chains.

An architecture is ``{'layers': [tokens]}`` with tokens ``conv-<filters>-<kernel>``, ``pool`` and
``fc-<units>`` (the final classifier is implicit). Pools split conv blocks; the last ``pool`` is
the global average pool and only ``fc`` tokens may follow it. Every conv/FC layer is followed by
BN + ReLU; convs have stride 1 and 'same' padding; the other pools are 2×2 max pools. One module
per token (``net.layers[i]`` is token ``i``), so transforms can address layers by position.

The module owns the space's grammar: :func:`parse_token` / :func:`parse_layers` (the one parser
and validator of the token format), :func:`block_layout` (layers per block, as the controller
and the strategies see them), the pure architecture operators (:func:`transform_tokens`;
:func:`wider_ops` / :func:`deeper_ops` turn controller decisions into operations) and
:class:`PlainEASOps`, the space's EAS operators that strategies look up through the space class
(``EASPlainCNN.eas_operators``). :meth:`EASPlainCNN.net2net_transform` builds a child network
from its parent's weights with :mod:`nni_xfer.transfer.net2net`.
"""
from __future__ import annotations

import copy
import re
from typing import Sequence

import torch
import torch.nn as nn

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace, int_list
from nni_xfer.transfer.net2net import net2deeper_conv, net2deeper_linear, net2wider_conv, net2wider_linear

CONV_WIDTHS = [16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512]
KERNELS = [1, 3, 5]
FC_UNITS = [64, 128, 256, 384, 512, 640, 768, 896, 1024]
#: Paper Table 1 start network: C(16,3) P C(32,3) P C(64,3) P C(128,3) P(AVG) FC(256).
PAPER_START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'conv-128-3', 'pool', 'fc-256']

_CONV = re.compile(r'^conv-(\d+)-(\d+)$')
_FC = re.compile(r'^fc-(\d+)$')
N_BLOCKS = 5  # the controller's block head: at least 4 conv blocks + the fc block (more when the start has more pools)
MAX_LAYERS = 10  # the controller's layer head: a deeper decision picks one of a block's first 10 layers
MAX_LEN = 50  # the controller's padding length of a token list (raised when a search can grow longer)
#: What the fc block (the last block of :func:`block_layout`) offers to a deeper action:
#: ``code`` (default, the authors' code) — the FC layers after the global pool, or the global pool
#: itself when there is no FC layer (so a start without an FC can gain one); ``paper`` — the global
#: pool followed by the FC layers (paper: a new layer may go "after a fully-connected layer or the
#: final global average pooling layer").
FC_BLOCK_MODES = ('code', 'paper')
WIDER_NOISE = 1e-2
DEEPER_NOISE = 1e-3

# --------------------------------------------------------------------------- grammar

def parse_token(token: str) -> tuple[str, int | None, int | None]:
    """``('conv', filters, kernel)``, ``('fc', units, None)`` or ``('pool', None, None)``."""
    if token == 'pool':
        return 'pool', None, None
    m = _CONV.match(str(token))
    if m:
        return 'conv', int(m.group(1)), int(m.group(2))
    m = _FC.match(str(token))
    if m:
        return 'fc', int(m.group(1)), None
    raise ValueError(f'unknown layer token {token!r}')


def parse_layers(tokens, conv_widths=None, kernels=None, fc_units=None, field: str = 'architecture.layers'):
    """Validate a token list; return [(kind, width, kernel)] with kind in conv|pool|gpool|fc."""
    if not isinstance(tokens, (list, tuple)) or not tokens:
        raise ConfigError(field, f'expected a non-empty list of layer tokens, got {tokens!r}')
    pools = [i for i, t in enumerate(tokens) if t == 'pool']
    if not pools:
        raise ConfigError(field, "needs a final 'pool' (the global average pool)")
    last_pool = pools[-1]
    out = []
    for i, tok in enumerate(tokens):
        f = f'{field}[{i}]'
        if tok == 'pool':
            out.append(('gpool' if i == last_pool else 'pool', None, None))
            continue
        m = _CONV.match(str(tok))
        if m:
            if i > last_pool:
                raise ConfigError(f, f'{tok!r}: only fc layers may follow the global pool')
            w, k = int(m.group(1)), int(m.group(2))
            if conv_widths is not None and w not in conv_widths:
                raise ConfigError(f, f'{tok!r}: filters {w} not allowed', allowed=conv_widths)
            if kernels is not None and k not in kernels:
                raise ConfigError(f, f'{tok!r}: kernel {k} not allowed', allowed=kernels)
            if k % 2 == 0:
                raise ConfigError(f, f'{tok!r}: kernel must be odd')
            out.append(('conv', w, k))
            continue
        m = _FC.match(str(tok))
        if m:
            if i < last_pool:
                raise ConfigError(f, f'{tok!r}: fc layers must follow the global pool')
            u = int(m.group(1))
            if fc_units is not None and u not in fc_units:
                raise ConfigError(f, f'{tok!r}: units {u} not allowed', allowed=fc_units)
            out.append(('fc', u, None))
            continue
        raise ConfigError(f, f'unknown token {tok!r}', allowed=['conv-<filters>-<kernel>', 'pool', 'fc-<units>'])
    return out


def _width(tokens: Sequence[str], i: int, in_channels: int) -> int:
    """Channels/units of the output of layer ``i``."""
    for tok in reversed(list(tokens)[:i + 1]):
        kind, w, _ = parse_token(tok)
        if kind != 'pool':
            return w
    return in_channels


def _gpool(tokens: Sequence[str]) -> int:
    return max(i for i, t in enumerate(tokens) if t == 'pool')


def block_layout(tokens: Sequence[str], n_blocks: int = N_BLOCKS, fc_block: str = 'code') -> list[list[int]]:
    """Token positions of the layers of each block; ``n_blocks`` lists, the last is the fc block.

    Conv block ``j`` holds the conv layers between pool ``j-1`` and pool ``j``; the fc block holds
    the fc layers after the last (global) pool, preceded by the global pool's own position with
    ``fc_block='paper'`` or when there is no fc layer (a deeper action there inserts the first FC
    right after the global pool; see :data:`FC_BLOCK_MODES`). Unused conv blocks are empty lists.

    >>> block_layout(['conv-16-3', 'pool', 'conv-32-3', 'pool'])
    [[0], [2], [], [], [3]]
    >>> block_layout(['conv-16-3', 'pool', 'fc-64'], fc_block='paper')
    [[0], [], [], [], [1, 2]]
    """
    if fc_block not in FC_BLOCK_MODES:
        raise ValueError(f'block_layout: fc_block must be one of {FC_BLOCK_MODES}, got {fc_block!r}')
    pools = [i for i, t in enumerate(tokens) if t == 'pool']
    if not pools:
        raise ValueError("block_layout: token list needs a final 'pool' (global pool)")
    if len(pools) > n_blocks - 1:
        raise ValueError(f'block_layout: {len(pools)} conv blocks, at most {n_blocks - 1} supported')
    blocks: list[list[int]] = [[] for _ in range(n_blocks)]
    b = 0
    for i, t in enumerate(tokens):
        kind = parse_token(t)[0]
        if kind == 'pool':
            b += 1
        elif kind == 'conv':
            if i > pools[-1]:
                raise ValueError(f'block_layout: conv token {t!r} after the global pool')
            blocks[b].append(i)
        else:
            if i < pools[-1]:
                raise ValueError(f'block_layout: fc token {t!r} before the global pool')
            blocks[-1].append(i)
    if fc_block == 'paper' or not blocks[-1]:
        blocks[-1].insert(0, pools[-1])
    return blocks


def transform_tokens(tokens: list[str], ops: list[dict], in_channels: int = 3) -> list[str]:
    """The child's token list after ``ops`` (validated; errors name ``init.ops[k]``)."""
    tokens = list(tokens)
    for k, op in enumerate(ops):
        field = f'init.ops[{k}]'
        if not isinstance(op, dict) or op.get('op') not in ('wider', 'deeper'):
            raise ConfigError(field, f'expected a wider/deeper operation, got {op!r}', allowed=['wider', 'deeper'])
        if op['op'] == 'wider':
            i, w = op.get('layer'), op.get('width')
            if not isinstance(i, int) or not 0 <= i < len(tokens) or parse_token(tokens[i])[0] == 'pool':
                raise ConfigError(f'{field}.layer', f'{i!r} is not a conv/fc layer of {tokens}')
            old = int(tokens[i].split('-')[1])
            if not isinstance(w, int) or w < old:
                raise ConfigError(f'{field}.width', f'{w!r} must be an integer >= the current width {old}')
            parts = tokens[i].split('-')
            parts[1] = str(w)
            tokens[i] = '-'.join(parts)
        else:
            i = op.get('after')
            if not isinstance(i, int) or not 0 <= i < len(tokens):
                raise ConfigError(f'{field}.after', f'{i!r} is not a layer index of {tokens}')
            width = _width(tokens, i, in_channels)
            if i >= _gpool(tokens):
                tokens.insert(i + 1, f'fc-{width}')
            else:
                k = op.get('kernel', 3)
                if k not in (1, 3, 5, 7):
                    raise ConfigError(f'{field}.kernel', f'{k!r}', allowed=[1, 3, 5, 7])
                tokens.insert(i + 1, f'conv-{width}-{k}')
    return tokens


def token_vocabulary(conv_widths: Sequence[int], kernels: Sequence[int], fc_units: Sequence[int]) -> list[str]:
    """Every token of a space, in the EAS controller's embedding order: ``conv-<w>-<k>`` (widths,
    then kernels), ``fc-<u>``, ``pool``.

    >>> token_vocabulary([16, 32], [3], [64])
    ['conv-16-3', 'conv-32-3', 'fc-64', 'pool']
    """
    return ([f'conv-{int(w)}-{int(k)}' for w in conv_widths for k in kernels]
            + [f'fc-{int(u)}' for u in fc_units] + ['pool'])


def next_width(tok: str, conv_widths: list[int], fc_units: list[int]) -> int:
    w = int(tok.split('-')[1])
    choices = conv_widths if tok.startswith('conv-') else fc_units
    return min(c for c in choices if c > w)


def widenable(tokens: Sequence[str], conv_widths: Sequence[int], fc_units: Sequence[int]) -> list[int]:
    """Positions of conv/fc layers below the maximum of their width list."""
    cmax, fmax = max(conv_widths), (max(fc_units) if len(fc_units) else -1)
    out = []
    for i, tok in enumerate(tokens):
        kind, w, _ = parse_token(tok)
        if (kind == 'conv' and w < cmax) or (kind == 'fc' and w < fmax):
            out.append(i)
    return out


def wider_ops(tokens: Sequence[str], decisions: Sequence[int], conv_widths: Sequence[int],
              fc_units: Sequence[int]) -> list[dict]:
    """``wider`` ops of one wider step: each layer with decision 1 moves one step up its width list
    (``decisions`` may be padded; a 1 on a pool or on a maximal layer is an error)."""
    decisions = [int(d) for d in list(decisions)[:len(tokens)]]
    if len(decisions) < len(tokens):
        raise ValueError('wider_ops: fewer decisions than tokens')
    ok = set(widenable(tokens, conv_widths, fc_units))
    ops = []
    for i, (tok, d) in enumerate(zip(tokens, decisions)):
        if not d:
            continue
        if i not in ok:
            raise ValueError(f'wider_ops: cannot widen {tok!r} (a pool, or already at its maximum width)')
        kind, w, _ = parse_token(tok)
        if w not in (conv_widths if kind == 'conv' else fc_units):
            raise ValueError(f'wider_ops: width of {tok!r} is not in its width list')
        ops.append({'op': 'wider', 'layer': i, 'width': next_width(tok, list(conv_widths), list(fc_units))})
    return ops


def deeper_ops(tokens: Sequence[str], decision, n_blocks: int = N_BLOCKS, fc_block: str = 'code',
               fc_units: Sequence[int] | None = None) -> list[dict]:
    """The ``deeper`` op of a (block, layer, kernel) decision: a new layer right after that layer
    (``conv-<C>-<kernel>`` in a conv block, ``fc-<units>`` in the fc block).

    Right after the global pool (``fc_block`` position of :func:`block_layout`) the new FC is an
    identity of the pooled width ``C``; when ``C`` is not in ``fc_units`` a ``wider`` op follows
    that takes it to the smallest listed width above ``C`` (both function-preserving).
    """
    block, layer, kernel = (int(x) if x is not None else 3 for x in tuple(decision)[:3])
    blocks = block_layout(tokens, n_blocks, fc_block)
    if not 0 <= block < n_blocks or not 0 <= layer < len(blocks[block]):
        raise ValueError(f'deeper_ops: no layer {layer} in block {block} (block sizes {[len(b) for b in blocks]})')
    after = blocks[block][layer]
    ops = [{'op': 'deeper', 'after': after, 'kernel': kernel}]
    units = list(fc_units) if fc_units is not None else FC_UNITS
    if tokens[after] == 'pool':  # the global pool: a first FC of the pooled width, then up to a listed width
        c = _width(tokens, after, 3)  # as transform_tokens' default (a start without conv layers)
        if c not in units:
            above = [u for u in units if u > c]
            if not above:
                raise ValueError(f'deeper_ops: no fc width >= {c} in {sorted(units)} for an FC after the global pool')
            ops.append({'op': 'wider', 'layer': after + 1, 'width': min(above)})
    return ops


def apply_wider(tokens: Sequence[str], decisions: Sequence[int], conv_widths: Sequence[int],
                fc_units: Sequence[int]) -> list[str]:
    """Tokens after a wider step (:func:`wider_ops` then :func:`transform_tokens`)."""
    return transform_tokens(list(tokens), wider_ops(tokens, decisions, conv_widths, fc_units))


def apply_deeper(tokens: Sequence[str], decision, n_blocks: int = N_BLOCKS, fc_block: str = 'code',
                 fc_units: Sequence[int] | None = None) -> list[str]:
    """Tokens after a deeper step (:func:`deeper_ops` then :func:`transform_tokens`)."""
    return transform_tokens(list(tokens), deeper_ops(tokens, decision, n_blocks, fc_block, fc_units))


class PlainEASOps:
    """EAS operators of this space: start point, controller tokens, decisions -> ops, ops -> child.

    Plain data in, plain data out; the ``eas``/``eas_random`` strategies call these without
    knowing which space they search. Also the controller's token grammar
    (:class:`nni_xfer.strategies.eas.controller.TokenGrammar`: ``vocabulary``, ``max_len``,
    ``n_blocks``, ``max_layers``, ``deeper_kernels``, :meth:`widenable`, :meth:`layout`).
    """

    default_steps = (4, 5)  # wider, deeper steps per network (the paper's plain-CNN setting)
    max_len = MAX_LEN
    max_layers = MAX_LAYERS
    #: strategy options this space takes (``strategy_args.<name>``): allowed values, default first
    options = {'fc_block': FC_BLOCK_MODES}

    def __init__(self, info, fc_block: str = 'code'):
        self.info = info
        self.conv_widths, self.fc_units = list(info.extra['conv_widths']), list(info.extra['fc_units'])
        self.kernels = list(info.extra['kernels'])
        if fc_block not in FC_BLOCK_MODES:
            raise ConfigError('strategy_args.fc_block', f'{fc_block!r} is not an fc block mode',
                              allowed=list(FC_BLOCK_MODES))
        self.fc_block = fc_block
        start = list(info.extra['start']['layers'])
        # deeper actions never add pools: the block head covers the start's conv blocks + the fc block
        self.n_blocks = max(N_BLOCKS, start.count('pool') + 1)
        self.vocabulary = token_vocabulary(self.conv_widths, self.kernels, self.fc_units)
        self.deeper_kernels = tuple(self.kernels)
        has_fc = any(parse_token(t)[0] == 'fc' for t in start)
        if (fc_block == 'paper' or not has_fc) and max(self.conv_widths) > max(self.fc_units, default=0):
            raise ConfigError('space_args.fc_units', f'an FC inserted after the global pool takes the pooled width '
                              f'(up to {max(self.conv_widths)} channels), more than the largest fc width '
                              f'{max(self.fc_units, default=0)}; add a larger fc width or start with an fc layer')

    def start(self) -> dict:
        return {'layers': list(self.info.extra['start']['layers'])}

    def tokens(self, arch: dict) -> list[str]:
        return list(arch['layers'])

    def apply(self, arch: dict, ops: list[dict]) -> dict:
        return {'layers': transform_tokens(arch['layers'], ops)}

    def finish(self, arch: dict) -> list[dict]:
        return []

    def widenable(self, tokens: Sequence[str]) -> list[int]:
        return widenable(tokens, self.conv_widths, self.fc_units)

    def wider_ops(self, tokens: Sequence[str], decisions: Sequence[int]) -> list[dict]:
        return wider_ops(tokens, decisions, self.conv_widths, self.fc_units)

    def layout(self, tokens: Sequence[str]) -> list[list[int]]:
        return block_layout(tokens, self.n_blocks, self.fc_block)

    def deeper_ops(self, tokens: Sequence[str], decision) -> list[dict]:
        return deeper_ops(tokens, decision, self.n_blocks, self.fc_block, self.fc_units)

    def random_deeper(self, tokens: Sequence[str], rng) -> tuple[list[dict], None]:
        """A uniform non-empty block of :meth:`layout` (the fc block: after an FC, or after the global
        pool when it has no FC or with ``fc_block: paper``), a uniform position in it, a uniform kernel."""
        blocks = self.layout(tokens)
        nonempty = [b for b in range(len(blocks)) if blocks[b]]
        b = nonempty[int(rng.integers(len(nonempty)))]
        layer = int(rng.integers(len(blocks[b])))
        kernel = self.kernels[int(rng.integers(len(self.kernels)))]
        return self.deeper_ops(tokens, (b, layer, kernel)), None


# --------------------------------------------------------------------------- network

class PlainCNNNet(nn.Module):
    """The network of one token list."""

    def __init__(self, layers, in_channels: int = 3, num_classes: int = 10, **limits):
        super().__init__()
        self.tokens = list(layers)
        mods: list[nn.Module] = []
        c = in_channels
        for kind, width, kernel in parse_layers(self.tokens, **limits):
            if kind == 'conv':
                mods.append(nn.Sequential(nn.Conv2d(c, width, kernel, padding=kernel // 2, bias=False),
                                          nn.BatchNorm2d(width), nn.ReLU(inplace=True)))
                c = width
            elif kind == 'pool':
                mods.append(nn.MaxPool2d(2, ceil_mode=True))
            elif kind == 'gpool':
                mods.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
            else:
                mods.append(nn.Sequential(nn.Linear(c, width), nn.BatchNorm1d(width),
                                          nn.ReLU(inplace=True)))
                c = width
        self.layers = nn.ModuleList(mods)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x)


# --------------------------------------------------------------------------- Net2Net on the network

def _weighted(layer: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(conv or linear, its BN) of a token module."""
    return layer[0], layer[1]


def transform_network(net: nn.Module, ops: list[dict], *, noise: bool = True,
                      generator: torch.Generator | None = None) -> nn.Module:
    """Apply ``ops`` to a :class:`PlainCNNNet` (a new network).

    Inserted BNs are eval-mode identities flagged ``needs_calibration``; call
    :func:`nni_xfer.transfer.net2net.calibrate_inserted` with real images afterwards.
    """
    net = copy.deepcopy(net)
    in_channels = net.layers[0][0].in_channels if parse_token(net.tokens[0])[0] == 'conv' else None
    for op in ops:
        tokens = net.tokens
        new_tokens = transform_tokens(tokens, [op], in_channels or 3)
        layers = list(net.layers)
        if op['op'] == 'wider':
            i = op['layer']
            j = next((j for j in range(i + 1, len(tokens)) if parse_token(tokens[j])[0] != 'pool'), None)
            layer, bn = _weighted(layers[i])
            nxt = layers[j][0] if j is not None else net.classifier
            fn = net2wider_conv if isinstance(layer, nn.Conv2d) else net2wider_linear
            res = fn(layer, bn, nxt, op['width'], noise=WIDER_NOISE if noise else 0.0, generator=generator)
            layers[i] = nn.Sequential(res.layer, res.bn, nn.ReLU(inplace=True))
            if j is not None:
                layers[j] = nn.Sequential(res.next_layer, *list(layers[j])[1:])
            else:
                net.classifier = res.next_layer
        else:
            i = op['after']
            width = _width(tokens, i, in_channels or 3)
            if i >= _gpool(tokens):
                block = net2deeper_linear(width, noise=DEEPER_NOISE if noise else 0.0, generator=generator)
            else:
                block = net2deeper_conv(width, op.get('kernel', 3), noise=DEEPER_NOISE if noise else 0.0,
                                        generator=generator)
            layers.insert(i + 1, block)
        net.layers = nn.ModuleList(layers)
        net.tokens = new_tokens
    return net


@SEARCH_SPACES.register('eas_plain_cnn', description='EAS plain CNN: variable conv/pool/FC chains (paper Table 1 start)')
class EASPlainCNN(XferSpace):
    """Space of EAS plain CNNs; samples are ``{'layers': [...]}``, the start point is ``start``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 conv_widths: list[int] = tuple(CONV_WIDTHS), kernels: list[int] = tuple(KERNELS),
                 fc_units: list[int] = tuple(FC_UNITS), start: list[str] = tuple(PAPER_START)):
        super().__init__()
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.limits = {'conv_widths': sorted(int_list(conv_widths, 'space_args.conv_widths')),
                       'kernels': sorted(int_list(kernels, 'space_args.kernels', odd=True)),
                       'fc_units': sorted(int_list(fc_units, 'space_args.fc_units'))}
        parse_layers(list(start), field='space_args.start', **self.limits)
        self.start = list(start)

    def freeze(self, sample: dict) -> nn.Module:
        if not isinstance(sample, dict) or 'layers' not in sample:
            raise ConfigError('architecture', "expected {'layers': [tokens]}")
        return PlainCNNNet(sample['layers'], self.in_channels, self.num_classes, **self.limits)

    eas_operators = PlainEASOps

    def example(self) -> dict:
        return {'layers': list(self.start)}

    @staticmethod
    def net2net_transform(net: nn.Module, ops: list[dict], *, noise: bool = True,
                          generator: torch.Generator | None = None) -> nn.Module:
        return transform_network(net, ops, noise=noise, generator=generator)

    @staticmethod
    def architecture_of(net: nn.Module) -> dict:
        return {'layers': list(net.tokens)}

    def xfer_space_info(self, info):
        info.extra.update(kind='eas_plain_cnn', start={'layers': self.start}, **self.limits)
        return info

    @staticmethod
    def portal_summary(architecture: dict) -> dict:
        """What NNI's web portal plots (nni_xfer.spec.portal_summary), numbers only: depth (weighted
        layers), conv/fc layer and pool counts, the widest conv, all conv filters, the mean conv kernel
        and all FC units (0 without FC). The layers themselves stay in the trial's parameters."""
        parsed = [parse_token(t) for t in architecture['layers']]
        convs = [(w, k) for kind, w, k in parsed if kind == 'conv']
        fcs = [w for kind, w, _ in parsed if kind == 'fc']
        return {'depth': len(convs) + len(fcs), 'conv_layers': len(convs), 'fc_layers': len(fcs),
                'pools': sum(kind == 'pool' for kind, _, _ in parsed),
                'widest_conv': max((w for w, _ in convs), default=0), 'conv_filters': sum(w for w, _ in convs),
                'kernel_mean': round(sum(k for _, k in convs) / len(convs), 2) if convs else 0,
                'fc_units': sum(fcs)}
