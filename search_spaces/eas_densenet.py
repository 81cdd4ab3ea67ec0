"""EAS DenseNet space: pre-activation DenseNet-BC (bottleneck 4, compression 0.5), per-layer growth.

An architecture is ``{'growths': [[k, ...], ...], 'stem': C, 'transitions': [C, ...]}``: the growth
of every dense layer per block, the stem conv width and each transition's output width (kept
explicitly because widening changes them independently of the growths). Default start point: the
paper's DenseNet-BC L=40, k=40 (3 blocks × 6 layers, stem 80, transitions by compression 0.5);
growth rates {40, 44, ..., 64}.

The module owns the space's grammar: :func:`check_architecture` (the one validator),
the controller's token view (:func:`densenet_tokens`: ``g<k>`` per dense layer, ``t`` per
transition; :func:`parse_dense_token`, :func:`densenet_layout`, :func:`densenet_positions`), the
pure architecture operators (:func:`transform_densenet_arch`, :func:`densenet_finish_ops`) and
:class:`DenseNetEASOps`, the space's EAS operators that strategies look up through the space
class (``EASDenseNet.eas_operators``). The function-preserving weight transforms are
:mod:`nni_xfer.transfer.densenet`; :meth:`EASDenseNet.net2net_transform` applies a sequence.
"""
from __future__ import annotations

import copy
import re
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace, int_list

TRANSITION = 't'
DENSE_N_BLOCKS = 3  # the controller's block head covers at least the paper's 3 dense blocks
DENSE_MAX_LAYERS = 20  # the controller's position head: a deeper decision picks one of a block's first 20 layers
DENSE_MAX_LEN = 64  # the controller's padding length: 3 blocks x 20 layers + 2 transitions fit
_DENSE = re.compile(r'^g(\d+)$')

GROWTHS = list(range(40, 65, 4))
#: Net2Deeper schemes: ``duplicate`` (the authors' code; default) and ``eq5``
#: (the paper's Eq. 5 identity filters; :func:`nni_xfer.transfer.densenet.densenet_deeper_eq5`).
DEEPER_SCHEMES = ('duplicate', 'eq5')


def paper_start(growth: int = 40, layers: int = 6, blocks: int = 3, compression: float = 0.5) -> dict:
    c = 2 * growth
    transitions = []
    for b in range(blocks):
        c += growth * layers
        if b < blocks - 1:
            c = int(compression * c)
            transitions.append(c)
    return {'growths': [[growth] * layers for _ in range(blocks)], 'stem': 2 * growth, 'transitions': transitions}


def check_architecture(arch, growth_rates=None, field: str = 'architecture') -> dict:
    if not isinstance(arch, dict) or set(arch) != {'growths', 'stem', 'transitions'}:
        raise ConfigError(field, "expected {'growths': [[...], ...], 'stem': int, 'transitions': [...]}")
    g = arch['growths']
    if not isinstance(g, list) or not g or any(not isinstance(b, list) or not b for b in g):
        raise ConfigError(f'{field}.growths', 'expected a non-empty list of non-empty lists')
    for bi, block in enumerate(g):
        for li, k in enumerate(block):
            if not isinstance(k, int) or k < 1 or (growth_rates is not None and k not in growth_rates):
                raise ConfigError(f'{field}.growths[{bi}][{li}]', f'{k!r} is not an allowed growth',
                                  allowed=growth_rates)
    if not isinstance(arch['stem'], int) or arch['stem'] < 1:
        raise ConfigError(f'{field}.stem', f'expected a positive integer, got {arch["stem"]!r}')
    t = arch['transitions']
    if not isinstance(t, list) or len(t) != len(g) - 1 or any(not isinstance(c, int) or c < 1 for c in t):
        raise ConfigError(f'{field}.transitions', f'expected {len(g) - 1} positive integers, got {t!r}')
    return arch


# --------------------------------------------------------------------------- network

class DenseLayer(nn.Module):
    """``BN-ReLU-Conv1x1(bottleneck)-BN-ReLU-Conv3x3(growth)``; returns only the new features."""

    def __init__(self, in_channels: int, growth: int, bottleneck_width: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck_width)
        self.conv2 = nn.Conv2d(bottleneck_width, growth, 3, padding=1, bias=False)

    @property
    def growth(self) -> int:
        return self.conv2.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class DenseBlock(nn.Module):
    """Dense layers whose outputs are concatenated onto the running feature map."""

    def __init__(self, in_channels: int, growths: Sequence[int], bottleneck: int = 4):
        super().__init__()
        layers, c = [], in_channels
        for k in growths:
            layers.append(DenseLayer(c, k, bottleneck * k))
            c += k
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class Transition(nn.Module):
    """``BN-ReLU-Conv1x1-AvgPool2`` between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.norm(x))))


class DenseNetBC(nn.Module):
    """Pre-activation DenseNet-BC with per-layer growth.

    Args:
        growths: growth rate of every dense layer, one list per block.
        in_channels: image channels.
        num_classes: classifier outputs.
        stem_channels: stem conv filters (default ``2 × growths[0][0]``, as in DenseNet-BC).
        compression: transition output = ``int(compression × input channels)``.
        transition_channels: explicit transition outputs (one per transition); overrides
            ``compression`` — a widened network keeps its transitions, so rebuilding it needs them.
        bottleneck: bottleneck width factor ``b`` (1×1 conv has ``b·k`` filters).
    """

    def __init__(self, growths: Sequence[Sequence[int]], *, in_channels: int = 3, num_classes: int = 10,
                 stem_channels: int | None = None, compression: float = 0.5, bottleneck: int = 4,
                 transition_channels: Sequence[int] | None = None):
        super().__init__()
        if not growths or any(not g for g in growths):
            raise ConfigError('growths', 'needs at least one block with at least one layer')
        if transition_channels is not None and len(transition_channels) != len(growths) - 1:
            raise ConfigError('transition_channels', f'expected {len(growths) - 1} values, got {transition_channels!r}')
        self.bottleneck = bottleneck
        c = stem_channels or 2 * growths[0][0]
        self.stem = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        blocks, transitions = [], []
        for b, g in enumerate(growths):
            blocks.append(DenseBlock(c, g, bottleneck))
            c += sum(g)
            if b < len(growths) - 1:
                out = transition_channels[b] if transition_channels is not None else max(1, int(compression * c))
                transitions.append(Transition(c, out))
                c = out
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def architecture(self) -> dict:
        """Everything needed to rebuild this network: growths, stem and transition widths."""
        return {'growths': self.growths(), 'stem': self.stem.out_channels,
                'transitions': [t.conv.out_channels for t in self.transitions]}

    def growths(self) -> list[list[int]]:
        """Current growth of every dense layer, per block."""
        return [[layer.growth for layer in block.layers] for block in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b, block in enumerate(self.blocks):
            x = block(x)
            if b < len(self.transitions):
                x = self.transitions[b](x)
        x = F.adaptive_avg_pool2d(F.relu(self.norm(x)), 1).flatten(1)
        return self.fc(x)


# --------------------------------------------------------------------------- grammar

def densenet_tokens(arch: dict) -> list[str]:
    """Token list of a DenseNet architecture dict: ``g<k>`` per dense layer, ``t`` per transition.

    The stem (and the transition widths) are not encoded — see the module docstring.

    >>> densenet_tokens({'growths': [[4, 6], [4]], 'stem': 8, 'transitions': [8]})
    ['g4', 'g6', 't', 'g4']
    """
    tokens: list[str] = []
    for b, block in enumerate(arch['growths']):
        if b:
            tokens.append(TRANSITION)
        tokens.extend(f'g{int(k)}' for k in block)
    return tokens


def parse_dense_token(token: str) -> tuple[str, int | None]:
    """``('dense', growth)`` or ``('transition', None)``."""
    if token == TRANSITION:
        return 'transition', None
    m = _DENSE.match(str(token))
    if m:
        return 'dense', int(m.group(1))
    raise ValueError(f'unknown DenseNet token {token!r}')


def token_vocabulary(growths: Sequence[int]) -> list[str]:
    """Every token of a space, in the EAS controller's embedding order: ``g<k>`` (growths ascending), ``t``.

    >>> token_vocabulary([8, 4, 6])
    ['g4', 'g6', 'g8', 't']
    """
    return [f'g{k}' for k in sorted({int(k) for k in growths})] + [TRANSITION]


def densenet_layout(tokens: Sequence[str], n_blocks: int = DENSE_N_BLOCKS) -> list[list[int]]:
    """Token positions of the dense layers of each block (``n_blocks`` lists; missing blocks empty)."""
    blocks: list[list[int]] = [[]]
    for i, t in enumerate(tokens):
        if parse_dense_token(t)[0] == 'transition':
            blocks.append([])
        else:
            blocks[-1].append(i)
    if len(blocks) > n_blocks:
        raise ValueError(f'densenet_layout: {len(blocks)} dense blocks, at most {n_blocks} supported')
    return blocks + [[] for _ in range(n_blocks - len(blocks))]


def densenet_positions(tokens: Sequence[str]) -> list[tuple[int, int] | None]:
    """Per token: ``(block, layer)`` of a dense layer, ``None`` for a transition."""
    out: list[tuple[int, int] | None] = []
    b, l = 0, 0
    for t in tokens:
        if parse_dense_token(t)[0] == 'transition':
            out.append(None)
            b, l = b + 1, 0
        else:
            out.append((b, l))
            l += 1
    return out


def transform_densenet_arch(arch: dict, ops: list[dict]) -> dict:
    """The child's DenseNet architecture dict after ``ops`` (pure; validated like
    :func:`transform_densenet`, errors name ``init.ops[k]``).

    ``wider`` sets the layer's growth, ``deeper`` inserts a copy of the chosen layer's growth right
    after it (either ``scheme``), ``widen_stem``/``widen_transition`` set that width; transition widths never change
    otherwise. ``transform_densenet(net, ops).architecture() == transform_densenet_arch(arch, ops)``.
    """
    growths = [list(b) for b in arch['growths']]
    stem, transitions = arch['stem'], list(arch['transitions'])

    def index(field, value, n, what):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
            raise ConfigError(field, f'{value!r} is not a {what} index (0..{n - 1})')
        return value

    def width(field, value, old):
        if not isinstance(value, int) or isinstance(value, bool) or value < old:
            raise ConfigError(field, f'{value!r} must be an integer >= the current width {old}')
        return value

    kinds = ['wider', 'deeper', 'widen_stem', 'widen_transition']
    for k, op in enumerate(ops):
        field = f'init.ops[{k}]'
        kind = op.get('op') if isinstance(op, dict) else None
        if kind not in kinds:
            raise ConfigError(field, f'unknown DenseNet operation {op!r}', allowed=kinds)
        needed = {'wider': ('block', 'layer', 'growth'), 'deeper': ('block', 'layer'),
                  'widen_stem': ('channels',), 'widen_transition': ('index', 'channels')}[kind]
        for key in needed:
            if key not in op:
                raise ConfigError(f'{field}.{key}', 'missing')
        if kind in ('wider', 'deeper'):
            b = index(f'{field}.block', op['block'], len(growths), 'block')
            l = index(f'{field}.layer', op['layer'], len(growths[b]), f'layer (block {b})')
            if kind == 'wider':
                growths[b][l] = width(f'{field}.growth', op['growth'], growths[b][l])
            else:
                if op.get('scheme', 'duplicate') not in DEEPER_SCHEMES:
                    raise ConfigError(f'{field}.scheme', f'{op["scheme"]!r} is not a deeper scheme',
                                      allowed=list(DEEPER_SCHEMES))
                growths[b].insert(l + 1, growths[b][l])
        elif kind == 'widen_stem':
            stem = width(f'{field}.channels', op['channels'], stem)
        else:
            i = index(f'{field}.index', op['index'], len(transitions), 'transition')
            transitions[i] = width(f'{field}.channels', op['channels'], transitions[i])
    return {'growths': growths, 'stem': stem, 'transitions': transitions}


def next_growth(k: int, growth_rates: list[int]) -> int:
    return min(g for g in growth_rates if g > k)


def densenet_finish_ops(arch: dict) -> list[dict]:
    """Episode-end widening of a DenseNet child (the EAS authors' code), in application order.

    The stem goes to ``int(2 × mean growth)`` of all dense layers; then, block by block, each
    transition goes to ``int(0.5 × its input channels)`` (input = the block's input width, already
    widened, plus the block's growths). Only widths that grow give an op.
    """
    flat = [k for block in arch['growths'] for k in block]
    ops: list[dict] = []
    c = arch['stem']
    target = (2 * sum(flat)) // len(flat)
    if target > c:
        ops.append({'op': 'widen_stem', 'channels': target})
        c = target
    for i, t in enumerate(arch['transitions']):
        target = (c + sum(arch['growths'][i])) // 2
        if target > t:
            ops.append({'op': 'widen_transition', 'index': i, 'channels': target})
            t = target
        c = t
    return ops


def wider_ops(tokens: Sequence[str], decisions: Sequence[int], growth_rates: Sequence[int]) -> list[dict]:
    """``wider`` ops of one wider step: each dense layer with decision 1 moves one step up the
    growth list (``decisions`` may be padded; a 1 on a transition or a maximal layer is an error)."""
    decisions = [int(d) for d in list(decisions)[:len(tokens)]]
    if len(decisions) < len(tokens):
        raise ValueError('wider_ops: fewer decisions than tokens')
    ops = []
    for tok, pos, d in zip(tokens, densenet_positions(tokens), decisions):
        if not d:
            continue
        if pos is None:
            raise ValueError(f'wider_ops: cannot widen {tok!r}')
        k = parse_dense_token(tok)[1]
        if k not in growth_rates or k >= max(growth_rates):
            raise ValueError(f'wider_ops: {tok!r} cannot move up the growth list {sorted(growth_rates)}')
        ops.append({'op': 'wider', 'block': pos[0], 'layer': pos[1], 'growth': next_growth(k, list(growth_rates))})
    return ops


def deeper_ops(tokens: Sequence[str], decision, n_blocks: int | None = None,
               scheme: str = 'duplicate') -> list[dict]:
    """The ``deeper`` op of a (block, layer) decision: a new layer of the chosen layer's growth
    right after it — a duplicate of it (``scheme='duplicate'``) or Eq. 5's replication of input
    channels (``'eq5'``, recorded in the op as ``'scheme': 'eq5'``)."""
    block, layer = (int(x) for x in tuple(decision)[:2])
    blocks = densenet_layout(tokens, n_blocks or max(DENSE_N_BLOCKS, list(tokens).count(TRANSITION) + 1))
    if not 0 <= block < len(blocks) or not 0 <= layer < len(blocks[block]):
        raise ValueError(f'deeper_ops: no layer {layer} in block {block} (block sizes {[len(b) for b in blocks]})')
    op = {'op': 'deeper', 'block': block, 'layer': layer}
    if scheme != 'duplicate':
        op['scheme'] = scheme
    return [op]


def tokens_after(tokens: Sequence[str], ops: list[dict]) -> list[str]:
    """Token view of :func:`transform_densenet_arch` (stem/transition widths do not show in tokens)."""
    growths: list[list[int]] = [[]]
    for t in tokens:
        kind, k = parse_dense_token(t)
        if kind == 'transition':
            growths.append([])
        else:
            growths[-1].append(k)
    n = len(growths)
    arch = {'growths': growths, 'stem': 1, 'transitions': [1] * (n - 1)}
    return densenet_tokens(transform_densenet_arch(arch, ops))


def apply_densenet_wider(tokens: Sequence[str], decisions: Sequence[int], growths: Sequence[int]) -> list[str]:
    """Tokens after a wider step (:func:`wider_ops` then :func:`transform_densenet_arch`)."""
    return tokens_after(tokens, wider_ops(tokens, decisions, growths))


def apply_densenet_deeper(tokens: Sequence[str], decision, n_blocks: int = DENSE_N_BLOCKS) -> list[str]:
    """Tokens after a deeper step (:func:`deeper_ops` then :func:`transform_densenet_arch`)."""
    return tokens_after(tokens, deeper_ops(tokens, decision, n_blocks))


class DenseNetEASOps:
    """EAS operators of this space: start point, controller tokens, decisions -> ops, ops -> child.

    Plain data in, plain data out; the ``eas``/``eas_random`` strategies call these without
    knowing which space they search. Also the controller's token grammar
    (:class:`nni_xfer.strategies.eas.controller.TokenGrammar`).
    """

    default_steps = (10, 5)  # wider, deeper steps per network (the paper's DenseNet setting)
    max_len = DENSE_MAX_LEN
    max_layers = DENSE_MAX_LAYERS
    deeper_kernels = ()  # a deeper step duplicates a layer: no kernel decision
    #: strategy options this space takes (``strategy_args.<name>``): allowed values, default first
    options = {'dense_deeper': DEEPER_SCHEMES}

    def __init__(self, info, dense_deeper: str = 'duplicate'):
        self.info = info
        if dense_deeper not in DEEPER_SCHEMES:
            raise ConfigError('strategy_args.dense_deeper', f'{dense_deeper!r} is not a deeper scheme',
                              allowed=list(DEEPER_SCHEMES))
        self.dense_deeper = dense_deeper
        rates = info.extra.get('growth_rates')
        if not rates:
            raise ConfigError('space', 'eas_densenet space info lacks growth_rates')
        self.growth_rates = sorted(rates)
        bad = sorted({k for b in info.extra['start']['growths'] for k in b} - set(rates))
        if bad:
            raise ConfigError('space_args.start', f'growths {bad} are not in growth_rates', allowed=self.growth_rates)
        self.n_blocks = max(DENSE_N_BLOCKS, len(info.extra['start']['growths']))
        self.vocabulary = token_vocabulary(self.growth_rates)

    def start(self) -> dict:
        return copy.deepcopy(self.info.extra['start'])

    def tokens(self, arch: dict) -> list[str]:
        return densenet_tokens(arch)

    def apply(self, arch: dict, ops: list[dict]) -> dict:
        return transform_densenet_arch(arch, ops)

    def finish(self, arch: dict) -> list[dict]:
        return densenet_finish_ops(arch)

    def widenable(self, tokens: Sequence[str]) -> list[int]:
        gmax = max(self.growth_rates)
        return [i for i, (t, p) in enumerate(zip(tokens, densenet_positions(tokens)))
                if p is not None and parse_dense_token(t)[1] < gmax]

    def wider_ops(self, tokens: Sequence[str], decisions: Sequence[int]) -> list[dict]:
        return wider_ops(tokens, decisions, self.growth_rates)

    def layout(self, tokens: Sequence[str]) -> list[list[int]]:
        return densenet_layout(tokens, self.n_blocks)

    def deeper_ops(self, tokens: Sequence[str], decision) -> list[dict]:
        return deeper_ops(tokens, decision, self.n_blocks, self.dense_deeper)

    def random_deeper(self, tokens: Sequence[str], rng) -> tuple[list[dict], list[int]]:
        """A uniform non-empty block and a uniform layer in it."""
        blocks = self.layout(tokens)
        nonempty = [b for b in range(len(blocks)) if blocks[b]]
        b = nonempty[int(rng.integers(len(nonempty)))]
        layer = int(rng.integers(len(blocks[b])))
        return self.deeper_ops(tokens, (b, layer)), [b, layer]


# --------------------------------------------------------------------------- Net2Net on the network

DENSENET_NOISE = 1e-2


def transform_densenet(net: nn.Module, ops: list[dict], *, noise: bool = True,
                       generator: torch.Generator | None = None) -> nn.Module:
    """Apply DenseNet ops to a :class:`DenseNetBC` (a new network).

    Ops: ``{'op': 'wider', 'block': b, 'layer': l, 'growth': k}`` (paper Eq. 4),
    ``{'op': 'deeper', 'block': b, 'layer': l}`` (duplicate layer, the authors' code; with
    ``'scheme': 'eq5'`` the paper's Eq. 5 layer replicating input channels),
    ``{'op': 'widen_stem', 'channels': c}``, ``{'op': 'widen_transition', 'index': i, 'channels': c}``.
    The weights move through :mod:`nni_xfer.transfer.densenet`, function-preserving:

    >>> _ = torch.manual_seed(0)
    >>> net = DenseNetBC([[4, 4], [4]], in_channels=3, num_classes=5).eval()
    >>> ops = [{'op': 'wider', 'block': 0, 'layer': 0, 'growth': 6}, {'op': 'deeper', 'block': 0, 'layer': 1}]
    >>> new = transform_densenet(net, ops, noise=False, generator=torch.Generator().manual_seed(0)).eval()
    >>> [len(b.layers) for b in new.blocks], new.growths()
    ([3, 1], [[6, 4, 4], [4]])
    >>> x = torch.randn(2, 3, 8, 8)
    >>> torch.allclose(net(x), new(x), atol=1e-5)
    True
    """
    from nni_xfer.transfer.densenet import (densenet_deeper, densenet_deeper_eq5, densenet_wider,
                                            densenet_widen_stem, densenet_widen_transition)
    eps = DENSENET_NOISE if noise else 0.0
    for k, op in enumerate(ops):
        field = f'init.ops[{k}]'
        kind = op.get('op') if isinstance(op, dict) else None
        try:
            if kind == 'wider':
                net = densenet_wider(net, op['block'], op['layer'], op['growth'], noise=eps, generator=generator)
            elif kind == 'deeper':
                scheme = op.get('scheme', 'duplicate')
                if scheme not in DEEPER_SCHEMES:
                    raise ConfigError(f'{field}.scheme', f'{scheme!r} is not a deeper scheme',
                                      allowed=list(DEEPER_SCHEMES))
                deeper = densenet_deeper_eq5 if scheme == 'eq5' else densenet_deeper
                net = deeper(net, op['block'], op['layer'], noise=eps, generator=generator)
            elif kind == 'widen_stem':
                net = densenet_widen_stem(net, op['channels'], noise=eps, generator=generator)
            elif kind == 'widen_transition':
                net = densenet_widen_transition(net, op['index'], op['channels'], noise=eps, generator=generator)
            else:
                raise ConfigError(field, f'unknown DenseNet operation {op!r}',
                                  allowed=['wider', 'deeper', 'widen_stem', 'widen_transition'])
        except KeyError as exc:
            raise ConfigError(f'{field}.{exc.args[0]}', 'missing') from exc
        except ConfigError as exc:
            if exc.field.startswith('init.'):
                raise
            raise ConfigError(f'{field}.{exc.field}', exc.message, exc.allowed) from exc
    return net


@SEARCH_SPACES.register('eas_densenet', description='EAS DenseNet-BC: per-layer growth, variable depth (paper L=40 k=40 start)')
class EASDenseNet(XferSpace):
    """Space of DenseNet-BC networks for EAS; samples are architecture dicts (see module doc)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 growth_rates: list[int] = tuple(GROWTHS), start: dict | None = None):
        super().__init__()
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.growth_rates = sorted(int_list(growth_rates, 'space_args.growth_rates'))
        self.start = check_architecture(start if start is not None else paper_start(self.growth_rates[0]),
                                        field='space_args.start')

    def freeze(self, sample: dict) -> nn.Module:
        a = check_architecture(sample, self.growth_rates)
        return DenseNetBC(a['growths'], in_channels=self.in_channels, num_classes=self.num_classes,
                          stem_channels=a['stem'], transition_channels=a['transitions'])

    eas_operators = DenseNetEASOps

    def example(self) -> dict:
        return copy.deepcopy(self.start)

    @staticmethod
    def net2net_transform(net: nn.Module, ops: list[dict], *, noise: bool = True,
                          generator: torch.Generator | None = None) -> nn.Module:
        return transform_densenet(net, ops, noise=noise, generator=generator)

    @staticmethod
    def architecture_of(net: nn.Module) -> dict:
        return net.architecture()

    def xfer_space_info(self, info):
        info.extra.update(kind='eas_densenet', start=self.start, growth_rates=self.growth_rates)
        return info

    @staticmethod
    def portal_summary(architecture: dict) -> dict:
        """What NNI's web portal plots (nni_xfer.spec.portal_summary): dense layers in all and per
        block (``6-6-6``), the channels the blocks add (sum of growths), the largest and mean growth,
        stem and transition widths (``160-200``). The growths themselves stay in the trial's parameters."""
        growths = architecture['growths']
        every = [g for b in growths for g in b]
        return {'depth': len(every), 'layers': '-'.join(str(len(b)) for b in growths),
                'growth_sum': sum(every), 'growth_max': max(every, default=0),
                'growth_mean': round(sum(every) / len(every), 1) if every else 0, 'stem': architecture['stem'],
                'transitions': '-'.join(str(c) for c in architecture['transitions']) or 'none'}
