"""Adapters for NNI's Python NAS API: ``NasExperiment(space, XferEvaluator(...), XferStrategy(...))``.

>>> # doctest: +SKIP
>>> from nni.nas.experiment import NasExperiment
>>> from nni_xfer.adapters.nas import XferEvaluator, XferStrategy, make_space
>>> space = make_space('simple_cnn', dataset='digits')
>>> exp = NasExperiment(space, XferEvaluator(dataset='digits', evaluator_args={'epochs': 3}),
...                     XferStrategy('random', seed=0))
>>> exp.config.max_trial_number = 4
>>> exp.run(port=8081)

Each model is evaluated by the same trial code as under ``nnictl`` (:func:`nni_xfer.runtime.trial.run_trial`),
and every evaluation lands in the knowledge store through the same
:class:`~nni_xfer.session.SearchSession` as under ``nnictl`` (rows, trial ids, ``search_finished``).
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from ..runtime.known_warnings import filter_known_warnings

# Before NNI's imports: its "... is found to be not a nn.Module" warnings, and the sequential engine's
# "`training_service` will be ignored" line NasExperiment logs 14 times (nni_xfer/runtime/known_warnings.py).
filter_known_warnings()

from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402
from nni.nas.execution.event import ModelEventType  # noqa: E402
from nni.nas.space import ModelStatus  # noqa: E402
from nni.nas.strategy import Strategy  # noqa: E402

from ..config import make_strategy  # noqa: E402
from ..errors import ConfigError  # noqa: E402
from ..registry import DATASETS, SEARCH_SPACES  # noqa: E402
from ..session import SearchSession  # noqa: E402
from ..space import DATASET_ARGS, space_info  # noqa: E402
from ..store import KnowledgeStore  # noqa: E402
from ..strategy import BaseStrategy  # noqa: E402
from ..runtime.trial import nas_evaluate, trial_failure  # noqa: E402

_logger = logging.getLogger('nni_xfer.adapters.nas')


def make_space(name: str, dataset: str = 'digits', dataset_args: dict | None = None, **space_args: Any):
    """A registered search space instantiated for a dataset."""
    from ..data.pipeline import dataset_info
    from ..space import build_space
    return build_space(name, space_args, dataset_info(dataset, **(dataset_args or {})))


class XferEvaluator(FunctionalEvaluator):
    """Evaluation settings for ``NasExperiment``: dataset, evaluator (``train`` | ``mock``) and their args."""

    def __init__(self, dataset: str = 'digits', evaluator: str = 'train', dataset_args: dict | None = None,
                 evaluator_args: dict | None = None, checkpoint_root: str | None = None):
        DATASETS.get(dataset, field='dataset')
        from ..training.evaluators import make_evaluator
        make_evaluator(evaluator, evaluator_args)  # validates the args (and evaluator_args.fault) now
        super().__init__(nas_evaluate, spec=None)
        self.dataset = dataset
        self.evaluator_name = evaluator
        self.dataset_args = dict(dataset_args or {})
        self.evaluator_args = dict(evaluator_args or {})
        self.checkpoint_root = checkpoint_root


def _space_name_and_args(space: Any) -> tuple[str, dict]:
    cls = type(space)
    name = next((e.name for e in SEARCH_SPACES.entries() if e.obj is cls), None)
    if name is None:
        raise ConfigError('model_space', f'{cls.__name__} is not a registered search space',
                          allowed=SEARCH_SPACES.names())
    kwargs = dict(getattr(space, 'trace_kwargs', {}) or {})
    return name, {k: v for k, v in kwargs.items() if k not in DATASET_ARGS}


class XferStrategy(Strategy):
    """Runs any registered nni-xfer strategy inside ``NasExperiment``.

    Args:
        strategy: a registered name or a :class:`~nni_xfer.strategy.BaseStrategy` instance.
        strategy_args: keyword arguments of a named strategy.
        seed, mode: as in ``classArgs``.
        store: knowledge store (``None``: the default path).
        experiment_id: id under which evaluations are stored (default: a fresh ``nas-...`` one). Give
            NNI's own, ``exp.id`` of the ``NasExperiment`` (or set ``strategy.experiment_id = exp.id``
            before ``exp.run()``), so the store, ``nni-xfer report`` and the portal use one id.
    """

    def __init__(self, strategy: str | BaseStrategy = 'random', strategy_args: dict | None = None, seed: int = 0,
                 mode: str = 'maximize', store: Any = None, experiment_id: str | None = None):
        super().__init__()
        self._strategy_spec = strategy
        self._strategy_args = dict(strategy_args or {})
        self.seed = seed
        self.mode = mode
        self.store = KnowledgeStore.resolve(store)
        self.experiment_id = experiment_id or f'nas-{uuid.uuid4().hex[:8]}'
        self.core: BaseStrategy | None = strategy if isinstance(strategy, BaseStrategy) else None
        self.session: SearchSession | None = None   # made in _initialize, when the space is known
        self._running: dict[int, int] = {}  # id(model) -> proposal id
        self._next_id = 0                           # a loaded state's, until the session exists
        # NNI calls _on_training_end from the engine's threads while _run proposes: one lock for the
        # core strategy and the store. A strategy exception stops the search (_run raises it).
        self._lock = threading.RLock()
        self._error: str | None = None

    def extra_repr(self) -> str:
        return f'strategy={self._strategy_spec!r}, seed={self.seed}'

    def _initialize(self, model_space, engine):
        evaluator = model_space.evaluator
        if not isinstance(evaluator, XferEvaluator):
            raise ConfigError('evaluator', 'NasExperiment needs an nni_xfer.adapters.nas.XferEvaluator with XferStrategy')
        self._evaluator = evaluator
        self._space_name, self._space_args = _space_name_and_args(model_space.model_space)
        info = space_info(self._space_name, self._space_args, model_space.model_space)
        if self.core is None:
            self.core = make_strategy(self._strategy_spec, info, self._strategy_args, seed=self.seed, mode=self.mode)
        name = self._strategy_spec if isinstance(self._strategy_spec, str) else type(self.core).__name__
        self._strategy_name = name
        self.session = SearchSession(self.core, self.store, self.experiment_id, dict(
            strategy=name, space=self._space_name, dataset=evaluator.dataset, evaluator=evaluator.evaluator_name,
            seed=self.seed, space_args=self._space_args, dataset_args=evaluator.dataset_args,
            evaluator_args=evaluator.evaluator_args, mode=self.mode, checkpoint_root=evaluator.checkpoint_root))
        self.session.next_id = self._next_id
        self.session.record_experiment({'strategy': name, 'strategy_args': self._strategy_args,
                                        'space': self._space_name, 'space_args': self._space_args,
                                        'dataset': evaluator.dataset, 'evaluator': evaluator.evaluator_name,
                                        'evaluator_args': evaluator.evaluator_args, 'seed': self.seed,
                                        'mode': self.mode})
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)

    def _run(self) -> None:
        assert self.core is not None and self.session is not None
        while self.wait_for_resource():
            with self._lock:
                self._raise_if_failed()
                try:
                    got = self.session.propose()   # row written, state saved (search_finished when done)
                except Exception as exc:
                    self._fatal('propose', exc)
                    raise
                pending = bool(self.core.pending)
            if got is None:
                if pending:
                    self.engine.wait_models()
                    with self._lock:
                        self._raise_if_failed()
                        if not self.core.pending:
                            continue
                break
            with self._lock:
                pid, spec = got
                model = self.model_space.freeze(spec['architecture'])
                model.evaluator = FunctionalEvaluator(nas_evaluate, spec=spec)
                self._running[id(model)] = pid
            self.engine.submit_models(model)
        self.engine.wait_models()
        with self._lock:
            self._raise_if_failed()

    def _on_training_end(self, event) -> None:
        with self._lock:
            pid = self._running.pop(id(event.model), None)
            if pid is None or self.core is None or not self.core.is_pending(pid) or self._error is not None:
                return
            final = event.model.metrics.final
            error = trial_failure(final)
            trial_id = final.get('trial_id') if isinstance(final, dict) else None
            try:
                if event.status == ModelStatus.Trained and final is not None and error is None:
                    # numbers only: the session adds the trial's artifacts (checkpoint, sha256, trial id)
                    self.session.observe(pid, final if isinstance(final, dict) else {'default': final}, trial_id)
                else:
                    self.session.fail(pid, error or f'model status {event.status}', trial_id)
            except Exception as exc:  # noqa: BLE001 - recorded; _run raises it in the strategy thread
                self._fatal('observe', exc)

    def _fatal(self, where: str, exc: BaseException) -> None:
        self._error = self.session.fatal(where, exc)  # logged and recorded in the store; the first one kept

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(self._error)

    def state_dict(self) -> dict:
        return {'core': self.core.state_dict() if self.core else None,
                'next_id': self.session.next_id if self.session else self._next_id, 'experiment_id': self.experiment_id}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.core is not None and state_dict.get('core'):
            self.core.load_state_dict(state_dict['core'])
        self._next_id = state_dict.get('next_id', 0)
        if self.session is not None:
            self.session.next_id = self._next_id
        self.experiment_id = state_dict.get('experiment_id', self.experiment_id)
