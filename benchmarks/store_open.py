"""
What opening a store costs, against SQLite's checks of the whole file that it leaves to `verify()`.

A `SqliteStore` file of about 50 MB (``--quick``: 5 MB) gets runs of 10 steps,
each output a small dict, the rows ``run_many`` would write (40,000 runs),
written straight into its tables in one transaction. Then, best of 5, with
the file in the OS cache:

- open: ``SqliteStore(path)`` and ``close()``: the header and size checks,
  the schema checks, and a count of the runs;
- quick_check: ``PRAGMA quick_check`` (every page's structure, not the
  indexes' agreement with their tables);
- verify: ``store.verify()``: ``PRAGMA integrity_check`` and choreograph's
  own rules.

The ratio is quick_check's time over open's: what opening would cost if it
ran quick_check. Opening stays below 50 ms, so quick_check is only in ``verify()``.

Run: ``python benchmarks/store_open.py [--quick] [--strict]``.
Target: open <= 50 ms on the 50 MB store.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from choreograph import SqliteStore

TARGET_MS = 50.0
STEPS = 10
BYTES_PER_RUN = 1310  # about, with its 10 events and the indexes: as `run_many` writes them


def fill(path: Path, megabytes: float) -> None:
    """Create a store at *path* of about *megabytes* MB: runs of 10 steps, each output a small dict."""
    SqliteStore(path).close()
    runs = int(megabytes * 1e6 / BYTES_PER_RUN)
    conn = sqlite3.connect(path, isolation_level=None)
    now = time.time()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (key, status, generation, sessions, input, created, updated, result)"
        " VALUES (?, 'ok', 1, 1, ?2, ?3, ?3, ?4)",
        ((str(i), str(i), now - runs + i, str(list(range(10 * i + 1, 10 * i + 11)))) for i in range(runs)),
    )
    conn.executemany(
        "INSERT INTO events (key, generation, session, step, phase, outcome, output, attempts, seconds, at)"
        " VALUES (?, 1, 1, ?, 'job', 'ok', ?, 1, 0.00002, ?)",
        (
            (str(i), f"step {n}", f'{{"id":{i},"n":{n},"ref":"ref-{i}-{n}"}}', now)
            for i in range(runs)
            for n in range(STEPS)
        ),
    )
    conn.execute("COMMIT")
    conn.close()


def best_ms(action: Callable[[], object], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="a 5 MB store instead of 50 MB, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when the target is missed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="choreograph-bench-") as name:
        path = Path(name) / "runs.db"
        fill(path, 5 if args.quick else 50)
        megabytes = path.stat().st_size / 1e6
        print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, store {megabytes:.1f} MB")
        opened = best_ms(lambda: SqliteStore(path).close())
        conn = sqlite3.connect(path)
        quick = best_ms(lambda: conn.execute("PRAGMA quick_check").fetchall())
        conn.close()
        with SqliteStore(path) as store:
            verify = best_ms(store.verify)
    print(f"open          {opened:8.1f} ms")
    print(f"quick_check   {quick:8.1f} ms")
    print(f"verify        {verify:8.1f} ms")
    print(f"ratio: quick_check / open {quick / opened:.1f}")
    print(f"target: open <= {TARGET_MS:.0f} ms ({'met' if opened <= TARGET_MS else 'MISSED'})")
    return 1 if args.strict and opened > TARGET_MS else 0


if __name__ == "__main__":
    sys.exit(main())
