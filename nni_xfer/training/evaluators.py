"""Evaluators: turn an initialised network into a final metrics dict.

``train`` really trains (:class:`~nni_xfer.training.trainer.Trainer`); ``mock`` scores the architecture
in closed form without training, for fast deterministic strategy tests. Both are selectable from
``classArgs.evaluator``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..registry import EVALUATORS


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


#: Modules whose forward pass :func:`count_flops` counts (every built-in space computes with these).
FLOP_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                nn.Linear)


def _module_flops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """FLOPs of one call of a :data:`FLOP_MODULES` module, by PyTorch's FlopCounterMode formulas:
    1 MAC = 2 FLOPs, bias and activations not counted. Convolution: 2 x batch x (output positions;
    input positions when transposed) x every weight element; linear: 2 x input rows x every weight
    element (a 1-D input, a matrix-vector product, counts 0 as FlopCounterMode does)."""
    w = module.weight
    if isinstance(module, nn.Linear):
        x = inputs[0]
        return 2 * (x.numel() // x.shape[-1]) * w.numel() if x.dim() >= 2 else 0
    transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    x = inputs[0]
    batched = x.dim() == w.dim()  # Conv2d also takes an unbatched (C, H, W) input
    spatial = (x if transposed else output).shape[-(w.dim() - 2):]
    positions = 1
    for s in spatial:
        positions *= int(s)
    return 2 * (int(x.shape[0]) if batched else 1) * positions * w.numel()


def count_flops(model: nn.Module, input_shape: tuple[int, ...], method: str | None = None) -> int:
    """FLOPs of one forward pass on one input (1 MAC = 2 FLOPs).

    ``method='hooks'`` (default) counts the convolution and linear modules (:data:`FLOP_MODULES`)
    with forward hooks, by the formulas of PyTorch's ``FlopCounterMode``: the same numbers for every
    built-in space (tests/unit/core/runtime/test_trial_imports.py compares), without importing
    ``torch.utils.flop_counter``, which pulls ``torch._dynamo`` (about 1.9 s of a cold trial on a
    2-core CPU, issue 23). A plugin network that multiplies with functional calls
    (``F.conv2d``, ``torch.matmul``...) instead of modules is undercounted by hooks;
    ``method='torch'`` uses ``FlopCounterMode`` itself (every aten matmul/convolution/attention).
    The default is ``$NNI_XFER_FLOPS`` (``hooks`` or ``torch``; ``hooks`` when unset).
    """
    if method is None:
        method = os.environ.get('NNI_XFER_FLOPS') or 'hooks'
    if method not in ('hooks', 'torch'):
        raise ConfigError('NNI_XFER_FLOPS', f'unknown FLOP counter {method!r}', allowed=['hooks', 'torch'])
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    was_training = model.training
    model.eval()
    try:
        if method == 'torch':
            from torch.utils.flop_counter import FlopCounterMode
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(torch.zeros(1, *input_shape, device=device))
            return int(counter.get_total_flops())
        total = [0]

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            total[0] += _module_flops(module, inputs, output)

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, FLOP_MODULES)]
        try:
            with torch.no_grad():
                model(torch.zeros(1, *input_shape, device=device))
        finally:
            for h in handles:
                h.remove()
        return total[0]
    finally:
        model.train(was_training)


FAULT_POINTS = ('start', 'mid_train', 'checkpoint_write')


class InjectedFault(RuntimeError):
    """A failure injected on purpose (``evaluator_args.fault``)."""


@dataclass(frozen=True)
class FaultConfig:
    """``evaluator_args.fault: {rate: 0.2, where: [start, mid_train, checkpoint_write], seed: 0}``.

    Works with every evaluator and space: the trial runner strips the key before the evaluator is
    built. Whether a trial fails, and where, is a pure function of ``seed`` and the proposal id, so a
    rerun (or a resumed search) fails the same trials. Points: ``start`` (before the initializer),
    ``mid_train`` (at the evaluator's first per-epoch report; evaluators that report no epochs fail
    right after evaluating), ``checkpoint_write`` (while the checkpoint file is being written: the
    partial temp file is removed and no checkpoint appears).
    """

    rate: float = 0.0
    where: tuple[str, ...] = FAULT_POINTS
    seed: int = 0

    @classmethod
    def from_arg(cls, value: Any, field: str = 'evaluator_args.fault') -> 'FaultConfig':
        if not isinstance(value, dict):
            raise ConfigError(field, f'expected a mapping {{rate, where, seed}}, got {value!r}')
        for key in value:
            if key not in ('rate', 'where', 'seed'):
                raise ConfigError(f'{field}.{key}', 'unknown key', allowed=['rate', 'where', 'seed'])
        rate = value.get('rate', 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ConfigError(f'{field}.rate', f'expected a probability in [0, 1], got {rate!r}')
        where = value.get('where', list(FAULT_POINTS))
        if isinstance(where, str):
            where = [where]
        if not isinstance(where, (list, tuple)) or not where:
            raise ConfigError(f'{field}.where', f'expected a non-empty list, got {where!r}', allowed=FAULT_POINTS)
        for w in where:
            if w not in FAULT_POINTS:
                raise ConfigError(f'{field}.where', f'unknown point {w!r}', allowed=FAULT_POINTS)
        seed = value.get('seed', 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f'{field}.seed', f'expected an integer, got {seed!r}')
        return cls(float(rate), tuple(where), seed)

    def draw(self, proposal_id: int) -> str | None:
        """The point where this proposal's trial fails, or ``None``."""
        if self.rate <= 0.0:
            return None
        import hashlib
        digest = hashlib.sha256(f'nni-xfer-fault:{self.seed}:{int(proposal_id)}'.encode()).digest()
        u = int.from_bytes(digest[:8], 'big') / float(1 << 64)
        if u >= self.rate:
            return None
        return self.where[int.from_bytes(digest[8:16], 'big') % len(self.where)]


def make_evaluator(name: str, args: dict | None, field: str = 'evaluator') -> tuple['Evaluator', FaultConfig]:
    """The registered evaluator ``name`` built from ``evaluator_args`` (less ``fault``) and the fault setting."""
    args = dict(args or {})
    fault = FaultConfig.from_arg(args.pop('fault')) if 'fault' in args else FaultConfig()
    evaluator = EVALUATORS.get(name, field=field)(**args)
    return evaluator, fault


class Evaluator:
    """Base class: ``evaluate(model, ctx) -> metrics`` with at least ``default``."""

    def __init__(self, **args: Any):
        if args:
            key = sorted(args)[0]
            raise ConfigError(f'evaluator_args.{key}', f'unknown argument of evaluator {type(self).__name__}')

    def evaluate(self, model: nn.Module, ctx: Any) -> dict:
        raise NotImplementedError


@EVALUATORS.register('train', description='Real training: SGD Nesterov + cosine, device-resident data, AMP on CUDA')
class TrainEvaluator(Evaluator):
    """Train with :class:`~nni_xfer.training.trainer.Trainer` and report validation (and optionally test) accuracy.

    ``evaluator_args`` are :class:`~nni_xfer.training.trainer.TrainConfig` fields plus ``test`` (also report
    ``test_acc`` on the test split; off during search).
    """

    def __init__(self, test: bool = False, **train_args: Any):
        from .trainer import TrainConfig
        if not isinstance(test, bool):
            raise ConfigError('evaluator_args.test', f'expected true/false, got {test!r}')
        self.test = test
        self.config = TrainConfig.from_dict(train_args, field='evaluator_args')

    def evaluate(self, model: nn.Module, ctx: Any) -> dict:
        from .trainer import Trainer
        splits = ctx.splits()
        trainer = Trainer(self.config, log_dir=ctx.log_dir)
        model.to(trainer.device)
        splits = splits.to(trainer.device)
        inherited = trainer.evaluate_split(model, splits, 'val')
        ctx.progress(f'inherited val_acc {inherited:.4f}; training {self.config.epochs} epochs on {trainer.device}')

        def on_epoch(ep):
            ctx.report_intermediate({'default': ep.val_acc, 'val_acc': ep.val_acc, 'train_loss': ep.train_loss,
                                     'epoch': ep.epoch})
            ctx.progress(f'epoch {ep.epoch}: loss {ep.train_loss:.4f} train_acc {ep.train_acc:.4f} '
                         f'val_acc {ep.val_acc:.4f} ({ep.seconds:.1f}s)')

        if self.config.epochs == 0:  # nothing to train: the inherited pass is the result (fit would repeat it)
            from .trainer import TrainResult
            result = TrainResult(val_acc=inherited)
        else:
            result = trainer.fit(model, splits, on_epoch=on_epoch, trainable=ctx.trainable_parameters(model))
        params, trainable = count_params(model)
        metrics = {
            'default': result.val_acc,
            'val_acc': result.val_acc,
            'inherited_acc': inherited,
            'params': params,
            'trainable_params': trainable,
            'flops': count_flops(model, splits.input_shape),
            'train_seconds': result.train_seconds,
            'images_per_second': result.images_per_second,
        }
        if self.test:
            metrics['test_acc'] = trainer.evaluate_split(model, splits, 'test')
        return metrics


@EVALUATORS.register('mock', description='Closed-form deterministic score of the architecture, no training (tests)')
class MockEvaluator(Evaluator):
    """A deterministic score of the architecture in [0, 1), without training, for every space.

    Spaces of categorical labels (``space_info().dims``): the mean over labels of (index of the
    chosen value + 1) / (number of values); the optimum, 1.0, is every label at its last choice.
    Other spaces (EAS's layer lists, EAT-NAS's block lists, DenseNet growths): :meth:`structure_score`,
    which every numeric and categorical choice moves. ``fail_on`` lists proposal ids that raise (to
    exercise failure handling); ``sleep`` seconds per trial; ``noise`` adds a deterministic
    per-architecture offset in [-noise, noise].
    """

    def __init__(self, fail_on: list[int] = (), sleep: float = 0.0, noise: float = 0.0):
        from ..errors import check_number
        if isinstance(fail_on, (str, bytes, dict)) or not isinstance(fail_on, (list, tuple)):
            raise ConfigError('evaluator_args.fail_on', f'expected a list of proposal ids, got {fail_on!r}')
        self.fail_on = {check_number(i, f'evaluator_args.fail_on[{n}]', integer=True, minimum=0)
                        for n, i in enumerate(fail_on)}
        self.sleep = check_number(sleep, 'evaluator_args.sleep', minimum=0)
        self.noise = check_number(noise, 'evaluator_args.noise', minimum=0)

    @staticmethod
    def score(architecture: dict, dims: dict[str, list]) -> float:
        if dims and isinstance(architecture, dict) and all(label in architecture for label in dims):
            total = 0.0
            for label, choices in dims.items():
                total += (choices.index(architecture[label]) + 1) / len(choices)
            return total / len(dims)
        return MockEvaluator.structure_score(architecture)

    @staticmethod
    def structure_score(architecture: Any) -> float:
        """A weighted mean over the architecture's leaves (nested mappings and lists; the number and
        name tokens of strings such as ``conv-16-3``) of a value in [0, 1): a number ``x`` gives
        ``t / (1 + t)`` with ``t = log2(1 + |x|)`` (larger is better), a name a stable hash. Each
        leaf's weight is a stable hash of its position in [1, 2), so reordering blocks changes the
        score too. Deterministic across processes (CRC-32, no Python ``hash``)."""
        import math
        import re
        import zlib

        def unit(text: str) -> float:
            return zlib.crc32(text.encode()) / 0x100000000

        def leaves(obj: Any, path: str):
            if isinstance(obj, dict):
                for key in sorted(obj, key=str):
                    yield from leaves(obj[key], f'{path}.{key}')
            elif isinstance(obj, (list, tuple)):
                for i, v in enumerate(obj):
                    yield from leaves(v, f'{path}[{i}]')
            elif isinstance(obj, str):
                for j, token in enumerate(re.findall(r'\d+(?:\.\d+)?|[^\W\d]+', obj)):
                    yield f'{path}#{j}', (float(token) if token[0].isdigit() else token)
            else:
                yield path, obj

        num = den = 0.0
        for path, leaf in leaves(architecture, ''):
            if isinstance(leaf, (bool, int, float)) and math.isfinite(float(leaf)):
                t = math.log2(1.0 + abs(float(leaf)))
                u = t / (1.0 + t)
            else:
                u = unit(repr(leaf) if not isinstance(leaf, str) else leaf)
            w = 1.0 + unit(path)
            num += w * u
            den += w
        return num / den if den else 0.0

    def evaluate(self, model: nn.Module, ctx: Any) -> dict:
        if ctx.spec.proposal_id in self.fail_on:
            raise RuntimeError(f'mock evaluator: proposal {ctx.spec.proposal_id} is set to fail (fail_on)')
        if self.sleep:
            time.sleep(self.sleep)
        s = self.score(ctx.spec.architecture, ctx.space_info().dims)
        if self.noise:
            import json
            import zlib
            h = zlib.crc32(json.dumps(ctx.spec.architecture, sort_keys=True).encode()) / 0xFFFFFFFF
            s += self.noise * (2 * h - 1)
        params, trainable = count_params(model)
        return {'default': s, 'val_acc': s, 'inherited_acc': 0.0, 'params': params,
                'trainable_params': trainable, 'train_seconds': 0.0}
