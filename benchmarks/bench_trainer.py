"""Throughput of ``Trainer.fit`` against a minimal hand-written PyTorch loop.

Both train the same small CNN on the same in-memory data, with the same batch size,
optimiser (SGD, Nesterov momentum) and augmentation flag; the hand loop uses the same
on-device augmentation function, so the ratio measures the trainer's own overhead
(cosine schedule, metric accumulation, AMP plumbing). Evaluation time is excluded from
both. Target: trainer >= 0.9x the hand loop.

    python benchmarks/bench_trainer.py --dataset digits --epochs 5
    python benchmarks/bench_trainer.py --dataset fashion_mnist --epochs 1 --device cuda

Speed options (issue 23), ``--model nasnet_cells``: the XferNASNet (``nasnet_cells``, the XferNAS
appendix-C cells, ``--space-args`` default N=6, F=32: 4.46M parameters) on CIFAR-shaped synthetic
images at batch 128, trained by ``Trainer.fit`` with each of ``--variants`` (default: baseline,
``channels_last``, ``compile``, ``compile: reduce-overhead`` (CUDA graphs on a GPU), both
``channels_last`` and ``compile``). Each variant first trains one warm-up epoch on the same model
(``torch.compile`` compiles there: its seconds are the ``warm-up s`` column), then ``--epochs``
timed epochs; img/s is training images over training time (evaluation excluded), and ``vs base`` the
ratio to the baseline measured in the same run::

    python benchmarks/bench_trainer.py --model nasnet_cells --device cuda --samples 20000 --epochs 2
    python benchmarks/bench_trainer.py --model nasnet_cells --device cpu --samples 512 --epochs 1 \\
        --space-args '{"N": 1, "F": 8}' --variants base,channels_last      # a CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_xfer.data.pipeline import Splits, load_dataset
from nni_xfer.training.trainer import TrainConfig, Trainer, augment_batch, resolve_device


def small_cnn(in_channels: int, num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )


def hand_loop(model: nn.Module, splits: Splits, epochs: int, batch_size: int, augment: bool,
              device: torch.device, amp: bool) -> float:
    """Minimal loop; returns training images per second."""
    model.to(device).train()
    x, y = splits.train_x.to(device), splits.train_y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator(device=device).manual_seed(1)
    n = len(y)
    pad, flip = splits.info.pad, splits.info.flip
    amp_dtype = torch.bfloat16 if device.type == 'cuda' and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler('cuda', enabled=amp and amp_dtype == torch.float16)
    images = 0
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_batch(xb, pad, flip, gen)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            images += len(idx)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - t0)


#: ``--variants`` names -> the ``evaluator_args`` they set
VARIANTS = {
    'base': {},
    'channels_last': {'channels_last': True},
    'compile': {'compile': True},
    'compile_cudagraphs': {'compile': 'reduce-overhead'},
    'channels_last+compile': {'channels_last': True, 'compile': True},
}


def speed_options(args) -> None:
    """img/s of ``Trainer.fit`` on the XferNASNet with each speed option (issue 23 item 4)."""
    from nni_xfer.runtime.known_warnings import filter_known_warnings
    from nni_xfer.runtime.lightweight import enable
    filter_known_warnings()
    enable()
    from nni_xfer.space import build_space, freeze, space_info

    device = resolve_device(args.device, field='--device')
    space_args = json.loads(args.space_args)
    splits = load_dataset('synthetic', num_samples=args.samples, image_size=32, in_channels=3, num_classes=10)
    warm_splits = load_dataset('synthetic', num_samples=min(args.samples, 4 * args.batch_size), image_size=32,
                               in_channels=3, num_classes=10, seed=1)
    space = build_space(args.model, space_args, splits.info)
    sample = space_info(args.model, space_args, space).extra.get('example') or space.example()
    splits, warm_splits = splits.to(device), warm_splits.to(device)
    names = args.variants.split(',')
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f'--variants: unknown {name!r} (allowed: {", ".join(VARIANTS)})')
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    params = sum(p.numel() for p in freeze(space, sample).parameters())
    print(f'{args.model} {json.dumps(space_args)} (example architecture, {params / 1e6:.2f}M parameters); '
          f'{len(splits.train_y)} synthetic 3x32x32 images, batch {args.batch_size}, {args.epochs} timed epochs; '
          f'device {gpu}; torch {torch.__version__}; load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    print(f'{"variant":<22} {"warm-up s":>9} {"img/s":>9} {"vs base":>8} {"val_acc":>8}')
    base = None
    for name in names:
        torch.manual_seed(0)
        model = freeze(space, sample)
        options = VARIANTS[name]
        t0 = time.perf_counter()
        Trainer(TrainConfig(epochs=1, batch_size=args.batch_size, device=str(device), **options)).fit(
            model, warm_splits)
        warm = time.perf_counter() - t0
        r = Trainer(TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=str(device),
                                **options)).fit(model, splits)
        ips = r.images_per_second
        base = ips if name == 'base' or base is None else base
        print(f'{name:<22} {warm:>9.1f} {ips:>9.0f} {ips / base:>8.2f} {r.val_acc:>8.3f}')


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='digits', help='digits (default), fashion_mnist, synthetic, ...')
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--device', default='auto')
    p.add_argument('--repeats', type=int, default=3, help='alternating runs per side; the median is reported')
    p.add_argument('--limit-train', type=int, default=None, help='truncate the training split')
    p.add_argument('--no-augment', action='store_true', help='benchmark without augmentation only')
    p.add_argument('--model', choices=['small_cnn', 'nasnet_cells'], default='small_cnn',
                   help='nasnet_cells: img/s of the XferNASNet with each speed option (issue 23)')
    p.add_argument('--space-args', default='{"N": 6, "F": 32}', help='--model nasnet_cells: its space_args (JSON)')
    p.add_argument('--samples', type=int, default=10000, help='--model nasnet_cells: synthetic training images')
    p.add_argument('--variants', default=','.join(VARIANTS), help=f'--model nasnet_cells: of {", ".join(VARIANTS)}')
    args = p.parse_args(argv)
    if args.model == 'nasnet_cells':
        if args.batch_size == 64 and '--batch-size' not in (argv or __import__('sys').argv):
            args.batch_size = 128  # the XferNASNet figure (1,228 img/s on an H200, bf16)
        speed_options(args)
        return

    device = resolve_device(args.device, field='--device')
    splits = load_dataset(args.dataset, limit_train=args.limit_train)
    info = splits.info
    splits = splits.to(device)
    print(f'dataset={info.name} train={len(splits.train_y)} shape={tuple(splits.train_x.shape[1:])} '
          f'device={device} threads={torch.get_num_threads()} epochs={args.epochs} batch={args.batch_size} '
          f'torch={torch.__version__}')

    rows = []
    for augment in ([False] if args.no_augment else [False, True]):
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, augment=augment, device=str(device))
        trainer = Trainer(cfg)
        # warm-up: lazy imports, kernel selection, allocator
        Trainer(TrainConfig(epochs=1, batch_size=args.batch_size, augment=augment, device=str(device))).fit(
            small_cnn(info.in_channels, info.num_classes), splits)
        hand_loop(small_cnn(info.in_channels, info.num_classes), splits, 1, args.batch_size, augment, device,
                  trainer.amp)
        t_rates, h_rates, accs = [], [], []
        for _ in range(args.repeats):
            h_rates.append(hand_loop(small_cnn(info.in_channels, info.num_classes), splits, args.epochs,
                                     args.batch_size, augment, device, trainer.amp))
            r = trainer.fit(small_cnn(info.in_channels, info.num_classes), splits)
            t_rates.append(r.images_per_second)
            accs.append(r.val_acc)
        t, h = statistics.median(t_rates), statistics.median(h_rates)
        rows.append((augment, trainer.amp, h, t, t / h, statistics.median(accs)))

    print()
    print(f'{"augment":>7} {"amp":>5} {"hand loop img/s":>16} {"Trainer img/s":>14} {"ratio":>6} {"target":>7} '
          f'{"val_acc":>8}')
    for augment, amp, h, t, ratio, acc in rows:
        ok = 'ok' if ratio >= 0.9 else 'LOW'
        print(f'{str(augment):>7} {str(amp):>5} {h:16.0f} {t:14.0f} {ratio:6.2f} {ok:>7} {acc:8.3f}')


if __name__ == '__main__':
    main()
