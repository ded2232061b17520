"""
Queue processes for tests/test_queues_processes.py and tests/test_queues_crash.py: a server and a producer.

Usage:

- ``python tests/_queue_worker.py serve STORE LEDGER QUEUE [--workers N] [--exclusive] [--lease S]
  [--stop-when-done N] [--slow S] [--max-interruptions N]``:
  serve QUEUE of the store STORE (a `SqliteStore`'s file, or a ``postgresql://`` URL whose fragment
  names the `PostgresStore`'s schema) with a flow of three steps (``reserve``, ``charge``, ``ship``),
  until SIGTERM/SIGINT, or until the queue has N messages done (``--stop-when-done``). Every job first
  commits a row ``(key, step, pid, at)`` to the ``ledger`` table of LEDGER (a separate SQLite file: the
  outside world's memory of what really ran), then sleeps ``--slow`` seconds (default 0.001). A record
  ``{"n": ..., "poison": true}`` ends the process in its ``charge`` step (``os._exit(3)``), each time it
  runs. Prints the `Served` counts as JSON on its last line.
- ``python tests/_queue_worker.py produce STORE QUEUE FIRST COUNT``: enqueue keys ``m{FIRST}`` to
  ``m{FIRST + COUNT - 1}`` (records ``{"n": i}``); prints how many were stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from choreograph import Context, Coordinator, PostgresStore, SqliteStore, Step

STEPS = ("reserve", "charge", "ship")
LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " key TEXT NOT NULL,"
    " step TEXT NOT NULL,"
    " pid INTEGER NOT NULL,"
    " at REAL NOT NULL)"
)


def open_store(spec: str, **options: Any) -> SqliteStore | PostgresStore:
    """STORE: a ``postgresql://...#schema`` URL opens a `PostgresStore`, anything else a `SqliteStore`'s file."""
    if spec.startswith("postgresql://"):
        url, _, schema = spec.partition("#")
        return PostgresStore(url, schema=schema, **options)
    return SqliteStore(spec, **options)


def connect_ledger(path: str) -> sqlite3.Connection:
    """The ledger in autocommit mode: each INSERT is committed at once."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def flow(store: SqliteStore | PostgresStore, ledger_path: str, slow: float) -> Coordinator[dict[str, Any]]:
    local = threading.local()
    pid = os.getpid()

    def ledger() -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect_ledger(ledger_path)
        return conn

    def job_for(step: str) -> Callable[..., None]:
        def job(ctx: Context, record: dict[str, Any]) -> None:
            ledger().execute(
                "INSERT INTO ledger (key, step, pid, at) VALUES (?, ?, ?, ?)", (ctx.key, step, pid, time.time())
            )
            if step == "charge" and record.get("poison"):
                os._exit(3)  # a message that kills its server, every time
            time.sleep(slow)  # the window between the ledger's commit and the store's

        job.__name__ = f"{step}_job"
        return job

    return Coordinator[dict[str, Any]]([Step(name, job_for(name)) for name in STEPS], store=store)


def serve(args: argparse.Namespace) -> int:
    setup = connect_ledger(args.ledger)
    setup.execute(LEDGER_SCHEMA)
    setup.close()
    store = open_store(args.store, lease=args.lease, max_interruptions=args.max_interruptions)
    coordinator = flow(store, args.ledger, args.slow)
    stop = threading.Event()
    watcher = None
    if args.stop_when_done:

        def watch() -> None:
            while not stop.is_set():
                if store.queue_info(args.queue)["done"] >= args.stop_when_done:
                    stop.set()
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    print("serving", flush=True)  # noqa: T201 - the test waits for it
    served = coordinator.serve(args.queue, workers=args.workers, stop=stop, exclusive=args.exclusive)
    stop.set()
    store.close()
    print(json.dumps(dataclasses.asdict(served)), flush=True)  # noqa: T201 - the test reads it
    return 0


def produce(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    stored = sum(store.enqueue(args.queue, {"n": i}, key=f"m{i}") for i in range(args.first, args.first + args.count))
    store.close()
    print(stored, flush=True)  # noqa: T201 - the test reads it
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    served = commands.add_parser("serve")
    served.add_argument("store")
    served.add_argument("ledger")
    served.add_argument("queue")
    served.add_argument("--workers", type=int, default=2)
    served.add_argument("--exclusive", action="store_true")
    served.add_argument("--lease", type=float, default=60.0)
    served.add_argument("--stop-when-done", type=int, default=0)
    served.add_argument("--slow", type=float, default=0.001)
    served.add_argument("--max-interruptions", type=int, default=1000)
    produced = commands.add_parser("produce")
    produced.add_argument("store")
    produced.add_argument("queue")
    produced.add_argument("first", type=int)
    produced.add_argument("count", type=int)
    args = parser.parse_args(argv)
    return serve(args) if args.command == "serve" else produce(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
