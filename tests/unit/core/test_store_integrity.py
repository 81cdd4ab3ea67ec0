"""A corrupt, empty or missing store file is one line naming it, for every command, and is never
written: real files (truncated, garbage header, garbage middle, 0 bytes, missing), md5 before and after."""
from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import threading

import pytest

from nni_xfer.errors import ConfigError
from nni_xfer.store import KnowledgeStore, StoreError, check_store

CASES = ('truncated', 'garbage_header', 'garbage_middle', 'empty', 'missing')


def _good_store(path) -> None:
    s = KnowledgeStore(path)
    s.record_experiment('e1', strategy='random', space='simple_cnn', dataset='digits', config={})
    for i in range(40):
        s.record_proposal('e1', i, architecture={'w': i, 'pad': 'x' * 500}, space='simple_cnn', strategy='random')
        s.record_result('e1', i, {'default': i / 40}, status='SUCCEEDED')
    s.close()   # the last writer closing: WAL checkpointed into the file, no -wal left


def make_case(tmp_path, case: str):
    path = tmp_path / f'{case}.db'
    if case == 'missing':
        return path
    good = tmp_path / 'good.db'
    if not good.exists():
        _good_store(good)
    data = good.read_bytes()
    assert len(data) > 40_000
    if case == 'truncated':
        data = data[:len(data) // 2 + 100]
    elif case == 'garbage_header':
        data = b'this is no database at all' + data[26:]
    elif case == 'garbage_middle':
        mid = len(data) // 3
        data = data[:mid] + bytes((i * 37 + 11) % 256 for i in range(20_000)) + data[mid + 20_000:]
    elif case == 'empty':
        data = b''
    path.write_bytes(data)
    return path


def md5(path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else None


def siblings(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


@pytest.mark.parametrize('case', CASES)
def test_every_open_refuses_a_bad_file_in_one_line_and_changes_nothing(tmp_path, case):
    path = make_case(tmp_path, case)
    before, files = md5(path), siblings(path)
    for readonly in (True, False):
        if case == 'missing' and not readonly:
            continue                 # a writer creates a new store where none is: that is not a bad file
        with pytest.raises(StoreError) as e:
            KnowledgeStore(path, readonly=readonly)
        text = str(e.value)
        assert str(path) in text and '\n' not in text, text
        if case == 'missing':
            assert text == f'store: no store at {path}'
        else:
            assert 'restore a backup' in text and 'nni-xfer store check' in text
    # the config check (nni-xfer check, NNI's classArgs validator) says it too; a missing store is fine
    if case == 'missing':
        check_store(str(path))
    else:
        with pytest.raises(StoreError):
            check_store(str(path))
    assert md5(path) == before and siblings(path) == files     # not written, no -wal/-shm left beside it


@pytest.fixture
def cli(capsys, monkeypatch):
    """``nni-xfer ARGS`` in this process (the console script's own ``main``): (exit code, stdout, stderr)."""
    from nni_xfer.cli import main

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        rc = main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out.out, out.err)
    return run


@pytest.mark.parametrize('case', CASES)
def test_read_only_commands_on_a_bad_file(tmp_path, case, cli):
    """``store check``, ``store export``, ``report``, ``store backup``: exit code, one line naming the file."""
    path = make_case(tmp_path, case)
    before, files = md5(path), siblings(path)
    for args in (('store', 'check'), ('store', 'export'), ('report', 'e1', '-o', str(tmp_path / 'rep')),
                 ('store', 'backup', str(tmp_path / 'backup.db'))):
        out = cli(*args, '--store', str(path))
        assert out.returncode in (1, 2), (args, out)
        lines = (out.stdout + out.stderr).strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and 'Traceback' not in lines[0], (args, lines)
    assert md5(path) == before and siblings(path) == files
    assert not (tmp_path / 'backup.db').exists()


def test_read_only_commands_never_create_the_default_store(tmp_path, cli):
    import yaml
    from nni_xfer.adapters.experiments import write_config
    home = tmp_path / 'home'
    for args in (('store', 'check'), ('store', 'export'), ('report', 'e1')):
        out = cli(*args, env={'NNI_XFER_HOME': str(home), 'NNI_XFER_STORE': ''})
        assert out.returncode == 2 and f'no store at {home / "store.db"}' in out.stderr, out
    # `nni-xfer check` of a config on the default store (XferNAS reads it for source knowledge)
    config, _ = write_config(tmp_path, evaluator='mock', evaluator_args={},
                             class_args={'strategy': 'xfernas', 'space': 'nasnet_cells',
                                         'space_args': {'B': 2, 'N': 1, 'F': 4, 'ops': 'nao_ws'}})
    raw = yaml.safe_load(config.read_text())
    del raw['tuner']['classArgs']['store']
    config.write_text(yaml.safe_dump(raw))
    out = cli('check', str(config))
    assert out.returncode == 0 and 'OK' in out.stdout, out
    assert not home.exists()


def test_store_check_and_backup_of_a_good_store_while_it_is_written(tmp_path, cli):
    path = tmp_path / 'live.db'
    _good_store(path)
    out = cli('store', 'check', '--store', str(path))
    assert out.returncode == 0 and 'OK' in out.stdout and 'evaluations        40' in out.stdout, out
    # a writer keeps adding rows while the online backup runs
    stop = threading.Event()

    def write():
        s = KnowledgeStore(path)
        i = 100
        while not stop.is_set():
            s.record_proposal('e2', i, architecture={'i': i})
            i += 1
        s.close()
    t = threading.Thread(target=write)
    t.start()
    try:
        out = cli('store', 'backup', str(tmp_path / 'b.db'), '--store', str(path))
    finally:
        stop.set()
        t.join()
    assert out.returncode == 0, out
    with sqlite3.connect(tmp_path / 'b.db') as c:
        assert c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        assert c.execute("SELECT count(*) FROM evaluations WHERE experiment_id='e1'").fetchone()[0] == 40
    assert KnowledgeStore(tmp_path / 'b.db', readonly=True).check() == []
    again = cli('store', 'backup', str(tmp_path / 'b.db'), '--store', str(path))
    assert again.returncode == 2 and 'exists already' in again.stderr


def test_an_sqlite_file_without_tables_reads_as_empty_and_is_not_written(tmp_path):
    path = tmp_path / 'blank.db'
    sqlite3.connect(path).execute('CREATE TABLE other (x)').connection.close()
    before = md5(path)
    r = KnowledgeStore(path, readonly=True)
    assert r.evaluations() == [] and r.experiments() == [] and r.counts()['evaluations'] == 0
    r.close()
    assert md5(path) == before


def test_the_tuner_and_nas_experiment_refuse_a_corrupt_store(tmp_path, monkeypatch):
    """The tuner (plain nnictl) stops at start with one line naming the file; ``XferStrategy`` (the
    Python ``NasExperiment``) raises before the experiment runs. Neither writes the file."""
    from nni import NoMoreTrialError

    from nni_xfer.adapters.nas import XferStrategy
    from nni_xfer.adapters.tuner import XferTuner
    path = make_case(tmp_path, 'garbage_middle')
    before = md5(path)
    monkeypatch.setenv('NNI_EXP_ID', 'exp-corrupt')
    args = dict(strategy='random', space='simple_cnn', dataset='digits', evaluator='mock', store=str(path),
                checkpoint_root=str(tmp_path / 'ckpt'), seed=0)
    with pytest.raises(ConfigError) as e:       # outside NNI's dispatcher the set-up is synchronous
        XferTuner(**args)
    assert str(e.value).startswith(f'classArgs.store: {path}: corrupt') and '\n' not in str(e.value)
    # inside it (set-up in the background): the first request stops the experiment with that line
    monkeypatch.setenv('NNI_TUNER_COMMAND_CHANNEL', 'ws://127.0.0.1:9/unused')
    t = XferTuner(**args)
    with pytest.raises(NoMoreTrialError):
        t.generate_parameters(0)
    assert f'classArgs.store: {path}: corrupt' in t._error and '\n' not in t._error
    with pytest.raises(StoreError, match='corrupt'):
        XferStrategy('random', store=str(path))
    assert md5(path) == before and siblings(path) == [path.name]
