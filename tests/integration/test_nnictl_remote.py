"""The same search on NNI's ``remote`` training service, over SSH to a throwaway sshd on 127.0.0.1."""
import getpass
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nni_xfer.adapters.experiments import create, final_metrics, finished, free_port, nnictl, wait, write_config
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.remote, pytest.mark.timeout(900)]

SSHD = shutil.which('sshd') or '/usr/sbin/sshd'


@pytest.fixture
def local_sshd(tmp_path):
    """sshd on 127.0.0.1 (loopback only) with a throwaway host key and client key; stopped by PID."""
    if not os.path.exists(SSHD) or not shutil.which('ssh-keygen'):
        pytest.skip('sshd not installed (apt-get install openssh-server)')
    if os.geteuid() != 0:
        pytest.skip('sshd for the remote test needs root (privilege separation)')
    d = tmp_path / 'sshd'
    d.mkdir()
    for name in ('host_key', 'client_key'):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(d / name)], check=True)
    (d / 'authorized_keys').write_text((d / 'client_key.pub').read_text())
    os.chmod(d / 'authorized_keys', 0o600)
    Path('/run/sshd').mkdir(exist_ok=True)
    port = free_port()
    cfg = d / 'sshd_config'
    cfg.write_text(f"""ListenAddress 127.0.0.1
Port {port}
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    proc = subprocess.Popen([SSHD, '-D', '-e', '-f', str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(d / 'sshd.log', 'w'))
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            r = subprocess.run(['ssh', '-i', str(d / 'client_key'), '-p', str(port), '-o', 'BatchMode=yes',
                                '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
                                f'{getpass.getuser()}@127.0.0.1', 'true'], capture_output=True)
            if r.returncode == 0:
                break
            if proc.poll() is not None:
                pytest.skip(f'sshd exited: {(d / "sshd.log").read_text()[-500:]}')
            time.sleep(0.5)
        else:
            pytest.skip(f'cannot ssh to the test sshd: {r.stderr.decode()[-300:]}')
        yield {'host': '127.0.0.1', 'port': port, 'user': getpass.getuser(), 'key': str(d / 'client_key')}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_quick_random_search_remote(tmp_path, local_sshd):
    platform = {
        'platform': 'remote',
        'machineList': [{
            'host': local_sshd['host'], 'port': local_sshd['port'], 'user': local_sshd['user'],
            'sshKeyFile': local_sshd['key'], 'pythonPath': str(Path(sys.executable).parent),
        }],
    }
    config, store_path = write_config(tmp_path, max_trials=3, epochs=1, platform=platform)
    port = free_port()
    exp = create(config, port)
    try:
        _, ts = wait(port, finished(3), timeout=700)
        assert [t['status'] for t in ts] == ['SUCCEEDED'] * 3
        assert all(final_metrics(t)['default'] > 0.1 for t in ts)
    finally:
        nnictl('stop', exp)
    evs = KnowledgeStore(store_path).evaluations(experiment_id=exp)
    assert [e.status for e in evs] == ['SUCCEEDED'] * 3
    for e in evs:  # checkpoints written by the remote trials, reachable here
        assert Path(e.checkpoint).is_file()
