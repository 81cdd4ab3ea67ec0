"""Building XferNAS source knowledge: random architectures of a space on several source datasets.

A sources config (YAML) names the space and the source tasks; :func:`write_source_configs` turns
it into one ordinary ``exp.yml`` per task (the ``random`` strategy, ``per_source`` trials), which
``nni-xfer xfernas sources CONFIG`` then runs one after the other with ``nni-xfer run``. Every
trial lands in the knowledge store like any other, so the same files can also be started by hand
with ``nnictl create``::

    space: nasnet_cells
    space_args: {B: 3, N: 1, F: 8, ops: xfernas}
    per_source: 8                    # the paper: 200 per source task
    tasks:
      - {dataset: digits, dataset_args: {val_size: 0.2}}
      - {dataset: synthetic, dataset_args: {num_classes: 6, seed: 1, image_size: 8}}
    evaluator: train
    evaluator_args: {epochs: 2}
    seed: 0
    trialConcurrency: 2
    store: null                      # the knowledge store the xfernas search will read
    checkpoint_root: null
    maxExperimentDuration: 30m
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nni_xfer.errors import ConfigError

from .sources import task_key

_KEYS = ('space', 'space_args', 'per_source', 'tasks', 'evaluator', 'evaluator_args', 'seed', 'trialConcurrency',
         'store', 'checkpoint_root', 'maxExperimentDuration', 'trialCommand')


@dataclass
class SourcesConfig:
    space: str
    tasks: list[dict]
    per_source: int = 200
    space_args: dict = field(default_factory=dict)
    evaluator: str = 'train'
    evaluator_args: dict = field(default_factory=dict)
    seed: int = 0
    trialConcurrency: int = 1
    store: str | None = None
    checkpoint_root: str | None = None
    maxExperimentDuration: str | None = None
    trialCommand: str = 'python -m nni_xfer.launch'  # the warm launcher (falls back to nni_xfer.runtime.trial)

    @classmethod
    def from_dict(cls, d: Any) -> 'SourcesConfig':
        if not isinstance(d, dict):
            raise ConfigError('sources', 'expected a mapping')
        for key in d:
            if key not in _KEYS:
                raise ConfigError(f'sources.{key}', 'unknown key', allowed=_KEYS)
        for key in ('space', 'tasks'):
            if key not in d:
                raise ConfigError(f'sources.{key}', 'missing')
        tasks = d['tasks']
        if not isinstance(tasks, list) or not tasks:
            raise ConfigError('sources.tasks', 'expected a non-empty list of {dataset, dataset_args}')
        norm = []
        for i, t in enumerate(tasks):
            if isinstance(t, str):
                t = {'dataset': t}
            if not isinstance(t, dict) or 'dataset' not in t or set(t) - {'dataset', 'dataset_args'}:
                raise ConfigError(f'sources.tasks[{i}]', 'expected {dataset: NAME, dataset_args: {...}}')
            norm.append({'dataset': t['dataset'], 'dataset_args': dict(t.get('dataset_args') or {})})
        keys = [task_key(t['dataset'], t['dataset_args']) for t in norm]
        for i, k in enumerate(keys):
            if k in keys[:i]:
                raise ConfigError(f'sources.tasks[{i}]', f'task {k!r} is listed twice')
        per = d.get('per_source', 200)
        if not isinstance(per, int) or isinstance(per, bool) or per < 1:
            raise ConfigError('sources.per_source', f'expected a positive integer, got {per!r}')
        conc = d.get('trialConcurrency', 1)
        if not isinstance(conc, int) or isinstance(conc, bool) or conc < 1:
            raise ConfigError('sources.trialConcurrency', f'expected a positive integer, got {conc!r}')
        rest = {k: d[k] for k in _KEYS if k in d and k not in ('tasks', 'per_source', 'trialConcurrency')}
        return cls(tasks=norm, per_source=per, trialConcurrency=conc, **rest)

    @classmethod
    def load(cls, path: str | Path) -> 'SourcesConfig':
        path = Path(path)
        if not path.is_file():
            raise ConfigError('CONFIG', f'no such file: {path}')
        return cls.from_dict(yaml.safe_load(path.read_text()))


def experiment_config(cfg: SourcesConfig, task: dict, index: int) -> dict:
    """The exp.yml (as a dict) that evaluates ``per_source`` random architectures on one source task."""
    key = task_key(task['dataset'], task['dataset_args'])
    class_args = {
        'strategy': 'random', 'strategy_args': {'max_trials': cfg.per_source},
        'space': cfg.space, 'space_args': cfg.space_args,
        'dataset': task['dataset'], 'dataset_args': task['dataset_args'],
        'evaluator': cfg.evaluator, 'evaluator_args': cfg.evaluator_args,
        'seed': cfg.seed + index, 'mode': 'maximize',
    }
    for k in ('store', 'checkpoint_root'):
        if getattr(cfg, k) is not None:
            class_args[k] = str(Path(getattr(cfg, k)).expanduser().resolve())
    exp = {
        'experimentName': f'xfernas source {key}',
        'searchSpace': {},
        'trialCommand': cfg.trialCommand,
        'trialCodeDirectory': '.',
        'trialConcurrency': cfg.trialConcurrency,
        'maxTrialNumber': cfg.per_source,
        'tuner': {'className': 'nni_xfer.tuner.XferTuner', 'codeDirectory': '.', 'classArgs': class_args},
        'trainingService': {'platform': 'local', 'useActiveGpu': False},
    }
    if cfg.maxExperimentDuration:
        exp['maxExperimentDuration'] = cfg.maxExperimentDuration
    return exp


def file_name(task: dict, index: int) -> str:
    key = task_key(task['dataset'], task['dataset_args'])
    return f'source_{index}_' + re.sub(r'[^A-Za-z0-9]+', '_', key).strip('_') + '.yml'


def write_source_configs(cfg: SourcesConfig, out_dir: str | Path) -> list[Path]:
    """One exp.yml per source task under ``out_dir``; returns their paths in task order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, task in enumerate(cfg.tasks):
        p = out / file_name(task, i)
        header = (f'# XferNAS source task {task_key(task["dataset"], task["dataset_args"])}: {cfg.per_source} random '
                  f'architectures of {cfg.space}\n# generated by nni-xfer xfernas sources; run: nni-xfer run {p.name}\n')
        p.write_text(header + yaml.safe_dump(experiment_config(cfg, task, i), sort_keys=False))
        paths.append(p)
    return paths


def evaluated_count(cfg: SourcesConfig, task: dict) -> int:
    """Succeeded evaluations of the config's space on ``task`` already in its knowledge store."""
    from nni_xfer.store import KnowledgeStore, store_exists
    from .sources import _task_of
    if not store_exists(cfg.store):
        return 0
    store = KnowledgeStore.resolve(cfg.store, readonly=True)
    key = task_key(task['dataset'], task['dataset_args'])
    return sum(1 for e in store.evaluations(space=cfg.space, dataset=task['dataset'], status='SUCCEEDED')
               if _task_of(e) == key)
