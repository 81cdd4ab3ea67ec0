"""The nnictl tuner under NNI 3.0's two dispatcher threads, for every registered strategy.

NNI delivers ``TrialEnd`` on its assessor worker thread and trial requests and results on its
default worker thread. These tests drive an :class:`~nni_xfer.tuner.XferTuner` the same way (two
real threads fed by queues, trials finishing in a pool) with each strategy's contract case, and
check that nothing crashes, every proposal ends exactly once, and the store agrees with the strategy.
"""
import queue
import random
import threading
import time
import zlib

import pytest

from nni import NoMoreTrialError

from nni_xfer.errors import ConfigError
from nni_xfer.registry import STRATEGIES
from nni_xfer.store import KnowledgeStore, arch_key
from nni_xfer.testing.quick import quick_class_args
from nni_xfer.testing.strategy_contract import contract_case
from nni_xfer.runtime.trial import failure_report
from nni_xfer.adapters.tuner import XferTuner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('one_torch_thread')]


def _generic_metrics(strategy, architecture):
    u = zlib.crc32(arch_key(architecture).encode()) / 0xFFFFFFFF
    return {'default': u, 'val_acc': u}


def _tuner(tmp_path, name, seed=0):
    """A tuner running strategy ``name`` on its contract case (declared by the strategy), or, for a
    strategy whose default case does not fit, on its quick nnictl configuration (a real space)."""
    common = dict(store=str(tmp_path / 'store.db'), checkpoint_root=str(tmp_path / 'ckpt'), seed=seed)
    case = contract_case(name)
    try:
        strategy = case.make(STRATEGIES.get(name), seed)
    except ConfigError:
        t = XferTuner(**quick_class_args(name, **common))
        case.metrics = _generic_metrics
    else:
        t = XferTuner(strategy='random', space='simple_cnn', dataset='digits', evaluator='mock', **common)
        t.strategy = strategy
        t.config.strategy = t.session.trial_args['strategy'] = name
    t.trial_lister = lambda: []
    return t, case


def _metrics(case, strategy, architecture):
    m = dict(case.metrics(strategy, architecture))
    m.setdefault('checkpoint', f'/nonexistent/{zlib.crc32(arch_key(architecture).encode())}.pt')
    m.setdefault('sha256', '0' * 64)
    m.setdefault('params', float(len(arch_key(architecture))))
    return m


class FakeNNI:
    """NNI's dispatcher threading: a default and an assessor worker, each draining its queue."""

    def __init__(self, tuner, case, budget, concurrency=3, seed=0):
        self.tuner, self.case, self.budget, self.concurrency = tuner, case, budget, concurrency
        self.default_q, self.assessor_q = queue.Queue(), queue.Queue()
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.next_param = 0
        self.submitted = 0
        self.running = 0
        self.finished = 0
        self.no_more = False
        self.errors = []
        self.trials = {}   # parameter id -> spec
        self.waiting = []  # parameters NNI got beyond maxTrialNumber: never started (as in NNI)
        self.enqueued = 0
        self.done = 0

    def send_later(self, param_id, params):  # NNI's st_callback
        self._launch(param_id, params)

    def _launch(self, param_id, spec):
        with self.lock:
            if self.submitted >= self.budget:
                self.waiting.append(spec)
                return
            self.trials[param_id] = spec
            self.submitted += 1
            self.running += 1
        threading.Thread(target=self._run_trial, args=(param_id, spec), daemon=True).start()

    def _run_trial(self, param_id, spec):
        """A trial: fails for 1 in 3 proposals; some failures report their error first, some die silently."""
        pid = spec['proposal_id']
        if pid % 3 == 1:
            if pid % 2:
                self.put(self.default_q, ('metric', (param_id, spec, failure_report(f'boom {pid}', pid), f'T{pid}')))
            self.put(self.assessor_q, ('end', (param_id, False)))
        else:
            m = _metrics(self.case, self.tuner.strategy, spec['architecture'])
            self.put(self.default_q, ('metric', (param_id, spec, m, f'T{pid}')))
            self.put(self.assessor_q, ('end', (param_id, True)))

    def put(self, q, item):
        with self.lock:
            self.enqueued += 1
        q.put(item)

    def request(self, n):
        self.put(self.default_q, ('request', n))

    def worker(self, q):
        while True:
            cmd, data = q.get()
            if cmd == 'stop':
                return
            try:
                if cmd == 'request':
                    ids = list(range(self.next_param, self.next_param + data))
                    self.next_param += data
                    params = self.tuner.generate_multiple_parameters(ids, st_callback=self.send_later)
                    for i, p in zip(ids, params):
                        self._launch(i, p)
                    if len(params) < len(ids):
                        self.no_more = True
                elif cmd == 'metric':
                    param_id, spec, value, tid = data
                    self.tuner.receive_trial_result(param_id, spec, value, trial_job_id=tid)
                elif cmd == 'end':
                    param_id, ok = data
                    self.tuner.trial_end(param_id, ok)
                    with self.lock:
                        self.running -= 1
                        self.finished += 1
                        room = min(self.concurrency - self.running, self.budget - self.submitted)
                    if room > 0:
                        self.request(room)
            except Exception as exc:  # noqa: BLE001 - what NNI's worker would die of
                self.errors.append(exc)
                return
            finally:
                with self.lock:
                    self.done += 1

    def run(self, timeout=60):
        threads = [threading.Thread(target=self.worker, args=(q,), daemon=True)
                   for q in (self.default_q, self.assessor_q)]
        for th in threads:
            th.start()
        self.request(self.concurrency)
        tick = threading.Event()
        quiet = 0
        for _ in range(int(timeout * 20)):
            with self.lock:
                idle = self.running == 0 and self.finished == self.submitted and self.done == self.enqueued
            stop = self.submitted >= self.budget or self.tuner._error or (self.no_more and not self.tuner._owed)
            quiet = quiet + 1 if idle and stop else 0
            if self.errors or quiet >= 4:  # quiet for 0.2 s: nothing in flight
                break
            tick.wait(0.05)
        for q in (self.default_q, self.assessor_q):
            q.put(('stop', None))
        for th in threads:
            th.join(5)


@pytest.mark.parametrize('name', STRATEGIES.names())
def test_two_nni_threads_every_strategy(tmp_path, monkeypatch, name):
    monkeypatch.setenv('NNI_EXP_ID', f'threads-{name}')
    tuner, case = _tuner(tmp_path, name)
    budget = max(case.budget, 9)
    nni = FakeNNI(tuner, case, budget)
    nni.run()
    assert not nni.errors, nni.errors
    assert tuner._error is None, tuner._error
    s = tuner.strategy
    assert nni.submitted >= budget or s.done or nni.no_more
    never_started = {spec['proposal_id'] for spec in nni.waiting}
    assert set(s.pending) == never_started, 'a started trial never finished'
    ids = [h['id'] for h in s.history]
    assert len(ids) == len(set(ids)) == nni.submitted       # every started proposal ended exactly once
    evs = {e.proposal_id: e for e in KnowledgeStore(tmp_path / 'store.db').evaluations(
        experiment_id=f'threads-{name}')}
    assert set(evs) == set(ids) | never_started
    assert all(evs[p].status == 'WAITING' for p in never_started)
    for h in s.history:
        e = evs[h['id']]
        assert e.status == h['status']
        if e.status == 'FAILED':
            if h['id'] % 2:  # reported its own error (before or after its trial end)
                assert e.error == f'boom {h["id"]}' and e.trial_id == f'T{h["id"]}', e
            else:
                assert 'without reporting an error' in e.error
        else:
            assert e.trial_id == f'T{h["id"]}'


def test_eas_concurrent_fail_and_propose(tmp_path, monkeypatch):
    """The crash of issue 16: a child's failure (assessor thread) finishing the episode while the
    default thread proposes. Each round starts both calls at the same instant."""
    monkeypatch.setenv('NNI_EXP_ID', 'eas-race')
    tuner, case = _tuner(tmp_path, 'eas')
    start = tuner.generate_parameters(0)
    tuner.receive_trial_result(0, start, _metrics(case, tuner.strategy, start['architecture']))
    n = tuner.strategy.networks_per_episode
    param = 1
    errors = []
    for round_ in range(20):
        children = []
        for _ in range(n):
            try:
                children.append((param, tuner.generate_parameters(param)))
            except NoMoreTrialError:
                break
            param += 1
        if not children:
            break
        for p, spec in children[:-1]:
            tuner.receive_trial_result(p, spec, _metrics(case, tuner.strategy, spec['architecture']))
        last, _ = children[-1]
        barrier = threading.Barrier(2)

        def fail():
            barrier.wait()
            tuner.trial_end(last, False)

        def propose():  # NNI asking again and again while the episode is being finished
            barrier.wait()
            t_end = time.time() + 2.0
            while time.time() < t_end and tuner._error is None:
                try:
                    tuner.generate_parameters(10_000 + round_)
                    return
                except NoMoreTrialError:
                    pass

        ths = [threading.Thread(target=f) for f in (fail, propose)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
        if tuner._error:
            errors.append(tuner._error)
            break
        # the proposal made by `propose` (if any) is the first child of the next episode
        for pid in sorted(tuner.strategy.pending):
            spec = tuner.store.get('eas-race', pid).spec
            tuner.receive_trial_result(20_000 + pid, spec, _metrics(case, tuner.strategy, spec['architecture']))
    assert not errors, errors
    st = tuner.strategy.st
    # one REINFORCE update per finished episode, never two
    assert len(st['log']) == st['episode'] >= 10
    assert [e['episode'] for e in st['log']] == list(range(len(st['log'])))
