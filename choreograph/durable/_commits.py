"""
Group commit: the writes of many threads through one connection, each caller waiting for its own commit.

A store's threads used to write through a connection each, and SQLite lets
one connection write at a time: the others waited in SQLite's busy handler,
which sleeps (1 ms, 2 ms, 5 ms, ...) instead of waking when the lock is free,
so the more threads a batch had the fewer events per second it committed.

A `Writer` owns a process's one writing connection. A thread that writes
while no other does runs its write at once, alone (in autocommit, as before:
nothing is added to a lone thread's write but a lock's acquire and release).
A thread that writes while another does queues its write and sleeps. When
the writing thread is done, it wakes the first queued thread, which takes
every write queued so far (up to `LIMIT`) and runs them in one transaction:
the writes that piled up while one commit went on share the next commit.
Each caller returns only once its own write is committed, so a durable run's
rule holds: a callback's event is committed before that run's next callback
starts.

A write is a function of a cursor and its arguments that only touches the
database (the caller applies what it returns), so a batch that fails can be
rolled back and each of its writes run again alone, giving each caller its own
outcome: one write's error never fails another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

#: The most writes committed together.
LIMIT: Final = 256

#: Attempts at ``BEGIN IMMEDIATE`` while another process writes, beyond SQLite's own busy timeout.
_BEGIN_ATTEMPTS: Final = 8

#: A write: a function of the writer's cursor and the arguments given to `Writer.write`.
Write = Callable[..., Any]

#: ``lock.acquire(_NO_WAIT)``: positional, as a keyword costs a C method's call more (these are per write).
_NO_WAIT: Final = False

_WAITING: Final = 0
_DONE: Final = 1
_LEAD: Final = 2


def _lastrowid(cursor: sqlite3.Cursor, sql: str, params: tuple[object, ...]) -> int:
    return cursor.execute(sql, params).lastrowid or 0


def _rowcount(cursor: sqlite3.Cursor, sql: str, params: tuple[object, ...]) -> int:
    return cursor.execute(sql, params).rowcount


class _Queued:
    """A write waiting for the thread running writes to take it, and what it gave."""

    __slots__ = ("args", "error", "state", "transaction", "value", "wake", "write")

    def __init__(self, write: Write, args: tuple[Any, ...], *, transaction: bool) -> None:
        self.write, self.args, self.transaction = write, args, transaction
        self.state = _WAITING
        self.value: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()  # released by the thread that writes it, or that hands it the token

    def outcome(self) -> Any:
        """What the write returned, or raise what it raised."""
        if self.error is not None:
            raise self.error
        return self.value


class Writer:
    """
    One connection's writes, from any thread (see the module's docstring).

    The thread that holds the writer's token writes; the others queue. The
    queue is only ever taken from by the token's holder, who either writes
    what it takes or hands the token to the first queued write's thread
    (waking it); appends need no lock (a deque's are atomic). A thread that
    lets the token go looks at the queue again afterwards, so a write queued
    just as it let go is never left waiting with no one to write it.

    Args:
        conn: An autocommit connection (``isolation_level=None``) that no one
            else writes through.
    """

    __slots__ = ("_loops", "_queue", "_token", "batches", "conn", "cursor")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.cursor = conn.cursor()
        self._token = threading.Lock()  # held by the thread writing
        self._queue: deque[_Queued] = deque()
        self.batches = 0  # transactions of more than one write, for the tests and the benchmarks
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBatch] = weakref.WeakKeyDictionary()

    def write(self, write: Write, *args: Any, transaction: bool = False) -> Any:
        """
        Run ``write(cursor, *args)`` and commit it; return what it returned.

        Args:
            write: Only touches the database; it may read what earlier writes
                of its transaction wrote.
            *args: Given to *write* after the cursor.
            transaction: Run it alone in a transaction of its own when it runs
                alone (a write of several statements that must commit together,
                or a read followed by a write); queued writes always share one.

        Raises:
            Whatever *write* raised (`sqlite3.Error` for the database's errors),
            and `sqlite3.OperationalError` when the write lock can't be had.
        """
        if self._token.acquire(_NO_WAIT):  # nobody writes: write at once
            try:
                if transaction:
                    return self._alone(write, args, transaction=True)
                return write(self.cursor, *args)
            finally:
                self._after()
        return self._wait(_Queued(write, args, transaction=transaction))

    def insert(self, sql: str, params: tuple[object, ...]) -> int:
        """Execute one INSERT and commit it (as `write` does): the new row's id."""
        if self._token.acquire(_NO_WAIT):  # most writes: the write of `write`, without a function of its own
            try:
                return self.cursor.execute(sql, params).lastrowid or 0
            finally:
                self._after()
        number: int = self._wait(_Queued(_lastrowid, (sql, params), transaction=False))
        return number

    def change(self, sql: str, params: tuple[object, ...]) -> int:
        """Execute one statement and commit it (as `write` does): how many rows it changed."""
        if self._token.acquire(_NO_WAIT):
            try:
                return self.cursor.execute(sql, params).rowcount
            finally:
                self._after()
        count: int = self._wait(_Queued(_rowcount, (sql, params), transaction=False))
        return count

    def _after(self) -> None:
        """After a write alone: hand the token to the first write queued meanwhile, or let it go."""
        if self._queue:
            self._let_go()
            return
        token = self._token
        token.release()
        if self._queue and token.acquire(_NO_WAIT):  # one queued just as the token went
            self._let_go()

    def _wait(self, queued: _Queued) -> Any:
        """Queue a write while another thread writes; return once it is written (by that thread, or this one)."""
        self._queue.append(queued)
        if self._token.acquire(_NO_WAIT):  # the writer was let go before anyone took this write
            if queued.state == _DONE:  # ... after writing it
                self._let_go()
                return queued.outcome()
            self._queue.remove(queued)
        else:
            queued.wake.acquire()  # until it was written, or the token is handed to this thread
            if queued.state == _DONE:
                return queued.outcome()
        try:
            self._batch(self._take([queued]))
        finally:
            self._let_go()
        return queued.outcome()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """
        Hold the writer for a transaction of the caller's statements, on its connection: committed on leaving.

        Waits for the writes before it; the writes queued meanwhile are
        written after it, by this thread. Nothing in the block may write
        through this writer (it would wait for itself), and reads through
        another connection don't see the block's writes before they commit.
        An error in the block rolls it back.
        """
        self._token.acquire()
        try:
            self._begin()
            try:
                yield self.conn
            except BaseException:
                self._rollback()
                raise
            self.cursor.execute("COMMIT")
        finally:
            self._after()

    def _take(self, batch: list[_Queued]) -> list[_Queued]:
        """*batch* and the queued writes after it, up to `LIMIT` in all (by the token's holder)."""
        queue = self._queue
        while queue and len(batch) < LIMIT:
            batch.append(queue.popleft())
        return batch

    def _let_go(self) -> None:
        """Done writing: hand the token to the first queued write's thread, or release it."""
        queue, token = self._queue, self._token
        while True:
            if queue:
                first = queue.popleft()
                first.state = _LEAD  # its thread holds the token now
                first.wake.release()
                return
            token.release()
            if not queue or not token.acquire(_NO_WAIT):  # none queued, or another thread writes
                return

    def _alone(self, write: Write, args: tuple[Any, ...], *, transaction: bool) -> Any:
        if not transaction:
            return write(self.cursor, *args)
        self._begin()
        try:
            value = write(self.cursor, *args)
        except BaseException:
            self._rollback()
            raise
        self.cursor.execute("COMMIT")
        return value

    def _batch(self, batch: list[_Queued]) -> None:
        """
        Run *batch* in one transaction; on an error, roll it back and run each write alone.

        The first of *batch* is this thread's: it gets its outcome like the
        others, without a wake-up. An interruption of this thread (``KeyboardInterrupt``) rolls
        back what is not committed and queues those writes again, at the head
        of the queue, for the next thread to write.
        """
        try:
            if len(batch) == 1 or not self._together(batch):
                for queued in batch:
                    try:
                        queued.value = self._alone(queued.write, queued.args, transaction=queued.transaction)
                    except Exception as exc:  # noqa: BLE001 - given to its caller
                        queued.error = exc
                    queued.state = _DONE
        finally:
            others = batch[1:]
            unwritten = [queued for queued in others if queued.state != _DONE]
            self._queue.extendleft(reversed(unwritten))  # this thread still holds the token
            for queued in others:
                if queued.state == _DONE:
                    queued.wake.release()

    def _together(self, batch: list[_Queued]) -> bool:
        """Run *batch* in one transaction: whether it committed (else nothing of it did)."""
        values = self._in_one([(queued.write, queued.args) for queued in batch])
        if values is None:
            return False
        for queued, value in zip(batch, values, strict=True):
            queued.value, queued.state = value, _DONE
        return True

    def _in_one(self, writes: list[tuple[Write, tuple[Any, ...]]]) -> list[Any] | None:
        """Run *writes* in one transaction: what each returned, or None if it did not commit (nothing of it did)."""
        cursor = self.cursor
        try:
            self._begin()
            values = [write(cursor, *args) for write, args in writes]
            cursor.execute("COMMIT")
        except Exception:  # noqa: BLE001 - one write's error, or the commit's: the caller finds whose
            self._rollback()
            return None
        except BaseException:
            self._rollback()
            raise
        self.batches += 1
        return values

    def write_all(self, writes: list[tuple[Write, tuple[Any, ...], bool]]) -> list[tuple[Any, Exception | None]]:
        """
        Run ``(write, args, transaction)`` *writes* in one transaction, as a batch of queued writes is run.

        Returns each one's ``(value, None)``, or ``(None, error)``: when the
        transaction fails it is rolled back and each write is run again alone
        (as `write` runs it), so that one write's error never fails another's.
        """
        self._token.acquire()
        try:
            if len(writes) > 1:
                values = self._in_one([(write, args) for write, args, _ in writes])
                if values is not None:
                    return [(value, None) for value in values]
            outcomes: list[tuple[Any, Exception | None]] = []
            for write, args, transaction in writes:
                try:
                    outcomes.append((self._alone(write, args, transaction=transaction), None))
                except Exception as exc:  # noqa: BLE001 - given to its caller
                    outcomes.append((None, exc))
            return outcomes
        finally:
            self._after()

    def on_loop(self) -> LoopBatch:
        """The batch of the running event loop's writes through this writer (see `LoopBatch`)."""
        loop = asyncio.get_running_loop()
        batch = self._loops.get(loop)
        if batch is None:
            batch = self._loops[loop] = LoopBatch(self)
        return batch

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``: the write lock now, waiting (the busy timeout, then more) for another process's."""
        for attempt in range(_BEGIN_ATTEMPTS):
            try:
                self.cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == _BEGIN_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * 2**attempt)
            else:
                return

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.cursor.execute("ROLLBACK")


class LoopBatch:
    """
    The writes of the runs of one event loop through one `Writer`, committed together once the loop is idle.

    Runs awaited side by side on one loop (`AsyncExecutor`) queue each write
    here and await it instead of committing it at once: the first write
    queued since the last commit schedules the next commit with
    ``call_soon``, behind every task that is ready to run, so the writes of
    all the runs that reached their next write by then share one transaction
    (`Writer.write_all`), with no thread woken for any of them. A run awaits
    its writes before its next callback starts, as a run through `Writer.write`
    waits for its own commit. Only the loop's thread uses it.
    """

    __slots__ = ("_futures", "_writer", "_writes")

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._writes: list[tuple[Write, tuple[Any, ...], bool]] = []
        self._futures: list[asyncio.Future[Any]] = []

    def add(self, write: Write, *args: Any, transaction: bool = False) -> asyncio.Future[Any]:
        """Queue ``write(cursor, *args)`` for the next commit: a future of what it returns (or raises)."""
        loop = asyncio.get_running_loop()
        if not self._writes:
            loop.call_soon(self._commit)
        future = loop.create_future()
        self._writes.append((write, args, transaction))
        self._futures.append(future)
        return future

    def _commit(self) -> None:
        writes, futures = self._writes, self._futures
        self._writes, self._futures = [], []
        try:
            outcomes = self._writer.write_all(writes)
        except BaseException:  # interrupted (KeyboardInterrupt): which of them committed is unknown
            for future in futures:
                future.cancel()  # their runs end as interrupted, resumed from what the store has
            raise
        for future, (value, error) in zip(futures, outcomes, strict=True):
            if future.done():  # pragma: no cover - its run's task was cancelled and let it go
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
