"""
Messages per second through a durable queue, against a raw enqueue / claim / ack floor on the same kind of store.

Ours: *N* messages enqueued with ``store.enqueue`` into a fresh `SqliteStore`
file (timed: enqueue), then ``coordinator.serve(queue, workers=W)`` runs them
all through a one-step durable flow (``job(x: int) -> int``) and returns
(timed from the call to its return: startup, the claims, each message's durable
run, its settling, and the shutdown). Per message, serve writes: its claim (one
transaction per batch of free workers), the run's begin (one INSERT), its
step's event (one INSERT), its finish (one UPDATE) and the message's settling
(one UPDATE).

The floors: a plain ``sqlite3`` connection to another fresh file with the
store's settings (autocommit, WAL, ``synchronous=NORMAL``, the same busy
timeout) and the store's ``messages`` and ``runs`` tables (schema version 6),
in one thread, with no work in between:

- enqueue floor: one INSERT of the message row per message (one transaction each);
- queue floor: per message, a claim (``BEGIN IMMEDIATE``, the due message by
  priority and age, its UPDATE, ``COMMIT``) and an ack (one UPDATE): what any
  durable queue must write;
- serve floor: the queue floor plus what the durable run writes (an INSERT into
  runs, an INSERT into events, an UPDATE of runs): what `serve` writes, raw.

Rounds alternate between the cases, on fresh files; the best round of each wins.

With ``--backend postgres`` the same cases run on the PostgreSQL server at
``CHOREOGRAPH_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``):
ours on a `PostgresStore` in a fresh schema per round (dropped afterwards),
the floors on one psycopg connection in autocommit mode, on the store's own
tables (a schema made by `PostgresStore`), claiming with one ``UPDATE`` of the
row a ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1`` chose, as the store does.

Run: ``make bench`` or ``python benchmarks/queues.py [--quick] [--strict] [--backend sqlite|postgres]``.
Target: serve with one worker within 2.5x the serve floor (time per message).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from choreograph import Coordinator, PostgresStore, SqliteStore, Step

TARGET = 2.5
BUSY_TIMEOUT = 30.0  # seconds: SqliteStore's default busy_timeout
QUEUE = "bench"

# The store's tables (choreograph/durable/sqlite.py, schema version 6), for the floors.
TABLES = (
    """CREATE TABLE messages (
        key TEXT PRIMARY KEY, queue TEXT NOT NULL, status TEXT NOT NULL, payload TEXT NOT NULL,
        priority INTEGER NOT NULL, due REAL NOT NULL, enqueued REAL NOT NULL, updated REAL NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL, error TEXT)""",
    "CREATE INDEX messages_ready ON messages (queue, status, priority DESC, due)",
    "CREATE INDEX messages_by_owner ON messages (owner) WHERE owner IS NOT NULL",
    """CREATE TABLE runs (
        key TEXT PRIMARY KEY, status TEXT NOT NULL, generation INTEGER NOT NULL, sessions INTEGER NOT NULL,
        interruptions INTEGER NOT NULL DEFAULT 0, input TEXT, fatal TEXT, failed_step TEXT, error_type TEXT,
        owner TEXT, lease_until REAL, created REAL NOT NULL, updated REAL NOT NULL, result TEXT,
        error_message TEXT, trace_context TEXT) WITHOUT ROWID""",
    "CREATE INDEX runs_by_status ON runs (status, updated)",
    "CREATE INDEX runs_by_updated ON runs (updated DESC, key)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL, generation INTEGER NOT NULL, session INTEGER NOT NULL,
        step TEXT NOT NULL, phase TEXT NOT NULL, outcome TEXT NOT NULL, output TEXT, error TEXT, error_type TEXT,
        attempts INTEGER NOT NULL, seconds REAL NOT NULL, at REAL NOT NULL, traceback TEXT)""",
    "CREATE INDEX events_by_run ON events (key, generation, id)",
)
ENQUEUE = (
    "INSERT INTO messages (key, queue, status, payload, priority, due, enqueued, updated)"
    " VALUES (?, ?, 'queued', ?, 0, ?, ?, ?)"
)
DUE = (
    "SELECT rowid, key, payload FROM messages WHERE queue = ? AND status = 'queued' AND due <= ?"
    " ORDER BY priority DESC, due, rowid LIMIT 1"
)
CLAIM = (
    "UPDATE messages SET status = 'running', owner = ?, lease_until = ?, deliveries = deliveries + 1 WHERE rowid = ?"
)
ACK = "UPDATE messages SET status = 'done', owner = NULL, lease_until = NULL, updated = ? WHERE key = ? AND owner = ?"
BEGIN_RUN = (
    "INSERT INTO runs (key, status, generation, sessions, input, owner, lease_until, created, updated)"
    " VALUES (?, 'running', 1, 1, ?, ?, ?, ?, ?)"
)
EVENT = (
    "INSERT INTO events (key, generation, session, step, phase, outcome, output, attempts, seconds, at)"
    " VALUES (?, 1, 1, 'double', 'job', 'ok', ?, 1, 2e-6, ?)"
)
FINISH_RUN = (
    "UPDATE runs SET status = 'ok', result = ?, owner = NULL, lease_until = NULL, updated = ?"
    " WHERE key = ? AND owner = ?"
)


def job(x: int) -> int:
    return x * 2


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds per message: to enqueue, and to serve."""

    enqueue: float
    serve: float


#: Seconds per message of one case on a fresh store at *path*, for *n* messages.
Case = Callable[[Path, int], Timing]


@dataclass(frozen=True, slots=True)
class Backend:
    """A kind of store: ours on it, with *workers*, and its raw floor (with or without the durable run's writes)."""

    ours: Callable[[int], Case]
    floor: Callable[..., Case]  # floor(with_run=...)


def serve_on(open_store: Callable[[Path], Any], workers: int) -> Case:
    """Ours: enqueue *n* messages into the store *open_store* makes of the round's path, then serve them all."""

    def measure(path: Path, n: int) -> Timing:
        store = open_store(path)
        try:
            start = time.perf_counter()
            for i in range(n):
                store.enqueue(QUEUE, i, key=f"m{i}")
            enqueued = time.perf_counter() - start
            stop = threading.Event()
            left = [n]
            lock = threading.Lock()

            def double(x: int) -> int:
                with lock:
                    left[0] -= 1
                    if not left[0]:
                        stop.set()  # serve() then settles what is in flight and returns
                return job(x)

            flow = Coordinator[int]([Step("double", double)], store=store)
            start = time.perf_counter()
            served = flow.serve(QUEUE, workers=workers, stop=stop)
            elapsed = time.perf_counter() - start
            assert served.done == n, served  # noqa: S101 - numbers of a broken server would mean nothing
            assert store.queue_info(QUEUE)["done"] == n  # noqa: S101
        finally:
            store.close()
        return Timing(enqueued / n, elapsed / n)

    return measure


def sqlite_ours(workers: int) -> Case:
    return serve_on(SqliteStore, workers)


def sqlite_floor(*, with_run: bool) -> Case:
    def measure(path: Path, n: int) -> Timing:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            for statement in TABLES:
                conn.execute(statement)
            execute, clock, owner = conn.execute, time.time, "host:1:server"
            start = time.perf_counter()
            for i in range(n):
                now = clock()
                execute(ENQUEUE, (f"m{i}", QUEUE, str(i), now, now, now))
            enqueued = time.perf_counter() - start
            start = time.perf_counter()
            while True:
                now = clock()
                execute("BEGIN IMMEDIATE")
                row = execute(DUE, (QUEUE, now)).fetchone()
                if row is None:
                    execute("COMMIT")
                    break
                execute(CLAIM, (owner, now + 60.0, row[0]))
                execute("COMMIT")
                key = row[1]
                if with_run:
                    execute(BEGIN_RUN, (key, row[2], owner, now + 60.0, now, now))
                    number = execute(EVENT, (key, str(job(int(row[2]))), clock())).lastrowid
                    execute(FINISH_RUN, (f"[{number}]", clock(), key, owner))
                execute(ACK, (clock(), key, owner))
            elapsed = time.perf_counter() - start
            done = conn.execute("SELECT count(*) FROM messages WHERE status = 'done'").fetchone()[0]
            assert done == n  # noqa: S101
        finally:
            conn.close()
        return Timing(enqueued / n, elapsed / n)

    return measure


# -- PostgreSQL --------------------------------------------------------------------------------

URL = os.environ.get("CHOREOGRAPH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
#: Every round's schema starts with this (and the round's label): dropped once measured.
_SCHEMAS = f"bench_q_{uuid.uuid4().hex[:8]}"

PG_ENQUEUE = (
    "INSERT INTO {s}.messages (key, queue, status, payload, priority, due, enqueued, updated)"
    " VALUES (%s, %s, 'queued', %s, 0, %s, %s, %s)"
)
PG_CLAIM = (
    "WITH due AS (SELECT key FROM {s}.messages WHERE queue = %s AND status = 'queued' AND due <= %s"
    " ORDER BY priority DESC, due, seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " UPDATE {s}.messages AS m SET status = 'running', owner = %s, lease_until = %s,"
    " deliveries = m.deliveries + 1 FROM due WHERE m.key = due.key RETURNING m.key, m.payload"
)
PG_ACK = (
    "UPDATE {s}.messages SET status = 'done', owner = NULL, lease_until = NULL, updated = %s"
    " WHERE key = %s AND owner = %s"
)
PG_BEGIN_RUN = (
    "INSERT INTO {s}.runs (key, status, generation, sessions, input, owner, lease_until, created, updated)"
    " VALUES (%s, 'running', 1, 1, %s, %s, %s, %s, %s)"
)
PG_EVENT = (
    "INSERT INTO {s}.events (key, generation, session, step, phase, outcome, output, attempts, seconds, at)"
    " VALUES (%s, 1, 1, 'double', 'job', 'ok', %s, 1, 2e-6, %s) RETURNING id"
)
PG_FINISH_RUN = (
    "UPDATE {s}.runs SET status = 'ok', result = %s, owner = NULL, lease_until = NULL, updated = %s"
    " WHERE key = %s AND owner = %s"
)


def _schema(path: Path) -> str:
    """The round's schema: named after the round's file, which it stands for."""
    return f"{_SCHEMAS}_{path.stem.replace('-', '_').replace(',', '')}"


def _drop(schema: str) -> None:
    import psycopg  # noqa: PLC0415 - only with --backend postgres
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def postgres_ours(workers: int) -> Case:
    measure = serve_on(lambda path: PostgresStore(URL, schema=_schema(path)), workers)

    def measured(path: Path, n: int) -> Timing:
        try:
            return measure(path, n)
        finally:
            _drop(_schema(path))

    return measured


def postgres_floor(*, with_run: bool) -> Case:
    def measure(path: Path, n: int) -> Timing:
        import psycopg  # noqa: PLC0415 - only with --backend postgres
        from psycopg import sql  # noqa: PLC0415

        schema = _schema(path)
        PostgresStore(URL, schema=schema).close()  # the store's own tables, in a schema of their own
        quoted = sql.Identifier(schema).as_string()

        def statement(template: str) -> str:
            return template.replace("{s}", quoted)

        enqueue, claim, ack = statement(PG_ENQUEUE), statement(PG_CLAIM), statement(PG_ACK)
        begin, event, finish = statement(PG_BEGIN_RUN), statement(PG_EVENT), statement(PG_FINISH_RUN)
        try:
            with psycopg.connect(URL, autocommit=True) as conn:
                execute, clock, owner = conn.execute, time.time, "host:1:server"
                start = time.perf_counter()
                for i in range(n):
                    now = clock()
                    execute(enqueue, (f"m{i}", QUEUE, str(i), now, now, now))
                enqueued = time.perf_counter() - start
                start = time.perf_counter()
                while True:
                    now = clock()
                    row = execute(claim, (QUEUE, now, owner, now + 60.0)).fetchone()
                    if row is None:
                        break
                    key = row[0]
                    if with_run:
                        execute(begin, (key, row[1], owner, now + 60.0, now, now))
                        (number,) = execute(event, (key, str(job(int(row[1]))), clock())).fetchone() or (0,)
                        execute(finish, (f"[{number}]", clock(), key, owner))
                    execute(ack, (clock(), key, owner))
                elapsed = time.perf_counter() - start
                counted = execute(statement("SELECT count(*) FROM {s}.messages WHERE status = 'done'")).fetchone()
                assert counted == (n,)  # noqa: S101
        finally:
            _drop(schema)
        return Timing(enqueued / n, elapsed / n)

    return measure


#: The kinds of store measured.
BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(ours=sqlite_ours, floor=sqlite_floor),
    "postgres": Backend(ours=postgres_ours, floor=postgres_floor),
}


def best_of(rounds: int, n: int, directory: Path, cases: dict[str, Case]) -> dict[str, Timing]:
    """Each case's best enqueue and serve times over *rounds* alternating rounds, on fresh files."""
    best = dict.fromkeys(cases, Timing(float("inf"), float("inf")))
    order = list(cases)
    for round_ in range(rounds):
        for label in order if round_ % 2 == 0 else reversed(order):  # no case always goes first
            path = directory / f"{label.replace(' ', '-')}-{round_}.db"
            got = cases[label](path, n)
            best[label] = Timing(min(best[label].enqueue, got.enqueue), min(best[label].serve, got.serve))
            for leftover in directory.glob(f"{path.name}*"):  # the file, its -wal and -shm
                leftover.unlink()
    return best


def rate(seconds: float) -> str:
    return f"{1 / seconds:8,.0f} msg/s ({seconds * 1e6:6.0f} us)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and messages, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when the target is missed")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="sqlite", help="the kind of store")
    args = parser.parse_args()
    rounds, n = (2, 300) if args.quick else (5, 3_000)
    backend = BACKENDS[args.backend]
    where = f"SQLite {sqlite3.sqlite_version}" if args.backend == "sqlite" else "PostgreSQL (CHOREOGRAPH_TEST_POSTGRES)"
    print(f"Python {sys.version.split()[0]}, {where}, {args.backend}, {n} messages per round,")
    print(f"a one-step durable flow, best of {rounds} rounds")
    cases = {
        "serve, 1 worker": backend.ours(1),
        "serve, 4 workers": backend.ours(4),
        "queue floor": backend.floor(with_run=False),
        "serve floor": backend.floor(with_run=True),
    }
    with tempfile.TemporaryDirectory(prefix="choreograph-bench-") as name:
        best = best_of(rounds, n, Path(name), cases)
    one, four = best["serve, 1 worker"], best["serve, 4 workers"]
    queue_floor, serve_floor = best["queue floor"], best["serve floor"]
    enqueue_floor = min(queue_floor.enqueue, serve_floor.enqueue)
    ratio = one.enqueue / enqueue_floor
    print(f"{'enqueue':<18} ours {rate(one.enqueue)}   floor {rate(enqueue_floor)}   ratio {ratio:.2f}")
    for label, timing in (("serve, 1 worker", one), ("serve, 4 workers", four)):
        print(
            f"{label:<18} ours {rate(timing.serve)}   serve floor {rate(serve_floor.serve)}"
            f"   ratio {timing.serve / serve_floor.serve:.2f}   (queue floor {rate(queue_floor.serve)})"
        )
    ratio = one.serve / serve_floor.serve
    print(f"target: serve (1 worker) ratio to the serve floor <= {TARGET} ({'met' if ratio <= TARGET else 'MISSED'})")
    return 1 if args.strict and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
