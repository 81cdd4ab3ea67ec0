"""Width/depth parameter sharing (EAT-NAS §3.4, Algorithm 2, Eq. 4/5) as initializer ``eatnas_share``.

A child network starts from a trained parent's checkpoint without being function-preserving:

- width level (Algorithm 2): every tensor of a shared layer gets the overlapping slice of the
  parent's tensor — the first min(C_out) filters, the first min(C_in) input channels, the first
  min(n) entries of 1-D parameters and BN statistics; the rest keeps its fresh initialisation
  (``widen: random``, the paper: "the rest part of K_l is randomly initialized"). Spatial
  dimensions are aligned at the centre (only met with ``kernel_mismatch: center``);
- ``widen: zero`` (beyond the paper, measured in ``benchmarks/bench_eatnas_sharing.py``): where a
  shared weight has more input channels than the parent's, the new input slice starts at zero, so
  the new channels a wider layer produces do not reach its consumers yet and a child that only
  widens computes its parent's function (``inherited_acc`` = the parent's accuracy); the new
  filters themselves keep their fresh initialisation and learn from the first step;
- depth level (Eq. 4/5): layer j of a block shares from the parent's layer j; extra layers are
  fresh (``depth_extra: random``, the paper) or copy the parent block's last layer
  (``copy_last``); the parent's surplus layers are dropped;
- which child layer shares from which parent layer is the space's business: its grammar (the
  ``grammar`` hook of :mod:`nni_xfer.space`) provides ``share_plan(child_arch, parent_arch,
  **options)`` mapping child module names to parent module names (``None``: fresh). Entries given as
  ``{'src': name, 'exact': True}`` share only when every tensor has the same shape (stem and
  classifier across tasks with another input or class count are then re-initialised).

The trial reports ``shared_fraction`` (inherited parameter elements / all parameter elements of
the child) and ``shared_params``; ``inherited_acc`` (accuracy before training) comes from the
evaluator as for every trial.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from nni_xfer.checkpoint import load_checkpoint
from nni_xfer.errors import CheckpointError, ConfigError
from nni_xfer.registry import INITIALIZERS
from nni_xfer.space import space_hook

DEPTH_EXTRA = ('random', 'copy_last')
KERNEL_MISMATCH = ('none', 'center')
WIDEN = ('random', 'zero')
INIT_KEYS = ('kind', 'uri', 'sha256', 'parent', 'depth_extra', 'kernel_mismatch', 'widen', 'parent_architecture')


def _overlap(d: int, s: int, centre: bool) -> tuple[slice, slice]:
    m = min(d, s)
    if not centre:
        return slice(0, m), slice(0, m)
    a, b = (d - m) // 2, (s - m) // 2
    return slice(a, a + m), slice(b, b + m)


@torch.no_grad()
def copy_overlap(dst: torch.Tensor, src: torch.Tensor) -> int:
    """Copy the overlapping part of ``src`` into ``dst`` in place; return the elements copied.

    Leading dimensions (channels, features) overlap at the start; the spatial dimensions of a
    conv kernel (dims 2, 3 of a 4-D tensor) at the centre. Tensors of different rank share nothing.
    """
    if dst.dim() != src.dim():
        return 0
    if dst.dim() == 0:
        dst.copy_(src.to(dst.dtype))
        return 1
    dst_idx, src_idx = [], []
    for dim, (d, s) in enumerate(zip(dst.shape, src.shape)):
        a, b = _overlap(d, s, centre=dim >= 2)
        dst_idx.append(a)
        src_idx.append(b)
    part = src[tuple(src_idx)]
    dst[tuple(dst_idx)] = part.to(device=dst.device, dtype=dst.dtype)
    return part.numel()


def _resolve(name: str, plan: dict) -> tuple[str | None, bool]:
    """(parent tensor name, exact-shape-only) for a child tensor name, via its longest plan prefix."""
    best = None
    for key in plan:
        if (name == key or name.startswith(key + '.')) and (best is None or len(key) > len(best)):
            best = key
    if best is None or plan[best] is None:
        return None, False
    entry = plan[best]
    src, exact = (entry['src'], bool(entry.get('exact'))) if isinstance(entry, dict) else (entry, False)
    return src + name[len(best):], exact


@torch.no_grad()
def share_state(model: nn.Module, parent_state: dict[str, torch.Tensor], plan: dict,
                widen: str = 'random') -> tuple[int, int]:
    """Share ``parent_state`` into ``model`` following ``plan``; return (inherited, total) parameter elements.

    Buffers (BN running statistics) are shared the same way but not counted. ``widen: zero``: a
    shared weight (2-D or more) with more input channels (dim 1) than the parent's gets zeros in
    the new input slice (not counted as inherited), and an entry ``{'src': name, 'identity': True}``
    whose parent has no tensor under ``name`` (an identity shortcut the child replaces by a 1×1
    projection because its layer widens) starts as an identity map on the overlapping channels.
    """
    if widen not in WIDEN:
        raise ConfigError('widen', f'unknown value {widen!r}', allowed=WIDEN)
    # Exact entries: all of the module's tensors must match in shape, else the module stays fresh.
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    plan = dict(plan)
    for key, entry in list(plan.items()):
        if isinstance(entry, dict) and entry.get('exact'):
            names = [n for n in own if n == key or n.startswith(key + '.')]
            for n in names:
                src = entry['src'] + n[len(key):]
                if src not in parent_state or tuple(parent_state[src].shape) != tuple(own[n].shape):
                    plan[key] = None
                    break
    shared = total = 0
    params = {n for n, _ in model.named_parameters()}
    if widen == 'zero':
        for key, entry in plan.items():
            if isinstance(entry, dict) and entry.get('identity') and \
                    not any(n == entry['src'] or n.startswith(entry['src'] + '.') for n in parent_state):
                try:
                    module = model.get_submodule(key)
                except AttributeError:   # the child has none either (an identity residual too)
                    continue
                _identity(module)
                plan[key] = None
    for name, tensor in own.items():
        if name in params:
            total += tensor.numel()
        src, _ = _resolve(name, plan)
        if src is None or src not in parent_state:
            continue
        dst, parent = (tensor.data if isinstance(tensor, nn.Parameter) else tensor), parent_state[src]
        n = copy_overlap(dst, parent)
        if widen == 'zero' and name in params and n and dst.dim() >= 2 and dst.shape[1] > parent.shape[1]:
            dst[:, parent.shape[1]:] = 0
        if name in params:
            shared += n
    return shared, total


@torch.no_grad()
def _identity(module: nn.Module) -> None:
    """A 1×1 conv (+ BN) as the identity on the overlapping channels (zeros elsewhere)."""
    for mod in module.modules():
        if isinstance(mod, nn.Conv2d) and mod.groups == 1:
            mod.weight.zero_()
            n = min(mod.weight.shape[0], mod.weight.shape[1])
            c = (mod.weight.shape[2] // 2, mod.weight.shape[3] // 2)
            mod.weight[range(n), range(n), c[0], c[1]] = 1.0
            if mod.bias is not None:
                mod.bias.zero_()
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if mod.affine:
                mod.weight.fill_(1.0)
                mod.bias.zero_()
            if mod.track_running_stats:
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0 - mod.eps)


@INITIALIZERS.register('eatnas_share', description='EAT-NAS width/depth parameter sharing from a parent checkpoint '
                                                   '(overlapping slices; extra layers fresh)')
def eatnas_share(model: nn.Module, init: dict, ctx: Any = None) -> None:
    """Initialise ``model`` from the parent checkpoint ``init['uri']`` by EAT-NAS parameter sharing."""
    for key in init:
        if key not in INIT_KEYS:
            raise ConfigError(f'init.{key}', "unknown key for init kind 'eatnas_share'", allowed=INIT_KEYS)
    if 'uri' not in init:
        raise ConfigError('init.uri', "required for init kind 'eatnas_share'")
    depth_extra = init.get('depth_extra', 'random')
    if depth_extra not in DEPTH_EXTRA:
        raise ConfigError('init.depth_extra', f'unknown value {depth_extra!r}', allowed=DEPTH_EXTRA)
    kernel_mismatch = init.get('kernel_mismatch', 'none')
    if kernel_mismatch not in KERNEL_MISMATCH:
        raise ConfigError('init.kernel_mismatch', f'unknown value {kernel_mismatch!r}', allowed=KERNEL_MISMATCH)
    widen = init.get('widen', 'random')
    if widen not in WIDEN:
        raise ConfigError('init.widen', f'unknown value {widen!r}', allowed=WIDEN)
    ckpt = load_checkpoint(init['uri'], init.get('sha256'))
    state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    if state is None:
        raise CheckpointError(f"checkpoint has no 'state_dict': {init['uri']}")
    space = ctx.spec.space
    if ckpt.get('space') not in (None, space):
        raise ConfigError('init.uri', f"checkpoint is of space {ckpt.get('space')!r}, the trial's is {space!r}")
    parent_arch = init.get('parent_architecture') or ckpt.get('architecture')
    if parent_arch is None:
        raise CheckpointError(f"checkpoint records no architecture: {init['uri']}")
    grammar = space_hook(space, 'grammar', needs=('share_plan',), field='init.kind')
    options = {'depth_extra': depth_extra, 'kernel_mismatch': kernel_mismatch}
    if widen != 'random':   # spaces without the option keep working with the paper's
        options['widen'] = widen
    plan = grammar.share_plan(ctx.spec.architecture, parent_arch, **options)
    shared, total = share_state(model, state, plan, widen=widen)
    fraction = shared / total if total else 0.0
    extra = getattr(ctx, 'extra_metrics', None)
    if isinstance(extra, dict):
        extra.update(shared_fraction=fraction, shared_params=shared)
    if hasattr(ctx, 'progress'):
        ctx.progress(f'eatnas_share: inherited {shared}/{total} parameters ({fraction:.1%}) from {init["uri"]}')
