"""Warm trial launcher (issue 13 item 5): the server behind ``python -m nni_xfer.launch``.

A fresh ``python -m nni_xfer.trial`` process spends seconds importing torch and NNI before its
first training step; for short trials (EAT-NAS and NAO children, mock searches) that is most of the
trial. A launcher server imports torch, torchvision, NNI's model-space classes and the nni-xfer trial
machinery once, then forks one child per trial request:

* one server per machine and (user, interpreter, ``sys.path`` of the trial code directory,
  load-time environment, nni_xfer sources): the key of :func:`nni_xfer.runtime.warm_client.server_key`; it
  listens on ``$NNI_XFER_HOME/launcher/<key>.sock`` (folder mode 0700, peers must be the same user)
  and holds ``<key>.lock`` while it lives, so two racing clients end with one server;
* CUDA is never initialised in the server (checked before every fork); a child initialises it
  under the trial's own ``CUDA_VISIBLE_DEVICES``;
* the child takes the client's environment (``os.environ`` cleared and replaced), working
  directory, arguments and standard streams, re-reads NNI's per-trial state (NNI reads
  ``NNI_PLATFORM``, ``NNI_TRIAL_JOB_ID``, ``NNI_OUTPUT_DIR``... when ``nni`` is imported:
  :func:`refresh_nni`), restores default signal handlers and runs :func:`nni_xfer.runtime.trial.main` with
  the client's arguments, exactly as ``python -m nni_xfer.trial`` does; it starts only once the
  client has its pid (a server that dies mid-handshake has started no trial, so the client's
  direct-run fallback never runs a trial twice);
* the child sends its exit code to the client itself too, so a server that dies while trials run
  does not lose their results; when a client's connection closes (NNI killed it), the server kills
  its trial's process group;
* the server exits after ``NNI_XFER_LAUNCHER_IDLE`` seconds (default 600) without trials, removing
  its socket; on SIGTERM it stops accepting trials and exits once the running ones ended.

``python -m nni_xfer.runtime.warm_server status|stop [--all]`` shows or stops (SIGTERM, by pid) the server of
the current directory, or every server under ``$NNI_XFER_HOME/launcher``.

Process titles (``ps``, ``top``; issue 24): the server is ``nni-xfer launcher <key>``, each forked
trial ``nni-xfer trial <NNI trial id>`` (``nni-xfer trial client <pid>`` outside NNI), set with
``setproctitle`` (:func:`set_title`), so a trial is never taken for its server by command line.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback

from . import warm_client as client

#: What the server imports before it listens: what ``python -m nni_xfer.trial`` imports before it
#: reads a spec, the trial machinery (evaluators, trainer, datasets, initializers, weight transfer)
#: and every built-in search space (each trial builds one). Method packages (``nni_xfer.strategies``)
#: are left to the child: they import strategy code a trial does not need.
PRELOAD = ('numpy', 'torch', 'torch.nn', 'torch.optim', 'torchvision', 'nni', 'nni.nas.nn.pytorch',
           'nni_xfer.runtime.trial', 'nni_xfer.spec', 'nni_xfer.checkpoint', 'nni_xfer.space', 'nni_xfer.training.evaluators',
           'nni_xfer.training.trainer', 'nni_xfer.data.pipeline', 'nni_xfer.training.initializers', 'nni_xfer.transfer',
           'nni_xfer.search_spaces')


#: Seconds a trial may outlive its client's connection (time to exit after sending its exit code).
KILL_GRACE = 0.5
#: Signals blocked in the server across a fork, until the child has reset their handlers.
CHILD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD}


def log(message: str) -> None:
    print(f'[{time.strftime("%Y-%m-%d %H:%M:%S")} launcher {os.getpid()}] {message}', file=sys.stderr, flush=True)


#: The process title of a server (followed by its key); :func:`_alive` recognises a server by it.
SERVER_TITLE = 'nni-xfer launcher'
#: The process title of a forked trial (followed by its NNI trial id).
TRIAL_TITLE = 'nni-xfer trial'


def set_title(title: str) -> None:
    """This process's title as ``ps`` shows it (its ``/proc/PID/cmdline``); nothing without
    ``setproctitle``."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


class _Probe(Exception):
    """A connection closed before sending a byte: ``launcher status`` (or a client) checking that a
    server listens. Not a request, not worth a log line."""


def thread_count() -> int:
    """OS threads of this process (a fork copies only the calling one)."""
    try:
        return len(os.listdir('/proc/self/task'))
    except OSError:
        return threading.active_count()


# --------------------------------------------------------------------------------------------------
# the server process

def prepare_server_process() -> None:
    """What ``python -m nni_xfer.trial`` does before its imports (see nni_xfer/runtime/trial.py): OpenMP's
    passive waiting unless set, the known NNI warnings filtered, lean NNI imports."""
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    from .known_warnings import filter_known_warnings
    filter_known_warnings()
    from .lightweight import enable
    enable()


def preload(extra: list[str]) -> list[str]:
    import importlib.util
    for name in extra:  # a typo fails the start at once, before seconds of imports
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ModuleNotFoundError(f'NNI_XFER_LAUNCHER_PRELOAD: no module named {name!r}')
    for name in (*PRELOAD, *extra):
        importlib.import_module(name)
    from .lightweight import heavy_modules_loaded
    return heavy_modules_loaded()


class Trial:
    def __init__(self, conn: socket.socket, pid: int, request: dict):
        self.conn, self.pid, self.request = conn, pid, request
        self.buf = b''
        self.started = time.monotonic()
        self.gone: float | None = None  # when the client's connection closed
        self.killed = False
        self.name = self.title_of(request)

    @staticmethod
    def title_of(request: dict) -> str:
        """The NNI trial id of a request, or ``client <pid>`` (a trial run outside NNI)."""
        return request.get('env', {}).get('NNI_TRIAL_JOB_ID') or f'client {request.get("client_pid")}'


class Server:
    def __init__(self, key: str, idle: float, lock_fd: int):
        self.key, self.idle = key, idle
        self.lock_fd = lock_fd  # the life lock: a trial must not keep it (and so block new servers)
        self.paths = client.paths(key)
        self.trials: dict[int, Trial] = {}
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.inode: int | None = None
        self.last_active = time.monotonic()
        self.stopping = False
        self.wakeup: tuple[int, ...] = ()

    # -- set-up -------------------------------------------------------------------------------
    def listen(self) -> None:
        path = self.paths['sock']
        try:
            os.unlink(path)  # a stale socket of a dead server: this one holds the lock now
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with client._Address(path) as address:
            s.bind(address)
        os.chmod(path, 0o600)
        self.inode = os.stat(path).st_ino
        s.listen(64)
        s.setblocking(False)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, 'accept')

    def stop_listening(self) -> None:
        if self.listener is None:
            return
        try:
            if os.stat(self.paths['sock']).st_ino == self.inode:
                os.unlink(self.paths['sock'])
        except OSError:
            pass
        # connections already queued still get a trial: a client never falls back for this
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                break
            self.handle(conn)
        self.sel.unregister(self.listener)
        self.listener.close()
        self.listener = None

    # -- requests -----------------------------------------------------------------------------
    def read_request(self, conn: socket.socket) -> tuple[dict, list[int]]:
        conn.setblocking(True)
        conn.settimeout(10.0)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
        _pid, uid, _gid = struct.unpack('3i', creds)
        if uid != os.getuid():
            raise PermissionError(f'peer uid {uid} is not this server\'s user')
        head, fds, _flags, _addr = socket.recv_fds(conn, 4, 3)
        if not head and not fds:
            raise _Probe()
        while len(head) < 4 and head:
            more = conn.recv(4 - len(head))
            if not more:
                break
            head += more
        if len(head) < 4 or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            raise ConnectionError('incomplete request')
        (length,) = struct.unpack('!I', head)
        data = b''
        while len(data) < length:
            chunk = conn.recv(min(1 << 20, length - len(data)))
            if not chunk:
                for fd in fds:
                    os.close(fd)
                raise ConnectionError('incomplete request')
            data += chunk
        request = json.loads(data)
        if request.get('protocol') != client.PROTOCOL:
            for fd in fds:
                os.close(fd)
            raise ValueError(f'protocol {request.get("protocol")} (server: {client.PROTOCOL})')
        return request, fds

    def handle(self, conn: socket.socket) -> None:
        try:
            request, fds = self.read_request(conn)
        except _Probe:
            conn.close()
            return
        except Exception as exc:  # noqa: BLE001 - a bad client must not stop the server
            self._refuse(conn, 'rejected a request', exc)
            return
        try:
            go_r, go_w, mask, pid = self.start_child()
        except Exception as exc:  # noqa: BLE001 - no trial started: the client runs it directly
            for fd in fds:
                os.close(fd)
            self._refuse(conn, 'cannot start a trial', exc)
            return
        self.after_fork(conn, request, fds, go_r, go_w, mask, pid)

    @staticmethod
    def _refuse(conn: socket.socket, what: str, exc: BaseException) -> None:
        """Log why, tell the client (it then runs the trial directly) and close the connection."""
        log(f'{what}: {type(exc).__name__}: {exc}')
        try:
            conn.sendall(json.dumps({'error': f'{type(exc).__name__}: {exc}'}).encode() + b'\n')
        except OSError:
            pass
        conn.close()

    @staticmethod
    def start_child() -> tuple[int, int, set, int]:
        """Fork (the go pipe made, the forwarded signals blocked); raises with nothing left open."""
        import torch
        if torch.cuda.is_initialized():
            raise RuntimeError('CUDA is initialised in the launcher server: it must never be before a fork')
        go_r, go_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        # a signal forwarded as soon as the client has the pid waits until the child has its own handlers
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(go_r)
            os.close(go_w)
            raise
        return go_r, go_w, mask, pid

    def after_fork(self, conn: socket.socket, request: dict, fds: list[int], go_r: int, go_w: int, mask: set,
                   pid: int) -> None:
        if pid == 0:  # the trial
            code = 1
            try:
                set_title(f'{TRIAL_TITLE} {Trial.title_of(request)}')
                keep = {conn.fileno(), go_r, *fds}
                others = [t.conn.fileno() for t in self.trials.values()] + [go_w]
                if self.listener is not None:
                    others.append(self.listener.fileno())
                others += [fd for fd in (*self.wakeup, self.sel.fileno(), self.lock_fd) if fd not in keep]
                code = run_child(request, fds, conn, go_r, others, mask)
            except KeyboardInterrupt:
                _die_of_sigint(conn)
            except BaseException:  # noqa: BLE001 - never return into the server's loop
                try:
                    traceback.print_exc()
                finally:
                    os._exit(1)
            os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            os.setpgid(pid, pid)  # as the child does: its group exists before anyone signals it
        except OSError:
            pass
        os.close(go_r)
        for fd in fds:
            os.close(fd)
        trial = Trial(conn, pid, request)
        try:
            conn.sendall(json.dumps({'pid': pid}).encode() + b'\n')
            os.write(go_w, b'g')
        except OSError as exc:  # the client left before its trial started
            log(f'{trial.name}: client gone before the start ({exc}); stopping pid {pid}')
            _kill_group(pid)
        finally:
            os.close(go_w)
        conn.setblocking(False)
        self.trials[pid] = trial
        self.sel.register(conn, selectors.EVENT_READ, trial)
        self.last_active = time.monotonic()
        log(f'{trial.name}: pid {pid} for client {request.get("client_pid")} argv {request.get("argv")}')

    def client_readable(self, trial: Trial) -> None:
        try:
            data = trial.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:  # the client is gone: it got the exit code, or NNI killed it (then so is its trial)
            self.sel.unregister(trial.conn)
            trial.gone = time.monotonic()
            return
        trial.buf += data
        while b'\n' in trial.buf:
            line, trial.buf = trial.buf.split(b'\n', 1)
            try:
                signum = int(json.loads(line)['signal'])
            except (ValueError, KeyError, TypeError):
                continue
            if trial.pid in self.trials:
                log(f'{trial.name}: forwarding signal {signum} to pid {trial.pid}')
                try:
                    os.kill(trial.pid, signum)
                except OSError:
                    pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            trial = self.trials.pop(pid, None)
            if trial is None:
                continue
            if os.WIFSIGNALED(status):
                message = {'signal': os.WTERMSIG(status)}
            else:
                message = {'exit': os.waitstatus_to_exitcode(status)}
            log(f'{trial.name}: pid {pid} ended {message} after {time.monotonic() - trial.started:.1f} s')
            try:
                trial.conn.setblocking(True)
                trial.conn.settimeout(5.0)
                trial.conn.sendall(json.dumps(message).encode() + b'\n')
            except OSError:
                pass
            try:
                self.sel.unregister(trial.conn)
            except (KeyError, ValueError):
                pass
            trial.conn.close()
            self.last_active = time.monotonic()

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.wakeup = (wake_r, wake_w)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, 'stopping', True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, 'stopping', True))
        self.sel.register(wake_r, selectors.EVENT_READ, 'wakeup')
        self.reap()
        while True:
            if self.stopping and self.listener is not None:
                log('stopping: no new trials; exiting when the running ones ended')
                self.stop_listening()
            if not self.trials and self.listener is not None and time.monotonic() - self.last_active > self.idle:
                log(f'idle for {self.idle:.0f} s: exiting')
                self.stop_listening()
            if self.listener is None and not self.trials:
                return
            for trial in self.trials.values():
                # a child that sent its exit code ends within moments; one still running lost its client
                if trial.gone is not None and not trial.killed and time.monotonic() - trial.gone > KILL_GRACE:
                    log(f'{trial.name}: the client is gone; killing pid {trial.pid}')
                    _kill_group(trial.pid)
                    trial.killed = True
            timeout = max(0.05, self.idle - (time.monotonic() - self.last_active)) if not self.trials else 5.0
            if any(t.gone is not None and not t.killed for t in self.trials.values()):
                timeout = KILL_GRACE / 4
            for sk, _ in self.sel.select(timeout=min(timeout, 5.0)):
                if sk.data == 'wakeup':
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif sk.data == 'accept':
                    if self.listener is None:
                        continue
                    try:
                        conn, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    self.handle(conn)
                elif isinstance(sk.data, Trial):
                    self.client_readable(sk.data)
            self.reap()


def _kill_group(pid: int) -> None:
    """SIGKILL the trial's process group (the trial and what it started)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except OSError:
            continue


def serve(key: str, idle: float | None = None) -> int:
    p = client.paths(key)
    os.makedirs(os.path.dirname(p['sock']), mode=0o700, exist_ok=True)
    idle = client._number('NNI_XFER_LAUNCHER_IDLE', 600.0) if idle is None else idle
    clean = client.server_env()  # started by hand from a trial's shell: still no per-trial variables
    for name in [n for n in os.environ if n not in clean]:
        del os.environ[name]
    import fcntl
    lock = os.open(p['lock'], os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + 10.0
    while True:  # an exiting server still holds it for a moment
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                log(f'another launcher server holds {p["lock"]}: exiting')
                return client.EXIT_ANOTHER_SERVER
            time.sleep(0.1)
    with open(p['pid'], 'w') as f:
        f.write(str(os.getpid()))
    set_title(f'{SERVER_TITLE} {key}')
    t0 = time.monotonic()
    log(f'starting: key {key}, python {sys.executable}, cwd {os.getcwd()}, idle {idle:.0f} s')
    try:
        prepare_server_process()
        extra = [m for m in os.environ.get('NNI_XFER_LAUNCHER_PRELOAD', '').split(',') if m.strip()]
        heavy = preload([m.strip() for m in extra])
        if heavy:
            log(f'warning: the preloaded modules pulled {heavy} (a plain trial does not import them)')
        import torch
        assert not torch.cuda.is_initialized()
        threads = thread_count()
        if threads != 1:  # numpy's and scipy's OpenBLAS start worker pools at import and handle fork
            log(f'{threads} OS threads after the imports (a fork copies only the calling one)')
        server = Server(key, idle, lock)
        server.listen()
        log(f'listening on {p["sock"]} after {time.monotonic() - t0:.2f} s of imports')
        server.run()
    finally:
        try:
            with open(p['pid']) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(p['pid'])
        except OSError:
            pass
    log('exited')
    return 0


# --------------------------------------------------------------------------------------------------
# the trial (a forked child of the server)

def _std_stream(fd: int, like: io.TextIOWrapper | None, write: bool) -> io.TextIOWrapper:
    """A standard stream on ``fd`` made the way Python makes ``sys.stdin/stdout/stderr`` at start-up:
    line-buffered on a terminal (stderr always), write-through under ``PYTHONUNBUFFERED``."""
    unbuffered = bool(os.environ.get('PYTHONUNBUFFERED')) or bool(sys.flags.unbuffered)
    buffer = io.open(fd, 'wb' if write else 'rb', closefd=False)
    encoding = getattr(like, 'encoding', None) or 'utf-8'
    errors = 'backslashreplace' if fd == 2 else (getattr(like, 'errors', None) or 'strict')
    tty = os.isatty(fd)
    return io.TextIOWrapper(buffer, encoding=encoding, errors=errors, newline='\n' if write else None,
                            line_buffering=write and (tty or fd == 2 or unbuffered), write_through=write and unbuffered)


def refresh_nni() -> None:
    """Make NNI, imported by the server, behave as if imported by this trial process.

    NNI reads its trial variables (``NNI_PLATFORM``, ``NNI_TRIAL_JOB_ID``, ``NNI_OUTPUT_DIR``,
    ``NNI_TRIAL_COMMAND_CHANNEL``...) into ``nni.runtime.env_vars`` when imported, modules bind
    that tuple by name, ``nni.trial`` keeps ids read from it, and ``nni``'s import set up logging
    (under a trial platform: ``trial.log`` in the output directory and ``sys.stdout`` into it). This
    re-reads the variables from this process's environment, rebinds every reference to the old
    tuples, re-executes ``nni.trial``'s module body, drops a cached trial command channel, and
    re-runs NNI's logger set-up after removing the server's stdout handler."""
    env_vars = sys.modules.get('nni.runtime.env_vars')
    if env_vars is None:
        return  # NNI is imported later, by the trial itself, from its own environment
    old = {name: getattr(env_vars, name) for name in ('trial_env_vars', 'dispatcher_env_vars')}
    importlib.reload(env_vars)
    for module in list(sys.modules.values()):
        namespace = getattr(module, '__dict__', None)
        if not namespace or not str(getattr(module, '__name__', '')).startswith('nni'):
            continue
        for name, value in old.items():
            if namespace.get(name) is value:
                namespace[name] = getattr(env_vars, name)
    channel = sys.modules.get('nni.runtime.trial_command_channel')
    if channel is not None:
        channel._channel = None
    if 'nni.trial' in sys.modules:
        importlib.reload(sys.modules['nni.trial'])  # same module dict: nni.get_next_parameter sees it
    nni_log = sys.modules.get('nni.runtime.log')
    if nni_log is not None:
        nni_log.silence_stdout()
        nni_log._init_logger()


def _threads_from_env() -> None:
    """``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) of the trial, as torch applies it at start-up."""
    import torch
    for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        value = os.environ.get(name)
        if value:
            try:
                n = int(value)
            except ValueError:
                continue
            if n > 0:
                torch.set_num_threads(n)
            return


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream must not change the exit
            pass


def _finish(code: int, conn: socket.socket, send: bool = True) -> int:
    """What the interpreter does at exit (wait for non-daemon threads, atexit, flush), then tell the
    client the code itself (a server that died meanwhile does not lose it)."""
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    try:
        import atexit
        atexit._run_exitfuncs()
    except Exception:  # noqa: BLE001 - as at interpreter exit: printed, not fatal
        traceback.print_exc()
    _flush_std()
    if send:
        try:
            conn.sendall(json.dumps({'exit': code}).encode() + b'\n')
        except OSError:
            pass
    return code


def _die_of_sigint(conn: socket.socket, print_traceback: bool = True) -> None:
    """What Python does with an uncaught KeyboardInterrupt: the traceback, then death by SIGINT."""
    if print_traceback:
        traceback.print_exc()
    _flush_std()
    try:
        conn.sendall(json.dumps({'signal': int(signal.SIGINT)}).encode() + b'\n')
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(128 + signal.SIGINT)


def run_child(request: dict, fds: list[int], conn: socket.socket, go_r: int, close: list[int],
              mask: set) -> int:
    """The trial: wait for the server's go, become the client's process, run ``nni_xfer.runtime.trial.main``."""
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for name in ('SIGCHLD', 'SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # signals sent meanwhile arrive now
    for fd in close:
        try:
            os.close(fd)
        except OSError:
            pass
    if not os.read(go_r, 1):  # the server died or the client left before the start
        os._exit(0)
    os.close(go_r)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    old = (sys.stdin, sys.stdout, sys.stderr)
    sys.stdin = sys.__stdin__ = _std_stream(0, old[0], write=False)
    sys.stdout = sys.__stdout__ = _std_stream(1, old[1], write=True)
    sys.stderr = sys.__stderr__ = _std_stream(2, old[2], write=True)
    os.environ.clear()
    os.environ.update(request['env'])
    os.chdir(request['cwd'])
    from . import trial
    sys.argv = [trial.__file__, *request['argv']]
    sys.orig_argv = [sys.executable, '-m', 'nni_xfer.trial', *request['argv']]
    # what ``python -m nni_xfer.trial`` sets in its own environment before its imports
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    from .lightweight import enabled
    if enabled():
        os.environ['NNI_FRAMEWORK'] = 'none'
    _threads_from_env()
    import numpy as np
    np.random.seed()  # a fresh process draws numpy's global state from the OS (Python's random: at fork)
    refresh_nni()
    try:
        code = trial.main(list(request['argv']))
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # as Python: traceback, exit handlers, then death by SIGINT
        traceback.print_exc()
        _finish(128 + signal.SIGINT, conn, send=False)
        _die_of_sigint(conn, print_traceback=False)
    except BaseException:  # noqa: BLE001 - as Python: the traceback and exit code 1
        traceback.print_exc()
        code = 1
    return _finish(code or 0, conn)


# --------------------------------------------------------------------------------------------------
# status / stop

def _alive(pid: int) -> bool:
    """Whether ``pid`` is a launcher server: its title (:data:`SERVER_TITLE`), or its command line
    (``-m nni_xfer.runtime.warm_server``) before it set the title. A forked trial has its own title."""
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            cmdline = f.read()
    except OSError:
        return False
    return cmdline.startswith(SERVER_TITLE.encode() + b' ') or SERVER_MARK in cmdline


SERVER_MARK = client.SERVER_MODULE.encode()


def servers(all_keys: bool = False) -> list[dict]:
    """Launcher servers under ``$NNI_XFER_HOME/launcher``: this directory's key, or every key."""
    folder = client.launcher_dir()
    keys = [client.server_key()] if not all_keys else sorted(
        name[:-4] for name in (os.listdir(folder) if os.path.isdir(folder) else []) if name.endswith('.pid'))
    out = []
    for key in keys:
        p = client.paths(key)
        try:
            with open(p['pid']) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            pid = None
        out.append({'key': key, 'pid': pid, 'running': bool(pid and _alive(pid)),
                    'listening': client.try_connect(p['sock']) is not None, 'socket': p['sock'], 'log': p['log']})
    return out


def stop(all_keys: bool = False, timeout: float = 10.0) -> list[int]:
    """SIGTERM this directory's server (or every one) and wait until it exited; the pids stopped."""
    stopped = []
    for info in servers(all_keys):
        pid = info['pid']
        if not info['running'] or pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise
            continue
        stopped.append(pid)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    return stopped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m nni_xfer.runtime.warm_server', description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('serve', help='run a server (the client starts it on demand)')
    s.add_argument('--key', required=True)
    s.add_argument('--idle', type=float, default=None, help='seconds idle before exiting (default: '
                   '$NNI_XFER_LAUNCHER_IDLE or 600)')
    for name, text in (('status', 'show the server of this directory'), ('stop', 'stop it (SIGTERM)')):
        c = sub.add_parser(name, help=text)
        c.add_argument('--all', action='store_true', help='every server under $NNI_XFER_HOME/launcher')
    args = ap.parse_args(argv)
    if args.cmd == 'serve':
        code = serve(args.key, args.idle)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # no teardown of torch & co. (seconds): a stopped server is gone at once
    if args.cmd == 'status':
        for info in servers(args.all):
            print(json.dumps(info))
        return 0
    print(json.dumps({'stopped': stop(args.all)}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
