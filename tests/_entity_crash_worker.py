"""
A server of tally entities for tests/test_entities_crash.py: serve, get SIGKILLed, serve again.

Usage: ``python tests/_entity_crash_worker.py STORE LEDGER_DB``

Serves the ``tally`` kind of the store STORE (a `SqliteStore`'s file, or a
``postgresql://`` URL whose fragment names a `PostgresStore`'s schema) with 4 workers until
nothing is due. A tally's state is the list of the message numbers it
handled. The handler first commits a row ``(entity, n, pid)`` to the
``ledger`` table of LEDGER_DB (a separate file: the outside world's memory of
what really ran), then sleeps a few milliseconds, then sets the state: a kill
in that window leaves a ledger row whose state change was never committed,
and the message is handled again. The state must still hold every message
exactly once, in order.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time

from choreograph import Entities, EntityContext, PostgresStore, SqliteStore

LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " entity TEXT NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL)"
)


def connect_ledger(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def main(argv: list[str]) -> int:
    store_path, ledger_path = argv[0], argv[1]
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

    if store_path.startswith("postgresql://"):
        url, _, schema = store_path.partition("#")
        store: SqliteStore | PostgresStore = PostgresStore(url, schema=schema, max_interruptions=1000)
    else:
        store = SqliteStore(store_path, max_interruptions=1000)
    kind = Entities[list[int]]("tally", store=store)

    @kind.handler(int)
    def count(ctx: EntityContext[list[int]], n: int) -> None:
        ledger().execute("INSERT INTO ledger (entity, n, pid) VALUES (?, ?, ?)", (ctx.id, n, pid))
        time.sleep(0.004)  # the window between the ledger's commit and the store's
        ctx.state = [*(ctx.state or []), n]

    kind.serve(workers=4, until_idle=True)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
