"""kill -9 of the dispatcher, ``nnictl resume``, and the same search as an uninterrupted one.

For each stateful strategy: a real nnictl run (trialConcurrency 1, mock evaluator: the real trial
runner without training) whose dispatcher SIGKILLs itself at a point drawn from the strategy's
name (right after writing proposal k to the store, before NNI receives it, or right after
writing result k); then ``nnictl stop`` + ``nnictl resume`` to the end of the budget. The reference
is the same tuner and trial code run uninterrupted in this process. Compared: every proposal
(architecture, init, status, score), each evaluated exactly once with a final status, and the
strategy's final state (controller weights, population, RNG...).

A new stateful strategy is one more name in ``STATEFUL``.
"""
import json
import random
import re
import time

import pytest
from nni import NoMoreTrialError

from nni_xfer.adapters.experiments import finished, free_port, nnictl, rest, wait, write_config
from nni_xfer.store import KnowledgeStore
from nni_xfer.testing.quick import quick_class_args, stateful_strategies
from nni_xfer.runtime.trial import Reporter, error_line, failure_report, run_trial
from nni_xfer.adapters.tuner import XferTuner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

STATEFUL = stateful_strategies()  # every strategy whose quick_config says stateful: True
BUDGET = 7
VOLATILE = {'trial_seconds', 'setup_seconds', 'trial_id', 'train_seconds', 'images_per_second', 'sha256',
            'updated', 'created'}


class Quiet(Reporter):
    def intermediate(self, m):
        pass

    def final(self, m):
        pass


def crash_point(name):
    rng = random.Random(name)
    return f"{rng.choice(['proposal', 'result'])}:{rng.randint(2, BUDGET - 3)}"


def normalise(obj, exp):
    text = json.dumps(obj, sort_keys=True, default=str).replace(exp, 'EXP')

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in VOLATILE}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return strip(json.loads(text))


def reference(tmp_path, monkeypatch, args):
    """The uninterrupted search: same classArgs, trials run one at a time in this process."""
    monkeypatch.setenv('NNI_EXP_ID', 'reference')
    tuner = XferTuner(**{**args, 'store': str(tmp_path / 'reference.db')})
    for param in range(BUDGET):
        try:
            spec = tuner.generate_parameters(param)
        except NoMoreTrialError:
            break
        try:
            metrics = run_trial(spec, reporter=Quiet())
        except Exception as exc:  # noqa: BLE001 - a failing trial reports its error, as under NNI
            tuner.receive_trial_result(param, spec, failure_report(error_line(exc), spec['proposal_id']))
            tuner.trial_end(param, False)
            continue
        tuner.receive_trial_result(param, spec, metrics)
    monkeypatch.delenv('NNI_EXP_ID')
    return tuner.store, 'reference'


def dispatcher_gone(port):
    try:
        return rest(port, 'check-status')['status'] == 'ERROR'
    except OSError:
        return True


@pytest.mark.parametrize('name', STATEFUL)
def test_kill_dispatcher_then_resume_equals_uninterrupted(tmp_path, monkeypatch, name):
    args = quick_class_args(name, checkpoint_root=str(tmp_path / 'checkpoints'))
    ref_store, ref_exp = reference(tmp_path, monkeypatch, args)

    point = crash_point(name)
    config, store_path = write_config(tmp_path, max_trials=BUDGET, concurrency=1, evaluator=args['evaluator'],
                                      evaluator_args=args['evaluator_args'],
                                      class_args={**args, 'store': str(tmp_path / 'store.db')})
    port = free_port()
    text = nnictl('create', '--config', str(config), '--port', str(port), env={'NNI_XFER_CRASH_AT': point})
    exp = re.search(r'Experiment ID:\s*(\S+)', text).group(1)
    try:
        deadline = time.time() + 240
        while not dispatcher_gone(port) and time.time() < deadline:
            time.sleep(1)
        assert dispatcher_gone(port), f'the dispatcher did not die at {point}'
    finally:
        nnictl('stop', exp)
    port2 = free_port()
    nnictl('resume', exp, '--port', str(port2))
    try:
        # done: every trial ended and NNI has nothing left to run (DONE / NO_MORE_TRIAL at the budget,
        # or the strategy marked itself finished below it, e.g. a NAO round decoding fewer cells)
        _, ts = wait(port2, finished(BUDGET, KnowledgeStore(store_path), exp), timeout=300)
    finally:
        nnictl('stop', exp)

    store = KnowledgeStore(store_path)
    got = store.evaluations(experiment_id=exp)
    want = ref_store.evaluations(experiment_id=ref_exp)
    assert [e.status for e in got if e.status not in ('SUCCEEDED', 'FAILED', 'CANCELED')] == [], 'phantom'
    evaluated = [e for e in got if e.status in ('SUCCEEDED', 'FAILED')]
    keys = [json.dumps(e.architecture, sort_keys=True) for e in evaluated if e.status == 'SUCCEEDED']
    assert len(keys) == len(set(keys)), 'an architecture was evaluated twice'
    assert all(e.trial_id for e in evaluated), [(e.proposal_id, e.trial_id) for e in evaluated]
    assert {e.trial_id for e in evaluated} <= {t['trialJobId'] for t in ts}

    def rows(evs, x):
        return [normalise({'id': e.proposal_id, 'architecture': e.architecture, 'init': e.init,
                           'status': e.status, 'default': (e.metrics or {}).get('default')}, x)
                for e in evs if e.status in ('SUCCEEDED', 'FAILED')]
    assert rows(got, exp) == rows(want, ref_exp)          # nothing lost, nothing repeated, same order
    scores = [e.metrics['default'] for e in evaluated if e.status == 'SUCCEEDED']
    assert len(set(scores)) > 1, f'every architecture scored {scores[0]}: the strategy had nothing to rank'
    got_state = normalise(store.strategy_state(exp), exp)
    want_state = normalise(ref_store.strategy_state(ref_exp), ref_exp)
    for i, (g, w) in enumerate(zip(got_state['history'], want_state['history'])):
        diff = {k: (g.get(k), w.get(k)) for k in set(g) | set(w) if g.get(k) != w.get(k)}
        assert not diff, f'history[{i}] differs (resumed, uninterrupted): {diff}'
    assert got_state == want_state        # controller weights / population / RNG continue exactly


CONCURRENT = 'eatnas'   # the case: its initial population owes NNI slots while it waits


@pytest.mark.skipif(CONCURRENT not in STATEFUL, reason=f'{CONCURRENT} is not a stateful strategy')
def test_concurrency_2_kill_with_a_trial_running_then_resume_adds_no_row(tmp_path):
    """Issue 24 item 4: at trialConcurrency 2 the dispatcher dies while a trial runs (SIGKILL right after
    writing proposal 4, sent to pay a slot owed while the initial population trained), ``nnictl stop``,
    ``nnictl resume``. An uninterrupted run leaves exactly BUDGET rows, proposals 0..BUDGET-1, each
    evaluated once by its own NNI trial; so must this one: no proposal beyond NNI's budget (it stayed
    CANCELED, without a trial id)."""
    args = quick_class_args(CONCURRENT, checkpoint_root=str(tmp_path / 'checkpoints'))
    config, store_path = write_config(tmp_path, max_trials=BUDGET, concurrency=2, evaluator=args['evaluator'],
                                      evaluator_args=args['evaluator_args'],
                                      class_args={**args, 'store': str(tmp_path / 'store.db')})
    port = free_port()
    text = nnictl('create', '--config', str(config), '--port', str(port), env={'NNI_XFER_CRASH_AT': 'proposal:4'})
    exp = re.search(r'Experiment ID:\s*(\S+)', text).group(1)
    try:
        deadline = time.time() + 240
        while not dispatcher_gone(port) and time.time() < deadline:
            time.sleep(1)
        assert dispatcher_gone(port), 'the dispatcher did not die at proposal:4'
        running = [t['trialJobId'] for t in rest(port, 'trial-jobs') if t['status'] in ('WAITING', 'RUNNING')]
    finally:
        nnictl('stop', exp)
    port2 = free_port()
    nnictl('resume', exp, '--port', str(port2))
    try:
        _, ts = wait(port2, finished(BUDGET, KnowledgeStore(store_path), exp), timeout=300)
    finally:
        nnictl('stop', exp)
    assert exp not in nnictl('experiment', 'list'), 'experiment left running'
    rows = KnowledgeStore(store_path).evaluations(experiment_id=exp)
    table = [(e.proposal_id, e.status, e.trial_id) for e in rows]
    ran = {t['trialJobId'] for t in ts if t['status'] in ('SUCCEEDED', 'FAILED')}
    assert len(ts) == BUDGET, (running, [(t['trialJobId'], t['status']) for t in ts], table)
    assert [e.proposal_id for e in rows] == list(range(BUDGET - len([t for t in ts if t['status'] not in
                                                                      ('SUCCEEDED', 'FAILED')]))), table
    assert all(e.status in ('SUCCEEDED', 'FAILED') and e.trial_id for e in rows), table
    assert {e.trial_id for e in rows} == ran, (table, sorted(ran))
    keys = [json.dumps(e.architecture, sort_keys=True) for e in rows]
    assert len(keys) == len(set(keys)), 'an architecture was evaluated twice'
