"""Strategy contract: a pure propose/observe (ask/tell) core that does not import NNI.

A strategy proposes architectures (samples of a search space, plus how to initialise them)
and observes their metrics as they arrive — out of order, some never (failed trials).
``state_dict`` / ``load_state_dict`` round-trip everything, RNG included, as JSON-safe data, so
a search resumes exactly. The NNI adapters (:mod:`nni_xfer.adapters.tuner` for ``nnictl``,
:mod:`nni_xfer.adapters.nas` for ``NasExperiment``) drive any strategy.

>>> from nni_xfer.strategy import SpaceInfo
>>> from nni_xfer.strategies.random import RandomStrategy
>>> s = RandomStrategy(SpaceInfo('toy', {}, {'a': [1, 2], 'b': [3, 4]}), seed=0)
>>> p = s.propose(0)
>>> sorted(p.architecture)
['a', 'b']
>>> s.observe(0, {'default': 0.5})
>>> s.best()[1]['default']
0.5
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError
from .store import arch_key

MODES = ('maximize', 'minimize')


@dataclass
class SpaceInfo:
    """What a strategy may know of a search space: its name, arguments and dimensions.

    ``dims`` maps each NNI mutable label to its list of choices (plain data); spaces whose
    samples are not fixed-size dicts (EAS's variable-length networks) add their own fields.
    """

    name: str
    args: dict = field(default_factory=dict)
    dims: dict[str, list] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # what non-categorical spaces tell about themselves

    def size(self) -> int:
        n = 1
        for choices in self.dims.values():
            n *= len(choices)
        return n


@dataclass
class StrategyContext:
    """What the experiment's ``classArgs`` say beyond the space, for strategies that read the
    knowledge store (transfer from earlier searches). A strategy whose ``__init__`` has a
    ``context`` parameter receives one; it is not a ``strategy_args`` key."""

    store: str | None = None          # classArgs.store (None: the default $NNI_XFER_HOME/store.db)
    dataset: str | None = None        # classArgs.dataset: the task being searched
    dataset_args: dict = field(default_factory=dict)


@dataclass
class Proposal:
    """One architecture to evaluate and how its weights start."""

    architecture: dict
    init: dict = field(default_factory=lambda: {'kind': 'fresh'})
    parent: int | None = None  # proposal id of the parent within the same search, if any
    meta: dict = field(default_factory=dict)  # 'evaluator_args': per-trial overrides (e.g. longer training)

    def to_dict(self) -> dict:
        return asdict(self)


class StrategyError(RuntimeError):
    """Misuse of the propose/observe protocol (unknown or repeated trial id)."""


class BaseStrategy:
    """Base class of every search strategy.

    Subclasses implement :meth:`_propose` and optionally :meth:`_observe`, :meth:`_fail`,
    :meth:`_state_dict`, :meth:`_load_state_dict`. Public methods check the protocol and
    delegate. Constructor keyword arguments are the strategy's ``strategy_args``; validate them
    in ``__init__`` and raise :class:`ConfigError` naming ``strategy_args.<key>``.
    """

    #: Metric key the strategy optimises and its direction.
    metric: ClassVar[str] = 'default'

    def __init__(self, space: SpaceInfo, seed: int = 0, mode: str = 'maximize'):
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError('seed', f'expected an integer, got {seed!r}')
        if mode not in MODES:
            raise ConfigError('mode', f'unknown mode {mode!r}', allowed=MODES)
        self.space = space
        self.seed = seed
        self.mode = mode
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.pending: dict[int, dict] = {}        # trial id -> proposal dict
        self.history: list[dict] = []             # {'id', 'architecture', 'metrics'|None, 'status', ...}
        self._seen: set[str] = set()              # arch keys proposed or evaluated

    # ---- public protocol ----
    def propose(self, trial_id: int) -> Proposal | None:
        """Next architecture for ``trial_id``; ``None`` when nothing (more) can be proposed."""
        trial_id = int(trial_id)
        if trial_id in self.pending or any(h['id'] == trial_id for h in self.history):
            raise StrategyError(f'trial id {trial_id} was already used')
        proposal = self._propose(trial_id)
        if proposal is None:
            return None
        self.pending[trial_id] = proposal.to_dict()
        self._seen.add(arch_key(proposal.architecture))
        return proposal

    def observe(self, trial_id: int, metrics: dict) -> None:
        """Record the final metrics of a proposed trial (any order)."""
        trial_id = int(trial_id)
        if trial_id not in self.pending:
            raise StrategyError(f'trial id {trial_id} is not pending (unknown or already finished)')
        if not isinstance(metrics, dict) or self.metric not in metrics:
            raise StrategyError(f'metrics of trial {trial_id} lack the {self.metric!r} key: {metrics!r}')
        proposal = self.pending.pop(trial_id)
        self.history.append({'id': trial_id, 'status': 'SUCCEEDED', 'metrics': metrics, **proposal})
        self._observe(trial_id, proposal, metrics)

    def fail(self, trial_id: int, reason: str | None = None) -> None:
        """Record that a proposed trial failed; its architecture may be proposed again."""
        trial_id = int(trial_id)
        if trial_id not in self.pending:
            raise StrategyError(f'trial id {trial_id} is not pending (unknown or already finished)')
        proposal = self.pending.pop(trial_id)
        self.history.append({'id': trial_id, 'status': 'FAILED', 'metrics': None, 'reason': reason, **proposal})
        self._seen.discard(arch_key(proposal['architecture']))
        self._fail(trial_id, proposal, reason)

    def is_pending(self, trial_id: int) -> bool:
        return int(trial_id) in self.pending

    @property
    def done(self) -> bool:
        """True once the strategy will never propose again (e.g. a finite space exhausted)."""
        return False

    def score(self, metrics: dict) -> float:
        """The objective as 'larger is better'."""
        v = float(metrics[self.metric])
        return v if self.mode == 'maximize' else -v

    def best(self) -> tuple[dict, dict] | None:
        """(architecture, metrics) of the best observed trial."""
        done = [h for h in self.history if h['status'] == 'SUCCEEDED']
        if not done:
            return None
        h = max(done, key=lambda h: self.score(h['metrics']))
        return h['architecture'], h['metrics']

    def seen(self, architecture: dict) -> bool:
        """Whether an architecture was already proposed (pending) or evaluated successfully."""
        return arch_key(architecture) in self._seen

    def state_dict(self) -> dict:
        """JSON-safe state, RNG included."""
        return {
            'class': type(self).__name__,
            'seed': self.seed,
            'mode': self.mode,
            'rng': self.rng.bit_generator.state,
            'pending': {str(k): v for k, v in self.pending.items()},
            'history': self.history,
            'extra': self._state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get('class') != type(self).__name__:
            raise StrategyError(f"state is of {state.get('class')!r}, not {type(self).__name__!r}")
        state = json.loads(json.dumps(state))  # detach and normalise (int keys become str)
        self.seed = state['seed']
        self.mode = state['mode']
        self.rng.bit_generator.state = state['rng']
        self.pending = {int(k): v for k, v in state['pending'].items()}
        self.history = state['history']
        self._seen = {arch_key(p['architecture']) for p in self.pending.values()}
        self._seen |= {arch_key(h['architecture']) for h in self.history if h['status'] == 'SUCCEEDED'}
        self._load_state_dict(state['extra'])

    # ---- hooks ----
    def _propose(self, trial_id: int) -> Proposal | None:
        raise NotImplementedError

    def _observe(self, trial_id: int, proposal: dict, metrics: dict) -> None:
        pass

    def _fail(self, trial_id: int, proposal: dict, reason: str | None) -> None:
        pass

    def _state_dict(self) -> dict:
        return {}

    def _load_state_dict(self, state: dict) -> None:
        pass

    # ---- helpers for subclasses ----
    def random_architecture(self) -> dict:
        """A uniform sample of ``space.dims`` drawn from the strategy's own RNG."""
        return {label: copy.deepcopy(choices[int(self.rng.integers(len(choices)))])
                for label, choices in self.space.dims.items()}


def check_int(value: Any, field: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """Validate an integer argument; raise a one-line :class:`ConfigError` naming ``field``
    (:func:`nni_xfer.errors.check_number`, the one validator of config numbers)."""
    from .errors import check_number
    return check_number(value, field, integer=True, minimum=minimum, allow_none=allow_none)
