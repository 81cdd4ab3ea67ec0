"""Shared contract tests for every strategy.

A strategy's test module subclasses :class:`StrategyContract` and overrides the ``make``
fixture (and ``space`` if it needs its own)::

    class TestRandom(StrategyContract):
        @pytest.fixture
        def make(self):
            return lambda space, seed: RandomStrategy(space, seed=seed)

Every test drives the strategy in milliseconds with :func:`mock_metrics` (the closed-form score
of :class:`~nni_xfer.training.evaluators.MockEvaluator`).

Every *registered* strategy also runs this suite without a test of its own
(``tests/unit/core/test_registries.py``): a strategy class whose default case (the toy categorical space,
no ``strategy_args``, :func:`mock_metrics`) does not fit declares its quick case::

    @classmethod
    def contract_case(cls) -> ContractCase:
        return ContractCase(space=SpaceInfo(...), kwargs={'population': 4}, metrics=my_metrics, budget=12)

:func:`contract_case` reads it; the tuner thread test (``tests/unit/core/adapters/test_tuner_threads.py``) uses the
same case. Real ``nnictl`` runs of every strategy (fault injection, kill/resume) need real
``classArgs`` instead: a strategy declares them as ``quick_config`` (see :mod:`nni_xfer.testing.quick`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import pytest

from nni_xfer.training.evaluators import MockEvaluator
from nni_xfer.strategy import BaseStrategy, SpaceInfo, StrategyError
from nni_xfer.store import arch_key


def toy_space() -> SpaceInfo:
    return SpaceInfo('toy', {}, {'a': [1, 2, 3], 'b': ['x', 'y'], 'c': [8, 16, 32, 64]})


def mock_metrics(strategy: BaseStrategy, architecture: dict) -> dict:
    s = MockEvaluator.score(architecture, strategy.space.dims)
    return {'default': s, 'val_acc': s}


@dataclass
class ContractCase:
    """A quick, mock-scored configuration of one strategy: its space, ``strategy_args``, metrics."""

    space: SpaceInfo = field(default_factory=lambda: toy_space())
    kwargs: dict | Callable[[int], dict] = field(default_factory=dict)  # or seed -> kwargs
    metrics: Callable[[BaseStrategy, dict], dict] | None = None
    budget: int = 12

    def make(self, cls: type, seed: int = 0) -> BaseStrategy:
        kwargs = self.kwargs(seed) if callable(self.kwargs) else self.kwargs
        return cls(self.space, seed=seed, **kwargs)


def contract_case(name_or_cls) -> ContractCase:
    """The strategy's declared :class:`ContractCase` (``contract_case`` classmethod), else the default."""
    cls = name_or_cls
    if isinstance(name_or_cls, str):
        from nni_xfer.registry import STRATEGIES
        cls = STRATEGIES.get(name_or_cls)
    if hasattr(cls, 'contract_case'):
        case = cls.contract_case()
    elif isinstance(name_or_cls, str):
        case = case_from_quick_config(name_or_cls)
    else:
        case = ContractCase()
    if case.metrics is None:
        case.metrics = mock_metrics
    return case


def case_from_quick_config(name: str) -> ContractCase:
    """A case from the strategy's ``quick_config`` (:mod:`nni_xfer.testing.quick`): its real space
    built for ``digits``, its ``strategy_args``, and :func:`hashed_metrics`."""
    import os

    from nni_xfer.data.pipeline import dataset_info
    from nni_xfer.registry import STRATEGIES
    from nni_xfer.space import build_space, space_info
    from nni_xfer.testing.quick import quick_config
    cfg = quick_config(name)
    args = cfg.get('space_args', {})
    info = space_info(cfg['space'], args, build_space(cfg['space'], args, dataset_info('digits')))
    kwargs = dict(cfg.get('strategy_args', {}))
    if 'mode' in cfg:
        kwargs['mode'] = cfg['mode']
    import inspect
    if 'context' in inspect.signature(STRATEGIES.get(name).__init__).parameters:
        import tempfile

        from nni_xfer.strategy import StrategyContext
        # an empty store of its own: a strategy reading the store sees no earlier search
        store = os.path.join(tempfile.mkdtemp(prefix='nni-xfer-contract-'), 'store.db')
        kwargs['context'] = StrategyContext(store=store, dataset='digits', dataset_args={})
    return ContractCase(info, kwargs, hashed_metrics)


def hashed_metrics(strategy: BaseStrategy, architecture: dict) -> dict:
    """Deterministic metrics for any architecture format: the mock score where the space has
    categorical labels, otherwise a stable hash of the architecture in [0, 1); plus the keys that
    transfer strategies read (checkpoint, sha256, params)."""
    import zlib
    text = json.dumps(architecture, sort_keys=True)
    h = zlib.crc32(text.encode()) / 0xFFFFFFFF
    s = MockEvaluator.score(architecture, strategy.space.dims) if strategy.space.dims else h
    return {'default': s, 'val_acc': s, 'params': float(len(text)), 'checkpoint': f'/ckpt/{zlib.crc32(text.encode())}.pt',
            'sha256': '0' * 64}


def drive(strategy: BaseStrategy, n: int, fail: Callable[[int], bool] = lambda i: False,
          batch: int = 1, metrics: Callable[[BaseStrategy, dict], dict] = mock_metrics) -> list[dict]:
    """Run ``n`` trials ``batch`` at a time, finishing each batch in reverse order."""
    proposals = []
    tid = 0
    while tid < n:
        live = []
        for _ in range(min(batch, n - tid)):
            p = strategy.propose(tid)
            if p is None:
                break
            proposals.append({'id': tid, **p.to_dict()})
            live.append((tid, p))
            tid += 1
        if not live:
            break
        for t, p in reversed(live):
            if fail(t):
                strategy.fail(t, 'injected')
            else:
                strategy.observe(t, metrics(strategy, p.architecture))
    return proposals


@pytest.mark.timeout(60)
class StrategyContract:
    """Inherit and override ``make``; optionally ``space`` and ``budget``."""

    budget: int = 12

    def metrics(self, strategy: BaseStrategy, architecture: dict) -> dict:
        """Metrics reported for an architecture; override for strategies that need more keys."""
        return mock_metrics(strategy, architecture)

    def drive(self, strategy: BaseStrategy, n: int, **kw) -> list[dict]:
        return drive(strategy, n, metrics=self.metrics, **kw)

    @pytest.fixture
    def make(self) -> Callable[[SpaceInfo, int], BaseStrategy]:
        raise NotImplementedError('override the make fixture')

    @pytest.fixture
    def space(self) -> SpaceInfo:
        return toy_space()

    def test_proposals_are_valid_architectures(self, make, space):
        s = make(space, 0)
        for p in self.drive(s, self.budget):
            if space.dims:
                assert set(p['architecture']) == set(space.dims)
                for label, value in p['architecture'].items():
                    assert value in space.dims[label]

    def test_same_seed_same_proposals(self, make, space):
        a = self.drive(make(space, 7), self.budget)
        b = self.drive(make(space, 7), self.budget)
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    def test_different_seed_differs(self, make, space):
        a = self.drive(make(space, 1), self.budget)
        b = self.drive(make(space, 2), self.budget)
        assert json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True)

    def test_results_out_of_order(self, make, space):
        s = make(space, 0)
        props = self.drive(s, self.budget, batch=4)
        assert len(props) > 0
        assert not s.pending
        assert sum(h['status'] == 'SUCCEEDED' for h in s.history) == len(props)

    def test_failed_trials_do_not_stop_the_search(self, make, space):
        s = make(space, 0)
        props = self.drive(s, self.budget, fail=lambda i: i % 3 == 1)
        assert len(props) == self.budget or s.done
        assert any(h['status'] == 'FAILED' for h in s.history)
        assert s.best() is not None

    def test_no_architecture_evaluated_twice(self, make, space):
        s = make(space, 0)
        self.drive(s, self.budget, batch=3)
        keys = [arch_key(h['architecture']) for h in s.history if h['status'] == 'SUCCEEDED']
        assert len(keys) == len(set(keys))

    def test_protocol_errors(self, make, space):
        s = make(space, 0)
        p = s.propose(0)
        assert p is not None
        with pytest.raises(StrategyError):
            s.propose(0)
        with pytest.raises(StrategyError):
            s.observe(99, {'default': 0.0})
        with pytest.raises(StrategyError):
            s.observe(0, {'val_acc': 0.5})  # no 'default'
        s.observe(0, self.metrics(s, p.architecture))
        with pytest.raises(StrategyError):
            s.observe(0, {'default': 0.0})

    def test_state_dict_round_trip(self, make, space):
        """A strategy restored mid-search (via JSON) continues exactly like the original."""
        a = make(space, 3)
        self.drive(a, self.budget // 2, batch=2)
        pending = a.propose(1000)
        state = json.loads(json.dumps(a.state_dict()))
        b = make(space, 99)
        b.load_state_dict(state)
        assert b.pending.keys() == a.pending.keys()
        if pending is not None:
            for s in (a, b):
                s.observe(1000, self.metrics(s, pending.architecture))
        rest_a = [None if (p := a.propose(2000 + i)) is None else p.to_dict() for i in range(3)]
        rest_b = [None if (p := b.propose(2000 + i)) is None else p.to_dict() for i in range(3)]
        assert rest_a == rest_b

    def test_decisions_depend_on_scores(self, make, space):
        """A strategy that ranks (``uses_scores``, the default) proposes differently when every score is
        turned around (1 - score); one that declares ``uses_scores = False`` (random, fixed lists)
        proposes exactly the same. So a ranking strategy's decisions really follow the scores (the
        mock gives every space informative ones) and a blind one's claim is checked too."""
        def inverted(strategy, architecture):
            m = dict(self.metrics(strategy, architecture))
            for key in ('default', 'val_acc'):   # the score and the accuracy some methods read (EAS)
                if key in m:
                    m[key] = 1.0 - float(m[key])
            return m
        a = make(space, 0)
        same = self.drive(a, self.budget)
        turned = drive(make(space, 0), self.budget, metrics=inverted)
        scores = [h['metrics']['default'] for h in a.history if h['status'] == 'SUCCEEDED']
        assert len(set(scores)) > 1, 'every architecture scored the same: nothing to rank'
        differs = json.dumps(same, sort_keys=True) != json.dumps(turned, sort_keys=True)
        assert differs == getattr(type(a), 'uses_scores', True), \
            f'{type(a).__name__}: uses_scores is {getattr(type(a), "uses_scores", True)}, proposals ' \
            f'{"differ" if differs else "are the same"} with the scores turned around'

    def test_state_survives_in_pending(self, make, space):
        """Pending proposals are kept in the state and are not proposed again after a restore."""
        a = make(space, 4)
        p = a.propose(0)
        assert p is not None
        b = make(space, 4)
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        q = b.propose(1)
        if q is not None:
            assert arch_key(q.architecture) != arch_key(p.architecture)
