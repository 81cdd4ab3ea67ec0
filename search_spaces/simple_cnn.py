"""A small two-stage CNN space for quick runs and the pipeline's integration tests."""
from __future__ import annotations

import torch.nn as nn

from nni_xfer.registry import SEARCH_SPACES
from nni_xfer.space import XferSpace, int_list, positive_int


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


@SEARCH_SPACES.register('simple_cnn', description='Two-stage conv/BN/ReLU CNN: width, depth, kernel per stage')
class SimpleCNN(XferSpace):
    """Two conv stages (max-pool between), global average pool, linear classifier.

    Choices per stage ``s`` (1-based): ``width{s}``, ``depth{s}``, ``kernel{s}``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8,
                 widths: list[int] = (16, 32, 48), depths: list[int] = (1, 2), kernels: list[int] = (3, 5),
                 stages: int = 2):
        super().__init__()
        widths = int_list(widths, 'space_args.widths')
        depths = int_list(depths, 'space_args.depths')
        kernels = int_list(kernels, 'space_args.kernels', odd=True)
        stages = positive_int(stages, 'space_args.stages')
        layers: list[nn.Module] = []
        c = in_channels
        for s in range(1, stages + 1):
            width = self.choice(f'width{s}', widths)
            depth = self.choice(f'depth{s}', depths)
            kernel = self.choice(f'kernel{s}', kernels)
            for _ in range(depth):
                layers.append(_conv_bn_relu(c, width, kernel))
                c = width
            if s < stages:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))
