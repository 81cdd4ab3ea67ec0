"""Knowledge-store write throughput: proposals + results per second on SQLite and on PostgreSQL, from
one writer and from 4 writer processes (each its own experiment, as several dispatchers would).

Each writer records N proposals and N results, one short transaction each, as the tuner does. The
PostgreSQL server is ``--pg-url`` or ``$NNI_XFER_TEST_PG_URL`` (password from PGPASSWORD/~/.pgpass),
or ``--start-pg``: a throwaway cluster (scripts/pg_throwaway.sh, Debian's postgresql, default
settings: fsync on) started and stopped here. Every run checks that each row is there once.

    OMP_NUM_THREADS=1 python benchmarks/bench_store.py --start-pg --n 300
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nni_xfer.store import KnowledgeStore, parse_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def writer(url: str, exp: str, n: int, start, done) -> None:
    s = KnowledgeStore(url)
    start.wait(60)
    t0 = time.perf_counter()
    for i in range(n):
        s.record_proposal(exp, i, architecture={'cell': [i % 7, i % 5, 'sep_conv 3x3'], 'width': 16 + i % 3},
                          strategy='random', space='nasnet_cells', dataset='digits', spec={'proposal_id': i})
        s.record_result(exp, i, {'default': i / n, 'val_acc': i / n}, status='SUCCEEDED', trial_id=f't{i}')
    done.put(time.perf_counter() - t0)
    s.close()


def measure(url: str, writers: int, n: int) -> float:
    """(proposals + results) per second, all writers together (wall time of the slowest)."""
    KnowledgeStore(url).close()          # schema first
    ctx = mp.get_context('fork')
    start, done = ctx.Event(), ctx.Queue()
    tag = uuid.uuid4().hex[:6]
    procs = [ctx.Process(target=writer, args=(url, f'bench-{tag}-{w}', n, start, done)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    assert all(p.exitcode == 0 for p in procs)
    s = KnowledgeStore(url, readonly=True)
    for w in range(writers):
        evs = s.evaluations(experiment_id=f'bench-{tag}-{w}', status='SUCCEEDED')
        assert len(evs) == n == len({e.proposal_id for e in evs})
    s.close()
    return 2 * n * writers / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=300, help='proposals (and results) per writer')
    ap.add_argument('--pg-url', default=os.environ.get('NNI_XFER_TEST_PG_URL'))
    ap.add_argument('--start-pg', action='store_true', help='start a throwaway PostgreSQL cluster for the run')
    args = ap.parse_args(argv)
    pg_dir = None
    if args.start_pg:
        pg_dir = tempfile.mkdtemp(prefix='nni-xfer-bench-pg.')
        out = subprocess.run(['bash', str(ROOT / 'scripts/pg_throwaway.sh'), 'start', pg_dir], check=True,
                             capture_output=True, text=True).stdout.split()
        args.pg_url, os.environ['PGPASSWORD'] = out[0], out[1]
    try:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for writers in (1, 4):
                rows.append(('SQLite (WAL, synchronous=NORMAL)', writers,
                             measure(str(Path(tmp) / f'bench{writers}.db'), writers, args.n)))
        if args.pg_url:
            import sqlalchemy as sa
            admin = sa.create_engine(parse_store(args.pg_url).url, isolation_level='AUTOCOMMIT')
            for writers in (1, 4):
                db = f'nnix_bench_{uuid.uuid4().hex[:8]}'
                with admin.connect() as c:
                    c.execute(sa.text(f'CREATE DATABASE {db}'))
                url = parse_store(args.pg_url).url.set(database=db).render_as_string(hide_password=False)
                try:
                    rows.append(('PostgreSQL (local server, defaults)', writers, measure(url, writers, args.n)))
                finally:
                    with admin.connect() as c:
                        c.execute(sa.text(f'DROP DATABASE IF EXISTS {db} WITH (FORCE)'))
            admin.dispose()
        else:
            print('no PostgreSQL (--pg-url, $NNI_XFER_TEST_PG_URL or --start-pg): SQLite only')
        print(f'proposals + results per second ({args.n} of each per writer, one transaction each); '
              f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs')
        print(f'{"backend":<38}{"writers":>8}{"writes/s":>10}')
        for name, writers, rate in rows:
            print(f'{name:<38}{writers:>8}{rate:>10.0f}')
        base = {w: r for name, w, r in rows if name.startswith('SQLite')}
        for name, writers, rate in rows:
            if not name.startswith('SQLite'):
                print(f'PostgreSQL / SQLite, {writers} writer{"s" if writers > 1 else ""}: {rate / base[writers]:.2f}x')
    finally:
        if pg_dir:
            subprocess.run(['bash', str(ROOT / 'scripts/pg_throwaway.sh'), 'stop', pg_dir], check=False)
    return 0


if __name__ == '__main__':
    sys.exit(main())
