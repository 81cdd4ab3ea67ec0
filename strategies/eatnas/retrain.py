"""EAT-NAS's retraining stage: the top-k of a finished search trained longer on the full training set.

Paper §3.1/§4.1: "after the evolution process, we pick up the best quality population and retrain
top-k models" (k = 8; CIFAR-10: 630 epochs, the best becomes the basic model that seeds the
transfer; ImageNet: 200 epochs). :func:`retrain_config` turns a finished ``eatnas`` search into a
new ``nnictl`` experiment: strategy ``fixed`` over the ``top_k`` members of the search's
best-quality population (``population='best'``; ``'final'``: the last population), ranked by the
Eq. 1 score (``rank='score'``; ``'acc'``: accuracy alone), trained by the ``train`` evaluator for
``epochs`` with ``test: true`` and a cosine learning rate (the search's ``constant`` is for
1-epoch proxies). Fresh weights by default (the paper retrains); ``from_search`` continues each
network from its search checkpoint. With ``full_train`` (default) the validation split shrinks to
one image (``dataset_args.val_size: 1``), so compare the networks by ``test_acc`` — as
``nni-xfer report RETRAIN_ID`` and the transfer seed (``seed_from: {experiment: RETRAIN_ID}``) do.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from nni_xfer.errors import ConfigError
from nni_xfer.store import KnowledgeStore, arch_key
from nni_xfer.stages import stage_config

POPULATIONS = ('best', 'final')
RANKS = ('score', 'acc')


def top_members(store: KnowledgeStore, experiment_id: str, k: int, population: str = 'best',
                rank: str = 'score') -> list[dict]:
    """The ``k`` best distinct members (``id``, ``architecture``, ``acc``, ``score``, ``checkpoint``, ...)."""
    if population not in POPULATIONS:
        raise ConfigError('population', f'unknown value {population!r}', allowed=POPULATIONS)
    if rank not in RANKS:
        raise ConfigError('rank', f'unknown value {rank!r}', allowed=RANKS)
    state = store.strategy_state(experiment_id)
    extra = (state or {}).get('extra') or {}
    if not state or 'population' not in extra or 'cycles' not in extra:
        known = [e['experiment_id'] for e in store.experiments() if e.get('strategy') == 'eatnas'][-5:]
        raise ConfigError('experiment', f'no eatnas search state for {experiment_id!r} in {store.path}',
                          allowed=known or None)
    members = extra.get('best_population') if population == 'best' else extra.get('population')
    members = members or extra.get('population') or []
    if not members:
        raise ConfigError('experiment', f'{experiment_id!r} has no trained population yet')
    key = (lambda m: m['score']) if rank == 'score' else (lambda m: m['acc'])
    out, seen = [], set()
    for m in sorted(members, key=lambda m: (-key(m), m['id'])):
        ak = arch_key(m['architecture'])
        if ak not in seen:
            seen.add(ak)
            out.append(m)
        if len(out) == k:
            break
    return out


def retrain_config(search_config: str | Path, experiment_id: str, *, store: str | None = None, top_k: int = 8,
                   epochs: int = 630, population: str = 'best', rank: str = 'score', from_search: bool = False,
                   full_train: bool = True, evaluator_args: dict | None = None) -> dict:
    """The ``exp.yml`` (as a dict) of the retraining experiment of a finished EAT-NAS search."""
    raw = yaml.safe_load(Path(search_config).read_text())
    if not isinstance(raw, dict):
        raise ConfigError('search_config', f'{search_config} is not an exp.yml mapping')
    tuner = copy.deepcopy(raw.get('tuner') or {})
    args = tuner.get('classArgs') or {}
    if args.get('strategy') != 'eatnas':
        raise ConfigError('tuner.classArgs.strategy', f"the search must be an eatnas search, got "
                                                      f"{args.get('strategy')!r}", allowed=['eatnas'])
    for name, v in (('top_k', top_k), ('epochs', epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(name, f'expected a positive integer, got {v!r}')
    st = KnowledgeStore.resolve(store if store is not None else args.get('store'), readonly=True)
    try:
        ev_space = {e.space for e in st.evaluations(experiment_id=experiment_id)}
        if ev_space and ev_space != {args.get('space')}:
            raise ConfigError('experiment', f'{experiment_id!r} searched {", ".join(sorted(map(str, ev_space)))}, '
                                            f"but the search config's space is {args.get('space')!r}")
        top = top_members(st, experiment_id, top_k, population=population, rank=rank)
    finally:
        st.close()
    archs = [copy.deepcopy(m['architecture']) for m in top]
    strategy_args: dict[str, Any] = {'architectures': archs, 'init': {'kind': 'fresh'}}
    if from_search:
        inits = []
        for m in top:
            if not m.get('checkpoint'):
                raise ConfigError('experiment', f"trial {m['id']} of {experiment_id!r} has no checkpoint; "
                                                'retrain from fresh weights')
            block = {'kind': 'checkpoint', 'uri': m['checkpoint']}
            if m.get('sha256'):
                block['sha256'] = m['sha256']
            inits.append(block)
        strategy_args['inits'] = inits
    dataset_args = dict(args.get('dataset_args') or {})
    if full_train:
        dataset_args['val_size'] = 1
    ev_args = {**(args.get('evaluator_args') or {}), 'epochs': epochs, 'lr_schedule': 'cosine', 'test': True,
               **(evaluator_args or {})}
    new_args = {
        'strategy': 'fixed', 'strategy_args': strategy_args,
        'space': args.get('space'), 'space_args': args.get('space_args') or {},
        'dataset': args.get('dataset', 'digits'), 'dataset_args': dataset_args,
        'evaluator': 'train', 'evaluator_args': ev_args, 'seed': args.get('seed', 0), 'mode': 'maximize',
    }
    what = 'best-quality' if population == 'best' else 'final'
    return stage_config(raw, tuner, new_args, trials=len(archs),
                        name=(f"{raw.get('experimentName', 'EAT-NAS')} - retraining of the top {len(archs)} "
                              f'of the {what} population of {experiment_id}'))

