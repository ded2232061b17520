"""
The entity store methods (`EntityStore`): claims across store objects, the commit's atomicity, and schema version 7.

Claims between two store objects need two owners of one file or schema: SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from choreograph import Entities, EntityContext, MemoryStore, SqliteStore, StoreError
from choreograph.durable import sqlite as sqlite_module
from choreograph.durable.protocol import EntityCommit, EntityStore
from choreograph.durable.sqlite import SCHEMA_VERSION


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "postgres":
        yield request.getfixturevalue("make_pg_store")(lease=0.3)
        return
    made = SqliteStore(tmp_path / "e.db", lease=0.3) if request.param == "sqlite" else MemoryStore(lease=0.3)
    yield made
    made.close()


@pytest.fixture(params=["sqlite", "postgres"])
def two(request: pytest.FixtureRequest, tmp_path: Path):
    """Two store objects (two owners) on one file or one schema, with a lease of 0.2 s."""
    if request.param == "postgres":
        make_pg = request.getfixturevalue("make_pg_store")
        first = make_pg(lease=0.2)
        yield first, make_pg(lease=0.2, schema=first.schema)
        return
    path = tmp_path / "e.db"
    with SqliteStore(path, lease=0.2) as first, SqliteStore(path, lease=0.2) as second:
        yield first, second


def test_every_store_implements_the_entity_protocol(store):
    assert isinstance(store, EntityStore)


def test_a_commit_keeps_the_claim_while_items_are_due_and_releases_it_after(store):
    first = store.entity_send("k", "a", "1")
    second = store.entity_send("k", "a", "2")
    assert second > first
    (row,) = store.entity_claim("k", 5)
    assert (row.id, row.starts, row.version, row.head.seq, row.head.message) == ("a", 1, 0, first, "1")
    assert store.entity_claim("k", 5) == []  # held

    nxt = store.entity_commit("k", "a", EntityCommit("message", first, '"s1"', None))
    assert nxt is not None
    assert (nxt.state, nxt.version, nxt.starts, nxt.head.seq) == ('"s1"', 1, 1, second)
    assert store.entity_commit("k", "a", EntityCommit("message", second, '"s2"', time.time() + 60)) is None
    info = store.entity_info("k", "a")
    assert (info.state, info.version, info.pending, info.owner, info.starts) == ('"s2"', 2, 0, None, 0)
    assert store.entity_claim("k", 5) == []  # its timer is not due
    store.verify()


def test_release_with_a_due_item_gives_the_claim_up(store):
    store.entity_send("k", "a", "1")
    store.entity_send("k", "a", "2")
    (row,) = store.entity_claim("k", 1)
    assert store.entity_commit("k", "a", EntityCommit("message", row.head.seq, None, None, release=True)) is None
    (again,) = store.entity_claim("k", 1)
    assert (again.head.message, again.state, again.starts) == ("2", None, 1)


def test_entities_are_claimed_oldest_ready_first(store):
    for name in ("c", "a", "b"):
        store.entity_send("k", name, "1")
        time.sleep(0.002)
    assert [row.id for row in store.entity_claim("k", 2)] == ["c", "a"]
    assert [row.id for row in store.entity_claim("k", 2)] == ["b"]
    assert store.entity_claim("other", 2) == []  # kinds are apart


def test_a_lost_claim_refuses_the_commit_and_writes_nothing(two):
    """Another store object takes an expired claim over; the first one's commit raises and changes nothing."""
    first, second = two
    first.entity_send("k", "a", "1")
    (row,) = first.entity_claim("k", 1)
    assert second.entity_claim("k", 1) == []
    assert second.entity_renew("k", ["a"]) == ["a"]
    time.sleep(0.25)
    (taken,) = second.entity_claim("k", 1)
    assert taken.starts == 2  # the first server's start counted
    with pytest.raises(StoreError, match="lost the claim of entity k 'a' to another server"):
        first.entity_commit("k", "a", EntityCommit("message", row.head.seq, '"first"', None))
    with pytest.raises(StoreError, match="lost the claim"):
        first.entity_fail("k", "a", "key", "message")
    assert second.entity_info("k", "a").pending == 1
    assert second.entity_commit("k", "a", EntityCommit("message", taken.head.seq, '"second"', None)) is None
    assert first.entity_info("k", "a").state == '"second"'


def test_a_serving_store_object_takes_over_an_expired_claim(two):
    dead, live = two
    kind = Entities[int]("k", store=live)
    kind.handler(int)(lambda ctx, n: setattr(ctx, "state", n))
    kind.send("a", 7)
    assert dead.entity_claim("k", 1)  # claimed, never handled
    kind.serve(until_idle=True)
    assert kind.state("a") is None  # still held
    time.sleep(0.25)
    kind.serve(until_idle=True)
    assert kind.state("a") == 7


def test_drop_and_retry_on_each_kind_of_item(store):
    store.entity_send("k", "a", "1")
    (row,) = store.entity_claim("k", 1)
    store.entity_fail("k", "a", "k/a/1", "message")
    info = store.entity_info("k", "a")
    assert (info.failed, info.failed_item, info.owner, info.starts) == ("k/a/1", "message", None, 0)
    store.entity_send("k", "a", "2")  # queued behind it; the entity stays blocked
    assert store.entity_claim("k", 1) == []
    assert store.entity_drop("k", "a")
    (row,) = store.entity_claim("k", 1)
    assert row.head.message == "2"
    store.entity_fail("k", "a", "k/a/2", "message")
    assert store.entity_drop("k", "a")
    assert store.entity_info("k", "a") is None  # nothing left: the row goes
    assert store.entity_ids("k") == []
    assert not store.entity_drop("k", "a")
    assert not store.entity_retry("k", "a")


def test_start_unblocks_and_boots_live_entities(store):
    store.entity_send("k", "live", "1")
    (row,) = store.entity_claim("k", 1)
    store.entity_commit("k", "live", EntityCommit("message", row.head.seq, '"s"', None))
    store.entity_send("k", "stuck", "1")
    store.entity_claim("k", 1)
    store.entity_fail("k", "stuck", "k/stuck/2", "message")
    assert store.entity_start("k", boot=True) == 1
    rows = {row.id: row for row in store.entity_claim("k", 5)}
    assert rows["live"].boot
    assert not rows["stuck"].boot  # no state: no boot
    assert store.entity_ids("k") == ["live", "stuck"]


# -- schema version 7 --------------------------------------------------------------------------------


def test_a_version_6_store_is_migrated_and_keeps_its_runs(tmp_path: Path):
    path = tmp_path / "v6.db"
    with SqliteStore(path) as store:
        from choreograph import Coordinator, Step

        Coordinator([Step("a", lambda x: x)], store=store).run(1, key="one")
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE entity_messages; DROP TABLE entities; PRAGMA user_version = 6")
    conn.close()

    with SqliteStore(path) as store:
        store.verify()
        assert store.run_info("one").status == "ok"
        kind = Entities[int]("k", store=store)

        @kind.handler(int)
        def add(ctx: EntityContext[int], n: int) -> None:
            ctx.state = (ctx.state or 0) + n

        kind.send("a", 2)
        kind.serve(until_idle=True)
        assert kind.state("a") == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    conn.close()


def test_the_entity_ddl_is_its_own_migration():
    """Version 6 to 7 is the entity tables' DDL, alone."""
    assert sqlite_module._MIGRATIONS[6] is sqlite_module._SCHEMA_ENTITIES
    assert "CREATE TABLE entities" in sqlite_module._SCHEMA_ENTITIES
    assert "AUTOINCREMENT" in sqlite_module._SCHEMA_ENTITIES  # a message number names a run: never reused


def test_verify_names_entity_rows_that_break_the_rules(tmp_path: Path):
    path = tmp_path / "e.db"
    with SqliteStore(path) as store:
        store.entity_send("k", "a", "1")
        store.verify()
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO entity_messages (kind, id, message, sent) VALUES ('k', 'orphan', '1', 0)")
        conn.execute("UPDATE entities SET owner = 'x' WHERE id = 'a'")
        conn.commit()
        conn.close()
        with pytest.raises(StoreError) as info:
            store.verify()
    assert "1 entity messages have no entities row (e.g. entity 'k orphan')" in info.value.problem
    assert "1 entities have a claim holder without a lease expiry" in info.value.problem
