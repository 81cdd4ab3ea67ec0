"""EAS's command-line stage: ``nni-xfer eas finalize`` (the paper's final full-schedule training)."""
from __future__ import annotations

import argparse

from nni_xfer.registry import COMMANDS
from nni_xfer.stages import write_stage_config


def cmd_eas_finalize(args: argparse.Namespace) -> int:
    from .finalize import finalize_config
    cfg = finalize_config(args.search_config, args.experiment_id, store=args.store, top_k=args.top_k,
                          epochs=args.epochs, from_scratch=args.from_scratch, full_train=not args.keep_val)
    out = write_stage_config(args.output, cfg, args.search_config)
    n = cfg['maxTrialNumber']
    start = 'fresh weights' if args.from_scratch else 'their search checkpoints'
    print(f'wrote {out}: {n} networks to train for {args.epochs} epochs from {start} (run: nni-xfer run {out})')
    return 0


@COMMANDS.register('eas', description='EAS: eas finalize')
def add_commands(sub, group) -> None:
    f = group('eas', 'EAS stages').add_parser(
        'finalize', help="write the experiment that trains the last stage's top networks for the full schedule")
    f.add_argument('experiment_id')
    f.add_argument('--search-config', required=True, help='the exp.yml of the search')
    f.add_argument('--top-k', type=int, default=5, help='networks of the last stage to train (paper: "the top")')
    f.add_argument('--epochs', type=int, default=300, help='epochs (paper: 300)')
    f.add_argument('--from-scratch', action='store_true',
                   help="fresh weights instead of each network's search checkpoint")
    f.add_argument('--keep-val', action='store_true',
                   help="keep the search's validation split (default: train on the whole training set)")
    f.add_argument('--store', default=None)
    f.add_argument('--output', '-o', required=True, help='the exp.yml to write')
    f.set_defaults(func=cmd_eas_finalize)
