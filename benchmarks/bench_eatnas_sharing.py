"""Benchmark (not a test): what EAT-NAS parameter sharing carries over, by mutation kind.

    python benchmarks/bench_eatnas_sharing.py [--epochs 4] [--widen random zero]
                                                                 (about 2 minutes on 2 idle CPUs)

Trains one parent (the quick examples' basic architecture) on digits, then builds one child per
single mutation (depth, op, width, kernel, skip) initialised by ``eatnas_share`` from the parent's
checkpoint, and prints each child's ``shared_fraction``, ``inherited_acc`` (before training) and the
validation accuracy after one epoch — once per ``--widen`` value: ``random`` is the paper's (the
unshared part randomly initialised, EAT-NAS §3.4), ``zero`` starts the consumers' new input
slices at zero (and a replaced identity shortcut as the identity), so width increases keep the
parent's function. Width/kernel/skip changes start near chance with ``random``.
"""
from __future__ import annotations

import argparse
import copy
import tempfile

from nni_xfer.search_spaces.mbv2_blocks import EXAMPLE
from nni_xfer.runtime.trial import Reporter, run_trial

PARENT = EXAMPLE  # the quick examples' basic architecture
# (label, block index, key, new value, depth_extra)
MUTATIONS = [
    ('none', None, None, None, 'random'),
    ('depth b3 3->4', 2, 'depth', 4, 'random'),
    ('depth b3 3->4', 2, 'depth', 4, 'copy_last'),
    ('depth b4 4->3', 3, 'depth', 3, 'random'),
    ('op b6 mbconv6->mbconv3', 5, 'op', 'mbconv3', 'random'),
    ('width b6 1.0->1.5', 5, 'width', 1.5, 'random'),
    ('width b3 1.5->2.0', 2, 'width', 2.0, 'random'),
    ('width b6 1.0->0.5', 5, 'width', 0.5, 'random'),
    ('kernel b5 5->3', 4, 'kernel', 3, 'random'),
    ('skip b2 1->0', 1, 'skip', 0, 'random'),
]


class _Quiet(Reporter):
    def intermediate(self, metrics):
        pass

    def final(self, metrics):
        pass


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--epochs', type=int, default=4, help='parent training epochs')
    p.add_argument('--widen', nargs='+', choices=['random', 'zero'], default=['random', 'zero'],
                   help="eatnas_share's widen option(s) to compare (random: the paper's)")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix='bench-eatnas-sharing-')
    base = {'space': 'mbv2_blocks', 'dataset': 'digits', 'dataset_args': {'val_size': 0.2},
            # constraints widened so that every single mutation is buildable
            'space_args': {'stem_channels': 8, 'head_channels': 64, 'expansion_range': [1, 20], 'layer_range': [1, 40]},
            'evaluator': 'train', 'experiment_id': 'sharing', 'checkpoint_root': root, 'seed': 0,
            'evaluator_args': {'epochs': args.epochs, 'batch_size': 32, 'lr': 0.05, 'lr_schedule': 'constant',
                               'weight_decay': 0.0003}}
    parent = run_trial({**base, 'architecture': PARENT, 'proposal_id': 0}, reporter=_Quiet())
    print(f"parent: {args.epochs} epochs on digits, val_acc {parent['default']:.3f}")
    print(f"{'mutation':26s} {'depth_extra':11s} {'widen':6s} {'shared':>6s} {'inherited':>9s} {'1 epoch':>8s}")
    i = 0
    for label, block, key, value, extra in MUTATIONS:
        arch = copy.deepcopy(PARENT)
        if block is not None:
            arch['blocks'][block][key] = value
        for widen in args.widen:
            i += 1
            init = {'kind': 'eatnas_share', 'uri': f'{root}/sharing/0.pt', 'parent_architecture': PARENT,
                    'depth_extra': extra}
            if widen != 'random':
                init['widen'] = widen
            spec = {**base, 'architecture': arch, 'proposal_id': i,
                    'evaluator_args': {**base['evaluator_args'], 'epochs': 1}, 'init': init}
            m = run_trial(spec, reporter=_Quiet())
            print(f"{label:26s} {extra:11s} {widen:6s} {m.get('shared_fraction', 0):6.2f} {m['inherited_acc']:9.3f} "
                  f"{m['default']:8.3f}", flush=True)


if __name__ == '__main__':
    main()
