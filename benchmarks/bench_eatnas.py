"""Benchmark (not a test): EAT-NAS elastic transfer against the same search from scratch (paper Fig. 4),
over several seeds, on real related tasks.

    OMP_NUM_THREADS=1 python benchmarks/bench_eatnas.py [--out DIR] [--seeds 0 1 2] [--budget 16]
        [--population 8] [--sample 4] [--epochs 1] [--source-trials 16] [--source-epochs 1]
        [--family fashion_mnist|digits] [--share-widen random|zero]

The task family (``--family fashion_mnist``, the default; data from Debian's dataset-fashion-mnist):

- source (the "small task", CIFAR-10's role): Fashion-MNIST classes 0-4 resized to 14x14, 1,000
  training / 500 validation images, ``preset: cifar`` (stride-1 stem, total expansion in [4, 10]);
- target (ImageNet's role): Fashion-MNIST classes 5-9 (other garments), 14x14, 1,200 training /
  600 validation images, ``preset: imagenet`` (stride-2 stem, downsampling in blocks 2, 3, 4, 6,
  expansion [8, 16], 16-18 layers). The basic architecture lies under the source's constraints;
  its offspring are drawn inside the target's.

``--family digits`` is the older pair: digits with 600 training images -> the whole digits split.

1. Source search once (seed 100): P random architectures, then tournament cycles, ``--source-trials``
   in all. The basic model is the best-scoring member of its best-quality population with its
   checkpoint (the paper retrains the top-k first; skipped here, see ``nni-xfer eatnas retrain``).
2. For every seed, two target searches with the same budget, seed and settings: elastic transfer
   (P offspring of the basic architecture, weights shared from its checkpoint) and from scratch.

Every trial is the project's trial runner (``nni_xfer.runtime.trial.run_trial``, what ``nnictl`` trials
run) in this process, one at a time, trained for real. Results go to ``--out`` (default
``/tmp/bench-eatnas``; one JSON per search, rewritten after every trial, checkpoints beside them):
rerunning the same command resumes where it stopped and skips finished searches. A changed setting
is refused (``--out`` of another configuration).

Prints per seed and over seeds (mean ± sd): the best population mean accuracy reached by trial N
(running maximum of the per-cycle mean, paper Fig. 4), the initial population mean, the best single
validation accuracy, and the trials transfer needs to reach scratch's final best population mean
(same seed); draws ``eatnas_transfer_vs_scratch.png`` in ``--out``; prints wall time and machine.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings('ignore')

import numpy as np  # noqa: E402

from nni_xfer.config import build  # noqa: E402
from nni_xfer.spec import TrialSpec  # noqa: E402
from nni_xfer.runtime.trial import Reporter, run_trial  # noqa: E402

SPACE_ARGS = {'stem_channels': 8, 'head_channels': 64}
FAMILIES = {
    'fashion_mnist': {
        'source': ('fashion_mnist', {'classes': [0, 1, 2, 3, 4], 'image_size': 14, 'val_size': 500,
                                     'limit_train': 1000}, 'cifar'),
        'target': ('fashion_mnist', {'classes': [5, 6, 7, 8, 9], 'image_size': 14, 'val_size': 600,
                                     'limit_train': 1200}, 'imagenet'),
    },
    'digits': {
        'source': ('digits', {'val_size': 0.2, 'limit_train': 600}, 'cifar'),
        'target': ('digits', {'val_size': 0.2}, 'cifar'),
    },
}
SOURCE_SEED = 100


class Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


def _json_safe(x):
    return json.loads(json.dumps(x, default=float))


def search(name: str, args, task: tuple, n_trials: int, seed: int, out: Path, epochs: int,
           seed_from: dict | None = None):
    """One search, resumed from ``out/<name>.json`` when present; returns (strategy, record)."""
    dataset, dataset_args, preset = task
    strategy_args = {'population': args.population, 'sample': args.sample, 'target': args.target_params,
                     'patience': None}
    if args.share_widen != 'random':
        strategy_args['widen'] = args.share_widen
    if seed_from is not None:
        strategy_args['seed_from'] = seed_from
    class_args = dict(strategy='eatnas', space='mbv2_blocks', space_args={**SPACE_ARGS, 'preset': preset},
                      strategy_args=strategy_args, dataset=dataset, dataset_args=dataset_args, evaluator='train',
                      evaluator_args={'epochs': epochs, 'batch_size': args.batch_size, 'lr': args.lr,
                                      'lr_schedule': 'constant', 'weight_decay': 3e-4, 'num_threads': 1},
                      seed=seed)
    built = build(class_args)
    s, cfg = built.strategy, built.config
    path = out / f'{name}.json'
    rec = {'name': name, 'class_args': _json_safe(class_args), 'n_trials': n_trials, 'secs': 0.0, 'done': False,
           'trials': [], 'state': None}
    if path.is_file():
        old = json.loads(path.read_text())
        if old['class_args'] != rec['class_args'] or old['n_trials'] != n_trials:
            sys.exit(f'--out {out}: {name}.json was written with other settings; use another --out')
        rec = old
        if rec['state'] is not None:
            s.load_state_dict(rec['state'])
        if rec['done']:
            return s, rec
        print(f'{name}: resuming after {len(rec["trials"])} trials', flush=True)
    ckpt_root = str(out / 'checkpoints')
    for pid in range(len(rec['trials']), n_trials):
        t0 = time.time()
        p = s.propose(pid)
        if p is None:
            break
        spec = TrialSpec.from_proposal(p, pid, experiment_id=f'bench-{name}', strategy='eatnas', space=cfg.space,
                                       dataset=cfg.dataset, evaluator='train', seed=seed, space_args=cfg.space_args,
                                       dataset_args=cfg.dataset_args, evaluator_args=cfg.evaluator_args,
                                       checkpoint_root=ckpt_root)
        with contextlib.redirect_stdout(io.StringIO()):   # the trial's progress lines
            m = run_trial(spec, reporter=Quiet())
        s.observe(pid, m)
        rec['trials'].append({k: m.get(k) for k in ('default', 'inherited_acc', 'shared_fraction', 'params')})
        rec['secs'] += time.time() - t0
        rec['state'] = _json_safe(s.state_dict())
        _write(path, rec)
    rec['done'] = True
    _write(path, rec)
    shared = [t['shared_fraction'] for t in rec['trials'] if t.get('shared_fraction') is not None]
    extra = f', mean shared_fraction {np.mean(shared):.2f}' if shared else ''
    print(f'{name}: {len(rec["trials"])} trials in {rec["secs"]:.0f}s{extra}; {len(s.cycles)} cycles', flush=True)
    return s, rec


def _write(path: Path, rec: dict) -> None:
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)


def curves(s, budget: int) -> dict:
    """Per trial count n (P..budget): population mean at the last cycle closed by n, its running
    maximum, and the best single validation accuracy of the first n trials."""
    P = s.P
    by_trials = {P + c['cycle']: c['mean_acc'] for c in s.cycles}
    accs = [h['metrics']['default'] for h in s.history if h['status'] == 'SUCCEEDED']
    ns = list(range(P, budget + 1))
    mean, run_max, best_single = [], [], []
    cur = best = float('nan')
    for n in ns:
        cur = by_trials.get(n, cur)
        mean.append(cur)
        best = cur if np.isnan(best) else max(best, cur)
        run_max.append(best)
        best_single.append(max(accs[:n]))
    return {'n': ns, 'mean': mean, 'best_mean': run_max, 'best_single': best_single}


def trials_to_reach(c: dict, level: float) -> int | None:
    for n, v in zip(c['n'], c['best_mean']):
        if v >= level - 1e-12:
            return n
    return None


def ms(values, digits: int = 4) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return '—'
    return f'{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}'


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, colour in (('transfer', 'tab:blue'), ('scratch', 'tab:orange')):
        for ax, key, label in ((axes[0], 'mean', 'population mean accuracy'),
                               (axes[1], 'best_single', 'best single validation accuracy')):
            cs = [results[seed][arm] for seed in sorted(results)]
            n = np.asarray(cs[0]['n'])
            y = np.asarray([c[key] for c in cs], dtype=float)
            m, sd = y.mean(0), (y.std(0, ddof=1) if len(cs) > 1 else np.zeros(len(n)))
            ax.plot(n, m, color=colour, label=f'{arm} (mean of {len(cs)} seeds)')
            ax.fill_between(n, m - sd, m + sd, color=colour, alpha=0.2)
            ax.set_xlabel('trials (initial population included)')
            ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default='/tmp/bench-eatnas', help='results and checkpoints (resumable)')
    ap.add_argument('--family', choices=sorted(FAMILIES), default='fashion_mnist')
    ap.add_argument('--budget', type=int, default=16, help='trials of each target search (P included)')
    ap.add_argument('--population', type=int, default=8)
    ap.add_argument('--sample', type=int, default=4)
    ap.add_argument('--epochs', type=int, default=1, help='epochs per target trial (paper: 1)')
    ap.add_argument('--source-epochs', type=int, default=1)
    ap.add_argument('--source-trials', type=int, default=16)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--target-params', type=float, default=2e5, help="Eq. 1's params target")
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--share-widen', choices=['random', 'zero'], default='random',
                    help="eatnas_share's widening (strategy_args.widen); random: the paper's")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / 'checkpoints').mkdir(parents=True, exist_ok=True)
    fam = FAMILIES[args.family]
    t0 = time.time()
    print(f'machine: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, '
          f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}; out {out}', flush=True)
    src, src_rec = search('source', args, fam['source'], args.source_trials, SOURCE_SEED, out, args.source_epochs)
    basic = max(src.best_population, key=lambda m: m['score'])
    print(f"basic model: source trial {basic['id']}, val acc {basic['acc']:.4f}, score {basic['score']:.4f}",
          flush=True)
    seed_from = {'architecture': basic['architecture'], 'checkpoint': basic['checkpoint'],
                 'sha256': basic.get('sha256')}
    results = {}
    for seed in args.seeds:
        tr, _ = search(f'transfer-s{seed}', args, fam['target'], args.budget, seed, out, args.epochs, seed_from)
        sc, _ = search(f'scratch-s{seed}', args, fam['target'], args.budget, seed, out, args.epochs)
        results[seed] = {'transfer': curves(tr, args.budget), 'scratch': curves(sc, args.budget)}
    report(results, args, out, src_rec, time.time() - t0)
    return 0


def report(results: dict, args, out: Path, src_rec: dict, secs: float) -> None:
    P, B = args.population, args.budget
    marks = sorted({P, *range(P, B + 1, max(1, (B - P) // 4)), B})
    print(f'\n== {args.family}: P={P}, S={args.sample}, {args.epochs} epoch(s) per target trial, budget {B}, '
          f'seeds {args.seeds}; widen {args.share_widen}')
    print('best population mean accuracy reached by trial N (mean ± sd over seeds):')
    print(f"{'N':>4}  {'transfer':>17}  {'scratch':>17}  {'difference':>17}")
    for n in marks:
        i = n - P
        t = [results[s]['transfer']['best_mean'][i] for s in results]
        c = [results[s]['scratch']['best_mean'][i] for s in results]
        print(f'{n:4d}  {ms(t):>17}  {ms(c):>17}  {ms(np.subtract(t, c)):>17}')
    print('best single validation accuracy by trial N:')
    for n in marks:
        i = n - P
        t = [results[s]['transfer']['best_single'][i] for s in results]
        c = [results[s]['scratch']['best_single'][i] for s in results]
        print(f'{n:4d}  {ms(t):>17}  {ms(c):>17}  {ms(np.subtract(t, c)):>17}')
    needs = []
    for seed in sorted(results):
        r = results[seed]
        level = r['scratch']['best_mean'][-1]
        need = trials_to_reach(r['transfer'], level)
        needs.append(need)
        print(f"seed {seed}: initial mean transfer {r['transfer']['mean'][0]:.4f} / scratch "
              f"{r['scratch']['mean'][0]:.4f}; final best mean {r['transfer']['best_mean'][-1]:.4f} / {level:.4f}; "
              f"transfer reaches scratch's final best after {'never (within the budget)' if need is None else need} "
              f"trials (scratch: {B})")
    reached = [n for n in needs if n is not None]
    print(f"initial population mean: transfer {ms([results[s]['transfer']['mean'][0] for s in results])}, "
          f"scratch {ms([results[s]['scratch']['mean'][0] for s in results])}")
    print(f'trials for transfer to reach scratch\'s final best population mean: {ms(reached, 1)} '
          f'({len(reached)}/{len(needs)} seeds reach it; ratio to the budget {np.mean(reached) / B:.2f})'
          if reached else f'transfer never reaches scratch\'s final best population mean ({len(needs)} seeds)')
    png = out / 'eatnas_transfer_vs_scratch.png'
    plot(results, png, f'EAT-NAS {args.family}: transfer vs scratch, P={P}, S={args.sample}, '
                       f'{args.epochs} epoch/trial, {len(results)} seeds (mean ± sd)')
    (out / 'summary.json').write_text(json.dumps({'args': vars(args), 'results': results, 'needs': needs}))
    print(f'plot: {png}; source search {len(src_rec["trials"])} trials, {src_rec["secs"]:.0f}s; '
          f'wall time this run {secs:.0f}s; machine {platform.node()}, {os.cpu_count()} CPUs, '
          f'load {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    sys.exit(main())
