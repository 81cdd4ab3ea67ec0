"""The elastic-transfer seed: the basic architecture (and weights) a large-task search starts from.

``strategy_args.seed_from`` is either

- ``{experiment: ID, store: PATH|null, pick: population|best, weights: true|false}``: a finished
  search in the knowledge store (``store`` defaults to the experiment's own ``classArgs.store``,
  itself defaulting to ``$NNI_XFER_HOME/store.db``; set it only when the source search recorded
  into another store). ``pick: population`` (default) takes the
  best-scoring member of the source's best-quality population when the source is an ``eatnas``
  search (paper: pick the best-quality population, retrain its top-k, the best is the basic model),
  else — e.g. a retraining experiment (``nni-xfer eatnas retrain``, strategy ``fixed``) — the best
  ``test_acc`` (``default`` where no trial reports it); ``pick: best`` the same without the population. ``weights`` (default true) shares the source
  checkpoint into every initial child (``eatnas_share`` across tasks);
- ``{architecture: {...}, checkpoint: PATH|null, sha256: null}``: an explicit basic architecture,
  optionally with its checkpoint.

Everything is resolved when the strategy is constructed, so a bad seed fails before any trial.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nni_xfer.errors import ConfigError

FIELD = 'strategy_args.seed_from'
STORE_KEYS = ('experiment', 'store', 'pick', 'weights')
EXPLICIT_KEYS = ('architecture', 'checkpoint', 'sha256')
PICKS = ('population', 'best')


def resolve_seed(seed_from: Any, space_name: str, grammar, parse, default_store: str | None = None) -> dict | None:
    """``{'architecture', 'checkpoint', 'sha256', 'source', 'acc'}`` or ``None`` without a seed.

    ``parse(arch, grammar, field)`` is the space's validator (raises a named ConfigError);
    ``default_store`` is the store read when ``seed_from.store`` is absent (the experiment's
    ``classArgs.store``; ``None``: ``$NNI_XFER_HOME/store.db``).
    """
    if seed_from is None:
        return None
    if not isinstance(seed_from, dict):
        raise ConfigError(FIELD, f'expected a mapping or null, got {type(seed_from).__name__}')
    if 'experiment' in seed_from:
        for key in seed_from:
            if key not in STORE_KEYS:
                raise ConfigError(f'{FIELD}.{key}', 'unknown key', allowed=STORE_KEYS)
        seed = _from_store(seed_from, space_name, default_store)
    elif 'architecture' in seed_from:
        for key in seed_from:
            if key not in EXPLICIT_KEYS:
                raise ConfigError(f'{FIELD}.{key}', 'unknown key', allowed=EXPLICIT_KEYS)
        ckpt = seed_from.get('checkpoint')
        if ckpt is not None and (not isinstance(ckpt, str) or not Path(ckpt).is_file()):
            raise ConfigError(f'{FIELD}.checkpoint', f'not a file: {ckpt!r}')
        seed = {'architecture': seed_from['architecture'], 'checkpoint': ckpt, 'sha256': seed_from.get('sha256'),
                'source': None, 'acc': None}
    else:
        raise ConfigError(FIELD, "needs 'experiment' (a finished search) or 'architecture'",
                          allowed=['experiment', 'architecture'])
    seed['architecture'] = parse(seed['architecture'], grammar, f'{FIELD}.architecture')
    return seed


def _from_store(seed_from: dict, space_name: str, default_store: str | None = None) -> dict:
    from nni_xfer.store import KnowledgeStore, StoreError, default_store as default_setting, store_exists

    exp = seed_from['experiment']
    if not isinstance(exp, str) or not exp:
        raise ConfigError(f'{FIELD}.experiment', f'expected an experiment id, got {exp!r}')
    pick = seed_from.get('pick', 'population')
    if pick not in PICKS:
        raise ConfigError(f'{FIELD}.pick', f'unknown value {pick!r}', allowed=PICKS)
    weights = seed_from.get('weights', True)
    if not isinstance(weights, bool):
        raise ConfigError(f'{FIELD}.weights', f'expected true/false, got {weights!r}')
    explicit = seed_from.get('store')
    if explicit is not None and (not isinstance(explicit, str) or not explicit):
        raise ConfigError(f'{FIELD}.store', f'expected a path, got {explicit!r}')
    path = explicit or default_store or default_setting()
    if not store_exists(path):
        where = '' if explicit else (' (classArgs.store)' if default_store else ' (the default store)')
        raise ConfigError(f'{FIELD}.store', f'no knowledge store at {path}{where}')
    try:
        store = KnowledgeStore(path, readonly=True)
    except StoreError as exc:
        raise ConfigError(f'{FIELD}.store', exc.message) from None
    try:
        evals = store.evaluations(experiment_id=exp, status='SUCCEEDED')
        if not evals:
            known = [e['experiment_id'] for e in store.experiments()][-5:]
            raise ConfigError(f'{FIELD}.experiment', f'no finished evaluations of experiment {exp!r} in {path}',
                              allowed=known or None)
        spaces = {e.space for e in evals}
        if spaces != {space_name}:
            raise ConfigError(f'{FIELD}.experiment', f'experiment {exp!r} searched space '
                                                     f'{", ".join(sorted(map(str, spaces)))}, not {space_name!r}')
        chosen = None
        state = store.strategy_state(exp) if pick == 'population' else None
        pop = ((state or {}).get('extra') or {}).get('best_population') or \
            ((state or {}).get('extra') or {}).get('population')
        if pop:
            ids = {m['id'] for m in pop}
            best = max(pop, key=lambda m: m['score'])
            chosen = next((e for e in evals if e.proposal_id == best['id'] and e.proposal_id in ids), None)
        if chosen is None:  # a retraining experiment (nni-xfer eatnas retrain): the best on the test split
            by = 'test_acc' if any(e.metric('test_acc') is not None for e in evals) else 'default'
            chosen = max(evals, key=lambda e: e.metric(by, float('-inf')))
    finally:
        store.close()
    ckpt, sha = (chosen.checkpoint, chosen.sha256) if weights else (None, None)
    if ckpt is not None and not Path(ckpt).is_file():
        raise ConfigError(f'{FIELD}.weights', f'checkpoint of the basic model is gone: {ckpt} (set weights: false)')
    return {'architecture': chosen.architecture, 'checkpoint': ckpt, 'sha256': sha,
            'source': {'experiment_id': exp, 'proposal_id': chosen.proposal_id},
            'acc': chosen.metric('default')}
