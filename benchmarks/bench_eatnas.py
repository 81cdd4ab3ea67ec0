"""Benchmark (not a test): EAT-NAS elastic transfer against the same search from scratch (paper Fig. 4).

    python benchmarks/bench_eatnas.py [--budget 12] [--population 4] [--sample 2] [--epochs 4]
                                      [--batch-size 32] [--source-limit 600] [--source-trials 8]
                                      [--target digits|synthetic] [--seeds 0 [1 ...]]

1. Source search on the cheap proxy: ``digits`` limited to ``--source-limit`` training images
   (P random architectures, then tournament cycles, ``--source-trials`` in all).
2. The basic model: the best-scoring member of the source's best-quality population, with its
   checkpoint (the paper retrains the top-k first; skipped here, see ``nni-xfer eatnas retrain``).
3. On the target task (``--target digits``: the whole training split; ``synthetic``: another task,
   4 classes) two searches with the same budget, seed and settings: elastic transfer (population =
   P offspring of the basic architecture, weights shared from its checkpoint) and from scratch
   (P random architectures).

Every trial is the real trainer in this process (the code ``nnictl`` trials run), one at a time.
Prints, per cycle, the population mean accuracy and Q of both, and the number of trials transfer
needs to reach the best population mean scratch reaches with the whole budget (and the ratio to
the budget). ``--seeds 0 1 2`` repeats the target pair with other seeds (the source search once).
Measured with the defaults (README, EAT-NAS): 37 min on a loaded 2-core CPU; 2 epochs per trial
leaves these networks near chance, so there is nothing to transfer.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore')

from nni_xfer.config import build  # noqa: E402
from nni_xfer.spec import TrialSpec  # noqa: E402
from nni_xfer.strategies.eatnas.report import cycle_trials, trials_to_reach  # noqa: E402
from nni_xfer.trial import Reporter, run_trial  # noqa: E402

SPACE_ARGS = {'stem_channels': 8, 'head_channels': 64}
TARGETS = {'digits': ('digits', {'val_size': 0.2}),
           'synthetic': ('synthetic', {'num_classes': 4, 'image_size': 8, 'num_samples': 1200, 'val_size': 0.2})}


class Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


def search(name: str, args, dataset: str, dataset_args: dict, n_trials: int, seed: int, root: str,
           seed_from: dict | None = None):
    strategy_args = {'population': args.population, 'sample': args.sample, 'target': args.target_params,
                     'patience': None}
    if seed_from is not None:
        strategy_args['seed_from'] = seed_from
    class_args = dict(strategy='eatnas', space='mbv2_blocks', space_args=SPACE_ARGS, strategy_args=strategy_args,
                      dataset=dataset, dataset_args=dataset_args, evaluator='train',
                      evaluator_args={'epochs': args.epochs, 'batch_size': args.batch_size, 'lr': args.lr,
                                      'lr_schedule': 'constant', 'weight_decay': 3e-4, 'num_threads': args.threads},
                      seed=seed)
    built = build(class_args)
    s, cfg = built.strategy, built.config
    t0 = time.time()
    shared = []
    for pid in range(n_trials):
        p = s.propose(pid)
        if p is None:
            break
        spec = TrialSpec.from_proposal(p, pid, experiment_id=f'bench-{name}', strategy='eatnas', space=cfg.space,
                                       dataset=cfg.dataset, evaluator='train', seed=seed, space_args=cfg.space_args,
                                       dataset_args=cfg.dataset_args, evaluator_args=cfg.evaluator_args,
                                       checkpoint_root=root)
        with contextlib.redirect_stdout(io.StringIO()):   # the trial's progress lines
            m = run_trial(spec, reporter=Quiet())
        if 'shared_fraction' in m:
            shared.append(m['shared_fraction'])
        s.observe(pid, m)
    secs = time.time() - t0
    extra = f', mean shared_fraction {sum(shared) / len(shared):.2f}' if shared else ''
    print(f'{name}: {len(s.history)} trials in {secs:.0f}s{extra}; {len(s.cycles)} cycles', flush=True)
    return s, secs


def compare(transfer, scratch, budget: int) -> dict:
    ct, cs = cycle_trials(transfer.cycles, transfer.P), cycle_trials(scratch.cycles, scratch.P)
    print(f"{'trials':>6}  {'transfer mean':>13}  {'transfer Q':>10}  {'scratch mean':>12}  {'scratch Q':>9}")
    by_t = {c['trials']: c for c in ct}
    by_s = {c['trials']: c for c in cs}
    def cell(c, key):
        return '' if c is None else f'{c[key]:.4f}'
    for n in sorted(set(by_t) | set(by_s)):
        t, s = by_t.get(n), by_s.get(n)
        print(f"{n:6d}  {cell(t, 'mean_acc'):>13}  {cell(t, 'Q'):>10}  {cell(s, 'mean_acc'):>12}  {cell(s, 'Q'):>9}")
    best_s = max(c['mean_acc'] for c in cs)
    best_t = max(c['mean_acc'] for c in ct)
    need = trials_to_reach(ct, best_s)
    init_t, init_s = ct[0]['mean_acc'], cs[0]['mean_acc']
    print(f'initial population mean: transfer {init_t:.4f}, scratch {init_s:.4f}; best population mean: '
          f'transfer {best_t:.4f}, scratch {best_s:.4f}')
    if need is None:
        print(f'transfer never reaches the best scratch population mean {best_s:.4f} within {budget} trials')
    else:
        print(f'transfer reaches the best scratch population mean {best_s:.4f} after {need} trials '
              f'(scratch: {budget}); ratio {need / budget:.2f}')
    return {'need': need, 'init_t': init_t, 'init_s': init_s, 'best_t': best_t, 'best_s': best_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--budget', type=int, default=12, help='trials of each target search (P included)')
    ap.add_argument('--population', type=int, default=4)
    ap.add_argument('--sample', type=int, default=2)
    ap.add_argument('--epochs', type=int, default=4)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--target-params', type=float, default=2e5, help="Eq. 1's params target")
    ap.add_argument('--source-limit', type=int, default=600, help='training images of the source task')
    ap.add_argument('--source-trials', type=int, default=8)
    ap.add_argument('--target', choices=sorted(TARGETS), default='digits')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--threads', type=int, default=1, help='torch threads per trial')
    args = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as root:
        src, src_secs = search('source', args, 'digits', {'val_size': 0.2, 'limit_train': args.source_limit},
                               args.source_trials, 100, root)
        basic = max(src.best_population, key=lambda m: m['score'])
        print(f"basic model: source trial {basic['id']}, val acc {basic['acc']:.4f}, "
              f"score {basic['score']:.4f}", flush=True)
        seed_from = {'architecture': basic['architecture'], 'checkpoint': basic['checkpoint'],
                     'sha256': basic.get('sha256')}
        dataset, dargs = TARGETS[args.target]
        outcomes = []
        for seed in args.seeds:
            print(f'== target {args.target}, seed {seed}, budget {args.budget} trials each', flush=True)
            tr, tr_secs = search(f'transfer-s{seed}', args, dataset, dargs, args.budget, seed, root, seed_from)
            sc, sc_secs = search(f'scratch-s{seed}', args, dataset, dargs, args.budget, seed, root)
            outcomes.append(compare(tr, sc, args.budget))
    print(f'\nsummary ({args.target}; P={args.population}, S={args.sample}, {args.epochs} epochs per trial, '
          f'budget {args.budget}; source search {args.source_trials} trials, {src_secs:.0f}s; total '
          f'{time.time() - t0:.0f}s):')
    for seed, o in zip(args.seeds, outcomes):
        need = 'never' if o['need'] is None else f"{o['need']} trials (ratio {o['need'] / args.budget:.2f})"
        print(f"  seed {seed}: initial mean transfer/scratch {o['init_t']:.4f}/{o['init_s']:.4f} "
              f"(ratio {o['init_t'] / o['init_s']:.2f}); best mean {o['best_t']:.4f}/{o['best_s']:.4f}; "
              f"transfer reaches scratch's best after {need}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
