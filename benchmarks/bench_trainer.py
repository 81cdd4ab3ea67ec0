"""Throughput of ``Trainer.fit`` against a minimal hand-written PyTorch loop.

Both train the same small CNN on the same in-memory data, with the same batch size,
optimiser (SGD, Nesterov momentum) and augmentation flag; the hand loop uses the same
on-device augmentation function, so the ratio measures the trainer's own overhead
(cosine schedule, metric accumulation, AMP plumbing). Evaluation time is excluded from
both. Target: trainer >= 0.9x the hand loop.

    python benchmarks/bench_trainer.py --dataset digits --epochs 5
    python benchmarks/bench_trainer.py --dataset fashion_mnist --epochs 1 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_xfer.datasets import Splits, load_dataset
from nni_xfer.trainer import TrainConfig, Trainer, augment_batch, resolve_device


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='digits', help='digits (default), fashion_mnist, synthetic, ...')
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--device', default='auto')
    p.add_argument('--repeats', type=int, default=3, help='alternating runs per side; the median is reported')
    p.add_argument('--limit-train', type=int, default=None, help='truncate the training split')
    p.add_argument('--no-augment', action='store_true', help='benchmark without augmentation only')
    args = p.parse_args(argv)

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
