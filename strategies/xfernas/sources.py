"""Source knowledge of XferNAS: earlier evaluations of the same space on other tasks.

A *task* is (space, dataset): the dataset's name plus the dataset arguments that change the data
itself (``synthetic``'s ``num_classes``/``seed``/...); the split arguments (``val_size``, ``root``,
``limit_train``, ``download``) do not make another task. Every evaluation the knowledge store holds
for the target's space is source knowledge of its task; the target task's own earlier evaluations
(from an experiment named in ``sources``) join the target knowledge.

Three ways in: any earlier search of the space (every strategy records into the store), the
``nni-xfer xfernas sources CONFIG`` command (random architectures on several source datasets), and
``nni-xfer xfernas import FILE`` (results from elsewhere: CSV/JSON rows of architecture, dataset,
accuracy — also what ``nni-xfer store export`` writes).
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from nni_xfer.errors import ConfigError
from nni_xfer.store import KnowledgeStore, arch_key

_logger = logging.getLogger('nni_xfer.xfernas')

#: dataset arguments that choose a split or a location, not the data (never part of a task)
SPLIT_ARGS = ('root', 'val_size', 'limit_train', 'download')
#: ``sources`` value: every evaluation of the space on another task
OTHER_TASKS = 'other_datasets'


def task_key(dataset: str, dataset_args: dict | None = None) -> str:
    """Canonical name of a task's data, e.g. ``digits`` or ``synthetic(num_classes=6,seed=1)``.

    Arguments equal to the dataset's defaults are dropped, so ``synthetic`` and
    ``synthetic(seed=0)`` are one task; ``seed`` counts only for datasets that declare it (it is
    the split seed elsewhere).
    """
    from nni_xfer.registry import DATASETS
    args = {k: v for k, v in (dataset_args or {}).items() if k not in SPLIT_ARGS}
    declared = None
    if dataset in DATASETS:
        obj = DATASETS.get(dataset)
        declared = getattr(obj, 'args', None)
        if not isinstance(declared, dict):
            declared = None
    if declared is not None:
        from nni_xfer.data.pipeline import GENERIC_ARGS

        # the generic ``classes``/``image_size`` of an in-memory dataset change its data too
        generic = () if getattr(obj, 'streamed', False) else GENERIC_ARGS
        args = {k: v for k, v in args.items() if (k in declared and declared[k] != v)
                or (k in generic and k not in declared)}
    else:
        args.pop('seed', None)
    if not args:
        return dataset
    return f"{dataset}({','.join(f'{k}={_arg_text(args[k])}' for k in sorted(args))})"


def _arg_text(value: Any) -> str:
    """``[0, 1, 2]`` -> ``[0,1,2]`` (lists and tuples alike); other values as ``str``."""
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(_arg_text(v) for v in value) + ']'
    return str(value)


@dataclass
class TaskData:
    """The observations of one task: architectures and their scores (larger is better)."""

    key: str
    architectures: list[dict] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.architectures)

    def to_dict(self) -> dict:
        return {'key': self.key, 'architectures': self.architectures, 'scores': self.scores,
                'experiments': self.experiments}

    @classmethod
    def from_dict(cls, d: dict) -> 'TaskData':
        return cls(d['key'], list(d['architectures']), [float(s) for s in d['scores']], list(d['experiments']))


def _oriented(e: Any) -> float | None:
    v = e.metric('default')
    if v is None:
        return None
    mode = (e.spec or {}).get('mode', 'maximize')
    return float(v) if mode != 'minimize' else -float(v)


def _task_of(e: Any) -> str:
    return task_key(e.dataset or '', (e.spec or {}).get('dataset_args') or {})


def load_source_knowledge(store: KnowledgeStore, space: str, target: str, *,
                          sources: str | list[str] = OTHER_TASKS, per_source_limit: int | None = None,
                          seed: int = 0, valid: Callable[[dict], bool] | None = None,
                          field_name: str = 'strategy_args.sources') -> tuple[list[TaskData], TaskData, dict]:
    """(source tasks, earlier target-task knowledge, counts) for a search of ``space`` on task ``target``.

    ``sources``: ``'other_datasets'`` (every succeeded evaluation of ``space`` on another task) or a
    list of experiment ids (each must exist in the store and have searched ``space``; one on the
    target task adds to the target knowledge). ``per_source_limit`` keeps a seeded random subset of
    that many architectures per source task (the paper's 200 per source; Fig. 3 varies it).
    ``valid`` filters architectures the target space cannot encode (another cell size or op set).
    An architecture evaluated several times on one task counts once with its mean score.
    """
    if isinstance(sources, str):
        if sources != OTHER_TASKS:
            raise ConfigError(field_name, f'expected {OTHER_TASKS!r} or a list of experiment ids, got {sources!r}')
        evs = store.evaluations(space=space, status='SUCCEEDED')
    else:
        known = {x['experiment_id']: x for x in store.experiments()}
        evs = []
        for exp in sources:
            if exp not in known:
                raise ConfigError(field_name, f'unknown experiment {exp!r} in the knowledge store {store.path}')
            if known[exp].get('space') != space:
                raise ConfigError(field_name, f"experiment {exp!r} searched space {known[exp].get('space')!r}, "
                                              f'not {space!r}')
            evs.extend(store.evaluations(experiment_id=exp, status='SUCCEEDED'))
    grouped: dict[str, dict[str, list]] = {}
    exps: dict[str, list[str]] = {}
    counts = {'evaluations': 0, 'invalid': 0, 'tasks': 0}
    for e in evs:
        if e.space != space:
            continue
        score = _oriented(e)
        if score is None:
            continue
        if valid is not None and not valid(e.architecture):
            counts['invalid'] += 1
            continue
        key = _task_of(e)
        if key == target and isinstance(sources, str):
            continue  # 'other_datasets': the target task's own evaluations are not source knowledge
        slot = grouped.setdefault(key, {}).setdefault(arch_key(e.architecture), [e.architecture, []])
        slot[1].append(score)
        if e.experiment_id not in exps.setdefault(key, []):
            exps[key].append(e.experiment_id)
        counts['evaluations'] += 1
    rng = np.random.Generator(np.random.PCG64(seed))
    tasks, prior = [], TaskData(target)
    for key in sorted(grouped):
        items = [(a, float(np.mean(s))) for a, s in grouped[key].values()]
        if key != target and per_source_limit is not None and len(items) > per_source_limit:
            pick = sorted(rng.choice(len(items), size=per_source_limit, replace=False).tolist())
            items = [items[i] for i in pick]
        data = TaskData(key, [a for a, _ in items], [s for _, s in items], exps[key])
        if key == target:
            prior = data
        else:
            tasks.append(data)
    counts['tasks'] = len(tasks)
    return tasks, prior, counts


# --------------------------------------------------------------------------- import


@dataclass
class ImportedRow:
    architecture: Any
    dataset: str
    accuracy: float
    dataset_args: dict = field(default_factory=dict)


def _json_cell(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ConfigError(what, f'not valid JSON: {value[:60]!r}') from exc
    return value


def _accuracy_of(d: dict, where: str) -> float:
    for key in ('accuracy', 'val_acc', 'metric.val_acc', 'metric.default'):
        if d.get(key) not in (None, ''):
            return float(d[key])
    metrics = d.get('metrics')
    if isinstance(metrics, dict):
        for key in ('val_acc', 'default'):
            if metrics.get(key) is not None:
                return float(metrics[key])
    raise ConfigError(where, 'no accuracy (columns: accuracy, val_acc, metric.val_acc or metrics.val_acc)')


def read_results(path: str | Path) -> list[ImportedRow]:
    """Rows of a ``.json`` (a list of objects) or ``.csv`` file of (architecture, dataset, accuracy).

    ``architecture`` is an object (in CSV: its JSON text) in any form the space parses;
    ``dataset_args`` is optional; ``accuracy`` may also come as ``val_acc`` or, in
    ``nni-xfer store export`` files, ``metrics.val_acc`` / ``metric.val_acc``. Failed rows of an
    export (status other than SUCCEEDED) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError('FILE', f'no such file: {path}')
    if path.suffix.lower() == '.json':
        try:
            raw = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError('FILE', f'{path}: not valid JSON: {exc}') from exc
        if isinstance(raw, dict) and isinstance(raw.get('evaluations'), list):
            raw = raw['evaluations']
        if not isinstance(raw, list):
            raise ConfigError('FILE', f'{path}: expected a list of objects')
    elif path.suffix.lower() == '.csv':
        with path.open(newline='') as f:
            raw = list(csv.DictReader(f))
    else:
        raise ConfigError('FILE', f'{path}: unknown format {path.suffix!r}', allowed=['.json', '.csv'])
    rows = []
    for i, d in enumerate(raw, start=1):
        where = f'{path.name} row {i}'
        if not isinstance(d, dict):
            raise ConfigError(where, 'expected an object')
        if d.get('status') not in (None, '', 'SUCCEEDED'):
            continue
        for key in ('architecture', 'dataset'):
            if d.get(key) in (None, ''):
                raise ConfigError(f'{where}.{key}', 'missing')
        args = _json_cell(d.get('dataset_args') or {}, f'{where}.dataset_args')
        if not isinstance(args, dict):
            raise ConfigError(f'{where}.dataset_args', 'expected an object')
        rows.append(ImportedRow(_json_cell(d['architecture'], f'{where}.architecture'), str(d['dataset']),
                                _accuracy_of(d, where), args))
    return rows


def import_results(store: KnowledgeStore, rows: Iterable[ImportedRow], space: str, *, name: str,
                   parse: Callable[[Any], dict] | None = None) -> dict[str, int]:
    """Record imported rows as succeeded evaluations: one experiment ``import:<name>:<task>`` per task.

    ``parse`` turns each row's architecture into the space's sample (raising :class:`ConfigError`
    on a bad one); re-importing the same file replaces its rows. Returns rows per experiment id.
    """
    by_exp: dict[str, list[tuple[ImportedRow, dict]]] = {}
    for i, row in enumerate(rows, start=1):
        try:
            arch = parse(row.architecture) if parse is not None else row.architecture
        except ConfigError as exc:
            raise ConfigError(f'row {i}.{exc.field}', exc.message, exc.allowed) from exc
        exp = f'import:{name}:{task_key(row.dataset, row.dataset_args)}'
        by_exp.setdefault(exp, []).append((row, arch))
    out = {}
    for exp, items in by_exp.items():
        first = items[0][0]
        store.record_experiment(exp, strategy='import', space=space, dataset=first.dataset,
                                config={'import': name, 'space': space, 'dataset': first.dataset,
                                        'dataset_args': first.dataset_args})
        for pid, (row, arch) in enumerate(items):
            spec = {'space': space, 'dataset': row.dataset, 'dataset_args': row.dataset_args, 'mode': 'maximize'}
            store.record_proposal(exp, pid, architecture=arch, strategy='import', space=space, dataset=row.dataset,
                                  spec=spec)
            store.record_result(exp, pid, {'default': row.accuracy, 'val_acc': row.accuracy}, status='SUCCEEDED')
        out[exp] = len(items)
    return out


def space_parser(space: str, space_args: dict | None, dataset: str = 'synthetic') -> Callable[[Any], dict]:
    """A function checking (and, where the space can, converting) an architecture of ``space``.

    A space whose ``grammar`` hook (nni_xfer/space.py; ``nasnet_cells``'s :class:`CellGrammar`) can
    validate parses with it: the sample, NAO's token sequence (a list of ints) or the appendix's
    ``{"conv_dag": ..., "reduc_dag": ...}`` JSON. Otherwise the sample must name a choice for every
    dimension of the built space.
    """
    from nni_xfer.data.pipeline import dataset_info
    from nni_xfer.space import build_space, space_hook, space_info
    try:
        info_ds = dataset_info(dataset)
    except ConfigError:
        info_ds = dataset_info('synthetic', in_channels=3, image_size=32, num_classes=10)
    built = build_space(space, space_args, info_ds)
    grammar = space_hook(built, 'grammar', needs=('validate',), optional=True)  # the built space's own grammar
    if grammar is not None:
        def parse_grammar(value: Any) -> dict:
            if isinstance(value, list) and hasattr(grammar, 'from_tokens'):
                return grammar.from_tokens(value, field='architecture')
            if isinstance(value, dict) and 'conv_dag' in value and hasattr(grammar, 'from_dags'):
                return grammar.from_dags(value, field='architecture')
            return grammar.validate(value)
        return parse_grammar
    info = space_info(space, space_args, built)

    def parse(value: Any) -> dict:
        if not isinstance(value, dict):
            raise ConfigError('architecture', f'expected an object with the choices of space {space!r}')
        for label, choices in info.dims.items():
            if label not in value:
                raise ConfigError(f'architecture.{label}', 'missing', allowed=choices)
            if value[label] not in choices:
                raise ConfigError(f'architecture.{label}', f'{value[label]!r} is not a choice', allowed=choices)
        return value
    return parse
