"""Benchmark (not a test): how many trials to pack on one GPU (issues 13 and 23).

    python benchmarks/bench_gpu_packing.py --config exp.yml [--config other.yml] [--counts 1,2,4,8]
    python benchmarks/bench_gpu_packing.py [--counts 1,2,4,8] [--samples 20000] [--epochs 2]
                                           [--image-size 32] [--batch-size 128] [--device cuda]

``--config exp.yml`` (issue 23): the network that experiment would train — its space and
``space_args``, the space's start/example architecture (``space_info(...).extra['example']``, else
``space.example()``), the image shape and class count of its dataset (``dataset_info``; the images
themselves are synthetic), and its evaluator's training settings (``evaluator_args``: batch size,
AMP, cutout, drop-path, auxiliary head, ``channels_last``, ``compile``...; ``--epochs`` and
``--samples`` keep the measurement short). The suggestion is then for that network.

For the network of every quick configuration (``nni_xfer.testing.quick``: one row per distinct
space + space_args, built on a CIFAR-shaped ``synthetic`` set, the space's example architecture),
it starts 1, 2, 4, 8 worker processes together on one GPU, each training its own copy with the
project's :class:`~nni_xfer.training.trainer.Trainer` (AMP on CUDA, augmentation on, the defaults a trial
uses), and prints the aggregate and per-trial images/s, the per-trial speed relative to a single
trial, and each worker's peak reserved GPU memory. Workers prepare data and model first and start
training at one shared instant. The suggested ``maxTrialNumberPerGpu`` is the largest count whose
per-trial speed stays >= ``--keep`` (0.8) of the single trial's: trials then finish about as fast
as alone while the GPU does more work.

Without CUDA it prints the networks it would measure (parameters, input shape, settings), says that
there is no GPU and exits 0; ``--device cpu`` runs it on the CPU (a smoke run of the
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
    from nni_xfer.runtime.lightweight import enable
    enable()  # what a trial process does
    import torch

    from nni_xfer.data.pipeline import load_dataset
    from nni_xfer.training.trainer import Trainer

    splits = load_dataset('synthetic', **synthetic_args(cfg))
    model = build_model(cfg, splits.info)
    trainer = Trainer(train_config(cfg))
    if trainer.device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    while time.time() < cfg['start_at']:
        time.sleep(0.002)
    result = trainer.fit(model, splits)
    peak = torch.cuda.max_memory_reserved() / 2 ** 20 if trainer.device.type == 'cuda' else 0.0
    print('RESULT ' + json.dumps({'images_per_second': result.images_per_second, 'peak_mib': peak}), flush=True)


def synthetic_args(cfg: dict) -> dict:
    """A CIFAR-shaped synthetic set, or one shaped like the config's dataset (``cfg['shape']``)."""
    c, size, classes = cfg.get('shape') or (3, cfg['image_size'], 10)
    return {'num_samples': cfg['samples'], 'image_size': size, 'in_channels': c, 'num_classes': classes}


def build_model(cfg: dict, info):
    """The network a trial of ``cfg`` trains: its space's start/example architecture."""
    from nni_xfer.errors import ConfigError
    from nni_xfer.space import build_space, example_sample, freeze, space_info

    space = build_space(cfg['space'], cfg['space_args'], info)
    sample = space_info(cfg['space'], cfg['space_args'], space).extra.get('example') or space.example()
    try:
        return freeze(space, sample)
    except ConfigError:  # an example written for the space's default arguments: first choices instead
        return freeze(space, example_sample(space))


def train_config(cfg: dict):
    """The trainer settings: the config's ``evaluator_args`` (if any) with the benchmark's epochs and
    device; else the defaults at ``--batch-size``."""
    from nni_xfer.training.trainer import TrainConfig

    args = dict(cfg.get('evaluator_args') or {'batch_size': cfg['batch_size']})
    args.pop('test', None)
    args.pop('fault', None)
    args.update(epochs=cfg['epochs'], device=cfg['device'])
    return TrainConfig.from_dict(args)


def config_cases(paths: list[str]) -> list[dict]:
    """One case per ``exp.yml``: what its trials would train."""
    import yaml

    from nni_xfer.data.pipeline import dataset_info

    rows = []
    for path in paths:
        raw = yaml.safe_load(Path(path).read_text())
        args = ((raw or {}).get('tuner') or {}).get('classArgs') or {}
        for key in ('space', 'dataset'):
            if key not in args:
                raise SystemExit(f'{path}: tuner.classArgs.{key} is missing')
        info = dataset_info(args['dataset'], **(args.get('dataset_args') or {}))
        evaluator = args.get('evaluator', 'train')
        rows.append({'space': args['space'], 'space_args': args.get('space_args') or {},
                     'shape': [info.in_channels, info.image_size, info.num_classes],
                     'evaluator_args': args.get('evaluator_args') or {} if evaluator == 'train' else None,
                     'label': f'{path}: {args["space"]} on {info.name} ({info.in_channels}x{info.image_size}x'
                              f'{info.image_size}, {info.num_classes} classes), evaluator {evaluator}'})
    return rows


def describe(case: dict, args) -> str:
    """Parameters of the case's network and the trainer settings it would use (no GPU needed)."""
    from nni_xfer.data.pipeline import dataset_info

    cfg = {**case, 'samples': 16, 'image_size': args.image_size, 'epochs': args.epochs,
           'batch_size': args.batch_size, 'device': 'cpu'}
    info = dataset_info('synthetic', **synthetic_args(cfg))
    model = build_model(cfg, info)
    params = sum(p.numel() for p in model.parameters())
    tc = train_config(cfg)
    return (f'  network: {type(model).__name__}, {params:,} parameters, input {info.in_channels}x'
            f'{info.image_size}x{info.image_size}; batch {tc.batch_size}, amp {tc.amp}, channels_last '
            f'{tc.channels_last}, compile {tc.compile}')


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
    ap.add_argument('--config', action='append', default=[],
                    help='an exp.yml: measure the network it trains (repeatable; default: the quick configurations)')
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    from nni_xfer.runtime.known_warnings import filter_known_warnings
    filter_known_warnings()
    env = dict(os.environ, NNI_XFER_HOME=os.environ.get('NNI_XFER_HOME') or tempfile.mkdtemp(prefix='bench_pack_'))
    os.environ['NNI_XFER_HOME'] = env['NNI_XFER_HOME']
    if args.config:
        rows = config_cases(args.config)
    else:
        rows = [c for c in cases() if not args.spaces or c['space'] in args.spaces.split(',')]
        for c in rows:
            c['label'] = f'{c["space"]} {json.dumps(c["space_args"])} (quick config of {", ".join(c["strategies"])})'
    if args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            print('bench_gpu_packing: no GPU (CUDA is not available on this machine); nothing measured. '
                  'The networks it would pack (--device cpu runs a smoke test of the script):')
            for case in rows:
                print(case['label'])
                print(describe(case, args))
            return
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = 'CPU (smoke run, not a packing measurement)'
    counts = [int(c) for c in args.counts.split(',')]
    print(f'device: {gpu}; {args.samples} synthetic images (each case\'s shape) x {args.epochs} epochs per trial; '
          f'quick configurations: batch {args.batch_size}, Trainer defaults (AMP on CUDA, augmentation); '
          f'--config: its evaluator_args')
    for case in rows:
        print(f'\n{case["label"]}')
        print(describe(case, args))
        print(f'{"trials":>6} {"aggregate img/s":>16} {"per trial":>10} {"vs 1 alone":>10} {"peak MiB/trial":>15}')
        single, best = None, 1
        for k in counts:
            res = run_count({k2: case[k2] for k2 in ('space', 'space_args', 'shape', 'evaluator_args') if k2 in case},
                            k, args, env)
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
