"""Cut torchvision CNNs into ModuleNet cells (paper Sec. III-B, Fig. 2): conv layers + the following reduction.

Supported families (:data:`SOURCES`): ResNet 18/34/50/101 and VGG 11/13/16/19 with and without BN,
as built by torchvision (same module names and ``state_dict`` keys), optionally narrower
(``width`` < 1, for a zoo that trains on a CPU) and with a different number of input channels.

- ResNet → 5 cells: stem (conv1, bn1, relu, maxpool), layer1, layer2, layer3, layer4. The paper
  removes the first max pool for 32×32 inputs (``small_input``).
- VGG → 5 cells: ``features`` cut after each of its five max pools.

Cells share the network's parameters; :func:`reassemble` (cells + :func:`head_of`) computes exactly
what the network computes. Fewer cells (``cells`` < 5) merge neighbouring stages, deeper groups larger.

:func:`reductions` lists a module's own spatial reductions (pools, strided convs, strided residual
blocks) and :func:`drop_reductions` removes the last ones without touching any weight — how a chain
adjusts the preceding module's reduction (paper Sec. III-B) instead of upsampling.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from nni_xfer.errors import ConfigError

RESNETS = {'resnet18': ('BasicBlock', [2, 2, 2, 2]), 'resnet34': ('BasicBlock', [3, 4, 6, 3]),
           'resnet50': ('Bottleneck', [3, 4, 6, 3]), 'resnet101': ('Bottleneck', [3, 4, 23, 3])}
VGGS = {'vgg11': 'A', 'vgg13': 'B', 'vgg16': 'D', 'vgg19': 'E'}
SOURCES = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn',
           'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn')


@dataclass
class Cell:
    """One cell of a decomposed network (a knowledge-base module once its weights are saved)."""

    module: nn.Module
    index: int          # 0-based position
    in_channels: int
    out_channels: int
    reduction: int      # spatial down-sampling factor of this cell


def _check_arch(arch: str) -> str:
    if arch not in SOURCES:
        raise ConfigError('arch', f'{arch!r} is not a supported source family', allowed=SOURCES)
    return arch


def _scaled(c: int, width: float) -> int:
    return c if width == 1 else max(8, int(round(c * width)))


def _init_like_torchvision(modules) -> None:
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _resnet(arch: str, num_classes: int, in_channels: int, width: float) -> nn.Module:
    import torchvision.models as tvm
    from torchvision.models import resnet as tvr
    model = getattr(tvm, arch)(weights=None, num_classes=num_classes)
    if width == 1 and in_channels == 3:
        return model
    block_name, layers = RESNETS[arch]
    block = getattr(tvr, block_name)
    c0 = _scaled(64, width)
    model.conv1 = nn.Conv2d(in_channels, c0, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(c0)
    if width != 1:
        model.inplanes = c0
        model.layer1 = model._make_layer(block, _scaled(64, width), layers[0])
        model.layer2 = model._make_layer(block, _scaled(128, width), layers[1], stride=2)
        model.layer3 = model._make_layer(block, _scaled(256, width), layers[2], stride=2)
        model.layer4 = model._make_layer(block, _scaled(512, width), layers[3], stride=2)
        model.fc = nn.Linear(_scaled(512, width) * block.expansion, num_classes)
        _init_like_torchvision(model.modules())
    else:
        _init_like_torchvision([model.conv1, model.bn1])
    return model


def _vgg(arch: str, num_classes: int, in_channels: int, width: float) -> nn.Module:
    from torchvision.models import vgg as tvv
    bn = arch.endswith('_bn')
    cfg = [v if v == 'M' else _scaled(v, width) for v in tvv.cfgs[VGGS[arch.replace('_bn', '')]]]
    features = tvv.make_layers(cfg, batch_norm=bn)
    if width != 1:  # the 25088-4096-4096 classifier is replaced below: build it without memory or init cost
        with torch.device('meta'):
            model = tvv.VGG(nn.Sequential(), num_classes=num_classes, init_weights=False)
        model.features = features
        _init_like_torchvision(features.modules())  # torchvision's VGG init of the features
    else:
        model = tvv.VGG(features, num_classes=num_classes, init_weights=True)
    if in_channels != 3:
        first = model.features[0]
        model.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
        _init_like_torchvision([model.features[0]])
    if width != 1:  # torchvision's 25088-4096-4096 classifier would dwarf a narrow network
        last = [v for v in cfg if v != 'M'][-1]
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(last, num_classes)
        _init_like_torchvision([model.classifier])
    return model


def _torchvision_weights_file(arch: str) -> Path:
    from torchvision.models import get_model_weights
    weights = get_model_weights(arch).DEFAULT
    name = os.path.basename(weights.url)
    return Path(torch.hub.get_dir()) / 'checkpoints' / name


def build_source(arch: str, num_classes: int, in_channels: int = 3, small_input: bool = True, width: float = 1.0,
                 weights: str | None = None) -> nn.Module:
    """A torchvision network of family ``arch`` (see the module docstring).

    ``weights``: ``None`` (random init), ``'torchvision'`` (the pretrained ImageNet weights, only if
    already in the local torch hub cache; the last layer is kept fresh when ``num_classes`` != 1000),
    or the path of a ``state_dict`` file of the same family, width and input channels.
    """
    _check_arch(arch)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ConfigError('width', f'expected a positive number, got {width!r}')
    model = _resnet(arch, num_classes, in_channels, width) if arch in RESNETS else _vgg(arch, num_classes,
                                                                                        in_channels, width)
    if weights is not None:
        if weights == 'torchvision':
            if width != 1 or in_channels != 3:
                raise ConfigError('weights', 'torchvision weights need width 1 and 3 input channels')
            path = _torchvision_weights_file(arch)
            if not path.is_file():
                raise ConfigError('weights', f'pretrained torchvision weights for {arch} are not in the local cache '
                                             f'{path}; download them where there is network, or use weights: null')
        else:
            path = Path(os.path.expanduser(str(weights)))
            if not path.is_file():
                raise ConfigError('weights', f'no such file: {path}')
        state = torch.load(path, map_location='cpu', weights_only=True)
        state = state.get('state_dict', state)
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in state]
        if any(not (k.startswith('fc.') or k.startswith('classifier.')) for k in missing):
            raise ConfigError('weights', f'{path} does not fit {arch} (missing {missing[0]})')
        model.load_state_dict(state, strict=False)
    if small_input and arch in RESNETS:
        model.maxpool = nn.Identity()
    return model


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _stages(model: nn.Module, arch: str) -> list[tuple[nn.Module, int]]:
    """The 5 stages with their spatial reduction factors."""
    if arch in RESNETS:
        stem_red = model.conv1.stride[0] * (2 if isinstance(model.maxpool, nn.MaxPool2d) else 1)
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        stages = [(stem, stem_red)]
        for name in ('layer1', 'layer2', 'layer3', 'layer4'):
            layer = getattr(model, name)
            stages.append((layer, int(layer[0].stride)))
        return stages
    feats = list(model.features)
    pools = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]
    if len(pools) != 5:
        raise ConfigError('arch', f'expected 5 max pools in {arch} features, found {len(pools)}')
    stages, start = [], 0
    for p in pools:
        stages.append((nn.Sequential(*feats[start:p + 1]), 2))
        start = p + 1
    return stages


def decompose(model: nn.Module, arch: str, cells: int = 5) -> list[Cell]:
    """Cut ``model`` (a network of family ``arch``) into ``cells`` cells sharing its parameters."""
    _check_arch(arch)
    if isinstance(cells, bool) or not isinstance(cells, int) or not 1 <= cells <= 5:
        raise ConfigError('cells', f'expected an integer in 1..5, got {cells!r}')
    stages = _stages(model, arch)
    base, extra = divmod(len(stages), cells)
    sizes = [base + (1 if i >= cells - extra else 0) for i in range(cells)]  # deeper groups larger
    out, start = [], 0
    for index, size in enumerate(sizes):
        group = stages[start:start + size]
        start += size
        module = group[0][0] if size == 1 else nn.Sequential(*(m for m, _ in group))
        reduction = 1
        for _, r in group:
            reduction *= r
        convs = _convs(module)
        out.append(Cell(module, index, convs[0].in_channels, convs[-1].out_channels, reduction))
    return out


def head_of(model: nn.Module, arch: str) -> nn.Module:
    """What follows the cells: average pool, flatten, and the classifier."""
    _check_arch(arch)
    last = model.fc if arch in RESNETS else model.classifier
    return nn.Sequential(model.avgpool, nn.Flatten(1), last)


def reassemble(cells: list[Cell], head: nn.Module) -> nn.Sequential:
    """Cells in order, then the head: the original network again."""
    return nn.Sequential(*(c.module for c in cells), head)


def cell_shapes(cells: list[Cell], in_channels: int, image_size: int) -> list[tuple[int, int]]:
    """(input side, output side) of every cell for square ``image_size`` inputs (one dummy forward)."""
    modes = [(m, m.training) for c in cells for m in c.module.modules()]
    x = torch.zeros(1, in_channels, image_size, image_size)
    shapes = []
    try:
        for c in cells:
            c.module.eval()
        with torch.no_grad():
            for c in cells:
                y = c.module(x)
                shapes.append((int(x.shape[-1]), int(y.shape[-1])))
                x = y
    finally:
        for m, mode in modes:
            m.training = mode
    return shapes


def _is_block(m: nn.Module) -> bool:
    """A torchvision residual block (BasicBlock / Bottleneck): its stride lives in a conv and its shortcut."""
    return hasattr(m, 'downsample') and hasattr(m, 'stride') and hasattr(m, 'conv1')


def _stride(m: nn.Module) -> int:
    s = m.stride
    s = s[0] if isinstance(s, (tuple, list)) else s
    return int(s or 1)


def reductions(module: nn.Module) -> list[tuple[str, int]]:
    """The module's own spatial reductions in forward order: ``(qualified name, factor)``.

    A unit is a pooling layer with stride > 1, a strided residual block (its strided conv and its
    shortcut conv together) or any other strided conv.
    """
    out: list[tuple[str, int]] = []
    skip: tuple[str, ...] = ()
    for name, m in module.named_modules():
        if skip and any(name.startswith(p + '.') for p in skip):
            continue
        if _is_block(m):
            strides = [_stride(c) for c in m.modules() if isinstance(c, nn.Conv2d)]
            if max(strides, default=1) > 1:
                out.append((name, max(strides)))
            skip += (name,)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and _stride(m) > 1:
            out.append((name, _stride(m)))
        elif isinstance(m, nn.Conv2d) and _stride(m) > 1:
            out.append((name, _stride(m)))
    return out


def drop_reductions(module: nn.Module, count: int) -> list[str]:
    """Remove the last ``count`` reductions of ``module`` in place (parameter-free: no weight changes).

    A pool becomes a 1×1 window with stride 1 (an identity); a strided conv or residual block gets
    stride 1 (its 'same' padding keeps the resolution). Returns the names of the dropped units.
    """
    units = reductions(module)
    if count > len(units):
        raise ValueError(f'drop_reductions: the module has {len(units)} reductions, cannot drop {count}')
    dropped = units[len(units) - count:] if count else []
    named = dict(module.named_modules())
    for name, _ in dropped:
        m = named[name]
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            m.kernel_size, m.stride, m.padding = 1, 1, 0
            continue
        convs = [m] if isinstance(m, nn.Conv2d) else [c for c in m.modules() if isinstance(c, nn.Conv2d)]
        for c in convs:
            if _stride(c) > 1:
                c.stride = (1, 1)
        if _is_block(m):
            m.stride = 1
    return [n for n, _ in dropped]
