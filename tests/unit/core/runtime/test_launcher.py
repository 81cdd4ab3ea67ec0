"""Warm trial launcher (issue 13 item 5): real server and client processes, a private NNI_XFER_HOME.

``python -m nni_xfer.launch --spec s.json`` must behave as ``python -m nni_xfer.trial --spec
s.json``: same final metrics (real training on a few digits), same failure line and exit code; a
killed server, one that dies mid-handshake or cannot start never fails a trial; a killed client
takes its trial with it; the client imports no torch. Every server a test starts is stopped by its
pid (the pid files under the private launcher folder).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.timeout(240)

TIMING = ('setup_seconds', 'trial_seconds', 'train_seconds', 'images_per_second')


def _spec(folder: Path, name: str, evaluator: str = 'mock', evaluator_args: dict | None = None,
          proposal_id: int = 3) -> Path:
    spec = {'space': 'simple_cnn', 'space_args': {'widths': [8, 16]},
            'architecture': {'width1': 8, 'depth1': 1, 'kernel1': 3, 'width2': 16, 'depth2': 1, 'kernel2': 3},
            'dataset': 'digits', 'dataset_args': {'limit_train': 64}, 'evaluator': evaluator,
            'evaluator_args': evaluator_args if evaluator_args is not None else {},
            'checkpoint_root': str(folder / f'ckpt-{name}'), 'experiment_id': 'launcher', 'proposal_id': proposal_id,
            'seed': 7}
    path = folder / f'{name}.json'
    path.write_text(json.dumps(spec))
    return path


def _env(home: Path, **extra: str) -> dict:
    env = dict(os.environ, NNI_XFER_HOME=str(home), OMP_NUM_THREADS='1', **extra)
    for name in [n for n in env if n.startswith('NNI_') and not n.startswith('NNI_XFER_')]:
        del env[name]
    return env


def _run(module: str, spec: Path, env: dict, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', module, '--spec', str(spec)], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def _final(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith('[final] ')]
    assert len(lines) == 1, out[-3000:]
    return json.loads(lines[0][len('[final] '):])


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def _pids(home: Path) -> dict[str, int]:
    out = {}
    for p in (home / 'launcher').glob('*.pid'):
        try:
            out[p.stem] = int(p.read_text())
        except (OSError, ValueError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(') ', 1)[1][0] != 'Z'
    except OSError:
        return False


def _stop_servers(home: Path, started: set[int]) -> None:
    """SIGTERM the servers this test started (pids from their pid files) and wait for them."""
    pids = set(_pids(home).values()) | started
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _server_log(home: Path) -> str:
    return ''.join(p.read_text() for p in sorted((home / 'launcher').glob('*.log')))


def _wait_for(predicate, timeout: float = 60.0, what: str = ''):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f'timed out waiting for {what}')


@pytest.fixture(scope='module')
def warm(tmp_path_factory):
    """One home and one server for the module's tests that need a running server."""
    folder = tmp_path_factory.mktemp('launcher')
    home = folder / 'home'
    started: set[int] = set()
    yield {'folder': folder, 'home': home, 'env': _env(home), 'started': started}
    _stop_servers(home, started)


@pytest.mark.slow
def test_racing_clients_one_server_same_metrics_as_a_direct_trial(warm):
    """Two clients start together on a cold machine: one server; both trials (real training on 64
    digits) report the final metrics of ``python -m nni_xfer.trial``; a third uses the warm server."""
    folder, env = warm['folder'], warm['env']
    spec = _spec(folder, 'train', 'train', {'epochs': 1, 'batch_size': 16})
    direct = _run('nni_xfer.trial', spec, env, folder)
    assert direct.returncode == 0, direct.stderr[-3000:]
    procs = [subprocess.Popen([sys.executable, '-m', 'nni_xfer.launch', '--spec', str(spec)], cwd=str(folder),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    warm['started'].update(_pids(warm['home']).values())
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert 'without the launcher' not in err, err[-2000:]
        assert _without_timing(_final(out)) == _without_timing(_final(direct.stdout))
    assert len(_pids(warm['home'])) == 1, 'two racing clients must end with one server'
    again = _run('nni_xfer.launch', spec, env, folder)
    assert again.returncode == 0 and _without_timing(_final(again.stdout)) == _without_timing(_final(direct.stdout))
    log = _server_log(warm['home'])
    assert log.count(' for client ') == 3, log[-3000:]  # all three trials were forked by the server
    assert 'listening on' in log


def test_failing_trial_same_line_and_exit_code(warm):
    folder, env = warm['folder'], warm['env']
    spec = _spec(folder, 'fail', 'mock', {'fail_on': [3]})
    direct = _run('nni_xfer.trial', spec, env, folder)
    warm_run = _run('nni_xfer.launch', spec, env, folder)
    line = 'nni-xfer trial failed: RuntimeError: mock evaluator: proposal 3 is set to fail (fail_on)'
    assert direct.returncode == warm_run.returncode == 1
    assert direct.stderr.strip().splitlines()[-1] == warm_run.stderr.strip().splitlines()[-1] == line
    assert 'Traceback (most recent call last)' in warm_run.stderr  # the trial's stderr as before
    bad = _run('nni_xfer.launch', folder / 'missing.json', env, folder)  # a ConfigError-free failure
    assert bad.returncode == 1 and "No such file or directory: '" in bad.stderr.splitlines()[-1]
    usage = subprocess.run([sys.executable, '-m', 'nni_xfer.launch', '--bogus'], cwd=str(folder), env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and 'unrecognized arguments: --bogus' in usage.stderr  # argparse, as direct


def test_signals_are_forwarded_and_a_killed_client_takes_its_trial(warm):
    folder, env = warm['folder'], warm['env']
    spec = _spec(folder, 'slow', 'mock', {'sleep': 60})
    # (signal, the client's exit code, seconds after the server started the trial); a delay of 0 hits
    # the moment the client may not have the trial's pid yet: kept, then forwarded
    for sig, expect, delay in ((signal.SIGTERM, 128 + signal.SIGTERM, 0.0), (signal.SIGTERM, 128 + signal.SIGTERM, 0.5),
                               (signal.SIGINT, 128 + signal.SIGINT, 0.5), (signal.SIGKILL, -signal.SIGKILL, 0.5)):
        before = _server_log(warm['home']).count(' for client ')
        client = subprocess.Popen([sys.executable, '-m', 'nni_xfer.launch', '--spec', str(spec)], cwd=str(folder),
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = _wait_for(lambda: re.findall(rf'pid (\d+) for client {client.pid} ', _server_log(warm['home'])),
                         what='the trial to start')
        child = int(line[0])
        assert _server_log(warm['home']).count(' for client ') == before + 1
        time.sleep(delay)  # 0.5: the trial is (most likely) inside the evaluator's sleep
        client.send_signal(sig)
        out, err = client.communicate(timeout=30)
        assert client.returncode == expect, (sig, client.returncode, err[-2000:])
        _wait_for(lambda: not _alive(child), timeout=5, what=f'trial {child} to end after {sig!r}')
        if sig == signal.SIGINT:
            assert 'KeyboardInterrupt' in err  # the trial's own traceback, as a direct run prints it


def test_process_titles_and_a_quiet_status(warm):
    """``ps`` tells the server (``nni-xfer launcher <key>``) from its trials (``nni-xfer trial <NNI
    trial id>``); ``launcher status`` finds the server by its title and leaves no line in its log."""
    folder, env = warm['folder'], dict(warm['env'], NNI_TRIAL_JOB_ID='Ab3dE')
    spec = _spec(folder, 'titled', 'mock', {'sleep': 30})
    client = subprocess.Popen([sys.executable, '-m', 'nni_xfer.launch', '--spec', str(spec)], cwd=str(folder),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _wait_for(lambda: re.findall(rf'pid (\d+) for client {client.pid} ', _server_log(warm['home'])),
                         what='the trial to start')
        child = int(line[0])
        warm['started'].update(_pids(warm['home']).values())
        server = int(Path(f'/proc/{child}/stat').read_text().rsplit(') ', 1)[1].split()[1])  # its parent
        status = subprocess.run([sys.executable, '-m', 'nni_xfer.runtime.warm_server', 'status', '--all'], cwd=str(folder),
                                env=warm['env'], capture_output=True, text=True, timeout=60)
        info, = [i for i in map(json.loads, status.stdout.splitlines()) if i['pid'] == server]
        assert info['running'] and info['listening'], status.stdout + status.stderr

        def cmdline(pid: int) -> str:
            return Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode().strip()
        assert cmdline(info['pid']) == f'nni-xfer launcher {info["key"]}'
        assert _pids(warm['home'])[info['key']] == info['pid']
        _wait_for(lambda: cmdline(child) == 'nni-xfer trial Ab3dE', timeout=10,
                  what=f'the trial title (now {cmdline(child)!r})')
    finally:
        client.send_signal(signal.SIGTERM)
        client.communicate(timeout=30)
    assert 'rejected a request' not in _server_log(warm['home'])


def test_thin_client_imports_no_torch(tmp_path):
    """The client module, and a whole client run (through the server), never import torch or NNI."""
    code = ('import sys; import nni_xfer.launch; '
            'print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "nni", "numpy", "torchvision"}))')
    p = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == '[]', p.stdout + p.stderr
    run = ('import atexit, runpy, sys\n'
           'marker = sys.argv[2]\n'
           'def report():\n'
           '    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "nni", "numpy", "torchvision"})\n'
           '    open(marker, "w").write(repr(heavy))\n'
           'atexit.register(report)  # not run if the client fell back to exec-ing the trial\n'
           'sys.argv = ["nni_xfer.launch", "--spec", sys.argv[1]]\n'
           'runpy.run_module("nni_xfer.launch", run_name="__main__", alter_sys=True)\n')
    marker = tmp_path / 'modules.txt'
    spec = _spec(tmp_path, 'mock')
    home = tmp_path / 'home'
    try:
        p = subprocess.run([sys.executable, '-c', run, str(spec), str(marker)], cwd=str(tmp_path), env=_env(home),
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr[-3000:]
        assert marker.read_text() == '[]'
        assert ' for client ' in _server_log(home)  # it went through a server
    finally:
        _stop_servers(home, set())


@pytest.mark.slow
def test_dead_or_broken_server_never_fails_a_trial(tmp_path):
    """A server killed mid-trial (the trial still reports), a stale socket (a new server starts), a
    server that dies mid-handshake and one that cannot start (the client runs the trial itself), and
    the idle exit (socket and pid file removed)."""
    home = tmp_path / 'home'
    env = _env(home, NNI_XFER_LAUNCHER_IDLE='4')
    ok = _spec(tmp_path, 'ok')
    slow = _spec(tmp_path, 'slow2', 'mock', {'sleep': 3})
    expected = _without_timing(_final(_run('nni_xfer.trial', ok, env, tmp_path).stdout))
    started: set[int] = set()
    try:
        first = _run('nni_xfer.launch', ok, env, tmp_path)
        assert first.returncode == 0 and _without_timing(_final(first.stdout)) == expected, first.stderr[-2000:]
        (key, server), = _pids(home).items()
        started.add(server)
        # killed while a trial runs: the trial finishes and its client gets the exit code from the trial
        client = subprocess.Popen([sys.executable, '-m', 'nni_xfer.launch', '--spec', str(slow)], cwd=str(tmp_path),
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: f'for client {client.pid} ' in _server_log(home), what='the slow trial to start')
        os.kill(server, signal.SIGKILL)
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0 and _final(out)['default'] == expected['default'], err[-2000:]
        _wait_for(lambda: not _alive(server), timeout=5, what='the killed server to go')
        sock = home / 'launcher' / f'{key}.sock'
        assert sock.exists()  # stale: nobody listens
        # stale socket: the next client starts a new server
        again = _run('nni_xfer.launch', ok, env, tmp_path)
        assert again.returncode == 0 and _without_timing(_final(again.stdout)) == expected, again.stderr[-2000:]
        assert 'without the launcher' not in again.stderr
        new = _pids(home)[key]
        started.add(new)
        assert new != server
        # idle for NNI_XFER_LAUNCHER_IDLE seconds: the server exits and removes its socket and pid file
        _wait_for(lambda: not _alive(new), timeout=30, what='the idle server to exit')
        assert not sock.exists() and key not in _pids(home)
        assert 'idle for 4 s: exiting' in _server_log(home)

        # a "server" that accepts the connection and closes it mid-handshake: the trial runs directly
        sock.parent.mkdir(parents=True, exist_ok=True)
        fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        short = len(str(sock)) < 100
        address = str(sock) if short else f'/proc/self/fd/{os.open(sock.parent, os.O_RDONLY)}/{sock.name}'
        fake.bind(address)
        fake.listen(4)

        def close_after_reading():
            conn, _ = fake.accept()
            conn.recv(16)
            conn.close()
        t = threading.Thread(target=close_after_reading, daemon=True)
        t.start()
        broken = _run('nni_xfer.launch', ok, env, tmp_path)
        t.join(10)
        fake.close()
        assert broken.returncode == 0 and _without_timing(_final(broken.stdout)) == expected
        assert 'failed before the trial started' in broken.stderr and 'without the launcher' in broken.stderr
        os.unlink(sock)
        # a server that cannot start (a preload typo): the client runs the trial itself
        typo = _run('nni_xfer.launch', ok, dict(env, NNI_XFER_LAUNCHER_PRELOAD='no_such_module_xyz'), tmp_path)
        assert typo.returncode == 0 and _without_timing(_final(typo.stdout)) == expected
        assert 'no launcher server' in typo.stderr and 'exited with 1 while starting' in typo.stderr
        assert "NNI_XFER_LAUNCHER_PRELOAD: no module named 'no_such_module_xyz'" in _server_log(home)
        # switched off: no server at all
        off = _run('nni_xfer.launch', ok, dict(env, NNI_XFER_LAUNCHER='0'), tmp_path)
        assert off.returncode == 0 and off.stderr == '' and _without_timing(_final(off.stdout)) == expected
    finally:
        _stop_servers(home, started)


def test_example_local_configs_use_the_warm_launcher():
    """Issue 23: every shipped local exp.yml runs its trials through ``python -m nni_xfer.launch``
    (falls back to a direct trial; ``NNI_XFER_LAUNCHER=0`` or ``trialCommand: python -m nni_xfer.trial``
    switch it off); remote stays direct (opt-in) and Kubernetes direct (one pod per trial)."""
    import yaml
    for path in sorted(ROOT.glob('examples/**/*.yml')):
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict) or 'trialCommand' not in raw:
            continue
        command, platform = raw['trialCommand'], raw['trainingService']['platform']
        if 'trial-in-container' in command:
            continue
        expected = 'nni_xfer.launch' if platform == 'local' else 'nni_xfer.trial'
        assert command.split()[-1] == expected, (str(path.relative_to(ROOT)), command)
