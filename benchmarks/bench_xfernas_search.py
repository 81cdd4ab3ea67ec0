"""Issue 12 §5: XferNAS (with sources) vs. NAO vs. random vs. "best cell of the most similar source task".

Not real training: the closed-form multi-task response of ``bench_xfernas.py`` — every task's score
of a ``nasnet_cells`` cell is a universal random linear + quadratic function of its op and input
counts plus a task-specific residual (``--residual`` times its size), mapped to an accuracy-like
0.80 … 0.95 as in ``bench_nao.py``. Source knowledge: ``--per-source`` random cells scored on each
of ``--source-tasks`` tasks, recorded in a temporary knowledge store exactly as earlier searches
would be. The strategies are the real ones, driven trial by trial in-process on the target task
with the same budget (``--budget``, default the paper's 33):

- ``xfernas``: sources: other_datasets, 3 rounds x 11, phase 2 after 11 target results, η = 10;
- ``nao``: 11 random seed cells, then 2 rounds x 11;
- ``random``: 33 random cells;
- ``best source cell``: the best cell of the source task most similar to the target (highest
  Spearman ρ between source and target scores on the source's cells — an oracle choice; the paper
  picks the most similar dataset by judgement), evaluated once on the target.

Prints the mean best target score after each round's worth of trials and, for each, how rare that
score is among ``--pool`` random cells ("1 in K").

    python benchmarks/bench_xfernas_search.py               # ~10 min on 2 busy CPUs
    python benchmarks/bench_xfernas_search.py --repeats 5 --per-source 100 --png xfernas_search.png
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_nao import features, space_info  # noqa: E402  (same directory)

from nni_xfer.search_spaces.nasnet_cells import CellGrammar  # noqa: E402
from nni_xfer.store import KnowledgeStore  # noqa: E402
from nni_xfer.strategies.nao import NAOStrategy  # noqa: E402
from nni_xfer.strategies.random import RandomStrategy  # noqa: E402
from nni_xfer.strategies.xfernas import XferNASStrategy  # noqa: E402
from nni_xfer.testing.strategy_contract import drive  # noqa: E402


class Tasks:
    """score_t(arch) = 0.80 + 0.15 * sigmoid(z_t / 2), z_t = (u + residual * r_t) standardised."""

    def __init__(self, g: CellGrammar, reference: list[dict], n_tasks: int, residual: float, seed: int):
        rng = np.random.Generator(np.random.PCG64(seed))
        X = np.stack([features(g, a) for a in reference])
        self.g, self.mu, self.sd = g, X.mean(0), X.std(0) + 1e-9
        d = X.shape[1]
        self.fns = [(rng.normal(size=d), rng.normal(size=(d, 4))) for _ in range(n_tasks + 1)]
        self.residual = residual
        Z = self._z(X)                                   # (archs, tasks)
        self.zm, self.zs = Z.mean(0), Z.std(0)

    def _raw(self, Xs, fn):
        w, q = fn
        return Xs @ w + 0.5 * ((Xs @ q) ** 2).sum(-1) / 4

    def _z(self, X):
        Xs = (X - self.mu) / self.sd
        u = self._raw(Xs, self.fns[0])
        return np.stack([u + self.residual * self._raw(Xs, fn) for fn in self.fns[1:]], -1)

    def __call__(self, arch: dict, task: int) -> float:
        z = (self._z(features(self.g, arch)[None])[0, task] - self.zm[task]) / self.zs[task]
        return float(0.80 + 0.15 / (1 + np.exp(-z / 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--B', type=int, default=5)
    ap.add_argument('--ops', default='xfernas')
    ap.add_argument('--budget', type=int, default=33)
    ap.add_argument('--per-round', type=int, default=11)
    ap.add_argument('--source-tasks', type=int, default=2)
    ap.add_argument('--per-source', type=int, default=50)
    ap.add_argument('--residual', type=float, default=0.5)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--epochs', type=int, default=100, help='controller epochs per round (paper 1,000)')
    ap.add_argument('--pool', type=int, default=20000)
    ap.add_argument('--png', default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    g = CellGrammar(a.B, a.ops)
    info = space_info(g)
    rng = np.random.Generator(np.random.PCG64(0))
    reference = [g.random_sample(rng) for _ in range(2000)]
    T = a.source_tasks                                   # task T is the target
    tasks = Tasks(g, reference, T + 1, a.residual, seed=1)
    pool = np.sort([tasks(g.random_sample(rng), T) for _ in range(a.pool)])

    def one_in(v: float) -> str:
        p = (len(pool) - np.searchsorted(pool, v, side='left')) / len(pool)
        return f'>{a.pool}' if p == 0 else f'{1 / p:.0f}'

    rounds = a.budget // a.per_round
    budget = rounds * a.per_round
    ctrl = {'epochs': a.epochs, 'batch_size': 20}
    print(f'space nasnet_cells B={a.B} ops={a.ops}; {T} source tasks x {a.per_source} random cells, residual '
          f'{a.residual}; target budget {budget} ({rounds} x {a.per_round}); controller epochs {a.epochs}; '
          f'{a.repeats} repeats. Target: random cells mean {pool.mean():.4f}, best of {a.pool} {pool[-1]:.4f}',
          flush=True)
    curves: dict[str, list] = {'xfernas': [], 'nao': [], 'random': [], 'best source cell': []}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            path = os.path.join(tmp, f'store{r}.db')
            store = KnowledgeStore(path)
            r_src = np.random.Generator(np.random.PCG64(1000 + r))
            src_best = []
            for t in range(T):
                exp = f'src{t}'
                store.record_experiment(exp, strategy='random', space='nasnet_cells', dataset=f'task{t}')
                cells = [g.random_sample(r_src) for _ in range(a.per_source)]
                for i, arch in enumerate(cells):
                    s = tasks(arch, t)
                    store.record_proposal(exp, i, architecture=arch, space='nasnet_cells', dataset=f'task{t}',
                                          spec={'dataset_args': {}, 'mode': 'maximize'})
                    store.record_result(exp, i, {'default': s, 'val_acc': s}, status='SUCCEEDED')
                src_scores = [tasks(c, t) for c in cells]
                sim = spearmanr(src_scores, [tasks(c, T) for c in cells]).statistic
                src_best.append((sim, cells[int(np.argmax(src_scores))]))
            store.close()
            metric = lambda s, arch: {'default': tasks(arch, T), 'val_acc': tasks(arch, T)}  # noqa: E731

            def curve(props):
                c = np.maximum.accumulate([tasks(p['architecture'], T) for p in props[:budget]])
                return np.concatenate([c, np.full(budget - len(c), c[-1])])

            t = time.time()
            x = XferNASStrategy(info, seed=r, store=path, target='target', iterations=rounds,
                                new_per_iteration=a.per_round, phase2_after=a.per_round, controller=ctrl,
                                log_every=0)
            px = drive(x, budget, metrics=metric)
            tx = time.time() - t
            curves['xfernas'].append(curve(px))
            t = time.time()
            n = NAOStrategy(info, seed=r, seed_archs=a.per_round, iterations=rounds - 1, new_per_iteration=a.per_round,
                            top_k=a.per_round, controller=ctrl, log_every=0)
            pn = drive(n, budget, metrics=metric)
            tn = time.time() - t
            curves['nao'].append(curve(pn))
            curves['random'].append(curve(drive(RandomStrategy(info, seed=r), budget, metrics=metric)))
            best_src = max(src_best, key=lambda sc: sc[0])[1]
            curves['best source cell'].append(np.full(budget, tasks(best_src, T)))
            roles = lambda ps: {k: [p['meta']['role'] for p in ps].count(k) for k in ('nao', 'random_fill', 'seed')}  # noqa: E731
            print(f'  repeat {r}: xfernas {curves["xfernas"][-1][-1]:.4f} ({len(px)} trials {roles(px)}, {tx:.0f}s), '
                  f'nao {curves["nao"][-1][-1]:.4f} ({len(pn)} trials {roles(pn)}, {tn:.0f}s), random '
                  f'{curves["random"][-1][-1]:.4f}, best source cell {curves["best source cell"][-1][-1]:.4f} '
                  f'[{time.time() - t0:.0f}s]', flush=True)
    checkpoints = [1] + [k * a.per_round for k in range(1, rounds + 1)]
    print('\nmean best target score after N trials (1 in K: rarity among random cells)')
    print(f'{"method":18s}' + ''.join(f'{f"N={c}":>20s}' for c in checkpoints))
    for name, cs in curves.items():
        vals = [float(np.mean([c_[k - 1] for c_ in cs])) for k in checkpoints]
        print(f'{name:18s}' + ''.join(f'{v:.4f} (1 in {one_in(v)})'.rjust(20) for v in vals))
    if a.png:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, cs in curves.items():
            ax.plot(range(1, budget + 1), np.mean(cs, 0), label=name)
        ax.set_xlabel('target trials')
        ax.set_ylabel('best target score (closed form)')
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.png, dpi=120)
        print(f'plot: {a.png}')


if __name__ == '__main__':
    main()
