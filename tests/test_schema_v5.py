"""
SQLite schema version 5: the trace context a durable run's generation keeps (the ``trace_context`` column of runs).

A version 4 file is migrated on opening and keeps its runs; the trace context
follows the rules of `StoreSession.set_trace_context`, in every store.
"""

import sqlite3
import time
from pathlib import Path

import pytest

from choreograph import Coordinator, SqliteStore, Step, StoreError
from choreograph.durable import sqlite as sqlite_module
from choreograph.durable.protocol import TRACE_CONTEXT_LIMIT, Begun, Ending, Row, begin_row
from choreograph.durable.sqlite import SCHEMA_VERSION
from choreograph.typing import Store

#: What turns a file of the current version back into the version 4 it was migrated from (the later
#: versions' tables dropped: tests/test_queues_schema.py and tests/test_entities_store.py test those).
UNDO_V5 = (
    "DROP TABLE entity_messages",
    "DROP TABLE entities",
    "DROP TABLE messages",
    "DROP TABLE queue_servers",
    "ALTER TABLE runs DROP COLUMN trace_context",
)


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


def make_version_4(path: Path) -> None:
    """A store as choreograph wrote it at schema version 4."""
    fill(path)
    conn = sqlite3.connect(path)
    for statement in UNDO_V5:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()


def schema(path: Path) -> dict[str, str]:
    """Every table and index of the file, with the SQL that made it."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    finally:
        conn.close()
    return {f"{kind} {name}": " ".join(sql.split()) for kind, name, sql in rows}


@pytest.fixture
def v4(tmp_path: Path) -> Path:
    path = tmp_path / "v4.db"
    make_version_4(path)
    return path


def test_a_version_4_store_is_migrated_to_version_5_and_keeps_its_runs(v4: Path, tmp_path: Path):
    """Opening a v4 file: the schema of a new file, exactly; every run as it was, resumed or given back as before."""
    assert "trace_context" not in str(schema(v4))
    fill(tmp_path / "new.db")

    with SqliteStore(v4) as store:
        store.verify()
        assert store.counts() == {
            "running": 0,
            "ok": 4,
            "failed": 2,
            "compensating": 0,
            "rolled_back": 0,
            "poisoned": 0,
        }
        assert sorted(info.key for info in store.runs(status="failed")) == ["0", "3"]
        assert all(info.trace_context is None for info in store.runs())
        flow = Coordinator[int]([Step("a", lambda x: x), Step("b", lambda x: x)], store=store, key=str)
        resumed = flow.run(3)  # a failed run resumes: "a" restored, "b" runs again
        assert resumed.ok
        assert [(c.step, c.restored) for c in resumed.trace] == [("a", True), ("b", False)]
        assert [c.restored for c in flow.run(1).trace] == [True, True]  # an ok run comes back from the store

    conn = sqlite3.connect(v4)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (7,)
    conn.close()
    assert schema(v4) == schema(tmp_path / "new.db")
    assert "trace_context TEXT" in schema(v4)["table runs"]


def test_the_migration_is_one_transaction(v4: Path, monkeypatch: pytest.MonkeyPatch):
    """A migration that fails half way leaves the v4 file as it was (SQLite's DDL is transactional)."""
    before = schema(v4)
    broken = sqlite_module._SCHEMA_V5 + ";\nCREATE INDEX runs_by_updated ON runs (key)"  # a name taken
    monkeypatch.setitem(sqlite_module._MIGRATIONS, 4, broken)
    with pytest.raises(StoreError, match="runs_by_updated"):
        SqliteStore(v4)
    assert schema(v4) == before
    conn = sqlite3.connect(v4)
    assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    conn.close()


# -- the trace context, in every store -------------------------------------------------------------------


def begun(store: Store, key: str = "k", *, fresh: bool = False) -> Begun:
    found = store.begin(key, "null", fresh=fresh)
    assert isinstance(found, Begun)
    return found


def test_a_generation_keeps_its_first_trace_context_across_sessions(store: Store):
    """Stored by a session, given to the next ones in `Begun` and `RunInfo`; a second one does not replace it."""
    first = begun(store)
    assert first.trace_context is None
    assert first.recorder is not None
    first.recorder.set_trace_context("00-first")
    first.recorder.set_trace_context("00-second")  # the first stays
    first.recorder.release()

    second = begun(store)
    assert second.session == 2
    assert second.trace_context == "00-first"
    assert second.recorder is not None
    second.recorder.set_trace_context("00-third")
    second.recorder.release()
    info = store.run_info("k")
    assert info is not None
    assert info.trace_context == "00-first"


def test_a_new_generation_starts_without_a_trace_context(store: Store):
    """After the key finished, `fresh=True` begins a generation with none; its own session can store one."""
    first = begun(store)
    assert first.recorder is not None
    first.recorder.set_trace_context("00-first")
    first.recorder.finish(Ending("ok", result=()))
    fresh = begun(store, fresh=True)
    assert (fresh.generation, fresh.trace_context) == (2, None)
    assert fresh.recorder is not None
    fresh.recorder.set_trace_context("00-fresh")
    fresh.recorder.release()
    assert begun(store).trace_context == "00-fresh"


def test_a_session_of_an_earlier_generation_stores_nothing(store: Store):
    """The trace context belongs to a generation: a session left over from the one before can't set the new one's."""
    first = begun(store)
    assert first.recorder is not None
    first.recorder.release()
    second = begun(store, fresh=True)  # a new generation took the key
    first.recorder.set_trace_context("00-stale")
    assert second.recorder is not None
    second.recorder.release()
    assert begun(store).trace_context is None


def test_a_session_whose_lease_was_taken_stores_nothing(tmp_path: Path):
    """Another holder took the key over (the lease expired): the old holder's session can't set its trace context."""
    path = tmp_path / "runs.db"
    with SqliteStore(path, lease=0.05) as first_store, SqliteStore(path, lease=0.05) as second_store:
        first = begun(first_store)
        assert first.recorder is not None
        time.sleep(0.1)
        taken = begun(second_store)  # as another process would, once the lease expired
        assert taken.session == 2
        first.recorder.set_trace_context("00-stale")
        assert taken.recorder is not None
        assert taken.trace_context is None
        taken.recorder.set_trace_context("00-holder")
        taken.recorder.release()
        assert begun(second_store).trace_context == "00-holder"


def test_a_trace_context_is_cut_to_its_limit(store: Store):
    """A store keeps at most `TRACE_CONTEXT_LIMIT` characters of it."""
    first = begun(store)
    assert first.recorder is not None
    first.recorder.set_trace_context("x" * (TRACE_CONTEXT_LIMIT + 10))
    first.recorder.release()
    assert begun(store).trace_context == "x" * TRACE_CONTEXT_LIMIT


def test_begin_row_keeps_the_trace_context_of_the_generation():
    """The pure lease rules: the trace context goes with the generation, as the fatal error does."""
    row = Row("failed", 1, 1, 0, None, None, "fatal", "00-ctx")
    kept, _ = begin_row(row, owner="me", now=0.0, lease=1.0, max_interruptions=3, fresh=False, alive=lambda _: True)
    assert kept is not None
    assert (kept.generation, kept.trace_context) == (1, "00-ctx")
    anew, _ = begin_row(row, owner="me", now=0.0, lease=1.0, max_interruptions=3, fresh=True, alive=lambda _: True)
    assert anew is not None
    assert (anew.generation, anew.trace_context, anew.fatal) == (2, None, None)
    done = Row("ok", 1, 1, 0, None, None, None, "00-ctx")
    again, outcome = begin_row(done, owner="me", now=0.0, lease=1.0, max_interruptions=3, fresh=False, alive=bool)
    assert again is None
    assert not isinstance(outcome, str)
    assert outcome.trace_context == "00-ctx"  # a finished key keeps it, for inspection
