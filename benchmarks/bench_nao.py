"""NAO vs. random search at equal budgets, predictor rank correlation vs. observed cells, reconstruction.

Not real training: the "accuracy" of a ``nasnet_cells`` cell is a fixed closed-form response with a
known optimum — the same family as ``bench_xfernas.py`` (a random linear + quadratic function of the
cell's op counts and input choices, standardised on a reference pool of random cells), squashed to
an accuracy-like 0.80 … 0.95 by a logistic. The strategies are the real ones: ``nao``
(``NAOStrategy``: random seed set, controller rounds, gradient steps, dedupe) and ``random``
(``RandomStrategy``), driven trial by trial in-process with that response as the metric.

Parts (one run prints all, with ratios measured in the same run):

1. search: best true score found after each trial, mean over ``--repeats`` seeds, at the same budgets
   for NAO and random (same seeds: both start from the same random cells); how rare that score is
   among ``--pool`` random cells ("1 in K"), i.e. about how many random trials it takes to match,
   and K / trials for NAO (> 1: random search needs that many times NAO's trials).
2. predictor: the controller trained on n random cells (n in ``--observed``), Spearman ρ and Kendall τ
   (scipy.stats) of its predictions on ``--held-out`` other cells.
3. reconstruction: exact encode -> decode of the held-out and training sequences by those controllers.

    python benchmarks/bench_nao.py                    # defaults: B=5, 19 ops; ~10 min on 2 busy CPUs
    python benchmarks/bench_nao.py --repeats 5 --budget 100 --seed-archs 40 --per-round 20
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from nni_xfer.search_spaces.nasnet_cells import CellGrammar
from nni_xfer.strategies.nao import NAOController, NAOStrategy, minmax
from nni_xfer.strategies.random import RandomStrategy
from nni_xfer.strategy import SpaceInfo
from nni_xfer.testing.strategy_contract import drive


def features(g: CellGrammar, arch: dict) -> np.ndarray:
    """Op counts and input-choice counts per cell (as bench_xfernas.py)."""
    f = []
    for cell in ('normal', 'reduce'):
        ops = [arch[f'{cell}/op_{k}_{j}'] for k in range(3, g.B + 3) for j in (0, 1)]
        ins = [arch[f'{cell}/input_{k}_{j}'] for k in range(3, g.B + 3) for j in (0, 1)]
        f += [ops.count(o) for o in g.ops] + [ins.count(i) for i in range(1, g.B + 2)]
    return np.asarray(f, dtype=np.float64)


class Response:
    """accuracy(arch) = 0.80 + 0.15 * sigmoid(z / 2), z = linear + quadratic in standardised features
    (z standardised over the reference pool; z / 2 keeps the best cells off the sigmoid's plateau)."""

    def __init__(self, g: CellGrammar, reference: list[dict], seed: int = 1):
        rng = np.random.Generator(np.random.PCG64(seed))
        X = np.stack([features(g, a) for a in reference])
        self.g, self.mu, self.sd = g, X.mean(0), X.std(0) + 1e-9
        d = X.shape[1]
        self.w, self.q = rng.normal(size=d), rng.normal(size=(d, 4))
        z = self._z(X)
        self.zm, self.zs = z.mean(), z.std()

    def _z(self, X: np.ndarray) -> np.ndarray:
        Xs = (X - self.mu) / self.sd
        return Xs @ self.w + 0.5 * ((Xs @ self.q) ** 2).sum(-1) / 4

    def __call__(self, arch: dict) -> float:
        z = (self._z(features(self.g, arch)[None])[0] - self.zm) / self.zs
        return float(0.80 + 0.15 / (1 + np.exp(-z / 2)))


def space_info(g: CellGrammar) -> SpaceInfo:
    return SpaceInfo('nasnet_cells', {'B': g.B, 'ops': g.ops}, g.dims(), extra={'kind': 'nasnet_cells', 'B': g.B,
                                                                              'ops': g.ops})


def best_curve(props: list[dict], f: Response, budget: int) -> np.ndarray:
    scores = [f(p['architecture']) for p in props[:budget]]
    curve = np.maximum.accumulate(scores)
    if len(curve) < budget:  # a search that ended early keeps its best
        curve = np.concatenate([curve, np.full(budget - len(curve), curve[-1])])
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--B', type=int, default=5)
    ap.add_argument('--ops', default='xfernas')
    ap.add_argument('--budget', type=int, default=60)
    ap.add_argument('--seed-archs', type=int, default=20)
    ap.add_argument('--per-round', type=int, default=10)
    ap.add_argument('--top-k', type=int, default=20)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--epochs', type=int, default=200, help='controller epochs per round (paper 1,000)')
    ap.add_argument('--observed', type=int, nargs='+', default=[25, 50, 100, 200])
    ap.add_argument('--held-out', type=int, default=100)
    ap.add_argument('--predictor-epochs', type=int, default=300)
    ap.add_argument('--pool', type=int, default=20000, help='random cells whose best stands for the optimum')
    ap.add_argument('--fill-random', action='store_true',
                    help='NAO fills short rounds with random cells (default off, as NAO: a round can be smaller)')
    ap.add_argument('--skip-search', action='store_true')
    ap.add_argument('--skip-predictor', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    g = CellGrammar(a.B, a.ops)
    rng = np.random.Generator(np.random.PCG64(0))
    reference = [g.random_sample(rng) for _ in range(2000)]
    f = Response(g, reference)
    pool_scores = np.array([f(g.random_sample(rng)) for _ in range(a.pool)])
    opt = float(pool_scores.max())
    print(f'space nasnet_cells B={a.B} ops={a.ops} ({len(g.ops)}); closed-form response: random cells '
          f'mean {pool_scores.mean():.4f}, best of {a.pool} {opt:.4f}', flush=True)
    info = space_info(g)

    if not a.skip_search:
        rounds = (a.budget - a.seed_archs) // a.per_round
        budget = a.seed_archs + rounds * a.per_round
        print(f'\n1. search, budget {budget} = {a.seed_archs} random seed cells + {rounds} rounds x {a.per_round} '
              f'(top_k {a.top_k}, controller epochs {a.epochs}), {a.repeats} repeats', flush=True)
        curves = {'nao': [], 'random': []}
        origin = []
        t0 = time.time()
        for r in range(a.repeats):
            nao = NAOStrategy(info, seed=r, seed_archs=a.seed_archs, iterations=rounds, new_per_iteration=a.per_round,
                              top_k=a.top_k, controller={'epochs': a.epochs, 'batch_size': 20}, log_every=0,
                              fill_random=a.fill_random)
            metric = lambda s, arch: {'default': f(arch), 'val_acc': f(arch)}  # noqa: E731
            t = time.time()
            props = drive(nao, budget, metrics=metric)
            tn = time.time() - t
            curves['nao'].append(best_curve(props, f, budget))
            roles = [p['meta']['role'] for p in props]
            origin.append(roles.count('nao'))
            rnd = RandomStrategy(info, seed=r)
            curves['random'].append(best_curve(drive(rnd, budget, metrics=metric), f, budget))
            print(f'  repeat {r}: nao best {curves["nao"][-1][-1]:.4f} ({len(props)} trials, {roles.count("nao")} '
                  f'from gradient steps, {tn:.0f}s), random best {curves["random"][-1][-1]:.4f} '
                  f'[{time.time() - t0:.0f}s]', flush=True)
        checkpoints = sorted({a.seed_archs, *(a.seed_archs + k * a.per_round for k in range(1, rounds + 1))})
        print(f'\n  mean best true score found; "1 in K": a random cell is at least that good with probability 1/K '
              f'(from {a.pool} random cells; ">{a.pool}": none was); the random trials expected to match it '
              f'are about K')
        print('  trials   nao      random   nao: 1 in K   random: 1 in K   K(nao) / trials')
        pool_sorted = np.sort(pool_scores)

        def one_in(v: float) -> float:
            p = (len(pool_sorted) - np.searchsorted(pool_sorted, v, side='left')) / len(pool_sorted)
            return float('inf') if p == 0 else 1 / p

        for c in checkpoints:
            n = np.mean([x[c - 1] for x in curves['nao']])
            m = np.mean([x[c - 1] for x in curves['random']])
            kn, km = one_in(n), one_in(m)
            fmt = lambda k: f'>{a.pool}' if k == float('inf') else f'{k:.0f}'  # noqa: E731
            ratio = f'>{a.pool / c:.0f}' if kn == float('inf') else f'{kn / c:.1f}'
            print(f'  {c:6d}   {n:.4f}   {m:.4f}   {fmt(kn):>11}   {fmt(km):>14}   {ratio:>15}')
        print(f'  proposals from gradient steps per NAO run: {origin} of {rounds * a.per_round} wanted')

    if not a.skip_predictor:
        print(f'\n2./3. controller trained on n random cells ({a.predictor_epochs} epochs, batch 25); '
              f'{a.held_out} held-out cells', flush=True)
        seqs, archs, keys = [], [], set()
        r2 = np.random.Generator(np.random.PCG64(7))
        while len(seqs) < max(a.observed) + a.held_out:
            arch = g.random_sample(r2)
            s = tuple(g.to_tokens(arch))
            if s not in keys:
                keys.add(s)
                seqs.append(list(s))
                archs.append(arch)
        y = np.array([f(x) for x in archs])
        test = slice(0, a.held_out)
        print('  n     spearman  kendall   exact rec. held-out  train   fit time')
        for n in a.observed:
            tr = slice(a.held_out, a.held_out + n)
            c = NAOController(g, seed=0, batch_size=25, epochs=a.predictor_epochs)
            t = time.time()
            c.fit(seqs[tr], minmax(y[tr]), seed=1)
            dt = time.time() - t
            pred = c.predict(seqs[test])
            rho, tau = spearmanr(pred, y[test]).statistic, kendalltau(pred, y[test]).statistic
            rec_te = np.mean([p == q for p, q in zip(c.reconstruct(seqs[test]), seqs[test])])
            rec_tr = np.mean([p == q for p, q in zip(c.reconstruct(seqs[tr]), seqs[tr])])
            print(f'  {n:4d}  {rho:+.3f}    {tau:+.3f}    {rec_te:.3f}                {rec_tr:.3f}   {dt:.0f}s',
                  flush=True)


if __name__ == '__main__':
    main()
