"""EAT-NAS's command-line stage: ``nni-xfer eatnas retrain`` (the paper's top-k retraining)."""
from __future__ import annotations

import argparse

from nni_xfer.registry import COMMANDS
from nni_xfer.stages import write_stage_config


def cmd_eatnas_retrain(args: argparse.Namespace) -> int:
    from .retrain import retrain_config
    extra = {}
    for key in ('lr', 'batch_size', 'cutout'):
        if getattr(args, key) is not None:
            extra[key] = getattr(args, key)
    cfg = retrain_config(args.search_config, args.experiment_id, store=args.store, top_k=args.top_k,
                         epochs=args.epochs, population=args.population, rank=args.rank,
                         from_search=args.from_search, full_train=not args.keep_val, evaluator_args=extra)
    out = write_stage_config(args.output, cfg, args.search_config)
    n = cfg['maxTrialNumber']
    start = 'their search checkpoints' if args.from_search else 'fresh weights'
    print(f'wrote {out}: the top {n} of the {args.population} population of {args.experiment_id} to train for '
          f'{args.epochs} epochs from {start} (run: nni-xfer run {out}; then nni-xfer report <its id>, and seed '
          f'a transfer with seed_from: {{experiment: <its id>}})')
    return 0


@COMMANDS.register('eatnas', description='EAT-NAS: eatnas retrain')
def add_commands(sub, group) -> None:
    r = group('eatnas', 'EAT-NAS stages').add_parser(
        'retrain', help='write the experiment that retrains the top-k of a search (the best is the basic model)')
    r.add_argument('experiment_id')
    r.add_argument('--search-config', required=True, help='the exp.yml of the search')
    r.add_argument('--top-k', type=int, default=8, help='networks to retrain (paper: 8)')
    r.add_argument('--epochs', type=int, default=630, help='epochs (paper: 630 on CIFAR-10, 200 on ImageNet)')
    r.add_argument('--population', choices=('best', 'final'), default='best',
                   help="'best': the best-quality population (paper); 'final': the last one")
    r.add_argument('--rank', choices=('score', 'acc'), default='score',
                   help='rank the population by the Eq. 1 score (default) or by accuracy')
    r.add_argument('--from-search', action='store_true',
                   help="continue each network from its search checkpoint instead of fresh weights")
    r.add_argument('--keep-val', action='store_true',
                   help="keep the search's validation split (default: train on the whole training set)")
    r.add_argument('--lr', type=float, default=None, help="learning rate (default: the search's; paper CIFAR-10 0.0125)")
    r.add_argument('--batch-size', type=int, default=None, help="default: the search's (paper CIFAR-10 96)")
    r.add_argument('--cutout', type=int, default=None, help='cutout length (paper CIFAR-10 16)')
    r.add_argument('--store', default=None)
    r.add_argument('--output', '-o', required=True, help='the exp.yml to write')
    r.set_defaults(func=cmd_eatnas_retrain)
