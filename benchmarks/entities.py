"""
Durable entity messages per second, with 1 and with 1,000 ids, against raw SQLite on the same schema.

An ``Entities[int]`` kind on a fresh `SqliteStore` file gets N messages
(``send``, not timed), each an ``int`` its handler adds to the state; then
``serve(workers=4, until_idle=True)`` handles them all (timed, the serve's
start and its claims included). With one id the messages go one at a time;
with 1,000 ids, four at a time across ids (on this machine's cores, writing
one SQLite file).

The floor: a plain ``sqlite3`` connection to another fresh store file (its
schema made by `SqliteStore`, the store's settings: WAL,
``synchronous=NORMAL``), the same messages inserted beforehand, and per
message the writes a handling must make, each in its own transaction as the
store commits them: the message's durable run row (INSERT), its one event
(INSERT), the run's end (UPDATE), then the entity's commit (DELETE of the
message and UPDATE of the state, one transaction). That is four commits per
message; the store does the same four plus its reads and the claims. All
cases are timed in alternating rounds and the best round of each wins.

Run: ``make bench`` or ``python benchmarks/entities.py [--quick] [--strict]``.
Target: ratio <= 3.0 for one id (seconds per message against the floor's).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from choreograph import Entities, EntityContext, SqliteStore

TARGET = 3.0
BUSY_TIMEOUT = 30.0

#: Seconds per message of one case, on a fresh file in the given folder.
Case = Callable[[Path, int], float]


def entities(ids: int) -> Case:
    """Serve *n* messages spread over *ids* entities."""

    def measure(path: Path, n: int) -> float:
        with SqliteStore(path) as store:
            kind = Entities[int]("counter", store=store)

            @kind.handler(int)
            def add(ctx: EntityContext[int], value: int) -> None:
                ctx.state = (ctx.state or 0) + value

            for i in range(n):
                kind.send(f"c{i % ids}", 1)
            start = time.perf_counter()
            kind.serve(workers=4, until_idle=True)
            elapsed = time.perf_counter() - start
            total = sum(kind.state(f"c{i}") or 0 for i in range(ids))
            assert total == n, (total, n)  # noqa: S101 - a wrong count would make the numbers meaningless
        return elapsed / n

    return measure


def floor(path: Path, n: int) -> float:
    """The writes of *n* handlings in plain sqlite3: four transactions each."""
    SqliteStore(path).close()  # the store's schema, on a file of its own
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        execute = conn.execute
        now = time.time()
        execute("BEGIN")
        execute(
            "INSERT INTO entities (kind, id, ready, created, updated) VALUES ('counter', 'c0', ?, ?, ?)", (now,) * 3
        )
        seqs = [
            execute(
                "INSERT INTO entity_messages (kind, id, message, sent) VALUES ('counter', 'c0', '1', ?)", (now,)
            ).lastrowid
            for _ in range(n)
        ]
        execute("COMMIT")
        clock = time.time
        start = time.perf_counter()
        for count, seq in enumerate(seqs, 1):
            key = f"counter/c0/{seq}"
            at = clock()
            execute(
                "INSERT INTO runs (key, status, generation, sessions, input, owner, lease_until, created, updated)"
                " VALUES (?, 'running', 1, 1, '1', 'me', ?, ?, ?)",
                (key, at + 60, at, at),
            )
            execute(
                "INSERT INTO events (key, generation, session, step, phase, outcome, attempts, seconds, at)"
                " VALUES (?, 1, 1, 'add', 'job', 'ok', 1, 2e-6, ?)",
                (key, clock()),
            )
            execute(
                "UPDATE runs SET status = 'ok', result = ?, owner = NULL, lease_until = NULL, updated = ?"
                " WHERE key = ? AND owner = 'me'",
                ("[1]", clock(), key),
            )
            execute("BEGIN IMMEDIATE")
            execute("DELETE FROM entity_messages WHERE seq = ? AND kind = 'counter' AND id = 'c0'", (seq,))
            execute(
                "UPDATE entities SET state = ?, version = version + 1, updated = ?"
                " WHERE kind = 'counter' AND id = 'c0'",
                (str(count), clock()),
            )
            execute("COMMIT")
        elapsed = time.perf_counter() - start
        assert execute("SELECT state FROM entities").fetchone() == (str(n),)  # noqa: S101
    finally:
        conn.close()
    return elapsed / n


def best_of(rounds: int, number: int, directory: Path, cases: dict[str, Case]) -> dict[str, float]:
    """Seconds per message of each case: the best of *rounds* alternating rounds, a fresh file each."""
    best = dict.fromkeys(cases, float("inf"))
    order = list(cases)
    for round_ in range(rounds):
        for label in order if round_ % 2 == 0 else reversed(order):
            path = directory / f"{label.replace(' ', '-')}-{round_}.db"
            best[label] = min(best[label], cases[label](path, number))
            for leftover in directory.glob(f"{path.name}*"):
                leftover.unlink()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and messages, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when the target is missed")
    args = parser.parse_args()
    rounds, number = (2, 300) if args.quick else (5, 3_000)
    print(
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {number} messages, best of {rounds} rounds"
    )
    with tempfile.TemporaryDirectory() as folder:
        best = best_of(
            rounds,
            number,
            Path(folder),
            {"raw floor": floor, "1 id": entities(1), "1,000 ids": entities(1_000)},
        )
    base = best["raw floor"]
    for label, seconds in best.items():
        print(f"{label:>10}: {seconds * 1e6:8.1f} us per message, {1 / seconds:9,.0f} messages/s")
    ratio = best["1 id"] / base
    print(f"ratio (1 id / raw floor): {ratio:.2f}")
    print(f"ratio (1,000 ids / raw floor): {best['1,000 ids'] / base:.2f}")
    missed = ratio > TARGET
    print(f"target: ratio <= {TARGET} for 1 id: {'MISSED' if missed else 'met'}")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
