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

Run: ``make bench`` or ``python benchmarks/queues.py [--quick] [--strict] [--backend sqlite]``.
Target: serve with one worker within 2.5x the serve floor (time per message).

A Postgres variant is one more `Backend` in `BACKENDS`: a factory of
``PostgresStore(url)`` (its schema dropped per round) and floors written with
psycopg, claiming with ``SELECT ... FOR UPDATE SKIP LOCKED``; ``--backend``
then chooses it.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from choreograph import Coordinator, SqliteStore, Step

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


def sqlite_ours(workers: int) -> Case:
    def measure(path: Path, n: int) -> Timing:
        store = SqliteStore(path)
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


#: The kinds of store measured (see the module's docstring for adding Postgres).
BACKENDS: dict[str, Backend] = {"sqlite": Backend(ours=sqlite_ours, floor=sqlite_floor)}


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
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {args.backend}, {n} messages per round,")
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
