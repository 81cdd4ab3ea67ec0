"""NNI tuner adapter: runs any registered strategy under ``nnictl``.

``exp.yml``::

    tuner:
      className: nni_xfer.tuner.XferTuner
      classArgs: {strategy: random, space: simple_cnn, dataset: digits, evaluator_args: {epochs: 5}}

or, after ``nni-xfer register``, ``tuner: {name: xfer_random, classArgs: {...}}`` (the strategy
is then fixed by the name). Every proposal and result is written to the knowledge store as it
happens, with the strategy's state, so a killed dispatcher loses nothing and ``nnictl resume``
continues without proposing an evaluated architecture again.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from nni import NoMoreTrialError
from nni.tuner import Tuner

from .config import build, validate_class_args
from .errors import ConfigError
from .spec import TrialSpec
from .store import KnowledgeStore

_logger = logging.getLogger('nni_xfer.tuner')


def _experiment_id() -> str:
    """The NNI experiment id in the dispatcher process.

    NNI gives the dispatcher no id variable; its log and checkpoint directories are
    ``<experiments root>/<experiment id>/{log,checkpoint}``.
    """
    for var in ('NNI_EXP_ID', 'NNI_LOG_DIRECTORY', 'NNI_CHECKPOINT_DIRECTORY'):
        value = os.environ.get(var)
        if value:
            return value if var == 'NNI_EXP_ID' else os.path.basename(os.path.dirname(os.path.normpath(value)))
    return 'standalone'


class XferTuner(Tuner):
    """Drives a :class:`~nni_xfer.strategy.BaseStrategy` from NNI's dispatcher."""

    fixed_strategy: str | None = None

    def __init__(self, **class_args: Any):
        built = build(class_args, self.fixed_strategy)  # raises before any trial on bad config
        self.config = built.config
        self.space_info = built.space_info
        self.strategy = built.strategy
        self.experiment_id = _experiment_id()
        self.store = KnowledgeStore.resolve(self.config.store)
        state = self.store.strategy_state(self.experiment_id)
        self.resumed = state is not None
        if state is not None:
            self.strategy.load_state_dict(state)
            _logger.info('resumed strategy %s of experiment %s: %d evaluated, %d pending', self.config.strategy,
                         self.experiment_id, len(self.strategy.history), len(self.strategy.pending))
        ids = [h['id'] for h in self.strategy.history] + list(self.strategy.pending)
        self._next_id = max(ids) + 1 if ids else 0
        self._param_to_proposal: dict[int, int] = {}
        # Batch-synchronous strategies (EAS episodes) cannot propose while they wait for results.
        # NNI asks for trials only when trials end, so slots refused then would be lost and the
        # search would stall or shrink to one trial at a time. Those requests are kept here and
        # answered through NNI's send-later callback as soon as the strategy can propose again.
        self._owed: list[int] = []
        self._send_later = None
        self.store.record_experiment(self.experiment_id, strategy=self.config.strategy, space=self.config.space,
                                     dataset=self.config.dataset, config=dict(class_args))

    # ---- NNI Tuner interface ----
    def update_search_space(self, search_space: Any) -> None:
        """The space comes from ``classArgs.space``; NNI's ``searchSpace`` is not used."""

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict]:
        self._send_later = kwargs.get('st_callback') or self._send_later
        result = []
        for i, parameter_id in enumerate(parameter_id_list):
            try:
                result.append(self.generate_parameters(parameter_id, **kwargs))
            except NoMoreTrialError:
                if self.strategy.pending and not self.strategy.done and self._send_later is not None:
                    self._owed.extend(parameter_id_list[i:])
                break
        return result

    def _pay_owed(self) -> None:
        while self._owed and self._send_later is not None:
            try:
                params = self.generate_parameters(self._owed[0])
            except NoMoreTrialError:
                if not self.strategy.pending:  # nothing will unblock it: give the slots up
                    self._owed.clear()
                return
            self._send_later(self._owed.pop(0), params)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict:
        pid = self._next_id
        proposal = self.strategy.propose(pid)
        if proposal is None:
            raise NoMoreTrialError('strategy has nothing to propose now')
        self._next_id += 1
        self._param_to_proposal[int(parameter_id)] = pid
        cfg = self.config
        spec = TrialSpec.from_proposal(
            proposal, pid, experiment_id=self.experiment_id, strategy=cfg.strategy, space=cfg.space,
            dataset=cfg.dataset, evaluator=cfg.evaluator, seed=cfg.seed, space_args=cfg.space_args,
            dataset_args=cfg.dataset_args, evaluator_args=cfg.evaluator_args, mode=cfg.mode,
            checkpoint_root=cfg.checkpoint_root)
        d = spec.to_dict()
        parent = None if proposal.parent is None else {'experiment_id': self.experiment_id,
                                                        'parameter_id': proposal.parent}
        self.store.record_proposal(self.experiment_id, pid, architecture=proposal.architecture,
                                   strategy=cfg.strategy, space=cfg.space, dataset=cfg.dataset, parent=parent,
                                   init=proposal.init, spec=d, trial_id=kwargs.get('trial_job_id'))
        self._save_state()
        return d

    def receive_trial_result(self, parameter_id: int, parameters: dict, value: Any, **kwargs: Any) -> None:
        pid = self._proposal_id(parameter_id, parameters)
        metrics = value if isinstance(value, dict) else {'default': value}
        if pid is None or not self.strategy.is_pending(pid):
            _logger.warning('result for unknown or finished proposal %s ignored', pid)
            return
        self.strategy.observe(pid, metrics)
        self.store.record_result(self.experiment_id, pid, metrics, status='SUCCEEDED',
                                 trial_id=kwargs.get('trial_job_id') or metrics.get('trial_id'))
        self._save_state()
        self._pay_owed()

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        # NNI may deliver a successful trial's end before its final metric: only failures end a
        # proposal here; a success is completed by receive_trial_result.
        if success:
            return
        pid = self._param_to_proposal.pop(int(parameter_id), None)
        if pid is None or not self.strategy.is_pending(pid):
            return
        reason = 'trial failed (see its stderr in the web portal or trial log)'
        self.strategy.fail(pid, reason)
        self.store.record_result(self.experiment_id, pid, None, status='FAILED', error=reason)
        self._save_state()
        self._pay_owed()

    def import_data(self, data: list[dict]) -> None:
        """On ``nnictl resume``: results that arrived while the dispatcher was down."""
        for item in data or []:
            params = item.get('parameter') or {}
            pid = params.get('proposal_id')
            if pid is None or not self.strategy.is_pending(pid):
                continue
            value = item.get('value')
            if isinstance(value, str):
                import json
                try:
                    value = json.loads(value)
                except ValueError:
                    continue
            metrics = value if isinstance(value, dict) else {'default': value}
            self.strategy.observe(pid, metrics)
            self.store.record_result(self.experiment_id, pid, metrics, status='SUCCEEDED')
        self._save_state()

    def save_checkpoint(self) -> None:
        self._save_state()

    # ---- helpers ----
    def _proposal_id(self, parameter_id: int, parameters: Any) -> int | None:
        if isinstance(parameters, dict) and 'proposal_id' in parameters:
            pid = int(parameters['proposal_id'])
            self._param_to_proposal[int(parameter_id)] = pid
            return pid
        return self._param_to_proposal.get(int(parameter_id))

    def _save_state(self) -> None:
        self.store.save_strategy_state(self.experiment_id, self.strategy.state_dict())


class XferClassArgsValidator:
    """NNI's hook for ``tuner: {name: xfer_<strategy>}``: validates ``classArgs`` before launch."""

    fixed_strategy: str | None = None

    def validate_class_args(self, **kwargs: Any) -> None:
        errors, _ = validate_class_args(kwargs, self.fixed_strategy)
        if errors:
            raise ConfigError('classArgs', '; '.join(str(e) for e in errors))


def _fixed(name: str):
    """Per-strategy tuner and validator classes, e.g. ``nni_xfer.tuner.XferTuner_random``."""
    tuner = type(f'XferTuner_{name}', (XferTuner,), {'fixed_strategy': name, '__module__': __name__})
    validator = type(f'XferValidator_{name}', (XferClassArgsValidator,),
                     {'fixed_strategy': name, '__module__': __name__})
    return tuner, validator


def __getattr__(attr: str):  # PEP 562: classes for every registered strategy, made on demand
    for prefix, idx in (('XferTuner_', 0), ('XferValidator_', 1)):
        if attr.startswith(prefix):
            from .registry import STRATEGIES
            name = attr[len(prefix):]
            if name in STRATEGIES:
                cls = _fixed(name)[idx]
                globals()[attr] = cls
                return cls
    raise AttributeError(f'module {__name__!r} has no attribute {attr!r}')
