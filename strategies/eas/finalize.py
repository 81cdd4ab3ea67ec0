"""EAS's last step (paper, C10+ plain CNN): the top networks of the last stage trained for the full schedule.

"We take the top networks discovered during the second stage and further train the networks with
300 epochs using the full training set." :func:`finalize_config` turns a finished ``eas`` /
``eas_random`` search into a new ``nnictl`` experiment: the ``fixed`` strategy over the ``top_k``
distinct networks of the search's last stage (by validation accuracy; the stage's start network
included), each continuing from its own search checkpoint ("further train"; ``from_scratch`` for
fresh weights), trained by the ``train`` evaluator for ``epochs`` with ``test: true``. With
``full_train`` (default) the validation split shrinks to one image (``dataset_args.val_size: 1``:
the datasets need at least one), so the whole training set trains; compare the results by
``test_acc``. The search's proposals and their stages come from the strategy state in the knowledge
store.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from nni_xfer.errors import ConfigError
from nni_xfer.store import KnowledgeStore, arch_key
from nni_xfer.stages import stage_config

EAS_STRATEGIES = ('eas', 'eas_random')


def last_stage_top(store: KnowledgeStore, experiment_id: str, k: int) -> tuple[int, list[dict]]:
    """(last stage, its ``k`` best distinct succeeded networks as history entries, best first)."""
    state = store.strategy_state(experiment_id)
    if not state or not isinstance(state.get('history'), list):
        raise ConfigError('experiment', f'no EAS strategy state for {experiment_id!r} in {store.path}')
    done = [h for h in state['history'] if h.get('status') == 'SUCCEEDED' and isinstance(h.get('metrics'), dict)
            and (h.get('meta') or {}).get('role') in ('start', 'stage_best', 'child')]
    if not done:
        raise ConfigError('experiment', f'{experiment_id!r} has no succeeded EAS trial')
    stage = max(int(h['meta'].get('stage', 0)) for h in done)

    def acc(h):
        m = h['metrics']
        return float(m.get('val_acc', m.get('default', 0.0)))
    pool = sorted((h for h in done if int(h['meta'].get('stage', 0)) == stage), key=lambda h: (-acc(h), h['id']))
    out, seen = [], set()
    for h in pool:
        key = arch_key(h['architecture'])
        if key not in seen:
            seen.add(key)
            out.append(h)
        if len(out) == k:
            break
    return stage, out


def finalize_config(search_config: str | Path, experiment_id: str, *, store: str | None = None, top_k: int = 5,
                    epochs: int = 300, from_scratch: bool = False, full_train: bool = True,
                    evaluator_args: dict | None = None) -> dict:
    """The ``exp.yml`` (as a dict) of the final-training experiment of a finished EAS search."""
    raw = yaml.safe_load(Path(search_config).read_text())
    tuner = copy.deepcopy(raw.get('tuner') or {})
    args = tuner.get('classArgs') or {}
    if args.get('strategy') not in EAS_STRATEGIES:
        raise ConfigError('tuner.classArgs.strategy', f"the search must be an EAS search, got {args.get('strategy')!r}",
                          allowed=EAS_STRATEGIES)
    for name, v in (('top_k', top_k), ('epochs', epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(name, f'expected a positive integer, got {v!r}')
    st = KnowledgeStore.resolve(store if store is not None else args.get('store'), readonly=True)
    stage, top = last_stage_top(st, experiment_id, top_k)
    archs = [copy.deepcopy(h['architecture']) for h in top]
    inits = None
    if not from_scratch:
        inits = []
        for h in top:
            m = h['metrics']
            if not m.get('checkpoint'):
                raise ConfigError('experiment', f"trial {h['id']} of {experiment_id!r} has no checkpoint; "
                                                'use --from-scratch')
            inits.append({'kind': 'checkpoint', 'uri': m['checkpoint'], 'sha256': m.get('sha256')})
    dataset_args = dict(args.get('dataset_args') or {})
    if full_train:
        dataset_args['val_size'] = 1
    ev_args = {**(args.get('evaluator_args') or {}), 'epochs': epochs, 'test': True, **(evaluator_args or {})}
    strategy_args: dict[str, Any] = {'architectures': archs, 'init': {'kind': 'fresh'}}
    if inits is not None:
        strategy_args['inits'] = inits
    new_args = {
        'strategy': 'fixed', 'strategy_args': strategy_args,
        'space': args.get('space'), 'space_args': args.get('space_args') or {},
        'dataset': args.get('dataset', 'digits'), 'dataset_args': dataset_args,
        'evaluator': 'train', 'evaluator_args': ev_args, 'seed': args.get('seed', 0), 'mode': 'maximize',
    }
    return stage_config(raw, tuner, new_args, trials=len(archs),
                        name=(f"{raw.get('experimentName', 'EAS')} - final training of the top {len(archs)} "
                              f'of stage {stage + 1} of {experiment_id}'))

