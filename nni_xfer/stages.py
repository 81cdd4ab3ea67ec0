"""Follow-up stages of a search as ready-to-run experiments (the methods' finetune / finalize / retrain).

A stage is a ``fixed``-strategy experiment over networks picked from a finished search; the method
decides which networks and how they train (its ``strategy_args`` and ``evaluator_args``), this module
writes the rest the same way for every method: the search's exp.yml with the tuner's ``classArgs``
replaced (store and checkpoint root carried over), a name, the budget, and code directories made
absolute so the written file runs from any folder.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CARRIED = ('store', 'checkpoint_root')


def stage_config(raw: dict, tuner: dict, class_args: dict, *, name: str, trials: int) -> dict[str, Any]:
    """The stage's exp.yml: ``raw`` (the search's) with ``tuner.classArgs = class_args`` (plus the
    search's store and checkpoint root), ``experimentName = name`` and ``maxTrialNumber = trials``."""
    search_args = (raw.get('tuner') or {}).get('classArgs') or {}
    class_args = dict(class_args)
    for key in CARRIED:
        if search_args.get(key) is not None:
            class_args[key] = search_args[key]
    tuner = dict(tuner)
    tuner['classArgs'] = class_args
    out = {k: v for k, v in raw.items() if k not in ('tuner', 'maxTrialNumber', 'experimentName')}
    out['experimentName'] = name
    out['maxTrialNumber'] = trials
    out['tuner'] = tuner
    return out


def write_stage_config(path: str | Path, config: dict[str, Any], search_config: str | Path) -> Path:
    """Write ``config``; code directories relative to the search config's folder are made absolute."""
    path = Path(path)
    src_dir = Path(search_config).resolve().parent
    config = copy.deepcopy(config)
    if 'trialCodeDirectory' in config and not Path(str(config['trialCodeDirectory'])).is_absolute():
        config['trialCodeDirectory'] = str((src_dir / config['trialCodeDirectory']).resolve())
    tuner = config.get('tuner') or {}
    if 'codeDirectory' in tuner and not Path(str(tuner['codeDirectory'])).is_absolute():
        tuner['codeDirectory'] = str((src_dir / tuner['codeDirectory']).resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
