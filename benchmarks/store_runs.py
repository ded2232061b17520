"""
The memory that listing every run of a large store takes, with tracemalloc.

A `SqliteStore` file gets 200,000 runs (``--quick``: 20,000), nine in ten
``ok`` and one in ten ``failed`` with a step, an error type and a message,
written straight into its ``runs`` table in one transaction (running that many
flows would only make the setup slow). Then, each in a fresh store object and
under ``tracemalloc`` (Python allocations only: SQLite's page cache is not
counted, and is bounded by its ``cache_size`` anyway):

- iterate: ``for info in store.runs(): ...``, keeping nothing: what a report
  or the CLI's ``runs`` command does;
- materialize: ``list(store.runs())``: every `RunInfo` in memory at once, as
  ``runs()`` returned them before it became lazy;
- counts: ``store.counts()``.

Each case prints its peak memory and its time (best of 3, without tracemalloc,
which slows Python down); the ratio is materialize's peak over iterate's.

Run: ``python benchmarks/store_runs.py [--quick] [--strict]``.
Target: iterating holds at most 5 MB, whatever the number of runs.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from choreograph import SqliteStore

TARGET_MB = 5.0


def fill(path: Path, runs: int) -> None:
    """Create a store at *path* holding *runs* finished runs."""
    SqliteStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    start = time.time() - runs
    rows = (
        (
            f"order-{i:08d}",
            "failed" if i % 10 == 0 else "ok",
            f'{{"id": {i}, "customer": "customer {i % 977}", "amount": {i % 500}}}',
            "charge" if i % 10 == 0 else None,
            "builtins:ValueError" if i % 10 == 0 else None,
            "job of step 'charge' failed: ValueError: card declined" if i % 10 == 0 else None,
            start + i,
        )
        for i in range(runs)
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (key, status, generation, sessions, input, failed_step, error_type, error_message,"
        " created, updated) VALUES (?, ?, 1, 1, ?, ?, ?, ?, ?, ?7)",
        rows,
    )
    conn.execute("COMMIT")
    conn.close()


def measure(path: Path, case: Callable[[SqliteStore], int]) -> tuple[float, float, int]:
    """
    Peak traced memory (MB) of *case* on a fresh store object, its seconds untraced (best of 3), and what it returned.

    Tracing slows Python down several times, so the time is taken in separate runs without it.
    """
    seconds = float("inf")
    for _ in range(3):
        with SqliteStore(path) as store:
            started = time.perf_counter()
            case(store)
            seconds = min(seconds, time.perf_counter() - started)
    with SqliteStore(path) as store:
        tracemalloc.start()
        seen = case(store)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak / 1e6, seconds, seen


def iterate(store: SqliteStore) -> int:
    seen = 0
    for _ in store.runs():
        seen += 1
    return seen


def materialize(store: SqliteStore) -> int:
    return len(list(store.runs()))


def count(store: SqliteStore) -> int:
    return sum(store.counts().values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="20,000 runs instead of 200,000, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when the target is missed")
    args = parser.parse_args()
    runs = 20_000 if args.quick else 200_000
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {runs:,} runs")
    with tempfile.TemporaryDirectory(prefix="choreograph-bench-") as name:
        path = Path(name) / "runs.db"
        fill(path, runs)
        print(f"store file: {path.stat().st_size / 1e6:.1f} MB")
        results = {label: measure(path, case) for label, case in [("iterate", iterate), ("materialize", materialize)]}
        results["counts"] = measure(path, count)
    for label, (peak, seconds, seen) in results.items():
        print(f"{label:<12} peak {peak:8.2f} MB   {seconds:6.2f} s   {seen:,} runs")
        if seen != runs:
            raise SystemExit(f"{label} saw {seen:,} runs, not {runs:,}")
    ratio = results["materialize"][0] / results["iterate"][0]
    iterated = results["iterate"][0]
    print(f"ratio: materialize / iterate peak memory {ratio:.1f}")
    print(f"target: iterate peak <= {TARGET_MB} MB ({'met' if iterated <= TARGET_MB else 'MISSED'})")
    return 1 if args.strict and iterated > TARGET_MB else 0


if __name__ == "__main__":
    sys.exit(main())
