"""Evaluate a given list of architectures once each (re-training, fine-tuning, comparisons).

ModuleNet's final stage uses it: ``nni-xfer modulenet finetune`` writes an experiment whose
strategy is ``fixed`` over the searched top-k and every original network of the knowledge base.
"""
from __future__ import annotations

from nni_xfer.errors import ConfigError
from nni_xfer.registry import STRATEGIES
from nni_xfer.strategy import BaseStrategy, Proposal, SpaceInfo
from nni_xfer.store import arch_key


@STRATEGIES.register('fixed', description='Evaluate a given list of architectures once each (fine-tuning, baselines)')
class FixedStrategy(BaseStrategy):
    """Proposes ``architectures`` in order, each once; a failed one is retried up to ``retries`` times.

    Args:
        architectures: list of samples of the space (each validated against ``space.dims``).
        init: the ``init`` block of every proposal (default ``{'kind': 'fresh'}``).
        inits: optional per-architecture ``init`` blocks (same length as ``architectures``; ``None``
            entries use ``init``) — e.g. each network continuing from its own checkpoint.
        retries: extra attempts for an architecture whose trial failed.
    """

    #: proposals do not depend on results (the shared contract checks it both ways)
    uses_scores = False

    #: tiny real run for the reliability tests (nni_xfer.testing.quick)
    quick_config = {'space': 'simple_cnn', 'space_args': {'widths': [8, 16], 'depths': [1, 2], 'kernels': [3, 5]},
                    'strategy_args': {'architectures': [
                        {'width1': w1, 'width2': w2, 'depth1': d, 'depth2': 1, 'kernel1': 3, 'kernel2': 3}
                        for w1 in (8, 16) for w2 in (8, 16) for d in (1, 2)]}}

    @classmethod
    def contract_case(cls):
        """Quick mock case: 12 distinct architectures of the toy space, in an order drawn from the seed."""
        import itertools

        import numpy as np

        from nni_xfer.testing.strategy_contract import ContractCase, toy_space
        space = toy_space()
        archs = [dict(zip(space.dims, values)) for values in itertools.product(*space.dims.values())]

        def kwargs(seed):
            order = np.random.default_rng(seed).permutation(len(archs))[:12]
            return {'architectures': [archs[int(i)] for i in order]}
        return ContractCase(space, kwargs)

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize', architectures: list | None = None,
                 init: dict | None = None, retries: int = 0, inits: list | None = None):
        super().__init__(space, seed=seed, mode=mode)
        if not isinstance(architectures, list) or not architectures:
            raise ConfigError('strategy_args.architectures', 'expected a non-empty list of architectures')
        for i, arch in enumerate(architectures):
            if not isinstance(arch, dict):
                raise ConfigError(f'strategy_args.architectures[{i}]', f'expected a mapping, got {arch!r}')
            for label, choices in space.dims.items():
                if label not in arch:
                    raise ConfigError(f'strategy_args.architectures[{i}].{label}', 'missing', allowed=choices)
                if arch[label] not in choices:
                    raise ConfigError(f'strategy_args.architectures[{i}].{label}',
                                      f'{arch[label]!r} is not a choice', allowed=choices)
        keys = [arch_key(a) for a in architectures]
        if len(set(keys)) != len(keys):
            raise ConfigError('strategy_args.architectures', 'lists an architecture twice')
        if init is not None and (not isinstance(init, dict) or 'kind' not in init):
            raise ConfigError('strategy_args.init', "expected a mapping with a 'kind' key")
        if inits is not None:
            if not isinstance(inits, list) or len(inits) != len(architectures):
                raise ConfigError('strategy_args.inits', f'expected a list of {len(architectures)} init blocks '
                                  '(one per architecture)')
            for i, block in enumerate(inits):
                if block is not None and (not isinstance(block, dict) or 'kind' not in block):
                    raise ConfigError(f'strategy_args.inits[{i}]', "expected a mapping with a 'kind' key or null")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError('strategy_args.retries', f'expected an integer >= 0, got {retries!r}')
        self.architectures = architectures
        self.init = dict(init or {'kind': 'fresh'})
        self.inits = inits
        self.retries = retries

    def _status(self, key: str) -> tuple[bool, int]:
        done = any(h['status'] == 'SUCCEEDED' and arch_key(h['architecture']) == key for h in self.history)
        failures = sum(h['status'] == 'FAILED' and arch_key(h['architecture']) == key for h in self.history)
        return done, failures

    def _todo(self) -> list[dict]:
        out = []
        for arch in self.architectures:
            key = arch_key(arch)
            done, failures = self._status(key)
            pending = any(arch_key(p['architecture']) == key for p in self.pending.values())
            if not done and not pending and failures <= self.retries:
                out.append(arch)
        return out

    @property
    def done(self) -> bool:
        return not self.pending and not self._todo()

    def _state_dict(self) -> dict:
        return {'architectures': self.architectures, 'init': self.init, 'retries': self.retries, 'inits': self.inits}

    def _load_state_dict(self, state: dict) -> None:
        self.architectures = state['architectures']
        self.init = state['init']
        self.retries = state['retries']
        self.inits = state.get('inits')  # absent in states saved before per-architecture inits

    def _propose(self, trial_id: int) -> Proposal | None:
        todo = self._todo()
        if not todo:
            return None
        index = self.architectures.index(todo[0])
        init = (self.inits or [None] * len(self.architectures))[index] or self.init
        return Proposal(dict(todo[0]), init=dict(init), meta={'index': index})
