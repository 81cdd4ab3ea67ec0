"""Benchmark (not a test): EAS's RL meta-controller against random transformations, same budget.

    python benchmarks/bench_eas.py [--dataset digits] [--episodes 4] [--networks 5] [--epochs 3]

Runs both strategies in-process with the real trainer (the same trial code nnictl runs), prints
best and mean validation accuracy per episode, then trains the best children again from scratch
(fresh init, the same epochs) to show what the inherited weights are worth.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore')

from nni_xfer.config import build  # noqa: E402
from nni_xfer.runtime.trial import Reporter, run_trial  # noqa: E402
from nni_xfer.spec import TrialSpec  # noqa: E402

STARTS = {
    'digits': ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-64'],
    'fashion_mnist': ['conv-16-3', 'pool', 'conv-32-3', 'pool', 'conv-64-3', 'pool', 'fc-128'],
}


class Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


def run(strategy: str, args, root: str) -> tuple[list[dict], dict]:
    class_args = dict(strategy=strategy, space='eas_plain_cnn', space_args={'start': STARTS[args.dataset]},
                      strategy_args={'episodes_per_stage': args.episodes, 'networks_per_episode': args.networks,
                                     'wider_steps': 2, 'deeper_steps': 2},
                      dataset=args.dataset, dataset_args=args.dataset_args, evaluator='train',
                      evaluator_args={'epochs': args.epochs, 'lr': 0.02, 'weight_decay': 1e-4}, seed=args.seed)
    built = build(class_args)
    s, cfg = built.strategy, built.config
    results = {}
    pid = 0
    t0 = time.time()
    while not s.done:
        p = s.propose(pid)
        if p is None:
            raise RuntimeError('strategy waits with nothing pending (run sequentially)')
        spec = TrialSpec.from_proposal(p, pid, experiment_id=f'bench-{strategy}', strategy=strategy,
                                       space=cfg.space, dataset=cfg.dataset, evaluator='train', seed=args.seed,
                                       space_args=cfg.space_args, dataset_args=cfg.dataset_args,
                                       evaluator_args=cfg.evaluator_args, checkpoint_root=root)
        m = run_trial(spec, reporter=Quiet())
        results[pid] = {'architecture': p.architecture, 'metrics': m, 'role': p.meta.get('role')}
        s.observe(pid, m)
        pid += 1
    print(f'{strategy}: {pid} trained networks in {time.time() - t0:.0f}s', flush=True)
    return s.episode_log(), results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dataset', default='digits', choices=sorted(STARTS))
    p.add_argument('--episodes', type=int, default=4)
    p.add_argument('--networks', type=int, default=5)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--limit-train', type=int, default=None)
    p.add_argument('--scratch-top', type=int, default=3)
    args = p.parse_args(argv)
    args.dataset_args = {'val_size': 0.2} if args.dataset == 'digits' else {'val_size': 5000}
    if args.limit_train:
        args.dataset_args['limit_train'] = args.limit_train
    root = tempfile.mkdtemp(prefix='bench-eas-')
    logs, res = {}, {}
    for strategy in ('eas', 'eas_random'):
        logs[strategy], res[strategy] = run(strategy, args, root)
    print(f"\n{'episode':>7} | {'eas best':>8} {'eas mean':>8} | {'random best':>11} {'random mean':>11}")
    for a, b in zip(logs['eas'], logs['eas_random']):
        print(f"{a['episode']:>7} | {a['best']:8.4f} {a['mean']:8.4f} | {b['best']:11.4f} {b['mean']:11.4f}")
    for strategy in ('eas', 'eas_random'):
        accs = [r['metrics']['val_acc'] for r in res[strategy].values() if r['role'] == 'child']
        print(f'{strategy}: best child {max(accs):.4f}, mean child {sum(accs) / len(accs):.4f} over {len(accs)}')
    # children vs the same architecture from scratch, same epochs
    children = sorted((r for r in res['eas'].values() if r['role'] == 'child'),
                      key=lambda r: -r['metrics']['val_acc'])[:args.scratch_top]
    print(f"\n{'architecture':<60} {'child':>7} {'scratch':>8} {'inherited':>9}")
    for i, r in enumerate(children):
        spec = TrialSpec(space='eas_plain_cnn', architecture=r['architecture'], dataset=args.dataset,
                         space_args={'start': STARTS[args.dataset]}, dataset_args=args.dataset_args,
                         evaluator_args={'epochs': args.epochs, 'lr': 0.02, 'weight_decay': 1e-4},
                         seed=args.seed + 7 + i, proposal_id=10_000 + i, experiment_id='bench-scratch',
                         checkpoint_root=root)
        m = run_trial(spec, reporter=Quiet())
        arch = ' '.join(r['architecture']['layers'])
        print(f"{arch[:60]:<60} {r['metrics']['val_acc']:7.4f} {m['val_acc']:8.4f} "
              f"{r['metrics']['inherited_acc']:9.4f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
