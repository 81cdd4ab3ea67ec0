"""Benchmark (not a test): quickstart wall time and where each trial's time goes.

    python benchmarks/bench_quickstart.py [--config examples/quickstart/exp.yml] [--port 8095]

Runs the quickstart experiment through real ``nnictl`` (local training service) and prints:
the whole experiment's wall time; per trial, NNI's wall time (trial start → end) split into
startup/dispatch (process start, imports, NNI bookkeeping), model build + init, training, and the
rest (evaluation, FLOPs count, checkpoint); and the scheduling gap between trials.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nni_xfer.adapters.experiments import create, finished, free_port, nnictl, wait
from nni_xfer.store import KnowledgeStore


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=str(Path(__file__).resolve().parents[1] / 'examples/quickstart/exp.yml'))
    p.add_argument('--port', type=int, default=None)
    args = p.parse_args(argv)
    raw = yaml.safe_load(Path(args.config).read_text())
    tmp = Path(tempfile.mkdtemp(prefix='bench-quickstart-'))
    raw['trialCommand'] = f'{sys.executable} -m nni_xfer.trial'
    raw['trialCodeDirectory'] = str(tmp)
    raw['tuner']['codeDirectory'] = str(tmp)
    raw['experimentWorkingDirectory'] = str(tmp / 'nni-experiments')
    raw['tuner']['classArgs'].update(store=str(tmp / 'store.db'), checkpoint_root=str(tmp / 'ckpt'))
    cfg = tmp / 'exp.yml'
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    n = int(raw['maxTrialNumber'])
    port = args.port or free_port()
    t0 = time.time()
    exp = create(cfg, port)
    try:
        _, ts = wait(port, finished(n), timeout=3600)
        wall = time.time() - t0
    finally:
        nnictl('stop', exp)
    # the timing metrics are in the store (NNI gets only REPORTED_METRICS), by the trial's NNI id
    stored = {e.trial_id: e.metrics or {} for e in KnowledgeStore(tmp / 'store.db').evaluations(experiment_id=exp)}
    rows = []
    for t in sorted(ts, key=lambda t: t['startTime']):
        m = stored.get(t['trialJobId'], {})
        nni_wall = (t['endTime'] - t['startTime']) / 1000
        trial = m.get('trial_seconds', float('nan'))
        setup = m.get('setup_seconds', float('nan'))
        train = m.get('train_seconds', float('nan'))
        rows.append({'trial': t['trialJobId'], 'status': t['status'], 'nni_wall': nni_wall,
                     'startup': nni_wall - trial, 'build_init': setup, 'train': train,
                     'rest': trial - setup - train, 'start': t['startTime'] / 1000, 'end': t['endTime'] / 1000})
    print(f'quickstart: {n} trials, {wall:.1f} s wall (nnictl create -> all trials finished)')
    print(f"{'trial':<8}{'status':<11}{'nni wall':>9}{'startup':>9}{'build':>8}{'train':>8}{'rest':>8}")
    for r in rows:
        print(f"{r['trial']:<8}{r['status']:<11}{r['nni_wall']:9.2f}{r['startup']:9.2f}{r['build_init']:8.2f}"
              f"{r['train']:8.2f}{r['rest']:8.2f}")
    gaps = [b['start'] - a['end'] for a, b in zip(rows, rows[1:])]
    ok = [r for r in rows if r['status'] == 'SUCCEEDED']
    if ok:
        tot = sum(r['nni_wall'] for r in ok)
        print(f"mean per trial: startup/dispatch {statistics.mean(r['startup'] for r in ok):.2f}s, "
              f"build+init {statistics.mean(r['build_init'] for r in ok):.2f}s, "
              f"training {statistics.mean(r['train'] for r in ok):.2f}s, "
              f"rest {statistics.mean(r['rest'] for r in ok):.2f}s; "
              f"training share {sum(r['train'] for r in ok) / tot:.0%}")
    if gaps:
        print(f'mean gap between trials (NNI scheduling): {statistics.mean(gaps):.2f}s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
