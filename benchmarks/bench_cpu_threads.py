"""Benchmark (not a test): concurrent CPU trials and OpenMP's wait policy.

    python benchmarks/bench_cpu_threads.py [--procs 2] [--threads N] [--epochs 2]

NNI runs ``trialConcurrency`` trial processes side by side; on a CPU machine each one's torch uses
all cores by default. With OpenMP's default (active, spin-waiting) policy the oversubscribed
threads spin on cores the other process needs. This script trains the same small ResNet-18 on
``digits``-sized inputs (a) alone, (b) in ``--procs`` concurrent processes with the default policy
and (c) concurrently with ``OMP_WAIT_POLICY=PASSIVE`` (what ``python -m nni_xfer.trial`` sets),
and prints wall times and ratios. Each case is a fresh process, because the policy is read when
torch loads OpenMP.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def worker(threads: int, epochs: int) -> None:
    import torch
    import torchvision
    from sklearn.datasets import load_digits

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div(16).unsqueeze(1).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    print(f'{time.perf_counter() - t0:.3f}')


def run_case(procs: int, policy: str | None, threads: int, epochs: int) -> list[float]:
    env = dict(os.environ)
    env.pop('OMP_WAIT_POLICY', None)
    if policy:
        env['OMP_WAIT_POLICY'] = policy
    cmd = [sys.executable, __file__, '--worker', '--threads', str(threads), '--epochs', str(epochs)]
    ps = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    times = []
    for p in ps:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f'worker failed with exit code {p.returncode}')
        times.append(float(out.strip().splitlines()[-1]))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--procs', type=int, default=2, help='concurrent processes (trialConcurrency)')
    ap.add_argument('--threads', type=int, default=os.cpu_count() or 1, help='torch threads per process')
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.threads, a.epochs)
        return
    print(f'{os.cpu_count()} cores, {a.threads} torch threads per process, {a.epochs} epochs of ResNet-18 on digits')
    alone = run_case(1, None, a.threads, a.epochs)[0]
    print(f'alone (default policy):             {alone:7.1f}s', flush=True)
    cases = {}
    for policy in (None, 'PASSIVE'):
        times = run_case(a.procs, policy, a.threads, a.epochs)
        cases[policy] = max(times)
        name = f'{a.procs} concurrent, {policy or "default (ACTIVE)"}:'
        print(f'{name:36s}{max(times):7.1f}s  ({max(times) / alone:.1f}x alone; ideal {a.procs}x at full use)', flush=True)
    print(f'passive vs default with {a.procs} concurrent: {cases[None] / cases["PASSIVE"]:.1f}x faster')


if __name__ == '__main__':
    main()
