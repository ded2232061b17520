"""
A separate process sharing a store file with others (for tests/test_store_files.py).

Usage: ``python _contention_worker.py MODE STORE ...``

- ``many STORE LEDGER READY GO ORDER``: write READY, wait for GO, then ``run_many`` over keys
  0..99 (in ORDER: ``up``, ``down`` or ``rotated``); each job appends ``(key, step, pid)``
  to the LEDGER database. Prints a JSON summary of the results.
- ``hold STORE STARTED RELEASE``: run key ``held``, whose job writes STARTED and then
  waits for RELEASE to exist.
- ``die STORE``: run key ``dies``: step ``a`` succeeds, step ``b`` kills the process
  (``os._exit``) without releasing the key.
"""

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from choreograph import Coordinator, SqliteStore, Step

KEYS = 100


def _wait_for(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.005)


def many(store_path: str, ledger: str, ready: str, go: str, order: str) -> None:
    pid = os.getpid()

    def append(step: str) -> object:
        def job(key: int) -> str:
            conn = sqlite3.connect(ledger, timeout=30)
            try:
                with conn:
                    conn.execute("INSERT INTO ledger (key, step, pid) VALUES (?, ?, ?)", (key, step, pid))
            finally:
                conn.close()
            return f"{step}:{key}"

        return job

    store = SqliteStore(store_path)
    coordinator = Coordinator(
        [Step("reserve", append("reserve")), Step("charge", append("charge"))],
        store=store,
        key=lambda key: f"key-{key}",
    )
    keys = list(range(KEYS))
    if order == "down":
        keys.reverse()
    elif order == "rotated":
        keys = keys[KEYS // 2 :] + keys[: KEYS // 2]
    Path(ready).write_text("ready")
    _wait_for(Path(go))
    results = list(coordinator.run_many(keys, workers=4))
    summary = {
        "pid": pid,
        "results": len(results),
        "ok": sum(r.ok for r in results),
        "fatals": sorted({type(r.fatal).__name__ for r in results if r.fatal is not None}),
        "ran": sum(not r.trace[0].restored for r in results if r.trace),
        "bad_outputs": [r.key for r in results if r.ok and r.data_bag.get_job_data("charge") != f"charge:{r.input}"],
    }
    store.close()
    sys.stdout.write(json.dumps(summary) + "\n")


def hold(store_path: str, started: str, release: str) -> None:
    def wait() -> str:
        Path(started).write_text("started")
        _wait_for(Path(release))
        return "held"

    with SqliteStore(store_path) as store:
        result = Coordinator([Step("wait", wait)], store=store).run(None, key="held")
    sys.stdout.write(json.dumps({"ok": result.ok, "owner": store.owner}) + "\n")


def die(store_path: str) -> None:
    def kill() -> None:
        sys.stdout.flush()
        os._exit(3)

    store = SqliteStore(store_path)
    Coordinator([Step("a", lambda: "A"), Step("b", kill)], store=store).run(None, key="dies")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"many": many, "hold": hold, "die": die}[mode](*args)
