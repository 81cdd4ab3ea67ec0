"""``nni-xfer xfernas import FILE`` and ``nni-xfer xfernas sources CONFIG`` (registered in COMMANDS)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nni_xfer.registry import COMMANDS


def cmd_import(args: argparse.Namespace) -> int:
    from nni_xfer.store import KnowledgeStore

    from .sources import import_results, read_results, space_parser
    import json
    space_args = json.loads(args.space_args) if args.space_args else {}
    rows = read_results(args.file)
    parse = space_parser(args.space, space_args)
    store = KnowledgeStore(args.store)
    name = args.name or Path(args.file).stem
    done = import_results(store, rows, args.space, name=name, parse=parse)
    for exp, n in done.items():
        print(f'{exp}: {n} evaluations')
    print(f'imported {sum(done.values())} evaluations of space {args.space} into {store.path}')
    return 0


def cmd_sources(args: argparse.Namespace) -> int:
    from nni_xfer.config import check_config

    from .build_sources import SourcesConfig, evaluated_count, write_source_configs
    cfg = SourcesConfig.load(args.config)
    if args.store:
        cfg.store = args.store
    out = Path(args.output or Path('nni-xfer-sources') / Path(args.config).stem)
    paths = write_source_configs(cfg, out)
    bad = 0
    for p in paths:
        for problem in check_config(p):
            print(f'{p}: {problem}')
            bad += 1
    if bad:
        return 1
    if args.write_only:
        for p in paths:
            print(f'wrote {p}')
        return 0
    from nni_xfer.adapters.experiments import run_experiment
    rc = 0
    for task, p in zip(cfg.tasks, paths):
        have = evaluated_count(cfg, task)
        if have >= cfg.per_source and not args.rerun:
            print(f'{p.name}: {have} evaluations already in the store, skipped (--rerun to run again)', flush=True)
            continue
        print(f'== source task {p.name} ({cfg.per_source} random architectures)', flush=True)
        rc = max(rc, run_experiment(p, port=args.port))
    return rc


@COMMANDS.register('xfernas', description='XferNAS source knowledge: build it (sources) or bring it (import)')
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser('xfernas', help='XferNAS source knowledge: build it (sources) or bring it (import)')
    sub = p.add_subparsers(dest='xfernas_command', required=True)
    i = sub.add_parser('import', help='record (architecture, dataset, accuracy) rows from a CSV/JSON file')
    i.add_argument('file', help='.json (list of objects) or .csv; nni-xfer store export files work too')
    i.add_argument('--space', required=True, help='the search space the architectures belong to')
    i.add_argument('--space-args', default=None, help='JSON space_args used to check the architectures')
    i.add_argument('--name', default=None, help='source name (experiment ids import:<name>:<task>); default: file stem')
    i.add_argument('--store', default=None, help='knowledge store path (default: $NNI_XFER_HOME/store.db)')
    i.set_defaults(func=cmd_import)
    s = sub.add_parser('sources', help='evaluate random architectures of a space on several source datasets')
    s.add_argument('config', help='sources config (YAML: space, space_args, per_source, tasks, evaluator_args, ...)')
    s.add_argument('--output', '-o', default=None, help='folder for the generated exp.yml files')
    s.add_argument('--write-only', action='store_true', help='write and check the exp.yml files, run nothing')
    s.add_argument('--port', type=int, default=8080)
    s.add_argument('--store', default=None, help='knowledge store (overrides the config)')
    s.add_argument('--rerun', action='store_true', help='run a source task even if the store has enough of it')
    s.set_defaults(func=cmd_sources)


if __name__ == '__main__':  # pragma: no cover - until cli.py reads COMMANDS
    parser = argparse.ArgumentParser(prog='nni-xfer')
    add_parser(parser.add_subparsers(dest='command', required=True))
    a = parser.parse_args()
    sys.exit(a.func(a))
