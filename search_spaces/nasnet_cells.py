"""NASNet-style cell space as NAO and XferNAS search it (Luo et al. 2018; Wistuba 2019).

A network is a stem, three stages of ``N`` normal cells with a reduction cell between stages,
global average pooling and a linear classifier; ``F`` filters in the first stage, doubled at each
reduction. A cell has two inputs (nodes 1 and 2: the outputs of the two previous cells) and ``B``
computed nodes (3 … B+2); node ``k`` applies one op to each of two inputs chosen among the nodes
before it and adds the results; the cell output concatenates the computed nodes that no other
node uses (loose ends). In a reduction cell, ops reading a cell input have stride 2.

**Sample** (one NNI categorical per label, plain values)::

    {'normal/input_3_0': 1, 'normal/op_3_0': 'sep_conv 3x3', 'normal/input_3_1': 2, ..., 'reduce/op_7_1': ...}

``input_k_j`` is the node (1-based, as in the appendix JSON) feeding branch ``j`` of node ``k``.

**NAO tokens** (the NAO authors' encoding): per node ``[in₁, type₁, size₁, in₂, type₂, size₂]``, normal cell
then reduction cell (60 tokens for B=5). Vocabulary: 0 ``<sos>``/eos, 1…B+1 node_1…node_{B+1},
then op types (identity, sep_conv, conv, dil_sep_conv, avg_pool, max_pool, min_pool) and sizes
(1x1, 2x2, 3x3, 5x5, 7x7, 1x3+3x1, 1x7+7x1); for B=5 the 21 tokens of NAO's code.

**DAG JSON** (XferNAS appendix C): ``{"conv_dag": {"node_3": ["node_3", in₁, in₂, op₁, op₂], ...},
"reduc_dag": {...}}``; :func:`dags_to_sample` / :func:`sample_to_dags` convert both ways.

:class:`CellGrammar` is the one parser/validator of all three formats and the space's ``grammar``
hook (nni_xfer/space.py); strategies get it with ``space_hook(name, 'grammar').from_info(info)``
and never look at labels themselves.

Ops reuse NNI 3.0's ``nni.nas.hub.pytorch.nasnet`` table (ReLU-conv-BN, separable conv applied
twice, factorized reduce for a stride-2 identity, 1×3+3×1 and 1×7+7×1 convs, dilated separable
3×3); added here: dilated separable 5×5/7×7, min pool 2×2, and 'same'-padded 2×2 pools (NNI's
2×2 pools have no padding and shrink the map by one pixel at stride 1, which breaks the add).
The network itself is not NNI's ``NDS`` class: its input choices are ``CategoricalMultiple``
(lists), which the toolkit's categorical dims and samples do not carry, its stem is fixed to 3
input channels and its head to 10/1000 classes, and its auxiliary head needs a ≥5×5 map (digits
reaches 2×2). See the README.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nni.mutable import label_scope

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace

__all__ = ['OP_TYPES', 'OP_SIZES', 'OP_SETS', 'CellGrammar', 'NasnetCells', 'dags_to_sample',
           'sample_to_dags', 'example', 'XFERNASNET_DAGS', 'build_op']

OP_TYPES = ['identity', 'sep_conv', 'conv', 'dil_sep_conv', 'avg_pool', 'max_pool', 'min_pool']
OP_SIZES = ['1x1', '2x2', '3x3', '5x5', '7x7', '1x3+3x1', '1x7+7x1']

OP_SETS: dict[str, list[str]] = {
    # XferNAS §4.1 / NAO's 19-op list
    'xfernas': ['identity', 'sep_conv 3x3', 'sep_conv 5x5', 'sep_conv 7x7',
                'avg_pool 2x2', 'avg_pool 3x3', 'avg_pool 5x5',
                'max_pool 2x2', 'max_pool 3x3', 'max_pool 5x5', 'max_pool 7x7', 'min_pool 2x2',
                'conv 1x1', 'conv 3x3', 'conv 1x3+3x1', 'conv 1x7+7x1',
                'dil_sep_conv 3x3', 'dil_sep_conv 5x5', 'dil_sep_conv 7x7'],
    'naonet': ['identity', 'conv 1x1', 'conv 3x3', 'conv 1x3+3x1', 'conv 1x7+7x1',
               'max_pool 2x2', 'max_pool 3x3', 'max_pool 5x5', 'avg_pool 2x2', 'avg_pool 3x3', 'avg_pool 5x5'],
    'nao_ws': ['sep_conv 3x3', 'sep_conv 5x5', 'avg_pool 3x3', 'max_pool 3x3', 'identity'],
}
ALL_OPS = OP_SETS['xfernas']
CELLS = ('normal', 'reduce')
DAG_KEYS = {'normal': 'conv_dag', 'reduce': 'reduc_dag'}

#: The XferNASNet cells of the XferNAS paper, appendix C (verbatim).
XFERNASNET_DAGS = {
    'conv_dag': {
        'node_1': ['node_1', None, None, None, None],
        'node_2': ['node_2', None, None, None, None],
        'node_3': ['node_3', 'node_1', 'node_2', 'sep_conv 3x3', 'conv 3x3'],
        'node_4': ['node_4', 'node_1', 'node_3', 'identity', 'avg_pool 2x2'],
        'node_5': ['node_5', 'node_1', 'node_3', 'dil_sep_conv 5x5', 'identity'],
        'node_6': ['node_6', 'node_1', 'node_2', 'conv 1x1', 'avg_pool 5x5'],
        'node_7': ['node_7', 'node_5', 'node_1', 'conv 3x3', 'conv 1x1'],
    },
    'reduc_dag': {
        'node_1': ['node_1', None, None, None, None],
        'node_2': ['node_2', None, None, None, None],
        'node_3': ['node_3', 'node_2', 'node_1', 'identity', 'conv 1x3+3x1'],
        'node_4': ['node_4', 'node_2', 'node_2', 'max_pool 5x5', 'conv 1x3+3x1'],
        'node_5': ['node_5', 'node_4', 'node_3', 'avg_pool 3x3', 'dil_sep_conv 5x5'],
        'node_6': ['node_6', 'node_2', 'node_5', 'max_pool 2x2', 'sep_conv 3x3'],
        'node_7': ['node_7', 'node_4', 'node_1', 'sep_conv 7x7', 'sep_conv 3x3'],
    },
}


def resolve_ops(ops: Any, field: str = 'space_args.ops') -> list[str]:
    """An op-set name (``xfernas``, ``naonet``, ``nao_ws``) or a list of op names -> list of op names."""
    if isinstance(ops, str):
        if ops not in OP_SETS:
            raise ConfigError(field, f'unknown op set {ops!r}', allowed=list(OP_SETS))
        return list(OP_SETS[ops])
    if not isinstance(ops, (list, tuple)) or not ops:
        raise ConfigError(field, f'expected an op-set name or a non-empty list of ops, got {ops!r}',
                          allowed=list(OP_SETS))
    for op in ops:
        if op not in ALL_OPS:
            raise ConfigError(field, f'unknown op {op!r}', allowed=ALL_OPS)
    if len(set(ops)) != len(ops):
        raise ConfigError(field, f'repeated op in {list(ops)!r}')
    return list(ops)


class CellGrammar:
    """Sample ↔ NAO token sequence ↔ DAG JSON for ``B`` nodes per cell over ``ops``.

    >>> g = CellGrammar(5, OP_SETS['xfernas'])
    >>> seq = g.to_tokens(example())
    >>> len(seq), g.vocab_size, seq[:6]
    (60, 21, [1, 8, 16, 2, 9, 16])
    >>> g.from_tokens(seq) == example()
    True
    """

    def __init__(self, B: int = 5, ops: Sequence[str] | str = 'xfernas'):
        self.B = int(B)
        self.ops = resolve_ops(ops)
        self.n_node_tokens = self.B + 1            # node_1 … node_{B+1} can be an input
        self.type_offset = 1 + self.n_node_tokens   # first op-type token
        self.size_offset = self.type_offset + len(OP_TYPES)
        self.vocab_size = self.size_offset + len(OP_SIZES)
        self.seq_len = 2 * self.B * 6

    @classmethod
    def from_info(cls, info: Any) -> 'CellGrammar':
        """The grammar of a ``nasnet_cells`` :class:`~nni_xfer.strategy.SpaceInfo` (its ``extra``)."""
        extra = getattr(info, 'extra', {}) or {}
        if extra.get('kind') != 'nasnet_cells':
            raise ConfigError('space', f'needs the nasnet_cells space, got {getattr(info, "name", info)!r}',
                              allowed=['nasnet_cells'])
        return cls(extra['B'], extra['ops'])

    # ---- labels and dims
    def labels(self) -> list[str]:
        out = []
        for cell in CELLS:
            for k in range(3, self.B + 3):
                for j in (0, 1):
                    out += [f'{cell}/input_{k}_{j}', f'{cell}/op_{k}_{j}']
        return out

    def dims(self) -> dict[str, list]:
        d: dict[str, list] = {}
        for cell in CELLS:
            for k in range(3, self.B + 3):
                for j in (0, 1):
                    d[f'{cell}/input_{k}_{j}'] = list(range(1, k))
                    d[f'{cell}/op_{k}_{j}'] = list(self.ops)
        return d

    def validate(self, sample: Any, field: str = 'architecture') -> dict:
        if not isinstance(sample, dict):
            raise ConfigError(field, f'expected a dict of choices, got {type(sample).__name__}')
        for label, choices in self.dims().items():
            if label not in sample:
                raise ConfigError(f'{field}.{label}', 'missing', allowed=choices)
            if sample[label] not in choices or isinstance(sample[label], bool):
                raise ConfigError(f'{field}.{label}', f'{sample[label]!r} is not a choice', allowed=choices)
        extra = sorted(set(sample) - set(self.dims()))
        if extra:
            raise ConfigError(f'{field}.{extra[0]}', 'unknown label')
        return sample

    def random_sample(self, rng: np.random.Generator) -> dict:
        return {label: choices[int(rng.integers(len(choices)))] for label, choices in self.dims().items()}

    # ---- tokens
    def op_tokens(self, op: str) -> tuple[int, int]:
        if op == 'identity':
            kind, size = 'identity', '1x1'
        else:
            kind, size = op.split(' ')
        return self.type_offset + OP_TYPES.index(kind), self.size_offset + OP_SIZES.index(size)

    def token_op(self, type_tok: int, size_tok: int) -> str:
        kind = OP_TYPES[type_tok - self.type_offset]
        size = OP_SIZES[size_tok - self.size_offset]
        return 'identity' if kind == 'identity' else f'{kind} {size}'

    def to_tokens(self, sample: dict) -> list[int]:
        """The NAO sequence (``seq_len`` ints) of a sample."""
        self.validate(sample)
        seq: list[int] = []
        for cell in CELLS:
            for k in range(3, self.B + 3):
                for j in (0, 1):
                    seq.append(int(sample[f'{cell}/input_{k}_{j}']))
                    seq.extend(self.op_tokens(sample[f'{cell}/op_{k}_{j}']))
        return seq

    def from_tokens(self, seq: Sequence[int], field: str = 'tokens') -> dict:
        """The sample of a NAO sequence; a token that breaks the grammar -> :class:`ConfigError`."""
        seq = [int(t) for t in seq]
        if len(seq) != self.seq_len:
            raise ConfigError(field, f'expected {self.seq_len} tokens, got {len(seq)}')
        sample: dict = {}
        pos = 0
        for cell in CELLS:
            for k in range(3, self.B + 3):
                for j in (0, 1):
                    inp, t, s = seq[pos:pos + 3]
                    if not 1 <= inp < k:
                        raise ConfigError(f'{field}[{pos}]', f'node_{k} cannot read token {inp}',
                                          allowed=list(range(1, k)))
                    try:
                        op = self.token_op(t, s)
                    except (ValueError, IndexError):
                        op = None
                    if op is None or op not in self.ops or self.op_tokens(op) != (t, s):
                        raise ConfigError(f'{field}[{pos + 1}]', f'tokens ({t}, {s}) are not an op of this space')
                    sample[f'{cell}/input_{k}_{j}'] = inp
                    sample[f'{cell}/op_{k}_{j}'] = op
                    pos += 3
        return sample

    def is_valid_tokens(self, seq: Sequence[int]) -> bool:
        try:
            self.from_tokens(seq)
            return True
        except ConfigError:
            return False

    def decode_masks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constraints for greedy decoding.

        Returns ``(static, size_given_type, is_size_step)``: ``static[t, v]`` whether token ``v``
        may appear at step ``t``; at size steps (``is_size_step[t]``) the allowed tokens are
        ``size_given_type[previous token]`` (only the sizes that make an op of this space).
        """
        V, L = self.vocab_size, self.seq_len
        static = torch.zeros(L, V, dtype=torch.bool)
        size_given_type = torch.zeros(V, V, dtype=torch.bool)
        is_size = torch.zeros(L, dtype=torch.bool)
        types = sorted({self.op_tokens(op)[0] for op in self.ops})
        for op in self.ops:
            t, s = self.op_tokens(op)
            size_given_type[t, s] = True
        for t in range(L):
            node = 3 + (t // 6) % self.B
            p = t % 3
            if p == 0:
                static[t, 1:node] = True
            elif p == 1:
                static[t, types] = True
            else:
                is_size[t] = True
                static[t, self.size_offset:] = True
        return static, size_given_type, is_size

    def swap_branches(self, seq: Sequence[int], rng: np.random.Generator, p: float = 0.5) -> list[int]:
        """NAO's augmentation: swap the two (input, op) branches of each node with probability ``p``."""
        out = list(seq)
        for start in range(0, self.seq_len, 6):
            if rng.random() < p:
                out[start:start + 6] = out[start + 3:start + 6] + out[start:start + 3]
        return out

    # ---- DAG JSON
    def to_dags(self, sample: dict) -> dict:
        self.validate(sample)
        out = {}
        for cell in CELLS:
            dag = {'node_1': ['node_1', None, None, None, None], 'node_2': ['node_2', None, None, None, None]}
            for k in range(3, self.B + 3):
                dag[f'node_{k}'] = [f'node_{k}', f"node_{sample[f'{cell}/input_{k}_0']}",
                                    f"node_{sample[f'{cell}/input_{k}_1']}",
                                    sample[f'{cell}/op_{k}_0'], sample[f'{cell}/op_{k}_1']]
            out[DAG_KEYS[cell]] = dag
        return out

    def from_dags(self, dags: Any, field: str = 'dags') -> dict:
        """The sample of a ``{"conv_dag": ..., "reduc_dag": ...}`` document (dict or JSON text)."""
        if isinstance(dags, str):
            try:
                dags = json.loads(dags)
            except json.JSONDecodeError as exc:
                raise ConfigError(field, f'not valid JSON: {exc}') from None
        if not isinstance(dags, dict):
            raise ConfigError(field, f'expected a mapping with conv_dag and reduc_dag, got {type(dags).__name__}')
        sample: dict = {}
        for cell in CELLS:
            key = DAG_KEYS[cell]
            dag = dags.get(key)
            if not isinstance(dag, dict):
                raise ConfigError(f'{field}.{key}', 'missing or not a mapping of nodes')
            want = {f'node_{k}' for k in range(1, self.B + 3)}
            extra = sorted(set(dag) - want)
            if extra:
                raise ConfigError(f'{field}.{key}.{extra[0]}', f'unknown node (B={self.B})', allowed=sorted(want))
            for k in range(3, self.B + 3):
                name = f'node_{k}'
                f = f'{field}.{key}.{name}'
                entry = dag.get(name)
                if not isinstance(entry, (list, tuple)) or len(entry) != 5:
                    raise ConfigError(f, f'expected [name, input1, input2, op1, op2], got {entry!r}')
                if entry[0] != name:
                    raise ConfigError(f, f'first item must be {name!r}, got {entry[0]!r}')
                for j in (0, 1):
                    inp, op = entry[1 + j], entry[3 + j]
                    allowed_in = [f'node_{i}' for i in range(1, k)]
                    if inp not in allowed_in:
                        raise ConfigError(f, f'input {inp!r} is not an earlier node', allowed=allowed_in)
                    if op not in self.ops:
                        raise ConfigError(f, f'op {op!r} is not in this space', allowed=self.ops)
                    sample[f'{cell}/input_{k}_{j}'] = int(inp.split('_')[1])
                    sample[f'{cell}/op_{k}_{j}'] = op
        return sample

    def loose_ends(self, sample: dict, cell: str) -> list[int]:
        used = {sample[f'{cell}/input_{k}_{j}'] for k in range(3, self.B + 3) for j in (0, 1)}
        return [k for k in range(3, self.B + 3) if k not in used]


def dags_to_sample(dags: Any, B: int = 5, ops: Sequence[str] | str = 'xfernas') -> dict:
    """Sample of a pasted appendix-style DAG JSON (dict or text)."""
    return CellGrammar(B, ops).from_dags(dags)


def sample_to_dags(sample: dict, B: int = 5, ops: Sequence[str] | str = 'xfernas') -> dict:
    return CellGrammar(B, ops).to_dags(sample)


def example() -> dict:
    """The XferNASNet cells (XferNAS appendix C) as a sample of the default space."""
    return CellGrammar(5, 'xfernas').from_dags(XFERNASNET_DAGS)


# --------------------------------------------------------------------------- ops

def _nni_nasnet():
    from nni.nas.hub.pytorch import nasnet
    return nasnet


class SamePool2x2(nn.Module):
    """2×2 avg/max/min pooling with TF-style 'same' padding (extra row/column at the bottom/right)."""

    def __init__(self, kind: str, stride: int):
        super().__init__()
        self.kind = kind
        self.stride = stride

    def forward(self, x):
        h, w = x.shape[-2:]
        s = self.stride
        ph = max((-(-h // s) - 1) * s + 2 - h, 0)
        pw = max((-(-w // s) - 1) * s + 2 - w, 0)
        if self.kind == 'avg':
            if ph or pw:  # average only over real pixels (count_include_pad=False)
                ones = F.pad(torch.ones_like(x[:1, :1]), (0, pw, 0, ph))
                return F.avg_pool2d(F.pad(x, (0, pw, 0, ph)), 2, s) / F.avg_pool2d(ones, 2, s)
            return F.avg_pool2d(x, 2, s)
        sign = 1.0 if self.kind == 'max' else -1.0
        y = F.pad(sign * x, (0, pw, 0, ph), value=float('-inf'))
        return sign * F.max_pool2d(y, 2, s)

    def extra_repr(self):
        return f'{self.kind}, stride={self.stride}'


def build_op(op: str, C: int, stride: int) -> nn.Module:
    """The module of op ``op`` on ``C`` channels (NASNet conventions; NNI's table where it has it)."""
    nas = _nni_nasnet()
    if op == 'identity':
        return nn.Identity() if stride == 1 else nas.FactorizedReduce(C, C)
    kind, size = op.split(' ')
    if kind == 'min_pool' or (kind in ('avg_pool', 'max_pool') and size == '2x2'):
        return SamePool2x2(kind.split('_')[0], stride)
    if kind == 'dil_sep_conv' and size in ('5x5', '7x7'):
        k = int(size[0])
        return nas.DilSepConv(C, C, k, stride, k - 1, 2)
    nni_name = {'1x3+3x1': 'conv_3x1_1x3', '1x7+7x1': 'conv_7x1_1x7'}.get(size, f"{kind}_{size}")
    return nas.OPS[nni_name](C, stride, True)


# --------------------------------------------------------------------------- network

class _Node(nn.Module):
    def __init__(self, C: int, inputs: tuple[int, int], ops: tuple[str, str], reduction: bool, drop_path: float):
        super().__init__()
        DropPath = _nni_nasnet().DropPath
        self.inputs = inputs
        self.branches = nn.ModuleList()
        self.drops = nn.ModuleList()
        for inp, op in zip(inputs, ops):
            stride = 2 if reduction and inp <= 2 else 1
            self.branches.append(build_op(op, C, stride))
            # NASNet/NAO: no drop-path on an identity branch
            self.drops.append(DropPath(drop_path) if drop_path > 0 and op != 'identity' else nn.Identity())

    def forward(self, states):
        return sum(drop(branch(states[i - 1])) for i, branch, drop in zip(self.inputs, self.branches, self.drops))


class _Cell(nn.Module):
    def __init__(self, grammar: CellGrammar, sample: dict, cell: str, C_pp: int, C_p: int, C: int,
                 reduction: bool, prev_reduction: bool, drop_path: float):
        super().__init__()
        nas = _nni_nasnet()
        self.pre0 = nas.FactorizedReduce(C_pp, C) if prev_reduction else nas.ReLUConvBN(C_pp, C, 1, 1, 0)
        self.pre1 = nas.ReLUConvBN(C_p, C, 1, 1, 0)
        self.nodes = nn.ModuleList(
            _Node(C, (sample[f'{cell}/input_{k}_0'], sample[f'{cell}/input_{k}_1']),
                  (sample[f'{cell}/op_{k}_0'], sample[f'{cell}/op_{k}_1']), reduction, drop_path)
            for k in range(3, grammar.B + 3))
        self.concat = grammar.loose_ends(sample, cell)
        self.out_channels = C * len(self.concat)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for node in self.nodes:
            states.append(node(states))
        return torch.cat([states[k - 1] for k in self.concat], dim=1)


class _AuxHead(nn.Module):
    """NASNet auxiliary classifier; the 5×5/3 average pool becomes an adaptive 2×2 pool so small maps work."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU())
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _check_int(value, field, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(field, f'expected an integer >= {minimum}, got {value!r}')
    return value


@SEARCH_SPACES.register('nasnet_cells', description='NASNet/NAO cell space: normal + reduction cell, B nodes, '
                        'N cells per stage, F filters (NAO, XferNAS)')
class NasnetCells(XferSpace):
    """The NASNet cell space (``grammar``: :class:`CellGrammar`; an instance holds its own).

    Args:
        B: computed nodes per cell (paper 5).
        N: normal cells per stage (search 3, final 6).
        F: filters of the first stage, doubled at each reduction (search 32).
        ops: op set ``xfernas`` (19), ``naonet`` (11), ``nao_ws`` (5) or a list of op names.
        drop_path: drop-path probability of every non-identity branch (0 = no drop-path layers);
            the trainer's ``evaluator_args.drop_path`` ramps it over training.
        aux_head: auxiliary classifier after the second reduction cell (returned in training mode).
        stem_multiplier: stem filters = ``stem_multiplier * F`` (NASNet/NAO CIFAR: 3).
    """

    grammar = CellGrammar  # the space protocol's grammar hook

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 B: int = 5, N: int = 3, F: int = 32, ops: Any = 'xfernas', drop_path: float = 0.0,
                 aux_head: bool = False, stem_multiplier: int = 3):
        super().__init__()
        _check_int(B, 'space_args.B', 2)
        _check_int(N, 'space_args.N', 1)
        _check_int(F, 'space_args.F', 1)
        if F % 2:
            raise ConfigError('space_args.F', f'must be even (factorized reduce halves it), got {F!r}')
        _check_int(stem_multiplier, 'space_args.stem_multiplier', 1)
        if (isinstance(drop_path, bool) or not isinstance(drop_path, (int, float))
                or not 0 <= drop_path < 1):
            raise ConfigError('space_args.drop_path', f'expected a probability in [0, 1), got {drop_path!r}')
        if not isinstance(aux_head, bool):
            raise ConfigError('space_args.aux_head', f'expected true or false, got {aux_head!r}')
        self.grammar = CellGrammar(B, resolve_ops(ops))
        self.B, self.N, self.F = B, N, F
        sample = {}
        for label, values in self.grammar.dims().items():
            scope, name = label.split('/')  # NNI labels take no '/': build them in a label scope
            with label_scope(scope):
                sample[label] = self.choice(name, values)

        C = stem_multiplier * F
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        C_pp, C_p, C_cur = C, C, F
        self.cells = nn.ModuleList()
        prev_reduction = False
        self.aux_index = None
        layout = ['normal'] * N + ['reduce'] + ['normal'] * N + ['reduce'] + ['normal'] * N
        for i, cell in enumerate(layout):
            reduction = cell == 'reduce'
            if reduction:
                C_cur *= 2
            c = _Cell(self.grammar, sample, cell, C_pp, C_p, C_cur, reduction, prev_reduction, drop_path)
            self.cells.append(c)
            C_pp, C_p = C_p, c.out_channels
            prev_reduction = reduction
            if reduction:
                self.aux_index, aux_channels = i, C_p
        self.aux_head = _AuxHead(aux_channels, num_classes) if aux_head else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        self._drop_path_layers = [(i, m) for i, cell in enumerate(self.cells) for m in cell.modules()
                                  if type(m).__name__ == 'DropPath']
        self.set_drop_path_prob(drop_path)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index and self.aux_head is not None and self.training:
                aux = self.aux_head(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        if aux is not None:
            return logits, aux
        return logits

    def set_drop_path_prob(self, p: float) -> None:
        """Set every drop-path layer to ``p`` scaled by its cell's depth ((i+1)/cells, NASNet/NAO)."""
        n = len(self.cells)
        for i, m in self._drop_path_layers:
            m.drop_prob = float(p) * (i + 1) / n

    def xfer_space_info(self, info):
        info.extra.update(kind='nasnet_cells', B=self.B, ops=list(self.grammar.ops))
        return info

    @staticmethod
    def portal_summary(architecture: dict) -> dict:
        """What NNI's web portal plots (nni_xfer.spec.portal_summary): per cell (``normal_``,
        ``reduce_``) the branches that are separable convs (dilated included), plain convs and pools
        (the rest, of 2B, are identities), and the cell's depth (longest chain of computed nodes). The
        cells themselves stay in the trial's parameters (``CellGrammar`` turns them into NAO tokens or
        the appendix's DAGs)."""
        out: dict[str, int] = {}
        for cell in CELLS:
            ops = [v for k, v in architecture.items() if k.startswith(f'{cell}/op_')]
            kinds = [str(op).split(' ')[0] for op in ops]
            depth: dict[int, int] = {}
            for key in sorted((k for k in architecture if k.startswith(f'{cell}/input_')),
                              key=lambda k: tuple(int(x) for x in k.rsplit('_', 2)[-2:])):
                node = int(key.rsplit('_', 2)[-2])
                depth[node] = max(depth.get(node, 1), depth.get(int(architecture[key]), 0) + 1)
            out.update({f'{cell}_sep': sum(k.endswith('sep_conv') for k in kinds),
                        f'{cell}_conv': sum(k == 'conv' for k in kinds),
                        f'{cell}_pool': sum(k.endswith('_pool') for k in kinds),
                        f'{cell}_depth': max(depth.values(), default=0)})
        return out

    @classmethod
    def example(cls) -> dict:
        return example()
