"""``nni-xfer``: list plugins, check experiment configs, register tuners, export and report results."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import XferError

from .config import BUILTIN_PREFIX, TUNER_CLASS, check_config, fixed_strategy_of  # noqa: F401  (public here too)


def _quiet_warnings() -> None:
    from .runtime.known_warnings import filter_known_warnings  # exactly the known third-party messages
    filter_known_warnings()


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import ALL
    for title, reg in ALL.items():
        print(f'{title}:')
        for entry in reg.entries():
            print(f'  {entry.name:<16} {entry.description}')
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.config:
        notes: list[str] = []
        problems = check_config(path, notes)
        for p in problems:
            print(f'{path}: {p}')
        if problems:
            bad += 1
        else:
            print(f'{path}: OK' + ''.join(f' ({n})' for n in notes))
        from .runtime.container import config_warnings
        for w in config_warnings(path):
            print(f'{path}: warning: {w}')
    return 1 if bad else 0


def algorithm_metas() -> list[dict]:
    from .registry import STRATEGIES
    return [{
        'builtinName': f'{BUILTIN_PREFIX}{e.name}',
        'className': f'{TUNER_CLASS}_{e.name}',
        'classArgsValidator': f'nni_xfer.tuner.XferValidator_{e.name}',
        'algoType': 'tuner',
    } for e in STRATEGIES.entries()]


def cmd_register(args: argparse.Namespace) -> int:
    import yaml
    from nni.tools.nnictl.algo_management import algo_reg
    metas = algorithm_metas()
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / 'algorithms.yml'
        meta_path.write_text(yaml.safe_dump({'algorithms': metas}))
        algo_reg(argparse.Namespace(meta_path=str(meta_path)))
    for m in metas:
        print(f"registered tuner {m['builtinName']} -> {m['className']}")
    return 0


STORE_HELP = ('knowledge store: a path, sqlite:///path.db or postgresql://user@host:5432/db (default: '
              '$NNI_XFER_STORE, else $NNI_XFER_HOME/store.db)')


def cmd_store_export(args: argparse.Namespace) -> int:
    from .report import export_evaluations
    from .store import KnowledgeStore
    store = KnowledgeStore(args.store, readonly=True)
    if args.output and args.output != '-':
        with open(args.output, 'w', newline='') as f:
            n = export_evaluations(store, args.format, f, experiment_id=args.experiment)
        print(f'wrote {n} evaluations to {args.output}', file=sys.stderr)
    else:
        export_evaluations(store, args.format, sys.stdout, experiment_id=args.experiment)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report
    from .store import KnowledgeStore
    store = KnowledgeStore(args.store, readonly=True)
    out = args.output or os.path.join('nni-xfer-report', args.experiment_id)
    result = make_report(store, args.experiment_id, out, k=args.top)
    print(result.table, end='')  # names each plot once and the folder they are in
    return 0


def cmd_store_check(args: argparse.Namespace) -> int:
    from .store import SCHEMA_VERSION, KnowledgeStore
    store = KnowledgeStore(args.store, readonly=True)
    try:
        problems = store.check()
        if problems:
            for p in problems:
                print(f'{store.path}: {p}')
            return 1
        found = store.schema_version_found
        counts = store.counts()
        print(f'{store.path}: OK ({store.backend}, schema version '
              f'{"none (no tables yet)" if found is None else found} of {SCHEMA_VERSION}'
              f'{"; `nni-xfer store migrate` brings it up to date on the next write" if found is not None and found < SCHEMA_VERSION else ""})')
        for table, n in counts.items():
            print(f'  {table:<18} {n}')
    finally:
        store.close()
    return 0


def cmd_store_backup(args: argparse.Namespace) -> int:
    from .store import KnowledgeStore
    store = KnowledgeStore(args.store, readonly=True)
    try:
        size = store.backup(args.destination)
    finally:
        store.close()
    print(f'backed up {store.path} to {args.destination} ({size} bytes; checked)')
    return 0


def cmd_store_migrate(args: argparse.Namespace) -> int:
    from .store import SCHEMA_VERSION, KnowledgeStore
    store = KnowledgeStore(args.store)   # a writer's open checks, then migrates (one transaction)
    was = store.schema_version_found
    store.close()
    print(f'{store.path}: schema version {SCHEMA_VERSION}'
          + (' (new store)' if was is None else ' (already)' if was == SCHEMA_VERSION else f' (was {was})'))
    return 0


def cmd_store_copy(args: argparse.Namespace) -> int:
    from .store import KnowledgeStore
    src = KnowledgeStore(args.source, readonly=True)
    dst = KnowledgeStore(args.destination)
    try:
        done = src.copy_into(dst)
    finally:
        src.close()
        dst.close()
    written = sum(w for w, _ in done.values())
    kept = sum(k for _, k in done.values())
    print(f'copied {src.path} into {dst.path}: {written} rows written, {kept} already there')
    for table, (w, k) in done.items():
        print(f'  {table:<18} {w} written, {k} already there')
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .adapters.experiments import run_experiment
    return run_experiment(Path(args.config), port=args.port, keep=args.keep, store=args.store, id_file=args.id_file)


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """The command line; ``plugins=False`` leaves out the method packages' commands (they import torch)."""
    p = argparse.ArgumentParser(prog='nni-xfer', description='Knowledge-transfer NAS on NNI 3.0')
    sub = p.add_subparsers(dest='command', required=True)
    sub.add_parser('list', help='registered strategies, spaces, datasets, evaluators, initializers') \
        .set_defaults(func=cmd_list)
    c = sub.add_parser('check', help="validate exp.yml files (NNI's schema and the tuner's classArgs)")
    c.add_argument('config', nargs='+')
    c.set_defaults(func=cmd_check)
    sub.add_parser('register', help='register every strategy as an NNI tuner named xfer_<strategy>') \
        .set_defaults(func=cmd_register)
    rn = sub.add_parser('run', help='nnictl create + progress + report + stop, in one command')
    rn.add_argument('config')
    rn.add_argument('--port', type=int, default=8080)
    rn.add_argument('--keep', action='store_true', help='leave the experiment (and web portal) running')
    rn.add_argument('--store', default=None, help='knowledge store, if not set in classArgs (a path or URL; '
                                                  'default: $NNI_XFER_STORE, else $NNI_XFER_HOME/store.db)')
    rn.add_argument('--id-file', default=None, help='write the experiment id to this file')
    rn.set_defaults(func=cmd_run)
    from .runtime.container import add_parser as add_container_parser
    add_container_parser(sub)   # trial-in-container
    groups: dict[str, Any] = {}

    def group(name: str, help: str):
        """The subcommand table of top-level command ``name`` (created on first use)."""
        if name not in groups:
            g = sub.add_parser(name, help=help)
            groups[name] = g.add_subparsers(dest=f'{name}_command', required=True)
        return groups[name]

    st = group('store', 'knowledge store')
    e = st.add_parser('export', help='every evaluation in the knowledge store')
    e.add_argument('--format', default='json', help='json or csv')
    e.add_argument('--store', default=None, help=STORE_HELP)
    e.add_argument('--experiment', default=None, help='only this experiment id')
    e.add_argument('--output', '-o', default=None, help='file to write (default: stdout)')
    e.set_defaults(func=cmd_store_export)
    c = st.add_parser('check', help='integrity check (SQLite), schema version and rows per table; reads only')
    c.add_argument('--store', default=None, help=STORE_HELP)
    c.set_defaults(func=cmd_store_check)
    b = st.add_parser('backup', help="copy an SQLite store into a new file (SQLite's online backup: safe while "
                                     'an experiment writes)')
    b.add_argument('destination', help='the new backup file')
    b.add_argument('--store', default=None, help=STORE_HELP)
    b.set_defaults(func=cmd_store_backup)
    m = st.add_parser('migrate', help="bring a store's schema up to date (creates the tables of a new store)")
    m.add_argument('--store', default=None, help=STORE_HELP)
    m.set_defaults(func=cmd_store_migrate)
    cp = st.add_parser('copy', help='every row of SRC into DST (e.g. a personal SQLite file into the team '
                                    'PostgreSQL); nothing duplicated, re-running adds nothing')
    cp.add_argument('source', help='the store to read (path or URL)')
    cp.add_argument('destination', help='the store to write (path or URL; created if new)')
    cp.set_defaults(func=cmd_store_copy)
    # method packages add theirs (e.g. ModuleNet: `kb build`, `modulenet finetune`)
    from .registry import COMMANDS
    import inspect
    for entry in (COMMANDS.entries() if plugins else ()):
        if len(inspect.signature(entry.obj).parameters) >= 2:
            entry.obj(sub, group)      # may add to a shared group such as `kb`
        else:
            entry.obj(sub)             # adds its own top-level command
    r = sub.add_parser('report', help='best architectures and plots of an experiment')
    r.add_argument('experiment_id')
    r.add_argument('--store', default=None, help=STORE_HELP)
    r.add_argument('--top', type=int, default=10)
    r.add_argument('--output', '-o', default=None, help='folder for report.txt and PNGs')
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['trial-in-container']:   # a trialCommand: skip loading every plugin (and torch)
        from .runtime.container import main as container_main
        return container_main(argv[1:])
    _quiet_warnings()
    # `check` answers a YAML or key error without torch: its parser needs no method package's commands
    args = build_parser(plugins=argv[:1] != ['check']).parse_args(argv)
    try:
        return args.func(args)
    except XferError as exc:
        print(f'nni-xfer: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
