"""Store backends for the store tests: SQLite always, PostgreSQL when ``NNI_XFER_TEST_PG_URL`` names a
server (a real one: ``.ci/run`` starts a throwaway cluster; see scripts/pg_throwaway.sh).

Each PostgreSQL test gets a database of its own, created on the server and dropped afterwards."""
from __future__ import annotations

import os
import uuid

import pytest

PG_ENV = 'NNI_XFER_TEST_PG_URL'
BACKENDS = ['sqlite', pytest.param('postgresql', marks=pytest.mark.skipif(
    not os.environ.get(PG_ENV), reason=f'no PostgreSQL server ({PG_ENV} not set)'))]


def pg_admin():
    import sqlalchemy as sa
    from nni_xfer.store import parse_store
    return sa.create_engine(parse_store(os.environ[PG_ENV]).url, isolation_level='AUTOCOMMIT')


def new_pg_database() -> tuple[str, str]:
    """(URL, name) of a new empty database on the test server."""
    import sqlalchemy as sa
    from nni_xfer.store import parse_store
    name = f'nnix_{uuid.uuid4().hex[:12]}'
    eng = pg_admin()
    with eng.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE {name}'))
    eng.dispose()
    url = parse_store(os.environ[PG_ENV]).url.set(database=name)
    return url.render_as_string(hide_password=False).replace('postgresql+psycopg://', 'postgresql://'), name


def drop_pg_database(name: str) -> None:
    import sqlalchemy as sa
    eng = pg_admin()
    with eng.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)'))
    eng.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """A store setting for a new, empty store on each backend."""
    if request.param == 'sqlite':
        yield str(tmp_path / 'store.db')
        return
    url, name = new_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)
