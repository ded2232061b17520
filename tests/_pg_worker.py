"""
Callbacks and a contending process for tests/test_postgres_store.py.

Usage: ``python _pg_worker.py many URL#SCHEMA LEDGER READY GO ORDER``: write READY, wait
for GO, then ``run_many`` over keys 0..99 (in ORDER: ``up``, ``down`` or ``rotated``) on a
`PostgresStore`; each job appends ``(key, step, pid)`` to the LEDGER (a SQLite file, the
outside world's memory of what ran). Prints a JSON summary of the results.

Imported, it gives worker processes callbacks they can import by reference (``pid``, ``key_of``).
"""

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from choreograph import Coordinator, PostgresStore, Step

KEYS = 100


def pid(x: int) -> int:
    """The worker process's id: which process ran the job."""
    return os.getpid()


def key_of(x: int) -> str:
    return f"key-{x}"


def _wait_for(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.005)


def many(location: str, ledger: str, ready: str, go: str, order: str) -> None:
    me = os.getpid()

    def append(step: str) -> object:
        def job(key: int) -> str:
            conn = sqlite3.connect(ledger, timeout=30)
            try:
                with conn:
                    conn.execute("INSERT INTO ledger (key, step, pid) VALUES (?, ?, ?)", (key, step, me))
            finally:
                conn.close()
            return f"{step}:{key}"

        return job

    url, _, schema = location.partition("#")
    store = PostgresStore(url, schema=schema, max_connections=4)
    coordinator = Coordinator(
        [Step("reserve", append("reserve")), Step("charge", append("charge"))], store=store, key=key_of
    )
    keys = list(range(KEYS))
    if order == "down":
        keys.reverse()
    elif order == "rotated":
        keys = keys[KEYS // 2 :] + keys[: KEYS // 2]
    Path(ready).write_text("ready")
    _wait_for(Path(go))
    results = list(coordinator.run_many(keys, workers=8))
    summary = {
        "pid": me,
        "results": len(results),
        "ok": sum(r.ok for r in results),
        "fatals": sorted({type(r.fatal).__name__ for r in results if r.fatal is not None}),
        "ran": sum(not r.trace[0].restored for r in results if r.trace),
        "bad_outputs": [r.key for r in results if r.ok and r.data_bag.get_job_data("charge") != f"charge:{r.input}"],
    }
    store.close()
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"many": many}[mode](*args)
