"""ModuleNet's evaluation stage (paper Sec. IV): fine-tune the best searched chains and the originals.

:func:`finetune_config` turns a finished search experiment into a new ``nnictl`` experiment: the
``fixed`` strategy over the top-k searched chains (from the search's last NSGA-II population when
the strategy state has one, else the best evaluations) and every original network of the knowledge
base (the chain whose positions all come from one source), each built with ``frozen: false``,
initialised from the knowledge base (``kb_modules``) and trained with the ``train`` evaluator
(all weights, ``test: true``). ``nni-xfer report`` on that experiment prints the comparison table.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from nni_xfer.errors import ConfigError
from nni_xfer.store import KnowledgeStore, arch_key


def _positions(arch: dict) -> list[str]:
    return sorted(arch, key=lambda k: int(str(k).rsplit('_', 1)[-1]))


def top_chains(store: KnowledgeStore, experiment_id: str, k: int) -> list[dict]:
    """The ``k`` best distinct chains of a search (lowest ``default``), preferring the last population."""
    evs = [e for e in store.evaluations(experiment_id=experiment_id, status='SUCCEEDED')
           if e.metric('default') is not None]
    if not evs:
        raise ConfigError('experiment', f'no succeeded evaluations of {experiment_id!r} in {store.path}')
    state = store.strategy_state(experiment_id) or {}
    population = (state.get('extra') or {}).get('population')
    keys = None
    if isinstance(population, list) and population:
        keys = set()
        for ind in population:
            arch = ind.get('architecture') if isinstance(ind, dict) else None
            if isinstance(arch, dict):
                keys.add(arch_key(arch))
    pool = [e for e in evs if keys is None or arch_key(e.architecture) in keys] or evs
    pool.sort(key=lambda e: (e.metric('default'), e.parameter_id))
    out, seen = [], set()
    for e in pool:
        key = arch_key(e.architecture)
        codes = [e.architecture[p] for p in _positions(e.architecture)]
        if key in seen or len(set(codes)) == 1:  # originals are added separately
            continue
        seen.add(key)
        out.append(dict(e.architecture))
        if len(out) == k:
            break
    return out


def finetune_config(search_config: str | Path, experiment_id: str, *, store: str | None = None, top_k: int = 3,
                    epochs: int = 50, evaluator_args: dict | None = None, originals: bool = True) -> dict:
    """The ``exp.yml`` (as a dict) of the fine-tuning experiment for a finished search."""
    from .kb import KnowledgeBase
    raw = yaml.safe_load(Path(search_config).read_text())
    tuner = copy.deepcopy((raw.get('tuner') or {}))
    args = tuner.get('classArgs') or {}
    if args.get('space') != 'module_chain':
        raise ConfigError('tuner.classArgs.space', f"the search must use the module_chain space, got {args.get('space')!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError('top_k', f'expected a positive integer, got {top_k!r}')
    st = KnowledgeStore.resolve(store if store is not None else args.get('store'))
    chains = top_chains(st, experiment_id, top_k)
    space_args = dict(args.get('space_args') or {})
    base = KnowledgeBase(space_args.get('kb'), field='space_args.kb')
    names = space_args.get('sources') or base.source_names()
    if originals:
        chains += [{f'module_{j}': n for j in range(base.cells)} for n in names]
    space_args['frozen'] = False
    ev_args = {'epochs': epochs, 'test': True, **{k: v for k, v in (args.get('evaluator_args') or {}).items()
                                                   if k in ('batch_size', 'lr', 'weight_decay', 'momentum', 'device',
                                                            'num_threads', 'eval_batch_size')}}
    ev_args.update(evaluator_args or {})
    new_args = {
        'strategy': 'fixed',
        'strategy_args': {'architectures': chains, 'init': {'kind': 'kb_modules'}},
        'space': 'module_chain', 'space_args': space_args,
        'dataset': args.get('dataset', 'digits'), 'dataset_args': args.get('dataset_args') or {},
        'evaluator': 'train', 'evaluator_args': ev_args, 'seed': args.get('seed', 0), 'mode': 'maximize',
    }
    for key in ('store', 'checkpoint_root'):
        if args.get(key) is not None:
            new_args[key] = args[key]
    tuner['classArgs'] = new_args
    out = {k: v for k, v in raw.items() if k not in ('tuner', 'maxTrialNumber', 'experimentName')}
    out['experimentName'] = f"{raw.get('experimentName', 'ModuleNet')} - fine-tune of {experiment_id}"
    out['maxTrialNumber'] = len(chains)
    out['tuner'] = tuner
    return out


def write_finetune_config(path: str | Path, config: dict[str, Any], search_config: str | Path) -> Path:
    """Write the config next to where the user wants it; relative code directories stay valid."""
    path = Path(path)
    src_dir = Path(search_config).resolve().parent
    config = copy.deepcopy(config)
    for key in ('trialCodeDirectory',):
        if key in config and not Path(str(config[key])).is_absolute():
            config[key] = str((src_dir / config[key]).resolve())
    tuner = config.get('tuner') or {}
    if 'codeDirectory' in tuner and not Path(str(tuner['codeDirectory'])).is_absolute():
        tuner['codeDirectory'] = str((src_dir / tuner['codeDirectory']).resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
