"""Start, watch and stop real ``nnictl`` experiments (used by ``nni-xfer run`` and the integration tests)."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from ..runtime.known_warnings import quiet_env

from ..errors import XferError

TERMINAL = {'SUCCEEDED', 'FAILED', 'USER_CANCELED', 'SYS_CANCELED', 'EARLY_STOPPED'}


def nnictl(*args: str, timeout: int = 120, env: dict | None = None) -> str:
    exe = Path(sys.executable).parent / 'nnictl'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'nni.tools.nnictl.nnictl']
    out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                         env=quiet_env({**os.environ, **(env or {})}))  # no pkg_resources warning (known_warnings)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f'nnictl {" ".join(args)} failed ({out.returncode}):\n{text}')
    return re.sub(r'\x1b\[[0-9;]*m', '', text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on ``localhost:port`` (NNI's own test before it starts)."""
    with socket.socket() as s:
        s.settimeout(2.0)
        return s.connect_ex(('localhost', int(port))) == 0


class PortInUse(XferError, RuntimeError):
    """``nni-xfer run --port N`` where something (often another NNI experiment) already listens."""

    def __init__(self, port: int):
        super().__init__(f'port {port} is in use (another NNI experiment?); pass --port, '
                         f'e.g. --port {free_port()}')


def write_config(tmp: Path, *, max_trials: int = 3, epochs: int = 2, concurrency: int = 1,
                 platform: dict | None = None, strategy: str = 'random', evaluator: str = 'train',
                 evaluator_args: dict | None = None, python: str | None = None,
                 class_args: dict | None = None) -> tuple[Path, Path]:
    """An exp.yml under ``tmp`` with its own store, checkpoints and NNI working directory."""
    store = tmp / 'store.db'
    cfg = {
        'experimentName': 'nni-xfer integration test',
        'experimentWorkingDirectory': str(tmp / 'nni-experiments'),
        'searchSpace': {},
        'trialCommand': f'{python or sys.executable} -m nni_xfer.trial',
        'trialCodeDirectory': str(tmp),
        'trialConcurrency': concurrency,
        'maxTrialNumber': max_trials,
        'maxExperimentDuration': '20m',
        'tuner': {
            'className': 'nni_xfer.tuner.XferTuner',
            'codeDirectory': str(tmp),
            'classArgs': {
                'strategy': strategy, 'space': 'simple_cnn', 'dataset': 'digits',
                'dataset_args': {'val_size': 0.2},
                'evaluator': evaluator,
                'evaluator_args': evaluator_args if evaluator_args is not None else {'epochs': epochs},
                'seed': 0, 'store': str(store), 'checkpoint_root': str(tmp / 'checkpoints'),
            },
        },
        'trainingService': platform or {'platform': 'local', 'useActiveGpu': False},
    }
    cfg['tuner']['classArgs'].update(class_args or {})
    path = tmp / 'exp.yml'
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, store


def create(config: Path, port: int, env: dict | None = None) -> str:
    try:
        text = nnictl('create', '--config', str(config), '--port', str(port), env=env)
    except RuntimeError as exc:
        if f'Port {port} is not idle' in str(exc) or f'Port {port + 1} is not idle' in str(exc):
            raise PortInUse(port + (f'Port {port} is not idle' not in str(exc))) from None
        raise
    m = re.search(r'Experiment ID:\s*(\S+)', text)
    if not m:
        raise RuntimeError(f'no experiment id in nnictl output:\n{text}')
    return m.group(1)


def rest(port: int, path: str):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/nni/{path}', timeout=10) as r:
        return json.loads(r.read().decode())


def trials(port: int) -> list[dict]:
    return rest(port, 'trial-jobs')


def wait(port: int, until, timeout: float = 600, poll: float = 2.0):
    """Poll until ``until(status, trials)`` is true; return (status, trials)."""
    deadline = time.time() + timeout
    status, ts = None, []
    while time.time() < deadline:
        try:
            status = rest(port, 'check-status')
            ts = trials(port)
        except OSError:
            status, ts = None, []
        if status and status['status'] == 'ERROR':
            raise RuntimeError(f'experiment error: {status}')
        if status and until(status['status'], ts):
            return status['status'], ts
        time.sleep(poll)
    raise TimeoutError(f'experiment did not reach the condition in {timeout}s: {status}, '
                       f'{[(t["trialJobId"], t["status"]) for t in ts]}')


def search_over(status: str, ts: list[dict], max_trials: int = 0, search_finished: bool = False) -> bool:
    """Whether an experiment has nothing left to run: every trial ended and either NNI is DONE (or
    STOPPED), the budget is used (NO_MORE_TRIAL), or the strategy itself finished below the budget
    (``search_finished``: the tuner's mark in the knowledge store).

    NNI's TUNER_NO_MORE_TRIAL alone is not an end: NNI sets it whenever the tuner hands out fewer
    trials than asked, which a stateful strategy (EAT-NAS, NAO, EAS) does while it waits for a
    generation's results; the next proposal sets RUNNING again."""
    if status in ('DONE', 'STOPPED'):
        return True
    if not ts or not all(t['status'] in TERMINAL for t in ts):
        return False
    if status == 'NO_MORE_TRIAL':
        return not max_trials or len(ts) >= max_trials
    return status == 'TUNER_NO_MORE_TRIAL' and search_finished


def finished(max_trials: int, store: Any = None, experiment_id: str | None = None):
    """``wait`` condition: the budget of ``max_trials`` used and every trial ended, or (given the store
    and experiment) the strategy finished below it."""
    def cond(status: str, ts: list[dict]) -> bool:
        done = store is not None and experiment_id is not None and store.search_finished(experiment_id)
        return search_over(status, ts, max_trials, done)
    return cond


def final_metrics(trial: dict) -> dict | None:
    data = trial.get('finalMetricData') or []
    if not data:
        return None
    value = json.loads(data[0]['data'])
    return json.loads(value) if isinstance(value, str) else value


def run_experiment(config: Path, port: int = 8080, keep: bool = False, timeout: float = 6 * 3600,
                   store: str | None = None, id_file: str | None = None) -> int:
    """``nni-xfer run``: create the experiment, print progress, report, stop (unless ``keep``)."""
    from ..config import check_config
    notes: list[str] = []
    problems = check_config(config, notes)
    if problems:
        for p in problems:
            print(f'{config}: {p}')
        return 1
    for n in notes:   # e.g. the default dataset, when classArgs.dataset is not set
        print(f'{config}: {n}')
    if port_in_use(port):   # before anything is opened or created (NNI's own refusal is a traceback)
        print(f'nni-xfer: {PortInUse(port)}', file=sys.stderr)
        return 2
    raw = yaml.safe_load(Path(config).read_text())
    max_trials = int(raw.get('maxTrialNumber') or 0)
    tuner_args = (raw.get('tuner') or {}).get('classArgs') or {}
    # the store is checked (integrity, schema version, server reachable) before NNI creates anything:
    # a store that fails is one line and no experiment; --store reaches the tuner as NNI_XFER_STORE
    from ..store import ENV as STORE_ENV, KnowledgeStore
    kstore = KnowledgeStore(tuner_args.get('store') or store)
    t0 = time.time()
    exp = create(Path(config), port,
                 env={STORE_ENV: store} if store and not tuner_args.get('store') else None)
    print(f'experiment {exp} started; web portal http://127.0.0.1:{port}', flush=True)
    if id_file:
        Path(id_file).write_text(exp + '\n')
    seen: dict[str, str] = {}
    waited: dict[str, int] = {}
    rc = 0

    class SearchStopped(Exception):
        pass

    try:
        def progress(status: str, ts: list[dict]) -> bool:
            from ..runtime.trial import trial_failure
            for t in ts:
                if seen.get(t['trialJobId']) != t['status']:
                    m = final_metrics(t) if t['status'] in ('SUCCEEDED', 'FAILED') else None
                    extra = f" default={m['default']:.4f}" if m and 'default' in m else ''
                    if t['status'] == 'FAILED':  # the trial's own error, as the tuner stored it
                        reason = trial_failure(m) or next((e.error for e in kstore.evaluations(experiment_id=exp)
                                                           if e.trial_id == t['trialJobId'] and e.error), None)
                        waited[t['trialJobId']] = waited.get(t['trialJobId'], 0) + 1
                        if reason is None and waited[t['trialJobId']] < 3:
                            continue  # the tuner records it moments after NNI sees the exit
                        extra = f': {reason or "no error reported (see the trial log)"}'
                    seen[t['trialJobId']] = t['status']
                    print(f'[{time.time() - t0:7.1f}s] trial {t["trialJobId"]} {t["status"]}{extra}', flush=True)
            if kstore.experiment_errors(exp):  # the strategy failed: the search will not go on
                raise SearchStopped(kstore.experiment_errors(exp)[0])
            return search_over(status, ts, max_trials, kstore.search_finished(exp))
        try:
            _, ts = wait(port, progress, timeout=timeout, poll=2.0)
        except (SearchStopped, RuntimeError) as exc:  # RuntimeError: NNI says ERROR
            cause = (kstore.experiment_errors(exp) or [str(exc)])[0]
            print(f'experiment {exp} stopped with an error: {cause}', flush=True)
            print(f'(details: dispatcher.log and nnimanager.log under the experiment\'s log folder; '
                  f'nnictl log stderr {exp})', flush=True)
            return 1
        ok = sum(t['status'] == 'SUCCEEDED' for t in ts)
        print(f'finished: {ok}/{len(ts)} trials succeeded in {time.time() - t0:.1f}s', flush=True)
        rc = 0 if ok else 1
        from ..report import make_report
        result = make_report(kstore, exp, Path('nni-xfer-report') / exp)
        print(result.table, end='')  # names each plot once and the folder they are in
    finally:
        if keep:
            print(f'experiment {exp} kept running for the web portal; stop it with: nnictl stop {exp}')
        else:
            nnictl('stop', exp)
    return rc
