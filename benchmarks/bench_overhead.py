"""Benchmark (not a test): experiment overhead per trial, and strategy ``propose`` latency (issue 13).

    python benchmarks/bench_overhead.py [--trials 20] [--concurrency 2] [--torch-floor] [--no-warm] [--no-nnictl]
                                        [--proposals 30] [--strategies random,eas,...]

1. Real ``nnictl`` experiments on the local training service, one after the other on this machine:

   * ``xfer``: ``XferTuner`` (random strategy on ``simple_cnn``/``digits``) with ``evaluator: mock``
     (the real ``python -m nni_xfer.trial``: spec, space build, freeze, checkpoint, NNI report; no
     training);
   * ``nni floor``: NNI's built-in ``Random`` tuner and a trivial trial script
     (``nni.get_next_parameter()``, ``nni.report_final_result()``), NNI's own floor;
   * ``xfer + warm``: ``xfer`` with ``trialCommand: python -m nni_xfer.launch`` (the warm trial
     launcher, issue 13 item 5: trials forked from a server that has imported torch, NNI and
     nni-xfer). No server runs before the experiment: its first trial starts one (a few seconds
     of imports, included in the seconds per trial); skip with ``--no-warm``;
   * ``nni + torch`` (``--torch-floor``; not in the default run, which it would take past 5 minutes
     on 2 loaded cores): the same trivial script that also imports ``torch, torchvision`` (the floor
     of any PyTorch trial in a fresh process).

   Seconds per trial = (last trial end - experiment start) / trials, from NNI's REST API; also the
   mean trial duration (NNI's start -> end). Ratios are ``xfer`` (and ``xfer + warm``) over each floor.
2. ``propose`` latency p50/p99 (milliseconds) of every registered strategy on its contract case
   (``nni_xfer.testing.strategy_contract.contract_case``, i.e. its quick configuration), each proposal
   followed by ``observe`` with the case's mock metrics (refits of controllers/surrogates happen in
   ``propose``/``observe`` and are included in the ``propose`` + ``observe`` column).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

TRIVIAL = '''import nni
params = nni.get_next_parameter()
nni.report_final_result(0.5)
'''
TRIVIAL_TORCH = 'import torch, torchvision\n' + TRIVIAL


def _run(config: Path, n: int) -> dict:
    from nni_xfer.adapters.experiments import create, finished, free_port, nnictl, wait

    port = free_port()
    t0 = time.time()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(n), timeout=1800, poll=1.0)
    finally:
        nnictl('stop', exp)
    ok = [t for t in ts if t['status'] == 'SUCCEEDED']
    if len(ok) != n:
        raise SystemExit(f'{config}: {len(ok)}/{n} trials succeeded: {[t["status"] for t in ts]}')
    end = max(t['endTime'] for t in ok) / 1000.0
    durations = [(t['endTime'] - t['startTime']) / 1000.0 for t in ok]
    return {'per_trial': (end - t0) / n, 'duration': statistics.mean(durations), 'id': exp}


def nni_floor_config(tmp: Path, n: int, concurrency: int, script: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / 'trial.py').write_text(script)
    cfg = {
        'experimentName': 'bench_overhead nni floor',
        'experimentWorkingDirectory': str(tmp / 'nni-experiments'),
        'searchSpace': {'x': {'_type': 'choice', '_value': list(range(1000))}},
        'trialCommand': f'{sys.executable} trial.py',
        'trialCodeDirectory': str(tmp),
        'trialConcurrency': concurrency,
        'maxTrialNumber': n,
        'maxExperimentDuration': '30m',
        'tuner': {'name': 'Random', 'classArgs': {'seed': 0}},
        'trainingService': {'platform': 'local', 'useActiveGpu': False},
    }
    path = tmp / 'exp.yml'
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def overhead(n: int, concurrency: int, torch_floor: bool, warm: bool = True) -> None:
    from nni_xfer.runtime import warm_server as launcher
    from nni_xfer.adapters.experiments import write_config

    base = Path(tempfile.mkdtemp(prefix='bench_overhead_'))
    xfer_dir = base / 'xfer'
    xfer_dir.mkdir()
    xfer_cfg, _ = write_config(xfer_dir, max_trials=n, concurrency=concurrency, evaluator='mock',
                               evaluator_args={})
    # the trial runs from the repository (the code directory) so it finds nni_xfer as installed here
    raw = yaml.safe_load(xfer_cfg.read_text())
    raw['trialCodeDirectory'] = str(ROOT)
    xfer_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    runs = {'nni floor': _run(nni_floor_config(base / 'floor', n, concurrency, TRIVIAL), n),
            'xfer': _run(xfer_cfg, n)}
    if warm:
        warm_dir = base / 'xfer_warm'
        warm_dir.mkdir()
        warm_cfg, _ = write_config(warm_dir, max_trials=n, concurrency=concurrency, evaluator='mock',
                                   evaluator_args={})
        raw = yaml.safe_load(warm_cfg.read_text())
        raw['trialCodeDirectory'] = str(ROOT)
        raw['trialCommand'] = f'{sys.executable} -m nni_xfer.launch'
        warm_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
        try:
            runs['xfer + warm'] = _run(warm_cfg, n)
        finally:
            launcher.stop(all_keys=True)  # the benchmark's server (private NNI_XFER_HOME), by pid
    if torch_floor:
        runs['nni + torch'] = _run(nni_floor_config(base / 'torch', n, concurrency, TRIVIAL_TORCH), n)
    print(f'nnictl experiments: {n} trials each, trialConcurrency {concurrency}, local training service')
    print(f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}, cores {os.cpu_count()}')
    print(f'{"run":<12} {"s/trial":>8} {"mean trial":>11}  experiment')
    for name, r in runs.items():
        print(f'{name:<12} {r["per_trial"]:>8.2f} {r["duration"]:>9.2f} s  {r["id"]}')
    for name in ('xfer', 'xfer + warm'):
        if name not in runs:
            continue
        x = runs[name]['per_trial']
        print(f'{name} / nni floor: {x / runs["nni floor"]["per_trial"]:.2f}x (target <= 1.2)')
        if torch_floor:
            print(f'{name} / nni + torch floor: {x / runs["nni + torch"]["per_trial"]:.2f}x')


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def propose_latency(names: list[str] | None, proposals: int) -> None:
    from nni_xfer.registry import STRATEGIES
    from nni_xfer.testing.strategy_contract import contract_case

    print(f'propose latency over up to {proposals} proposals per strategy (contract case, mock metrics)')
    print(f'{"strategy":<12} {"n":>4} {"propose p50":>12} {"p99":>9} {"propose+observe p50":>20} {"p99":>9}')
    for name in names or STRATEGIES.names():
        case = contract_case(name)
        strategy = case.make(STRATEGIES.get(name), 0)
        prop, both = [], []
        for tid in range(proposals):
            t0 = time.perf_counter()
            p = strategy.propose(tid)
            t1 = time.perf_counter()
            if p is None:
                break
            strategy.observe(tid, case.metrics(strategy, p.architecture))
            t2 = time.perf_counter()
            prop.append((t1 - t0) * 1e3)
            both.append((t2 - t0) * 1e3)
        if not prop:
            print(f'{name:<12} {0:>4}  (no proposal)')
            continue
        print(f'{name:<12} {len(prop):>4} {_pct(prop, .5):>9.1f} ms {_pct(prop, .99):>6.1f} ms '
              f'{_pct(both, .5):>17.1f} ms {_pct(both, .99):>6.1f} ms')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--trials', type=int, default=20)
    ap.add_argument('--concurrency', type=int, default=2)
    ap.add_argument('--torch-floor', action='store_true',
                    help='also the trivial trial that imports torch and torchvision (about 2 more minutes)')
    ap.add_argument('--no-torch-floor', action='store_true', help=argparse.SUPPRESS)  # the default now
    ap.add_argument('--no-warm', action='store_true',
                    help='skip xfer with the warm launcher (python -m nni_xfer.launch)')
    ap.add_argument('--no-nnictl', action='store_true', help='only the propose latencies')
    ap.add_argument('--proposals', type=int, default=30)
    ap.add_argument('--strategies', help='comma-separated strategy names (default: every registered strategy)')
    args = ap.parse_args()
    os.environ['NNI_XFER_HOME'] = tempfile.mkdtemp(prefix='bench_overhead_home_')  # never the user's store
    propose_latency(args.strategies.split(',') if args.strategies else None, args.proposals)
    if not args.no_nnictl:
        overhead(args.trials, args.concurrency, args.torch_floor and not args.no_torch_floor, not args.no_warm)


if __name__ == '__main__':
    main()
