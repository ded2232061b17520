"""
Durable runs survive SIGKILL: kill a batch again and again, then let it finish.

tests/_crash_worker.py runs a batch of records through four steps on a
`SqliteStore` (or a `PostgresStore`), in sequence or with two of them in a `Parallel` group; every
job first commits a row to a separate ledger database (the
outside world's memory of what really ran). The worker is killed with SIGKILL
at random moments, restarted each time, and finally left to finish. Then the
ledger and the store must agree: nothing was lost, every record finished, and
the only steps that ran twice are those a kill caught in flight (at most one
per worker thread and branch per kill), each re-run by a resumed session.
"""

from __future__ import annotations

import contextlib
import itertools
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

from choreograph import Event, PostgresStore, RunInfo, SqliteStore
from choreograph.typing import Store

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "_crash_worker.py"
STEPS = ("reserve", "charge", "ship", "notify")  # as in the worker
WORKERS = 4  # the worker's run_many(workers=...)
#: Per flow of the worker: the (earlier, later) pairs of steps whose order holds,
#: and how many of a run's callbacks can be in flight at once.
FLOWS = {
    "sequence": (list(itertools.pairwise(STEPS)), 1),
    "group": ([("reserve", "charge"), ("reserve", "ship"), ("charge", "notify"), ("ship", "notify")], 2),
}
# A worker is killed once it has committed a random number (ROWS_BEFORE_KILL) of
# ledger rows of its own: counted, not timed, so a loaded machine can't let a
# worker finish the batch before its kill. The 10 kills leave at most 8000 rows,
# plus what a worker commits while the test looks at the ledger (4 threads that
# sleep 1 ms per job: at most 4 rows a millisecond), of the 16000 steps.
RECORDS = 4000
KILLS = 10
#: Per store: its batch's records and kills. PostgreSQL commits each event over a socket, so its batch is
#: half as long, with 6 kills (at most 4800 of its 8000 steps' rows before the last worker).
SIZES = {"sqlite": (RECORDS, KILLS), "postgres": (RECORDS // 2, 6)}
ROWS_BEFORE_KILL = (50, 800)
PROGRESS_TIMEOUT = 60.0  # seconds for a worker to commit the rows it is killed after (a hang is far longer)
FINAL_TIMEOUT = 120.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _read_ledger(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Query the ledger; before the first worker created its table, there is nothing."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path, timeout=30.0, isolation_level=None)) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def _rows_of(ledger: Path, pid: int) -> int:
    rows = _read_ledger(ledger, "SELECT count(*) FROM ledger WHERE pid = ?", (pid,))
    return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


def _log(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-4000:] or "(no output)"


class _Batch:
    """Starts the worker on one store and ledger, and remembers every process it started."""

    def __init__(self, tmp_path: Path, flow: str, store: str, records: int) -> None:
        self.records = records
        self.tmp_path = tmp_path
        self.flow = flow
        self.store = store
        self.ledger = tmp_path / "ledger.db"
        self.env = _env()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp_path / f"worker-{n}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), str(self.store), str(self.ledger), str(self.records), self.flow],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc, log

    def kill_at_work(self, n: int, rng: random.Random) -> int:
        """Start worker *n*, SIGKILL it once it committed a random number of ledger rows; return its pid."""
        proc, log = self.start(n)
        rows = rng.randint(*ROWS_BEFORE_KILL)
        give_up = time.monotonic() + PROGRESS_TIMEOUT
        while _rows_of(self.ledger, proc.pid) < rows:
            if proc.poll() is not None:
                pytest.fail(f"worker {n} exited ({proc.returncode}) before {rows} rows of work:\n{_log(log)}")
            if time.monotonic() >= give_up:
                pytest.fail(f"worker {n} did not commit {rows} rows in {PROGRESS_TIMEOUT}s (a hang?):\n{_log(log)}")
            time.sleep(0.005)
        proc.kill()
        proc.wait(timeout=10)  # reaped: the store sees its pid as dead, not as a zombie
        if proc.returncode != -signal.SIGKILL:
            pytest.fail(f"worker {n} ended with {proc.returncode} before the kill (raise RECORDS?):\n{_log(log)}")
        return proc.pid

    def finish(self, n: int) -> int:
        """Start worker *n* and let it finish the batch; return its pid."""
        proc, log = self.start(n)
        try:
            proc.wait(timeout=FINAL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the last worker did not finish in {FINAL_TIMEOUT}s (a hang?):\n{_log(log)}")
        assert proc.returncode == 0, f"the last worker failed ({proc.returncode}):\n{_log(log)}"
        return proc.pid

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def open_store(location: str) -> Store:
    """The store the worker ran on, as tests/_crash_worker.py opens it."""
    if location.startswith("postgresql://"):
        url, _, schema = location.partition("#")
        return PostgresStore(url, schema=schema)
    return SqliteStore(location)


def _check_store(location: str, records: int) -> tuple[dict[str, RunInfo], dict[str, list[Event]]]:
    """Every key finished ok, and each of its steps' success is recorded exactly once."""
    keys = [str(i) for i in range(records)]
    store = open_store(location)
    with contextlib.closing(store):
        found = {key: store.run_info(key) for key in keys}
        unfinished = {key: info and info.status for key, info in found.items() if info is None or info.status != "ok"}
        assert not unfinished, f"{len(unfinished)} keys not ok, e.g. {sorted(unfinished.items())[:10]}"
        assert len(store.runs(status="ok")) == records
        infos = {key: info for key, info in found.items() if info is not None}
        events = {key: store.events(key) for key in keys}
    bad: list[str] = []
    for key, evs in events.items():
        oks = Counter(e.step for e in evs if e.phase == "job" and e.outcome == "ok")
        if oks != Counter(STEPS):
            bad.append(f"{key}: job ok events {dict(oks)}")
        odd = [(e.step, e.phase, e.outcome, e.generation) for e in evs if e.outcome != "ok" or e.generation != 1]
        if odd:
            bad.append(f"{key}: unexpected events {odd}")
    assert not bad, f"{len(bad)} keys with wrong events, e.g. {bad[:10]}"
    return infos, events


def _read_runs(ledger: Path, processes: set[int], records: int) -> dict[tuple[int, str], list[tuple[int, int]]]:
    """The ledger as ``(record, step) -> [(row id, pid), ...]``; no step is missing or unknown."""
    runs: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    for row_id, record, step, pid in _read_ledger(ledger, "SELECT id, record_id, step, pid FROM ledger ORDER BY id"):
        runs[record, step].append((row_id, pid))  # type: ignore[index]
    expected = {(i, step) for i in range(records) for step in STEPS}
    missing = expected - runs.keys()
    assert not missing, f"{len(missing)} steps never ran (lost work), e.g. {sorted(missing)[:10]}"
    assert runs.keys() == expected, f"unexpected ledger rows: {sorted(runs.keys() - expected)[:10]}"
    assert {pid for executions in runs.values() for _, pid in executions} <= processes
    return runs


def _check_order(
    runs: dict[tuple[int, str], list[tuple[int, int]]], pairs: list[tuple[str, str]], records: int
) -> None:
    """No process ran a step twice; per record, a step never re-ran once a step after it started."""
    twice = {pair: execs for pair, execs in runs.items() if len({pid for _, pid in execs}) < len(execs)}
    assert not twice, f"steps run twice by one process: {list(twice.items())[:10]}"
    out_of_order = [
        (i, earlier, later)
        for i in range(records)
        for earlier, later in pairs
        if max(row_id for row_id, _ in runs[i, earlier]) > min(row_id for row_id, _ in runs[i, later])
    ]
    assert not out_of_order, f"a step re-ran after the next one started: {out_of_order[:10]}"


def _check_duplicates(
    duplicated: dict[tuple[int, str], list[tuple[int, int]]],
    killed: list[int],
    infos: dict[str, RunInfo],
    events: dict[str, list[Event]],
    width: int,
) -> int:
    """Only steps a kill caught in flight ran again, each by a resumed session; return the re-runs."""
    extra = sum(len(execs) - 1 for execs in duplicated.values())
    too_many = {pair: len(execs) for pair, execs in duplicated.items() if len(execs) > 1 + len(killed)}
    assert not too_many, f"steps run more often than there were kills: {too_many}"
    in_flight = WORKERS * width  # callbacks a kill can catch: each thread's run, each of its branches
    assert extra <= len(killed) * in_flight, f"{extra} re-executions for {len(killed)} kills of {in_flight} callbacks"
    # Only the last execution of a step counted; the others were caught in flight
    # by a kill: at most one per thread of each killed process.
    superseded = Counter(pid for execs in duplicated.values() for _, pid in sorted(execs)[:-1])
    assert set(superseded) <= set(killed), f"superseded executions by a process not killed: {superseded}"
    assert max(superseded.values(), default=0) <= in_flight, f"more re-runs than callbacks in flight: {superseded}"
    not_resumed = {}
    for record, step in duplicated:
        evs, info = events[str(record)], infos[str(record)]
        job = next(e for e in evs if e.step == step and e.phase == "job")
        if max(e.session for e in evs) <= 1 or info.sessions <= 1 or info.interruptions < 1 or job.session <= 1:
            not_resumed[record, step] = (info.sessions, info.interruptions, [(e.step, e.session) for e in evs])
    assert not not_resumed, f"steps run twice without a resume after a kill: {not_resumed}"
    return extra


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_durable_batch_survives_repeated_sigkill(tmp_path: Path, flow: str, kind: str, request: pytest.FixtureRequest):
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("this platform has no SIGKILL")
    store = str(tmp_path / "store.db")
    if kind == "postgres":
        url, schema = request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")()
        store = f"{url}#{schema}"
    pairs, width = FLOWS[flow]
    records, kills = SIZES[kind]
    rng = random.Random(1234)
    batch = _Batch(tmp_path, flow, store, records)
    began = time.monotonic()
    try:
        killed = [batch.kill_at_work(n, rng) for n in range(kills)]
        last = batch.finish(kills)
    finally:
        batch.stop_all()
    elapsed = time.monotonic() - began

    infos, events = _check_store(batch.store, records)
    runs = _read_runs(batch.ledger, {*killed, last}, records)
    _check_order(runs, pairs, records)
    duplicated = {pair: execs for pair, execs in runs.items() if len(execs) > 1}
    extra = _check_duplicates(duplicated, killed, infos, events, width)
    assert len(runs) - len(duplicated) >= 0.99 * len(runs), f"{len(duplicated)} of {len(runs)} steps re-ran"
    resumed = sum(1 for info in infos.values() if info.sessions > 1)
    assert resumed >= 1, "no kill caught a run in progress: the test did not exercise resuming"

    print(  # noqa: T201 - the numbers, visible with -s
        f"\ncrash test ({kind}, {flow}): kills={len(killed)} records={records} steps={len(runs)}"
        f" ledger_rows={sum(map(len, runs.values()))} duplicated_steps={len(duplicated)}"
        f" duplicate_executions={extra} resumed_keys={resumed} elapsed={elapsed:.1f}s"
    )
