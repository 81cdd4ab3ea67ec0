"""Benchmark (not a test): does XferNAS's transfer pay on real training? XferNAS vs NAO vs random.

A family of related tasks from the data on the machine (the generic ``dataset_args`` ``classes`` and
``image_size``), all at ``--image-size`` pixels:

- source tasks: ``fashion_mnist`` classes 0-4 and ``digits`` (natively 8x8, the default size);
- target task: ``fashion_mnist`` classes 5-9 (other clothes, the same kind of images: the paper's
  CIFAR-100 -> CIFAR-10 relation in small).

Source knowledge = a real random search of ``--per-source`` cells on each source task, recorded in the
benchmark's knowledge store exactly as an ``nni-xfer`` experiment records it (and reused by later
runs). On the target, three searches per seed with the same trial budget (``--budget``, the paper's
33 or 22; rounds of ``--per-round`` = 11), the same small ``nasnet_cells`` space and training:

- ``xfernas``: the real ``XferNASStrategy`` reading the source experiments from the store (phase 1
  from the best source cells with eta = 10, phase 2 after 11 target results);
- ``nao``: ``NAOStrategy``, 11 random seed cells then rounds of 11 (short rounds filled at random,
  as XferNAS does);
- ``random``: ``RandomStrategy``.

Every evaluation is a real trial (``nni_xfer.runtime.trial.run_trial``, the code an ``nnictl`` trial runs)
in this process, with one fixed training seed, so an architecture has one accuracy per task and
an evaluation is shared by every search that proposes it. Each finished trial is written to the
store at once; a rerun (same ``--dir``) skips every evaluation and every finished search already
there, so the benchmark can be stopped and resumed at any time (``--methods xfernas --tag NAME`` reruns
one method's searches after a change of the strategy, keeping the evaluations).

Prints per method the best validation accuracy so far after N = 5, 11, 22(, 33) trials (mean ± sd
over seeds), how many trials each needs to reach random search's final best (per seed), and the
predictor's Spearman rho per round on the target: on the round's own proposals (held out from its
training) and on a fixed reference set, the cells of the random searches (``ref``, n up to
seeds x budget, never in the predictor's training set). For XferNAS also the universal part
f^(u) alone. Draws the best-so-far curves (``--png``).

    OMP_NUM_THREADS=1 python benchmarks/bench_transfer_xfernas.py            # defaults: see --help
    python benchmarks/bench_transfer_xfernas.py --report-only                 # tables of what is done
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings('ignore')

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from nni_xfer.config import build  # noqa: E402
from nni_xfer.spec import TrialSpec  # noqa: E402
from nni_xfer.store import KnowledgeStore, arch_key  # noqa: E402
from nni_xfer.runtime.trial import Reporter, run_trial  # noqa: E402

FMNIST_A, FMNIST_B = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
METHODS = ('random', 'nao', 'xfernas')


def tasks(size: int) -> dict[str, tuple[str, dict]]:
    return {'fmnist0-4': ('fashion_mnist', {'classes': FMNIST_A, 'image_size': size}),
            'digits': ('digits', {'image_size': size}),
            'fmnist5-9': ('fashion_mnist', {'classes': FMNIST_B, 'image_size': size})}


SOURCES, TARGET = ('fmnist0-4', 'digits'), 'fmnist5-9'


class Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.dir = Path(os.path.expanduser(a.dir))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store_path = str(self.dir / 'store.db')
        self.runs_path = self.dir / 'runs.json'
        self.tasks = tasks(a.image_size)
        self.space_args = {'B': a.B, 'N': 1, 'F': a.F, 'ops': 'xfernas'}
        self.evaluator_args = {'epochs': a.epochs, 'batch_size': a.batch_size, 'lr': a.lr, 'weight_decay': 3e-4,
                               'grad_clip': 5.0, 'num_threads': 1, 'eval_batch_size': 500}
        self.split = {'val_size': a.val_size, 'limit_train': a.limit_train}
        # the settings that make an evaluation; a changed setting is another benchmark directory
        self.setting = {'space_args': self.space_args, 'evaluator_args': self.evaluator_args, 'split': self.split,
                        'image_size': a.image_size, 'train_seed': 0}
        meta = self.dir / 'setting.json'
        if meta.exists() and json.loads(meta.read_text()) != json.loads(json.dumps(self.setting)):
            sys.exit(f'{self.dir} holds a benchmark with other settings ({meta.read_text().strip()}); '
                     'use another --dir')
        meta.write_text(json.dumps(self.setting))
        self.store = KnowledgeStore(self.store_path)
        self.cache: dict[str, dict[str, dict]] = {}
        self.trained = 0
        self.train_seconds = 0.0
        self.runs = json.loads(self.runs_path.read_text()) if self.runs_path.exists() else {}

    # ---- evaluations: one experiment per task, written as each trial finishes
    def exp_of(self, task: str) -> str:
        return f'eval:{task}'

    def _load_cache(self, task: str) -> dict[str, dict]:
        if task not in self.cache:
            self.cache[task] = {arch_key(e.architecture): e.metrics
                                for e in self.store.evaluations(experiment_id=self.exp_of(task), status='SUCCEEDED')}
        return self.cache[task]

    def evaluate(self, task: str, arch: dict) -> dict:
        cache = self._load_cache(task)
        key = arch_key(arch)
        if key in cache:
            return cache[key]
        dataset, dargs = self.tasks[task]
        exp = self.exp_of(task)
        pid = len(cache)
        spec = TrialSpec(space='nasnet_cells', architecture=arch, dataset=dataset, evaluator='train',
                         space_args=self.space_args, dataset_args={**dargs, **self.split},
                         evaluator_args=self.evaluator_args, seed=0, proposal_id=pid, experiment_id=exp,
                         strategy='bench')
        if pid == 0:
            self.store.record_experiment(exp, strategy='bench', space='nasnet_cells', dataset=dataset,
                                         config={'dataset_args': {**dargs, **self.split}, **self.setting})
        t = time.time()
        with contextlib.redirect_stdout(io.StringIO()):
            m = run_trial(spec, reporter=Quiet())
        self.train_seconds += time.time() - t
        self.trained += 1
        metrics = {k: float(m[k]) for k in ('default', 'val_acc') if k in m}
        self.store.record_proposal(exp, pid, architecture=arch, strategy='bench', space='nasnet_cells',
                                   dataset=dataset, spec={'dataset_args': {**dargs, **self.split},
                                                          'mode': 'maximize'})
        self.store.record_result(exp, pid, metrics, status='SUCCEEDED')
        cache[key] = metrics
        return metrics

    # ---- strategies, built through the experiment config path (validation included)
    def class_args(self, method: str, task: str, seed: int) -> dict:
        a = self.a
        rounds = a.budget // a.per_round
        ctrl = {'epochs': a.controller_epochs}
        if method == 'random':
            strategy, sargs = 'random', {}
        elif method == 'nao':
            strategy, sargs = 'nao', {'seed_archs': a.per_round, 'iterations': rounds - 1,
                                      'new_per_iteration': a.per_round, 'controller': ctrl, 'fill_random': True,
                                      'log_every': 0}
        else:
            strategy, sargs = 'xfernas', {'sources': [self.exp_of(s) for s in SOURCES],
                                          'per_source_limit': a.per_source, 'iterations': rounds,
                                          'new_per_iteration': a.per_round, 'phase2_after': a.per_round, 'eta': 10,
                                          'controller': ctrl, 'log_every': 0}
        dataset, dargs = self.tasks[task]
        return dict(strategy=strategy, strategy_args=sargs, space='nasnet_cells', space_args=self.space_args,
                    dataset=dataset, dataset_args={**dargs, **self.split}, evaluator='train',
                    evaluator_args=self.evaluator_args, seed=seed, store=self.store_path)

    def reference(self) -> list[dict]:
        """The cells of the random target searches of every seed (known without training)."""
        refs, seen = [], set()
        for seed in self.a.seeds:
            s = build(self.class_args('random', TARGET, seed)).strategy
            for tid in range(self.a.budget):
                p = s.propose(tid)
                if arch_key(p.architecture) not in seen:
                    seen.add(arch_key(p.architecture))
                    refs.append(p.architecture)
        return refs

    def search(self, method: str, task: str, seed: int, budget: int, refs: list[dict] | None = None) -> dict:
        s = build(self.class_args(method, task, seed)).strategy
        traj, rounds = [], []
        t0 = time.time()
        trained0 = self.trained
        tid = 0

        def own_predictions() -> None:
            # the controller of the current round on the round's own proposals, before the next round
            # retrains it (the proposals were held out of its training)
            if rounds and rounds[-1].get('own_pred') is None:
                own = [t['arch'] for t in traj if t['iteration'] == rounds[-1]['iteration']]
                rounds[-1]['own_pred'] = s.controller.predict([s.grammar.to_tokens(x) for x in own],
                                                              s.predictor_task).tolist()

        while tid < budget:
            it_before = getattr(s, 'iteration', 0)
            if refs is not None and getattr(s, 'controller', None) is not None and not s.queue:
                own_predictions()
            p = s.propose(tid)
            if p is None:
                break
            if getattr(s, 'iteration', 0) != it_before and refs is not None:
                rounds.append(self._round_snapshot(s, refs))
            m = self.evaluate(task, p.architecture)
            s.observe(tid, m)
            traj.append({'arch': p.architecture, 'acc': m['default'], 'role': p.meta.get('role'),
                         'phase': p.meta.get('phase'), 'iteration': p.meta.get('iteration')})
            tid += 1
        if refs is not None and getattr(s, 'controller', None) is not None:
            own_predictions()
        return {'trajectory': traj, 'rounds': rounds, 'seconds': time.time() - t0,
                'trained': self.trained - trained0, 'log': getattr(s, 'round_log', lambda: [])()}

    def _round_snapshot(self, s, refs: list[dict]) -> dict:
        """Predictions of the controller just trained for the new round, on the reference cells."""
        g, ctrl = s.grammar, s.controller
        trained = {arch_key(h['architecture']) for h in s._evaluated()}
        keep = [r for r in refs if arch_key(r) not in trained]
        seqs = [g.to_tokens(r) for r in keep]
        snap = {'iteration': s.iteration, 'target_results': len(s._evaluated()),
                'ref': [arch_key(r) for r in keep],
                'pred': ctrl.predict(seqs, s.predictor_task).tolist()}
        if s.predictor_task is not None:
            snap['pred_universal'] = ctrl.predict(seqs, None).tolist()
        return snap

    def save(self) -> None:
        tmp = self.runs_path.with_suffix('.tmp')
        tmp.write_text(json.dumps(self.runs))
        os.replace(tmp, self.runs_path)


def fmt(xs) -> str:
    xs = [x for x in xs if x is not None and not np.isnan(x)]
    if not xs:
        return 'n/a'
    return f'{np.mean(xs):.4f} ± {np.std(xs, ddof=1) if len(xs) > 1 else 0:.4f}'


def report(b: Bench, seeds: list[int], png: str | None) -> None:
    a = b.a
    cps = [n for n in (5, 11, 22, 33) if n <= a.budget]
    runs = {m: {s: b.runs.get(f'{m}:{s}') for s in seeds} for m in METHODS}
    runs = {m: {s: r for s, r in rs.items() if r is not None} for m, rs in runs.items()}
    curves = {m: {s: np.maximum.accumulate([t['acc'] for t in r['trajectory']]) for s, r in rs.items()}
              for m, rs in runs.items()}
    print(f'\nbest validation accuracy on the target {TARGET} after N trials, mean ± sd over seeds (n seeds)')
    print(f'{"method":9s}' + ''.join(f'{f"N={n}":>18s}' for n in cps))
    for m in METHODS:
        cs = curves[m]
        row = [fmt([c[n - 1] for c in cs.values() if len(c) >= n]) for n in cps]
        print(f'{m:9s}' + ''.join(f'{x:>18s}' for x in row) + f'   ({len(cs)})')
    print('\ntrials to reach the final best of random search with the same seed (never: ">B")')
    for m in METHODS:
        needs = []
        for s, c in curves[m].items():
            r = curves['random'].get(s)
            if r is None or len(r) < a.budget:
                continue
            hit = np.nonzero(c >= r[-1] - 1e-12)[0]
            needs.append(int(hit[0]) + 1 if len(hit) else None)
        txt = ', '.join(str(n) if n is not None else f'>{a.budget}' for n in needs)
        reached = [n for n in needs if n is not None]
        print(f'  {m:8s} per seed: {txt or "n/a"}; reached in {len(reached)}/{len(needs)} seeds'
              + (f', median {np.median(reached):.0f}' if reached else ''))
    # predictor Spearman per round
    ref_acc = b._load_cache(TARGET)
    print('\npredictor Spearman rho on the target per round, mean ± sd over seeds: "own" = the round\'s proposals '
          '(held out from its training), "ref" = random-search cells (never trained on)')
    for m in ('nao', 'xfernas'):
        by_round: dict[int, dict[str, list]] = {}
        for s, r in runs[m].items():
            traj = r['trajectory']
            for snap in r['rounds']:
                it = snap['iteration']
                d = by_round.setdefault(it, {'n_target': [], 'own': [], 'ref': [], 'ref_u': [], 'n_ref': []})
                d['n_target'].append(snap['target_results'])
                own = [t for t in traj if t['iteration'] == it]
                if len(own) >= 3 and snap.get('own_pred'):
                    d['own'].append(spearmanr(snap['own_pred'], [t['acc'] for t in own]).statistic)
                known = [(i, ref_acc[k]['default']) for i, k in enumerate(snap['ref']) if k in ref_acc]
                if len(known) >= 5:
                    idx, acc = zip(*known)
                    d['ref'].append(spearmanr([snap['pred'][i] for i in idx], acc).statistic)
                    d['n_ref'].append(len(known))
                    if 'pred_universal' in snap:
                        d['ref_u'].append(spearmanr([snap['pred_universal'][i] for i in idx], acc).statistic)
        for it in sorted(by_round):
            d = by_round[it]
            extra = f'; universal part alone on ref {fmt(d["ref_u"])}' if d['ref_u'] else ''
            print(f'  {m:8s} round {it}: trained with {sorted(set(d["n_target"]))} target results; own '
                  f'{fmt(d["own"])}; ref {fmt(d["ref"])} (n={sorted(set(d["n_ref"]))}){extra}')
    trained = sum(len(b._load_cache(t)) for t in b.tasks)
    print(f'\nevaluations in the store: {trained} ({", ".join(f"{t}: {len(b._load_cache(t))}" for t in b.tasks)})')
    if png and any(curves[m] for m in METHODS):
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for m in METHODS:
            cs = [c for c in curves[m].values() if len(c) == a.budget]
            if not cs:
                continue
            mean, sd = np.mean(cs, 0), np.std(cs, 0)
            x = np.arange(1, a.budget + 1)
            ax.plot(x, mean, label=f'{m} ({len(cs)} seeds)')
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
        ax.set_xlabel('trials on the target')
        ax.set_ylabel('best validation accuracy so far')
        ax.set_title(f'{TARGET} at {a.image_size}x{a.image_size}; sources {", ".join(SOURCES)}', fontsize=9)
        ax.legend()
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        print(f'plot: {png}')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dir', default='~/.nni-xfer/bench/transfer_xfernas', help='store and run records (resumable)')
    ap.add_argument('--budget', type=int, default=33, help="target trials per search (the paper's 33; 22 is faster)")
    ap.add_argument('--per-round', type=int, default=11)
    ap.add_argument('--per-source', type=int, default=20, help='random cells per source task (paper: 200)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    ap.add_argument('--tag', default='', help='rerun the --methods searches recorded under another tag '
                                              '(after a change of a strategy; evaluations are kept)')
    ap.add_argument('--controller-epochs', type=int, default=100, help='per round (paper: 1,000)')
    ap.add_argument('--B', type=int, default=5)
    ap.add_argument('--F', type=int, default=4)
    ap.add_argument('--image-size', type=int, default=8)
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--batch-size', type=int, default=50)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--limit-train', type=int, default=500)
    ap.add_argument('--val-size', type=int, default=300)
    ap.add_argument('--report-only', action='store_true')
    ap.add_argument('--png', default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import torch
    torch.set_num_threads(1)
    t0 = time.time()
    b = Bench(a)
    print(f'machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; '
          f'torch threads 1; store {b.store_path}', flush=True)
    print(f'space nasnet_cells {b.space_args}; {a.image_size}x{a.image_size} images, train {a.limit_train}, '
          f'val {a.val_size}, {a.epochs} epochs, batch {a.batch_size}; budget {a.budget} ({a.per_round} per round), '
          f'controller {a.controller_epochs} epochs/round; sources {", ".join(SOURCES)} x {a.per_source}; '
          f'target {TARGET}; seeds {a.seeds}', flush=True)
    if not a.report_only:
        for src in SOURCES:  # source knowledge: a random search per source task, seed 1000
            before = b.trained
            r = b.search('random', src, 1000, a.per_source)
            print(f'source {src}: {len(r["trajectory"])} cells, best {max(t["acc"] for t in r["trajectory"]):.4f}, '
                  f'{b.trained - before} trained now [{time.time() - t0:.0f}s]', flush=True)
        refs = b.reference()
        # method by method (random and NAO first: XferNAS can be rerun after a change with --tag)
        for m in a.methods:
            for seed in a.seeds:
                key = f'{m}:{seed}'
                if key in b.runs and b.runs[key].get('tag', '') == a.tag:
                    continue
                r = b.search(m, TARGET, seed, a.budget, refs if m != 'random' else None)
                r['tag'] = a.tag
                b.runs[key] = r
                b.save()
                best = max(t['acc'] for t in r['trajectory'])
                print(f'{m} seed {seed}: {len(r["trajectory"])} trials, best {best:.4f}, {r["trained"]} trained, '
                      f'{r["seconds"]:.0f}s [{time.time() - t0:.0f}s]', flush=True)
    report(b, a.seeds, a.png)
    print(f'\nwall {time.time() - t0:.0f}s; {b.trained} trials trained in this run ({b.train_seconds:.0f}s); '
          f'machine {platform.node()}, {os.cpu_count()} CPUs, load now {os.getloadavg()[0]:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
