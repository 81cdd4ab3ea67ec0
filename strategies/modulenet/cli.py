"""ModuleNet's command-line stages: ``nni-xfer kb build CONFIG`` and ``nni-xfer modulenet finetune``."""
from __future__ import annotations

import argparse
from pathlib import Path

from nni_xfer.errors import ConfigError
from nni_xfer.registry import COMMANDS
from nni_xfer.stages import write_stage_config


def cmd_kb_build(args: argparse.Namespace) -> int:
    import yaml

    from .kb import build_kb
    path = Path(args.config)
    if not path.is_file():
        raise ConfigError('CONFIG', f'no such file: {path}')
    raw = yaml.safe_load(path.read_text())
    if isinstance(raw, dict) and 'kb' in raw and len(raw) == 1:
        raw = raw['kb']
    kb = build_kb(raw, store=args.store, rebuild=args.rebuild, progress=lambda m: print(m, flush=True))
    width = max(len(s['name']) for s in kb.sources)
    print(f"{'source'.ljust(width)}  arch        width  val_acc  test_acc  params")
    for s in kb.sources:
        print(f"{s['name'].ljust(width)}  {s['arch']:<10}  {s['width']:5.3g}  {s['val_acc']:7.4f}  "
              f"{s['test_acc']:8.4f}  {s['params'] / 1e6:.2f}M")
    print(f'knowledge base: {kb.root}')
    return 0


def cmd_modulenet_finetune(args: argparse.Namespace) -> int:
    from .finetune import finetune_config
    extra = {}
    if args.lr is not None:
        extra['lr'] = args.lr
    cfg = finetune_config(args.search_config, args.experiment_id, store=args.store, top_k=args.top_k,
                          epochs=args.epochs, evaluator_args=extra, searched_head=not args.fresh_head)
    out = write_stage_config(args.output, cfg, args.search_config)
    sargs = cfg['tuner']['classArgs']['strategy_args']
    n, heads = len(sargs['architectures']), len(sargs['init'].get('heads', []))
    what = 'the final population' if args.top_k is None else f'the top {args.top_k}'
    print(f'wrote {out}: {n} networks ({what} + originals; {heads} start from their searched head) to fine-tune '
          f'for {args.epochs} epochs (run: nni-xfer run {out})')
    return 0


@COMMANDS.register('modulenet', description='ModuleNet: kb build, modulenet finetune')
def add_commands(sub, group) -> None:
    b = group('kb', 'knowledge bases of methods').add_parser('build', help='ModuleNet: train source networks and cut them into modules (YAML config)')
    b.add_argument('config')
    b.add_argument('--store', default=None, help='knowledge store path (default: the config\'s, else $NNI_XFER_HOME)')
    b.add_argument('--rebuild', action='store_true', help='retrain sources already in the knowledge base')
    b.set_defaults(func=cmd_kb_build)
    f = group('modulenet', 'ModuleNet stages').add_parser(
        'finetune', help='write the fine-tuning experiment (final population + originals) of a search')
    f.add_argument('experiment_id')
    f.add_argument('--search-config', required=True, help='the exp.yml of the search')
    f.add_argument('--top-k', type=int, default=None,
                   help='fine-tune only the k best of the final population (default: all of it, the paper)')
    f.add_argument('--fresh-head', action='store_true',
                   help="re-initialise the head instead of starting from the search trial's trained head")
    f.add_argument('--epochs', type=int, default=50, help='fine-tuning epochs (paper: 50)')
    f.add_argument('--lr', type=float, default=None)
    f.add_argument('--store', default=None)
    f.add_argument('--output', '-o', required=True, help='the exp.yml to write')
    f.set_defaults(func=cmd_modulenet_finetune)
