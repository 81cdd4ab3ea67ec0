"""``nni-xfer``: list plugins, check experiment configs, register tuners, export and report results."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, XferError

TUNER_CLASS = 'nni_xfer.tuner.XferTuner'
BUILTIN_PREFIX = 'xfer_'


def _quiet_warnings() -> None:
    import warnings
    warnings.filterwarnings('ignore', message='.*is found to be not a nn.Module.*')
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated.*')


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import ALL
    for title, reg in ALL.items():
        print(f'{title}:')
        for entry in reg.entries():
            print(f'  {entry.name:<16} {entry.description}')
    return 0


def fixed_strategy_of(tuner: dict) -> tuple[bool, str | None]:
    """(is this our tuner?, strategy fixed by a registered name)."""
    cls = tuner.get('className') or tuner.get('class_name')
    name = tuner.get('name')
    if isinstance(cls, str):
        if cls == TUNER_CLASS:
            return True, None
        if cls.startswith(TUNER_CLASS + '_'):
            return True, cls[len(TUNER_CLASS) + 1:]
    if isinstance(name, str) and name.lower().startswith(BUILTIN_PREFIX):
        return True, name[len(BUILTIN_PREFIX):]
    return False, None


def check_config(path: str | os.PathLike) -> list[str]:
    """Problems of an ``exp.yml``: NNI's schema, then our tuner's ``classArgs``; one line each."""
    import yaml
    problems: list[str] = []
    path = Path(path)
    if not path.is_file():
        return [f'{path}: no such file']
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return [f'{path}: not valid YAML: {str(exc).splitlines()[0]}']
    if not isinstance(raw, dict):
        return [f'{path}: expected a mapping at the top level']
    try:
        from nni.experiment.config import ExperimentConfig
        config = ExperimentConfig.load(str(path))
        config.validate()
    except Exception as exc:  # NNI raises ValueError/AssertionError/TypeError, some without a message
        msg = ' '.join(str(exc).split())
        if not msg:
            import traceback
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            msg = f'{type(exc).__name__} in {Path(frame.filename).name}: {frame.line}'
        problems.append(f'NNI schema: {msg}')
    tuner = raw.get('tuner')
    if not isinstance(tuner, dict):
        problems.append('tuner: missing (allowed: className: nni_xfer.tuner.XferTuner, or name: xfer_<strategy>)')
        return problems
    ours, fixed = fixed_strategy_of(tuner)
    if not ours:
        problems.append(f'tuner: not an nni-xfer tuner (allowed: className: {TUNER_CLASS}, '
                        f'or name: {BUILTIN_PREFIX}<strategy>)')
        return problems
    from .config import validate_class_args
    from .registry import STRATEGIES
    if fixed is not None and fixed not in STRATEGIES:
        problems.append(str(ConfigError('tuner.name', f'unknown strategy {fixed!r}',
                                        allowed=[BUILTIN_PREFIX + n for n in STRATEGIES.names()])))
        return problems
    errors, _ = validate_class_args(tuner.get('classArgs', {}) or {}, fixed)
    problems.extend(f'tuner.{e}' for e in errors)
    return problems


def cmd_check(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.config:
        problems = check_config(path)
        for p in problems:
            print(f'{path}: {p}')
        if problems:
            bad += 1
        else:
            print(f'{path}: OK')
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


def cmd_kb_export(args: argparse.Namespace) -> int:
    from .report import export_evaluations
    from .store import KnowledgeStore
    store = KnowledgeStore(args.store)
    if args.output and args.output != '-':
        with open(args.output, 'w', newline='') as f:
            n = export_evaluations(store, args.format, f, experiment_id=args.experiment)
        print(f'wrote {n} evaluations to {args.output}', file=sys.stderr)
    else:
        export_evaluations(store, args.format, sys.stdout, experiment_id=args.experiment)
    return 0


def cmd_kb_build(args: argparse.Namespace) -> int:
    import yaml

    from .modulenet.kb import build_kb
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
    from .modulenet.finetune import finetune_config, write_finetune_config
    extra = {}
    if args.lr is not None:
        extra['lr'] = args.lr
    cfg = finetune_config(args.search_config, args.experiment_id, store=args.store, top_k=args.top_k,
                          epochs=args.epochs, evaluator_args=extra)
    out = write_finetune_config(args.output, cfg, args.search_config)
    n = len(cfg['tuner']['classArgs']['strategy_args']['architectures'])
    print(f'wrote {out}: {n} networks to fine-tune for {args.epochs} epochs (run: nni-xfer run {out})')
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report
    from .store import KnowledgeStore
    store = KnowledgeStore(args.store)
    out = args.output or os.path.join('nni-xfer-report', args.experiment_id)
    result = make_report(store, args.experiment_id, out, k=args.top)
    print(result.table)
    for p in result.plots:
        print(f'plot: {p}')
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .nnictl import run_experiment
    return run_experiment(Path(args.config), port=args.port, keep=args.keep, store=args.store, id_file=args.id_file)


def build_parser() -> argparse.ArgumentParser:
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
    rn.add_argument('--store', default=None, help='knowledge store, if not set in classArgs')
    rn.add_argument('--id-file', default=None, help='write the experiment id to this file')
    rn.set_defaults(func=cmd_run)
    kb = sub.add_parser('kb', help='knowledge store')
    kbs = kb.add_subparsers(dest='kb_command', required=True)
    e = kbs.add_parser('export', help='every evaluation in the knowledge store')
    e.add_argument('--format', default='json', help='json or csv')
    e.add_argument('--store', default=None, help='knowledge store path (default: $NNI_XFER_HOME/store.db)')
    e.add_argument('--experiment', default=None, help='only this experiment id')
    e.add_argument('--output', '-o', default=None, help='file to write (default: stdout)')
    e.set_defaults(func=cmd_kb_export)
    b = kbs.add_parser('build', help='ModuleNet: train source networks and cut them into modules (YAML config)')
    b.add_argument('config')
    b.add_argument('--store', default=None, help='knowledge store path (default: the config\'s, else $NNI_XFER_HOME)')
    b.add_argument('--rebuild', action='store_true', help='retrain sources already in the knowledge base')
    b.set_defaults(func=cmd_kb_build)
    mn = sub.add_parser('modulenet', help='ModuleNet stages')
    mns = mn.add_subparsers(dest='modulenet_command', required=True)
    f = mns.add_parser('finetune', help='write the fine-tuning experiment (top-k searched + originals) of a search')
    f.add_argument('experiment_id')
    f.add_argument('--search-config', required=True, help='the exp.yml of the search')
    f.add_argument('--top-k', type=int, default=3)
    f.add_argument('--epochs', type=int, default=50, help='fine-tuning epochs (paper: 50)')
    f.add_argument('--lr', type=float, default=None)
    f.add_argument('--store', default=None)
    f.add_argument('--output', '-o', required=True, help='the exp.yml to write')
    f.set_defaults(func=cmd_modulenet_finetune)
    r = sub.add_parser('report', help='best architectures and plots of an experiment')
    r.add_argument('experiment_id')
    r.add_argument('--store', default=None)
    r.add_argument('--top', type=int, default=10)
    r.add_argument('--output', '-o', default=None, help='folder for report.txt and PNGs')
    r.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    _quiet_warnings()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except XferError as exc:
        print(f'nni-xfer: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
