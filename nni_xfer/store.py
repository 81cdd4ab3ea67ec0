"""Knowledge store: every evaluation of every experiment, kept for later tasks.

Two backends behind one API, through SQLAlchemy Core (one set of table definitions, the dialect's
own upsert; see docs/store.md):

* **SQLite** (the default, no server): a file in WAL mode, ``$NNI_XFER_HOME/store.db``
  (``NNI_XFER_HOME`` defaults to ``~/.nni-xfer``). Writers on one machine.
* **PostgreSQL** (a team's shared store): ``postgresql://user@host:5432/db``. Writers on many
  machines. The password comes from libpq (``PGPASSWORD``, ``~/.pgpass``), never from the store
  setting saved in a config.

Where a store is named (``classArgs.store``, ``NasExperiment(store=...)``, ``--store``): a bare path,
``sqlite:///path.db``, a ``postgresql://`` URL, or nothing: then ``$NNI_XFER_STORE``, else the
default file. Trials never open the database; they read only files named in their spec.

Every open checks the store first (SQLite's integrity check, the schema version) and a store that
fails is never written. Read-only opens (``readonly=True``: reports, exports, other tasks'
knowledge) never create or change a file. Every store error is one line naming the store
(:class:`StoreError`). Each write is one short transaction; a lost connection is retried with
backoff, then a :class:`StoreError`.

>>> s = KnowledgeStore(':memory:')
>>> s.record_proposal('exp1', 0, strategy='random', space='tiny_cnn', dataset='digits',
...                   architecture={'width': 16})
>>> s.record_result('exp1', 0, {'default': 0.9, 'val_acc': 0.9}, status='SUCCEEDED')
>>> [e.metrics['val_acc'] for e in s.evaluations(experiment_id='exp1')]
[0.9]
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from .errors import ConfigError

STATUSES = ('WAITING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED')  # CANCELED: never evaluated, the
# experiment stopped first (``nnictl resume`` evaluates it)

SCHEMA_VERSION = 3
"""The schema this code writes. History (each step a migration in ``_MIGRATIONS``):

1. the tables as nni-xfer wrote them before versioning (a store without the version table whose
   ``evaluations`` has ``proposal_id`` is at 1; one with the older ``parameter_id`` column at 0);
2. ``experiment_errors``: one row per (experiment, message), so a retried write adds nothing;
3. a child's ``parent`` names its parent's ``proposal_id`` (rows written before the rename said
   ``parameter_id``).
"""

SQLITE_HEADER = b'SQLite format 3\x00'
ENV = 'NNI_XFER_STORE'
RETRY_ENV = 'NNI_XFER_STORE_RETRY_S'  # how long a lost connection is retried (seconds, default 60)
WHAT_TO_DO = ('restore a backup, look with `nni-xfer store check --store {store}`, '
              'or name a new store file')


class StoreError(ConfigError):
    """A store that cannot be used: one line naming it (``store: <path or URL>: <what> ...``)."""

    def __init__(self, store: str, message: str, field: str = 'store', allowed: Iterable[object] | None = None,
                 named: bool = True):
        self.store = store
        super().__init__(field, f'{store}: {message}' if named else message, allowed)


# ---------------------------------------------------------------- tables
metadata = sa.MetaData()
experiments_t = sa.Table(
    'experiments', metadata,
    sa.Column('experiment_id', sa.Text, primary_key=True),
    sa.Column('strategy', sa.Text), sa.Column('space', sa.Text), sa.Column('dataset', sa.Text),
    sa.Column('config', sa.Text),            # JSON: the tuner's classArgs (store URL without password)
    sa.Column('created', sa.Float), sa.Column('updated', sa.Float))
evaluations_t = sa.Table(
    'evaluations', metadata,
    sa.Column('experiment_id', sa.Text, primary_key=True),
    sa.Column('proposal_id', sa.Integer, primary_key=True, autoincrement=False),
    sa.Column('trial_id', sa.Text),
    sa.Column('strategy', sa.Text), sa.Column('space', sa.Text), sa.Column('dataset', sa.Text),
    sa.Column('architecture', sa.Text, nullable=False),   # JSON sample
    sa.Column('arch_key', sa.Text, nullable=False),       # canonical JSON of the architecture
    sa.Column('parent', sa.Text),    # JSON {experiment_id, proposal_id} of the parent, or NULL
    sa.Column('init', sa.Text),      # JSON init block of the trial spec
    sa.Column('spec', sa.Text),      # JSON full trial spec
    sa.Column('status', sa.Text, nullable=False),
    sa.Column('metrics', sa.Text),   # JSON final metrics dict
    sa.Column('error', sa.Text),
    sa.Column('checkpoint', sa.Text), sa.Column('sha256', sa.Text),
    sa.Column('created', sa.Float), sa.Column('updated', sa.Float),
    sa.Index('evaluations_arch', 'space', 'arch_key'))
kb_modules_t = sa.Table(
    'kb_modules', metadata,
    sa.Column('kb', sa.Text, primary_key=True),        # knowledge-base root folder (absolute)
    sa.Column('source', sa.Text, primary_key=True),    # source network name in that knowledge base
    sa.Column('position', sa.Integer, primary_key=True, autoincrement=False),  # 0-based cell position
    sa.Column('arch', sa.Text),
    sa.Column('in_channels', sa.Integer), sa.Column('out_channels', sa.Integer),
    sa.Column('in_size', sa.Integer), sa.Column('out_size', sa.Integer), sa.Column('params', sa.Integer),
    sa.Column('file', sa.Text, nullable=False), sa.Column('sha256', sa.Text),
    sa.Column('meta', sa.Text),      # JSON: width, source accuracy, dataset, ...
    sa.Column('created', sa.Float))
strategy_state_t = sa.Table(
    'strategy_state', metadata,
    sa.Column('experiment_id', sa.Text, primary_key=True),
    sa.Column('state', sa.Text, nullable=False),       # JSON state_dict of the strategy
    sa.Column('updated', sa.Float))
search_finished_t = sa.Table(
    'search_finished', metadata,
    sa.Column('experiment_id', sa.Text, primary_key=True),  # the strategy will never propose again
    sa.Column('finished', sa.Float))
experiment_errors_t = sa.Table(
    'experiment_errors', metadata,
    sa.Column('experiment_id', sa.Text, nullable=False),
    sa.Column('message', sa.Text, nullable=False),     # one line: why the search stopped
    sa.Column('created', sa.Float))
ERRORS_UNIQUE = sa.Index('experiment_errors_once', experiment_errors_t.c.experiment_id,
                         experiment_errors_t.c.message, unique=True)
schema_t = sa.Table(
    'nni_xfer_schema', metadata,
    sa.Column('version', sa.Integer, primary_key=True, autoincrement=False),
    sa.Column('applied', sa.Float), sa.Column('description', sa.Text))
DATA_TABLES = (experiments_t, evaluations_t, kb_modules_t, strategy_state_t, search_finished_t,
               experiment_errors_t)
# what is newer of two copies of a row (store copy): tables with an ``updated`` column take the newer
_NEWER = {'experiments': 'updated', 'evaluations': 'updated', 'strategy_state': 'updated'}


def default_store_path() -> Path:
    home = Path(os.environ.get('NNI_XFER_HOME', Path.home() / '.nni-xfer'))
    return home / 'store.db'


def default_store() -> str:
    """The store used when none is named: ``$NNI_XFER_STORE``, else ``$NNI_XFER_HOME/store.db``."""
    return os.environ.get(ENV) or str(default_store_path())


def arch_key(architecture: Any) -> str:
    """Canonical text of an architecture: same architecture ⇔ same key."""
    return json.dumps(architecture, sort_keys=True, separators=(',', ':'), default=str)


# ---------------------------------------------------------------- store settings (path or URL)
_URL = re.compile(r'^[A-Za-z][A-Za-z0-9+.\-]*://')
_PG_DRIVERS = {'postgresql': 'postgresql+psycopg', 'postgres': 'postgresql+psycopg',
               'postgresql+psycopg': 'postgresql+psycopg', 'postgresql+psycopg2': 'postgresql+psycopg2'}


@dataclass(frozen=True)
class StoreURL:
    """A parsed store setting. ``display`` is safe to print (password masked)."""

    backend: str            # 'sqlite' or 'postgresql'
    path: str | None        # SQLite file (or ':memory:')
    url: Any = None         # sqlalchemy URL (PostgreSQL)
    display: str = ''
    has_password: bool = False


def mask_url(text: str) -> str:
    """A URL with its password replaced by ``***`` (anything else unchanged)."""
    return re.sub(r'(://[^/:@\s]*:)[^@/\s]*@', r'\1***@', str(text))


def parse_store(setting: 'str | os.PathLike | None', field: str = 'store') -> StoreURL:
    """``None`` → ``$NNI_XFER_STORE`` or the default file; a path; ``sqlite:///path``; ``postgresql://...``."""
    raw = default_store() if setting is None or setting == '' else setting
    text = os.fspath(raw) if not isinstance(raw, str) else raw
    if text == ':memory:':
        return StoreURL('sqlite', ':memory:', display=':memory:')
    if not _URL.match(text):
        path = os.path.expanduser(text)
        return StoreURL('sqlite', path, display=path)
    shown = mask_url(text)
    try:
        url = sa.engine.make_url(text)
    except sa_exc.ArgumentError as exc:
        raise StoreError(shown, f'not a store URL ({exc})', field) from None
    name = url.drivername
    if name in ('sqlite', 'sqlite+pysqlite'):
        path = url.database or ''
        if not path:
            raise StoreError(shown, 'an SQLite URL needs a file: sqlite:///relative.db or sqlite:////abs/path.db',
                             field)
        return StoreURL('sqlite', os.path.expanduser(path), display=os.path.expanduser(path))
    if name in _PG_DRIVERS:
        if not url.database:
            raise StoreError(shown, 'a PostgreSQL URL needs a database: postgresql://user@host:5432/DBNAME', field)
        url = url.set(drivername=_PG_DRIVERS[name])
        return StoreURL('postgresql', None, url=url, display=shown, has_password=url.password is not None)
    raise StoreError(shown, f'unknown kind of store {url.get_backend_name()!r}', field,
                     allowed=['a file path', 'sqlite:///path.db', 'postgresql://user@host:port/db'])


def check_store_setting(setting: Any, field: str = 'classArgs.store') -> None:
    """A store setting fit to be saved in a config: parses, and carries no password (NNI keeps its
    experiment config, and the store keeps classArgs; libpq reads ``PGPASSWORD`` or ``~/.pgpass``)."""
    if setting is None:
        return
    if not isinstance(setting, str) or not setting:
        raise ConfigError(field, f'expected a path or a store URL, got {setting!r}')
    u = parse_store(setting, field)
    if u.has_password:
        raise ConfigError(field, f'{u.display}: no password in a saved store URL (NNI and the store keep the '
                                 'config); give it to libpq: PGPASSWORD or ~/.pgpass')


def check_store(setting: Any, field: str = 'store') -> None:
    """What ``nni-xfer check`` and the tuner's validator ask of ``classArgs.store``: a valid setting with
    no password, and, if the store exists, one that passes its check (read-only: creates nothing)."""
    check_store_setting(setting, field)
    if store_exists(setting):
        try:
            KnowledgeStore(setting, readonly=True).close()
        except StoreError as exc:
            if 'no store in this database' not in str(exc):   # a new PostgreSQL database is fine
                raise


def _mask_config(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _mask_config(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mask_config(v) for v in obj]
    if isinstance(obj, str) and '://' in obj:
        return mask_url(obj)
    return obj


# ---------------------------------------------------------------- evaluations
@dataclass
class Evaluation:
    """One proposed architecture of one experiment and, once known, its outcome."""

    experiment_id: str
    proposal_id: int
    architecture: Any
    status: str = 'WAITING'
    trial_id: str | None = None
    strategy: str | None = None
    space: str | None = None
    dataset: str | None = None
    parent: dict | None = None
    init: dict | None = None
    spec: dict | None = None
    metrics: dict | None = None
    error: str | None = None
    checkpoint: str | None = None
    sha256: str | None = None
    created: float | None = None
    updated: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f'status: {self.status!r} is not one of {", ".join(STATUSES)}')

    def metric(self, key: str = 'default', default: float | None = None) -> float | None:
        if not self.metrics or key not in self.metrics:
            return default
        return self.metrics[key]

    def to_dict(self) -> dict:
        return asdict(self)


_JSON_COLS = ('architecture', 'parent', 'init', 'spec', 'metrics')


# ---------------------------------------------------------------- SQLite file checks
def sqlite_problem(path: str) -> str | None:
    """Why an existing SQLite file is not a usable store (``None``: it passes). Reads only."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, 'rb') as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f'cannot read it ({exc.strerror or exc})'
    if size == 0:
        return 'empty file (0 bytes), not a knowledge store'
    if head != SQLITE_HEADER:
        return f'not an SQLite database (it starts with {head[:16]!r})'
    try:
        conn = _sqlite_connect(path, readonly=True)
        try:
            rows = [r[0] for r in conn.execute('PRAGMA integrity_check(5)').fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f'corrupt ({exc})'
    if rows != ['ok']:
        return f'corrupt (integrity check: {_one_line("; ".join(map(str, rows)), 300)})'
    return None


def _sqlite_connect(path: str, readonly: bool) -> sqlite3.Connection:
    if path == ':memory:':
        conn = sqlite3.connect(':memory:', check_same_thread=False, isolation_level=None)
    elif readonly:
        # no -wal file: no writer has the store open (SQLite removes it when the last one closes), and
        # ``immutable`` reads without creating -wal/-shm files beside it (a read leaves no trace)
        from urllib.parse import quote
        flags = 'mode=ro' + ('' if os.path.exists(f'{path}-wal') else '&immutable=1')
        conn = sqlite3.connect(f'file:{quote(os.path.abspath(path))}?{flags}', uri=True, timeout=30,
                               check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute('PRAGMA busy_timeout=30000')
    return conn


# ---------------------------------------------------------------- the store
class KnowledgeStore:
    """Experiments, evaluations, lineage, strategy state and knowledge-base modules, on SQLite or PostgreSQL.

    ``store``: a path, a URL, ``None`` (``$NNI_XFER_STORE`` or the default file) or ``':memory:'``.
    ``readonly``: never create, migrate or write (a missing store is ``no store at PATH``).
    """

    def __init__(self, store: 'str | os.PathLike | None' = None, *, readonly: bool = False,
                 retry_s: float | None = None):
        self.where = parse_store(store)
        self.backend = self.where.backend
        self.path = self.where.display if self.backend == 'postgresql' else self.where.path
        self.readonly = readonly
        self.retry_s = float(os.environ.get(RETRY_ENV, 60)) if retry_s is None else float(retry_s)
        self._lock = threading.RLock()
        self.schema_version_found: int | None = None
        self.engine = self._open()

    # ---- opening: check first, then (writers) migrate
    def _open(self) -> sa.engine.Engine:
        if self.backend == 'sqlite':
            return self._open_sqlite()
        return self._open_pg()

    def _open_sqlite(self) -> sa.engine.Engine:
        path = self.where.path
        memory = path == ':memory:'
        if not memory:
            if os.path.exists(path):
                problem = sqlite_problem(path)
                if problem:
                    raise StoreError(path, f'{problem}; {WHAT_TO_DO.format(store=path)}')
            elif self.readonly:
                raise StoreError(path, f'no store at {path}', named=False)
            else:
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(path, f'cannot create its folder ({exc.strerror or exc})') from None
        readonly = self.readonly and not memory
        pool = sa.pool.StaticPool if memory else sa.pool.QueuePool
        engine = sa.create_engine('sqlite://', creator=lambda: _sqlite_connect(path, readonly), poolclass=pool)

        @sa.event.listens_for(engine, 'connect')
        def _pragmas(dbapi_conn, _rec):  # noqa: ANN001
            if readonly:
                dbapi_conn.execute('PRAGMA query_only=1')
            elif not memory:
                dbapi_conn.execute('PRAGMA journal_mode=WAL')
            dbapi_conn.execute('PRAGMA synchronous=NORMAL')

        @sa.event.listens_for(engine, 'begin')
        def _begin(conn):  # noqa: ANN001
            # the driver's own transaction handling is off (isolation_level=None): writers take the
            # write lock at BEGIN, so two writers queue on busy_timeout instead of failing on upgrade
            conn.exec_driver_sql('BEGIN' if readonly else 'BEGIN IMMEDIATE')

        self._check_schema(engine)
        return engine

    def _open_pg(self) -> sa.engine.Engine:
        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - psycopg is an install requirement
            raise StoreError(self.path, 'PostgreSQL needs the psycopg package: pip install "psycopg[binary]"') \
                from None
        args = {'connect_timeout': 10, 'application_name': 'nni-xfer'}
        if self.readonly:
            args['options'] = '-c default_transaction_read_only=on'
        engine = sa.create_engine(self.where.url, pool_pre_ping=True, pool_size=2, max_overflow=4,
                                  connect_args=args, hide_parameters=True)
        self._check_schema(engine)
        return engine

    def _schema_version(self, conn: sa.Connection) -> int | None:
        """The store's schema version; ``None``: no nni-xfer tables at all (a new store)."""
        insp = sa.inspect(conn)
        tables = set(insp.get_table_names())
        if 'nni_xfer_schema' in tables:
            v = conn.execute(sa.select(sa.func.max(schema_t.c.version))).scalar()
            return int(v or 0)
        if 'evaluations' not in tables:
            return None if not tables & {t.name for t in DATA_TABLES} else 0
        cols = {c['name'] for c in insp.get_columns('evaluations')}
        return 0 if 'parameter_id' in cols else 1

    def _check_schema(self, engine: sa.engine.Engine) -> None:
        def check(conn: sa.Connection) -> None:
            if self.backend == 'postgresql' and not self.readonly:
                # one migrating writer at a time (transactional DDL; the others wait, then see it done)
                conn.execute(sa.text('SELECT pg_advisory_xact_lock(7312025)'))
            version = self._schema_version(conn)
            self.schema_version_found = version
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(self.path, f'schema version {version} is newer than this nni-xfer reads '
                                            f'({SCHEMA_VERSION}): upgrade nni-xfer (the store is left as it is)')
            if self.readonly:
                if version is None:
                    if self.backend == 'postgresql':
                        raise StoreError(self.path, 'no store in this database (create it with '
                                                    f'`nni-xfer store migrate --store {self.path}`)')
                    return   # an SQLite file without tables: reads as empty (never written here)
                if version < SCHEMA_VERSION and version == 0:
                    raise StoreError(self.path, f'schema version {version} is older than this nni-xfer '
                                                f'reads: run `nni-xfer store migrate --store {self.path}`')
                return
            _migrate(conn, version)
        try:
            # at open, a server that is down is said at once (before any trial), not after minutes
            self._run(check, engine=engine, what='open', retry_s=min(self.retry_s, 5.0))
        except StoreError:
            engine.dispose()
            raise

    @property
    def schema_version(self) -> int | None:
        return self._run(self._schema_version, what='read')

    @classmethod
    def resolve(cls, store: 'KnowledgeStore | str | os.PathLike | None', *,
                readonly: bool = False) -> 'KnowledgeStore':
        """``None`` (``$NNI_XFER_STORE`` or the default file) | a path or URL | a store object → a store."""
        if isinstance(store, KnowledgeStore):
            return store
        return cls(store, readonly=readonly)

    def close(self) -> None:
        with self._lock:
            self.engine.dispose()

    def __repr__(self) -> str:
        return f'KnowledgeStore({self.path!r}{", readonly" if self.readonly else ""})'

    # ---- one short transaction per call; a lost connection is retried with backoff
    def _run(self, fn: Callable[[sa.Connection], Any], *, engine: sa.engine.Engine | None = None,
             what: str = 'write', retry_s: float | None = None) -> Any:
        engine = engine or self.engine
        retry_s = self.retry_s if retry_s is None else retry_s
        delay, deadline = 0.25, time.monotonic() + retry_s
        while True:
            try:
                with self._lock, engine.begin() as conn:
                    return fn(conn)
            except StoreError:
                raise
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                cause = _one_line(exc.orig if getattr(exc, 'orig', None) is not None else exc)
                if self.backend == 'sqlite' and not _sqlite_transient(cause):
                    raise StoreError(self.path, f'{cause}; {WHAT_TO_DO.format(store=self.path)}') from None
                if _fatal_pg(cause):   # wrong password, unknown database or role: retrying will not help
                    raise StoreError(self.path, f'cannot connect: {cause}') from None
                if time.monotonic() + delay > deadline:
                    raise StoreError(self.path, f'the database is unreachable (gave up after '
                                                f'{retry_s:g}s of retries; nothing of this {what} was '
                                                f'written): {cause}') from None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
            except sa_exc.DBAPIError as exc:
                cause = _one_line(exc.orig if getattr(exc, 'orig', None) is not None else exc)
                raise StoreError(self.path, f'{cause}; {WHAT_TO_DO.format(store=self.path)}'
                                 if self.backend == 'sqlite' else cause) from None
            except sqlite3.DatabaseError as exc:
                raise StoreError(self.path, f'{_one_line(exc)}; {WHAT_TO_DO.format(store=self.path)}') from None

    def _insert(self):
        if self.backend == 'postgresql':
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert

    def _write_check(self) -> None:
        if self.readonly:
            raise StoreError(self.path, 'opened read-only')

    # ---- writes (strategy process only)
    def record_experiment(self, experiment_id: str, *, strategy: str | None = None, space: str | None = None,
                          dataset: str | None = None, config: dict | None = None) -> None:
        self._write_check()
        now = time.time()
        stmt = self._insert()(experiments_t).values(
            experiment_id=experiment_id, strategy=strategy, space=space, dataset=dataset,
            config=json.dumps(_mask_config(config), default=str), created=now, updated=now)
        stmt = stmt.on_conflict_do_update(index_elements=['experiment_id'], set_={
            k: stmt.excluded[k] for k in ('strategy', 'space', 'dataset', 'config', 'updated')})
        self._run(lambda c: c.execute(stmt))

    def record_proposal(self, experiment_id: str, proposal_id: int, *, architecture: Any,
                        strategy: str | None = None, space: str | None = None, dataset: str | None = None,
                        parent: dict | None = None, init: dict | None = None, spec: dict | None = None,
                        checkpoint: str | None = None, trial_id: str | None = None) -> None:
        """One row per (experiment, proposal id): writing it again replaces it (a re-issued proposal)."""
        self._write_check()
        now = time.time()
        row = dict(experiment_id=experiment_id, proposal_id=int(proposal_id), trial_id=trial_id, strategy=strategy,
                   space=space, dataset=dataset, architecture=json.dumps(architecture),
                   arch_key=arch_key(architecture), parent=_dump(parent), init=_dump(init), spec=_dump(spec),
                   status='WAITING', metrics=None, error=None, checkpoint=checkpoint, sha256=None,
                   created=now, updated=now)
        stmt = self._insert()(evaluations_t).values(**row)
        stmt = stmt.on_conflict_do_update(index_elements=['experiment_id', 'proposal_id'], set_={
            k: stmt.excluded[k] for k in row if k not in ('experiment_id', 'proposal_id')})
        self._run(lambda c: c.execute(stmt))

    def record_result(self, experiment_id: str, proposal_id: int, metrics: dict | None, *, status: str,
                      trial_id: str | None = None, error: str | None = None) -> None:
        """Idempotent: the same result written twice leaves the same row."""
        self._write_check()
        if status not in STATUSES:
            raise ValueError(f'status: {status!r} is not one of {", ".join(STATUSES)}')
        metrics = metrics or None
        checkpoint = (metrics or {}).get('checkpoint')
        sha = (metrics or {}).get('sha256')
        e = evaluations_t.c
        stmt = evaluations_t.update().where(e.experiment_id == experiment_id, e.proposal_id == int(proposal_id)) \
            .values(status=status, metrics=sa.func.coalesce(_dump(metrics), e.metrics),
                    error=sa.func.coalesce(error, e.error), trial_id=sa.func.coalesce(trial_id, e.trial_id),
                    checkpoint=sa.func.coalesce(checkpoint, e.checkpoint), sha256=sa.func.coalesce(sha, e.sha256),
                    updated=time.time())
        n = self._run(lambda c: c.execute(stmt).rowcount)
        if n == 0:
            raise KeyError(f'no proposal ({experiment_id}, {proposal_id}) in the knowledge store')

    def save_strategy_state(self, experiment_id: str, state: dict) -> None:
        self._write_check()
        stmt = self._insert()(strategy_state_t).values(experiment_id=experiment_id, state=json.dumps(state),
                                                       updated=time.time())
        stmt = stmt.on_conflict_do_update(index_elements=['experiment_id'],
                                          set_={'state': stmt.excluded.state, 'updated': stmt.excluded.updated})
        self._run(lambda c: c.execute(stmt))

    def set_trial_id(self, experiment_id: str, proposal_id: int, trial_id: str | None) -> None:
        """Record which NNI trial runs a proposal (a re-issued or resumed proposal gets a new one)."""
        if not trial_id:
            return
        self._write_check()
        e = evaluations_t.c
        self._run(lambda c: c.execute(evaluations_t.update().where(
            e.experiment_id == experiment_id, e.proposal_id == int(proposal_id)).values(
            trial_id=str(trial_id), updated=time.time())))

    def reopen(self, experiment_id: str, proposal_id: int) -> None:
        """A CANCELED proposal sent to a trial again (after ``nnictl resume``): WAITING, no error."""
        self._write_check()
        e = evaluations_t.c
        self._run(lambda c: c.execute(evaluations_t.update().where(
            e.experiment_id == experiment_id, e.proposal_id == int(proposal_id)).values(
            status='WAITING', error=None, updated=time.time())))

    def delete_evaluation(self, experiment_id: str, proposal_id: int) -> None:
        """Remove a proposal that never reached a trial (written just before its dispatcher died)."""
        self._write_check()
        e = evaluations_t.c
        self._run(lambda c: c.execute(evaluations_t.delete().where(
            e.experiment_id == experiment_id, e.proposal_id == int(proposal_id))))

    def record_experiment_error(self, experiment_id: str, message: str) -> None:
        """Why a search stopped: one line, shown by ``nni-xfer run`` and ``report`` (once per message)."""
        self._write_check()
        stmt = self._insert()(experiment_errors_t).values(
            experiment_id=experiment_id, message=' '.join(str(message).split()), created=time.time()) \
            .on_conflict_do_nothing(index_elements=['experiment_id', 'message'])
        self._run(lambda c: c.execute(stmt))

    def record_search_finished(self, experiment_id: str) -> None:
        """The strategy will never propose again: NNI's TUNER_NO_MORE_TRIAL is then final, not a pause
        while a stateful strategy waits for results."""
        self._write_check()
        stmt = self._insert()(search_finished_t).values(experiment_id=experiment_id, finished=time.time()) \
            .on_conflict_do_nothing(index_elements=['experiment_id'])
        self._run(lambda c: c.execute(stmt))

    def record_module(self, kb: str, source: str, position: int, *, file: str, arch: str | None = None,
                      in_channels: int | None = None, out_channels: int | None = None, in_size: int | None = None,
                      out_size: int | None = None, params: int | None = None, sha256: str | None = None,
                      meta: dict | None = None) -> None:
        """Record one knowledge-base module (ModuleNet): a cell cut from a trained network, kept as a file."""
        self._write_check()
        row = dict(kb=str(kb), source=source, position=int(position), arch=arch, in_channels=in_channels,
                   out_channels=out_channels, in_size=in_size, out_size=out_size, params=params, file=str(file),
                   sha256=sha256, meta=_dump(meta), created=time.time())
        stmt = self._insert()(kb_modules_t).values(**row)
        stmt = stmt.on_conflict_do_update(index_elements=['kb', 'source', 'position'], set_={
            k: stmt.excluded[k] for k in row if k not in ('kb', 'source', 'position')})
        self._run(lambda c: c.execute(stmt))

    # ---- reads
    def _rows(self, stmt) -> list[dict]:  # noqa: ANN001
        if self.schema_version_found is None and self.readonly:
            return []   # an SQLite file without tables, opened read-only
        return self._run(lambda c: [dict(r._mapping) for r in c.execute(stmt)], what='read')

    def search_finished(self, experiment_id: str) -> bool:
        return bool(self._rows(sa.select(search_finished_t.c.experiment_id).where(
            search_finished_t.c.experiment_id == experiment_id)))

    def experiment_errors(self, experiment_id: str) -> list[str]:
        t = experiment_errors_t.c
        return [r['message'] for r in self._rows(
            sa.select(t.message).where(t.experiment_id == experiment_id).order_by(t.created))]

    def modules(self, kb: str | None = None, *, source: str | None = None,
                position: int | None = None) -> list[dict]:
        """Knowledge-base modules, by knowledge base, source network and position."""
        t = kb_modules_t.c
        stmt = sa.select(kb_modules_t)
        for col, val in ((t.kb, None if kb is None else str(kb)), (t.source, source), (t.position, position)):
            if val is not None:
                stmt = stmt.where(col == val)
        out = self._rows(stmt.order_by(t.kb, t.position, t.source))
        for d in out:
            d['meta'] = json.loads(d['meta']) if d['meta'] else None
        return out

    def strategy_state(self, experiment_id: str) -> dict | None:
        rows = self._rows(sa.select(strategy_state_t.c.state).where(
            strategy_state_t.c.experiment_id == experiment_id))
        return json.loads(rows[0]['state']) if rows else None

    def experiments(self) -> list[dict]:
        out = self._rows(sa.select(experiments_t).order_by(experiments_t.c.created))
        for d in out:
            d['config'] = json.loads(d['config']) if d['config'] else None
        return out

    def evaluations(self, *, experiment_id: str | None = None, status: str | Iterable[str] | None = None,
                    space: str | None = None, dataset: str | None = None) -> list[Evaluation]:
        """Evaluations filtered by experiment, status, space and dataset, in proposal order."""
        e = evaluations_t.c
        stmt = sa.select(evaluations_t)
        for col, val in ((e.experiment_id, experiment_id), (e.space, space), (e.dataset, dataset)):
            if val is not None:
                stmt = stmt.where(col == val)
        if status is not None:
            stmt = stmt.where(e.status.in_([status] if isinstance(status, str) else list(status)))
        return [_row_to_eval(r) for r in self._rows(stmt.order_by(e.created, e.experiment_id, e.proposal_id))]

    def get(self, experiment_id: str, proposal_id: int) -> Evaluation | None:
        e = evaluations_t.c
        rows = self._rows(sa.select(evaluations_t).where(e.experiment_id == experiment_id,
                                                         e.proposal_id == int(proposal_id)))
        return _row_to_eval(rows[0]) if rows else None

    def find_architecture(self, space: str, architecture: Any, *, status: str = 'SUCCEEDED') -> list[Evaluation]:
        """Earlier evaluations of exactly this architecture in this space (any experiment)."""
        e = evaluations_t.c
        return [_row_to_eval(r) for r in self._rows(sa.select(evaluations_t).where(
            e.space == space, e.arch_key == arch_key(architecture), e.status == status).order_by(e.created))]

    def best(self, experiment_id: str, k: int = 5, key: str = 'default', maximize: bool = True) -> list[Evaluation]:
        evs = [e for e in self.evaluations(experiment_id=experiment_id, status='SUCCEEDED')
               if e.metric(key) is not None]
        evs.sort(key=lambda e: e.metric(key), reverse=maximize)
        return evs[:k]

    def lineage(self, experiment_id: str, proposal_id: int) -> Iterator[Evaluation]:
        """The evaluation and its ancestors, child first."""
        seen = set()
        cur = self.get(experiment_id, proposal_id)
        while cur is not None and (cur.experiment_id, cur.proposal_id) not in seen:
            seen.add((cur.experiment_id, cur.proposal_id))
            yield cur
            if not cur.parent:
                break
            cur = self.get(cur.parent['experiment_id'], cur.parent['proposal_id'])

    # ---- whole-store operations (the ``nni-xfer store`` commands)
    def counts(self) -> dict[str, int]:
        """Rows per table."""
        if self.schema_version_found is None and self.readonly:
            return {t.name: 0 for t in DATA_TABLES}
        return self._run(lambda c: {t.name: int(c.execute(sa.select(sa.func.count()).select_from(t)).scalar())
                                    for t in DATA_TABLES}, what='read')

    def check(self) -> list[str]:
        """Problems found (``[]``: none): SQLite's full integrity check, then each table read through."""
        problems = []
        if self.backend == 'sqlite' and self.where.path != ':memory:':
            problem = sqlite_problem(self.where.path)
            if problem:
                return [problem]
        for t in DATA_TABLES if self.schema_version_found is not None else ():
            try:
                self._run(lambda c: sum(1 for _ in c.execute(sa.select(t))), what='read')
            except StoreError as exc:
                problems.append(f'table {t.name}: {exc.message}')
        return problems

    def backup(self, dst: str | os.PathLike) -> int:
        """SQLite's online backup into a new file ``dst`` (safe while an experiment writes); its size."""
        dst = os.path.expanduser(os.fspath(dst))
        if self.backend != 'sqlite' or self.where.path == ':memory:':
            raise StoreError(self.path, 'backup copies an SQLite file; for PostgreSQL use pg_dump, or '
                                        f'`nni-xfer store copy {self.path} sqlite:///backup.db`')
        if os.path.exists(dst):
            raise StoreError(dst, 'exists already: name a new backup file', field='backup')
        tmp = f'{dst}.part'
        src = _sqlite_connect(self.where.path, readonly=True)
        try:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            out = sqlite3.connect(tmp)
            try:
                src.backup(out, pages=256)
            finally:
                out.close()
            problem = sqlite_problem(tmp)
            if problem:
                raise StoreError(dst, f'the backup does not pass the check: {problem}', field='backup')
            os.replace(tmp, dst)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f'backup failed: {_one_line(exc)}') from None
        except OSError as exc:
            raise StoreError(dst, f'cannot write the backup ({exc.strerror or exc})', field='backup') from None
        finally:
            src.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
        return os.path.getsize(dst)

    def copy_into(self, dst: 'KnowledgeStore', chunk: int = 500) -> dict[str, tuple[int, int]]:
        """Every row of this store into ``dst``: new rows added, a row already there kept unless this
        copy is newer (``updated``), nothing duplicated; one transaction, so re-running is a no-op.
        Returns {table: (rows written, rows already there)}."""
        dst._write_check()
        src_rows = {t.name: self._rows(sa.select(t)) for t in DATA_TABLES}
        insert = dst._insert()

        def write(conn: sa.Connection) -> dict[str, tuple[int, int]]:
            done = {}
            for t in DATA_TABLES:
                rows = src_rows[t.name]
                keys = [c.name for c in t.primary_key.columns] or ['experiment_id', 'message']
                changed = 0
                for i in range(0, len(rows), chunk):
                    stmt = insert(t).values(rows[i:i + chunk])
                    newer = _NEWER.get(t.name)
                    if newer:
                        stmt = stmt.on_conflict_do_update(
                            index_elements=keys,
                            set_={c.name: stmt.excluded[c.name] for c in t.columns if c.name not in keys},
                            where=sa.or_(t.c[newer].is_(None), t.c[newer] < stmt.excluded[newer]))
                    else:
                        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
                    changed += len(conn.execute(stmt.returning(t.c[keys[0]])).fetchall())  # inserted or newer
                done[t.name] = (changed, len(rows) - changed)
            return done
        return dst._run(write)


# ---------------------------------------------------------------- migrations (both backends)
def _migrate_0_to_1(conn: sa.Connection) -> None:
    """The tables of nni-xfer before versioning; ``parameter_id`` renamed to ``proposal_id``."""
    insp = sa.inspect(conn)
    if 'evaluations' in insp.get_table_names() and \
            'parameter_id' in {c['name'] for c in insp.get_columns('evaluations')}:
        conn.execute(sa.text('ALTER TABLE evaluations RENAME COLUMN parameter_id TO proposal_id'))
    for t in DATA_TABLES:
        t.create(conn, checkfirst=True)
    if 'evaluations_arch' not in {i['name'] for i in sa.inspect(conn).get_indexes('evaluations')}:
        conn.execute(sa.text('CREATE INDEX evaluations_arch ON evaluations (space, arch_key)'))


def _migrate_1_to_2(conn: sa.Connection) -> None:
    """``experiment_errors``: duplicates (a retried write) removed, then one row per (experiment, message)."""
    if 'experiment_errors_once' in {i['name'] for i in sa.inspect(conn).get_indexes('experiment_errors')}:
        return
    t = experiment_errors_t
    rows = [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.created))]
    seen, keep = set(), []
    for r in rows:
        if (r['experiment_id'], r['message']) not in seen:
            seen.add((r['experiment_id'], r['message']))
            keep.append(r)
    if len(keep) != len(rows):
        conn.execute(t.delete())
        conn.execute(t.insert(), keep)
    ERRORS_UNIQUE.create(conn)


def _migrate_2_to_3(conn: sa.Connection) -> None:
    """``parent`` JSON ``{experiment_id, parameter_id}`` of rows written before the rename ->
    ``{experiment_id, proposal_id}``."""
    t = evaluations_t
    rows = conn.execute(sa.select(t.c.experiment_id, t.c.proposal_id, t.c.parent)
                        .where(t.c.parent.like('%"parameter_id"%'))).all()
    for exp, pid, parent in rows:
        p = json.loads(parent)
        if isinstance(p, dict) and 'parameter_id' in p:
            p['proposal_id'] = p.pop('parameter_id')
            conn.execute(t.update().where(t.c.experiment_id == exp, t.c.proposal_id == pid)
                         .values(parent=json.dumps(p)))


_MIGRATIONS = {1: (_migrate_0_to_1, 'tables of nni-xfer 0.1 (proposal_id)'),
               2: (_migrate_1_to_2, 'experiment_errors: one row per (experiment, message)'),
               3: (_migrate_2_to_3, "parents name the parent's proposal_id")}
assert max(_MIGRATIONS) == SCHEMA_VERSION


def _migrate(conn: sa.Connection, version: int | None) -> None:
    """Bring the store to SCHEMA_VERSION in the caller's transaction (all steps or none)."""
    if version is None:              # a new store: the latest tables at once
        metadata.create_all(conn)
        conn.execute(schema_t.insert(), [{'version': v, 'applied': time.time(), 'description': d}
                                         for v, (_, d) in sorted(_MIGRATIONS.items())])
        return
    if version >= SCHEMA_VERSION:
        return
    schema_t.create(conn, checkfirst=True)
    for v in range(version + 1, SCHEMA_VERSION + 1):
        step, desc = _MIGRATIONS[v]
        step(conn)
        conn.execute(schema_t.insert().values(version=v, applied=time.time(), description=desc))


# ---------------------------------------------------------------- helpers
def store_exists(store: 'str | os.PathLike | None') -> bool:
    """Whether the named store exists (SQLite: the file; PostgreSQL: the server answers). Creates nothing."""
    where = parse_store(store)
    if where.backend == 'sqlite':
        return where.path == ':memory:' or os.path.exists(where.path)
    return True


def _sqlite_transient(cause: str) -> bool:
    return 'locked' in cause or 'busy' in cause


def _fatal_pg(cause: str) -> bool:
    c = cause.lower()
    return any(s in c for s in ('password authentication failed', 'does not exist', 'no password supplied',
                                'authentication failed', 'permission denied', 'read-only transaction',
                                'invalid dsn', 'invalid connection option', 'could not translate host name'))


def _one_line(text: Any, limit: int = 400) -> str:
    line = ' '.join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + '...'


def _dump(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, default=str)


def _row_to_eval(row: dict) -> Evaluation:
    d = dict(row)
    d.pop('arch_key', None)
    for col in _JSON_COLS:
        if d.get(col) is not None:
            d[col] = json.loads(d[col])
    return Evaluation(**d)
