"""
A served queue survives SIGKILL: kill the server again and again at random moments, restart it each time, then
let it finish.

tests/_queue_worker.py serves a queue of messages through three steps on a `SqliteStore` (or a
`PostgresStore`), four at a time; every
job first commits a row to a separate ledger database (the outside world's memory of what really ran). The
server is killed with SIGKILL once it has committed a random number of ledger rows, restarted at once (the
restart takes the dead server's claims back at its first look: it was a process of this machine), and at the
end left to finish. Then the ledger and the store must agree: every message is done and its run ok, every step
ran, no step ran again once its completion was committed, and the only steps that ran twice are those a kill
caught in flight (at most one per worker and kill), each re-run by a resumed session.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from choreograph import Event, PostgresStore, SqliteStore

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "_queue_worker.py"
STEPS = ("reserve", "charge", "ship")  # as in the worker
WORKERS = 4
# Killed once it committed a random number of ledger rows of its own: counted, not timed, so that a loaded
# machine can't let the server finish the queue before its kill. 10 kills leave at most 3000 of the 4500 steps.
MESSAGES = 1500
KILLS = 10
ROWS_BEFORE_KILL = (30, 300)
PATIENCE = 60.0


@pytest.fixture(params=["sqlite", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store the server runs on: a SQLite file, or a ``postgresql://...#schema`` URL (a fresh schema)."""
    if request.param == "postgres":
        return f"{request.getfixturevalue('postgres_url')}#{request.getfixturevalue('pg_schema')()}"
    return str(tmp_path / "store.db")


def open_store(spec: str) -> SqliteStore | PostgresStore:
    if spec.startswith("postgresql://"):
        url, _, schema = spec.partition("#")
        return PostgresStore(url, schema=schema)
    return SqliteStore(spec)


def ledger(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def start(store: str, ledger_path: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "serve",
                str(store),
                str(ledger_path),
                "q",
                "--workers",
                str(WORKERS),
                *options,
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def serve_with_kills(tmp_path: Path, store_path: str, ledger_path: Path) -> list[int]:
    """Start the server KILLS times, SIGKILL each once it committed a random number of rows; then let one finish."""
    rng = random.Random(4321)
    killed: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(KILLS):
            log = tmp_path / f"server-{n}.log"
            proc = start(store_path, ledger_path, log)
            procs.append(proc)
            rows = rng.randint(*ROWS_BEFORE_KILL)
            give_up = time.monotonic() + PATIENCE
            while ledger(ledger_path, "SELECT count(*) FROM ledger WHERE pid = ?", (proc.pid,)) < [(rows,)]:
                if proc.poll() is not None or time.monotonic() > give_up:
                    pytest.fail(f"server {n} ended ({proc.returncode}) or hung before {rows} rows:\n{log.read_text()}")
                time.sleep(0.005)
            proc.kill()
            proc.wait()  # reaped: the restart sees its pid as dead
            killed.append(proc.pid)
        log = tmp_path / "server-last.log"
        last = start(store_path, ledger_path, log, "--stop-when-done", str(MESSAGES))
        procs.append(last)
        last.wait(timeout=120)
        assert last.returncode == 0, log.read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return killed


def check_ledger(
    ledger_path: Path, completed: dict[tuple[str, str], Event], killed: list[int]
) -> dict[tuple[str, str], list[tuple[int, int, float]]]:
    """Every step ran; none ran after its completion was committed; re-runs only where a kill struck."""
    runs: dict[tuple[str, str], list[tuple[int, int, float]]] = defaultdict(list)
    for row_id, key, step, pid, at in ledger(ledger_path, "SELECT id, key, step, pid, at FROM ledger ORDER BY id"):
        runs[str(key), str(step)].append((int(row_id), int(pid), float(at)))  # type: ignore[call-overload]
    assert set(runs) == set(completed), "steps never ran, or unknown ones did"
    after_completion = [pair for pair, execs in runs.items() if any(at > completed[pair].at for _, _, at in execs)]
    assert not after_completion, f"completed steps ran again: {after_completion[:10]}"
    duplicated = {pair: execs for pair, execs in runs.items() if len(execs) > 1}
    superseded = Counter(pid for execs in duplicated.values() for _, pid, _ in sorted(execs)[:-1])
    assert set(superseded) <= set(killed), "a step re-ran although the process that ran it first was not killed"
    assert max(superseded.values(), default=0) <= WORKERS, f"more re-runs than runs in flight at a kill: {superseded}"
    return duplicated


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_served_queue_survives_repeated_sigkill(tmp_path: Path, store_spec: str):
    store_path, ledger_path = store_spec, tmp_path / "ledger.db"
    with open_store(store_path) as store:
        for n in range(MESSAGES):
            assert store.enqueue("q", {"n": n}, key=f"m{n}", priority=n % 3)
    began = time.monotonic()
    killed = serve_with_kills(tmp_path, store_path, ledger_path)
    elapsed = time.monotonic() - began

    keys = [f"m{n}" for n in range(MESSAGES)]
    with open_store(store_path) as store:
        assert dict(store.queue_info("q")) == {"queued": 0, "running": 0, "done": MESSAGES, "failed": 0}
        infos = {key: store.run_info(key) for key in keys}
        assert all(info is not None and info.status == "ok" for info in infos.values())
        events = {key: store.events(key) for key in keys}
        deliveries = {key: store.message_info(key).deliveries for key in keys}  # type: ignore[union-attr]
        store.verify()
    # The store: each step's success recorded exactly once, in the first generation.
    for key, evs in events.items():
        assert sorted(e.step for e in evs if e.phase == "job" and e.outcome == "ok") == sorted(STEPS), (key, evs)
        assert all(e.outcome == "ok" and e.generation == 1 for e in evs), (key, evs)
    duplicated = check_ledger(ledger_path, {(e.key, e.step): e for evs in events.values() for e in evs}, killed)
    for key, _ in duplicated:  # each re-run by a resumed session of a redelivered message
        assert infos[key].sessions > 1, (key, infos[key])  # type: ignore[union-attr]
        assert deliveries[key] > 1, (key, deliveries[key])
    resumed = sum(1 for info in infos.values() if info.sessions > 1)  # type: ignore[union-attr]
    assert resumed >= 1, "no kill caught a run in flight: the test did not exercise resuming"

    print(  # noqa: T201 - the numbers, visible with -s
        f"\nqueue crash test: kills={len(killed)} messages={MESSAGES} duplicated_steps={len(duplicated)}"
        f" resumed_keys={resumed} redelivered={sum(1 for d in deliveries.values() if d > 1)} elapsed={elapsed:.1f}s"
    )
