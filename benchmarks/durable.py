"""
The per-step checkpoint cost of a durable run, against raw SQLite in the same process.

A ``Coordinator(store=SqliteStore(path), key=str)`` with 10 steps, each a job
``(x: int) -> int`` and no precheck, runs many distinct keys (``run(i)`` for a
fresh range of ``i`` each round, on a fresh store file each round). Each
callback's outcome is one INSERT into the ``events`` table, committed on its
own. Its cost per step is the time per run divided by 10, so the run's own
begin and finish are spread over its steps; the fixed cost per run (begin +
finish) and the marginal cost per step are also given, from runs of 1 and of
10 steps (time per run = fixed + steps * per step).

The floor: a plain ``sqlite3`` connection to another fresh file with the
store's settings (``isolation_level=None``, WAL, ``synchronous=NORMAL``, the
same busy timeout), a table with the columns and the index of the store's
``events`` table (schema version 5), and per step one INSERT of the row the
store writes for it (key, generation, session, step, phase, outcome, output
``"42"``-like, attempts, seconds, time; the error columns left NULL, unbound,
as the store does: binding ``None`` costs the ``sqlite3`` module more than any
other value), committed on its own (autocommit: one transaction each). Then
the same with a precheck on each step (2 events per step) against 2 inserts per
step. All cases are timed in alternating rounds
and the best round of each wins, which filters out noise from a shared machine.

Run: ``make bench`` or ``python benchmarks/durable.py [--quick] [--strict]``.
Target: ratio <= 1.5 for the job-only steps (cost per step, begin and finish included).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from choreograph import Coordinator, Event, SqliteStore, Step

STEPS = 10
TARGET = 1.5
BUSY_TIMEOUT = 30.0  # seconds: SqliteStore's default busy_timeout
NAMES = [f"step {i}" for i in range(STEPS)]

# The store's events table and its index (choreograph/durable/sqlite.py, schema version 5).
EVENTS_TABLE = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    session INTEGER NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    outcome TEXT NOT NULL,
    output TEXT,
    error TEXT,
    error_type TEXT,
    attempts INTEGER NOT NULL,
    seconds REAL NOT NULL,
    at REAL NOT NULL,
    traceback TEXT
)
"""
EVENTS_INDEX = "CREATE INDEX events_by_run ON events (key, generation, id)"
INSERT = (
    "INSERT INTO events (key, generation, session, step, phase, outcome, output, attempts, seconds, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Seconds per run of one case, measured on a fresh file for the given keys.
Case = Callable[[Path, range], float]


def precheck(x: int) -> int:
    return x + 1


def job(x: int) -> int:
    return x * 2


def floor_row(key: str, value: int, step: str, phase: str, now: float) -> tuple[object, ...]:
    """The values of the events row the store writes for a first run's callback that returned an int."""
    output = str(precheck(value) if phase == "precheck" else job(value))
    return (key, 1, 1, step, phase, "ok", output, 1, 2e-6, now)


def durable(steps: int, *, with_precheck: bool) -> Case:
    """A durable coordinator of *steps* steps, one run per key."""

    def measure(path: Path, keys: range) -> float:
        store = SqliteStore(path)
        try:
            coordinator: Coordinator[int] = Coordinator(store=store, key=str)
            for name in NAMES[:steps]:
                coordinator.add_step(Step(name, job, precheck if with_precheck else None))
            run = coordinator.run
            start = time.perf_counter()
            for value in keys:
                run(value)
            elapsed = time.perf_counter() - start
            assert run(keys[-1]).ok  # noqa: S101 - a failing flow would make the numbers meaningless
        finally:
            store.close()
        return elapsed / len(keys)

    return measure


def floor(steps: int, phases: Sequence[str]) -> Case:
    """Raw sqlite3: one INSERT + COMMIT per callback, *phases* per step."""

    def measure(path: Path, keys: range) -> float:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            conn.execute(EVENTS_TABLE)
            conn.execute(EVENTS_INDEX)
            execute = conn.execute
            clock = time.time
            names = NAMES[:steps]
            start = time.perf_counter()
            for value in keys:
                key = str(value)
                for name in names:
                    for phase in phases:
                        execute(INSERT, floor_row(key, value, name, phase, clock()))
            elapsed = time.perf_counter() - start
            expected = len(keys) * steps * len(phases)
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == expected  # noqa: S101
        finally:
            conn.close()
        return elapsed / len(keys)

    return measure


def stored_columns(e: Event) -> tuple[object, ...]:
    """An event's columns in the order of `floor_row`'s values (time aside), then those the floor leaves NULL."""
    return (
        e.key,
        e.generation,
        e.session,
        e.step,
        e.phase,
        e.outcome,
        e.output,
        e.attempts,
        e.error,
        e.error_type,
        e.traceback,
    )


def check_rows(directory: Path) -> None:
    """Make sure the floor writes what the store writes, column for column (time aside)."""
    for with_precheck in (False, True):
        path = directory / f"check-{with_precheck}.db"
        with SqliteStore(path) as store:
            coordinator: Coordinator[int] = Coordinator(store=store, key=str)
            for name in NAMES:
                coordinator.add_step(Step(name, job, precheck if with_precheck else None))
            assert coordinator.run(21).ok  # noqa: S101
            events = store.events("21")
        phases = ("precheck", "job") if with_precheck else ("job",)
        expected = [
            (*floor_row("21", 21, name, phase, 0.0)[:8], None, None, None) for name in NAMES for phase in phases
        ]
        stored = [stored_columns(event) for event in events]
        if stored != expected:
            msg = f"the floor's rows differ from the store's:\n{stored}\n{expected}"
            raise AssertionError(msg)


def best_of(rounds: int, number: int, directory: Path, cases: dict[str, Case]) -> dict[str, float]:
    """Seconds per run of each case: the best of *rounds* alternating rounds, fresh files and keys each."""
    best = dict.fromkeys(cases, float("inf"))
    order = list(cases)
    for round_ in range(rounds):
        keys = range(round_ * number, (round_ + 1) * number)
        for label in order if round_ % 2 == 0 else reversed(order):  # no case always goes first
            path = directory / f"{label}-{round_}.db"
            best[label] = min(best[label], cases[label](path, keys))
            for leftover in directory.glob(f"{path.name}*"):  # the file, its -wal and -shm
                leftover.unlink()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target is missed")
    args = parser.parse_args()
    rounds, number = (3, 200) if args.quick else (13, 1_000)
    print(
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {STEPS} steps, "
        f"{number} keys per round, best of {rounds} rounds"
    )
    cases: dict[str, Case] = {
        "durable": durable(STEPS, with_precheck=False),
        "floor": floor(STEPS, ("job",)),
        "durable 1 step": durable(1, with_precheck=False),
        "durable + precheck": durable(STEPS, with_precheck=True),
        "floor x2": floor(STEPS, ("precheck", "job")),
    }
    with tempfile.TemporaryDirectory(prefix="choreograph-bench-") as name:
        directory = Path(name)
        check_rows(directory)
        best = best_of(rounds, number, directory, cases)
    ours, theirs = best["durable"] / STEPS, best["floor"] / STEPS
    ratio = ours / theirs
    marginal = (best["durable"] - best["durable 1 step"]) / (STEPS - 1)
    fixed = best["durable 1 step"] - marginal
    print(
        f"{'job only':<20} durable {ours * 1e6:6.1f} us/step   floor {theirs * 1e6:6.1f} us/step "
        f"(1 INSERT + COMMIT)   ratio {ratio:.2f}"
    )
    print(
        f"{'':<20} fixed per run (begin + finish) {fixed * 1e6:6.1f} us   "
        f"marginal per step {marginal * 1e6:6.1f} us (ratio {marginal / theirs:.2f} to the floor)"
    )
    with_pre, floor_pre = best["durable + precheck"] / STEPS, best["floor x2"] / STEPS
    print(
        f"{'precheck + job':<20} durable {with_pre * 1e6:6.1f} us/step   floor {floor_pre * 1e6:6.1f} us/step "
        f"(2 INSERT + COMMIT)   ratio {with_pre / floor_pre:.2f}"
    )
    print(f"target: job-only ratio <= {TARGET} ({'met' if ratio <= TARGET else 'MISSED'})")
    return 1 if args.strict and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
