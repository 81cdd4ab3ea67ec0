"""ModuleNet's trial side: the ``kb_modules`` initializer and the ``modulenet`` evaluator.

The evaluator trains only what is trainable (the head, when modules are frozen and connections are
parameter-free) for ``epochs`` (paper: 20) and reports the paper's search metrics (Eq. 4–8):

- ``err_val`` = 1 − validation accuracy,
- ``lrate`` = (loss of epoch 1 − loss of epoch n) / loss of epoch 1, in [0, 1],
- ``sim``: the leading run of positions taken from the same source as position 0, divided by c,
- ``default`` = ``score`` = err_val − α·lrate + β·sim (minimised; paper CIFAR-100: α = β = 25),

plus ``val_acc``, ``inherited_acc`` (before the head trains), ``params``, ``trainable_params``,
``flops``. When nothing before the head learns and augmentation is off, the frozen trunk's
features are computed once and the head trains on them (``cache_features``) — the same result as
running the trunk every step, at the cost of one forward pass.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from nni_xfer.errors import ConfigError
from nni_xfer.training.evaluators import Evaluator, count_flops, count_params
from nni_xfer.registry import EVALUATORS, INITIALIZERS


@INITIALIZERS.register('kb_modules', description='ModuleNet: load every module from the knowledge base '
                                                  '(sha256-checked); optionally the searched head of the same chain')
def kb_modules(model: nn.Module, init: dict, ctx: Any = None) -> None:
    """Load each position's module weights from its knowledge-base file.

    ``heads`` (the fine-tuning stage): a list of ``{'architecture', 'uri', 'sha256'}``, the search
    trials' checkpoints; when the trial's architecture is listed, everything outside the modules (the
    classifier head, trained 1×1 connections) is loaded from that checkpoint, so the chain starts as
    the network the search scored. Otherwise the head keeps its fresh initialisation.
    """
    allowed = ['kind', 'verify', 'heads']
    extra = set(init) - set(allowed)
    if extra:
        raise ConfigError(f'init.{sorted(extra)[0]}', "unknown key for init kind 'kb_modules'", allowed=allowed)
    verify = init.get('verify', True)
    if not isinstance(verify, bool):
        raise ConfigError('init.verify', f'expected true or false, got {verify!r}')
    heads = init.get('heads') or []
    if not isinstance(heads, list) or any(not isinstance(h, dict) or not isinstance(h.get('architecture'), dict)
                                          or 'uri' not in h for h in heads):
        raise ConfigError('init.heads', "expected a list of {architecture, uri, sha256} mappings")
    if not callable(getattr(model, 'load_kb_weights', None)):
        raise ConfigError('init.kind', "'kb_modules' needs a module_chain space")
    model.load_kb_weights(verify=verify)
    arch = getattr(getattr(ctx, 'spec', None), 'architecture', None)
    if arch is None or not heads:
        return
    from nni_xfer.store import arch_key
    entry = next((h for h in heads if arch_key(h['architecture']) == arch_key(arch)), None)
    if entry is not None:
        load_searched_head(model, entry['uri'], entry.get('sha256') if verify else None)
        ctx.extra_metrics['head_from'] = entry['uri']
        if callable(getattr(ctx, 'progress', None)):
            ctx.progress(f"head (and trained connections) loaded from the search checkpoint {entry['uri']}")


def load_searched_head(model: nn.Module, uri: str, sha256: str | None = None) -> list[str]:
    """Load every weight outside the knowledge-base modules (``positions.<j>.module.*``) from a search
    trial's checkpoint of the same chain (frozen or not). Returns the loaded keys."""
    import re

    from nni_xfer.checkpoint import load_checkpoint
    from nni_xfer.errors import CheckpointError
    state = load_checkpoint(uri, sha256).get('state_dict') or {}
    own = model.state_dict()
    keys = [k for k in own if not re.match(r'positions\.\d+\.module\.', k)]
    for k in keys:
        if k not in state or tuple(state[k].shape) != tuple(own[k].shape):
            raise CheckpointError(f'search checkpoint does not fit this chain ({k} missing or of another shape): {uri}')
    model.load_state_dict({k: state[k] for k in keys}, strict=False)
    return keys


def _features(trunk, x: torch.Tensor, batch: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(trunk(x[i:i + batch]).flatten(1))
    return torch.cat(out) if out else x.new_zeros((0, 0))


@EVALUATORS.register('modulenet', description='ModuleNet: train the head on frozen modules; score = err - a*lrate + b*sim')
class ModuleNetEvaluator(Evaluator):
    """See the module docstring. ``evaluator_args``: ``alpha``, ``beta``, ``cache_features``, ``test``
    and :class:`~nni_xfer.training.trainer.TrainConfig` fields (defaults here: 20 epochs, no augmentation)."""

    def __init__(self, alpha: float = 25.0, beta: float = 25.0, cache_features: bool = True, test: bool = False,
                 **train_args: Any):
        from nni_xfer.training.trainer import TrainConfig
        for name, v in (('alpha', alpha), ('beta', beta)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f'evaluator_args.{name}', f'expected a number, got {v!r}')
        for name, v in (('cache_features', cache_features), ('test', test)):
            if not isinstance(v, bool):
                raise ConfigError(f'evaluator_args.{name}', f'expected true or false, got {v!r}')
        self.alpha, self.beta = float(alpha), float(beta)
        self.cache_features, self.test = cache_features, test
        self.config = TrainConfig.from_dict({'epochs': 20, 'augment': False, **train_args}, field='evaluator_args')

    def evaluate(self, model: nn.Module, ctx: Any) -> dict:
        from nni_xfer.data.pipeline import Splits
        from nni_xfer.training.trainer import Trainer
        from .score import lrate as loss_rate
        from .score import score as paper_score
        from .score import sim as similarity
        if not callable(getattr(model, 'trunk_is_fixed', None)):
            raise ConfigError('evaluator', "'modulenet' needs a module_chain space")
        splits = ctx.splits()
        trainer = Trainer(self.config, log_dir=ctx.log_dir)
        dev = trainer.device
        model.to(dev)
        splits = splits.to(dev)
        inherited = trainer.evaluate_split(model, splits, 'val')
        cached = self.cache_features and model.trunk_is_fixed() and not splits.streamed and not (
            self.config.augment and (splits.info.pad > 0 or splits.info.flip))
        t0 = time.perf_counter()
        if cached:
            model.eval()
            bs = self.config.eval_batch_size
            feats = Splits(splits.info, _features(model.trunk, splits.train_x, bs), splits.train_y,
                           _features(model.trunk, splits.val_x, bs), splits.val_y,
                           _features(model.trunk, splits.test_x, bs) if self.test else splits.test_x[:0].flatten(1),
                           splits.test_y if self.test else splits.test_y[:0])
            target, data = model.head, feats
        else:
            target, data = model, splits
        feature_seconds = time.perf_counter() - t0
        ctx.progress(f'inherited val_acc {inherited:.4f}; training {sum(p.numel() for p in ctx.trainable_parameters(target))} '
                     f'parameters for {self.config.epochs} epochs on {dev}'
                     + (f' (trunk features cached in {feature_seconds:.1f}s)' if cached else ''))

        def on_epoch(ep):
            ctx.report_intermediate({'default': 1.0 - ep.val_acc, 'val_acc': ep.val_acc, 'train_loss': ep.train_loss,
                                     'epoch': ep.epoch})
            ctx.progress(f'epoch {ep.epoch}: loss {ep.train_loss:.4f} val_acc {ep.val_acc:.4f} ({ep.seconds:.1f}s)')

        result = trainer.fit(target, data, on_epoch=on_epoch, trainable=ctx.trainable_parameters(target))
        val_acc = trainer.evaluate_split(model, splits, 'val')
        losses = [h.train_loss for h in result.history]
        codes = [p.source for p in model.positions]
        err, lr_, sm = 1.0 - val_acc, loss_rate(losses), similarity(codes)
        s = paper_score(err, lr_, sm, self.alpha, self.beta)
        params, trainable = count_params(model)
        metrics = {
            'default': s, 'score': s, 'err_val': err, 'val_acc': val_acc, 'lrate': lr_, 'sim': sm,
            'loss_first': losses[0] if losses else None, 'loss_last': losses[-1] if losses else None,
            'inherited_acc': inherited, 'params': params, 'trainable_params': trainable,
            'flops': count_flops(model, splits.input_shape),
            'train_seconds': result.train_seconds, 'feature_seconds': feature_seconds,
            'cached_features': cached,
        }
        if self.test:
            metrics['test_acc'] = trainer.evaluate_split(model, splits, 'test')
        return metrics
