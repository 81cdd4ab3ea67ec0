"""Benchmark (not a test): how many trials to pack on one GPU (issue 13).

    python benchmarks/bench_gpu_packing.py [--counts 1,2,4,8] [--samples 20000] [--epochs 2]
                                           [--image-size 32] [--batch-size 128] [--device cuda]

For the network of every quick configuration (``nni_xfer.testing.quick``: one row per distinct
space + space_args, built on a CIFAR-shaped ``synthetic`` set, the space's example architecture),
it starts 1, 2, 4, 8 worker processes together on one GPU, each training its own copy with the
project's :class:`~nni_xfer.trainer.Trainer` (AMP on CUDA, augmentation on, the defaults a trial
uses), and prints the aggregate and per-trial images/s, the per-trial speed relative to a single
trial, and each worker's peak reserved GPU memory. Workers prepare data and model first and start
training at one shared instant. The suggested ``maxTrialNumberPerGpu`` is the largest count whose
per-trial speed stays >= ``--keep`` (0.8) of the single trial's: trials then finish about as fast
as alone while the GPU does more work.

Without CUDA it prints why and exits 0; ``--device cpu`` runs it on the CPU (a smoke run of the
script, not a packing measurement). Run it on the GPU and model size you use, then set
``maxTrialNumberPerGpu`` (and ``trialConcurrency`` = GPUs x that) in your ``exp.yml``
(see ``examples/training_services/local_gpu.yml``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(cfg: dict) -> None:
    from nni_xfer.lightweight import enable
    enable()  # what a trial process does
    import torch

    from nni_xfer.datasets import load_dataset
    from nni_xfer.errors import ConfigError
    from nni_xfer.space import build_space, example_sample, freeze, space_info
    from nni_xfer.trainer import TrainConfig, Trainer

    dargs = {'num_samples': cfg['samples'], 'image_size': cfg['image_size'], 'in_channels': 3,
             'num_classes': 10}
    splits = load_dataset('synthetic', **dargs)
    space = build_space(cfg['space'], cfg['space_args'], splits.info)
    sample = space_info(cfg['space'], cfg['space_args'], space).extra.get('example') or space.example()
    try:
        model = freeze(space, sample)
    except ConfigError:  # an example written for the space's default arguments: first choices instead
        model = freeze(space, example_sample(space))
    trainer = Trainer(TrainConfig(epochs=cfg['epochs'], batch_size=cfg['batch_size'], device=cfg['device']))
    if trainer.device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    while time.time() < cfg['start_at']:
        time.sleep(0.002)
    result = trainer.fit(model, splits)
    peak = torch.cuda.max_memory_reserved() / 2 ** 20 if trainer.device.type == 'cuda' else 0.0
    print('RESULT ' + json.dumps({'images_per_second': result.images_per_second, 'peak_mib': peak}), flush=True)


def run_count(case: dict, k: int, args, env: dict) -> list[dict]:
    cfg = {**case, 'samples': args.samples, 'image_size': args.image_size, 'epochs': args.epochs,
           'batch_size': args.batch_size, 'device': args.device, 'start_at': time.time() + args.lead + 2 * k}
    procs = [subprocess.Popen([sys.executable, __file__, '--worker', json.dumps(cfg)], cwd=str(ROOT), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(k)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=3600)
        if p.returncode:
            raise SystemExit(f'worker failed ({p.returncode}):\n{stderr[-3000:]}')
        out.append(json.loads(stdout.split('RESULT ', 1)[1]))
    return out


def cases() -> list[dict]:
    from nni_xfer.registry import STRATEGIES
    from nni_xfer.testing.quick import quick_config

    seen, rows = set(), []
    for name in STRATEGIES.names():
        cfg = quick_config(name)
        key = json.dumps([cfg['space'], cfg.get('space_args', {})], sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append({'space': cfg['space'], 'space_args': cfg.get('space_args', {}), 'strategies': [name]})
        else:
            next(r for r in rows if json.dumps([r['space'], r['space_args']], sort_keys=True) == key)[
                'strategies'].append(name)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--worker', help=argparse.SUPPRESS)
    ap.add_argument('--counts', default='1,2,4,8')
    ap.add_argument('--samples', type=int, default=20000, help='training images per worker (synthetic)')
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--image-size', type=int, default=32)
    ap.add_argument('--batch-size', type=int, default=128)
    ap.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    ap.add_argument('--keep', type=float, default=0.8, help='per-trial speed kept for the suggestion')
    ap.add_argument('--lead', type=float, default=20.0, help='seconds for workers to start before training')
    ap.add_argument('--spaces', help='comma-separated spaces to keep (default: every quick configuration)')
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            print('bench_gpu_packing: CUDA is not available on this machine; nothing measured '
                  '(use --device cpu for a smoke run of the script)')
            return
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = 'CPU (smoke run, not a packing measurement)'
    counts = [int(c) for c in args.counts.split(',')]
    env = dict(os.environ, NNI_XFER_HOME=os.environ.get('NNI_XFER_HOME') or tempfile.mkdtemp(prefix='bench_pack_'))
    rows = [c for c in cases() if not args.spaces or c['space'] in args.spaces.split(',')]
    print(f'device: {gpu}; {args.samples} CIFAR-shaped synthetic images x {args.epochs} epochs per trial, '
          f'batch {args.batch_size}, Trainer defaults (AMP on CUDA, augmentation)')
    for case in rows:
        print(f'\n{case["space"]} {json.dumps(case["space_args"])} (quick config of {", ".join(case["strategies"])})')
        print(f'{"trials":>6} {"aggregate img/s":>16} {"per trial":>10} {"vs 1 alone":>10} {"peak MiB/trial":>15}')
        single, best = None, 1
        for k in counts:
            res = run_count({'space': case['space'], 'space_args': case['space_args']}, k, args, env)
            agg = sum(r['images_per_second'] for r in res)
            per = agg / k
            single = single if single is not None else per
            if per >= args.keep * single:
                best = k
            print(f'{k:>6} {agg:>16.0f} {per:>10.0f} {per / single:>10.2f} {max(r["peak_mib"] for r in res):>15.0f}')
        print(f'suggested maxTrialNumberPerGpu: {best} (largest count keeping >= {args.keep:.0%} of the single '
              f'trial\'s speed)')


if __name__ == '__main__':
    main()
