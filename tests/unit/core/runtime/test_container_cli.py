"""``nni-xfer trial-in-container`` against a fake engine binary: the command line (mounts, env, GPU
flags), one-line failures reported to NNI, stop forwarding. The real engine: tests/integration/
test_container.py.

The fake ``podman``/``docker`` is a script that appends its argv (and for ``run`` the exit code it
was told to use) to a JSON-lines log. Failures are reported through NNI's own SDK with a trial
command channel loaded by ``NNI_TRIAL_COMMAND_CHANNEL=import://...`` (NNI's plug-in point), which
hands out one parameter and records what the trial sends.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from nni.runtime.trial_command_channel import TrialCommandChannel

from nni_xfer.runtime.container import experiment_class_args, storage_warnings

REPO = Path(__file__).resolve().parents[4]

FAKE_ENGINE = '''#!{python}
import json, os, sys, time
argv = sys.argv[1:]
log = os.environ['FAKE_ENGINE_LOG']
def record(**kw):
    with open(log, 'a') as f:
        f.write(json.dumps({{'argv': argv, **kw}}) + '\\n')
cmd = argv[0]
if cmd == 'image':
    record()
    if os.environ.get('FAKE_IMAGE_MISSING'):
        print('Error: ' + argv[-1] + ': image not known', file=sys.stderr)
        sys.exit(1)
    print('sha256:0123')
    sys.exit(0)
if cmd == 'stop':
    record()
    open(os.environ['FAKE_ENGINE_LOG'] + '.stopped', 'w').close()
    sys.exit(0)
if cmd == 'rm':
    record()
    sys.exit(0)
if cmd == 'run':
    rc = int(os.environ.get('FAKE_RUN_RC', '0'))
    record(rc=rc)
    if os.environ.get('FAKE_RUN_STDERR'):
        print(os.environ['FAKE_RUN_STDERR'], file=sys.stderr, flush=True)
    if os.environ.get('FAKE_RUN_WAIT'):
        open(log + '.running', 'w').close()
        while not os.path.exists(log + '.stopped'):
            time.sleep(0.05)
        sys.exit(143)
    sys.exit(rc)
sys.exit(99)
'''


class RecordingChannel(TrialCommandChannel):
    """A trial command channel (NNI's ``import://`` plug-in): one parameter, metrics to a file."""

    def receive_parameter(self):
        with open(os.environ['FAKE_CHANNEL_LOG'], 'a') as f:
            f.write(json.dumps({'request_parameter': True}) + '\n')
        return {'parameter_id': 7, 'parameter_source': 'algorithm',
                'parameters': {'proposal_id': 41, 'spec': {}}, 'parameter_index': 0}

    def send_metric(self, type, parameter_id, trial_job_id, sequence, value):  # noqa: A002 - NNI's name
        with open(os.environ['FAKE_CHANNEL_LOG'], 'a') as f:
            f.write(json.dumps({'type': type, 'parameter_id': parameter_id, 'trial_job_id': trial_job_id,
                                'value': value}) + '\n')


@pytest.fixture
def trial_env(tmp_path):
    """A fake engine on PATH, NNI's trial variables and the folders a trial uses."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name in ('podman', 'docker'):
        exe = bin_dir / name
        exe.write_text(FAKE_ENGINE.format(python=sys.executable))
        exe.chmod(0o755)
    code, trial_dir, home = tmp_path / 'code', tmp_path / 'trials' / 'T1', tmp_path / 'xfer-home'
    code.mkdir()
    trial_dir.mkdir(parents=True)
    home.mkdir()
    (home / 'store.db').write_text('')
    env = {
        'PATH': f'{bin_dir}:/usr/bin:/bin',
        'HOME': str(tmp_path / 'home'),
        'PYTHONPATH': f'{REPO}:{Path(__file__).resolve().parent}',
        'FAKE_ENGINE_LOG': str(tmp_path / 'engine.jsonl'),
        'FAKE_CHANNEL_LOG': str(tmp_path / 'channel.jsonl'),
        'NNI_XFER_HOME': str(home),
        'NNI_CODE_DIR': str(code),
        'NNI_SYS_DIR': str(trial_dir),
        'NNI_OUTPUT_DIR': str(trial_dir),
        'NNI_EXP_ID': 'exp1',
        'NNI_TRIAL_JOB_ID': 'T1',
        'NNI_TRIAL_SEQ_ID': '0',
        'NNI_PLATFORM': 'local',
        'NNI_TRIAL_COMMAND_CHANNEL': 'import://test_container_cli.RecordingChannel',
        'OMP_NUM_THREADS': '1',
        'SECRET_TOKEN': 'must-not-pass',
    }
    return env, tmp_path


def wrapper(env, *args, wait=True, timeout=60):
    cmd = [sys.executable, '-m', 'nni_xfer.cli', 'trial-in-container', '--image', 'nni-xfer:test', *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=env['NNI_CODE_DIR'], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=env['NNI_CODE_DIR'], capture_output=True, text=True, timeout=timeout)


def calls(tmp_path):
    path = tmp_path / 'engine.jsonl'
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def run_argv(tmp_path):
    runs = [c['argv'] for c in calls(tmp_path) if c['argv'][0] == 'run']
    assert len(runs) == 1, calls(tmp_path)
    return runs[0]


def options(argv, name):
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def reported(tmp_path):
    path = tmp_path / 'channel.jsonl'
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def test_command_line_mounts_env_and_no_store(trial_env):
    env, tmp = trial_env
    r = wrapper(env)
    assert r.returncode == 0, r.stderr
    argv = run_argv(tmp)
    assert argv[:4] == ['run', '--rm', '--init', '--pull=never']
    assert options(argv, '--network') == ['host']
    assert options(argv, '--user') == [f'{os.getuid()}:{os.getgid()}']
    assert options(argv, '--workdir') == [env['NNI_CODE_DIR']]
    assert argv[-4:] == ['nni-xfer:test', 'python3', '-m', 'nni_xfer.trial']
    home = Path(env['NNI_XFER_HOME'])
    mounts = {m.split(',')[1].removeprefix('source='): m for m in options(argv, '--mount')}
    expected = {env['NNI_CODE_DIR'], env['NNI_SYS_DIR'], str(home / 'checkpoints'), str(home / 'datasets')}
    if Path('/usr/share/datasets').is_dir():
        expected.add('/usr/share/datasets')
    assert set(mounts) == expected
    for src, m in mounts.items():
        assert f'target={src}' in m  # same path inside
    assert mounts[env['NNI_CODE_DIR']].endswith(',ro') and not mounts[env['NNI_SYS_DIR']].endswith(',ro')
    assert (home / 'checkpoints').is_dir()  # created before mounting
    assert not any(str(home / 'store.db').startswith(src + '/') or src == str(home) for src in mounts)
    passed = dict(e.split('=', 1) for e in options(argv, '--env'))
    for k in ('NNI_CODE_DIR', 'NNI_SYS_DIR', 'NNI_OUTPUT_DIR', 'NNI_EXP_ID', 'NNI_TRIAL_JOB_ID',
              'NNI_TRIAL_SEQ_ID', 'NNI_PLATFORM', 'NNI_TRIAL_COMMAND_CHANNEL', 'NNI_XFER_HOME', 'OMP_NUM_THREADS'):
        assert passed[k] == env[k], k
    assert 'SECRET_TOKEN' not in passed and 'PATH' not in passed
    assert not options(argv, '--gpus') and not options(argv, '--device')
    assert reported(tmp) == []  # the trial in the container asks NNI for its parameter, not the wrapper


def test_config_mounts_checkpoint_root_dataset_root_and_kb(trial_env):
    env, tmp = trial_env
    ckpt, data, kb = tmp / 'shared' / 'ckpt', tmp / 'data', tmp / 'xfer-home' / 'kb' / 'digits_kb'
    data.mkdir()
    kb.mkdir(parents=True)
    cfg = tmp / 'exp.yml'
    cfg.write_text(json.dumps({'tuner': {'classArgs': {
        'checkpoint_root': str(ckpt), 'dataset_args': {'root': str(data)}, 'space_args': {'kb': 'digits_kb'}}}}))
    r = wrapper(env, '--config', str(cfg), '--mount', f'{tmp}/code:ro', '--', 'python3', '-c', 'print(1)')
    assert r.returncode == 0, r.stderr
    argv = run_argv(tmp)
    mounts = options(argv, '--mount')
    assert f'type=bind,source={ckpt},target={ckpt}' in mounts and ckpt.is_dir()
    assert f'type=bind,source={data},target={data}' in mounts
    assert f'type=bind,source={kb},target={kb},ro' in mounts
    assert argv[-3:] == ['python3', '-c', 'print(1)']


def test_store_inside_a_mount_is_refused(trial_env):
    env, tmp = trial_env
    cfg = tmp / 'exp.yml'
    cfg.write_text(json.dumps({'tuner': {'classArgs': {'checkpoint_root': env['NNI_XFER_HOME']}}}))
    r = wrapper(env, '--config', str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert 'refusing to mount' in lines[0] and 'knowledge store' in lines[0]
    assert not any(c['argv'][0] == 'run' for c in calls(tmp))
    final = [m for m in reported(tmp) if m.get('type') == 'FINAL']
    assert len(final) == 1 and 'refusing to mount' in final[0]['value']['error']


@pytest.mark.parametrize('kind, visible, flags, cuda_inside', [
    ('podman', '1,3', ['--device', 'nvidia.com/gpu=1', '--device', 'nvidia.com/gpu=3'], None),
    ('docker', '1,3', ['--gpus', '"device=1,3"'], None),
    ('docker', '0', ['--gpus', '"device=0"'], None),
    ('podman', '', [], ''),        # NNI gave this trial no GPU: none inside either
])
def test_gpu_flags(trial_env, kind, visible, flags, cuda_inside):
    env, tmp = trial_env
    env['CUDA_VISIBLE_DEVICES'] = visible
    r = wrapper(env, '--engine', kind)
    assert r.returncode == 0, r.stderr
    argv = run_argv(tmp)
    gpu = [a for i, a in enumerate(argv) if a in ('--gpus', '--device') or (i and argv[i - 1] in ('--gpus', '--device'))]
    assert gpu == flags
    passed = dict(e.split('=', 1) for e in options(argv, '--env'))
    assert passed.get('CUDA_VISIBLE_DEVICES') == cuda_inside   # renumbered from 0 inside the container


def test_no_engine_is_one_line_and_failed_in_nni(trial_env):
    env, tmp = trial_env
    env['PATH'] = '/nonexistent'
    r = wrapper(env)
    assert r.returncode == 2
    assert r.stderr.strip() == ('nni-xfer trial-in-container: no container engine: neither podman nor docker '
                                'is on PATH (install one, or pass --engine)')
    final = [m for m in reported(tmp) if m.get('type') == 'FINAL']
    assert len(final) == 1 and final[0]['parameter_id'] == 7 and final[0]['trial_job_id'] == 'T1'
    value = final[0]['value']
    assert value['status'] == 'FAILED' and value['proposal_id'] == 41 and 'no container engine' in value['error']


def test_missing_image_is_one_line(trial_env):
    env, tmp = trial_env
    env['FAKE_IMAGE_MISSING'] = '1'
    r = wrapper(env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "nni-xfer trial-in-container: image nni-xfer:test not found in podman's local images "
        '(build it: bash scripts/build_image.sh --tag nni-xfer:test)']
    assert not any(c['argv'][0] == 'run' for c in calls(tmp))
    value = [m for m in reported(tmp) if m.get('type') == 'FINAL'][0]['value']
    assert value['status'] == 'FAILED' and 'not found' in value['error']


def test_engine_refusal_names_the_engines_error(trial_env):
    env, tmp = trial_env
    env['FAKE_RUN_RC'] = '125'
    env['FAKE_RUN_STDERR'] = 'Error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI permission denied'
    r = wrapper(env)
    assert r.returncode == 125
    last = r.stderr.strip().splitlines()[-1]
    assert last == ('nni-xfer trial-in-container: podman exit 125, the engine could not create or start the '
                    'container: ' + env['FAKE_RUN_STDERR'])
    value = [m for m in reported(tmp) if m.get('type') == 'FINAL'][0]['value']
    assert value == {'status': 'FAILED', 'error': last, 'trial_id': 'T1', 'proposal_id': 41}


def test_trial_failure_inside_is_not_reported_again(trial_env):
    env, tmp = trial_env
    env['FAKE_RUN_RC'] = '1'   # the trial itself failed (and reported its own line to NNI)
    r = wrapper(env)
    assert r.returncode == 1
    assert reported(tmp) == []  # its parameter belongs to the trial that ran


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_stops_the_container(trial_env, sig):
    """NNI cancels a trial with SIGINT (then SIGKILL 5 s later); the container must be stopped."""
    env, tmp = trial_env
    env['FAKE_RUN_WAIT'] = '1'
    p = wrapper(env, wait=False)
    deadline = time.monotonic() + 60
    while not (tmp / 'engine.jsonl.running').exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert time.monotonic() - t0 < 5, 'must end within NNI\'s 5 s grace'
    assert p.returncode == 128 + sig
    name = options(run_argv(tmp), '--name')[0]
    verbs = [c['argv'] for c in calls(tmp) if c['argv'][0] in ('stop', 'rm')]
    assert verbs[0] == ['stop', '-t', '2', name] and ['rm', '-f', name] in verbs
    assert reported(tmp) == []


def test_dry_run_prints_the_command(trial_env):
    env, tmp = trial_env
    r = wrapper(env, '--dry-run', '--engine', 'docker', '--engine-arg=--memory=8g')
    assert r.returncode == 0
    assert r.stdout.startswith(f"{tmp}/bin/docker run --rm --init --pull=never --name nni-xfer-exp1-T1-")
    assert '--memory=8g nni-xfer:test python3 -m nni_xfer.trial' in r.stdout
    assert calls(tmp) == []


def test_class_args_from_nni_rest_api():
    """Without --config the wrapper asks the manager behind NNI_TRIAL_COMMAND_CHANNEL for the profile."""
    profile = {'params': {'tuner': {'className': 'nni_xfer.tuner.XferTuner',
                                    'classArgs': {'checkpoint_root': '/shared/ckpt'}}}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(profile).encode() if self.path == '/api/v1/nni/experiment' else b'{}'
            self.send_response(200 if self.path == '/api/v1/nni/experiment' else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = HTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        args, source = experiment_class_args(None, {'NNI_TRIAL_COMMAND_CHANNEL': f'http://localhost:{port}/env/x'})
        assert args == {'checkpoint_root': '/shared/ckpt'} and source == f'NNI manager localhost:{port}'
    finally:
        server.shutdown()
    args, source = experiment_class_args(None, {})
    assert args == {} and source.startswith('defaults')


def test_storage_warning_for_kubernetes_checkpoint_root():
    import yaml
    for name in ('frameworkcontroller.yml', 'kubeflow.yml'):
        raw = yaml.safe_load((REPO / 'examples' / 'training_services' / name).read_text())
        assert storage_warnings(raw) == [], name
        raw['tuner']['classArgs']['checkpoint_root'] = '/data/ckpt'
        (w,) = storage_warnings(raw)
        assert w.startswith('tuner.classArgs.checkpoint_root: /data/ckpt is not under /tmp/mount')
        del raw['tuner']['classArgs']['checkpoint_root']
        (w,) = storage_warnings(raw)
        assert 'not set' in w
    local = yaml.safe_load((REPO / 'examples' / 'quickstart' / 'exp.yml').read_text())
    assert storage_warnings(local) == []


@pytest.mark.slow
def test_check_prints_the_warning_and_still_passes(tmp_path):
    import yaml
    raw = yaml.safe_load((REPO / 'examples' / 'training_services' / 'kubeflow.yml').read_text())
    raw['tuner']['classArgs']['checkpoint_root'] = '/data/ckpt'
    cfg = tmp_path / 'k.yml'
    cfg.write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, '-m', 'nni_xfer.cli', 'check', str(cfg)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'{cfg}: OK' in r.stdout
    assert f'{cfg}: warning: tuner.classArgs.checkpoint_root: /data/ckpt is not under /tmp/mount' in r.stdout
