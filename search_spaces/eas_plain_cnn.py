"""EAS plain-CNN space (Cai et al., AAAI 2018): variable-length conv/pool/FC chains.

An architecture is ``{'layers': [tokens]}`` with tokens ``conv-<filters>-<kernel>``, ``pool`` and
``fc-<units>`` (the final classifier is implicit). Pools split conv blocks; the last ``pool`` is
the global average pool and only ``fc`` tokens may follow it. Every conv/FC layer is followed by
BN + ReLU; convs have stride 1 and 'same' padding; the other pools are 2×2 max pools. One module
per token (``net.layers[i]`` is token ``i``), so transforms can address layers by position.
"""
from __future__ import annotations

import re

import torch.nn as nn

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace

CONV_WIDTHS = [16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512]
KERNELS = [1, 3, 5]
FC_UNITS = [64, 128, 256, 384, 512, 640, 768, 896, 1024]
#: Paper Table 1 start network: C(16,3) P C(32,3) P C(64,3) P C(128,3) P(AVG) FC(256).
PAPER_START = ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'conv-128-3', 'pool', 'fc-256']

_CONV = re.compile(r'^conv-(\d+)-(\d+)$')
_FC = re.compile(r'^fc-(\d+)$')


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


@SEARCH_SPACES.register('eas_plain_cnn', description='EAS plain CNN: variable conv/pool/FC chains (paper Table 1 start)')
class EASPlainCNN(XferSpace):
    """Space of EAS plain CNNs; samples are ``{'layers': [...]}``, the start point is ``start``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 conv_widths: list[int] = tuple(CONV_WIDTHS), kernels: list[int] = tuple(KERNELS),
                 fc_units: list[int] = tuple(FC_UNITS), start: list[str] = tuple(PAPER_START)):
        super().__init__()
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.limits = {'conv_widths': sorted(conv_widths), 'kernels': sorted(kernels), 'fc_units': sorted(fc_units)}
        parse_layers(list(start), field='space_args.start', **self.limits)
        self.start = list(start)

    def freeze(self, sample: dict) -> nn.Module:
        if not isinstance(sample, dict) or 'layers' not in sample:
            raise ConfigError('architecture', "expected {'layers': [tokens]}")
        return PlainCNNNet(sample['layers'], self.in_channels, self.num_classes, **self.limits)

    def xfer_space_info(self, info):
        info.extra.update(kind='eas_plain_cnn', start={'layers': self.start}, **self.limits)
        return info
