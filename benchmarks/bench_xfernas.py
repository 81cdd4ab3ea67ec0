"""XferNAS Fig. 3 study on a tabular response: predictor rank correlation vs. source and target knowledge.

Not real training: every task's "accuracy" of a NASNet cell is a fixed closed-form response — a
universal part shared by all tasks (a random linear + quadratic function of the cell's op and input
counts) plus a task-specific residual (another random function, ``--residual`` times smaller). It
measures what the transfer network itself can do — whether f^(u), trained on the source tasks only,
ranks the target's cells above chance at zero target knowledge and how that changes with source
and target knowledge — with NAO's full controller (encoder, decoder, transfer predictor, Eq. 6 loss).
Real-data numbers need recorded evaluations (``nni-xfer xfernas sources`` / ``import``).

    python benchmarks/bench_xfernas.py                  # ~minutes on 2 CPUs
    python benchmarks/bench_xfernas.py --sources 0 25 50 150 --targets 0 10 25 50 100 --splits 5 --png fig3.png
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from nni_xfer.search_spaces.nasnet_cells import OP_SETS, CellGrammar
from nni_xfer.strategies.nao import NAOConfig, NAOController
from nni_xfer.strategies.xfernas import TransferPredictor
from nni_xfer.strategies.xfernas.strategy import RESIDUAL_L2, TARGET_SCALING, TRANSFER_LAYERS
from nni_xfer.strategies.xfernas.transfer import SCALINGS, scale_targets


def features(g: CellGrammar, arch: dict) -> np.ndarray:
    f = []
    for cell in ('normal', 'reduce'):
        ops = [arch[f'{cell}/op_{k}_{j}'] for k in range(3, g.B + 3) for j in (0, 1)]
        ins = [arch[f'{cell}/input_{k}_{j}'] for k in range(3, g.B + 3) for j in (0, 1)]
        f += [ops.count(o) for o in g.ops] + [ins.count(i) for i in range(1, g.B + 2)]
    return np.asarray(f, dtype=np.float64)


def responses(X: np.ndarray, n_tasks: int, residual: float, seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(seed))
    d = X.shape[1]
    Xs = (X - X.mean(0)) / (X.std(0) + 1e-9)

    def fn():
        w, q = rng.normal(size=d), rng.normal(size=(d, 4))
        return Xs @ w + 0.5 * ((Xs @ q) ** 2).sum(1) / 4
    u = fn()
    out = []
    for _ in range(n_tasks):
        r = fn()
        out.append(u / u.std() + residual * r / r.std())
    return np.stack(out)  # (tasks, archs)


def one(g, seqs, Y, src_idx, tgt_idx, test_idx, n_src_tasks, cfg, seed, xfer):
    tasks, x, y = [], [], []
    for t in range(n_src_tasks):
        x += [seqs[i] for i in src_idx[t]]
        y += list(Y[t, src_idx[t]])
        tasks += [t] * len(src_idx[t])
    x += [seqs[i] for i in tgt_idx]
    y += list(Y[n_src_tasks, tgt_idx])
    tasks += [n_src_tasks] * len(tgt_idx)
    n_tasks = n_src_tasks + 1
    ctrl = NAOController(g, seed=seed, predictor=lambda h: TransferPredictor(
        h, n_tasks, hidden=cfg['mlp_hidden'], layers=xfer['layers'], dropout=0.1, residual_l2=xfer['residual_l2']),
        **cfg)
    if x:
        ctrl.fit(x, scale_targets(y, tasks, xfer['scaling']), tasks, seed=seed)
    test = [seqs[i] for i in test_idx]
    out = []
    for task in (n_src_tasks, None):  # f^(target), then the universal part alone
        pred = ctrl.predict(test, task=task)
        out.append(0.0 if np.ptp(pred) == 0 else float(spearmanr(pred, Y[n_src_tasks, test_idx]).statistic))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sources', type=int, nargs='+', default=[0, 25, 50])
    ap.add_argument('--targets', type=int, nargs='+', default=[0, 10, 25])
    ap.add_argument('--splits', type=int, default=3)
    ap.add_argument('--source-tasks', type=int, default=3)
    ap.add_argument('--held-out', type=int, default=50)
    ap.add_argument('--residual', type=float, default=0.5)
    ap.add_argument('--epochs', type=int, default=60)
    layers = TRANSFER_LAYERS if TRANSFER_LAYERS is not None else NAOConfig().mlp_layers
    ap.add_argument('--transfer-layers', type=int, default=layers,
                    help=f'hidden layers of the universal and residual networks (xfernas default {layers})')
    ap.add_argument('--residual-l2', type=float, default=RESIDUAL_L2,
                    help=f'ridge weight on the residual networks (xfernas default {RESIDUAL_L2})')
    ap.add_argument('--scaling', choices=SCALINGS, default=TARGET_SCALING,
                    help=f'per-task target scaling (xfernas default {TARGET_SCALING})')
    ap.add_argument('--png', default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = CellGrammar(3, OP_SETS['naonet'])
    rng = np.random.Generator(np.random.PCG64(0))
    pool = {}
    while len(pool) < 2000:
        arch = g.random_sample(rng)
        pool[tuple(g.to_tokens(arch))] = arch
    seqs = [list(s) for s in pool]
    X = np.stack([features(g, arch) for arch in pool.values()])
    Y = responses(X, a.source_tasks + 1, a.residual, seed=1)
    cfg = dict(epochs=a.epochs, batch_size=50, embedding_size=16, hidden_size=48, mlp_hidden=64, swap_augment=True)
    xfer = {'layers': a.transfer_layers, 'residual_l2': a.residual_l2, 'scaling': a.scaling}
    print(f'transfer network: {a.transfer_layers} hidden layers x 64, residual_l2 {a.residual_l2}, '
          f'scaling {a.scaling}; '
          f'{a.splits} splits (seeds)', flush=True)
    t0 = time.time()
    table = {}
    for s in a.sources:
        for t in a.targets:
            vals, uvals = [], []
            for split in range(a.splits):
                r = np.random.Generator(np.random.PCG64(100 + split))
                perm = r.permutation(len(seqs))
                test = perm[:a.held_out]
                rest = perm[a.held_out:]
                # each architecture is evaluated on exactly one task (paper §4.5)
                src = [rest[i * s:(i + 1) * s] for i in range(a.source_tasks)]
                tgt = rest[a.source_tasks * s:a.source_tasks * s + t]
                v, u = one(g, seqs, Y, src, tgt, test, a.source_tasks, cfg, seed=split, xfer=xfer)
                vals.append(v)
                uvals.append(u)
            table[(s, t)] = (float(np.mean(vals)), float(np.std(vals)))
            print(f'source {s:4d}/task  target {t:4d}: spearman {table[(s, t)][0]:+.3f} ± {table[(s, t)][1]:.3f} '
                  f'(universal part alone {np.mean(uvals):+.3f}; per seed {" ".join(f"{x:+.2f}" for x in vals)}) '
                  f'({time.time() - t0:.0f}s)', flush=True)
    print('\nmean Spearman rho (rows: source archs per source task; columns: target archs)')
    print('source\\target ' + ' '.join(f'{t:>7d}' for t in a.targets))
    for s in a.sources:
        print(f'{s:13d} ' + ' '.join(f'{table[(s, t)][0]:+7.3f}' for t in a.targets))
    if a.targets[0] == 0:
        for s in a.sources:
            base = table[(s, 0)][0]
            print(f'source {s}/task: target knowledge {a.targets[1:]} vs none: '
                  + ', '.join(f'{table[(s, t)][0] - base:+.3f}' for t in a.targets[1:])
                  + f'; never below the zero-target mean: {all(table[(s, t)][0] >= base for t in a.targets[1:])}')
    z = [table[(s, a.targets[0])][0] for s in a.sources]
    print(f'\nzero-target correlation by source knowledge {a.sources}: {[round(v, 3) for v in z]}; '
          f'above 0 with sources: {all(v > 0 for v in z[1:])}; grows with sources: '
          f'{all(b >= a_ - 0.05 for a_, b in zip(z[1:], z[2:]))}')
    if a.png:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for s in a.sources:
            m = [table[(s, t)][0] for t in a.targets]
            sd = [table[(s, t)][1] for t in a.targets]
            ax.errorbar(a.targets, m, yerr=sd, marker='o', capsize=3, label=f'{s} per source')
        ax.set_xlabel('target knowledge (architectures)')
        ax.set_ylabel('Spearman correlation')
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.png, dpi=120)
        print(f'plot: {a.png}')


if __name__ == '__main__':
    main()
