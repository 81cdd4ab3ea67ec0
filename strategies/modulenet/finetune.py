"""ModuleNet's evaluation stage (paper Sec. IV): fine-tune the final population and the originals.

:func:`finetune_config` turns a finished search experiment into a new ``nnictl`` experiment: the
``fixed`` strategy over the search's final NSGA-II population (paper: pop_final; ``top_k`` keeps only
the k best of it instead) and every original network of the knowledge base (the chain whose
positions all come from one source), each built with ``frozen: false``, initialised from the
knowledge base (``kb_modules``) with the head (and any trained 1×1 connection) of the chain's own
search trial (``init.heads``; a chain the search never evaluated keeps a fresh head), and trained
with the ``train`` evaluator (all weights, ``test: true``). ``nni-xfer report`` on that experiment
prints the comparison table.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from nni_xfer.errors import ConfigError
from nni_xfer.store import Evaluation, KnowledgeStore, arch_key
from nni_xfer.stages import stage_config


def _positions(arch: dict) -> list[str]:
    return sorted(arch, key=lambda k: int(str(k).rsplit('_', 1)[-1]))


def _best_evaluations(store: KnowledgeStore, experiment_id: str) -> dict[str, Evaluation]:
    """Per architecture key, its best (lowest ``default``) succeeded evaluation of the search."""
    evs = [e for e in store.evaluations(experiment_id=experiment_id, status='SUCCEEDED')
           if e.metric('default') is not None]
    if not evs:
        raise ConfigError('experiment', f'no succeeded evaluations of {experiment_id!r} in {store.path}')
    best: dict[str, Evaluation] = {}
    for e in sorted(evs, key=lambda e: (e.metric('default'), e.proposal_id)):
        best.setdefault(arch_key(e.architecture), e)
    return best


def top_chains(store: KnowledgeStore, experiment_id: str, k: int | None = None,
               originals: bool = False) -> list[dict]:
    """The search's final population, best (lowest ``default``) first; the ``k`` best when ``k`` is given.

    Without a saved population (a search without strategy state) the ``k`` best evaluations. Original
    chains (one source at every position) are left out unless ``originals``.
    """
    best = _best_evaluations(store, experiment_id)
    state = store.strategy_state(experiment_id) or {}
    population = (state.get('extra') or {}).get('population')
    keys = None
    if isinstance(population, list) and population:
        keys = {arch_key(ind['architecture']) for ind in population
                if isinstance(ind, dict) and isinstance(ind.get('architecture'), dict)}
    if keys is None and k is None:
        raise ConfigError('top_k', f'the search {experiment_id!r} saved no final population; give --top-k')
    pool = [e for key, e in best.items() if keys is None or key in keys] or list(best.values())
    pool.sort(key=lambda e: (e.metric('default'), e.proposal_id))
    out = []
    for e in pool:
        codes = [e.architecture[p] for p in _positions(e.architecture)]
        if len(set(codes)) == 1 and not originals:  # originals are added separately
            continue
        out.append(dict(e.architecture))
        if k is not None and len(out) == k:
            break
    return out


def searched_heads(store: KnowledgeStore, experiment_id: str, chains: list[dict]) -> list[dict]:
    """``init.heads`` entries: each chain's best search-trial checkpoint (chains never evaluated have none)."""
    best = _best_evaluations(store, experiment_id)
    heads = []
    for arch in chains:
        e = best.get(arch_key(arch))
        if e is not None and e.checkpoint:
            heads.append({'architecture': dict(arch), 'uri': e.checkpoint, 'sha256': e.sha256})
    return heads


def finetune_config(search_config: str | Path, experiment_id: str, *, store: str | None = None,
                    top_k: int | None = None, epochs: int = 50, evaluator_args: dict | None = None,
                    originals: bool = True, searched_head: bool = True) -> dict:
    """The ``exp.yml`` (as a dict) of the fine-tuning experiment for a finished search.

    ``top_k``: ``None`` (default, the paper) fine-tunes the whole final population; k the k best of it.
    ``searched_head``: start each chain from its search trial's head (default) or from a fresh one.
    """
    from .kb import KnowledgeBase
    raw = yaml.safe_load(Path(search_config).read_text())
    tuner = copy.deepcopy((raw.get('tuner') or {}))
    args = tuner.get('classArgs') or {}
    if args.get('space') != 'module_chain':
        raise ConfigError('tuner.classArgs.space', f"the search must use the module_chain space, got {args.get('space')!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError('top_k', f'expected a positive integer, got {top_k!r}')
    st = KnowledgeStore.resolve(store if store is not None else args.get('store'), readonly=True)
    # the whole final population includes any original chain that survived; top-k ranks the searched ones
    chains = top_chains(st, experiment_id, top_k, originals=top_k is None)
    space_args = dict(args.get('space_args') or {})
    base = KnowledgeBase(space_args.get('kb'), field='space_args.kb')
    names = space_args.get('sources') or base.source_names()
    if originals:
        have = {arch_key(a) for a in chains}
        chains += [a for a in ({f'module_{j}': n for j in range(base.cells)} for n in names)
                   if arch_key(a) not in have]
    space_args['frozen'] = False
    init: dict = {'kind': 'kb_modules'}
    heads = searched_heads(st, experiment_id, chains) if searched_head else []
    if heads:
        init['heads'] = heads
    ev_args = {'epochs': epochs, 'test': True, **{k: v for k, v in (args.get('evaluator_args') or {}).items()
                                                   if k in ('batch_size', 'lr', 'weight_decay', 'momentum', 'device',
                                                            'num_threads', 'eval_batch_size')}}
    ev_args.update(evaluator_args or {})
    new_args = {
        'strategy': 'fixed',
        'strategy_args': {'architectures': chains, 'init': init},
        'space': 'module_chain', 'space_args': space_args,
        'dataset': args.get('dataset', 'digits'), 'dataset_args': args.get('dataset_args') or {},
        'evaluator': 'train', 'evaluator_args': ev_args, 'seed': args.get('seed', 0), 'mode': 'maximize',
    }
    return stage_config(raw, tuner, new_args, trials=len(chains),
                        name=f"{raw.get('experimentName', 'ModuleNet')} - fine-tune of {experiment_id}")

