"""Plain-PyTorch trainer used by every trial.

The training data stays in one device-resident tensor; every batch is gathered with a seeded
permutation and augmented on the device in one vectorised step (random crop after zero
padding plus random horizontal flip, both with per-sample random draws). The optimiser is
SGD with Nesterov momentum and a per-step cosine learning-rate schedule; mixed precision
(``torch.autocast``, bf16 where supported, otherwise fp16 with a gradient scaler) is used
on CUDA only. Options the NASNet-cell children need: ``cutout``, a linear drop-path ramp
(``drop_path``), the auxiliary head's loss (``aux_weight``, for models that return
``(logits, aux_logits)`` in training mode), ``lr_schedule`` (``cosine`` | ``constant``) and
``grad_clip``; their defaults keep the plain behaviour.

Speed options for small-kernel, launch-bound networks (issue 23), both off by default:
``channels_last`` (model and batches in NHWC memory format during training and evaluation; the
model is returned in the default format) and ``compile`` (``torch.compile`` of the model's forward
for the training steps: ``true``/``default``, ``reduce-overhead`` — CUDA graphs on a GPU; on a CPU
it is the default mode — or ``max-autotune``). Either gives the same losses as without it up to
floating-point reassociation (tests/unit/core/training/test_trainer.py).

A streamed dataset (``imagefolder``: :class:`~nni_xfer.data.imagefolder.StreamedSplits`) is read batch by
batch through a DataLoader with worker processes instead, its augmentation done by the dataset's own
transforms (the paper's random-resized crop and flip); the step itself is the same code.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.pipeline import Splits
from ..errors import ConfigError

__all__ = ['TrainConfig', 'EpochResult', 'TrainResult', 'Trainer', 'augment_batch', 'cutout_batch', 'set_drop_path',
           'resolve_device']


# --------------------------------------------------------------------------- configuration

# accepted Python types per field ('float' accepts ints and numeric strings such as YAML's '5e-4')
_FIELD_KINDS = {
    'epochs': 'int', 'batch_size': 'int', 'lr': 'float', 'momentum': 'float', 'nesterov': 'bool',
    'weight_decay': 'float', 'label_smoothing': 'float', 'augment': 'bool', 'amp': 'bool?',
    'device': 'str', 'eval_batch_size': 'int', 'seed': 'int', 'num_threads': 'int?',
    'cutout': 'int', 'drop_path': 'float?', 'aux_weight': 'float', 'lr_schedule': 'str', 'grad_clip': 'float?',
    'channels_last': 'bool', 'compile': 'compile',
}
LR_SCHEDULES = ('cosine', 'constant')
#: ``compile`` values: off, or a ``torch.compile`` mode (``true`` means ``default``;
#: ``reduce-overhead`` captures CUDA graphs on a GPU).
COMPILE_MODES = (False, True, 'default', 'reduce-overhead', 'max-autotune')


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True
    amp: bool | None = None  # None: on when the device is CUDA
    device: str = 'auto'  # 'auto': cuda if available, else cpu
    eval_batch_size: int = 1024
    seed: int = 0
    num_threads: int | None = None  # torch.set_num_threads during fit (CPU)
    cutout: int = 0  # side of the square zeroed at a random centre of each training image (0: off; paper 16)
    drop_path: float | None = None  # ramp the model's drop-path layers linearly 0 -> this over training
    aux_weight: float = 0.4  # weight of the auxiliary head's loss (models returning (logits, aux))
    lr_schedule: str = 'cosine'  # per-step cosine to 0, or 'constant'
    grad_clip: float | None = None  # clip the gradient's global norm (NAO: 5)
    channels_last: bool = False  # NHWC memory format for model and batches (faster convolutions on GPUs)
    compile: bool | str = False  # torch.compile the forward for training: true/'default', 'reduce-overhead', 'max-autotune'

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, field: str = 'evaluator_args') -> 'TrainConfig':
        """Build from a plain dict; unknown keys, wrong types and bad values -> :class:`ConfigError`."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(field, f'expected a mapping, got {type(d).__name__}')
        names = cls.field_names()
        values: dict[str, Any] = {}
        for key, value in d.items():
            if key not in names:
                raise ConfigError(f'{field}.{key}', 'unknown training option', allowed=names)
            values[key] = _coerce(f'{field}.{key}', _FIELD_KINDS[key], value)
        config = cls(**values)
        config.validate(field)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, field: str = 'evaluator_args') -> 'TrainConfig':
        """Check value ranges; returns ``self``."""

        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f'{field}.{key}', f'{msg}, got {getattr(self, key)!r}')

        for key in self.field_names():
            _coerce(f'{field}.{key}', _FIELD_KINDS[key], getattr(self, key))
        if self.epochs < 0:
            raise bad('epochs', 'must be >= 0')
        if self.batch_size < 1:
            raise bad('batch_size', 'must be >= 1')
        if self.eval_batch_size < 1:
            raise bad('eval_batch_size', 'must be >= 1')
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise bad('lr', 'must be a finite number >= 0')
        if not 0 <= self.momentum < 1:
            raise bad('momentum', 'must be in [0, 1)')
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise bad('weight_decay', 'must be >= 0')
        if not 0 <= self.label_smoothing < 1:
            raise bad('label_smoothing', 'must be in [0, 1)')
        if self.num_threads is not None and self.num_threads < 1:
            raise bad('num_threads', 'must be >= 1 or null')
        if self.cutout < 0:
            raise bad('cutout', 'must be >= 0')
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            raise bad('drop_path', 'must be in [0, 1) or null')
        if not (self.aux_weight >= 0 and math.isfinite(self.aux_weight)):
            raise bad('aux_weight', 'must be a finite number >= 0')
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f'{field}.lr_schedule', f'unknown schedule {self.lr_schedule!r}', allowed=LR_SCHEDULES)
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise bad('grad_clip', 'must be > 0 or null')
        if self.device != 'auto':
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise bad('device', "must be 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
        return self


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind.endswith('?'):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == 'bool':
        if isinstance(value, bool):
            return value
    elif kind == 'int':
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == 'float':
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind == 'str':
        if isinstance(value, str):
            return value
    elif kind == 'compile':
        if any(value is mode or (isinstance(mode, str) and value == mode) for mode in COMPILE_MODES):
            return value
        raise ConfigError(name, f'unknown torch.compile mode {value!r}',
                          allowed=[str(m).lower() if isinstance(m, bool) else m for m in COMPILE_MODES])
    expected = {'bool': 'true or false', 'int': 'an integer', 'float': 'a number', 'str': 'a string'}[kind]
    raise ConfigError(name, f'expected {expected}, got {value!r}')


def resolve_device(device: str | torch.device = 'auto', field: str = 'evaluator_args.device') -> torch.device:
    """``'auto'`` -> CUDA if available else CPU; asking for an unavailable CUDA -> ConfigError."""
    if isinstance(device, torch.device):
        dev = device
    elif device == 'auto':
        dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    else:
        dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(field, f'{device!r} requested but CUDA is not available', allowed=['auto', 'cpu'])
    return dev


# --------------------------------------------------------------------------- results


@dataclass
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_acc: float
    seconds: float  # wall time of the epoch, training and validation
    lr: float  # learning rate at the start of the epoch


@dataclass
class TrainResult:
    val_acc: float  # after the last epoch
    history: list[EpochResult] = field(default_factory=list)
    train_seconds: float = 0.0  # pure training time, without evaluation
    images_per_second: float = 0.0  # training images / train_seconds

    @property
    def best_val_acc(self) -> float:
        return max((h.val_acc for h in self.history), default=self.val_acc)


# --------------------------------------------------------------------------- augmentation


def augment_batch(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and (if ``flip``) random horizontal flip.

    Vectorised over the batch: every sample draws its own offsets and flip, and one gather
    produces the result. ``generator`` must live on ``x.device``.
    """
    if pad <= 0 and not flip:
        return x
    b, _, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).unsqueeze(0)  # (1, H)
    cols = torch.arange(w, device=dev).unsqueeze(0)  # (1, W)
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        off = torch.randint(0, 2 * pad + 1, (2, b, 1), device=dev, generator=generator)
        rows = rows + off[0]  # (B, H)
        cols = cols + off[1]  # (B, W)
    else:
        xp = x
        rows = rows.expand(b, h)
        cols = cols.expand(b, w)
    if flip:
        mirror = torch.rand(b, 1, device=dev, generator=generator) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
    # gather rows, then columns: (B, C, Hp, Wp) -> (B, C, H, Wp) -> (B, C, H, W)
    c, wp = xp.shape[1], xp.shape[3]
    out = torch.gather(xp, 2, rows.view(b, 1, h, 1).expand(b, c, h, wp))
    return torch.gather(out, 3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def cutout_batch(x: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): zero a ``length``² square (clipped at the border) at a random
    centre of every image, vectorised over the batch."""
    if length <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (b, 1, 1), device=dev, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=dev, generator=generator)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    half = length // 2
    inside = (rows >= cy - half) & (rows < cy - half + length) & (cols >= cx - half) & (cols < cx - half + length)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def set_drop_path(model: nn.Module, p: float) -> int:
    """Set the model's drop-path probability: ``model.set_drop_path_prob(p)`` when it has one, else
    ``drop_prob`` of every module exposing it. Returns the number of drop-path layers found."""
    layers = [m for m in model.modules() if hasattr(m, 'drop_prob')]
    if hasattr(model, 'set_drop_path_prob'):
        model.set_drop_path_prob(p)
    else:
        for m in layers:
            m.drop_prob = p
    return len(layers)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Trains a classifier on in-memory :class:`~nni_xfer.data.pipeline.Splits`."""

    def __init__(self, config: TrainConfig | None = None, log_dir: str | None = None):
        self.config = (config or TrainConfig()).validate('train_config')
        self.log_dir = log_dir
        self._device = resolve_device(self.config.device)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def amp(self) -> bool:
        """Whether mixed precision is used (CUDA only)."""
        return self._device.type == 'cuda' and (self.config.amp if self.config.amp is not None else True)

    def _amp_dtype(self) -> torch.dtype:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self):
        if self.amp:
            return torch.autocast('cuda', dtype=self._amp_dtype())
        return torch.autocast(self._device.type, enabled=False)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format of ``channels_last``."""
        if self.config.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, model: nn.Module) -> nn.Module | Callable:
        """What a training step calls: the model, or ``torch.compile`` of it (``compile``)."""
        mode = self.config.compile
        if mode is False:
            return model
        return torch.compile(model, mode='default' if mode is True else mode)

    # ------------------------------------------------------------------ evaluation

    def evaluate_split(self, model: nn.Module, splits: Any, split: str = 'val') -> float:
        """Top-1 accuracy on ``split`` ('val' or 'test') of in-memory or streamed splits."""
        if not getattr(splits, 'streamed', False):
            return self.evaluate(model, getattr(splits, f'{split}_x'), getattr(splits, f'{split}_y'))
        batches = splits.loader(split, self.config.eval_batch_size, pin_memory=self._device.type == 'cuda')
        return self._accuracy(model, batches, splits.size(split))

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Top-1 accuracy in [0, 1] of ``model`` on ``(x, y)``; 0.0 for empty data."""
        bs = self.config.eval_batch_size
        return self._accuracy(model, ((x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)), len(y))

    @torch.no_grad()
    def _accuracy(self, model: nn.Module, batches: Iterable, n: int) -> float:
        if n == 0:
            return 0.0
        was_training = model.training
        model.eval()
        try:
            correct = torch.zeros((), dtype=torch.long, device=self._device)
            for xb, yb in batches:
                xb, yb = self._input(xb.to(self._device, non_blocking=True)), yb.to(self._device, non_blocking=True)
                with self._autocast():
                    out = model(xb)
                correct += (out.argmax(1) == yb).sum()
            return correct.item() / n
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ training

    def fit(self, model: nn.Module, splits: Splits, on_epoch: Callable[[EpochResult], None] | None = None,
            trainable: Iterable[nn.Parameter] | None = None) -> TrainResult:
        cfg = self.config
        dev = self._device
        old_threads = torch.get_num_threads()
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        writer = None
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        try:
            torch.manual_seed(cfg.seed)  # dropout and other stochastic layers
            model.to(dev)
            splits = splits.to(dev)
            streamed = getattr(splits, 'streamed', False)
            params = list(trainable) if trainable is not None else [p for p in model.parameters() if p.requires_grad]
            if cfg.epochs == 0 or not params:
                if cfg.epochs > 0 and not params:
                    raise ValueError('no trainable parameters')
                return TrainResult(val_acc=self.evaluate_split(model, splits, 'val'))

            n = splits.size('train')
            bs = cfg.batch_size
            full, rest = divmod(n, bs)
            batches = [(i * bs, bs) for i in range(full)]
            if rest > 1 or (rest == 1 and full == 0):  # a lone sample would break BatchNorm
                batches.append((full * bs, rest))
            total_steps = max(1, cfg.epochs * len(batches))
            images_per_epoch = sum(size for _, size in batches)

            momentum = cfg.momentum
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, weight_decay=cfg.weight_decay,
                                  nesterov=cfg.nesterov and momentum > 0)
            if cfg.lr_schedule == 'constant':
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
            else:
                sched = torch.optim.lr_scheduler.LambdaLR(
                    opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))
            if cfg.drop_path is not None and cfg.drop_path > 0 and set_drop_path(model, 0.0) == 0:
                raise ValueError('evaluator_args.drop_path is set but the model has no drop-path layers '
                                 '(e.g. space_args.drop_path of nasnet_cells)')
            step = 0
            use_scaler = self.amp and self._amp_dtype() == torch.float16
            scaler = torch.amp.GradScaler('cuda', enabled=use_scaler)

            shuffle_gen = torch.Generator().manual_seed(cfg.seed)
            aug_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
            info = splits.info
            augment = cfg.augment and (info.pad > 0 or info.flip) and not streamed  # streamed: its transforms
            loader = None
            if streamed:  # one loader for the whole fit: its workers live across epochs
                if not cfg.augment:
                    splits = splits.without_augmentation()
                loader = splits.loader('train', bs, shuffle=True, generator=shuffle_gen,
                                       pin_memory=dev.type == 'cuda', persistent=True)
            else:
                x_train, y_train = splits.train_x, splits.train_y

            if self.log_dir is not None:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(self.log_dir)
            forward = self._forward(model)

            def train_step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                nonlocal step
                if augment:
                    xb = augment_batch(xb, info.pad, info.flip, aug_gen)
                if cfg.cutout > 0:
                    xb = cutout_batch(xb, cfg.cutout, aug_gen)
                xb = self._input(xb)
                if cfg.drop_path is not None:  # linear ramp over training (NASNet/NAO)
                    set_drop_path(model, cfg.drop_path * step / total_steps)
                step += 1
                with self._autocast():
                    out = forward(xb)
                    aux = None
                    if isinstance(out, (tuple, list)):  # (logits, auxiliary logits) in training mode
                        out, aux = out
                    loss = F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing)
                    if aux is not None and cfg.aux_weight > 0:
                        loss = loss + cfg.aux_weight * F.cross_entropy(aux, yb, label_smoothing=cfg.label_smoothing)
                opt.zero_grad(set_to_none=True)
                if use_scaler:
                    scaler.scale(loss).backward()
                    if cfg.grad_clip is not None:
                        scaler.unscale_(opt)
                        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                sched.step()
                return loss.detach().float() * len(yb), (out.detach().argmax(1) == yb).sum()

            history: list[EpochResult] = []
            train_seconds = 0.0
            val_acc = 0.0
            model.train()
            for epoch in range(1, cfg.epochs + 1):
                t0 = time.perf_counter()
                lr = opt.param_groups[0]['lr']
                loss_sum = torch.zeros((), dtype=torch.float32, device=dev)
                correct = torch.zeros((), dtype=torch.long, device=dev)
                model.train()
                if streamed:
                    for xb, yb in loader:
                        l_sum, c = train_step(xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True))
                        loss_sum += l_sum
                        correct += c
                else:
                    perm = torch.randperm(n, generator=shuffle_gen).to(dev, non_blocking=True)
                    for start, size in batches:
                        idx = perm[start:start + size]
                        l_sum, c = train_step(x_train.index_select(0, idx), y_train.index_select(0, idx))
                        loss_sum += l_sum
                        correct += c
                if dev.type == 'cuda':
                    torch.cuda.synchronize(dev)
                t_train = time.perf_counter() - t0
                train_seconds += t_train
                train_loss = loss_sum.item() / images_per_epoch
                train_acc = correct.item() / images_per_epoch
                val_acc = self.evaluate_split(model, splits, 'val')
                result = EpochResult(epoch, train_loss, train_acc, val_acc, time.perf_counter() - t0, lr)
                history.append(result)
                if writer is not None:
                    writer.add_scalar('train/loss', train_loss, epoch)
                    writer.add_scalar('train/acc', train_acc, epoch)
                    writer.add_scalar('val/acc', val_acc, epoch)
                    writer.add_scalar('lr', lr, epoch)
                if on_epoch is not None:
                    on_epoch(result)

            ips = images_per_epoch * cfg.epochs / train_seconds if train_seconds > 0 else 0.0
            return TrainResult(val_acc=val_acc, history=history, train_seconds=train_seconds, images_per_second=ips)
        finally:
            if writer is not None:
                writer.close()
            if cfg.num_threads is not None:
                torch.set_num_threads(old_threads)
            if cfg.channels_last:  # checkpoints and weight transfer see the default format
                model.to(memory_format=torch.contiguous_format)
