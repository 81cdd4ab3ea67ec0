"""Thin client of the warm trial launcher: ``python -m nni_xfer.launch`` as NNI's ``trialCommand``.

It runs the same trial as ``python -m nni_xfer.trial`` (same arguments), but in a process forked
from a per-machine server that has already imported torch, torchvision, NNI and nni-xfer
(:mod:`nni_xfer.runtime.warm_server`), so a trial does not pay those imports. The client hands the server its
environment, working directory, arguments and standard streams (file descriptors, ``SCM_RIGHTS``),
forwards SIGTERM/SIGINT/SIGHUP/SIGUSR1/SIGUSR2 to the trial, and exits with the trial's exit code
(``128 + N`` when the trial died of signal ``N``). When the client dies (NNI kills a cancelled
trial with SIGKILL after SIGINT), the server kills the trial.

The server starts on demand (detached, log under ``$NNI_XFER_HOME/launcher/``) and exits when idle.
Whenever no server can be reached or started, or it dies before the trial started, the client
``exec``\\ s ``python -m nni_xfer.trial`` with the same arguments: a missing or broken server never
fails a trial. ``NNI_XFER_LAUNCHER=0`` always runs the trial directly.

This module imports the standard library only (``python -X importtime -m nni_xfer.launch``):
its package ``__init__`` is a few lines of ``os``.

Settings (environment):
    NNI_XFER_HOME               the launcher folder is ``$NNI_XFER_HOME/launcher`` (default ``~/.nni-xfer``)
    NNI_XFER_LAUNCHER           ``0``: no server, run the trial directly
    NNI_XFER_LAUNCHER_WAIT      seconds a client waits for a server to start (default 120)
    NNI_XFER_LAUNCHER_IDLE      seconds an idle server stays up (default 600)
    NNI_XFER_LAUNCHER_PRELOAD   extra modules the server imports (comma-separated)
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

#: Bumped when client and server stop understanding each other (part of the server key).
PROTOCOL = 1
TRIAL_MODULE = 'nni_xfer.runtime.trial'
SERVER_MODULE = 'nni_xfer.runtime.warm_server'
#: A server that found another one holding the lock exits with this code (EX_TEMPFAIL).
EXIT_ANOTHER_SERVER = 75

#: Environment variables read when a process starts (by Python, OpenMP, the loader, or the server's
#: imports): a server serves only clients that agree on all of them (they are part of its key).
LOAD_TIME_PREFIXES = ('PYTHON', 'LD_', 'OMP_WAIT_POLICY', 'GOMP_', 'KMP_', 'NNI_XFER_LEAN_IMPORTS',
                      'NNI_XFER_LAUNCHER_')
#: Variables a server must not start with: per trial (NNI sets them for each trial; a child gets the
#: client's), or read by the first use of a library, which happens in the child.
PER_TRIAL_ENV = ('CUDA_VISIBLE_DEVICES', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'SDK_PROCESS', 'MULTI_PHASE',
                 'REUSE_MODE')
FORWARDED_SIGNALS = ('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2')
#: Unix socket paths are limited to 108 bytes; longer ones are reached through /proc/self/fd.
_MAX_SOCKET_PATH = 100


def _number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def enabled(env: dict | None = None) -> bool:
    """Whether a client uses the server (``NNI_XFER_LAUNCHER=0`` or lean imports off: direct trial)."""
    env = os.environ if env is None else env
    off = ('0', 'false', 'no', 'off')
    return (env.get('NNI_XFER_LAUNCHER', '1').lower() not in off
            and env.get('NNI_XFER_LEAN_IMPORTS', '1').lower() not in off
            and sys.platform.startswith('linux') and hasattr(socket, 'send_fds'))  # fork, SO_PEERCRED, /proc


def launcher_dir(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    home = env.get('NNI_XFER_HOME') or os.path.join(os.path.expanduser('~'), '.nni-xfer')
    return os.path.join(home, 'launcher')


def trial_sys_path(cwd: str | None = None) -> list[str]:
    """``sys.path`` of ``python -m ...`` started in ``cwd`` with this interpreter and environment."""
    return [cwd or os.getcwd()] + sys.path[1:]


def code_stamp() -> list:
    """(file count, newest mtime) of the installed nni_xfer sources: an edited file means a new server."""
    pkg = sys.modules.get('nni_xfer')
    dirs: list[str] = []
    for entry in list(getattr(pkg, '__path__', [])):
        if os.path.isfile(os.path.join(entry, 'trial.py')):
            dirs.append(entry)
        else:  # the source tree's root mapped into the package (nni_xfer/__init__.py)
            dirs += [os.path.join(entry, sub) for sub in ('strategies', 'search_spaces')]
    count, newest = 0, 0.0
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            subdirs[:] = [d for d in subdirs if d != '__pycache__' and not d.startswith('.')]
            for name in files:
                if name.endswith('.py'):
                    try:
                        newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
                    except OSError:
                        continue
                    count += 1
    return [count, newest]


def server_key(cwd: str | None = None, env: dict | None = None) -> str:
    """One server per (user, interpreter, import path, load-time environment, nni_xfer sources)."""
    env = os.environ if env is None else env
    ident = {
        'protocol': PROTOCOL,
        'uid': os.getuid(),
        'python': sys.executable,
        'path': trial_sys_path(cwd),
        'env': sorted((k, v) for k, v in env.items() if k.startswith(LOAD_TIME_PREFIXES)),
        'code': code_stamp(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def paths(key: str, env: dict | None = None) -> dict[str, str]:
    """Files of the server ``key``: socket, life lock (held by the server), start lock, pid, log."""
    folder = launcher_dir(env)
    return {name: os.path.join(folder, f'{key}.{name}') for name in ('sock', 'lock', 'start', 'pid', 'log')}


def server_env(env: dict | None = None) -> dict:
    """The environment a server starts with: the client's without what NNI sets per trial."""
    env = dict(os.environ if env is None else env)
    for name in list(env):
        if (name.startswith('NNI_') and not name.startswith('NNI_XFER_')) or name in PER_TRIAL_ENV:
            del env[name]
    return env


class _Address:
    """A socket path usable with connect/bind: the path itself, or ``/proc/self/fd/N/name`` when it
    is longer than Unix sockets allow (``N`` an open descriptor of its folder)."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH and os.path.isdir('/proc/self/fd'):
            self.fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
            self.address = f'/proc/self/fd/{self.fd}/{os.path.basename(path)}'
        else:
            self.address = path

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> str:
        return self.address

    def __exit__(self, *exc) -> None:
        self.close()


def try_connect(path: str) -> socket.socket | None:
    """A connection to the server listening on ``path``; ``None`` when none listens there."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _Address(path) as address:
            s.connect(address)
        return s
    except OSError:
        s.close()
        return None


class _FileLock:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds."""

    def __init__(self, path: str, timeout: float):
        self.path, self.timeout, self.fd = path, timeout, -1

    def __enter__(self) -> '_FileLock':
        import fcntl
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise TimeoutError(f'{self.path} stayed locked for {self.timeout:.0f} s') from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the lock


def interpreter_flags() -> list[str]:
    """The interpreter options this client was started with (``python -X ... -m nni_xfer.launch``)."""
    argv = list(getattr(sys, 'orig_argv', []))
    for i in range(1, len(argv) - 1):
        if argv[i] == '-m' and argv[i + 1] in ('nni_xfer.launch', 'nni_xfer.runtime.warm_client'):
            return argv[1:i]
    return []


def start_server(key: str, cwd: str, wait: float) -> socket.socket:
    """Start the server ``key`` (one at a time: start lock) and connect to it once it listens."""
    import subprocess
    p = paths(key)
    with _FileLock(p['start'], wait):
        s = try_connect(p['sock'])  # another client started it while this one waited for the lock
        if s is not None:
            return s
        with open(p['log'], 'ab') as log:
            proc = subprocess.Popen(
                [sys.executable, *interpreter_flags(), '-m', SERVER_MODULE, 'serve', '--key', key],
                cwd=cwd, env=server_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            s = try_connect(p['sock'])
            if s is not None:
                return s
            code = proc.poll()
            if code is not None and code != EXIT_ANOTHER_SERVER:
                raise RuntimeError(f'the launcher server exited with {code} while starting (log: {p["log"]})')
            time.sleep(0.05)
        raise TimeoutError(f'no launcher server listening after {wait:.0f} s (log: {p["log"]})')


def connect(cwd: str) -> socket.socket:
    """A connection to this client's server, started if none listens."""
    folder = launcher_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    key = server_key(cwd)
    s = try_connect(paths(key)['sock'])
    if s is None:
        s = start_server(key, cwd, _number('NNI_XFER_LAUNCHER_WAIT', 120.0))
    return s


def _std_fds() -> tuple[list[int], list[int]]:
    """Descriptors 0, 1, 2 to hand over (``/dev/null`` for a closed one) and those opened here."""
    fds, opened = [], []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            fds.append(null)
            opened.append(null)
    return fds, opened


def send_request(s: socket.socket, args: list[str], cwd: str) -> None:
    payload = json.dumps({'protocol': PROTOCOL, 'argv': args, 'cwd': cwd, 'env': dict(os.environ),
                          'client_pid': os.getpid()}).encode()
    fds, opened = _std_fds()
    try:
        socket.send_fds(s, [struct.pack('!I', len(payload))], fds)
    finally:
        for fd in opened:
            os.close(fd)
    s.sendall(payload)


class Messages:
    """Newline-delimited JSON messages from the server (and from the trial itself)."""

    def __init__(self, s: socket.socket):
        self.s, self.buf = s, b''

    def next(self) -> dict | None:
        """The next message; ``None`` once the connection is closed."""
        while b'\n' not in self.buf:
            try:
                chunk = self.s.recv(4096)
            except ConnectionResetError:
                chunk = b''
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)


def exit_code(message: dict) -> int:
    """The client's exit code for the trial's end: its own code, or ``128 + N`` for signal ``N``."""
    if message.get('signal'):
        return 128 + int(message['signal'])
    return int(message.get('exit', 1))


class Forwarder:
    """Signal handlers of the client: signals that arrive while the request is out and the trial's
    pid unknown are kept, then sent on; once the trial runs, each goes to it (through the server,
    or directly when the server is gone)."""

    def __init__(self, s: socket.socket):
        self.s = s
        self.pid: int | None = None
        self.pending: list[int] = []
        self.signals = [getattr(signal, n) for n in FORWARDED_SIGNALS if hasattr(signal, n)]
        for signum in self.signals:
            signal.signal(signum, self.handle)

    def handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.pid is None:
            self.pending.append(signum)
        else:
            self.forward(signum)

    def forward(self, signum: int) -> None:
        try:
            self.s.sendall(json.dumps({'signal': signum}).encode() + b'\n')
        except OSError:  # the server is gone: signal the trial directly
            try:
                os.kill(self.pid, signum)
            except OSError:
                pass

    def started(self, pid: int) -> None:
        self.pid = pid
        while self.pending:
            self.forward(self.pending.pop(0))

    def restore(self) -> None:
        """Default handlers again; a signal kept meanwhile now acts on this process (as it would
        have on a trial run directly)."""
        for signum in self.signals:
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        for signum in self.pending:
            os.kill(os.getpid(), signum)


def wait_trial(messages: Messages) -> int:
    """Wait until the trial ends; its exit code."""
    while True:
        message = messages.next()
        if message is None:
            print('nni-xfer launch: the launcher server and the trial ended without an exit status',
                  file=sys.stderr, flush=True)
            return 1
        if 'exit' in message or 'signal' in message:
            return exit_code(message)


def run_direct(args: list[str], reason: str | None = None) -> None:
    """Replace this process by ``python -m nni_xfer.trial <args>`` (never returns)."""
    if reason:
        print(f'nni-xfer launch: {reason}; running the trial without the launcher', file=sys.stderr, flush=True)
    sys.stdout.flush()
    argv = [sys.executable, *interpreter_flags(), '-m', TRIAL_MODULE, *args]
    os.execv(sys.executable, argv)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not enabled():
        run_direct(args)
    try:
        cwd = os.getcwd()
        s = connect(cwd)
    except Exception as exc:  # noqa: BLE001 - any launcher problem: run the trial directly
        run_direct(args, f'no launcher server ({type(exc).__name__}: {exc})')
    messages = Messages(s)
    forwarder = Forwarder(s)
    try:
        send_request(s, args, cwd)
        started = messages.next()
        if started is None or 'pid' not in started:
            raise ConnectionError((started or {}).get('error', 'the server closed the connection'))
    except Exception as exc:  # noqa: BLE001 - died mid-handshake: the trial has not started
        s.close()
        forwarder.restore()
        run_direct(args, f'the launcher server failed before the trial started ({type(exc).__name__}: {exc})')
    forwarder.started(int(started['pid']))
    return wait_trial(messages)


if __name__ == '__main__':
    sys.exit(main())
