"""Weight-transfer mechanisms, each an initializer any method can use.

Every public module here is imported (and so registers its initializers) when the initializer
table loads: Net2Net (function-preserving widen/deepen), EAT-NAS width/depth parameter sharing, ...

Example (Net2Net on a flat ``nn.Sequential``):
    >>> import torch, torch.nn as nn
    >>> from nni_xfer.transfer.net2net import widen_sequential, deepen_sequential, calibrate_inserted
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    >>> x = torch.randn(16, 1, 8, 8)
    >>> g = torch.Generator().manual_seed(0)
    >>> new = deepen_sequential(widen_sequential(net, 0, 6, generator=g), 2, kernel_size=3).eval()
    >>> _ = calibrate_inserted(new, x)
    >>> torch.allclose(net(x), new(x), atol=1e-5)
    True
"""
from nni_xfer.registry import import_submodules

import_submodules(__name__, __path__)
