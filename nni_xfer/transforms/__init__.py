"""Deprecated location of the Net2Net transforms: use :mod:`nni_xfer.transfer` (kept for one release).

* :mod:`nni_xfer.transfer.net2net` — Net2WiderNet / Net2DeeperNet on plain conv/linear layers,
  identity-BN calibration, helpers for flat ``nn.Sequential`` CNNs, and the ``net2net`` initializer.
* :mod:`nni_xfer.transfer.densenet` — the DenseNet-BC wider / deeper transforms (EAS Eq. 4;
  duplicate-layer insertion of methods.md §1.7); the network is
  :class:`nni_xfer.search_spaces.eas_densenet.DenseNetBC`.
"""
from nni_xfer.search_spaces.eas_densenet import DenseBlock, DenseLayer, DenseNetBC, Transition
from nni_xfer.transfer.densenet import (densenet_deeper, densenet_widen_stem, densenet_widen_transition,
                                        densenet_wider)
from nni_xfer.transfer.net2net import (WiderResult, calibrate_identity_bn, calibrate_inserted, collect_activations,
                                       deepen_sequential, gather_bn, insert_mapping, net2deeper_conv, net2deeper_linear,
                                       net2wider_conv, net2wider_linear, replica_counts, widen_inputs, widen_outputs,
                                       widen_sequential, wider_mapping)

__all__ = [
    'WiderResult', 'wider_mapping', 'replica_counts', 'insert_mapping', 'gather_bn', 'widen_outputs',
    'widen_inputs', 'net2wider_conv', 'net2wider_linear', 'net2deeper_conv', 'net2deeper_linear',
    'calibrate_identity_bn', 'collect_activations', 'calibrate_inserted', 'widen_sequential',
    'deepen_sequential',
    'DenseLayer', 'DenseBlock', 'Transition', 'DenseNetBC', 'densenet_wider', 'densenet_deeper',
    'densenet_widen_stem', 'densenet_widen_transition',
]
