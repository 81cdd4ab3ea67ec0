"""One search session: what both NNI adapters do between a strategy and the knowledge store.

:class:`SearchSession` holds one experiment's strategy and store and does the bookkeeping the
``nnictl`` adapter (:class:`nni_xfer.tuner.XferTuner`) and the ``NasExperiment`` adapter
(:class:`nni_xfer.adapters.nas.XferStrategy`) share: numbering proposals (``proposal_id``), turning a
proposal into a trial spec, writing the proposal row (with its parent), merging a result with the
artifacts the trial wrote next to its checkpoint (checkpoint path, sha256, trial id), telling the
strategy, writing the result row (with the NNI trial id), saving the strategy's state and marking a
finished search (``search_finished``), and recording a fatal error. The adapters keep only NNI's
plumbing: callbacks and threads, NNI's parameter ids, resume reconciliation, budgets.

No NNI import here.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from .spec import TrialSpec, read_artifacts, with_artifacts
from .strategy import BaseStrategy

_logger = logging.getLogger('nni_xfer.session')


def one_line(text: Any, limit: int = 500) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = ' '.join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + '...'


class SearchSession:
    """A strategy's search, recorded in a knowledge store under ``experiment_id``.

    ``trial_args``: the :meth:`TrialSpec.from_proposal` keywords every proposal's spec gets
    (``strategy``, ``space``, ``dataset``, ``evaluator``, ``seed``, ``space_args``, ``dataset_args``,
    ``evaluator_args``, ``mode``, ``checkpoint_root``). ``space``: the built space, for the portal
    summary of NNI's parameters. Not thread-safe: an adapter calls it under its own lock.
    """

    def __init__(self, strategy: BaseStrategy, store: Any, experiment_id: str, trial_args: dict, space: Any = None):
        self.strategy = strategy
        self.store = store
        self.experiment_id = experiment_id
        self.trial_args = dict(trial_args)
        self.space = space
        self.error: str | None = None       # set once the search stopped on an error (see fatal)
        self.next_id = 0
        self._artifacts_warned = False

    # ---- start ----
    def record_experiment(self, config: dict) -> None:
        a = self.trial_args
        self.store.record_experiment(self.experiment_id, strategy=a.get('strategy'), space=a.get('space'),
                                     dataset=a.get('dataset'), config=dict(config))

    def resume(self) -> bool:
        """Load the strategy's saved state of this experiment, if any; ``True`` if there was one."""
        state = self.store.strategy_state(self.experiment_id)
        if state is not None:
            self.strategy.load_state_dict(state)
            _logger.info('resumed strategy %s of experiment %s: %d evaluated, %d pending',
                         self.trial_args.get('strategy'), self.experiment_id, len(self.strategy.history),
                         len(self.strategy.pending))
        self.sync_next_id()
        return state is not None

    def sync_next_id(self) -> None:
        """The next proposal id follows every id the strategy has used."""
        ids = [h['id'] for h in self.strategy.history] + list(self.strategy.pending)
        self.next_id = max(ids) + 1 if ids else 0

    # ---- proposals ----
    def propose(self, trial_id: str | None = None) -> tuple[int, dict] | None:
        """The next proposal as ``(proposal_id, plain spec dict)``, its row written and the strategy's
        state saved; ``None`` when the strategy has nothing to propose now (a finished strategy's
        search is marked ``search_finished``)."""
        pid = self.next_id
        proposal = self.strategy.propose(pid)
        if proposal is None:
            if self.strategy.done:
                self.store.record_search_finished(self.experiment_id)
            return None
        self.next_id += 1
        spec = TrialSpec.from_proposal(proposal, pid, experiment_id=self.experiment_id, **self.trial_args).to_dict()
        parent = None if proposal.parent is None else {'experiment_id': self.experiment_id,
                                                        'proposal_id': proposal.parent}
        a = self.trial_args
        self.store.record_proposal(self.experiment_id, pid, architecture=proposal.architecture,
                                   strategy=a.get('strategy'), space=a.get('space'), dataset=a.get('dataset'),
                                   parent=parent, init=proposal.init, spec=spec, trial_id=trial_id)
        self.save_state()
        return pid, spec

    def parameters(self, spec: dict) -> dict:
        """What NNI carries to the trial: the spec and its portal summary (``TrialSpec.to_parameters``),
        with the parent's NNI trial id from the store (the parent's result, which carries it, came first)."""
        s = TrialSpec.from_dict(spec)
        parent = None if s.parent is None else self.store.get(self.experiment_id, s.parent)
        return s.to_parameters(self.space, parent_trial=parent.trial_id if parent else None)

    # ---- results ----
    def with_artifacts(self, pid: int, metrics: dict) -> dict:
        """The trial's final result (under nnictl: :data:`~nni_xfer.spec.REPORTED_METRICS`) plus what it
        wrote next to its checkpoint (every numeric metric, checkpoint path, sha256, trial id, string
        results): what the strategy and the store get.

        The file is found from the spec (the checkpoint path is fixed at proposal time). A trial on a
        machine whose ``checkpoint_root`` this one does not see leaves no readable file: the strategy and
        the store then get only the reported metrics, the expected path and no sha256 (a warning says so
        once)."""
        if 'checkpoint' in metrics and 'sha256' in metrics:  # an older trial reported them itself
            return metrics
        ev = self.store.get(self.experiment_id, pid)
        if ev is None or not ev.spec:
            return metrics
        spec = TrialSpec.from_dict(ev.spec)
        artifacts = read_artifacts(spec, retries=0 if self._artifacts_warned else 3)
        if artifacts is None:
            if not self._artifacts_warned:
                self._artifacts_warned = True
                _logger.warning('cannot read %s (trial artifacts: every metric, checkpoint path and sha256): the '
                                'trial ran on a machine whose checkpoint_root this one does not see; set '
                                'checkpoint_root to storage both reach. Recording only the metrics the trial '
                                'reported (%s) and the expected path without a sha256.',
                                spec.artifacts_path(), ', '.join(map(str, metrics)))
            artifacts = {'checkpoint': str(spec.checkpoint_path()), 'sha256': None, 'proposal_id': pid}
        return with_artifacts(metrics, artifacts)

    def classify(self, pid: int | None, value: Any, trial_id: str | None) -> tuple[str, dict, str | None, str | None]:
        """A trial's final result as ``(action, metrics, error, trial_id)``: ``observe`` or ``fail`` for a
        pending proposal of a running search, otherwise what :meth:`late_result` records (``late``), or
        ``ignore``. ``value`` may be NNI's JSON string; a failed trial's report names its error."""
        from .runtime.trial import trial_failure
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        metrics = value if isinstance(value, dict) else {'default': value}
        trial_id = trial_id or metrics.get('trial_id')
        error = trial_failure(metrics)
        if pid is None:
            _logger.warning('result without a proposal id ignored: %s', one_line(metrics, 200))
            return 'ignore', metrics, error, trial_id
        if not self.strategy.is_pending(pid) or self.error is not None:
            return 'late', metrics, error, trial_id
        return ('fail' if error is not None else 'observe'), metrics, error, trial_id

    def late_result(self, pid: int, metrics: dict, error: str | None, trial_id: str | None) -> None:
        """A result for a proposal that is no longer pending, or after the search stopped: a failure's
        own reason and trial id (its trial's end came first), or a success after an error; else nothing."""
        if self.store.get(self.experiment_id, pid) is None:
            _logger.info('result for unknown proposal %s ignored', pid)
        elif error is not None:
            self.store.record_result(self.experiment_id, pid, None, status='FAILED', error=error, trial_id=trial_id)
        elif self.error is not None:
            self.store.record_result(self.experiment_id, pid, self.with_artifacts(pid, metrics), status='SUCCEEDED',
                                     trial_id=trial_id)
        else:
            _logger.info('result for finished proposal %s ignored', pid)

    def observe(self, pid: int, metrics: dict, trial_id: str | None = None) -> None:
        """A successful trial: artifacts merged, the strategy told, the row SUCCEEDED, the state saved."""
        metrics = self.with_artifacts(pid, metrics)
        trial_id = trial_id or metrics.get('trial_id')
        self.strategy.observe(pid, metrics)
        self.store.record_result(self.experiment_id, pid, metrics, status='SUCCEEDED', trial_id=trial_id)
        self.save_state()

    def fail(self, pid: int, reason: str, trial_id: str | None = None) -> None:
        """A failed trial: the strategy told, the row FAILED with the reason, the state saved."""
        self.strategy.fail(pid, reason)
        self.store.record_result(self.experiment_id, pid, None, status='FAILED', error=reason, trial_id=trial_id)
        self.save_state()

    def save_state(self) -> None:
        """The strategy's state in the store; a finished strategy's search marked ``search_finished``."""
        self.store.save_strategy_state(self.experiment_id, self.strategy.state_dict())
        if self.strategy.done:
            self.store.record_search_finished(self.experiment_id)

    # ---- errors ----
    def fatal(self, where: str, exc: BaseException) -> str:
        """Stop the search: the one-line cause is logged and recorded in the store (``nni-xfer run``
        prints it). Returns the line; only the first error is kept."""
        msg = one_line(f"nni-xfer: strategy {self.trial_args.get('strategy', '?')!r} failed in {where}: "
                       f'{type(exc).__name__}: {exc}')
        if self.error is None:
            self.error = msg
            _logger.error(msg, exc_info=exc)
            try:
                self.store.record_experiment_error(self.experiment_id, msg)
            except Exception as store_exc:  # noqa: BLE001
                _logger.error('cannot record the error in the knowledge store: %s', store_exc)
        return self.error
