"""
A durable step on PostgreSQL against a raw INSERT + COMMIT on the same server, and events/s with workers.

Latency: a ``Coordinator(store=PostgresStore(url, schema=...), key=str)`` runs many
distinct keys, one ``run(i)`` each, in one thread. A 1-step flow (job only) costs three
statements per run: the lease (``INSERT ... ON CONFLICT``), the event (``INSERT``) and
the finish (``UPDATE``), each committed on its own. A 10-step flow spreads the begin and
finish over its steps, and the marginal cost of a step (runs of 10 minus runs of 1 step,
over 9) is one event's. The floor: a plain psycopg connection (autocommit, as the store's)
inserting into a table with the columns and indexes of the store's ``events`` table the
row the store writes for a step, ``RETURNING id`` as the store does: one INSERT + COMMIT.

Throughput: events committed per second by ``run_many`` (threads) at 1, 4 and 32 workers
over a 4-step flow, against a single-thread loop of durable ``run()`` calls on the same
flow, and against the raw floor at the same thread counts (each thread its own
connection, one INSERT + COMMIT per event). The store keeps each run's rule: a callback's
event is committed before that run's next callback starts. The store's pool has 32
connections here (``max_connections=32``), so that no worker waits for one.

All cases are timed in alternating rounds, fresh schemas each; the best round of each wins,
which filters out noise from a shared machine. The server is the one the tests use
(``CHOREOGRAPH_TEST_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/test``);
the schemas are dropped afterwards.

Run: ``make bench`` or ``python benchmarks/postgres.py [--quick] [--strict]``.
Targets: the marginal cost of a step <= 1.3x the floor's INSERT + COMMIT; run_many's
events/s at 4 and 32 workers >= the single-thread loop's, and at 1 worker >= 0.9x of it
(one worker does the loop's work, in one thread, plus handing results over).
A 1-step run commits three times where the floor commits once: its ratio is printed, and
is about 3 on a server that waits for its disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from choreograph import Coordinator, PostgresStore, Step

URL = os.environ.get("CHOREOGRAPH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STEPS = 10
FLOW_STEPS = 4  # the throughput flow's
WORKERS = (1, 4, 32)
TARGET_STEP = 1.3
#: The least share of the loop's events/s that run_many must reach, by worker count.
TARGET_RATE = {1: 0.9, 4: 1.0, 32: 1.0}
NAMES = [f"step {i}" for i in range(STEPS)]

# The store's events table and its index (choreograph/durable/postgres.py, schema version 1).
EVENTS_TABLE = """
CREATE TABLE {}.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text COLLATE "C" NOT NULL,
    generation integer NOT NULL,
    session integer NOT NULL,
    step text NOT NULL,
    phase text NOT NULL,
    outcome text NOT NULL,
    output text,
    error text,
    error_type text,
    attempts integer NOT NULL,
    seconds double precision NOT NULL,
    at double precision NOT NULL,
    traceback text
)
"""
EVENTS_INDEX = "CREATE INDEX events_by_run ON {}.events (key, generation, id)"
INSERT = (
    "INSERT INTO {}.events (key, generation, session, step, phase, outcome, output, attempts, seconds, at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, extract(epoch FROM clock_timestamp())::float8) RETURNING id"
)

#: Seconds per unit of one case (a run, or an event), measured in a fresh schema for the given keys.
Case = Callable[[str, range], float]


def job(x: int) -> int:
    return x * 2


class Schemas:
    """Fresh schema names on the server, all dropped at the end."""

    def __init__(self) -> None:
        self.base = f"bench_{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def fresh(self) -> str:
        """A new name (the schema itself is made by whoever uses it)."""
        self.made.append(f"{self.base}_{len(self.made)}")
        return self.made[-1]

    def drop(self) -> None:
        """Drop every schema named so far."""
        with psycopg.connect(URL, autocommit=True) as conn:
            for name in self.made:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def coordinator(store: PostgresStore, steps: int) -> Coordinator[int]:
    flow: Coordinator[int] = Coordinator(store=store, key=str)
    for name in NAMES[:steps]:
        flow.add_step(Step(name, job))
    return flow


def durable(steps: int) -> Case:
    """Seconds per run: a durable flow of *steps* steps, one run per key, in one thread."""

    def measure(schema: str, keys: range) -> float:
        with PostgresStore(URL, schema=schema) as store:
            run = coordinator(store, steps).run
            run(-1)  # the pool's connection made, the statements prepared
            start = time.perf_counter()
            for value in keys:
                run(value)
            elapsed = time.perf_counter() - start
            assert store.counts()["ok"] == len(keys) + 1  # noqa: S101 - a failing flow would make the numbers meaningless
        return elapsed / len(keys)

    return measure


def _floor_table(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> sql.Composed:
    name = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
    conn.execute(sql.SQL(EVENTS_TABLE).format(name))
    conn.execute(sql.SQL(EVENTS_INDEX).format(name))
    return sql.SQL(INSERT).format(name)


def _floor_inserts(conn: psycopg.Connection[tuple[object, ...]], insert: sql.Composed, keys: Iterator[int]) -> int:
    """One INSERT + COMMIT per event, *steps* per key, as the store writes them; return the rows written."""
    execute = conn.execute
    rows = 0
    for value in keys:
        key = str(value)
        for name in NAMES[:FLOW_STEPS]:
            execute(insert, (key, 1, 1, name, "job", "ok", str(job(value)), 1, 2e-6)).fetchone()
            rows += 1
    return rows


def floor(steps: int) -> Case:
    """Seconds per event: raw psycopg, one INSERT + COMMIT per step, in one thread."""

    def measure(schema: str, keys: range) -> float:
        with psycopg.connect(URL, autocommit=True) as conn:
            insert = _floor_table(conn, schema)
            execute = conn.execute
            execute(insert, ("warm", 1, 1, "w", "job", "ok", "0", 1, 2e-6)).fetchone()
            start = time.perf_counter()
            for value in keys:
                key = str(value)
                for name in NAMES[:steps]:
                    execute(insert, (key, 1, 1, name, "job", "ok", str(job(value)), 1, 2e-6)).fetchone()
            elapsed = time.perf_counter() - start
        return elapsed / (len(keys) * steps)

    return measure


def loop_rate(schema: str, keys: range) -> float:
    """Seconds per event: a single-thread loop of durable run() calls over the 4-step flow."""
    with PostgresStore(URL, schema=schema) as store:
        run = coordinator(store, FLOW_STEPS).run
        run(-1)
        start = time.perf_counter()
        for value in keys:
            run(value)
        elapsed = time.perf_counter() - start
    return elapsed / (len(keys) * FLOW_STEPS)


def run_many_rate(workers: int) -> Case:
    """Seconds per event: run_many with *workers* threads over the 4-step flow."""

    def measure(schema: str, keys: range) -> float:
        with PostgresStore(URL, schema=schema, max_connections=32) as store:
            flow = coordinator(store, FLOW_STEPS)
            list(flow.run_many(range(-workers, 0), workers=workers))  # the pool's connections made
            start = time.perf_counter()
            done = sum(result.ok for result in flow.run_many(keys, workers=workers))
            elapsed = time.perf_counter() - start
            assert done == len(keys)  # noqa: S101
        return elapsed / (len(keys) * FLOW_STEPS)

    return measure


def floor_rate(workers: int) -> Case:
    """Seconds per event: *workers* threads, each with its own connection, one INSERT + COMMIT per event."""

    def measure(schema: str, keys: range) -> float:
        with psycopg.connect(URL, autocommit=True) as setup:
            insert = _floor_table(setup, schema)
        connections = [psycopg.connect(URL, autocommit=True) for _ in range(workers)]
        lock = threading.Lock()
        source = iter(keys)

        def take() -> Iterator[int]:
            while True:
                with lock:
                    value = next(source, None)
                if value is None:
                    return
                yield value

        try:
            start = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                rows = sum(pool.map(lambda conn: _floor_inserts(conn, insert, take()), connections))
            elapsed = time.perf_counter() - start
        finally:
            for conn in connections:
                conn.close()
        assert rows == len(keys) * FLOW_STEPS  # noqa: S101
        return elapsed / rows

    return measure


def best_of(rounds: int, number: int, schemas: Schemas, cases: dict[str, Case]) -> dict[str, float]:
    """Seconds per unit of each case: the best of *rounds* alternating rounds, fresh schemas and keys each."""
    best = dict.fromkeys(cases, float("inf"))
    order = list(cases)
    for round_ in range(rounds):
        keys = range(round_ * number, (round_ + 1) * number)
        for label in order if round_ % 2 == 0 else reversed(order):  # no case always goes first
            best[label] = min(best[label], cases[label](schemas.fresh(), keys))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target is missed")
    args = parser.parse_args()
    rounds, number, many = (1, 30, 60) if args.quick else (3, 300, 800)
    with psycopg.connect(URL) as conn:
        version = conn.info.server_version
        found = conn.execute("SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')")
        settings = {str(name): str(value) for name, value in found}
    print(
        f"Python {sys.version.split()[0]}, psycopg {psycopg.__version__}, PostgreSQL {version // 10000}.{version % 100}"
        f" (fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']}), best of {rounds} rounds"
    )
    schemas = Schemas()
    try:
        latency = best_of(
            rounds,
            number,
            schemas,
            {"durable 1 step": durable(1), "durable 10 steps": durable(STEPS), "floor": floor(STEPS)},
        )
        rates: dict[str, Case] = {"loop": loop_rate}
        for workers in WORKERS:
            rates[f"run_many {workers}"] = run_many_rate(workers)
            rates[f"floor {workers}"] = floor_rate(workers)
        throughput = best_of(rounds, many, schemas, rates)
    finally:
        schemas.drop()

    floor_step = latency["floor"]
    one, ten = latency["durable 1 step"], latency["durable 10 steps"]
    marginal = (ten - one) / (STEPS - 1)
    print(f"latency ({number} keys per round, one thread; floor: 1 INSERT + COMMIT {floor_step * 1e6:6.1f} us)")
    print(f"  1-step run (begin + event + finish) {one * 1e6:7.1f} us   ratio {one / floor_step:.2f} (3 commits to 1)")
    print(f"  10-step run, per step                {ten / STEPS * 1e6:7.1f} us   ratio {ten / STEPS / floor_step:.2f}")
    print(f"  marginal step (one event)            {marginal * 1e6:7.1f} us   ratio {marginal / floor_step:.2f}")
    loop = 1 / throughput["loop"]
    print(f"throughput ({many} keys of {FLOW_STEPS} steps per round; events/s)")
    print(f"  single-thread loop of run()  {loop:8.0f}")
    missed = marginal / floor_step > TARGET_STEP
    for workers in WORKERS:
        ours, raw = 1 / throughput[f"run_many {workers}"], 1 / throughput[f"floor {workers}"]
        missed |= ours < TARGET_RATE[workers] * loop
        print(
            f"  run_many {workers:>2} workers  {ours:8.0f}   ratio to the loop {ours / loop:5.2f}"
            f"   raw floor {raw:8.0f} ({ours / raw:.2f} of it)"
        )
    shares = ", ".join(f"{share:g}x at {workers}" for workers, share in TARGET_RATE.items())
    print(
        f"target: marginal step ratio <= {TARGET_STEP}, run_many's events/s >= the loop's ({shares})"
        f" ({'MISSED' if missed else 'met'})"
    )
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
