"""Function-preserving Net2Net transforms (Net2WiderNet / Net2DeeperNet) on plain PyTorch modules.

The transforms follow Chen et al. (2016) as used by EAS (Cai et al., 2018) with the
implementation details of the EAS authors' code:

* **wider** — a random index map keeps units ``0..n-1`` and appends ``n'-n`` indices drawn
  uniformly with replacement from the old units. The widened layer's filters (and its own BN's
  ``weight``/``bias``/``running_mean``/``running_var``) are gathered by the map; the consumer's
  input channels are gathered and divided by the replica count of their source unit, so the
  sum over replicas restores the original contribution. Optional Gaussian noise goes only on
  the *new* copies, with std ``noise × std(copied filter)``.
* **deeper** — a new ``conv → BN → ReLU`` (or ``linear → BN1d → ReLU``) block whose kernel is
  the identity. Its BN is an exact eval-mode identity when built and should be calibrated from
  real activations with :func:`calibrate_identity_bn` (``running_mean = beta = mean``,
  ``running_var = var``, ``gamma = sqrt(var + eps)``), which keeps ``BN(x) = x`` in eval mode
  and makes the training-mode normalisation of a real batch close to the identity too. ReLU
  keeps the non-negative input of a post-ReLU position unchanged.

Every transform returns new modules and leaves its inputs untouched. Modules keep the dtype
and device of the layer they were derived from.

Example:
    >>> import torch, torch.nn as nn
    >>> from nni_xfer.transfer.net2net import net2wider_conv, net2deeper_conv, calibrate_identity_bn
    >>> _ = torch.manual_seed(0)
    >>> conv, bn, head = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 2)
    >>> net = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    >>> x = torch.randn(8, 3, 6, 6)
    >>> before = net(x)
    >>> conv2, bn2, head2, mapping = net2wider_conv(conv, bn, head, 7, generator=torch.Generator().manual_seed(1))
    >>> mapping[:4].tolist(), conv2.out_channels, head2.in_features
    ([0, 1, 2, 3], 7, 7)
    >>> deeper = net2deeper_conv(7, 3)
    >>> wide = nn.Sequential(conv2, bn2, nn.ReLU(), deeper, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head2).eval()
    >>> _ = calibrate_identity_bn(deeper[1], wide[:3](x))
    >>> torch.allclose(before, wide(x), atol=1e-5)
    True
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, Union

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..registry import INITIALIZERS

__all__ = [
    'WiderResult',
    'wider_mapping',
    'replica_counts',
    'insert_mapping',
    'gather_bn',
    'widen_outputs',
    'widen_inputs',
    'net2wider_conv',
    'net2wider_linear',
    'net2deeper_conv',
    'net2deeper_linear',
    'calibrate_identity_bn',
    'recalibrate_bn',
    'collect_activations',
    'calibrate_inserted',
    'widen_sequential',
    'deepen_sequential',
]

Weighted = Union[nn.Conv2d, nn.Linear]
_BN = nn.modules.batchnorm._BatchNorm


# --------------------------------------------------------------------------- index maps

def wider_mapping(old: int, new: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Net2WiderNet index map ``g``: new unit ``j`` copies old unit ``g[j]``.

    Args:
        old: current number of units ``n``.
        new: target number of units ``n' >= n``.
        generator: RNG for the extra indices (``None`` uses torch's global RNG).

    Returns:
        ``LongTensor`` of length ``new``: ``0..old-1`` followed by ``new-old`` indices drawn
        uniformly with replacement from ``range(old)``.
    """
    if old < 1:
        raise ConfigError('old', f'must be >= 1, got {old}')
    if new < old:
        raise ConfigError('new_width', f'must be >= the current width {old}, got {new}')
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def replica_counts(mapping: torch.Tensor, old: int | None = None) -> torch.Tensor:
    """How many new units copy each old unit (``bincount`` of the map, length ``old``)."""
    return torch.bincount(mapping, minlength=int(mapping.max()) + 1 if old is None else old)


def insert_mapping(total: int, position: int, sources: torch.Tensor) -> torch.Tensor:
    """Map of a concatenated input after new channels are inserted (paper Eq. 4).

    The old input has ``total`` channels. New channels that replicate old channels ``sources``
    are inserted before old channel ``position``; everything else keeps its identity.

    >>> insert_mapping(6, 4, torch.tensor([0, 0])).tolist()   # EAS paper example, 0-based
    [0, 1, 2, 3, 0, 0, 4, 5]
    """
    return torch.cat([torch.arange(position), sources.to(torch.long), torch.arange(position, total)])


# --------------------------------------------------------------------------- building blocks

def _relative_noise(reference: torch.Tensor, shape: Sequence[int], scale: float,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise with std ``scale × std(reference)`` (zero when the std is undefined)."""
    std = reference.detach().double().std().item() if reference.numel() > 1 else 0.0
    z = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    return (z * (scale * std)).to(dtype=reference.dtype, device=reference.device)


def gather_bn(bn: _BN, mapping: torch.Tensor) -> _BN:
    """New BN over ``len(mapping)`` channels with every per-channel tensor gathered (no noise)."""
    new = copy.deepcopy(bn)
    idx = mapping.to(bn.weight.device if bn.weight is not None else 'cpu')
    new.num_features = len(mapping)
    with torch.no_grad():
        if bn.affine:
            new.weight = nn.Parameter(bn.weight.detach()[idx].clone())
            new.bias = nn.Parameter(bn.bias.detach()[idx].clone())
        if bn.track_running_stats and bn.running_mean is not None:
            new.running_mean = bn.running_mean[idx].clone()
            new.running_var = bn.running_var[idx].clone()
    return new


def widen_outputs(layer: Weighted, mapping: torch.Tensor, *, noise: float = 0.0,
                  generator: torch.Generator | None = None) -> Weighted:
    """Copy of ``layer`` whose output units are gathered by ``mapping``.

    Units at positions ``j >= layer's current width`` are new copies; with ``noise > 0`` each
    gets Gaussian noise of std ``noise × std(copied filter)`` on its filter, and its bias (if
    any) gets noise of std ``noise × std(whole bias vector)`` (a single bias value has no spread).
    """
    old = layer.weight.shape[0]
    new = copy.deepcopy(layer)
    idx = mapping.to(layer.weight.device)
    with torch.no_grad():
        w = layer.weight.detach()[idx].clone()
        b = layer.bias.detach()[idx].clone() if layer.bias is not None else None
        if noise > 0:
            for j in range(old, len(mapping)):
                src = layer.weight.detach()[int(mapping[j])]
                w[j] += _relative_noise(src, src.shape, noise, generator)
            if b is not None and len(mapping) > old:
                b[old:] += _relative_noise(layer.bias.detach(), (len(mapping) - old,), noise, generator)
        new.weight = nn.Parameter(w)
        if b is not None:
            new.bias = nn.Parameter(b)
    if isinstance(new, nn.Conv2d):
        if layer.groups != 1:
            raise ConfigError('layer', 'grouped convolutions are not supported')
        new.out_channels = len(mapping)
    else:
        new.out_features = len(mapping)
    return new


def widen_inputs(layer: Weighted, mapping: torch.Tensor, *, spatial: int = 1,
                 counts: torch.Tensor | None = None) -> Weighted:
    """Copy of the consumer ``layer`` for an input whose channels were replicated by ``mapping``.

    New input channel ``j`` reads old channel ``mapping[j]``; its weights are the old ones
    divided by the replica count of that channel, so replicated inputs sum back to the original.

    Args:
        layer: the consuming ``nn.Conv2d`` or ``nn.Linear``.
        mapping: new-channel → old-channel index map.
        spatial: for an ``nn.Linear`` reading a flattened ``C×H×W`` map, ``H*W``: each channel
            owns that many consecutive input features (``1`` after a global pool).
        counts: replica counts per old channel (default: ``bincount`` of ``mapping``).
    """
    old_in = layer.weight.shape[1] // (spatial if isinstance(layer, nn.Linear) else 1)
    counts = replica_counts(mapping, old_in) if counts is None else counts
    if len(counts) != old_in or (counts == 0).any() or int(mapping.max()) >= old_in:
        raise ConfigError('mapping', f'must cover exactly the {old_in} input channels of {type(layer).__name__}')
    dev = layer.weight.device
    idx = mapping.to(dev)
    scale = (1.0 / counts.to(device=dev, dtype=torch.float64))[idx]
    new = copy.deepcopy(layer)
    with torch.no_grad():
        w = layer.weight.detach()
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1:
                raise ConfigError('next_layer', 'grouped convolutions are not supported')
            nw = w[:, idx] * scale.to(w.dtype).view(1, -1, 1, 1)
            new.in_channels = len(mapping)
        else:
            w3 = w.view(w.shape[0], old_in, spatial)
            nw = (w3[:, idx] * scale.to(w.dtype).view(1, -1, 1)).reshape(w.shape[0], len(mapping) * spatial)
            new.in_features = len(mapping) * spatial
        new.weight = nn.Parameter(nw.contiguous())
    return new


def _infer_spatial(next_layer: Weighted, channels: int, spatial: int | None) -> int:
    if isinstance(next_layer, nn.Conv2d):
        if next_layer.in_channels != channels:
            raise ConfigError('next_layer', f'has {next_layer.in_channels} input channels, expected {channels}')
        return 1
    if spatial is None:
        if next_layer.in_features % channels:
            raise ConfigError('next_layer', f'{next_layer.in_features} input features are not a multiple '
                                            f'of the {channels} widened units')
        spatial = next_layer.in_features // channels
    if next_layer.in_features != channels * spatial:
        raise ConfigError('next_layer', f'has {next_layer.in_features} input features, expected {channels}×{spatial}')
    return spatial


@dataclass(frozen=True, eq=False)
class WiderResult:
    """Result of a wider transform; unpacks as ``(layer, bn, next_layer, mapping)``.

    Attributes:
        layer: the widened layer.
        bn: its gathered BN (``None`` when none was given).
        next_layer: the consumer with replicated, rescaled input channels.
        mapping: new-unit → old-unit index map (``LongTensor``).
        next_bn: the consumer's pre-activation BN, gathered (``None`` when none was given).
    """

    layer: Weighted
    bn: _BN | None
    next_layer: Weighted
    mapping: torch.Tensor
    next_bn: _BN | None = None

    def __iter__(self) -> Iterator:
        return iter((self.layer, self.bn, self.next_layer, self.mapping))


def _wider(layer, bn, next_layer, new_width, noise, generator, next_bn, mapping, spatial) -> WiderResult:
    old = layer.weight.shape[0]
    if mapping is None:
        mapping = wider_mapping(old, new_width, generator)
    elif len(mapping) != new_width or (mapping[:old] != torch.arange(old)).any():
        raise ConfigError('mapping', f'must have length {new_width} and start with 0..{old - 1}')
    if bn is not None and bn.num_features != old:
        raise ConfigError('bn', f'has {bn.num_features} channels, expected {old}')
    if next_bn is not None and next_bn.num_features != old:
        raise ConfigError('next_bn', f'has {next_bn.num_features} channels, expected {old}')
    spatial = _infer_spatial(next_layer, old, spatial)
    return WiderResult(
        layer=widen_outputs(layer, mapping, noise=noise, generator=generator),
        bn=gather_bn(bn, mapping) if bn is not None else None,
        next_layer=widen_inputs(next_layer, mapping, spatial=spatial),
        mapping=mapping,
        next_bn=gather_bn(next_bn, mapping) if next_bn is not None else None,
    )


# --------------------------------------------------------------------------- Net2WiderNet

def net2wider_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, next_layer: nn.Conv2d | nn.Linear,
                   new_width: int, *, noise: float = 0.0, generator: torch.Generator | None = None,
                   next_bn: _BN | None = None, mapping: torch.Tensor | None = None,
                   spatial: int | None = None) -> WiderResult:
    """Widen ``conv`` to ``new_width`` filters, preserving the network function.

    Args:
        conv: the layer to widen (``groups == 1``).
        bn: its post-conv BN (conv → BN → ReLU), gathered by the map; ``None`` if absent.
        next_layer: the next weighted layer (pools in between are fine, they act per channel):
            an ``nn.Conv2d``, or an ``nn.Linear`` after a global pool + flatten (``C`` features)
            or after a flatten of ``C×H×W`` (each channel owns ``H*W`` consecutive features).
        new_width: target number of filters (``>= conv.out_channels``).
        noise: relative std of the Gaussian noise added to the new copies only
            (EAS uses ``1e-2``; ``0`` gives an exact copy).
        generator: RNG for the index map and the noise.
        next_bn: a pre-activation BN owned by the consumer (BN → ReLU → next_layer, DenseNet);
            it is gathered like ``bn`` and returned as ``result.next_bn``.
        mapping: use this index map instead of drawing one (must start with ``0..n-1``).
        spatial: ``H*W`` for a flattened consumer; inferred from ``next_layer.in_features``.

    Returns:
        :class:`WiderResult` — unpacks as ``(new_conv, new_bn, new_next, mapping)``.
    """
    if not isinstance(conv, nn.Conv2d):
        raise ConfigError('conv', f'expected nn.Conv2d, got {type(conv).__name__}')
    return _wider(conv, bn, next_layer, new_width, noise, generator, next_bn, mapping, spatial)


def net2wider_linear(fc: nn.Linear, bn: nn.BatchNorm1d | None, next_fc: nn.Linear, new_units: int, *,
                     noise: float = 0.0, generator: torch.Generator | None = None,
                     next_bn: _BN | None = None, mapping: torch.Tensor | None = None) -> WiderResult:
    """Widen the fully connected layer ``fc`` to ``new_units`` units, preserving the function.

    Same contract as :func:`net2wider_conv`: rows of ``fc`` (and its bias) gathered, noise on
    the new rows only, ``bn`` (BatchNorm1d) gathered, ``next_fc`` columns gathered and divided by
    the replica count. Returns a :class:`WiderResult` ``(new_fc, new_bn, new_next, mapping)``.
    """
    if not isinstance(fc, nn.Linear):
        raise ConfigError('fc', f'expected nn.Linear, got {type(fc).__name__}')
    if not isinstance(next_fc, nn.Linear):
        raise ConfigError('next_fc', f'expected nn.Linear, got {type(next_fc).__name__}')
    return _wider(fc, bn, next_fc, new_units, noise, generator, next_bn, mapping, 1)


# --------------------------------------------------------------------------- Net2DeeperNet

def _identity_bn_(bn: _BN) -> _BN:
    """Exact eval-mode identity before calibration: mean 0, var ``1 - eps``, gamma 1, beta 0."""
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
    return bn


def net2deeper_conv(channels: int, kernel_size: int, *, noise: float = 0.0,
                    generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> nn.Sequential:
    """Identity ``conv → BN → ReLU`` block to insert after a post-ReLU layer with ``channels`` maps.

    The ``K×K`` conv (stride 1, padding ``K//2``, no bias) is zero except the centre tap of
    filter ``c`` on input channel ``c``, which is 1. With ``noise > 0`` the whole kernel gets
    Gaussian noise of std ``noise × std(kernel)`` (EAS: ``1e-3``). The BN is an exact eval-mode
    identity until :func:`calibrate_identity_bn` / :func:`calibrate_inserted` sets it from data.

    Returns:
        ``nn.Sequential(conv, bn, relu)``.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError('kernel_size', f'must be a positive odd number, got {kernel_size}')
    conv = nn.Conv2d(channels, channels, kernel_size, stride=1, padding=kernel_size // 2, bias=False,
                     device=device, dtype=dtype)
    with torch.no_grad():
        w = torch.zeros_like(conv.weight)
        c = torch.arange(channels)
        w[c, c, kernel_size // 2, kernel_size // 2] = 1.0
        if noise > 0:
            w += _relative_noise(w, w.shape, noise, generator)
        conv.weight.copy_(w)
    bn = _identity_bn_(nn.BatchNorm2d(channels, device=device, dtype=dtype))
    bn.needs_calibration = True
    return nn.Sequential(conv, bn, nn.ReLU())


def net2deeper_linear(units: int, *, noise: float = 0.0, generator: torch.Generator | None = None,
                      dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> nn.Sequential:
    """Identity ``linear → BN1d → ReLU`` block (identity weight, zero bias).

    With ``noise > 0`` the weight gets Gaussian noise of std ``noise × std(weight)``. The BN is
    an eval-mode identity until calibrated. Returns ``nn.Sequential(linear, bn, relu)``.
    """
    fc = nn.Linear(units, units, device=device, dtype=dtype)
    with torch.no_grad():
        w = torch.eye(units, dtype=fc.weight.dtype, device=fc.weight.device)
        if noise > 0:
            w += _relative_noise(w, w.shape, noise, generator)
        fc.weight.copy_(w)
        fc.bias.zero_()
    bn = _identity_bn_(nn.BatchNorm1d(units, device=device, dtype=dtype))
    bn.needs_calibration = True
    return nn.Sequential(fc, bn, nn.ReLU())


# --------------------------------------------------------------------------- BN calibration

def calibrate_identity_bn(bn: _BN, activations: torch.Tensor) -> _BN:
    """Make ``bn`` the identity for inputs distributed like ``activations`` (in place).

    Sets ``running_mean = beta = mean`` and ``running_var = var`` (biased, per channel over all
    other dims) and ``gamma = sqrt(var + eps)``, so that ``BN(x) = x`` for every ``x`` in eval
    mode, and the training-mode normalisation of ``activations`` itself is the identity too.

    Args:
        bn: ``BatchNorm1d``/``BatchNorm2d`` with affine parameters and running statistics.
        activations: the preceding layer's output, ``(N, C)`` or ``(N, C, H, W)`` — for a
            deeper block inserted after a ReLU, non-negative, so the block's ReLU keeps it.

    Returns:
        ``bn`` itself.
    """
    mean, var = _channel_stats(bn, activations)
    with torch.no_grad():
        target = bn.running_mean
        bn.running_mean.copy_(mean.to(target))
        bn.running_var.copy_(var.to(target))
        bn.bias.copy_(mean.to(bn.bias))
        bn.weight.copy_(torch.sqrt(var + bn.eps).to(bn.weight))
    return bn


def _channel_stats(bn: _BN, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance (float64) of ``activations`` for ``bn`` (checked)."""
    if not (bn.affine and bn.track_running_stats):
        raise ConfigError('bn', 'needs affine parameters and running statistics')
    a = activations.detach()
    if a.dim() < 2 or a.shape[1] != bn.num_features:
        raise ConfigError('activations', f'expected shape (N, {bn.num_features}, ...), got {tuple(a.shape)}')
    dims = [d for d in range(a.dim()) if d != 1]
    a64 = a.double()
    return a64.mean(dim=dims), a64.var(dim=dims, unbiased=False)


def recalibrate_bn(bn: _BN, activations: torch.Tensor) -> _BN:
    """Give ``bn`` the statistics of ``activations`` without changing its eval-mode function.

    ``bn`` computes ``a·x + b`` per channel in eval mode (``a = γ/sqrt(var + eps)``,
    ``b = β − a·mean``). This sets ``running_mean``/``running_var`` to the activations' mean and
    biased variance and ``γ = a·sqrt(var' + eps)``, ``β = b + a·mean'``: the same ``a·x + b`` in
    eval mode, and in training mode the batch statistics of ``activations`` give it too. For a BN
    that is an identity this is :func:`calibrate_identity_bn`; the EAS Eq. 5 DenseNet layer's BNs
    (shifts, sign flips, constant channels) use it (``needs_calibration = 'affine'``).
    """
    mean, var = _channel_stats(bn, activations)
    with torch.no_grad():
        slope = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = bn.bias.double() - slope * bn.running_mean.double()
        bn.running_mean.copy_(mean.to(bn.running_mean))
        bn.running_var.copy_(var.to(bn.running_var))
        bn.weight.copy_((slope * torch.sqrt(var + bn.eps)).to(bn.weight))
        bn.bias.copy_((shift + slope * mean).to(bn.bias))
    return bn


def collect_activations(model: nn.Module, module: nn.Module, batch: torch.Tensor, *,
                        output: bool = True) -> torch.Tensor:
    """Run ``batch`` through ``model`` in eval mode and return what ``module`` saw.

    Args:
        model: the whole network; its training flag is restored afterwards.
        module: a submodule of ``model`` (hooked with a forward hook).
        batch: network input (e.g. 64 training images).
        output: return the module's output (default) or, if ``False``, its first input.

    Returns:
        The detached activation tensor.
    """
    return _collect(model, [module], batch, output=output)[0]


def _collect(model: nn.Module, modules: Sequence[nn.Module], batch: torch.Tensor, *,
             output: bool) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}

    def hook(i):
        def fn(mod, inputs, out):
            seen[i] = (out if output else inputs[0]).detach()
        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(batch)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    missing = [i for i in range(len(modules)) if i not in seen]
    if missing:
        raise ConfigError('module', f'{type(modules[missing[0]]).__name__} was not called in the forward pass')
    return [seen[i] for i in range(len(modules))]


def calibrate_inserted(model: nn.Module, batch: torch.Tensor) -> list[_BN]:
    """Calibrate every not-yet-calibrated deeper-block BN of ``model`` from one pass of ``batch``.

    BNs created by :func:`net2deeper_conv` / :func:`net2deeper_linear` carry
    ``needs_calibration = True`` (kept through :func:`gather_bn`). Uncalibrated, they are exact
    eval-mode identities, so all of them can be calibrated together once an episode's deeper
    steps are done (as the EAS authors' code does). Each BN's statistics come from its own input, i.e. the new
    identity layer applied to the preceding layer's output — equal to that output when
    ``noise == 0``, and with noise it makes the training-mode normalisation of the batch the
    exact identity. BNs flagged ``'affine'`` keep their eval-mode map instead
    (:func:`recalibrate_bn`). Use :func:`collect_activations` + :func:`calibrate_identity_bn` to calibrate
    from another tensor.

    Returns:
        The calibrated BN modules (their flag is cleared).
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and getattr(m, 'needs_calibration', False)]
    if not bns:
        return []
    for bn, acts in zip(bns, _collect(model, bns, batch, output=False)):
        if bn.needs_calibration == 'affine':
            recalibrate_bn(bn, acts)  # keep its eval-mode affine map (EAS Eq. 5 DenseNet layer)
        else:
            calibrate_identity_bn(bn, acts)
        bn.needs_calibration = False
    return bns


# --------------------------------------------------------------------------- flat Sequential helpers

def _next_weighted(seq: nn.Sequential, index: int) -> tuple[int, int | None]:
    """Index of the next Conv2d/Linear after ``index`` and of a BN right after ``index``."""
    bn_index = index + 1 if index + 1 < len(seq) and isinstance(seq[index + 1], _BN) else None
    for j in range(index + 1, len(seq)):
        if isinstance(seq[j], (nn.Conv2d, nn.Linear)):
            return j, bn_index
    raise ConfigError('index', f'layer {index} has no consumer (the final classifier is never widened)')


def widen_sequential(seq: nn.Sequential, index: int, new_width: int, *, noise: float = 0.0,
                     generator: torch.Generator | None = None) -> nn.Sequential:
    """Widen layer ``seq[index]`` of a flat plain network, preserving its function.

    ``seq`` is a flat ``nn.Sequential`` of conv/linear layers, each optionally followed by its
    BN, with ReLUs, pools and a ``Flatten`` in between (what :func:`deepen_sequential` keeps).
    The consumer is the next conv/linear; a flattened ``C×H×W`` consumer is detected from its
    input size. Returns a new ``nn.Sequential``; unchanged modules are shared with ``seq``.
    """
    layer = seq[index]
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise ConfigError('index', f'seq[{index}] is {type(layer).__name__}, not a Conv2d/Linear')
    j, bn_index = _next_weighted(seq, index)
    bn = seq[bn_index] if bn_index is not None else None
    res = _wider(layer, bn, seq[j], new_width, noise, generator, None, None, None)
    mods = list(seq)
    mods[index], mods[j] = res.layer, res.next_layer
    if bn_index is not None:
        mods[bn_index] = res.bn
    return nn.Sequential(*mods)


def deepen_sequential(seq: nn.Sequential, after: int, *, kernel_size: int = 3, noise: float = 0.0,
                      generator: torch.Generator | None = None) -> nn.Sequential:
    """Insert an identity deeper block right after ``seq[after]``, whose output must be ``>= 0``.

    The block is a conv block (``kernel_size``) when the last weighted layer up to ``after`` is a
    convolution and no ``Flatten`` lies in between, otherwise a linear block; its three modules
    are inserted flat at ``after + 1 .. after + 3``. Calibrate the new BNs with
    :func:`calibrate_inserted` when all deeper steps are done.
    """
    width, is_conv, ref = None, True, None
    for m in reversed(list(seq)[: after + 1]):
        if isinstance(m, nn.Flatten):
            is_conv = False
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            width, ref = m.weight.shape[0], m.weight
            is_conv = is_conv and isinstance(m, nn.Conv2d)
            break
    if width is None:
        raise ConfigError('after', f'no conv/linear layer at or before seq[{after}]')
    kw = dict(noise=noise, generator=generator, dtype=ref.dtype, device=ref.device)
    block = net2deeper_conv(width, kernel_size, **kw) if is_conv else net2deeper_linear(width, **kw)
    mods = list(seq)
    mods[after + 1:after + 1] = list(block)
    return nn.Sequential(*mods)


# --------------------------------------------------------------------------- the initializer

@INITIALIZERS.register('net2net', description="the parent's trained weights through function-preserving transforms (EAS)")
def net2net(model: nn.Module, init: dict, ctx: Any) -> None:
    """Start ``model`` as a function-preserving transform of the parent checkpoint.

    ``init``: ``uri`` (+ optional ``sha256``) of the parent checkpoint, ``ops`` (the transform
    sequence, in the space's operation format), ``noise`` (default true: 1e-2 on widened copies,
    1e-3 on new layers), ``calibration_images`` (default 64 training images for the new BNs).
    Works for any space with the ``net2net_transform`` and ``architecture_of`` hooks
    (:mod:`nni_xfer.space`; ``eas_plain_cnn``, ``eas_densenet``).
    """
    from ..checkpoint import load_checkpoint
    from ..errors import CheckpointError
    from ..space import space_hook

    allowed = ['kind', 'uri', 'sha256', 'ops', 'noise', 'calibration_images']
    for key in init:
        if key not in allowed:
            raise ConfigError(f'init.{key}', "unknown key for init kind 'net2net'", allowed=allowed)
    if 'uri' not in init:
        raise ConfigError('init.uri', "required for init kind 'net2net'")
    space = ctx.space()
    transform = space_hook(ctx.spec.space, 'net2net_transform', field='init.kind')
    architecture_of = space_hook(ctx.spec.space, 'architecture_of', field='init.kind')
    ckpt = load_checkpoint(init['uri'], init.get('sha256'))
    parent_arch = ckpt.get('architecture')
    try:
        parent = space.freeze(parent_arch)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint's architecture is not one of space {ctx.spec.space!r} "
                              f"({exc}): {init['uri']}") from exc
    try:
        parent.load_state_dict(ckpt['state_dict'])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint does not fit its architecture ({str(exc).splitlines()[0]}): "
                              f"{init['uri']}") from exc
    gen = torch.Generator().manual_seed(int(ctx.spec.seed))
    ops, noise = list(init.get('ops', [])), bool(init.get('noise', True))
    child = transform(parent, ops, noise=noise, generator=gen)
    got, want = architecture_of(child), architecture_of(model)
    if got != want:
        raise ConfigError('init.ops', f'transforming the parent gives {got}, not the trial architecture {want}')
    n = int(init.get('calibration_images', 64))
    if any(getattr(m, 'needs_calibration', False) for m in child.modules()):
        batch = ctx.splits().sample_images(n).cpu()
        child.eval()
        calibrate_inserted(child, batch)
    model.load_state_dict(child.state_dict())
