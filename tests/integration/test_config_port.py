"""``nni-xfer run`` on a busy port (issue 24 item 7): one line, nothing created."""
import socket
import subprocess
import sys
import uuid

import pytest
import yaml

from nni_xfer.adapters.experiments import nnictl, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_run_on_a_busy_port_is_one_line_and_creates_nothing(tmp_path):
    config, store = write_config(tmp_path, max_trials=1, evaluator='mock', evaluator_args={})
    name = f'nni-xfer busy-port test {uuid.uuid4().hex[:8]}'
    cfg = yaml.safe_load(config.read_text())
    cfg['experimentName'] = name
    config.write_text(yaml.safe_dump(cfg))
    with socket.socket() as listener:          # a real listening socket, as another NNI manager would hold
        listener.bind(('127.0.0.1', 0))
        listener.listen()
        port = listener.getsockname()[1]
        out = subprocess.run([sys.executable, '-m', 'nni_xfer.cli', 'run', str(config), '--port', str(port)],
                             capture_output=True, text=True, timeout=240)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f'nni-xfer: port {port} is in use (another NNI experiment?); pass --port, '
                               'e.g. --port '), lines
    suggested = int(lines[0].rsplit(' ', 1)[1])
    assert suggested != port
    assert out.stdout == ''
    assert not store.exists(), 'the knowledge store was opened before the port was checked'
    assert name not in nnictl('experiment', 'list', '--all'), 'an experiment was created'
