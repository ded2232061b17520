"""
The SQLite store's writer: one connection per process, each caller waiting for its own commit, and group commit.

Writes that queue while another thread writes are committed together, in one
transaction; one write's error never fails another's; an interruption of the
thread writing a batch loses none of the others' writes and doubles none.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreograph import Coordinator, SqliteStore, Step
from choreograph.durable._commits import LIMIT, Writer


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "writes.db"
    conn = sqlite3.connect(file, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE)")
    conn.close()
    return file


@pytest.fixture
def writer(path: Path) -> Iterator[Writer]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
    yield Writer(conn)
    conn.close()


def insert(cursor: sqlite3.Cursor, value: int) -> int:
    return cursor.execute("INSERT INTO t (v) VALUES (?)", (value,)).lastrowid or 0


def values(path: Path) -> list[int]:
    """What another connection sees: only what is committed."""
    conn = sqlite3.connect(path)
    try:
        return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]
    finally:
        conn.close()


class Held:
    """A write that waits until released, holding the writer: the writes of other threads queue behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def __call__(self, cursor: sqlite3.Cursor, value: int) -> int:
        self.entered.set()
        assert self.go_on.wait(10)
        return insert(cursor, value)


def queue_behind(writer: Writer, writes: list[tuple[object, int]]) -> tuple[list[object], list[threading.Thread]]:
    """Start a thread per write; return once every one of them is queued (their outcomes fill the list)."""
    outcomes: list[object] = [None] * len(writes)

    def one(index: int, write: object, value: int) -> None:
        try:
            outcomes[index] = writer.write(write, value)
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=one, args=(i, w, v)) for i, (w, v) in enumerate(writes)]
    for thread in threads:
        thread.start()
    for _ in range(1000):
        if len(writer._queue) == len(writes):  # the queue's length tells the test when they all wait
            break
        threading.Event().wait(0.005)
    else:
        pytest.fail("the writes never queued")
    return outcomes, threads


def test_a_lone_write_is_committed_when_it_returns(writer: Writer, path: Path) -> None:
    assert writer.write(insert, 7) == 1
    assert values(path) == [7]
    assert writer.batches == 0


def test_writes_queued_behind_one_are_committed_together(writer: Writer, path: Path) -> None:
    held = Held()
    first = threading.Thread(target=writer.write, args=(held, 0))
    first.start()
    assert held.entered.wait(10)
    outcomes, threads = queue_behind(writer, [(insert, v) for v in range(1, 6)])
    assert values(path) == []  # nothing of theirs is written while the first write goes on
    held.go_on.set()
    for thread in (first, *threads):
        thread.join(10)
    assert values(path) == [0, 1, 2, 3, 4, 5]
    assert writer.batches == 1  # the five queued writes: one transaction
    assert sorted(outcomes) == [2, 3, 4, 5, 6]  # each caller got its own row's id


def test_one_failing_write_fails_only_its_caller(writer: Writer, path: Path) -> None:
    writer.write(insert, 3)
    held = Held()
    first = threading.Thread(target=writer.write, args=(held, 0))
    first.start()
    assert held.entered.wait(10)
    outcomes, threads = queue_behind(writer, [(insert, 1), (insert, 3), (insert, 2)])  # 3: a duplicate
    held.go_on.set()
    for thread in (first, *threads):
        thread.join(10)
    assert values(path) == [0, 1, 2, 3]
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert "UNIQUE" in str(outcomes[1])
    assert isinstance(outcomes[0], int)
    assert isinstance(outcomes[2], int)
    assert writer.batches == 0  # the batch was rolled back and its writes run one by one


def test_a_write_in_a_transaction_commits_all_or_nothing(writer: Writer, path: Path) -> None:
    def two(cursor: sqlite3.Cursor, value: int) -> None:
        insert(cursor, value)
        insert(cursor, value)  # a duplicate: the first insert goes too

    with pytest.raises(sqlite3.IntegrityError):
        writer.write(two, 5, transaction=True)
    assert values(path) == []
    assert not writer.conn.in_transaction
    writer.write(insert, 6)
    assert values(path) == [6]


def test_an_interrupted_batch_loses_and_doubles_no_other_write(writer: Writer, path: Path) -> None:
    """The thread writing a batch is interrupted in the middle of it: the others' writes are done once, by them."""
    interruptions = [KeyboardInterrupt()]

    def interrupted(cursor: sqlite3.Cursor, value: int) -> int:
        number = insert(cursor, value)
        if interruptions:
            raise interruptions.pop()  # as a signal would, in the thread writing the batch
        return number

    held = Held()
    first = threading.Thread(target=writer.write, args=(held, 0))
    first.start()
    assert held.entered.wait(10)
    # The first queued write's thread writes the batch: it is interrupted in the middle of it.
    outcomes, threads = queue_behind(writer, [(interrupted, 1), (insert, 2), (insert, 3)])
    held.go_on.set()
    for thread in (first, *threads):
        thread.join(10)
        assert not thread.is_alive()
    assert isinstance(outcomes[0], KeyboardInterrupt)
    assert values(path) == [0, 2, 3]  # the batch was rolled back; the others then written by theirs, once
    assert outcomes[1:] == [2, 3]
    assert writer.batches == 1
    assert not writer._queue
    assert not writer._token.locked()  # the writer is free again


def test_an_interrupted_lone_write_rolls_back_and_frees_the_writer(writer: Writer, path: Path) -> None:
    """An interruption of a lone write reaches its caller and frees the writer."""

    def interrupted(cursor: sqlite3.Cursor, value: int) -> None:
        insert(cursor, value)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writer.write(interrupted, 1, transaction=True)
    assert values(path) == []
    writer.write(insert, 2)
    assert values(path) == [2]


def test_a_batch_holds_at_most_limit_writes(writer: Writer, path: Path) -> None:
    held = Held()
    first = threading.Thread(target=writer.write, args=(held, -1))
    first.start()
    assert held.entered.wait(10)
    count = LIMIT + 10
    outcomes, threads = queue_behind(writer, [(insert, v) for v in range(count)])
    held.go_on.set()
    for thread in (first, *threads):
        thread.join(20)
    assert values(path) == list(range(-1, count))
    assert writer.batches == 2  # LIMIT, then the 10 left: handed over to one of theirs
    assert all(isinstance(outcome, int) for outcome in outcomes)


def test_threads_of_a_durable_batch_share_commits(tmp_path: Path) -> None:
    """32 workers on one store: every run's events committed once, and the store wrote some in batches."""
    with SqliteStore(tmp_path / "runs.db") as store:
        coordinator: Coordinator[int] = Coordinator(store=store, key=str)
        for index in range(5):
            coordinator.add_step(Step(f"s{index}", lambda x: x + 1))
        results = list(coordinator.run_many(range(400), workers=32))
        assert all(result.ok for result in results)
        assert store.counts()["ok"] == 400
        events = [event for key in range(400) for event in store.events(str(key))]
        assert len(events) == 2000
        assert len({event.id for event in events}) == 2000
        assert [(event.step, event.output) for event in store.events("7")] == [(f"s{i}", "8") for i in range(5)]
        assert store.writer().batches > 0  # 32 threads writing 2,800 times: some waited for another's commit


def test_each_event_is_committed_before_the_next_callback_starts(tmp_path: Path) -> None:
    """What a second connection sees from inside each callback: every earlier callback's event."""
    path = tmp_path / "runs.db"
    seen: dict[int, list[int]] = {}
    lock = threading.Lock()

    def look(x: int) -> int:
        conn = sqlite3.connect(path)
        try:
            count = conn.execute("SELECT count(*) FROM events WHERE key = ?", (str(x // 100),)).fetchone()[0]
        finally:
            conn.close()
        with lock:
            seen.setdefault(x // 100, []).append(count)
        return x + 1

    with SqliteStore(path) as store:
        coordinator: Coordinator[int] = Coordinator(store=store, key=lambda x: str(x // 100))
        for index in range(4):
            coordinator.add_step(Step(f"s{index}", look))
        assert all(r.ok for r in coordinator.run_many([k * 100 for k in range(40)], workers=16))
    assert seen == {k: [0, 1, 2, 3] for k in range(40)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_through_a_writer_of_its_own(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "runs.db") as store:
        coordinator: Coordinator[int] = Coordinator([Step("one", lambda x: x * 2)], store=store, key=str)
        assert coordinator.run(1).ok
        parents = store.writer()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            ok = coordinator.run(2).ok and store.writer() is not parents
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.writer() is parents
        assert coordinator.run(3).ok
        assert store.counts()["ok"] == 3


def test_a_transaction_of_the_callers_statements_waits_its_turn_and_serves_the_queue(
    writer: Writer, path: Path
) -> None:
    held = Held()
    first = threading.Thread(target=writer.write, args=(held, 0))
    first.start()
    assert held.entered.wait(10)
    entered = threading.Event()

    def transaction() -> None:
        with writer.transaction() as conn:
            entered.set()
            conn.execute("INSERT INTO t (v) VALUES (10)")
            conn.execute("INSERT INTO t (v) VALUES (11)")

    inside = threading.Thread(target=transaction)
    inside.start()
    assert not entered.wait(0.05)  # waits for the write going on
    held.go_on.set()
    first.join(10)
    inside.join(10)
    assert values(path) == [0, 10, 11]
    assert not writer._token.locked()


def test_a_failing_transaction_rolls_back_and_frees_the_writer(writer: Writer, path: Path) -> None:
    def twice() -> None:
        with writer.transaction() as conn:
            conn.execute("INSERT INTO t (v) VALUES (1)")
            conn.execute("INSERT INTO t (v) VALUES (1)")

    with pytest.raises(sqlite3.IntegrityError):
        twice()
    assert values(path) == []
    assert writer.write(insert, 2) == 1  # the rolled back row's id is free again
    assert values(path) == [2]


def test_a_store_write_transaction_goes_through_the_writer(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "runs.db") as store:
        with store._write() as conn:
            assert conn is store.writer().conn
            assert store.writer()._token.locked()
        assert not store.writer()._token.locked()
