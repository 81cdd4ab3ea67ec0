"""Knowledge store: every evaluation of every experiment, kept for later tasks.

SQLite in WAL mode. One writer: the strategy process (the NNI dispatcher or the Python
``NasExperiment``). Trials never open the database; they read only files named in their spec.

Default location: ``$NNI_XFER_HOME/store.db`` (``NNI_XFER_HOME`` defaults to ``~/.nni-xfer``);
override with the tuner's ``store`` argument or ``--store`` on the command line.

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
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

STATUSES = ('WAITING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED')  # CANCELED: never evaluated, the
# experiment stopped first (``nnictl resume`` evaluates it)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    experiment_id TEXT PRIMARY KEY,
    strategy TEXT, space TEXT, dataset TEXT,
    config TEXT,               -- JSON: the tuner's classArgs
    created REAL, updated REAL
);
CREATE TABLE IF NOT EXISTS evaluations (
    experiment_id TEXT NOT NULL,
    proposal_id INTEGER NOT NULL,
    trial_id TEXT,
    strategy TEXT, space TEXT, dataset TEXT,
    architecture TEXT NOT NULL,   -- JSON sample
    arch_key TEXT NOT NULL,       -- canonical JSON of the architecture, for dedup / lookup
    parent TEXT,                  -- JSON {experiment_id, parameter_id}: the parent's proposal id, or NULL
    init TEXT,                    -- JSON init block of the trial spec
    spec TEXT,                    -- JSON full trial spec
    status TEXT NOT NULL,
    metrics TEXT,                 -- JSON final metrics dict
    error TEXT,
    checkpoint TEXT, sha256 TEXT,
    created REAL, updated REAL,
    PRIMARY KEY (experiment_id, proposal_id)
);
CREATE INDEX IF NOT EXISTS evaluations_arch ON evaluations (space, arch_key);
CREATE TABLE IF NOT EXISTS kb_modules (
    kb TEXT NOT NULL,              -- knowledge-base root folder (absolute)
    source TEXT NOT NULL,          -- source network name in that knowledge base
    position INTEGER NOT NULL,     -- 0-based cell position
    arch TEXT,                     -- source family (resnet18, vgg16_bn, ...)
    in_channels INTEGER, out_channels INTEGER, in_size INTEGER, out_size INTEGER,
    params INTEGER,
    file TEXT NOT NULL, sha256 TEXT,
    meta TEXT,                     -- JSON: width, source accuracy, dataset, ...
    created REAL,
    PRIMARY KEY (kb, source, position)
);
CREATE TABLE IF NOT EXISTS strategy_state (
    experiment_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,           -- JSON state_dict of the strategy
    updated REAL
);
CREATE TABLE IF NOT EXISTS search_finished (
    experiment_id TEXT PRIMARY KEY,  -- the strategy will never propose again (its ``done``)
    finished REAL
);
CREATE TABLE IF NOT EXISTS experiment_errors (
    experiment_id TEXT NOT NULL,
    message TEXT NOT NULL,         -- one line: why the search stopped (a strategy or store exception)
    created REAL
);
"""


def default_store_path() -> Path:
    home = Path(os.environ.get('NNI_XFER_HOME', Path.home() / '.nni-xfer'))
    return home / 'store.db'


def arch_key(architecture: Any) -> str:
    """Canonical text of an architecture: same architecture ⇔ same key."""
    return json.dumps(architecture, sort_keys=True, separators=(',', ':'), default=str)


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

    @property
    def parameter_id(self) -> int:
        """The proposal id under its old name (the column was ``parameter_id`` before it said what it holds;
        NNI's own parameter ids are another numbering)."""
        return self.proposal_id

    def metric(self, key: str = 'default', default: float | None = None) -> float | None:
        if not self.metrics or key not in self.metrics:
            return default
        return self.metrics[key]

    def to_dict(self) -> dict:
        return asdict(self)


_JSON_COLS = ('architecture', 'parent', 'init', 'spec', 'metrics')


class KnowledgeStore:
    """SQLite-backed store of experiments, evaluations, lineage and strategy state."""

    def __init__(self, path: str | os.PathLike | None = None):
        if path is None:
            path = default_store_path()
        self.path = str(path)
        if self.path != ':memory:':
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        if self.path != ':memory:':
            self._conn.execute('PRAGMA journal_mode=WAL')
        self._conn.execute('PRAGMA synchronous=NORMAL')
        with self._lock, self._conn:
            cols = [r[1] for r in self._conn.execute('PRAGMA table_info(evaluations)')]
            if 'parameter_id' in cols:   # a store written before the column said what it holds
                self._conn.execute('ALTER TABLE evaluations RENAME COLUMN parameter_id TO proposal_id')
            self._conn.executescript(_SCHEMA)

    @classmethod
    def resolve(cls, store: 'KnowledgeStore | str | os.PathLike | None') -> 'KnowledgeStore':
        """``None`` (default path) | a path | a store object → a store."""
        if isinstance(store, KnowledgeStore):
            return store
        return cls(store)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- writes (strategy process only) ----
    def record_experiment(self, experiment_id: str, *, strategy: str | None = None, space: str | None = None,
                          dataset: str | None = None, config: dict | None = None) -> None:
        now = time.time()
        with self._lock, self._conn:
            self._conn.execute(
                'INSERT INTO experiments VALUES (?,?,?,?,?,?,?) ON CONFLICT(experiment_id) DO UPDATE SET '
                'strategy=excluded.strategy, space=excluded.space, dataset=excluded.dataset, '
                'config=excluded.config, updated=excluded.updated',
                (experiment_id, strategy, space, dataset, json.dumps(config, default=str), now, now))

    def record_proposal(self, experiment_id: str, proposal_id: int, *, architecture: Any,
                        strategy: str | None = None, space: str | None = None, dataset: str | None = None,
                        parent: dict | None = None, init: dict | None = None, spec: dict | None = None,
                        checkpoint: str | None = None, trial_id: str | None = None) -> None:
        now = time.time()
        with self._lock, self._conn:
            self._conn.execute(
                'INSERT OR REPLACE INTO evaluations (experiment_id, proposal_id, trial_id, strategy, space, dataset, '
                'architecture, arch_key, parent, init, spec, status, checkpoint, created, updated) '
                'VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)',
                (experiment_id, int(proposal_id), trial_id, strategy, space, dataset, json.dumps(architecture),
                 arch_key(architecture), _dump(parent), _dump(init), _dump(spec), 'WAITING', checkpoint, now, now))

    def record_result(self, experiment_id: str, proposal_id: int, metrics: dict | None, *, status: str,
                      trial_id: str | None = None, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f'status: {status!r} is not one of {", ".join(STATUSES)}')
        metrics = metrics or None
        checkpoint = (metrics or {}).get('checkpoint')
        sha = (metrics or {}).get('sha256')
        with self._lock, self._conn:
            cur = self._conn.execute(
                'UPDATE evaluations SET status=?, metrics=COALESCE(?, metrics), error=COALESCE(?, error), '
                'trial_id=COALESCE(?, trial_id), checkpoint=COALESCE(?, checkpoint), sha256=COALESCE(?, sha256), '
                'updated=? WHERE experiment_id=? AND proposal_id=?',
                (status, _dump(metrics), error, trial_id, checkpoint, sha, time.time(), experiment_id,
                 int(proposal_id)))
            if cur.rowcount == 0:
                raise KeyError(f'no proposal ({experiment_id}, {proposal_id}) in the knowledge store')

    def save_strategy_state(self, experiment_id: str, state: dict) -> None:
        with self._lock, self._conn:
            self._conn.execute('INSERT OR REPLACE INTO strategy_state VALUES (?,?,?)',
                               (experiment_id, json.dumps(state), time.time()))

    def set_trial_id(self, experiment_id: str, proposal_id: int, trial_id: str | None) -> None:
        """Record which NNI trial runs a proposal (a re-issued or resumed proposal gets a new one)."""
        if not trial_id:
            return
        with self._lock, self._conn:
            self._conn.execute('UPDATE evaluations SET trial_id=?, updated=? WHERE experiment_id=? AND proposal_id=?',
                               (str(trial_id), time.time(), experiment_id, int(proposal_id)))

    def reopen(self, experiment_id: str, proposal_id: int) -> None:
        """A CANCELED proposal sent to a trial again (after ``nnictl resume``): WAITING, no error."""
        with self._lock, self._conn:
            self._conn.execute("UPDATE evaluations SET status='WAITING', error=NULL, updated=? "
                               "WHERE experiment_id=? AND proposal_id=?", (time.time(), experiment_id, int(proposal_id)))

    def delete_evaluation(self, experiment_id: str, proposal_id: int) -> None:
        """Remove a proposal that never reached a trial (written just before its dispatcher died)."""
        with self._lock, self._conn:
            self._conn.execute('DELETE FROM evaluations WHERE experiment_id=? AND proposal_id=?',
                               (experiment_id, int(proposal_id)))

    def record_experiment_error(self, experiment_id: str, message: str) -> None:
        """Why a search stopped: one line, shown by ``nni-xfer run`` and ``report``."""
        with self._lock, self._conn:
            self._conn.execute('INSERT INTO experiment_errors VALUES (?,?,?)',
                               (experiment_id, ' '.join(str(message).split()), time.time()))

    def record_search_finished(self, experiment_id: str) -> None:
        """The strategy will never propose again: NNI's TUNER_NO_MORE_TRIAL is then final, not a pause
        while a stateful strategy waits for results."""
        with self._lock, self._conn:
            self._conn.execute('INSERT OR IGNORE INTO search_finished VALUES (?,?)', (experiment_id, time.time()))

    def search_finished(self, experiment_id: str) -> bool:
        with self._lock:
            row = self._conn.execute('SELECT 1 FROM search_finished WHERE experiment_id=?',
                                     (experiment_id,)).fetchone()
        return row is not None

    def experiment_errors(self, experiment_id: str) -> list[str]:
        with self._lock:
            rows = self._conn.execute('SELECT message FROM experiment_errors WHERE experiment_id=? ORDER BY created',
                                      (experiment_id,)).fetchall()
        return [r['message'] for r in rows]

    def record_module(self, kb: str, source: str, position: int, *, file: str, arch: str | None = None,
                      in_channels: int | None = None, out_channels: int | None = None, in_size: int | None = None,
                      out_size: int | None = None, params: int | None = None, sha256: str | None = None,
                      meta: dict | None = None) -> None:
        """Record one knowledge-base module (ModuleNet): a cell cut from a trained network, kept as a file."""
        with self._lock, self._conn:
            self._conn.execute(
                'INSERT OR REPLACE INTO kb_modules VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)',
                (str(kb), source, int(position), arch, in_channels, out_channels, in_size, out_size, params,
                 str(file), sha256, _dump(meta), time.time()))

    # ---- reads ----
    def modules(self, kb: str | None = None, *, source: str | None = None,
                position: int | None = None) -> list[dict]:
        """Knowledge-base modules, by knowledge base, source network and position."""
        where, args = [], []
        for col, val in (('kb', None if kb is None else str(kb)), ('source', source), ('position', position)):
            if val is not None:
                where.append(f'{col}=?')
                args.append(val)
        sql = 'SELECT * FROM kb_modules' + (' WHERE ' + ' AND '.join(where) if where else '')
        with self._lock:
            rows = self._conn.execute(sql + ' ORDER BY kb, position, source', args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d['meta'] = json.loads(d['meta']) if d['meta'] else None
            out.append(d)
        return out

    def strategy_state(self, experiment_id: str) -> dict | None:
        with self._lock:
            row = self._conn.execute('SELECT state FROM strategy_state WHERE experiment_id=?',
                                     (experiment_id,)).fetchone()
        return json.loads(row['state']) if row else None

    def experiments(self) -> list[dict]:
        with self._lock:
            rows = self._conn.execute('SELECT * FROM experiments ORDER BY created').fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d['config'] = json.loads(d['config']) if d['config'] else None
            out.append(d)
        return out

    def evaluations(self, *, experiment_id: str | None = None, status: str | Iterable[str] | None = None,
                    space: str | None = None, dataset: str | None = None) -> list[Evaluation]:
        """Evaluations filtered by experiment, status, space and dataset, in proposal order."""
        where, args = [], []
        for col, val in (('experiment_id', experiment_id), ('space', space), ('dataset', dataset)):
            if val is not None:
                where.append(f'{col}=?')
                args.append(val)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        sql = 'SELECT * FROM evaluations'
        if where:
            sql += ' WHERE ' + ' AND '.join(where)
        sql += ' ORDER BY created, experiment_id, proposal_id'
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_row_to_eval(r) for r in rows]

    def get(self, experiment_id: str, proposal_id: int) -> Evaluation | None:
        with self._lock:
            row = self._conn.execute('SELECT * FROM evaluations WHERE experiment_id=? AND proposal_id=?',
                                     (experiment_id, int(proposal_id))).fetchone()
        return _row_to_eval(row) if row else None

    def find_architecture(self, space: str, architecture: Any, *, status: str = 'SUCCEEDED') -> list[Evaluation]:
        """Earlier evaluations of exactly this architecture in this space (any experiment)."""
        with self._lock:
            rows = self._conn.execute(
                'SELECT * FROM evaluations WHERE space=? AND arch_key=? AND status=? ORDER BY created',
                (space, arch_key(architecture), status)).fetchall()
        return [_row_to_eval(r) for r in rows]

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
            cur = self.get(cur.parent['experiment_id'], cur.parent.get('proposal_id', cur.parent.get('parameter_id')))


def _dump(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, default=str)


def _row_to_eval(row: sqlite3.Row) -> Evaluation:
    d = dict(row)
    d.pop('arch_key', None)
    for col in _JSON_COLS:
        if d.get(col) is not None:
            d[col] = json.loads(d[col])
    return Evaluation(**d)
