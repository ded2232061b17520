"""
Durable runs awaited side by side on one event loop commit their writes together (`LoopBatch`).

`run_many(..., executor="async")` and `run_many_async` on a SqliteStore queue
each run's events and finish on the loop's batch; the batch is committed in
one transaction once the ready tasks have run. What must hold: every result
and every stored row is what a run committing each write at once gives; a
callback's event is committed before the run's next callback starts; one
run's failing write fails that run only; the key is free only once the finish
is committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from choreograph import Coordinator, SqliteStore, Step
from choreograph._errors import StoreError
from choreograph.durable._commits import LoopBatch, Writer
from choreograph.executors import AsyncExecutor

WORKERS = 8


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "runs.db") as made:
        yield made


def stored_rows(store: SqliteStore) -> list[tuple[Any, ...]]:
    """Every event row but its id and times, in order: what two ways of running must both leave."""
    with sqlite3.connect(store.path) as conn:
        return conn.execute(
            "SELECT key, generation, session, step, phase, outcome, output, error_type, attempts FROM events"
            " ORDER BY key, id"
        ).fetchall()


def run_rows(store: SqliteStore) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(
            "SELECT key, status, failed_step, error_type, error_message, owner, lease_until FROM runs ORDER BY key"
        ).fetchall()


def flow(store: SqliteStore, *steps: Step[Any, Any]) -> Coordinator[int]:
    coordinator: Coordinator[int] = Coordinator(store=store, key=lambda x: f"k{x:03}")
    for step in steps:
        coordinator.add_step(step)
    return coordinator


def double(x: int) -> int:
    return x * 2


def odd_fails(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd: {x}")
    return x


def test_the_runs_share_commits_and_store_what_runs_one_at_a_time_store(tmp_path: Path) -> None:
    inputs = range(40)
    with SqliteStore(tmp_path / "a.db") as alone, SqliteStore(tmp_path / "b.db") as together:
        steps = (Step("double", double), Step("check", odd_fails), Step("again", double))
        expected = [(r.key, r.ok, r.data_bag.job_data, type(r.fatal)) for r in flow(alone, *steps).run_many(inputs)]
        writer = together.writer()
        before = writer.batches
        results = list(flow(together, *steps).run_many(inputs, executor=AsyncExecutor(WORKERS), ordered=True))
        assert [(r.key, r.ok, r.data_bag.job_data, type(r.fatal)) for r in results] == sorted(expected)
        assert writer.batches - before >= len(inputs) // WORKERS  # commits were shared
        assert stored_rows(together) == stored_rows(alone)
        assert run_rows(together) == run_rows(alone)
        statuses = {row[1] for row in run_rows(together)}
        assert statuses == {"ok", "failed"}  # and no lease is left held
        assert all(row[5] is None and row[6] is None for row in run_rows(together))


def test_a_callbacks_event_is_committed_before_the_runs_next_callback_starts(store: SqliteStore) -> None:
    seen: dict[int, int] = {}

    def first(x: int) -> int:
        return x

    def second(x: int) -> int:
        with sqlite3.connect(store.path) as conn:  # another connection sees only what is committed
            (count,) = conn.execute(
                "SELECT count(*) FROM events WHERE key = ? AND step = 'first' AND outcome = 'ok'", (f"k{x:03}",)
            ).fetchone()
        seen[x] = count
        return x

    results = list(flow(store, Step("first", first), Step("second", second)).run_many(range(24), executor="async"))
    assert all(result.ok for result in results)
    assert seen == dict.fromkeys(range(24), 1)


def test_a_result_comes_back_once_its_finish_is_committed(store: SqliteStore) -> None:
    coordinator = flow(store, Step("double", double))
    for result in coordinator.run_many(range(16), executor=AsyncExecutor(WORKERS)):
        info = store.run_info(result.key)  # type: ignore[arg-type]
        assert info is not None
        assert (info.status, info.owner) == ("ok", None)


def test_the_same_key_twice_in_a_batch_runs_once(store: SqliteStore) -> None:
    """The second run of a key waits until the first one's finish is committed, then takes its stored result."""
    calls: list[int] = []

    def count(x: int) -> int:
        calls.append(x)
        return x + 1

    results = list(
        flow(store, Step("count", count)).run_many([5, 5, 5, 6], executor=AsyncExecutor(WORKERS), ordered=True)
    )
    assert [result.data_bag.get_job_data("count") for result in results] == [6, 6, 6, 7]
    assert sorted(calls) == [5, 6]


def test_a_rollback_is_marked_after_the_failed_steps_event(store: SqliteStore) -> None:
    undone: list[int] = []

    def undo(x: int) -> None:
        undone.append(x)

    steps = (Step("double", double, compensate=undo), Step("check", odd_fails))
    results = list(flow(store, *steps).run_many(range(10), executor=AsyncExecutor(WORKERS), ordered=True))
    assert [result.ok for result in results] == [x % 2 == 0 for x in range(10)]
    assert sorted(undone) == [1, 3, 5, 7, 9]
    rows = {row[0]: row[1:3] for row in run_rows(store)}
    assert rows["k001"] == ("rolled_back", "check")
    assert rows["k002"] == ("ok", None)
    events = [row[3:6] for row in stored_rows(store) if row[0] == "k003"]
    assert events == [("double", "job", "ok"), ("check", "job", "failed"), ("double", "compensate", "ok")]


@pytest.mark.parametrize("refused", ["first", "second"])  # raised where the next callback would start / at the end
def test_a_write_that_fails_fails_its_own_run_only(store: SqliteStore, refused: str) -> None:
    """A batch with one failing write is written again one write at a time: the others commit."""
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.key = 'k003' AND NEW.step = '{refused}'"
            " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    ran: list[int] = []

    def second(x: int) -> int:
        ran.append(x)
        return x

    coordinator = flow(store, Step("first", double), Step("second", second))
    with pytest.raises(StoreError, match=rf"cannot record job of step '{refused}': refused by a trigger"):
        list(coordinator.run_many(range(8), executor=AsyncExecutor(WORKERS)))
    assert (3 in ran) is (refused == "second")  # a callback whose predecessor's event failed never starts
    assert store.run_info("k003").status == "running"  # type: ignore[union-attr]  # given up, resumed when run again
    assert store.run_info("k003").owner is None  # type: ignore[union-attr]
    done = [row[0] for row in run_rows(store) if row[1] == "ok"]
    assert "k003" not in done
    assert len(done) >= 1  # runs that shared a batch with the refused write committed theirs
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TRIGGER refuse")
    again = coordinator.run(3)
    assert again.ok
    assert [entry.restored for entry in again.trace] == ([False, False] if refused == "first" else [True, False])


@pytest.mark.anyio
async def test_run_many_async_shares_commits_too(store: SqliteStore) -> None:
    writer = store.writer()
    before = writer.batches
    coordinator = flow(store, Step("double", double), Step("again", double))
    results = [result async for result in coordinator.run_many_async(range(32), workers=WORKERS)]
    assert sorted(result.data_bag.get_job_data("again") for result in results) == [2 * x for x in range(32)]
    assert writer.batches > before


def test_one_task_commits_each_write_at_once(store: SqliteStore) -> None:
    writer = store.writer()
    before = writer.batches
    results = list(flow(store, Step("double", double)).run_many(range(8), executor=AsyncExecutor(1)))
    assert all(result.ok for result in results)
    assert writer.batches == before


def test_a_flow_with_a_group_commits_each_write_at_once(store: SqliteStore) -> None:
    from choreograph import Parallel

    coordinator: Coordinator[int] = Coordinator(store=store, key=str)
    coordinator.add_step(Parallel("both", [Step("a", double), Step("b", double)]))
    writer = store.writer()
    before = writer.batches
    results = list(coordinator.run_many(range(8), executor=AsyncExecutor(WORKERS)))
    assert all(result.ok for result in results)
    assert writer.batches == before


def test_write_all_gives_each_write_its_outcome(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY CHECK (n < 100))")
    writer = Writer(conn)

    def put(cursor: sqlite3.Cursor, n: int) -> int:
        return cursor.execute("INSERT INTO t (n) VALUES (?)", (n,)).lastrowid or 0

    assert writer.write_all([(put, (1,), False), (put, (2,), False)]) == [(1, None), (2, None)]
    assert writer.batches == 1
    outcomes = writer.write_all([(put, (3,), False), (put, (200,), False), (put, (4,), False)])
    assert [value for value, _ in outcomes] == [3, None, 4]
    assert isinstance(outcomes[1][1], sqlite3.IntegrityError)
    assert writer.batches == 1  # the failed transaction was rolled back, its writes made one by one
    assert [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")] == [1, 2, 3, 4]
    conn.close()


def test_a_loop_batch_commits_what_its_tasks_queued_in_one_transaction(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY CHECK (n < 100))")
    writer = Writer(conn)

    def put(cursor: sqlite3.Cursor, n: int) -> int:
        return cursor.execute("INSERT INTO t (n) VALUES (?)", (n,)).lastrowid or 0

    async def main() -> list[object]:
        batch = writer.on_loop()
        assert isinstance(batch, LoopBatch)
        assert writer.on_loop() is batch  # one per loop

        async def one(n: int) -> object:
            try:
                return await batch.add(put, n)
            except sqlite3.IntegrityError as exc:
                return type(exc).__name__

        return list(await asyncio.gather(*(one(n) for n in (5, 6, 500, 7))))

    assert asyncio.run(main()) == [5, 6, "IntegrityError", 7]
    assert writer.batches == 0  # the batch failed as a whole, then each write alone
    assert [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")] == [5, 6, 7]

    async def fine() -> list[int]:
        batch = writer.on_loop()
        return list(await asyncio.gather(*(batch.add(put, n) for n in (8, 9))))

    assert asyncio.run(fine()) == [8, 9]
    assert writer.batches == 1
    conn.close()


def test_a_finish_that_fails_raises_instead_of_giving_the_result(store: SqliteStore) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF status ON runs WHEN NEW.key = 'k002' AND NEW.status = 'ok'"
            " BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    coordinator = flow(store, Step("double", double))
    with pytest.raises(StoreError, match=r"cannot finish key 'k002': refused by a trigger"):
        list(coordinator.run_many(range(6), executor=AsyncExecutor(WORKERS)))
    assert store.run_info("k002").status == "running"  # type: ignore[union-attr]


def test_the_key_is_held_until_its_finish_is_committed(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run of the key in this process waits until then: it would find the key running under our lease."""
    from choreograph.durable.leases import ACTIVE

    free_at_commit: list[bool] = []
    commit = LoopBatch._commit

    def watched(self: LoopBatch) -> None:
        free = ACTIVE.claim(store, "k000")
        if free:
            ACTIVE.release(store, "k000")
        free_at_commit.append(free)
        commit(self)

    monkeypatch.setattr(LoopBatch, "_commit", watched)
    results = list(flow(store, Step("double", double)).run_many([0], executor=AsyncExecutor(2)))
    assert results[0].ok
    assert free_at_commit == [False, False, False]  # the begin's commit, the event's, the finish's: held at each
    assert ACTIVE.claim(store, "k000")  # free once finished
    ACTIVE.release(store, "k000")


def test_keys_that_ran_before_resume_or_give_their_stored_result(store: SqliteStore) -> None:
    """A key's begin on the loop's batch reads what the key has, as a begin at once does."""
    broken = {"on": True}
    calls: list[int] = []

    def flaky(x: int) -> int:
        calls.append(x)
        if broken["on"] and x % 3 == 0:
            raise ValueError("down")
        return x + 100

    coordinator = flow(store, Step("double", double), Step("flaky", flaky))
    first = list(coordinator.run_many(range(9), executor=AsyncExecutor(WORKERS), ordered=True))
    assert [result.ok for result in first] == [x % 3 != 0 for x in range(9)]
    broken["on"] = False
    calls.clear()
    again = list(coordinator.run_many(range(9), executor=AsyncExecutor(WORKERS), ordered=True))
    assert all(result.ok for result in again)
    assert sorted(calls) == [0, 3, 6]  # only the failed keys ran flaky again
    assert [result.data_bag.get_job_data("flaky") for result in again] == [x + 100 for x in range(9)]
    resumed = again[3]
    assert [(entry.step, entry.restored) for entry in resumed.trace] == [("double", True), ("flaky", False)]
    done = again[4]
    assert all(entry.restored for entry in done.trace)
    assert store.run_info("k003").sessions == 2  # type: ignore[union-attr]


def test_a_cancelled_run_gives_its_key_back(store: SqliteStore) -> None:
    """A run cancelled while its begin waits for the batch gives the key back once the begin commits."""
    coordinator = flow(store, Step("double", double))

    async def main() -> None:
        job = coordinator._bound(None, None, fresh=False)
        assert job.run_together is not None
        task = asyncio.ensure_future(job.run_together(1, 0))
        await asyncio.sleep(0)  # the begin is queued, not committed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)  # the batch commits the begin, then the key is given back

    asyncio.run(main())
    info = store.run_info("k001")
    assert info is not None
    assert (info.status, info.owner) == ("running", None)
    assert coordinator.run(1).ok  # nothing holds it


def test_a_compensations_event_is_committed_before_the_next_compensation_starts(store: SqliteStore) -> None:
    seen: dict[int, int] = {}

    def undo_second(x: int) -> None:
        pass

    def undo_first(x: int) -> None:  # runs after undo_second: its event must be in the store
        with sqlite3.connect(store.path) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM events WHERE key = ? AND step = 'second' AND phase = 'compensate'",
                (f"k{x:03}",),
            ).fetchone()
        seen[x] = count

    def fail(x: int) -> None:
        raise ValueError("no")

    steps = (Step("first", double, compensate=undo_first), Step("second", double, compensate=undo_second))
    results = list(flow(store, *steps, Step("fail", fail)).run_many(range(12), executor=AsyncExecutor(WORKERS)))
    assert not any(result.ok for result in results)
    assert seen == dict.fromkeys(range(12), 1)


def test_listeners_hear_each_run_finish_with_its_result(store: SqliteStore) -> None:
    from choreograph.events import RunFinished

    finished: list[RunFinished] = []
    coordinator = flow(store, Step("double", double))
    coordinator.listen(lambda event: finished.append(event) if isinstance(event, RunFinished) else None)
    results = list(coordinator.run_many(range(10), executor=AsyncExecutor(WORKERS)))
    assert sorted(event.key for event in finished) == sorted(result.key for result in results)  # type: ignore[type-var]
    assert all(
        event.result.ok and event.result.data_bag.get_job_data("double") == 2 * int(event.key[1:]) for event in finished
    )  # type: ignore[index]
