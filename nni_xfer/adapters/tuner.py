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

import json
import logging
import os
import signal
import threading
import urllib.request
from typing import Any

from nni import NoMoreTrialError
from nni.tuner import Tuner

from ..errors import ConfigError
from ..runtime.known_warnings import filter_known_warnings
from ..session import SearchSession, one_line
from ..spec import proposal_id_of

# Kept light on purpose: NNI gives the dispatcher 10 seconds from its start to connect, and it
# constructs the tuner before connecting. Under nnictl the heavy set-up (torch, the plugin
# registries, the space and the strategy) runs on a thread that starts in __init__ and every
# callback waits for it (see XferTuner._ready).

_logger = logging.getLogger('nni_xfer.adapters.tuner')


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


def _rest_base() -> str | None:
    """The NNI manager's REST API as seen from the dispatcher (always on the manager's machine).

    NNI gives the dispatcher ``NNI_TUNER_COMMAND_CHANNEL=ws://localhost:<port>[/<url prefix>]/tuner``.
    """
    url = os.environ.get('NNI_TUNER_COMMAND_CHANNEL') or ''
    if not url.startswith('ws://') or not url.endswith('/tuner'):
        return None
    return 'http://' + url[len('ws://'):-len('/tuner')] + '/api/v1/nni'


def nni_trial_jobs(timeout: float = 10.0) -> list[dict] | None:
    """The experiment's trials from the NNI manager's REST API; ``None`` if it cannot be reached."""
    base = _rest_base()
    if base is None:
        return None
    try:
        with urllib.request.urlopen(f'{base}/trial-jobs', timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (OSError, ValueError) as exc:
        _logger.warning('cannot list trials from the NNI manager at %s: %s', base, exc)
        return None


def nni_experiment_profile(timeout: float = 10.0) -> dict | None:
    """The experiment's profile (``params.maxTrialNumber`` ...) from the NNI manager's REST API;
    ``None`` if it cannot be reached (outside NNI)."""
    base = _rest_base()
    if base is None:
        return None
    try:
        with urllib.request.urlopen(f'{base}/experiment', timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (OSError, ValueError) as exc:
        _logger.warning('cannot read the experiment profile from the NNI manager at %s: %s', base, exc)
        return None


class BudgetSpent(NoMoreTrialError):
    """NNI's trial budget (``maxTrialNumber``) is spent: NNI would never run another proposal."""


def _proposal_of(trial: dict, experiment_id: str) -> int | None:
    """Proposal id carried in an NNI trial's hyper-parameters (our trial spec, with or without the
    portal summary: both keep ``proposal_id`` and ``experiment_id`` at the top)."""
    for hp in trial.get('hyperParameters') or []:
        try:
            packed = json.loads(hp) if isinstance(hp, str) else hp
        except ValueError:
            continue
        params = (packed or {}).get('parameters')
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError:
                continue
        if isinstance(params, dict) and 'proposal_id' in params and \
                params.get('experiment_id', experiment_id) == experiment_id:
            return int(params['proposal_id'])
    return None


def _crash_point() -> tuple[str, int] | None:
    """``NNI_XFER_CRASH_AT=proposal:<id>|result:<id>``: SIGKILL this dispatcher right after writing that
    proposal (before NNI receives it) or that result to the store. For kill/resume tests only."""
    value = os.environ.get('NNI_XFER_CRASH_AT', '')
    kind, _, num = value.partition(':')
    if kind in ('proposal', 'result') and num.strip().isdigit():
        return kind, int(num)
    return None


def _log_to_dispatcher_log() -> None:
    """NNI writes only its own ``nni`` logger to dispatcher.log: send ``nni_xfer`` there too."""
    nni_logger, ours = logging.getLogger('nni'), logging.getLogger('nni_xfer')
    for handler in nni_logger.handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
    if nni_logger.handlers:
        ours.setLevel(logging.INFO)
        ours.propagate = False


class XferTuner(Tuner):
    """Drives a :class:`~nni_xfer.strategy.BaseStrategy` from NNI's dispatcher.

    The search's bookkeeping (proposal ids, specs, store rows, artifacts, state, ``search_finished``,
    the error line) is the :class:`~nni_xfer.session.SearchSession` the ``NasExperiment`` adapter
    shares; this class is NNI's plumbing: callbacks, threads, NNI's parameter ids, resume, budget.

    NNI 3.0 calls ``trial_end`` on its assessor thread and the other callbacks on its default thread:
    every callback runs under one lock, so the strategy and the store are used by one thread at a
    time. An exception of the strategy (or the store) stops the search: its one-line cause goes to
    ``dispatcher.log``, to the knowledge store (``nni-xfer run`` prints it) and to the NNI manager,
    which puts the experiment in ERROR; no further trial is proposed.

    A trial that fails reports ``{'status': 'FAILED', 'error': <one line>, 'trial_id': ...}`` as its
    final result before it exits (NNI carries final results from every training service); the
    failed store row gets that line and the trial id.
    """

    fixed_strategy: str | None = None

    def __init__(self, **class_args: Any):
        if os.environ.get('SDK_PROCESS') == 'dispatcher':
            _log_to_dispatcher_log()
            filter_known_warnings()  # NNI's "Buffer is found to be not a nn.Module" (see known_warnings)
        self._lock = threading.RLock()
        self._error: str | None = None
        self._error_reported = False
        self._send_later = None
        self._setup_error: BaseException | None = None
        self.config = None
        self.experiment_id = _experiment_id()
        if os.environ.get('NNI_TUNER_COMMAND_CHANNEL') and os.environ.get('NNI_XFER_SYNC_SETUP') != '1':
            # inside NNI's dispatcher: connect first, set up meanwhile (bad config -> experiment ERROR
            # with the one-line cause, instead of "Tuner did not connect in 10 seconds")
            self._setup_thread: threading.Thread | None = threading.Thread(
                target=self._setup_in_background, args=(class_args,), name='nni-xfer-setup', daemon=True)
            self._setup_thread.start()
        else:
            self._setup_thread = None
            self._setup(class_args)  # raises before any trial on bad config

    def _setup_in_background(self, class_args: dict) -> None:
        try:
            self._setup(class_args)
        except BaseException as exc:  # noqa: BLE001 - reported on the first callback
            self._setup_error = exc
            _logger.error('nni-xfer: the tuner cannot start: %s', one_line(exc), exc_info=exc)

    def _ready(self) -> bool:
        """Wait for the set-up; ``False`` (and the experiment stopped with its cause) if it failed."""
        if self._setup_thread is not None:
            self._setup_thread.join()
            self._setup_thread = None
            if self._setup_error is not None and self._error is None:
                exc = self._setup_error
                self._error = one_line(f'nni-xfer: the tuner cannot start: {exc}' if isinstance(exc, ConfigError)
                                        else f'nni-xfer: the tuner cannot start: {type(exc).__name__}: {exc}')
        return self._setup_error is None

    def _setup(self, class_args: dict) -> None:
        from ..config import build
        from ..store import KnowledgeStore
        if os.environ.get('NNI_TUNER_COMMAND_CHANNEL'):
            # the dispatcher shares the machine with its trials: controllers (NAO, EAS) train tiny
            # models, one intra-op thread is faster than fighting the trials for every core
            import torch
            torch.set_num_threads(int(os.environ.get('NNI_XFER_TUNER_THREADS', '1')))
        built = build(class_args, self.fixed_strategy)
        self.config = built.config
        self.space_info = built.space_info
        self.space = built.space  # for the portal summary of each proposal (TrialSpec.to_parameters)
        self.experiment_id = _experiment_id()
        self.store = KnowledgeStore.resolve(self.config.store)
        cfg = self.config
        self.session = SearchSession(built.strategy, self.store, self.experiment_id, dict(
            strategy=cfg.strategy, space=cfg.space, dataset=cfg.dataset, evaluator=cfg.evaluator, seed=cfg.seed,
            space_args=cfg.space_args, dataset_args=cfg.dataset_args, evaluator_args=cfg.evaluator_args,
            mode=cfg.mode, checkpoint_root=cfg.checkpoint_root), space=self.space)
        self.resumed = self.session.resume()
        self._param_to_proposal: dict[int, int] = {}
        # Batch-synchronous strategies (EAS episodes) cannot propose while they wait for results.
        # NNI asks for trials only when trials end, so slots refused then would be lost and the
        # search would stall or shrink to one trial at a time. Those requests are kept here and
        # answered through NNI's send-later callback as soon as the strategy can propose again.
        self._owed: list[int] = []
        # After a resume: pending proposals NNI has no trial for (the dispatcher died before NNI got
        # them, or `nnictl stop` cancelled their trial) are sent again, same id and spec.
        self._reconciled = not self.resumed
        self._reissue: list[int] = []
        self.trial_lister = nni_trial_jobs  # replaceable in tests
        # NNI runs at most maxTrialNumber trials (those before a resume included); parameters handed out
        # beyond that are never run and would stay in the store as CANCELED proposals (issue 24)
        self.profile_reader = nni_experiment_profile  # replaceable in tests
        self._nni_trials_at_start: int | None = None   # NNI's trials when this dispatcher first answered
        self._handed_out = 0                            # parameter sets this dispatcher gave NNI
        self._crash_at = None if self.resumed else _crash_point()
        self.session.record_experiment(class_args)

    @property
    def strategy(self):
        """The search's strategy (its session's)."""
        return self.session.strategy

    @strategy.setter
    def strategy(self, strategy) -> None:
        self.session.strategy = strategy

    # ---- NNI Tuner interface (each under the lock) ----
    def update_search_space(self, search_space: Any) -> None:
        """The space comes from ``classArgs.space``; NNI's ``searchSpace`` is not used."""

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict]:
        with self._lock:
            self._send_later = kwargs.get('st_callback') or self._send_later
            self._ready()
            if self._error is not None:
                self._report_error()
                return []
            result = []
            for i, parameter_id in enumerate(parameter_id_list):
                try:
                    result.append(self._generate(parameter_id, kwargs.get('trial_job_id')))
                except NoMoreTrialError as exc:
                    if self._error is None and self.strategy.pending and not self.strategy.done \
                            and self._send_later is not None and not isinstance(exc, BudgetSpent):
                        self._owed.extend(parameter_id_list[i:])
                    break
            return result

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict:
        with self._lock:
            if not self._ready():
                self._report_error()
                raise NoMoreTrialError(self._error)
            return self._generate(parameter_id, kwargs.get('trial_job_id'))

    def receive_trial_result(self, parameter_id: int, parameters: dict, value: Any, **kwargs: Any) -> None:
        with self._lock:
            if not self._ready():
                return
            pid = self._proposal_id(parameter_id, parameters)
            self._result(pid, value, kwargs.get('trial_job_id'), 'receive_trial_result')

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        # NNI may deliver a successful trial's end before its final metric: only failures end a
        # proposal here; a success is completed by receive_trial_result. A failed trial normally
        # reported its own error first (see run_trial); this is for trials killed before they could.
        if success:
            return
        with self._lock:
            if not self._ready():
                return
            pid = self._param_to_proposal.pop(int(parameter_id), None)
            if pid is None or not self.strategy.is_pending(pid) or self._error is not None:
                return
            trial_id = self._trial_id_of(pid)
            reason = ('trial ended FAILED without reporting an error (killed, out of memory, or died '
                      'outside Python); see its stderr in the web portal or trial log')
            self._guard('trial_end', self._fail, pid, reason, trial_id)

    def import_data(self, data: list[dict]) -> None:
        """On ``nnictl resume``: results that arrived while the dispatcher was down, and results of
        trials NNI re-runs after a resume (NNI sends those here, not to ``receive_trial_result``)."""
        with self._lock:
            if not self._ready():
                return
            for item in data or []:
                params = item.get('parameter') or {}
                if isinstance(params, str):
                    try:
                        params = json.loads(params)
                    except ValueError:
                        continue
                pid = proposal_id_of(params)
                if pid is None:
                    continue
                self._result(pid, item.get('value'), item.get('trialJobId'), 'import_data')

    def save_checkpoint(self) -> None:
        with self._lock:
            if self._ready() and self._error is None:
                self._guard('save_checkpoint', self.session.save_state)

    def _on_exit(self) -> None:
        """The dispatcher stops (``nnictl stop``: NNI cancels running trials, never starts waiting ones).

        Proposals still pending were not evaluated: their rows get the final status CANCELED; they stay
        pending in the strategy's state, so ``nnictl resume`` evaluates them."""
        with self._lock:
            if not self._ready():
                return
            for pid in sorted(self.strategy.pending):
                ev = self.store.get(self.experiment_id, pid)
                if ev is not None and ev.status in ('WAITING', 'RUNNING'):
                    self.store.record_result(self.experiment_id, pid, None, status='CANCELED',
                                             error='not evaluated: the experiment stopped first (nnictl resume '
                                                   'evaluates it)')

    # ---- work (called with the lock held) ----
    def _generate(self, parameter_id: int, trial_id: str | None) -> dict:
        if self._error is not None:
            raise NoMoreTrialError(f'search stopped: {self._error}')
        if not self._reconciled:
            self._guard('resume', self._reconcile)
        left = self._budget_left()
        if left is not None and left <= 0:
            raise BudgetSpent("NNI's trial budget (maxTrialNumber) is spent")
        if self._reissue:
            pid = self._reissue.pop(0)
            ev = self.store.get(self.experiment_id, pid)
            if ev is not None and ev.spec and self.strategy.is_pending(pid):
                self._param_to_proposal[int(parameter_id)] = pid
                if ev.status == 'CANCELED':
                    self.store.reopen(self.experiment_id, pid)
                _logger.info('proposal %d sent again (NNI had no trial for it after the resume)', pid)
                self._handed_out += 1
                return self.session.parameters(ev.spec)
        d = self._guard('generate_parameters', self._propose, parameter_id, trial_id)
        if d is None:
            raise NoMoreTrialError('strategy has nothing to propose now' if self._error is None
                                   else f'search stopped: {self._error}')
        self._handed_out += 1
        return d

    def _budget_left(self) -> int | None:
        """How many more parameter sets NNI can still run: ``maxTrialNumber`` from the experiment profile
        (read each time: ``nnictl update trialnum`` changes it) less NNI's trials when this dispatcher
        first answered (after a resume: every earlier trial, cancelled ones included, as NNI counts them)
        less what this dispatcher handed out since. ``None`` outside NNI or without a limit."""
        if self._nni_trials_at_start is None:  # before this dispatcher's first parameters reach NNI
            trials = self.trial_lister()
            self._nni_trials_at_start = len(trials) if trials is not None else 0
        profile = self.profile_reader()
        limit = ((profile or {}).get('params') or {}).get('maxTrialNumber')
        if not isinstance(limit, int) or isinstance(limit, bool):
            return None
        return limit - self._nni_trials_at_start - self._handed_out

    def _propose(self, parameter_id: int, trial_id: str | None) -> dict | None:
        got = self.session.propose(trial_id)  # the store keeps the plain spec; NNI gets it with the portal summary
        if got is None:
            return None
        pid, spec = got
        self._param_to_proposal[int(parameter_id)] = pid
        self._maybe_crash('proposal', pid)
        return self.session.parameters(spec)

    def _result(self, pid: int | None, value: Any, trial_id: str | None, where: str) -> None:
        action, metrics, error, trial_id = self.session.classify(pid, value, trial_id)
        if action == 'late':
            self.session.late_result(pid, metrics, error, trial_id)
        elif action == 'fail':
            self._guard(where, self._fail, pid, error, trial_id)
        elif action == 'observe':
            self._guard(where, self._observe, pid, metrics, trial_id)

    def _observe(self, pid: int, metrics: dict, trial_id: str | None) -> None:
        self.session.observe(pid, metrics, trial_id)
        self._maybe_crash('result', pid)
        self._pay_owed()

    def _fail(self, pid: int, reason: str, trial_id: str | None) -> None:
        self.session.fail(pid, reason, trial_id)
        self._pay_owed()

    def _pay_owed(self) -> None:
        while self._owed and self._send_later is not None and self._error is None:
            try:
                params = self._generate(self._owed[0], None)
            except NoMoreTrialError as exc:
                if not self.strategy.pending or self._error is not None or isinstance(exc, BudgetSpent):
                    self._owed.clear()   # nothing will unblock it, or NNI would not run it
                return
            self._send_later(self._owed.pop(0), params)

    def _reconcile(self) -> None:
        """First request after ``nnictl resume``: find pending proposals NNI will never report on."""
        self._reconciled = True
        # A proposal written to the store but not to the strategy's state (killed in between) was
        # never sent to NNI: drop the row, the strategy proposes again from its saved state.
        known = set(self.strategy.pending) | {h['id'] for h in self.strategy.history}
        for ev in self.store.evaluations(experiment_id=self.experiment_id, status=('WAITING', 'RUNNING', 'CANCELED')):
            if ev.proposal_id not in known:
                self.store.delete_evaluation(self.experiment_id, ev.proposal_id)
                _logger.info('dropped proposal %d: written before the dispatcher died, never sent', ev.proposal_id)
        if not self.strategy.pending:
            return
        trials = self.trial_lister()
        if trials is None:
            _logger.warning('cannot see NNI trials after the resume; %d pending proposals wait for their results',
                            len(self.strategy.pending))
            return
        by_pid: dict[int, list[dict]] = {}
        for t in trials:
            pid = _proposal_of(t, self.experiment_id)
            if pid is not None:
                by_pid.setdefault(pid, []).append(t)
        for pid in sorted(self.strategy.pending):
            ts = by_pid.get(pid, [])
            live = [t for t in ts if t.get('status') in ('WAITING', 'RUNNING', 'UNKNOWN')]
            failed = [t for t in ts if t.get('status') == 'FAILED']
            if live:  # NNI runs it again under the same trial id; its result comes via import_data
                self.store.reopen(self.experiment_id, pid)
                self.store.set_trial_id(self.experiment_id, pid, live[-1].get('trialJobId'))
            elif failed:
                self._fail(pid, 'trial failed while the dispatcher was down (see its stderr)',
                           failed[-1].get('trialJobId'))
            else:  # never reached NNI, or its trial was cancelled by the stop: evaluate it (again)
                self._reissue.append(pid)
        if self._reissue:
            _logger.info('after the resume, proposals %s have no NNI trial and are sent again', self._reissue)

    def _trial_id_of(self, pid: int) -> str | None:
        trials = self.trial_lister()
        for t in trials or []:
            if _proposal_of(t, self.experiment_id) == pid:
                return t.get('trialJobId')
        return None

    def _guard(self, where: str, fn, *args):
        """Run strategy/store work; an exception stops the search with a one-line cause."""
        try:
            return fn(*args)
        except NoMoreTrialError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the search is fatal for it
            self._fatal(where, exc)
            return None

    def _fatal(self, where: str, exc: BaseException) -> None:
        self._error = self.session.fatal(where, exc)  # logged and recorded in the store
        self._owed.clear()
        self._report_error()

    def _report_error(self) -> None:
        """Tell the NNI manager (experiment -> ERROR; the cause is in nnimanager.log and dispatcher.log)."""
        if self._error_reported or self._error is None:
            return
        dispatcher = getattr(self._send_later, '__self__', None)
        if dispatcher is not None and hasattr(dispatcher, 'report_error'):
            dispatcher.report_error(self._error)
            self._error_reported = True

    def _maybe_crash(self, kind: str, pid: int) -> None:
        if self._crash_at == (kind, pid):
            _logger.warning('NNI_XFER_CRASH_AT=%s:%d: killing the dispatcher (test hook)', kind, pid)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    # ---- helpers ----
    def _proposal_id(self, parameter_id: int, parameters: Any) -> int | None:
        pid = proposal_id_of(parameters)
        if pid is not None:
            self._param_to_proposal[int(parameter_id)] = pid
            return pid
        return self._param_to_proposal.get(int(parameter_id))



class XferClassArgsValidator:
    """NNI's hook for ``tuner: {name: xfer_<strategy>}``: validates ``classArgs`` before launch."""

    fixed_strategy: str | None = None

    def validate_class_args(self, **kwargs: Any) -> None:
        from ..config import validate_class_args
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
            from ..registry import STRATEGIES
            name = attr[len(prefix):]
            if name in STRATEGIES:
                cls = _fixed(name)[idx]
                globals()[attr] = cls
                return cls
    raise AttributeError(f'module {__name__!r} has no attribute {attr!r}')
