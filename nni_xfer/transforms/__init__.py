"""Function-preserving network transforms shared by the methods (EAS first).

* :mod:`~nni_xfer.transforms.net2net` — Net2WiderNet / Net2DeeperNet on plain conv/linear
  layers, identity-BN calibration, and helpers for flat ``nn.Sequential`` plain CNNs.
* :mod:`~nni_xfer.transforms.densenet_ops` — a small pre-activation DenseNet-BC and its wider /
  deeper transforms (EAS paper Eq. 4; duplicate-layer insertion of methods.md §1.7).

Example:
    >>> import torch, torch.nn as nn
    >>> from nni_xfer.transforms import widen_sequential, deepen_sequential, calibrate_inserted
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
from .densenet_ops import (
    DenseBlock,
    DenseLayer,
    DenseNetBC,
    Transition,
    densenet_deeper,
    densenet_widen_stem,
    densenet_widen_transition,
    densenet_wider,
)
from .net2net import (
    WiderResult,
    calibrate_identity_bn,
    calibrate_inserted,
    collect_activations,
    deepen_sequential,
    gather_bn,
    insert_mapping,
    net2deeper_conv,
    net2deeper_linear,
    net2wider_conv,
    net2wider_linear,
    replica_counts,
    widen_inputs,
    widen_outputs,
    widen_sequential,
    wider_mapping,
)

__all__ = [
    'WiderResult', 'wider_mapping', 'replica_counts', 'insert_mapping', 'gather_bn', 'widen_outputs',
    'widen_inputs', 'net2wider_conv', 'net2wider_linear', 'net2deeper_conv', 'net2deeper_linear',
    'calibrate_identity_bn', 'collect_activations', 'calibrate_inserted', 'widen_sequential',
    'deepen_sequential',
    'DenseLayer', 'DenseBlock', 'Transition', 'DenseNetBC', 'densenet_wider', 'densenet_deeper',
    'densenet_widen_stem', 'densenet_widen_transition',
]
