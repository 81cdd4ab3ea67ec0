"""``nni-xfer trial-in-container``: run one NNI trial inside the nni-xfer image.

Used as an experiment's ``trialCommand`` (``local`` or ``remote`` training service)::

    trialCommand: nni-xfer trial-in-container --image nni-xfer:latest

It starts ``<engine> run`` (podman or docker) with

* NNI's environment (every ``NNI_*`` variable, thread settings) passed through, the host network
  (the trial reaches NNI's trial command channel at the same address a bare trial does);
* exactly the folders a bare trial reads or writes, mounted at the same paths: the trial code dir
  (read-only), NNI's trial dir (``NNI_SYS_DIR``/``NNI_OUTPUT_DIR``), ``checkpoint_root`` (children
  read their parents' checkpoints there), the dataset cache and dataset roots, a ModuleNet
  knowledge base (read-only) and any ``--mount``. The knowledge store is never mounted: only the
  tuner writes it (a mount that would contain it is refused);
* the trial's GPUs (``CUDA_VISIBLE_DEVICES`` given by NNI) as ``--gpus device=...`` (docker) or CDI
  devices ``nvidia.com/gpu=...`` (podman);
* ``--rm --init --pull=never``: nothing is downloaded at trial time and no container stays.

A stop (SIGINT from NNI's cancel and ``nnictl stop``, SIGTERM, or the death of the process that
started it) stops the container within NNI's 5-second grace. A container that cannot start (no
engine, image missing, engine error) fails the trial with one line, reported to NNI as the trial's
final result so the knowledge store records it. The experiment's ``classArgs`` (for
``checkpoint_root``, ``store`` and the dataset) come from ``--config`` or, by default, from the
NNI manager's REST API. Standard library only (no torch on the wrapper's side).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENGINES = ('podman', 'docker')
#: Variables passed into the container besides every ``NNI_*`` (which covers ``NNI_XFER_*``).
PASS_ENV = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'PYTHONHASHSEED', 'TZ')
#: Exit codes with which docker and podman say the container never ran its command.
ENGINE_REFUSED = {125: 'the engine could not create or start the container',
                  126: 'the command in the image cannot be invoked',
                  127: 'the command was not found in the image'}
DEFAULT_COMMAND = ('python3', '-m', 'nni_xfer.trial')
#: Kubernetes training services of NNI 3.0 mount their NFS share (``storage:``) here in every pod.
K8S_MOUNT_PATH = '/tmp/mount'


class ContainerError(Exception):
    """Why the container could not run: one line."""


@dataclass
class Mount:
    host: str
    mode: str = 'rw'   # rw | ro
    why: str = ''

    def arg(self) -> str:
        opt = ',ro' if self.mode == 'ro' else ''
        return f'type=bind,source={self.host},target={self.host}{opt}'


@dataclass
class Plan:
    engine: str                        # path of the engine binary
    kind: str                          # podman | docker
    image: str
    name: str
    command: list[str]
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    gpu_args: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    extra: list[str] = field(default_factory=list)

    def run_args(self) -> list[str]:
        args = [self.engine, 'run', '--rm', '--init', '--pull=never', '--name', self.name,
                '--network', 'host', '--label', 'nni-xfer.trial=1']
        if self.env.get('NNI_EXP_ID'):
            args += ['--label', f"nni-xfer.experiment={self.env['NNI_EXP_ID']}"]
        if self.user:
            args += ['--user', self.user]
        if self.workdir:
            args += ['--workdir', self.workdir]
        for m in self.mounts:
            args += ['--mount', m.arg()]
        for k in sorted(self.env):
            args += ['--env', f'{k}={self.env[k]}']
        args += self.gpu_args + self.extra + [self.image] + self.command
        return args


# --------------------------------------------------------------------------- planning


def find_engine(engine: str | None) -> tuple[str, str]:
    """(path, kind) of the container engine: ``podman``/``docker``/a path, or the first installed."""
    names = [engine] if engine else list(ENGINES)
    for name in names:
        path = shutil.which(name)
        if path:
            base = os.path.basename(path)
            kind = 'docker' if 'docker' in base else 'podman'
            return path, kind
    if engine:
        raise ContainerError(f"container engine '{engine}' not found on PATH (allowed: podman, docker or a path)")
    raise ContainerError('no container engine: neither podman nor docker is on PATH (install one, or pass --engine)')


def gpu_args(kind: str, gpus: str, env: dict[str, str]) -> tuple[list[str], bool]:
    """Engine flags that give the container the trial's GPUs, and whether ``CUDA_VISIBLE_DEVICES``
    must be cleared inside (the container numbers its GPUs from 0)."""
    if gpus == 'none':
        return [], False
    if gpus == 'all':
        devices = ['all']
    else:   # auto: what NNI gave this trial (trialGpuNumber); unset or empty = none
        visible = env.get('CUDA_VISIBLE_DEVICES')
        if not visible or visible.strip() in ('', '-1'):
            return [], False
        devices = [d.strip() for d in visible.split(',') if d.strip()]
    if kind == 'docker':
        return ['--gpus', 'all' if devices == ['all'] else '"device=' + ','.join(devices) + '"'], True
    return [a for d in devices for a in ('--device', f'nvidia.com/gpu={d}')], True


def xfer_home(env: dict[str, str]) -> Path:
    return Path(env.get('NNI_XFER_HOME') or Path(env.get('HOME') or Path.home()) / '.nni-xfer').expanduser()


def _abs(path: str | os.PathLike, home: str) -> Path:
    text = str(path)
    if text.startswith('~'):
        text = home + text[1:]
    return Path(os.path.abspath(text))


def trial_mounts(class_args: dict, env: dict[str, str], extra: list[str] = ()) -> list[Mount]:
    """The folders a bare trial of this experiment reads or writes (see the module docstring)."""
    home = env.get('HOME') or str(Path.home())
    nxh = xfer_home(env)
    mounts: list[Mount] = []

    def add(path: str | os.PathLike | None, mode: str, why: str, create: bool = False) -> None:
        if not path:
            return
        p = _abs(path, home)
        if create:
            p.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            return
        for m in mounts:
            if m.host == str(p):
                if mode == 'rw':
                    m.mode = 'rw'
                return
        mounts.append(Mount(str(p), mode, why))

    code = env.get('NNI_CODE_DIR')
    add(code, 'ro', 'trial code')
    add(env.get('NNI_SYS_DIR'), 'rw', "NNI's trial dir")
    add(env.get('NNI_OUTPUT_DIR'), 'rw', "NNI's trial output dir")
    add(class_args.get('checkpoint_root') or nxh / 'checkpoints', 'rw', 'checkpoint_root', create=True)
    if env.get('NNI_XFER_DATASET_CACHE', '1') not in ('0', 'false', 'no'):
        add(nxh / 'datasets', 'rw', 'dataset cache', create=True)
    dargs = class_args.get('dataset_args') or {}
    if isinstance(dargs, dict):
        add(dargs.get('root') or Path(home) / '.cache' / 'nni_xfer' / 'data', 'rw', 'dataset root')
        for key, value in dargs.items():
            if key != 'root' and isinstance(value, str) and ('/' in value or value.startswith('~')):
                add(value, 'ro', f'dataset_args.{key}')
    add('/usr/share/datasets', 'ro', 'system datasets (Debian dataset-* packages)')
    space_args = class_args.get('space_args') or {}
    kb = space_args.get('kb') if isinstance(space_args, dict) else None
    if isinstance(kb, str) and kb:
        is_name = '/' not in kb and not kb.startswith(('.', '~'))
        add(nxh / 'kb' / kb if is_name else kb, 'ro', 'knowledge base (space_args.kb)')
    for spec in extra:
        path, _, mode = spec.partition(':')
        if mode not in ('', 'ro', 'rw'):
            raise ContainerError(f"--mount {spec!r}: mode must be ro or rw")
        if not _abs(path, home).exists():
            raise ContainerError(f'--mount {path}: no such file or folder')
        add(path, mode or 'rw', '--mount')
    store = _abs(class_args.get('store') or nxh / 'store.db', home)
    for m in mounts:
        if store == Path(m.host) or Path(m.host) in store.parents:
            raise ContainerError(f'refusing to mount {m.host} ({m.why}): it contains the knowledge store {store}, '
                                 f'which only the tuner writes; give {m.why} a folder of its own')
    return mounts


def container_env(env: dict[str, str], extra: list[str] = ()) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k.startswith('NNI_') or k in PASS_ENV}
    out['NNI_XFER_HOME'] = str(xfer_home(env))
    out['HOME'] = env.get('HOME') or str(Path.home())
    out['PYTHONUNBUFFERED'] = '1'
    for name in extra:
        key, eq, value = name.partition('=')
        if eq:
            out[key] = value
        elif key in env:
            out[key] = env[key]
    return out


def experiment_class_args(config: str | None, env: dict[str, str], timeout: float = 5.0) -> tuple[dict, str]:
    """The experiment's tuner ``classArgs`` and where they came from (``--config`` or NNI's REST API)."""
    if config:
        import yaml
        path = Path(config)
        if not path.is_file():
            raise ContainerError(f'--config {config}: no such file')
        raw = yaml.safe_load(path.read_text()) or {}
        tuner = raw.get('tuner') if isinstance(raw, dict) else None
        return dict((tuner or {}).get('classArgs') or {}), str(path)
    url = env.get('NNI_TRIAL_COMMAND_CHANNEL', '')
    if not url.startswith('http://'):
        return {}, 'defaults (no --config, no NNI command channel)'
    host = url.split('/')[2]
    try:
        with urllib.request.urlopen(f'http://{host}/api/v1/nni/experiment', timeout=timeout) as r:
            profile = json.load(r)
        return dict(profile['params']['tuner'].get('classArgs') or {}), f'NNI manager {host}'
    except Exception as exc:  # noqa: BLE001 - fall back to the defaults, and say so
        return {}, f'defaults (NNI REST API at {host}: {type(exc).__name__}: {exc})'


def make_plan(args: argparse.Namespace, env: dict[str, str] | None = None) -> Plan:
    env = dict(os.environ if env is None else env)
    engine, kind = find_engine(args.engine)
    class_args, source = experiment_class_args(args.config, env)
    if source.startswith('defaults (NNI REST'):   # say why checkpoint_root etc. are the defaults
        print(f'nni-xfer trial-in-container: classArgs from {source}; pass --config exp.yml', file=sys.stderr)
    mounts = trial_mounts(class_args, env, args.mount or [])
    cenv = container_env(env, args.env or [])
    gflags, clear_cuda = gpu_args(kind, args.gpus, env)
    if clear_cuda:
        cenv.pop('CUDA_VISIBLE_DEVICES', None)
    elif 'CUDA_VISIBLE_DEVICES' in env:
        cenv['CUDA_VISIBLE_DEVICES'] = env['CUDA_VISIBLE_DEVICES']
    if args.user == 'host':
        user = f'{os.getuid()}:{os.getgid()}'
    elif args.user == 'image':
        user = None
    else:
        user = args.user
    exp, trial = env.get('NNI_EXP_ID'), env.get('NNI_TRIAL_JOB_ID')
    tail = uuid.uuid4().hex[:6]
    name = f'nni-xfer-{exp}-{trial}-{tail}' if exp and trial else f'nni-xfer-trial-{os.getpid()}-{tail}'
    command = list(args.command or DEFAULT_COMMAND)
    if command and command[0] == '--':
        command = command[1:] or list(DEFAULT_COMMAND)
    return Plan(engine=engine, kind=kind, image=args.image, name=name, command=command, mounts=mounts,
                env=cenv, gpu_args=gflags, user=user, workdir=env.get('NNI_CODE_DIR') or os.getcwd(),
                extra=list(args.engine_arg or []))


# --------------------------------------------------------------------------- running


def _engine_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or '').splitlines() if ln.strip()]
    return lines[-1] if lines else f'exit {proc.returncode}'


def check_image(plan: Plan) -> None:
    """Raise :class:`ContainerError` when the image is not in the engine's local storage."""
    cmd = [plan.engine, 'image', 'inspect', '--format', '{{.Id}}', plan.image]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ContainerError(f'{plan.kind} did not answer within 60 s ({" ".join(cmd[1:3])})') from None
    if proc.returncode != 0:
        line = _engine_line(proc)
        if 'no such' in line.lower() or 'not known' in line.lower() or 'not found' in line.lower():
            raise ContainerError(f"image {plan.image} not found in {plan.kind}'s local images "
                                 f'(build it: bash scripts/build_image.sh --tag {plan.image})')
        raise ContainerError(f'{plan.kind} refused: {line}')


def report_failure(line: str) -> None:
    """Fail the trial in NNI and in the knowledge store with ``line`` (only when the container never
    ran: its parameter is then still unclaimed)."""
    if not os.environ.get('NNI_PLATFORM') or not os.environ.get('NNI_TRIAL_JOB_ID'):
        return
    try:
        import nni
        from ..spec import proposal_id_of
        params = nni.get_next_parameter()
        report = {'status': 'FAILED', 'error': line, 'trial_id': os.environ['NNI_TRIAL_JOB_ID']}
        pid = proposal_id_of(params)
        if pid is not None:
            report['proposal_id'] = pid
        nni.report_final_result(report)
    except Exception as exc:  # noqa: BLE001 - the exit code still says FAILED
        print(f'nni-xfer trial-in-container: could not report the failure to NNI: {exc}', file=sys.stderr)


def _set_parent_death_signal() -> None:
    """SIGTERM this process when its parent (NNI's trial keeper) dies (Linux)."""
    if not sys.platform.startswith('linux'):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
        if os.getppid() == 1:           # the parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort
        pass


class Runner:
    """Runs a :class:`Plan`; a stop signal stops the container and waits for its removal."""

    STOP_GRACE = 2  # seconds between SIGTERM and SIGKILL inside the container (NNI allows 5 in all)

    def __init__(self, plan: Plan, out=sys.stderr):
        self.plan = plan
        self.out = out
        self.proc: subprocess.Popen | None = None
        self.stopping: int | None = None
        self.tail: list[str] = []

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b''):
            try:
                self.out.buffer.write(raw)
                self.out.flush()
            except Exception:  # noqa: BLE001
                pass
            text = raw.decode(errors='replace').strip()
            if text:
                self.tail = (self.tail + [text])[-20:]

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping is not None:
            return
        self.stopping = signum
        threading.Thread(target=self._stop_container, daemon=True).start()

    def _stop_container(self) -> None:
        deadline = time.monotonic() + 4.0
        eng = self.plan.engine
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                break
            r = subprocess.run([eng, 'stop', '-t', str(self.STOP_GRACE), self.plan.name],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.2)   # not created yet: try again
        try:
            if self.proc is not None:
                self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([eng, 'rm', '-f', self.plan.name], capture_output=True)
            self.proc.kill()

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        _set_parent_death_signal()
        try:
            self.proc = subprocess.Popen(self.plan.run_args(), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as exc:
            raise ContainerError(f'cannot start {self.plan.engine}: {exc.strerror or exc}') from None
        pump = threading.Thread(target=self._pump, args=(self.proc.stderr,), daemon=True)
        pump.start()
        while True:
            try:
                rc = self.proc.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
        pump.join(timeout=2)
        if self.stopping is not None:
            # leave no container, then end the way a bare trial ends on this signal
            subprocess.run([self.plan.engine, 'rm', '-f', self.plan.name], capture_output=True)
            return 128 + self.stopping
        return rc


def cmd_trial_in_container(args: argparse.Namespace) -> int:
    prefix = 'nni-xfer trial-in-container'
    try:
        plan = make_plan(args)
        if args.dry_run:
            print(shlex.join(plan.run_args()))
            return 0
        check_image(plan)
        print(f'{prefix}: {shlex.join(plan.run_args())}', file=sys.stderr, flush=True)
        runner = Runner(plan)
        rc = runner.run()   # a ContainerError from it means the engine never started
    except (ContainerError, ConfigError) as exc:
        line = f'{prefix}: {exc}'
        print(line, file=sys.stderr, flush=True)
        if not getattr(args, 'dry_run', False):
            report_failure(line)
        return 2
    if runner.stopping is None and rc in ENGINE_REFUSED:
        why = runner.tail[-1] if runner.tail else ''
        line = f'{prefix}: {plan.kind} exit {rc}, {ENGINE_REFUSED[rc]}' + (f': {why}' if why else '')
        print(line, file=sys.stderr, flush=True)
        report_failure(line)
    elif runner.stopping is None and rc > 128:
        try:
            signame = signal.Signals(rc - 128).name
        except ValueError:
            signame = f'signal {rc - 128}'
        print(f'{prefix}: the container ended by {signame} (exit {rc}; out of memory, or killed from outside)',
              file=sys.stderr, flush=True)
    return rc


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser('trial-in-container', help='run this NNI trial inside the nni-xfer image (trialCommand)',
                       description=__doc__.split('\n\n')[0])
    t.add_argument('--image', default='nni-xfer:latest', help='image to run (default nni-xfer:latest); never pulled')
    t.add_argument('--engine', default=os.environ.get('NNI_XFER_CONTAINER_ENGINE'),
                   help='podman, docker or a path (default: $NNI_XFER_CONTAINER_ENGINE, else podman, else docker)')
    t.add_argument('--config', default=None,
                   help="the experiment's exp.yml, for checkpoint_root/store/dataset (default: ask NNI's REST API)")
    t.add_argument('--mount', action='append', metavar='PATH[:ro|rw]', help='one more folder to mount (repeatable)')
    t.add_argument('--env', action='append', metavar='NAME[=VALUE]', help='one more variable to pass (repeatable)')
    t.add_argument('--gpus', default='auto', choices=('auto', 'none', 'all'),
                   help="auto (default): the GPUs NNI gave the trial (CUDA_VISIBLE_DEVICES); none; all")
    t.add_argument('--user', default='host',
                   help="host (default): the caller's uid:gid, so files keep a bare trial's owner; "
                        "image: the image's user (nni); or UID[:GID]")
    t.add_argument('--engine-arg', action='append', metavar='ARG',
                   help='one more argument for `<engine> run` (repeatable), e.g. --engine-arg=--memory=8g')
    t.add_argument('--dry-run', action='store_true', help='print the engine command and exit')
    t.add_argument('command', nargs=argparse.REMAINDER,
                   help='command in the container after -- (default: python3 -m nni_xfer.trial)')
    t.set_defaults(func=cmd_trial_in_container)
    return t


# --------------------------------------------------------------------------- nni-xfer check


def storage_warnings(raw: Any) -> list[str]:
    """Warnings (not errors) about where a Kubernetes experiment keeps its checkpoints.

    On ``kubeflow`` and ``frameworkcontroller`` NNI mounts the ``storage:`` share at ``/tmp/mount``
    in every pod; children read their parents' checkpoints, so ``checkpoint_root`` must be on it.
    """
    if not isinstance(raw, dict):
        return []
    ts = raw.get('trainingService')
    services = ts if isinstance(ts, list) else [ts]
    k8s = [s for s in services if isinstance(s, dict) and s.get('platform') in ('kubeflow', 'frameworkcontroller')]
    if not k8s:
        return []
    tuner = raw.get('tuner') if isinstance(raw.get('tuner'), dict) else {}
    ckpt = (tuner.get('classArgs') or {}).get('checkpoint_root')
    platform = k8s[0]['platform']
    if not ckpt:
        return [f'tuner.classArgs.checkpoint_root: not set, so each {platform} pod writes checkpoints to its own '
                f'$NNI_XFER_HOME and children cannot load their parents; put it under {K8S_MOUNT_PATH} '
                f"(where NNI mounts the storage share)"]
    p = os.path.normpath(str(ckpt))
    if p != K8S_MOUNT_PATH and not p.startswith(K8S_MOUNT_PATH + '/'):
        return [f'tuner.classArgs.checkpoint_root: {ckpt} is not under {K8S_MOUNT_PATH}, where NNI mounts the '
                f"{platform} storage share in every pod; children on other pods will not find their parents' "
                f'checkpoints']
    return []


def config_warnings(path: str | os.PathLike) -> list[str]:
    """``nni-xfer check`` warnings for one exp.yml (never raises; problems are check_config's job)."""
    try:
        import yaml
        raw = yaml.safe_load(Path(path).read_text())
    except Exception:  # noqa: BLE001
        return []
    return storage_warnings(raw)


def main(argv: list[str] | None = None) -> int:
    """``nni-xfer trial-in-container ...`` without loading every plugin (``nni-xfer``'s full parser
    imports the method packages, torch included: seconds per trial)."""
    p = argparse.ArgumentParser(prog='nni-xfer')
    add_parser(p.add_subparsers(dest='command_name', required=True))
    args = p.parse_args(['trial-in-container'] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)
