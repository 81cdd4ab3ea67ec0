"""Many writers into one store (4 processes x 200 proposals and results: every row once), and a lost
PostgreSQL connection: retried with backoff, or one line when the server stays away."""
from __future__ import annotations

import multiprocessing as mp
import socket
import threading
import time

import pytest

from nni_xfer.store import KnowledgeStore, StoreError, parse_store
from store_backends import store_url  # noqa: F401  (fixture)

WRITERS, PROPOSALS = 4, 200


def _writer(url: str, w: int, start, errors) -> None:
    try:
        s = KnowledgeStore(url)
        start.wait(30)
        s.record_experiment('team', strategy='random', space='toy', config={'writer': w})   # all at once: one row
        for i in range(PROPOSALS):
            pid = w * 1000 + i
            s.record_proposal('team', pid, architecture={'w': w, 'i': i}, space='toy', strategy='random')
            s.record_result('team', pid, {'default': float(pid)}, status='SUCCEEDED', trial_id=f't{pid}')
            if i % 50 == 0:   # results are idempotent: a repeated one changes nothing
                s.record_result('team', pid, {'default': float(pid)}, status='SUCCEEDED', trial_id=f't{pid}')
        s.record_experiment_error('team', 'one message from every writer')
        s.save_strategy_state(f'exp{w}', {'writer': w})
        s.close()
    except BaseException as exc:  # noqa: BLE001  (reported to the test)
        errors.put(f'writer {w}: {type(exc).__name__}: {exc}')
        raise


def test_four_processes_write_every_row_once(store_url):  # noqa: F811
    KnowledgeStore(store_url).close()   # the schema once, as `nni-xfer store migrate` would
    ctx = mp.get_context('fork')
    start, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(store_url, w, start, errors)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(240)
    assert not any(p.is_alive() for p in procs)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems and all(p.exitcode == 0 for p in procs), problems
    s = KnowledgeStore(store_url, readonly=True)
    evs = s.evaluations(experiment_id='team')
    keys = [e.proposal_id for e in evs]
    assert len(keys) == len(set(keys)) == WRITERS * PROPOSALS
    assert sorted(keys) == sorted(w * 1000 + i for w in range(WRITERS) for i in range(PROPOSALS))
    assert all(e.status == 'SUCCEEDED' and e.metric() == float(e.proposal_id) and e.trial_id == f't{e.proposal_id}'
               for e in evs)
    counts = s.counts()
    assert counts['experiments'] == 1 and counts['experiment_errors'] == 1 and counts['strategy_state'] == WRITERS


class _Proxy:
    """A TCP relay to the PostgreSQL server that the test can cut (a lost network) and bring back."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port = target, None
        self.socks: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(('127.0.0.1', self.port or 0))
        ls.listen(16)
        self.port, self.listener = ls.getsockname()[1], ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Every open connection dropped (the listener stays)."""
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.socks = []

    def down(self) -> None:
        self.cut()
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)   # wakes the accepting thread (Linux)
            except OSError:
                pass
            self.listener.close()
            self.listener = None


def test_a_lost_connection_is_retried_then_one_line(store_url):  # noqa: F811
    if not store_url.startswith('postgresql'):
        pytest.skip('a network between the store and its server: PostgreSQL only')
    url = parse_store(store_url).url
    proxy = _Proxy((url.host, url.port or 5432))
    proxy.up()
    via = url.set(host='127.0.0.1', port=proxy.port).render_as_string(hide_password=False).replace('+psycopg', '')
    s = KnowledgeStore(via, retry_s=30)
    try:
        s.record_proposal('e', 0, architecture={'a': 0})
        proxy.cut()                                    # connections in the pool are dead now
        s.record_proposal('e', 1, architecture={'a': 1})
        proxy.down()                                   # the server is away for a while ...
        threading.Timer(1.5, proxy.up).start()        # ... and back: the write retried gets through
        t0 = time.monotonic()
        s.record_result('e', 1, {'default': 0.5}, status='SUCCEEDED')
        assert time.monotonic() - t0 >= 1.0
        assert [(e.proposal_id, e.status) for e in s.evaluations()] == [(0, 'WAITING'), (1, 'SUCCEEDED')]
        proxy.down()                                   # away for good: one line, nothing written
        s.retry_s = 1.0
        with pytest.raises(StoreError) as e:
            s.record_proposal('e', 2, architecture={'a': 2})
        text = str(e.value)
        assert '\n' not in text and 'unreachable' in text and 'nothing of this write was written' in text
        assert text.startswith(f'store: postgresql://{url.username}@127.0.0.1:{proxy.port}/')
    finally:
        proxy.down()
        s.close()
    assert [e.proposal_id for e in KnowledgeStore(store_url, readonly=True).evaluations()] == [0, 1]
