"""
Durable queues and entities on `PostgresStore` specifically: the migrations that add their tables, claims from
processes that contend for one queue, times on the server's clock, and PostgreSQL's text without NUL.

The behaviour every store shares runs in tests/test_queues*.py and tests/test_entities*.py, on PostgreSQL too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import choreograph.durable.postgres as pg
from choreograph import Coordinator, Entities, EntityContext, PostgresStore, Step, StoreError
from choreograph.cli._commands import run_command
from choreograph.durable.protocol import EntityCommit

ROOT = Path(__file__).resolve().parent.parent


def run_sql(url: str, statement: str, schema: str) -> list[tuple[object, ...]]:
    """Run *statement* with ``{}`` as the quoted *schema*; its rows, if it has any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.SQL(statement).format(sql.Identifier(schema)))  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def tables_of(url: str, schema: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", (schema,)
        ).fetchall()
    return [str(name) for (name,) in rows]


# -- migrations ----------------------------------------------------------------------------------


def test_the_queue_and_entity_tables_are_migrations_of_their_own():
    """Version 1 to 2 is the queue tables' DDL, 2 to 3 the entity tables'; a message's number is an identity."""
    assert pg.SCHEMA_VERSION == 3
    assert pg.MIGRATIONS[1] is pg._SCHEMA_QUEUES
    assert pg.MIGRATIONS[2] is pg._SCHEMA_ENTITIES
    assert "CREATE TABLE {s}.messages" in pg._SCHEMA_QUEUES
    assert "CREATE TABLE {s}.queue_servers" in pg._SCHEMA_QUEUES
    assert "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY" in pg._SCHEMA_ENTITIES  # never reused


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_store_is_migrated_keeping_its_runs(
    postgres_url: str, pg_schema: Callable[[], str], monkeypatch: pytest.MonkeyPatch, version: int
):
    """A store made by the PostgresStore of version 1 (runs only) or 2 (and queues) gets the later tables."""
    schema = pg_schema()
    with monkeypatch.context() as older:
        older.setattr(pg, "SCHEMA_VERSION", version)
        with PostgresStore(postgres_url, schema=schema) as store:
            assert Coordinator([Step("a", lambda x: x + 1)], store=store).run(1, key="old").ok
            if version >= 2:
                assert store.enqueue("q", 5, key="queued")
    assert run_sql(postgres_url, "SELECT version FROM {}.store_version", schema) == [(version,)]
    assert "entities" not in tables_of(postgres_url, schema)
    assert ("messages" in tables_of(postgres_url, schema)) is (version >= 2)

    with PostgresStore(postgres_url, schema=schema) as store:
        store.verify()  # the schema as a new store's
        assert run_sql(postgres_url, "SELECT version FROM {}.store_version", schema) == [(pg.SCHEMA_VERSION,)]
        assert tables_of(postgres_url, schema) == [
            "entities",
            "entity_messages",
            "events",
            "messages",
            "queue_servers",
            "runs",
            "store_version",
        ]
        old = store.run_info("old")
        assert old is not None
        assert old.status == "ok"
        assert [event.output for event in store.events("old")] == ["2"]
        assert (store.message_info("queued") is not None) is (version >= 2)
        assert store.enqueue("q", 6, key="new")
        kind = Entities[int]("k", store=store)

        @kind.handler(int)
        def add(ctx: EntityContext[int], n: int) -> None:
            ctx.state = (ctx.state or 0) + n

        kind.send("a", 2)
        kind.send("a", 3)
        kind.serve(until_idle=True)
        assert kind.state("a") == 5
        store.verify()


def test_verify_names_queue_and_entity_rows_that_break_the_rules(make_pg_store: Callable[..., PostgresStore]):
    store = make_pg_store()
    store.enqueue("q", 1, key="a")
    store.entity_send("k", "x", "1")
    store.verify()
    with store.connection() as conn:
        for statement in (
            "UPDATE {s}.messages SET status = 'running' WHERE key = 'a'",
            "INSERT INTO {s}.entity_messages (kind, id, message, sent) VALUES ('k', 'orphan', '1', 0)",
            "UPDATE {s}.entities SET owner = 'x' WHERE id = 'x'",
        ):
            conn.execute(store._sql.format(statement))
    with pytest.raises(StoreError) as info:
        store.verify()
    assert "1 messages are running without a claim, or claimed without running (e.g. key 'a')" in info.value.problem
    assert "1 entity messages have no entities row (e.g. entity 'k orphan')" in info.value.problem
    assert "1 entities have a claim holder without a lease expiry" in info.value.problem


def test_verify_finds_a_missing_queue_index(make_pg_store: Callable[..., PostgresStore]):
    store = make_pg_store()
    with store.connection() as conn:
        conn.execute(store._sql.format("DROP INDEX {s}.messages_ready"))
    with pytest.raises(StoreError, match="index messages_ready is missing"):
        store.verify()


# -- claims from processes that contend ------------------------------------------------------------

#: A process claiming from queue "q" until it finds it empty twice in a row, settling each claim; prints the keys.
_CLAIMER = textwrap.dedent(
    """
    import json, sys, time
    from choreograph import PostgresStore
    from choreograph.durable.leases import new_owner

    url, schema = sys.argv[1], sys.argv[2]
    with PostgresStore(url, schema=schema) as store:
        owner, claimed, empty = new_owner(), [], 0
        print("ready", flush=True)
        sys.stdin.readline()  # every claimer starts at once
        while empty < 2:
            batch = store.claim("q", owner, limit=7)
            empty = 0 if batch else empty + 1
            for message in batch:
                claimed.append(message.key)
                assert store.settle(message.key, owner, "done")
            time.sleep(0 if batch else 0.05)
        print(json.dumps(claimed), flush=True)
    """
)


def test_processes_claiming_one_queue_at_once_take_each_message_once(make_pg_store: Callable[..., PostgresStore]):
    """Three processes claim (FOR UPDATE SKIP LOCKED) from one queue at once: no message lost, none claimed twice."""
    store = make_pg_store()
    total = 600
    for n in range(total):
        assert store.enqueue("q", n, key=f"m{n:03}", priority=n % 4)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    url = store.conninfo
    claimers = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, url, store.schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    try:
        for proc in claimers:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for proc in claimers:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120)[0] for proc in claimers]
    finally:
        for proc in claimers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert [proc.returncode for proc in claimers] == [0, 0, 0]
    claimed = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    every = [key for keys in claimed for key in keys]
    assert sorted(every) == [f"m{n:03}" for n in range(total)]  # each exactly once
    assert sum(1 for keys in claimed if keys) >= 2
    assert dict(store.queue_info("q")) == {"queued": 0, "running": 0, "done": total, "failed": 0}
    assert {store.message_info(key).deliveries for key in every} == {1}  # type: ignore[union-attr]


def test_two_store_objects_share_one_queue_and_its_exclusive_lease(make_pg_store: Callable[..., PostgresStore]):
    first = make_pg_store(lease=0.3)
    second = make_pg_store(lease=0.3, schema=first.schema)
    assert first.hold_queue("q", "here:1:a") is None
    assert second.hold_queue("q", "here:1:b") == "here:1:a"
    first.enqueue("q", 1, key="k")
    (_message,) = second.claim("q", "here:1:b", limit=5)
    assert first.claim("q", "here:1:a", limit=5) == []
    assert not first.settle("k", "here:1:a", "done")  # only its claimant settles it
    assert second.settle("k", "here:1:b", "done")


# -- the server's clock -----------------------------------------------------------------------------


def test_a_delay_is_measured_on_the_servers_clock(make_pg_store: Callable[..., PostgresStore]):
    """A message's due time is its enqueue time plus the delay, both read from one clock in one statement."""
    store = make_pg_store(lease=30.0)
    assert store.enqueue("q", 1, key="later", delay=5)
    info = store.message_info("later")
    assert info is not None
    assert info.due - info.enqueued == pytest.approx(5.0, abs=1e-6)
    assert store.claim("q", "here:1:a", limit=1) == []  # not due yet
    assert store.enqueue("q", 2, key="now")
    (_message,) = store.claim("q", "here:1:a", limit=5)
    claimed = store.message_info("now")
    assert claimed is not None
    assert claimed.lease_until == pytest.approx(claimed.updated + 30.0, abs=1e-6)
    assert store.give_back("now", "here:1:a", delay=2)
    back = store.message_info("now")
    assert back is not None
    assert back.due - back.updated == pytest.approx(2.0, abs=1e-6)


def test_an_entity_message_is_stamped_on_the_servers_clock_and_never_renumbered(
    make_pg_store: Callable[..., PostgresStore],
):
    store = make_pg_store()
    first = store.entity_send("k", "a", "1")
    info = store.entity_info("k", "a")
    assert info is not None
    (row,) = store.entity_claim("k", 1)
    assert row.head is not None
    assert row.head.sent == info.updated  # the row's change and the message: one time
    assert store.entity_commit("k", "a", EntityCommit("message", first, None, None)) is None
    assert store.entity_info("k", "a") is None  # the entity ended: its rows are gone
    assert store.entity_send("k", "a", "2") > first  # a number is never reused


# -- NUL --------------------------------------------------------------------------------------------


def test_a_key_with_nul_is_refused_and_an_error_with_nul_kept_readable(make_pg_store: Callable[..., PostgresStore]):
    store = make_pg_store()
    with pytest.raises(StoreError, match=r"cannot enqueue key 'a\\x00b': .*NUL"):
        store.enqueue("q", 1, key="a\x00b")
    assert store.queues() == []
    assert store.enqueue("q", 1, key="k")
    (_message,) = store.claim("q", "here:1:a", limit=1)
    assert store.settle("k", "here:1:a", "failed", "ValueError: bad\x00byte")
    info = store.message_info("k")
    assert info is not None
    assert info.error == "ValueError: bad\\x00byte"


# -- the command line ---------------------------------------------------------------------------------


def test_the_queues_command_reads_a_postgres_store(
    make_pg_store: Callable[..., PostgresStore], postgres_url: str, capsys: pytest.CaptureFixture[str]
):
    """``choreograph queues --store postgresql://...#schema`` counts the queues of that schema."""
    store = make_pg_store()
    store.enqueue("imports", 1, key="a")
    store.enqueue("imports", 2, key="b", delay=3600)
    store.enqueue("exports", 3, key="c")
    store.claim("exports", "server", limit=1)
    store.settle("c", "server", "failed", "ValueError: no")
    assert run_command(["queues", "--store", f"{postgres_url}#{store.schema}"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "queue      queued   running      done    failed",
        "exports         0         0         0         1",
        "imports         2         0         0         0",
    ]
