"""EAS DenseNet space: pre-activation DenseNet-BC (bottleneck 4, compression 0.5), per-layer growth.

An architecture is ``{'growths': [[k, ...], ...], 'stem': C, 'transitions': [C, ...]}``: the growth
of every dense layer per block, the stem conv width and each transition's output width (kept
explicitly because widening changes them independently of the growths). Default start point: the
paper's DenseNet-BC L=40, k=40 (3 blocks × 6 layers, stem 80, transitions by compression 0.5);
growth rates {40, 44, ..., 64}.
"""
from __future__ import annotations

import torch.nn as nn

from nni_xfer.errors import ConfigError
from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace
from nni_xfer.transforms.densenet_ops import DenseNetBC

GROWTHS = list(range(40, 65, 4))


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


@SEARCH_SPACES.register('eas_densenet', description='EAS DenseNet-BC: per-layer growth, variable depth (paper L=40 k=40 start)')
class EASDenseNet(XferSpace):
    """Space of DenseNet-BC networks for EAS; samples are architecture dicts (see module doc)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 growth_rates: list[int] = tuple(GROWTHS), start: dict | None = None):
        super().__init__()
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.growth_rates = sorted(growth_rates)
        self.start = check_architecture(start if start is not None else paper_start(self.growth_rates[0]),
                                        field='space_args.start')

    def freeze(self, sample: dict) -> nn.Module:
        a = check_architecture(sample, self.growth_rates)
        return DenseNetBC(a['growths'], in_channels=self.in_channels, num_classes=self.num_classes,
                          stem_channels=a['stem'], transition_channels=a['transitions'])

    def xfer_space_info(self, info):
        info.extra.update(kind='eas_densenet', start=self.start, growth_rates=self.growth_rates)
        return info
