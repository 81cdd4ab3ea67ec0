"""``nni-xfer run`` on a corrupt knowledge store: one line naming the file, no NNI experiment created
(``nnictl experiment list --all``), the file unchanged (md5)."""
import hashlib
import subprocess
import sys
import uuid

import pytest
import yaml

from nni_xfer.adapters.experiments import free_port, nnictl, write_config
from nni_xfer.store import KnowledgeStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def test_run_refuses_a_corrupt_store_before_nnictl_create(tmp_path):
    config, store_path = write_config(tmp_path, max_trials=1, evaluator='mock', evaluator_args={})
    s = KnowledgeStore(store_path)
    for i in range(30):
        s.record_proposal('earlier', i, architecture={'pad': 'x' * 600, 'i': i}, space='simple_cnn')
    s.close()
    data = store_path.read_bytes()
    name = f'nni-xfer corrupt store {uuid.uuid4().hex[:8]}'
    raw = yaml.safe_load(config.read_text())
    raw['experimentName'] = name
    config.write_text(yaml.safe_dump(raw))
    for case, bad in (('garbage header', b'garbage!' * 8 + data[64:]),
                      ('garbage middle', data[:8192] + bytes(range(256)) * 80 + data[8192 + 20480:])):
        store_path.write_bytes(bad)
        before = hashlib.md5(bad).hexdigest()
        out = subprocess.run([sys.executable, '-m', 'nni_xfer.cli', 'run', str(config), '--port', str(free_port())],
                             capture_output=True, text=True, timeout=300)
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        assert out.returncode != 0, (case, out)
        assert len(lines) == 1 and str(store_path) in lines[0] and 'Traceback' not in lines[0], (case, lines)
        assert 'classArgs.store' in lines[0] and 'restore a backup' in lines[0], lines
        assert hashlib.md5(store_path.read_bytes()).hexdigest() == before, case
        assert not any(p.name.startswith('store.db-') for p in tmp_path.iterdir()), case
    try:
        listed = nnictl('experiment', 'list', '--all')
    except RuntimeError as exc:      # nnictl exits non-zero when it knows no experiment at all
        listed = str(exc)
    assert name not in listed
