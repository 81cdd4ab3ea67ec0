"""EAS network transformations on token networks, and the ``net2net`` initializer.

A transformation sequence is a list of operations on a parent's token list (methods.md §1.4–1.6):

- ``{'op': 'wider', 'layer': i, 'width': w}``: layer ``i`` (conv or fc) gets ``w`` units
  (Net2Wider; the next weighted layer's inputs are replicated and divided by the copy count);
- ``{'op': 'deeper', 'after': i, 'kernel': k}``: a new identity layer is inserted after layer ``i``:
  ``conv-<C>-<k>`` (C = channels there) inside the conv part, ``fc-<units>`` after the global pool.

:func:`transform_tokens` gives the child's tokens (:func:`transform_densenet_arch` the child's
DenseNet architecture dict); :func:`transform_network` builds the child
network from the parent's weights so that it computes the same function (noise aside). New BNs are
calibrated from real training images once all operations are applied (methods.md §1.6).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from .checkpoint import load_checkpoint
from .errors import CheckpointError, ConfigError
from .registry import INITIALIZERS
from .transforms.net2net import (calibrate_inserted, net2deeper_conv, net2deeper_linear, net2wider_conv,
                                 net2wider_linear)

WIDER_NOISE = 1e-2
DEEPER_NOISE = 1e-3


def _kind(tok: str) -> str:
    return 'conv' if tok.startswith('conv-') else 'fc' if tok.startswith('fc-') else 'pool'


def _width(tokens: list[str], i: int, in_channels: int) -> int:
    """Channels/units of the output of layer ``i``."""
    for tok in reversed(tokens[:i + 1]):
        if tok != 'pool':
            return int(tok.split('-')[1])
    return in_channels


def _gpool(tokens: list[str]) -> int:
    return max(i for i, t in enumerate(tokens) if t == 'pool')


def transform_tokens(tokens: list[str], ops: list[dict], in_channels: int = 3) -> list[str]:
    """The child's token list after ``ops`` (validated; errors name ``init.ops[k]``)."""
    tokens = list(tokens)
    for k, op in enumerate(ops):
        field = f'init.ops[{k}]'
        if not isinstance(op, dict) or op.get('op') not in ('wider', 'deeper'):
            raise ConfigError(field, f'expected a wider/deeper operation, got {op!r}', allowed=['wider', 'deeper'])
        if op['op'] == 'wider':
            i, w = op.get('layer'), op.get('width')
            if not isinstance(i, int) or not 0 <= i < len(tokens) or _kind(tokens[i]) == 'pool':
                raise ConfigError(f'{field}.layer', f'{i!r} is not a conv/fc layer of {tokens}')
            old = int(tokens[i].split('-')[1])
            if not isinstance(w, int) or w < old:
                raise ConfigError(f'{field}.width', f'{w!r} must be an integer >= the current width {old}')
            parts = tokens[i].split('-')
            parts[1] = str(w)
            tokens[i] = '-'.join(parts)
        else:
            i = op.get('after')
            if not isinstance(i, int) or not 0 <= i < len(tokens):
                raise ConfigError(f'{field}.after', f'{i!r} is not a layer index of {tokens}')
            width = _width(tokens, i, in_channels)
            if i >= _gpool(tokens):
                tokens.insert(i + 1, f'fc-{width}')
            else:
                k = op.get('kernel', 3)
                if k not in (1, 3, 5, 7):
                    raise ConfigError(f'{field}.kernel', f'{k!r}', allowed=[1, 3, 5, 7])
                tokens.insert(i + 1, f'conv-{width}-{k}')
    return tokens


def transform_densenet_arch(arch: dict, ops: list[dict]) -> dict:
    """The child's DenseNet architecture dict after ``ops`` (pure; validated like
    :func:`transform_densenet`, errors name ``init.ops[k]``).

    ``wider`` sets the layer's growth, ``deeper`` inserts a copy of the chosen layer's growth right
    after it, ``widen_stem``/``widen_transition`` set that width; transition widths never change
    otherwise. ``transform_densenet(net, ops).architecture() == transform_densenet_arch(arch, ops)``.
    """
    growths = [list(b) for b in arch['growths']]
    stem, transitions = arch['stem'], list(arch['transitions'])

    def index(field, value, n, what):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
            raise ConfigError(field, f'{value!r} is not a {what} index (0..{n - 1})')
        return value

    def width(field, value, old):
        if not isinstance(value, int) or isinstance(value, bool) or value < old:
            raise ConfigError(field, f'{value!r} must be an integer >= the current width {old}')
        return value

    kinds = ['wider', 'deeper', 'widen_stem', 'widen_transition']
    for k, op in enumerate(ops):
        field = f'init.ops[{k}]'
        kind = op.get('op') if isinstance(op, dict) else None
        if kind not in kinds:
            raise ConfigError(field, f'unknown DenseNet operation {op!r}', allowed=kinds)
        needed = {'wider': ('block', 'layer', 'growth'), 'deeper': ('block', 'layer'),
                  'widen_stem': ('channels',), 'widen_transition': ('index', 'channels')}[kind]
        for key in needed:
            if key not in op:
                raise ConfigError(f'{field}.{key}', 'missing')
        if kind in ('wider', 'deeper'):
            b = index(f'{field}.block', op['block'], len(growths), 'block')
            l = index(f'{field}.layer', op['layer'], len(growths[b]), f'layer (block {b})')
            if kind == 'wider':
                growths[b][l] = width(f'{field}.growth', op['growth'], growths[b][l])
            else:
                growths[b].insert(l + 1, growths[b][l])
        elif kind == 'widen_stem':
            stem = width(f'{field}.channels', op['channels'], stem)
        else:
            i = index(f'{field}.index', op['index'], len(transitions), 'transition')
            transitions[i] = width(f'{field}.channels', op['channels'], transitions[i])
    return {'growths': growths, 'stem': stem, 'transitions': transitions}


def _weighted(layer: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(conv or linear, its BN) of a token module."""
    return layer[0], layer[1]


def transform_network(net: nn.Module, ops: list[dict], *, noise: bool = True,
                      generator: torch.Generator | None = None) -> nn.Module:
    """Apply ``ops`` to a :class:`~nni_xfer.search_spaces.eas_plain_cnn.PlainCNNNet` (a new network).

    Inserted BNs are eval-mode identities flagged ``needs_calibration``; call
    :func:`nni_xfer.transforms.net2net.calibrate_inserted` with real images afterwards.
    """
    net = copy.deepcopy(net)
    in_channels = net.layers[0][0].in_channels if _kind(net.tokens[0]) == 'conv' else None
    for op in ops:
        tokens = net.tokens
        new_tokens = transform_tokens(tokens, [op], in_channels or 3)
        layers = list(net.layers)
        if op['op'] == 'wider':
            i = op['layer']
            j = next((j for j in range(i + 1, len(tokens)) if _kind(tokens[j]) != 'pool'), None)
            layer, bn = _weighted(layers[i])
            nxt = layers[j][0] if j is not None else net.classifier
            fn = net2wider_conv if isinstance(layer, nn.Conv2d) else net2wider_linear
            res = fn(layer, bn, nxt, op['width'], noise=WIDER_NOISE if noise else 0.0, generator=generator)
            layers[i] = nn.Sequential(res.layer, res.bn, nn.ReLU(inplace=True))
            if j is not None:
                layers[j] = nn.Sequential(res.next_layer, *list(layers[j])[1:])
            else:
                net.classifier = res.next_layer
        else:
            i = op['after']
            width = _width(tokens, i, in_channels or 3)
            if i >= _gpool(tokens):
                block = net2deeper_linear(width, noise=DEEPER_NOISE if noise else 0.0, generator=generator)
            else:
                block = net2deeper_conv(width, op.get('kernel', 3), noise=DEEPER_NOISE if noise else 0.0,
                                        generator=generator)
            layers.insert(i + 1, block)
        net.layers = nn.ModuleList(layers)
        net.tokens = new_tokens
    return net


DENSENET_NOISE = 1e-2


def transform_densenet(net: nn.Module, ops: list[dict], *, noise: bool = True,
                       generator: torch.Generator | None = None) -> nn.Module:
    """Apply DenseNet ops to a :class:`~nni_xfer.transforms.densenet_ops.DenseNetBC` (a new network).

    Ops: ``{'op': 'wider', 'block': b, 'layer': l, 'growth': k}`` (paper Eq. 4),
    ``{'op': 'deeper', 'block': b, 'layer': l}`` (duplicate layer, methods.md §1.7),
    ``{'op': 'widen_stem', 'channels': c}``, ``{'op': 'widen_transition', 'index': i, 'channels': c}``.
    """
    from .transforms.densenet_ops import (densenet_deeper, densenet_wider, densenet_widen_stem,
                                          densenet_widen_transition)
    eps = DENSENET_NOISE if noise else 0.0
    for k, op in enumerate(ops):
        field = f'init.ops[{k}]'
        kind = op.get('op') if isinstance(op, dict) else None
        try:
            if kind == 'wider':
                net = densenet_wider(net, op['block'], op['layer'], op['growth'], noise=eps, generator=generator)
            elif kind == 'deeper':
                net = densenet_deeper(net, op['block'], op['layer'], noise=eps, generator=generator)
            elif kind == 'widen_stem':
                net = densenet_widen_stem(net, op['channels'], noise=eps, generator=generator)
            elif kind == 'widen_transition':
                net = densenet_widen_transition(net, op['index'], op['channels'], noise=eps, generator=generator)
            else:
                raise ConfigError(field, f'unknown DenseNet operation {op!r}',
                                  allowed=['wider', 'deeper', 'widen_stem', 'widen_transition'])
        except KeyError as exc:
            raise ConfigError(f'{field}.{exc.args[0]}', 'missing') from exc
        except ConfigError as exc:
            if exc.field.startswith('init.'):
                raise
            raise ConfigError(f'{field}.{exc.field}', exc.message, exc.allowed) from exc
    return net


@INITIALIZERS.register('net2net', description="EAS: the parent's trained weights through function-preserving transforms")
def net2net(model: nn.Module, init: dict, ctx: Any) -> None:
    """Start ``model`` as a function-preserving transform of the parent checkpoint.

    ``init``: ``uri`` (+ optional ``sha256``) of the parent checkpoint, ``ops`` (the transform
    sequence), ``noise`` (default true: 1e-2 on widened copies, 1e-3 on new layers),
    ``calibration_images`` (default 64 training images for the new BNs).
    """
    allowed = ['kind', 'uri', 'sha256', 'ops', 'noise', 'calibration_images']
    for key in init:
        if key not in allowed:
            raise ConfigError(f'init.{key}', "unknown key for init kind 'net2net'", allowed=allowed)
    if 'uri' not in init:
        raise ConfigError('init.uri', "required for init kind 'net2net'")
    ckpt = load_checkpoint(init['uri'], init.get('sha256'))
    parent_arch = ckpt.get('architecture')
    if not isinstance(parent_arch, dict) or not ({'layers', 'growths'} & set(parent_arch)):
        raise CheckpointError(f"checkpoint has no EAS architecture ('layers' or 'growths'): {init['uri']}")
    parent = ctx.space().freeze(parent_arch)
    try:
        parent.load_state_dict(ckpt['state_dict'])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint does not fit its architecture ({str(exc).splitlines()[0]}): "
                              f"{init['uri']}") from exc
    gen = torch.Generator().manual_seed(int(ctx.spec.seed))
    ops, noise = list(init.get('ops', [])), bool(init.get('noise', True))
    if 'growths' in parent_arch:
        child = transform_densenet(parent, ops, noise=noise, generator=gen)
        got, want = child.architecture(), model.architecture()
    else:
        child = transform_network(parent, ops, noise=noise, generator=gen)
        got, want = child.tokens, list(getattr(model, 'tokens', []))
    if got != want:
        raise ConfigError('init.ops', f'transforming the parent gives {got}, not the trial architecture {want}')
    n = int(init.get('calibration_images', 64))
    if any(getattr(m, 'needs_calibration', False) for m in child.modules()):
        batch = ctx.splits().train_x[:n].cpu()
        child.eval()
        calibrate_inserted(child, batch)
    model.load_state_dict(child.state_dict())
