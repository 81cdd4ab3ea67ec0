"""Dataset cache under $NNI_XFER_HOME/datasets (issue 13): same data as a fresh build, built once
by racing processes, rebuilt after a killed builder / a damaged file / a new dataset version."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nni_xfer.data import builtin
from nni_xfer.data import pipeline as D
from nni_xfer.data.pipeline import cache_path, load_dataset

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[4]
KEYS = ('train_x', 'train_y', 'val_x', 'val_y', 'test_x', 'test_y')
SYN = {'num_samples': 3000, 'image_size': 12, 'in_channels': 2, 'num_classes': 5}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv('NNI_XFER_HOME', str(tmp_path / 'home'))
    monkeypatch.delenv('NNI_XFER_DATASET_CACHE', raising=False)
    return tmp_path / 'home'


def assert_same(a, b):
    for k in KEYS:
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and torch.equal(x, y), k


def digest(splits) -> str:
    import hashlib
    h = hashlib.sha256()
    for k in KEYS:
        h.update(getattr(splits, k).contiguous().numpy().tobytes())
    return h.hexdigest()


def test_cached_equals_fresh_and_is_not_rebuilt(monkeypatch):
    fresh = load_dataset('digits', cache=False, val_size=0.2, seed=3)
    first = load_dataset('digits', val_size=0.2, seed=3)
    assert_same(fresh, first)
    monkeypatch.setattr(builtin.Digits, 'load', lambda *a, **k: pytest.fail('rebuilt instead of read from the cache'))
    again = load_dataset('digits', val_size=0.2, seed=3, limit_train=50)  # limit_train shares the cache
    assert len(again.train_y) == 50
    assert torch.equal(again.train_x, fresh.train_x[:50]) and torch.equal(again.val_x, fresh.val_x)
    assert cache_path('digits', val_size=0.2, seed=3) != cache_path('digits', val_size=0.2, seed=4)
    # writing into the returned (memory-mapped) tensors never changes the cache
    again.val_x.add_(1.0)
    assert_same(load_dataset('digits', val_size=0.2, seed=3), fresh)


RACER = r'''
import json, os, sys, time
from nni_xfer.data import pipeline as D
built = []
orig = D._prepare
def counted(*a, **k):
    built.append(1)
    time.sleep(0.5)  # hold the build open so that the other process arrives while it runs
    return orig(*a, **k)
D._prepare = counted
go = float(sys.argv[1])
while time.time() < go:
    time.sleep(0.005)
s = D.load_dataset('synthetic', **json.loads(sys.argv[2]))
import hashlib
h = hashlib.sha256()
for k in ('train_x', 'train_y', 'val_x', 'val_y', 'test_x', 'test_y'):
    h.update(getattr(s, k).contiguous().numpy().tobytes())
print(json.dumps({'built': len(built), 'digest': h.hexdigest()}))
'''


@pytest.mark.slow
def test_two_processes_racing_build_once_and_read_the_same_data(home):
    go = time.time() + 8.0  # both processes start building at the same instant
    env = dict(os.environ, NNI_XFER_HOME=str(home), OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', RACER, str(go), json.dumps(SYN)], cwd=str(ROOT), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    expected = digest(load_dataset('synthetic', cache=False, **SYN))
    assert [o['digest'] for o in outs] == [expected, expected]
    assert sorted(o['built'] for o in outs) == [0, 1]  # the lock: one built, the other read its file
    files = sorted(p.name for p in (home / 'datasets').iterdir())
    assert len([f for f in files if f.endswith('.pt')]) == 1 and not [f for f in files if f.endswith('.tmp')]


KILLED = r'''
import os, signal, sys
import torch
from nni_xfer.data import pipeline as D
real_save = torch.save
def dying_save(obj, f, *a, **k):
    import io
    buf = io.BytesIO()
    real_save(obj, buf)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half the file, then the builder dies
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
D.load_dataset('synthetic', **__import__('json').loads(sys.argv[1]))
'''


def test_killed_builder_leaves_no_usable_file_and_the_next_load_rebuilds(home):
    env = dict(os.environ, NNI_XFER_HOME=str(home), OMP_NUM_THREADS='1')
    p = subprocess.run([sys.executable, '-c', KILLED, json.dumps(SYN)], cwd=str(ROOT), env=env,
                       capture_output=True, text=True, timeout=100)
    assert p.returncode == -9
    path = cache_path('synthetic', {**SYN, 'seed': 0})
    leftovers = list(path.parent.glob('*.tmp'))
    assert leftovers and not path.exists()  # the partial file never took the cache file's name
    assert D._cache_read(path) is None
    assert_same(load_dataset('synthetic', **SYN), load_dataset('synthetic', cache=False, **SYN))
    assert D._cache_read(path) is not None


@pytest.mark.parametrize('damage', ['truncate', 'flip_byte', 'no_marker'])
def test_damaged_cache_file_is_rebuilt(damage):
    args = {'num_samples': 64, 'image_size': 8}
    ref = load_dataset('synthetic', cache=False, **args)
    load_dataset('synthetic', **args)
    path = cache_path('synthetic', {**args, 'seed': 0})
    data = path.read_bytes()
    if damage == 'truncate':
        path.write_bytes(data[: len(data) // 2])
    elif damage == 'flip_byte':  # same size, different content: caught by the hash
        pos = len(data) // 2
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:])
    else:  # killed between the data file and its marker
        D._marker(path).unlink()
    assert D._cache_read(path) is None
    assert_same(load_dataset('synthetic', **args), ref)
    assert D._cache_read(path) is not None


def test_new_dataset_version_is_a_new_cache_entry(monkeypatch):
    args = {'num_samples': 64, 'image_size': 8}
    old = load_dataset('synthetic', **args)
    old_path = cache_path('synthetic', {**args, 'seed': 0})
    real_load = builtin.Synthetic.load

    def load_v2(self, root, download, **a):  # version 2 of the dataset returns different images
        tx, ty, ex, ey = real_load(self, root, download, **a)
        return tx.flip(-1), (ty + 1) % 4, ex.flip(-1), (ey + 1) % 4

    monkeypatch.setattr(builtin.Synthetic, 'load', load_v2)
    monkeypatch.setattr(builtin.Synthetic, 'version', 2)
    new_path = cache_path('synthetic', {**args, 'seed': 0})
    assert new_path != old_path
    new = load_dataset('synthetic', **args)
    assert_same(new, load_dataset('synthetic', cache=False, **args))
    assert not torch.equal(new.train_y, old.train_y) and not torch.equal(new.train_x, old.train_x)
    assert old_path.exists() and new_path.exists()


def test_cache_off_by_environment(monkeypatch, home):
    monkeypatch.setenv('NNI_XFER_DATASET_CACHE', '0')
    load_dataset('digits')
    assert not (home / 'datasets').exists()


def test_unwritable_cache_location_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / 'not-a-dir'
    blocker.write_text('a file where the cache folder would go')
    monkeypatch.setenv('NNI_XFER_HOME', str(blocker))
    with pytest.warns(UserWarning, match='dataset cache'):
        got = load_dataset('digits')
    assert_same(got, load_dataset('digits', cache=False))
