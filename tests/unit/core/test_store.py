"""The knowledge store on SQLite and (when NNI_XFER_TEST_PG_URL names a server) PostgreSQL: rows,
idempotent writes, schema versions and migrations, store copy, secrets, bad settings."""
from __future__ import annotations

import json
import sqlite3
import time

import pytest
import sqlalchemy as sa

from nni_xfer.errors import ConfigError
from nni_xfer.store import (SCHEMA_VERSION, KnowledgeStore, StoreError, check_store_setting, mask_url,
                            parse_store, schema_t)
from store_backends import store_url  # noqa: F401  (fixture)


def _fill(s: KnowledgeStore, exp: str = 'e1', n: int = 3) -> None:
    s.record_experiment(exp, strategy='random', space='toy', dataset='digits', config={'seed': 0})
    for i in range(n):
        parent = {'experiment_id': exp, 'proposal_id': i - 1} if i else None
        s.record_proposal(exp, i, architecture={'w': i}, strategy='random', space='toy', dataset='digits',
                          parent=parent, spec={'id': i})
        s.record_result(exp, i, {'default': i / 10, 'checkpoint': f'/c/{i}.pt', 'sha256': f'h{i}'},
                        status='SUCCEEDED', trial_id=f't{i}')
    s.save_strategy_state(exp, {'step': n})


def test_rows_round_trip(store_url):  # noqa: F811
    s = KnowledgeStore(store_url)
    _fill(s)
    s.record_module('/kb', 'resnet', 0, file='/kb/0.pt', arch='resnet18', in_channels=3, meta={'acc': 0.9})
    s.record_search_finished('e1')
    s.record_experiment_error('e1', 'boom\n  twice')
    assert [e.metric() for e in s.evaluations(experiment_id='e1')] == [0.0, 0.1, 0.2]
    assert s.get('e1', 2).checkpoint == '/c/2.pt' and s.get('e1', 2).trial_id == 't2'
    assert [e.proposal_id for e in s.lineage('e1', 2)] == [2, 1, 0]
    assert s.find_architecture('toy', {'w': 1})[0].proposal_id == 1
    assert [e.proposal_id for e in s.best('e1', k=2)] == [2, 1]
    assert s.strategy_state('e1') == {'step': 3}
    assert s.modules('/kb')[0]['meta'] == {'acc': 0.9}
    assert s.search_finished('e1') and not s.search_finished('e2')
    assert s.experiment_errors('e1') == ['boom twice']
    assert s.experiments()[0]['config'] == {'seed': 0}
    assert s.schema_version == SCHEMA_VERSION
    s.close()
    r = KnowledgeStore(store_url, readonly=True)   # a reader sees the same rows
    assert len(r.evaluations(status='SUCCEEDED')) == 3 and r.check() == []
    with pytest.raises(StoreError, match='read-only'):
        r.record_experiment('e2')
    r.close()


def test_writes_are_idempotent(store_url):  # noqa: F811
    s = KnowledgeStore(store_url)
    _fill(s, n=2)
    before = s.get('e1', 1)
    s.record_result('e1', 1, {'default': 0.1, 'checkpoint': '/c/1.pt', 'sha256': 'h1'}, status='SUCCEEDED',
                    trial_id='t1')
    again = s.get('e1', 1)
    assert (again.metrics, again.status, again.trial_id) == (before.metrics, before.status, before.trial_id)
    s.record_proposal('e1', 1, architecture={'w': 9})          # a re-issued proposal: one row, replaced
    assert len(s.evaluations(experiment_id='e1')) == 2 and s.get('e1', 1).status == 'WAITING'
    for _ in range(3):
        s.record_experiment_error('e1', 'stopped')
        s.record_search_finished('e1')
    assert s.experiment_errors('e1') == ['stopped'] and s.counts()['search_finished'] == 1
    with pytest.raises(KeyError):
        s.record_result('e1', 99, None, status='FAILED')
    s.close()


OLD_SCHEMA = """
CREATE TABLE experiments (experiment_id TEXT PRIMARY KEY, strategy TEXT, space TEXT, dataset TEXT,
    config TEXT, created REAL, updated REAL);
CREATE TABLE evaluations (experiment_id TEXT NOT NULL, parameter_id INTEGER NOT NULL, trial_id TEXT,
    strategy TEXT, space TEXT, dataset TEXT, architecture TEXT NOT NULL, arch_key TEXT NOT NULL, parent TEXT,
    init TEXT, spec TEXT, status TEXT NOT NULL, metrics TEXT, error TEXT, checkpoint TEXT, sha256 TEXT,
    created REAL, updated REAL, PRIMARY KEY (experiment_id, parameter_id));
CREATE TABLE experiment_errors (experiment_id TEXT NOT NULL, message TEXT NOT NULL, created REAL);
"""


def test_a_store_of_the_oldest_layout_is_migrated_on_open(tmp_path):
    """A file written before versioning (``parameter_id``, tables missing, a duplicated error row)."""
    path = tmp_path / 'old.db'
    with sqlite3.connect(path) as c:
        c.executescript(OLD_SCHEMA)
        c.execute("INSERT INTO evaluations VALUES ('old',0,NULL,'random','toy','digits','{\"w\":1}','{\"w\":1}',"
                  "NULL,NULL,NULL,'SUCCEEDED','{\"default\":0.5}',NULL,NULL,NULL,1.0,1.0)")
        c.execute("INSERT INTO evaluations VALUES ('old',1,NULL,'random','toy','digits','{\"w\":2}','{\"w\":2}',"
                  "'{\"experiment_id\": \"old\", \"parameter_id\": 0}',NULL,NULL,'SUCCEEDED','{}',NULL,NULL,NULL,"
                  "2.0,2.0)")
        c.executemany("INSERT INTO experiment_errors VALUES ('old','boom',?)", [(1.0,), (2.0,)])
    c.close()
    with pytest.raises(StoreError, match='store migrate'):        # a reader never changes it
        KnowledgeStore(path, readonly=True)
    s = KnowledgeStore(path)
    assert s.schema_version_found == 0 and s.schema_version == SCHEMA_VERSION
    assert s.get('old', 0).metric() == 0.5 and s.experiment_errors('old') == ['boom']
    assert s.get('old', 1).parent == {'experiment_id': 'old', 'proposal_id': 0}   # the parent's key renamed too
    assert [e.proposal_id for e in s.lineage('old', 1)] == [1, 0]
    s.save_strategy_state('old', {'a': 1})                        # a table the old layout lacked
    with s.engine.connect() as c:
        versions = [r[0] for r in c.execute(sa.select(schema_t.c.version).order_by(schema_t.c.version))]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    s.close()
    assert KnowledgeStore(path).schema_version_found == SCHEMA_VERSION   # migrated once


def test_a_newer_schema_is_refused_and_left_alone(store_url):  # noqa: F811
    s = KnowledgeStore(store_url)
    _fill(s, n=1)
    with s.engine.begin() as c:
        c.execute(schema_t.insert().values(version=SCHEMA_VERSION + 1, applied=time.time(), description='future'))
    s.close()
    for readonly in (False, True):
        with pytest.raises(StoreError) as e:
            KnowledgeStore(store_url, readonly=readonly)
        assert f'schema version {SCHEMA_VERSION + 1} is newer' in str(e.value) and '\n' not in str(e.value)
        assert str(e.value).startswith(f'store: {mask_url(store_url)}')


def test_store_copy_adds_each_row_once_and_rerun_is_a_no_op(tmp_path, store_url):  # noqa: F811
    src = KnowledgeStore(tmp_path / 'personal.db')
    _fill(src, 'a', 4)
    _fill(src, 'b', 2)
    src.record_experiment_error('a', 'x')
    src.record_module('/kb', 'vgg', 1, file='/kb/1.pt')
    dst = KnowledgeStore(store_url)
    _fill(dst, 'team', 2)                       # the team store has rows of its own
    done = src.copy_into(dst)
    assert done['evaluations'] == (6, 0) and done['experiments'] == (2, 0) and done['kb_modules'] == (1, 0)
    counts = dst.counts()
    assert counts['evaluations'] == 8 and counts['experiments'] == 3 and counts['experiment_errors'] == 1
    again = src.copy_into(dst)
    assert all(written == 0 for written, _ in again.values()) and dst.counts() == counts
    src.record_result('b', 1, {'default': 0.99}, status='SUCCEEDED')   # a later result: copied over
    third = src.copy_into(dst)
    assert third['evaluations'] == (1, 5) and dst.get('b', 1).metric() == 0.99 and dst.counts() == counts
    assert [e.to_dict() for e in dst.evaluations(experiment_id='a')] == \
        [e.to_dict() for e in src.evaluations(experiment_id='a')]


def test_urls_and_secrets(tmp_path, monkeypatch):
    assert parse_store('sqlite:///rel.db').path == 'rel.db'
    assert parse_store(f'sqlite:///{tmp_path}/a.db').path == f'{tmp_path}/a.db'
    assert parse_store(str(tmp_path / 'b.db')).path == str(tmp_path / 'b.db')
    monkeypatch.setenv('NNI_XFER_STORE', str(tmp_path / 'env.db'))
    assert parse_store(None).path == str(tmp_path / 'env.db')
    u = parse_store('postgresql://me:s3cret@db.example:5432/team')
    assert u.backend == 'postgresql' and u.url.drivername == 'postgresql+psycopg'
    assert 's3cret' not in u.display and u.display == 'postgresql://me:***@db.example:5432/team'
    with pytest.raises(ConfigError) as e:
        check_store_setting('postgresql://me:s3cret@db.example/team')
    assert e.value.field == 'classArgs.store' and 's3cret' not in str(e.value) and 'PGPASSWORD' in str(e.value)
    check_store_setting('postgresql://me@db.example/team')
    with pytest.raises(StoreError) as e:
        parse_store('mysql://me:pw@h/db')
    assert 'unknown kind of store' in str(e.value) and 'postgresql://' in str(e.value) and 'pw@' not in str(e.value)
    with pytest.raises(StoreError, match='needs a database'):
        parse_store('postgresql://me@h')
    # a URL inside a config is saved masked
    s = KnowledgeStore(tmp_path / 's.db')
    s.record_experiment('e', config={'store': 'postgresql://me:s3cret@h/db', 'strategy_args': {'store': 'x'}})
    assert 's3cret' not in json.dumps(s.experiments())


def test_unreachable_server_and_wrong_password_are_one_line(store_url):  # noqa: F811
    t0 = time.monotonic()
    with pytest.raises(StoreError) as e:
        KnowledgeStore('postgresql://nobody@127.0.0.1:9/nodb', retry_s=0.5)   # port 9: nothing listens
    assert time.monotonic() - t0 < 20
    assert str(e.value).startswith('store: postgresql://nobody@127.0.0.1:9/nodb: ') and '\n' not in str(e.value)
    if not store_url.startswith('postgresql'):
        return
    wrong = parse_store(store_url).url.set(password='not-the-password')
    text = wrong.render_as_string(hide_password=False).replace('+psycopg', '')
    with pytest.raises(StoreError) as e:
        KnowledgeStore(text, retry_s=0.5)
    assert 'password authentication failed' in str(e.value) and 'not-the-password' not in str(e.value)
    assert '\n' not in str(e.value)
