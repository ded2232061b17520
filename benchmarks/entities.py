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

With ``--backend postgres`` the same cases run on the PostgreSQL server at
``CHOREOGRAPH_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``):
the kind on a `PostgresStore` in a fresh schema per round (dropped afterwards),
the floor on one psycopg connection to the store's own tables, the same four
commits per message.

Run: ``make bench`` or ``python benchmarks/entities.py [--quick] [--strict] [--backend sqlite|postgres]``.
Target: ratio <= 3.0 for one id (seconds per message against the floor's).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from choreograph import Entities, EntityContext, PostgresStore, SqliteStore

TARGET = 3.0
BUSY_TIMEOUT = 30.0

#: Seconds per message of one case, on a fresh file in the given folder.
Case = Callable[[Path, int], float]


URL = os.environ.get("CHOREOGRAPH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
#: Every PostgreSQL round's schema starts with this (and the round's label): dropped once measured.
_SCHEMAS = f"bench_e_{uuid.uuid4().hex[:8]}"


def _schema(path: Path) -> str:
    """The round's schema: named after the round's file, which it stands for."""
    return f"{_SCHEMAS}_{path.stem.replace('-', '_').replace(',', '')}"


def _drop(schema: str) -> None:
    import psycopg  # noqa: PLC0415 - only with --backend postgres
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def entities(ids: int, open_store: Callable[[Path], Any] = SqliteStore) -> Case:
    """Serve *n* messages spread over *ids* entities, on the store *open_store* makes of the round's path."""

    def measure(path: Path, n: int) -> float:
        with open_store(path) as store:
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


def postgres_entities(ids: int) -> Case:
    """`entities` on a `PostgresStore` in the round's schema, dropped afterwards."""
    measure = entities(ids, lambda path: PostgresStore(URL, schema=_schema(path)))

    def measured(path: Path, n: int) -> float:
        try:
            return measure(path, n)
        finally:
            _drop(_schema(path))

    return measured


def postgres_floor(path: Path, n: int) -> float:
    """The writes of *n* handlings with psycopg on the store's tables: four transactions each."""
    import psycopg  # noqa: PLC0415 - only with --backend postgres
    from psycopg import sql  # noqa: PLC0415

    schema = _schema(path)
    PostgresStore(URL, schema=schema).close()  # the store's own tables, in a schema of their own
    quoted = sql.Identifier(schema).as_string()

    def statement(template: str) -> str:
        return template.replace("{s}", quoted)

    try:
        with psycopg.connect(URL, autocommit=True) as conn:
            execute = conn.execute
            now = time.time()
            with conn.transaction():
                execute(
                    statement(
                        "INSERT INTO {s}.entities (kind, id, ready, created, updated)"
                        " VALUES ('counter', 'c0', %s, %s, %s)"
                    ),
                    (now,) * 3,
                )
                add = statement(
                    "INSERT INTO {s}.entity_messages (kind, id, message, sent) VALUES ('counter', 'c0', '1', %s)"
                    " RETURNING seq"
                )
                seqs = [(execute(add, (now,)).fetchone() or (0,))[0] for _ in range(n)]
            begin = statement(
                "INSERT INTO {s}.runs (key, status, generation, sessions, input, owner, lease_until, created, updated)"
                " VALUES (%s, 'running', 1, 1, '1', 'me', %s, %s, %s)"
            )
            event = statement(
                "INSERT INTO {s}.events (key, generation, session, step, phase, outcome, attempts, seconds, at)"
                " VALUES (%s, 1, 1, 'add', 'job', 'ok', 1, 2e-6, %s)"
            )
            finish = statement(
                "UPDATE {s}.runs SET status = 'ok', result = %s, owner = NULL, lease_until = NULL, updated = %s"
                " WHERE key = %s AND owner = 'me'"
            )
            lock = statement("SELECT version FROM {s}.entities WHERE kind = 'counter' AND id = 'c0' FOR UPDATE")
            ack = statement("DELETE FROM {s}.entity_messages WHERE seq = %s AND kind = 'counter' AND id = 'c0'")
            commit = statement(
                "UPDATE {s}.entities SET state = %s, version = version + 1, updated = %s"
                " WHERE kind = 'counter' AND id = 'c0'"
            )
            clock = time.time
            start = time.perf_counter()
            for count, seq in enumerate(seqs, 1):
                key = f"counter/c0/{seq}"
                at = clock()
                execute(begin, (key, at + 60, at, at))
                execute(event, (key, clock()))
                execute(finish, ("[1]", clock(), key))
                with conn.transaction():
                    execute(lock)
                    execute(ack, (seq,))
                    execute(commit, (str(count), clock()))
            elapsed = time.perf_counter() - start
            state = execute(statement("SELECT state FROM {s}.entities")).fetchone()
            assert state == (str(n),)  # noqa: S101
    finally:
        _drop(schema)
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
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="sqlite", help="the kind of store")
    args = parser.parse_args()
    rounds, number = (2, 300) if args.quick else (5, 3_000)
    where = f"SQLite {sqlite3.sqlite_version}" if args.backend == "sqlite" else "PostgreSQL (CHOREOGRAPH_TEST_POSTGRES)"
    print(f"Python {sys.version.split()[0]}, {where}, {number} messages, best of {rounds} rounds")
    cases: dict[str, Case] = (
        {"raw floor": floor, "1 id": entities(1), "1,000 ids": entities(1_000)}
        if args.backend == "sqlite"
        else {"raw floor": postgres_floor, "1 id": postgres_entities(1), "1,000 ids": postgres_entities(1_000)}
    )
    with tempfile.TemporaryDirectory() as folder:
        best = best_of(rounds, number, Path(folder), cases)
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
