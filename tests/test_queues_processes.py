"""
Durable queues across processes (SQLite and PostgreSQL): producers and servers in processes of their own,
exclusive servers and their take-over after SIGKILL, a clean stop at SIGTERM and SIGINT, and a message that kills
its server every time.

The processes are tests/_queue_worker.py; every job commits a ledger row (key, step, pid) before the store learns
it finished, so the ledger tells what really ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from choreograph import PostgresStore, SqliteStore

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "_queue_worker.py"
STEPS = ("reserve", "charge", "ship")  # as in the worker
PATIENCE = 60.0  # seconds before a wait gives up: far longer than anything takes, short of a hang

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def ledger_rows(path: Path) -> list[tuple[str, str, int]]:
    """The ledger's (key, step, pid) rows in the order committed; none before a worker created it."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as conn:
        try:
            return conn.execute("SELECT key, step, pid FROM ledger ORDER BY id").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def wait_for(condition: Callable[[], bool], what: str, procs: list[subprocess.Popen[str]] = ()) -> None:  # type: ignore[assignment]
    give_up = time.monotonic() + PATIENCE
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a process ended ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


class Processes:
    """Starts worker processes on one store and ledger; kills whatever is left at the end."""

    def __init__(self, tmp_path: Path, store: str) -> None:
        self.store = store
        self.ledger = tmp_path / "ledger.db"
        self.tmp_path = tmp_path
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.started: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        with (self.tmp_path / f"proc-{len(self.started)}.log").open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), *args],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.started.append(proc)
        return proc

    def serve(self, *options: str) -> subprocess.Popen[str]:
        """A server of queue "q"; returns once it says it is serving."""
        proc = self.start("serve", self.store, str(self.ledger), "q", *options)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "serving\n", self.log(proc)
        return proc

    def produce(self, first: int, count: int) -> subprocess.Popen[str]:
        return self.start("produce", self.store, "q", str(first), str(count))

    def log(self, proc: subprocess.Popen[str]) -> str:
        index = self.started.index(proc)
        return (self.tmp_path / f"proc-{index}.log").read_text()[-3000:]

    def served(self, proc: subprocess.Popen[str]) -> dict[str, object]:
        """Wait for a server to exit 0; return the counts it printed."""
        out, _ = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0, self.log(proc)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture(params=["sqlite", "postgres"])
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Worker processes on a store of one kind: a SQLite file, or a PostgreSQL schema (fresh, dropped after)."""
    if request.param == "postgres":
        store = f"{request.getfixturevalue('postgres_url')}#{request.getfixturevalue('pg_schema')()}"
    else:
        store = str(tmp_path / "store.db")
    made = Processes(tmp_path, store)
    try:
        yield made
    finally:
        made.kill_all()


def open_store(spec: str) -> SqliteStore | PostgresStore:
    """The store *spec* names: a ``postgresql://...#schema`` URL, or a SQLite file."""
    if spec.startswith("postgresql://"):
        url, _, schema = spec.partition("#")
        return PostgresStore(url, schema=schema)
    return SqliteStore(spec)


def queue_info(spec: str) -> dict[str, int]:
    with open_store(spec) as store:
        return dict(store.queue_info("q"))


def enqueue(spec: str, keys: range, **options: object) -> None:
    with open_store(spec) as store:
        for n in keys:
            assert store.enqueue("q", {"n": n}, key=f"m{n}", **options)  # type: ignore[arg-type]


def test_producers_in_processes_while_servers_in_processes_serve(procs: Processes):
    """Three producers and two servers, each a process: every message runs once, each step once, none is lost."""
    enqueue(procs.store, range(1))  # the store exists before the processes open it
    servers = [procs.serve("--workers", "3"), procs.serve("--workers", "2")]
    producers = [procs.produce(first, 150) for first in (1, 151, 301)]
    for producer in producers:
        out, _ = producer.communicate(timeout=PATIENCE)
        assert (producer.returncode, out.strip()) == (0, "150"), procs.log(producer)
    total = 451
    wait_for(lambda: queue_info(procs.store)["done"] == total, "every message done", servers)
    for server in servers:
        server.send_signal(signal.SIGTERM)
    counted = [procs.served(server) for server in servers]
    assert sum(int(c["done"]) for c in counted) == total  # type: ignore[call-overload]
    assert all(c["lost"] == 0 and c["returned"] == 0 and c["failed"] == 0 for c in counted)
    ran = Counter((key, step) for key, step, _ in ledger_rows(procs.ledger))
    assert ran == Counter({(f"m{n}", step): 1 for n in range(total) for step in STEPS})  # no doubled claims
    assert queue_info(procs.store) == {"queued": 0, "running": 0, "done": total, "failed": 0}
    with open_store(procs.store) as store:
        assert store.counts()["ok"] == total
        store.verify()


def test_an_exclusive_server_is_taken_over_after_sigkill(procs: Processes):
    """One exclusive server serves; a second waits on standby; SIGKILL the first: the second takes over and resumes."""
    enqueue(procs.store, range(20))
    first = procs.serve("--exclusive", "--workers", "2", "--slow", "0.02", "--lease", "5")
    wait_for(lambda: len(ledger_rows(procs.ledger)) >= 6, "the first server to work", [first])
    second = procs.serve("--exclusive", "--workers", "2", "--slow", "0.02", "--lease", "5")
    enqueue(procs.store, range(20, 30))
    wait_for(lambda: len(ledger_rows(procs.ledger)) >= 40, "the first server to go on", [first, second])
    assert {pid for _, _, pid in ledger_rows(procs.ledger)} == {first.pid}  # the second is on standby
    first.kill()
    first.wait()
    wait_for(lambda: queue_info(procs.store)["done"] == 30, "the second server to finish the queue", [second])
    second.send_signal(signal.SIGTERM)
    counted = procs.served(second)
    rows = ledger_rows(procs.ledger)
    assert {pid for _, _, pid in rows} == {first.pid, second.pid}
    assert int(counted["done"]) >= 1  # type: ignore[call-overload]
    by_step = Counter((key, step) for key, step, _ in rows)
    assert set(by_step) == {(f"m{n}", step) for n in range(30) for step in STEPS}
    twice = {pair: n for pair, n in by_step.items() if n > 1}
    assert len(twice) <= 2, twice  # at most the steps the kill caught in flight, one per worker
    with open_store(procs.store) as store:
        assert store.counts()["ok"] == 30
        for key, _ in twice:
            assert store.run_info(key).sessions == 2  # type: ignore[union-attr]  # resumed by the second


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_server_cleanly(procs: Processes, signum: int):
    """SIGTERM or SIGINT: the server takes nothing new, lets its run in flight finish, prints its counts, exits 0."""
    enqueue(procs.store, range(5))
    server = procs.serve("--workers", "1", "--slow", "0.5")
    wait_for(lambda: len(ledger_rows(procs.ledger)) >= 1, "the first step to start", [server])
    server.send_signal(signum)
    counted = procs.served(server)
    assert (counted["done"], counted["failed"], counted["returned"], counted["lost"]) == (1, 0, 0, 0)
    assert [(key, step) for key, step, _ in ledger_rows(procs.ledger)] == [("m0", step) for step in STEPS]
    assert queue_info(procs.store) == {"queued": 4, "running": 0, "done": 1, "failed": 0}


def test_a_message_that_kills_its_server_is_poisoned_and_the_queue_goes_on(procs: Processes):
    """
    A message whose step ends the process, every time: each restart takes it again (its run resumes), until its
    key's interruptions pass max_interruptions; then it fails with PoisonedRun and the other messages are served.

    The poison has the highest priority, so that with one worker it is the only message in flight when it strikes.
    """
    with open_store(procs.store) as store:
        assert store.enqueue("q", {"n": -1, "poison": True}, key="poison", priority=9)
    enqueue(procs.store, range(10))
    exits = []
    for _ in range(6):
        server = procs.serve("--workers", "1", "--max-interruptions", "2", "--stop-when-done", "10")
        server.wait(timeout=PATIENCE)
        exits.append(server.returncode)
        if server.returncode == 0:
            break
    assert exits == [3, 3, 3, 0]  # run, resumed twice, then poisoned
    with open_store(procs.store) as store:
        poison = store.message_info("poison")
        assert poison is not None
        assert poison.status == "failed"
        assert poison.deliveries == 4
        assert poison.error == "PoisonedRun: key 'poison' was interrupted 3 times: marked as poisoned, not run again"
        assert store.run_info("poison").status == "poisoned"  # type: ignore[union-attr]
        assert dict(store.queue_info("q")) == {"queued": 0, "running": 0, "done": 10, "failed": 1}
    charges = [pid for key, step, pid in ledger_rows(procs.ledger) if key == "poison" and step == "charge"]
    assert len(charges) == 3
