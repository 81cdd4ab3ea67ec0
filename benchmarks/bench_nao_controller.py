"""NAO controller alone: reconstruction and held-out ranking on random nasnet_cells sequences.

Synthetic ground truth: a fixed random table over (position, token), squashed by tanh. Prints the
training time, exact reconstruction of held-out and training sequences, the predictor's Kendall τ
on held-out sequences, and what one gradient step proposes (true score of each new cell).

    python benchmarks/bench_nao_controller.py --epochs 400 --batch-size 25
"""
import argparse
import time

import numpy as np
import torch
from scipy.stats import kendalltau

from nni_xfer.search_spaces.nasnet_cells import CellGrammar
from nni_xfer.strategies.nao.model import NAOController, minmax


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--epochs', type=int, default=400)
    ap.add_argument('--batch-size', type=int, default=25)
    ap.add_argument('--mlp-layers', type=int, default=0)
    ap.add_argument('--train', type=int, default=200)
    ap.add_argument('--test', type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = CellGrammar(5, 'xfernas')
    rng = np.random.default_rng(0)
    seqs = [g.to_tokens(g.random_sample(rng)) for _ in range(args.train + args.test)]
    table = rng.normal(size=(g.seq_len, g.vocab_size))

    def f(s):
        return float(np.tanh(sum(table[i, t] for i, t in enumerate(s)) / 8))

    y = np.array([f(s) for s in seqs])
    tr, te = slice(0, args.train), slice(args.train, None)
    c = NAOController(g, seed=0, batch_size=args.batch_size, mlp_layers=args.mlp_layers)
    t = time.time()
    hist = c.fit(seqs[tr], minmax(y[tr]), epochs=args.epochs, seed=1)
    print(f'fit {args.epochs} epochs on {args.train}: {time.time() - t:.1f} s, last {hist[-1]}')
    rec = c.reconstruct(seqs[te])
    print(f'exact reconstruction held-out {np.mean([a == b for a, b in zip(rec, seqs[te])]):.3f}', end=' ')
    rec = c.reconstruct(seqs[:args.test])
    print(f'train {np.mean([a == b for a, b in zip(rec, seqs[:args.test])]):.3f}')
    print(f'kendall tau held-out {kendalltau(c.predict(seqs[te]), y[te])[0]:.3f}')
    seen = set(map(tuple, seqs))

    def is_new(s):
        if tuple(s) in seen:
            return False
        seen.add(tuple(s))
        return True

    top = np.argsort(-y[tr])[:20]
    new = c.generate([seqs[i] for i in top], 10, is_new)
    print(f'top-20 seeds mean true score {y[top].mean():.3f}; {len(new)} new cells, mean true score '
          f'{np.mean([f(d["seq"]) for d in new]):.3f}, lambdas {[d["lam"] for d in new]}')


if __name__ == '__main__':
    main()
