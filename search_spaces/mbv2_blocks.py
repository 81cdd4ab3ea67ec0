"""EAT-NAS MobileNetV2-block space (Fang et al., 2019, §3.2): 7 blocks of repeated layers.

An architecture is ``{'blocks': [{'op', 'kernel', 'skip', 'depth', 'width'}, ...]}`` (one dict per
block, the paper's tuple B = (conv, kernel, skip, width, depth)):

- ``op``: ``sepconv`` (k×k depthwise, BN, ReLU, 1×1, BN, ReLU), ``mbconv3`` / ``mbconv6`` (1×1 expand
  to t·C_in, BN, ReLU; k×k depthwise, BN, ReLU; 1×1 project, BN);
- ``kernel`` ∈ {3, 5, 7}; ``skip`` ∈ {0, 1}; ``depth`` (layers) ∈ {1..4};
- ``width``: the paper's width factor N_out / N_in ∈ {0.5, 1, 1.5, 2}, chained through the blocks:
  block i outputs make_divisible(C_{i-1} · width_i, 8) channels, C_0 = ``stem_channels``.

Network: stem 3×3 conv (``stem_stride``) + BN + ReLU → blocks (downsampling and the width change
in the first layer of a block, repeated layers stride 1, width → width) → 1×1 conv to
``head_channels`` (1280) + BN + ReLU → global average pool → dropout (0.2) → FC.

Skip semantics (the paper is ambiguous; decided here, docs/fidelity.md, EAT-NAS): ``skip: 1`` adds a residual to *every* layer
of the block, as the paper says ("whether to add a skip connection for every layer"), for SepConv
and MBConv alike: identity where the input and output shapes match, and where they do not (first
layer of a block that downsamples or changes width) a 1×1 conv (stride) + BN projection, as the
public code does for MBConv (``skip_projection: false`` drops those projections: no residual on
shape-changing layers). The public code never adds SepConv's residual; here it is live.

Scale constraints (paper §4): the total expansion ratio (product of the width factors = the last
block's width over ``stem_channels``) within ``expansion_range`` and the total number of layers
within ``layer_range``. No architecture outside them is built or proposed. ``preset``: ``cifar``
(stride 1 stem, downsampling in blocks 3 and 5, expansion ratio [4, 10]), ``imagenet`` (stride 2
stem, downsampling in blocks 2, 3, 4, 6, expansion ratio [8, 16], layers [16, 18]) or ``auto``
(``imagenet`` for inputs of 64 pixels and more); explicit arguments override the preset.

Building blocks reused from NNI 3.0's hub (``nni.nas.hub.pytorch.proxylessnas``): ``ConvBNReLU``
for the stem, the head and both halves of SepConv; ``InvertedResidual`` for the MBConv body (its
own residual switched off: it compares channel counts with ``is``, and the paper's skip needs the
projection shortcut, so the residual lives in :class:`MBV2Layer`); ``make_divisible`` for channel
rounding. NNI's ``DepthwiseSeparableConv`` is not used: it has no ReLU after the 1×1 conv, the
paper's SepConv has. Activation is ReLU (the public code), not MobileNetV2's ReLU6; BN eps 2e-5.

Module names are stable for weight sharing: ``blocks.<i>.<j>`` is layer j of block i, its
``body`` the op and its ``shortcut`` the projection (if any).
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from itertools import product
from typing import Any

import torch
import torch.nn as nn
from nni.nas.hub.pytorch.proxylessnas import ConvBNReLU, InvertedResidual, make_divisible

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace

OPS = ('sepconv', 'mbconv3', 'mbconv6')
EXPANSION = {'sepconv': None, 'mbconv3': 3, 'mbconv6': 6}
KERNELS = (3, 5, 7)
SKIPS = (0, 1)
DEPTHS = (1, 2, 3, 4)
WIDTHS = (0.5, 1.0, 1.5, 2.0)
ELEMENTS = ('op', 'kernel', 'skip', 'depth', 'width')
NUM_BLOCKS = 7

PRESETS = {
    'cifar': {'stem_stride': 1, 'strides': [1, 1, 2, 1, 2, 1, 1], 'expansion_range': [4.0, 10.0],
              'layer_range': None},
    'imagenet': {'stem_stride': 2, 'strides': [1, 2, 2, 2, 1, 2, 1], 'expansion_range': [8.0, 16.0],
                 'layer_range': [16, 18]},
}

#: A MobileNetV2-like architecture inside both presets' constraints (expansion 9, 17 layers).
EXAMPLE = {'blocks': [
    {'op': 'sepconv', 'kernel': 3, 'skip': 0, 'depth': 1, 'width': 0.5},
    {'op': 'mbconv6', 'kernel': 3, 'skip': 1, 'depth': 2, 'width': 2.0},
    {'op': 'mbconv6', 'kernel': 3, 'skip': 1, 'depth': 3, 'width': 1.5},
    {'op': 'mbconv6', 'kernel': 3, 'skip': 1, 'depth': 4, 'width': 2.0},
    {'op': 'mbconv6', 'kernel': 5, 'skip': 1, 'depth': 3, 'width': 1.5},
    {'op': 'mbconv6', 'kernel': 5, 'skip': 1, 'depth': 3, 'width': 1.0},
    {'op': 'mbconv6', 'kernel': 3, 'skip': 0, 'depth': 1, 'width': 2.0},
]}


# ---------------------------------------------------------------- grammar (plain data, no torch)
@dataclass
class Grammar:
    """The choices and constraints of one instance of the space (JSON-safe via :meth:`to_dict`)."""

    ops: list
    kernels: list
    skips: list
    depths: list
    widths: list
    num_blocks: int = NUM_BLOCKS
    expansion_range: list | None = None   # [lo, hi] on the product of width factors
    layer_range: list | None = None       # [lo, hi] on the sum of depths

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> 'Grammar':
        return cls(**d)

    def choices(self, element: str) -> list:
        return {'op': self.ops, 'kernel': self.kernels, 'skip': self.skips, 'depth': self.depths,
                'width': self.widths}[element]

    # ---- the space protocol's grammar (``MBV2Blocks.grammar``, nni_xfer/space.py): what eatnas and
    # ---- the 'eatnas_share' initializer call; the operators are this module's functions
    @classmethod
    def from_info(cls, info) -> 'Grammar':
        """The grammar of an ``mbv2_blocks`` :class:`~nni_xfer.strategy.SpaceInfo` (its ``extra``)."""
        return grammar_from_info(info)

    def parse(self, arch: Any, field: str = 'architecture', constraints: bool = True) -> dict:
        """:func:`parse_architecture` under this grammar."""
        return parse_architecture(arch, self, field, constraints)

    def random(self, rng) -> dict:
        """:func:`random_architecture` under this grammar."""
        return random_architecture(rng, self)

    def transform(self, arch: dict, rng) -> dict:
        """:func:`transform` (Algorithm 3) under this grammar."""
        return transform(arch, rng, self)

    def violation(self, arch: dict) -> str | None:
        """:func:`constraint_violation` under this grammar."""
        return constraint_violation(arch, self)

    @staticmethod
    def share_plan(child_arch: dict, parent_arch: dict, **options) -> dict[str, Any]:
        """:func:`share_plan` (EAT-NAS parameter sharing; needs no grammar)."""
        return share_plan(child_arch, parent_arch, **options)


def expansion_ratio(arch: dict) -> float:
    return math.prod(float(b['width']) for b in arch['blocks'])


def num_layers(arch: dict) -> int:
    return sum(int(b['depth']) for b in arch['blocks'])


def parse_architecture(arch: Any, grammar: Grammar, field: str = 'architecture', constraints: bool = True) -> dict:
    """Validate an architecture; return it normalised (ints, floats). One-line errors name the field.

    ``constraints: false`` checks the choices only, not the scale constraints (a basic architecture
    searched under another task's constraints)."""
    if not isinstance(arch, dict) or set(arch) != {'blocks'}:
        raise ConfigError(field, "expected {'blocks': [{op, kernel, skip, depth, width}, ...]}")
    blocks = arch['blocks']
    if not isinstance(blocks, (list, tuple)) or len(blocks) != grammar.num_blocks:
        n = len(blocks) if isinstance(blocks, (list, tuple)) else type(blocks).__name__
        raise ConfigError(f'{field}.blocks', f'expected a list of {grammar.num_blocks} blocks, got {n}')
    out = []
    for i, b in enumerate(blocks):
        f = f'{field}.blocks[{i}]'
        if not isinstance(b, dict):
            raise ConfigError(f, f'expected a dict with keys {", ".join(ELEMENTS)}')
        for key in b:
            if key not in ELEMENTS:
                raise ConfigError(f'{f}.{key}', 'unknown key', allowed=ELEMENTS)
        nb = {}
        for key in ELEMENTS:
            if key not in b:
                raise ConfigError(f'{f}.{key}', 'missing', allowed=grammar.choices(key))
            v = b[key]
            allowed = grammar.choices(key)
            if key == 'width':
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and float(v) in allowed
                v = float(v) if ok else v
            elif key == 'op':
                ok = v in allowed
            else:
                ok = isinstance(v, int) and not isinstance(v, bool) and v in allowed
            if not ok:
                raise ConfigError(f'{f}.{key}', f'{v!r} is not a choice', allowed=allowed)
            nb[key] = v
        out.append(nb)
    parsed = {'blocks': out}
    if constraints:
        check_constraints(parsed, grammar, field)
    return parsed


def constraint_violation(arch: dict, grammar: Grammar) -> str | None:
    """Why ``arch`` lies outside the scale constraints, or ``None``."""
    if grammar.expansion_range is not None:
        lo, hi = grammar.expansion_range
        r = expansion_ratio(arch)
        if not lo - 1e-9 <= r <= hi + 1e-9:
            return f'total expansion ratio {r:g} outside [{lo:g}, {hi:g}]'
    if grammar.layer_range is not None:
        lo, hi = grammar.layer_range
        n = num_layers(arch)
        if not lo <= n <= hi:
            return f'total layers {n} outside [{lo}, {hi}]'
    return None


def check_constraints(arch: dict, grammar: Grammar, field: str = 'architecture') -> None:
    why = constraint_violation(arch, grammar)
    if why:
        raise ConfigError(f'{field}.blocks', why)


def satisfiable(grammar: Grammar) -> str | None:
    """Which constraint no architecture of the grammar can meet, or ``None``."""
    if grammar.expansion_range is not None:
        lo, hi = grammar.expansion_range
        logs = sorted({round(sum(math.log(w) for w in ws), 9)
                       for ws in product(grammar.widths, repeat=grammar.num_blocks)})
        if not any(math.log(lo) - 1e-9 <= v <= math.log(hi) + 1e-9 for v in logs):
            return 'expansion_range'
    if grammar.layer_range is not None:
        lo, hi = grammar.layer_range
        if hi < grammar.num_blocks * min(grammar.depths) or lo > grammar.num_blocks * max(grammar.depths):
            return 'layer_range'
    return None


# ---------------------------------------------------------------- pure arch -> arch operators
def random_architecture(rng, grammar: Grammar, max_tries: int = 100000) -> dict:
    """A uniform sample of the grammar conditioned on the constraints (rejection sampling)."""
    for _ in range(max_tries):
        arch = {'blocks': [{k: _pick(rng, grammar.choices(k)) for k in ELEMENTS}
                           for _ in range(grammar.num_blocks)]}
        if constraint_violation(arch, grammar) is None:
            return arch
    raise ConfigError('space_args', 'no architecture satisfying the scale constraints found by sampling')


def transform(arch: dict, rng, grammar: Grammar, max_tries: int = 1000) -> dict:
    """The paper's transformation function (Algorithm 3) — offspring generator and mutation.

    In every block one of the five elements, chosen uniformly (elements with a single choice are
    never picked), gets a new value drawn uniformly from the other choices. When the child breaks a
    scale constraint, only the offending blocks are redrawn — the values of the blocks whose chosen
    element is the width (total expansion ratio) or the depth (layer count), uniformly among the
    values that satisfy the constraint — so the element choice, and with it the 1/5 frequency of
    each element, is kept. Only when no value of the chosen elements can satisfy the constraints
    (at their edges, or a parent outside them) is the element choice redrawn, uniformly among the
    choices that can; the result then lies inside the constraints whatever the parent was
    (``arch`` need not satisfy ``grammar``'s constraints: a basic architecture of another task
    seeds this one). ``max_tries`` is kept for compatibility and unused. Raises
    :class:`ConfigError` when no single transformation brings ``arch`` inside the constraints.
    """
    blocks = arch['blocks']
    free = [e for e in ELEMENTS if len(grammar.choices(e)) > 1]
    if not free:
        return copy.deepcopy(arch)
    chosen = [free[int(rng.integers(len(free)))] for _ in blocks]
    child = _realise(arch, chosen, rng, grammar)
    if child is not None:
        return child
    chosen = _feasible_elements(arch, rng, grammar, free)
    if chosen is None:
        if constraint_violation(arch, grammar) is None:  # no feasible change at all (tiny grammars)
            return copy.deepcopy(arch)
        raise ConfigError('architecture.blocks', f'no single transformation (one element per block) brings it '
                                                 f'inside the scale constraints ({constraint_violation(arch, grammar)})')
    child = _realise(arch, chosen, rng, grammar)
    assert child is not None
    return child


def _alternatives(grammar: Grammar, element: str, value) -> list:
    return [v for v in grammar.choices(element) if v != value]


def _in_range(value: float, rng_: list | None) -> bool:
    return rng_ is None or rng_[0] - 1e-9 <= value <= rng_[1] + 1e-9


def _scale_options(arch: dict, idx: list[int], element: str, grammar: Grammar) -> list[tuple]:
    """Every joint new value of ``element`` in the blocks ``idx`` that keeps its constraint."""
    blocks = arch['blocks']
    if element == 'width':
        fixed = math.prod(float(b['width']) for i, b in enumerate(blocks) if i not in idx)
        ok = lambda vals: _in_range(fixed * math.prod(vals), grammar.expansion_range)  # noqa: E731
    else:
        fixed = sum(int(b['depth']) for i, b in enumerate(blocks) if i not in idx)
        ok = lambda vals: _in_range(fixed + sum(vals), grammar.layer_range)  # noqa: E731
    return [vals for vals in product(*[_alternatives(grammar, element, blocks[i][element]) for i in idx]) if ok(vals)]


def _realise(arch: dict, chosen: list[str], rng, grammar: Grammar) -> dict | None:
    """New values for the chosen element of every block; the width/depth values redrawn among those
    keeping the constraints when the first draw breaks one; ``None`` when none can."""
    blocks = arch['blocks']
    child = {'blocks': [dict(b) for b in blocks]}
    for b, e in zip(child['blocks'], chosen):
        b[e] = _pick(rng, _alternatives(grammar, e, b[e]))
    for element, check in (('width', grammar.expansion_range), ('depth', grammar.layer_range)):
        value = expansion_ratio(child) if element == 'width' else num_layers(child)
        if _in_range(value, check):
            continue
        idx = [i for i, e in enumerate(chosen) if e == element]
        options = _scale_options(arch, idx, element, grammar) if idx else []
        if not options:
            return None
        for i, v in zip(idx, options[int(rng.integers(len(options)))]):
            child['blocks'][i][element] = copy.deepcopy(v)
    return child


def _feasible_elements(arch: dict, rng, grammar: Grammar, free: list[str]) -> list[str] | None:
    """An element per block drawn uniformly among the choices some values of which satisfy the
    constraints (exact: by which blocks change width, which depth), or ``None``."""
    n = len(arch['blocks'])
    others = [e for e in free if e not in ('width', 'depth')]
    blocks = arch['blocks']
    feasible = {}  # element -> [bit mask of the blocks that change it -> some new values keep its constraint]
    for element, limits in (('width', grammar.expansion_range), ('depth', grammar.layer_range)):
        own = [float(b[element]) if element == 'width' else int(b[element]) for b in blocks]
        combine = (lambda x, y: x * y) if element == 'width' else (lambda x, y: x + y)  # noqa: E731
        # reach[mask]: every total of the element over all blocks, the blocks in mask taking new values
        reach = [set() for _ in range(1 << n)]
        reach[0] = {math.prod(own) if element == 'width' else sum(own)}
        for mask in range(1, 1 << n):
            i = (mask & -mask).bit_length() - 1
            alts = _alternatives(grammar, element, blocks[i][element]) if element in free else []
            reach[mask] = {round(combine(t, (float(v) / own[i]) if element == 'width' else int(v) - own[i]), 9)
                           for t in reach[mask & (mask - 1)] for v in alts}
        feasible[element] = [any(_in_range(t, limits) for t in r) for r in reach]
    w_mask, d_mask, n_other = _role_table(n)
    import numpy as np
    ok = np.asarray(feasible['width'])[w_mask] & np.asarray(feasible['depth'])[d_mask]
    if not others:
        ok &= n_other == 0
    if not ok.any():
        return None
    weights = np.where(ok, float(max(len(others), 1)) ** n_other, 0.0)
    k = int(rng.choice(len(weights), p=weights / weights.sum()))
    roles = [('width', 'depth', 'other')[k // 3 ** i % 3] for i in range(n)]
    return [r if r != 'other' else others[int(rng.integers(len(others)))] for r in roles]


@lru_cache(maxsize=None)
def _role_table(n: int):
    """For every assignment k of a role (0 width, 1 depth, 2 other; digit i of k in base 3 for block i)
    to ``n`` blocks: the width mask, the depth mask and the number of other blocks."""
    import numpy as np
    k = np.arange(3 ** n)
    digits = np.stack([k // 3 ** i % 3 for i in range(n)])
    bits = (1 << np.arange(n))[:, None]
    return ((digits == 0) * bits).sum(0), ((digits == 1) * bits).sum(0), (digits == 2).sum(0)


def example(grammar: Grammar | None = None) -> dict:
    """A sample of the space (MobileNetV2-like); inside ``grammar``'s constraints when it can be."""
    arch = copy.deepcopy(EXAMPLE)
    if grammar is None:
        return arch
    try:
        return parse_architecture(arch, grammar)
    except ConfigError:
        import numpy as np
        return random_architecture(np.random.default_rng(0), grammar)


def _pick(rng, values):
    return copy.deepcopy(values[int(rng.integers(len(values)))])


# ---------------------------------------------------------------- network
def channels(arch: dict, stem_channels: int) -> list[int]:
    """Output channels of the stem and of every block."""
    out = [stem_channels]
    for b in arch['blocks']:
        out.append(int(make_divisible(out[-1] * float(b['width']), 8)))
    return out


def _bn(eps: float):
    return partial(nn.BatchNorm2d, eps=eps)


class MBV2Layer(nn.Module):
    """One layer of a block: the op (``body``) and, with ``skip``, the residual (``shortcut``)."""

    def __init__(self, op: str, kernel: int, c_in: int, c_out: int, stride: int, skip: int,
                 skip_projection: bool = True, bn_eps: float = 2e-5):
        super().__init__()
        norm = _bn(bn_eps)
        if op == 'sepconv':
            self.body = nn.Sequential(
                ConvBNReLU(c_in, c_in, kernel, stride, groups=c_in, norm_layer=norm, activation_layer=nn.ReLU),
                ConvBNReLU(c_in, c_out, 1, norm_layer=norm, activation_layer=nn.ReLU))
        else:
            self.body = InvertedResidual(c_in, c_out, EXPANSION[op], kernel, stride, norm_layer=norm,
                                         activation_layer=nn.ReLU)
            self.body.has_skip = False  # the residual is this layer's (below)
        self.residual = bool(skip)
        self.shortcut: nn.Module | None = None
        if skip and (stride != 1 or c_in != c_out):
            if skip_projection:
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))
            else:
                self.residual = False

    def forward(self, x):
        y = self.body(x)
        if self.residual:
            y = y + (x if self.shortcut is None else self.shortcut(x))
        return y


class MBV2Net(nn.Module):
    """The network of one architecture."""

    def __init__(self, arch: dict, in_channels: int = 3, num_classes: int = 10, stem_channels: int = 32,
                 stem_stride: int = 1, strides: list[int] = tuple(PRESETS['cifar']['strides']),
                 head_channels: int = 1280, dropout: float = 0.2, skip_projection: bool = True,
                 bn_eps: float = 2e-5):
        super().__init__()
        self.architecture = copy.deepcopy(arch)
        norm = _bn(bn_eps)
        chans = channels(arch, stem_channels)
        self.stem = ConvBNReLU(in_channels, stem_channels, 3, stem_stride, norm_layer=norm,
                               activation_layer=nn.ReLU)
        blocks = []
        for i, b in enumerate(arch['blocks']):
            layers = []
            for j in range(int(b['depth'])):
                c_in = chans[i] if j == 0 else chans[i + 1]
                layers.append(MBV2Layer(b['op'], int(b['kernel']), c_in, chans[i + 1], strides[i] if j == 0 else 1,
                                        int(b['skip']), skip_projection, bn_eps))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBNReLU(chans[-1], head_channels, 1, norm_layer=norm, activation_layer=nn.ReLU)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.pool(self.head(x)).flatten(1)
        return self.classifier(self.dropout(x))


# ---------------------------------------------------------------- the NNI model space
def _range(value, field: str, kind: type):
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(field, f'expected [low, high] or null, got {value!r}')
    lo, hi = value
    if kind is int and not all(isinstance(v, int) for v in value):
        raise ConfigError(field, f'expected two integers, got {value!r}')
    if lo > hi or lo <= 0:
        raise ConfigError(field, f'empty or non-positive range {list(value)!r}')
    return [kind(lo), kind(hi)]


def _subset(value, field: str, universe: tuple, kind: type):
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(field, f'expected a non-empty list, got {value!r}', allowed=universe)
    out = []
    for v in value:
        ok = (v in universe) if kind is str else (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and kind(v) == v and kind(v) in universe)
        if not ok:
            raise ConfigError(field, f'{v!r} is not allowed', allowed=universe)
        if kind(v) not in out:
            out.append(kind(v))
    return out


def _pos_int(value, field: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(field, f'expected an integer >= {minimum}, got {value!r}')
    return value


_UNSET = object()


@SEARCH_SPACES.register('mbv2_blocks', description='EAT-NAS: 7 MobileNetV2 blocks (op, kernel, skip, depth, width) '
                                                   'with scale constraints')
class MBV2Blocks(XferSpace):
    """EAT-NAS space; samples are ``{'blocks': [7 x {op, kernel, skip, depth, width}]}``."""

    grammar = Grammar  # the space protocol's grammar hook; an instance holds its own Grammar here

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, preset: str = 'auto',
                 stem_channels: int = 32, head_channels: int = 1280, dropout: float = 0.2,
                 stem_stride: Any = None, strides: Any = None, expansion_range: Any = _UNSET,
                 layer_range: Any = _UNSET, ops: list = OPS, kernels: list = KERNELS, skips: list = SKIPS,
                 depths: list = DEPTHS, widths: list = WIDTHS, skip_projection: bool = True):
        super().__init__()
        if preset not in ('auto', *PRESETS):
            raise ConfigError('space_args.preset', f'unknown preset {preset!r}', allowed=['auto', *PRESETS])
        if preset == 'auto':
            preset = 'imagenet' if image_size >= 64 else 'cifar'
        p = PRESETS[preset]
        self.preset = preset
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.stem_channels = _pos_int(stem_channels, 'space_args.stem_channels')
        self.head_channels = _pos_int(head_channels, 'space_args.head_channels')
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ConfigError('space_args.dropout', f'expected a probability in [0, 1), got {dropout!r}')
        self.dropout = float(dropout)
        self.stem_stride = p['stem_stride'] if stem_stride is None else stem_stride
        if self.stem_stride not in (1, 2) or isinstance(self.stem_stride, bool):
            raise ConfigError('space_args.stem_stride', f'expected 1 or 2, got {self.stem_stride!r}', allowed=[1, 2])
        self.strides = list(p['strides'] if strides is None else strides)
        if len(self.strides) != NUM_BLOCKS or any(s not in (1, 2) or isinstance(s, bool) for s in self.strides):
            raise ConfigError('space_args.strides', f'expected {NUM_BLOCKS} strides of 1 or 2, got {strides!r}')
        if not isinstance(skip_projection, bool):
            raise ConfigError('space_args.skip_projection', f'expected true/false, got {skip_projection!r}')
        self.skip_projection = skip_projection
        self.grammar = Grammar(
            ops=_subset(ops, 'space_args.ops', OPS, str),
            kernels=_subset(kernels, 'space_args.kernels', KERNELS, int),
            skips=_subset(skips, 'space_args.skips', SKIPS, int),
            depths=_subset(depths, 'space_args.depths', DEPTHS, int),
            widths=_subset(widths, 'space_args.widths', WIDTHS, float),
            expansion_range=_range(p['expansion_range'] if expansion_range is _UNSET else expansion_range,
                                   'space_args.expansion_range', float),
            layer_range=_range(p['layer_range'] if layer_range is _UNSET else layer_range,
                               'space_args.layer_range', int))
        bad = satisfiable(self.grammar)
        if bad:
            raise ConfigError(f'space_args.{bad}', 'no architecture of the space satisfies it (range empty)')

    def example(self) -> dict:
        return example(self.grammar)

    def freeze(self, sample: dict) -> nn.Module:
        arch = parse_architecture(sample, self.grammar)
        return MBV2Net(arch, self.in_channels, self.num_classes, self.stem_channels, self.stem_stride,
                       self.strides, self.head_channels, self.dropout, self.skip_projection)

    @staticmethod
    def portal_summary(architecture: dict) -> dict:
        """What NNI's web portal plots (nni_xfer.spec.portal_summary): total depth (layers), blocks
        with a skip, the total expansion ratio, MBConv6 blocks, the mean kernel, and per block one
        character each: ``ops`` (``s`` sepconv, ``3`` mbconv3, ``6`` mbconv6), ``kernels`` and
        ``depths`` (``s66663`` ...). The blocks themselves stay in the trial's parameters."""
        blocks = architecture['blocks']

        def code(key: str) -> str:
            return ''.join(str(b[key])[-1] if str(b[key])[-1].isdigit() else str(b[key])[0] for b in blocks)

        return {'depth': sum(int(b['depth']) for b in blocks), 'skips': sum(int(b['skip']) for b in blocks),
                'expansion': round(expansion_ratio(architecture), 3),
                'mbconv6': sum(b['op'] == 'mbconv6' for b in blocks),
                'kernel_mean': round(sum(int(b['kernel']) for b in blocks) / len(blocks), 2) if blocks else 0,
                'ops': code('op'), 'kernels': code('kernel'), 'depths': code('depth')}

    def xfer_space_info(self, info):
        info.extra.update(kind='mbv2_blocks', grammar=self.grammar.to_dict(), preset=self.preset,
                          example=example(self.grammar), stem_channels=self.stem_channels,
                          in_channels=self.in_channels, num_classes=self.num_classes)
        return info


def grammar_from_info(info) -> Grammar:
    """The grammar a strategy reads from :class:`~nni_xfer.strategy.SpaceInfo` ``extra``."""
    if info.extra.get('kind') != 'mbv2_blocks':
        raise ConfigError('space', f'space {info.name!r} is not an mbv2_blocks space')
    return Grammar.from_dict(info.extra['grammar'])


# ---------------------------------------------------------------- weight sharing plan (EAT-NAS)
def share_plan(child_arch: dict, parent_arch: dict, *, depth_extra: str = 'random',
               kernel_mismatch: str = 'none', widen: str = 'random') -> dict[str, Any]:
    """Which parent module (name prefix) each child layer shares from; ``None``: fresh init.

    Per the paper a layer shares only when the block's op and kernel size match the parent's
    block; layer j shares from the parent's layer j (Eq. 5); a child layer the parent lacks is
    random (Eq. 4, ``depth_extra: random``) or copies the parent block's last layer
    (``copy_last``, the FNA-code reading). With ``kernel_mismatch: center`` (docs/fidelity.md, EAT-NAS) a
    kernel-size change still shares, the copy taking the spatial centre. Stem, head and classifier
    are listed as themselves. With ``widen: zero`` (nni_xfer/transfer/sharing.py) the projection
    shortcut of a first layer whose parent layer had a residual is marked ``identity``: where the
    parent's residual was the identity (same width), the child's projection starts as one.
    """
    # Stem and classifier share only on identical shapes: across tasks with another input channel
    # or class count they are re-initialised. The 1x1 head conv shares its overlap like a layer.
    plan: dict[str, Any] = {'stem': {'src': 'stem', 'exact': True}, 'head': 'head',
                            'classifier': {'src': 'classifier', 'exact': True}}
    for i, (cb, pb) in enumerate(zip(child_arch['blocks'], parent_arch['blocks'])):
        same = cb['op'] == pb['op'] and (int(cb['kernel']) == int(pb['kernel']) or kernel_mismatch == 'center')
        for j in range(int(cb['depth'])):
            src = None
            if same:
                if j < int(pb['depth']):
                    src = f'blocks.{i}.{j}'
                elif depth_extra == 'copy_last':
                    src = f'blocks.{i}.{int(pb["depth"]) - 1}'
            plan[f'blocks.{i}.{j}'] = src
        if widen == 'zero' and same and int(cb['skip']) and int(pb['skip']):
            plan[f'blocks.{i}.0.shortcut'] = {'src': f'blocks.{i}.0.shortcut', 'identity': True}
    return plan
