"""
SQLite schema version 6: the tables of durable queues (``messages``, ``queue_servers``).

A version 5 file is migrated when opened and keeps its runs, whose keys the queue then shares.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from choreograph import Coordinator, SqliteStore, Step, StoreError
from choreograph.durable import sqlite as sqlite_module
from choreograph.durable.sqlite import SCHEMA_VERSION

#: What turns a file of the current version back into version 5 (version 7's entity tables, then version 6's).
UNDO_V6 = ("DROP TABLE entity_messages", "DROP TABLE entities", "DROP TABLE messages", "DROP TABLE queue_servers")


def flaky(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"no {x}")
    return x


def fill(path: Path) -> None:
    """A store with runs ok (1, 2, 4, 5) and failed (0, 3)."""
    with SqliteStore(path) as store:
        flow = Coordinator[int]([Step("a", lambda x: x), Step("b", flaky)], store=store, key=str)
        for x in range(6):
            flow.run(x)


def schema(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    finally:
        conn.close()
    return {f"{kind} {name}": " ".join(sql.split()) for kind, name, sql in rows}


def version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def v5(tmp_path: Path) -> Path:
    """A store as choreograph wrote it at schema version 5."""
    path = tmp_path / "v5.db"
    fill(path)
    conn = sqlite3.connect(path)
    for statement in UNDO_V6:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    return path


def test_a_version_5_store_is_migrated_to_version_6_and_its_keys_are_shared_with_the_queue(v5: Path, tmp_path: Path):
    """Opening a v5 file: the schema of a new file, exactly; its runs as they were; its failed keys can be queued."""
    assert "table messages" not in schema(v5)
    fill(tmp_path / "new.db")
    with SqliteStore(v5) as store:
        store.verify()
        assert store.counts()["ok"] == 4
        assert store.counts()["failed"] == 2
        assert store.queues() == []
        assert not store.enqueue("q", 1, key="1")  # done before the queue existed
        assert store.enqueue("q", 3, key="3")  # failed: queued, and its run resumes
        calls: list[str] = []

        def fixed(x: int) -> int:
            calls.append("b")
            return x

        flow = Coordinator[int]([Step("a", lambda x: x), Step("b", fixed)], store=store)
        stop = threading.Event()
        served: list[object] = []
        thread = threading.Thread(target=lambda: served.append(flow.serve("q", stop=stop)))
        thread.start()
        try:
            while store.queue_info("q")["done"] < 1 and thread.is_alive():
                stop.wait(0.01)
        finally:
            stop.set()
            thread.join(30)
        assert calls == ["b"]  # "a" was restored from the v5 run
        assert store.run_info("3").status == "ok"  # type: ignore[union-attr]
    assert version(v5) == SCHEMA_VERSION == 7
    assert schema(v5) == schema(tmp_path / "new.db")
    assert "CREATE INDEX messages_ready ON messages (queue, status, priority DESC, due)" in schema(v5).values()


def test_the_migration_to_version_6_is_one_transaction(v5: Path, monkeypatch: pytest.MonkeyPatch):
    """A migration that fails half way leaves the v5 file as it was."""
    before = schema(v5)
    broken = sqlite_module._SCHEMA_V6 + ";\nCREATE INDEX messages_ready ON messages (key)"  # a name taken
    monkeypatch.setitem(sqlite_module._MIGRATIONS, 5, broken)
    with pytest.raises(StoreError, match="messages_ready"):
        SqliteStore(v5)
    assert schema(v5) == before
    assert version(v5) == 5


def test_a_store_without_the_queue_tables_is_named_by_verify(tmp_path: Path):
    """A v6 file missing its messages table (dropped behind its back): verify() names it."""
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.connection().execute("DROP TABLE queue_servers")
        with pytest.raises(StoreError, match="table queue_servers is missing"):
            store.verify()
