"""
A durable batch for tests/test_crash.py: run it, SIGKILL it, run it again.

Usage: ``python tests/_crash_worker.py STORE LEDGER_DB N_RECORDS [FLOW]``

Runs records ``0 .. N_RECORDS - 1`` (key ``str(i)``) through four steps on a
store, four threads at a time: STORE is a `SqliteStore`'s file, or a
`PostgresStore`'s ``postgresql://...#schema`` (its `PostgresStore.location`). FLOW is ``sequence`` (the
default: the four steps in order) or ``group`` (reserve; then charge and
ship in a `Parallel` group; then notify). Every job first commits a
row ``(record_id, step, pid, at)`` to the ``ledger`` table of LEDGER_DB, a
separate SQLite file, then sleeps a millisecond: a kill in that window leaves a
ledger row whose step the store never saw finish, and so runs again on resume.
The ledger is the outside world's memory of what really ran.

Exits 0 once every record finished ok, 1 if any did not.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable

from choreograph import Coordinator, Parallel, PostgresStore, SqliteStore, Step
from choreograph.typing import Store

STEPS = ("reserve", "charge", "ship", "notify")
WORKERS = 4
LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " record_id INTEGER NOT NULL,"
    " step TEXT NOT NULL,"
    " pid INTEGER NOT NULL,"
    " at REAL NOT NULL)"
)


def connect_ledger(path: str) -> sqlite3.Connection:
    """Open the ledger in autocommit mode: each INSERT is committed at once."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def open_store(location: str, **options: int) -> Store:
    """The store at *location*: a ``postgresql://...#schema`` URL, or a SQLite file."""
    if location.startswith("postgresql://"):
        url, _, schema = location.partition("#")
        return PostgresStore(url, schema=schema, **options)
    return SqliteStore(location, **options)


def main(argv: list[str]) -> int:
    store_path, ledger_path, count = argv[0], argv[1], int(argv[2])
    shape = argv[3] if len(argv) > 3 else "sequence"
    setup = connect_ledger(ledger_path)
    setup.execute(LEDGER_SCHEMA)
    setup.close()

    local = threading.local()
    pid = os.getpid()

    def ledger() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect_ledger(ledger_path)
        return conn

    def job_for(step: str) -> Callable[[int], None]:
        def job(record: int) -> None:
            ledger().execute(
                "INSERT INTO ledger (record_id, step, pid, at) VALUES (?, ?, ?, ?)",
                (record, step, pid, time.time()),
            )
            time.sleep(0.001)  # the window between the ledger's commit and the store's

        job.__name__ = f"{step}_job"
        return job

    store = open_store(store_path, max_interruptions=1000)
    steps = {name: Step(name, job_for(name)) for name in STEPS}
    flow: list[Step[None] | Parallel] = list(steps.values())
    if shape == "group":
        flow = [steps["reserve"], Parallel("checks", steps["charge"], steps["ship"]), steps["notify"]]
    coordinator: Coordinator[int] = Coordinator(flow, store=store, key=str)
    results = list(coordinator.run_many(range(count), workers=WORKERS))
    failed = [r for r in results if not r.ok]
    for result in failed[:20]:
        sys.stderr.write(f"key {result.key}: {result.fatal!r}\n")
    store.close()
    if len(results) != count or failed:
        sys.stderr.write(f"{len(results)} results for {count} records, {len(failed)} not ok\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
