"""
Serving a run loop: from plain code (`drive`) or from inside an event loop (`drive_async`).

A run loop is a generator that yields only what it cannot do itself: an
`Await` (an ``async def`` callback's awaitable, with its time limits), a
`Sleep` (the wait between retry attempts, or while another process holds a
durable key), a `Gather` (a parallel group's branches, each a run loop of
its own, to run side by side), from a branch, an `Offload` (a plain
callback's attempt, to make on a worker thread) or, from a durable run
whose writes are committed with those of other runs on its event loop, a
`Commit` (wait for them). A run whose callbacks are
all plain and that has no group finishes on the first ``send`` and never
touches asyncio or a thread.

Branches are served in the thread that drives the run: only callbacks run
elsewhere (plain ones on the branch pool's threads, ``async def`` ones as
tasks of the run's event loop), so the run's state is only ever written by
one thread, and the order in which outcomes are recorded is the order in
which the driver learnt of them.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue
from typing import Any, Final

_monotonic: Final = time.monotonic

#: A run loop: yields requests (`Await`, `Sleep`) to its driver, returns when the run ends.
Loop = Generator[object, object, Any]


class Sleep:
    """A request to the driver: wait this long."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Commit:
    """
    A request to the driver: wait until *writes* (a durable run's queued writes) are committed, then go on.

    Only a run whose recorder queues its writes on its event loop
    (`RunState.commits`) yields it, and only `drive_async` drives those runs.
    A write that failed is thrown into the loop, as a write committed at once
    raises where it is made.
    """

    __slots__ = ("writes",)

    def __init__(self, writes: list[Awaitable[object]]) -> None:
        self.writes = writes


async def committed(writes: list[Awaitable[object]]) -> None:
    """Await *writes* (and empty the list): raise the first error of theirs once every one is done."""
    waiting = writes[:]
    writes.clear()
    error: Exception | None = None
    for write in waiting:
        try:
            await write
        except Exception as exc:  # noqa: BLE001 - the first is raised, once the others are done too
            error = error or exc
    if error is not None:
        raise error


class Await:
    """
    A request to the driver: await *awaitable* and send its result back.

    Attributes:
        awaitable: What an ``async def`` callback returned.
        timeout: Seconds the callback may take (its step's timeout), if limited.
        deadline: ``time.monotonic()`` at which the run's timeout expires, if any.
    """

    __slots__ = ("awaitable", "deadline", "timeout")

    def __init__(self, awaitable: Awaitable[object], timeout: float | None, deadline: float | None) -> None:
        self.awaitable, self.timeout, self.deadline = awaitable, timeout, deadline

    def limit(self) -> tuple[float | None, bool]:
        """Seconds the await may take, and whether the run's deadline (not the step's timeout) binds."""
        if self.deadline is None:
            return self.timeout, False
        left = max(0.0, self.deadline - _monotonic())
        if self.timeout is None or left <= self.timeout:  # pragma: no mutate - `<`: only at left == timeout exactly
            return left, True
        return self.timeout, False


class Slots:
    """
    How many plain callbacks of one group's execution may run at once (its ``max_workers``).

    Attributes:
        limit: The most at once.
        busy: How many run now (the thread driver's count).
        queue: Offloads waiting for a slot (the thread driver's), with the branch that asked.
    """

    __slots__ = ("_semaphore", "busy", "limit", "queue")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.queue: deque[tuple[Offload, Loop]] = deque()
        self._semaphore: asyncio.Semaphore | None = None

    def semaphore(self) -> asyncio.Semaphore:
        """The slots as an asyncio semaphore (the async driver's), made when first used."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        return self._semaphore


class Offload:
    """
    A request from a branch to the driver: make this plain callback's attempt on a worker thread.

    Attributes:
        call: What to call there; it returns what the branch is sent back.
        slots: The group's slots, one of which the attempt takes.
    """

    __slots__ = ("call", "slots")

    def __init__(self, call: Callable[[], object], slots: Slots) -> None:
        self.call, self.slots = call, slots


class Gather:
    """
    A request to the driver: run these branches (run loops) side by side, and go on when all ended.

    Attributes:
        branches: One run loop per branch.
        has_async: A branch has an ``async def`` callback (so it needs an event loop).
    """

    __slots__ = ("branches", "has_async")

    def __init__(self, branches: tuple[Loop, ...], has_async: bool) -> None:  # noqa: FBT001
        self.branches, self.has_async = branches, has_async


class Expired(BaseException):
    """
    Thrown into the run loop when an awaited callback ran out of time.

    A `BaseException`, so that no callback's ``except Exception`` swallows it.

    Attributes:
        by_run: The run's timeout expired (else the step's timeout did).
    """

    def __init__(self, by_run: bool) -> None:  # noqa: FBT001
        super().__init__(by_run)  # pragma: no mutate - only its repr: attempt.call catches every Expired
        self.by_run = by_run


class BranchPool:
    """
    The threads plain callbacks of branches run on: shared by every run of the process.

    An idle thread takes the next attempt, and a new one starts when none is
    idle (a group's own ``max_workers`` bounds its callbacks, not the pool),
    so that a callback waiting for another run's branches never waits for a
    thread. Each attempt hands its result to a *reply* callable, in the
    worker thread: a queue's ``put`` for the thread driver, a
    ``call_soon_threadsafe`` for the async one. Cheaper than a
    ``ThreadPoolExecutor`` and its futures, which matters for short callbacks.
    Its threads are daemons, as a batch's are (see `ThreadExecutor`).
    """

    def __init__(self) -> None:
        self._work: SimpleQueue[tuple[Callable[[], object], Callable[[object], object]]] = SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._threads = itertools.count()

    def submit(self, call: Callable[[], object], reply: Callable[[object], object]) -> None:
        """Make *call* on a worker thread, then pass *reply* what it returned (*call* must not raise)."""
        with self._lock:
            start = not self._idle
            if not start:
                self._idle -= 1
        if start:
            name = f"choreograph-branch-{next(self._threads)}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()
        self._work.put((call, reply))

    def _serve(self) -> None:
        work, lock = self._work, self._lock
        while True:
            call, reply = work.get()
            reply(call())
            with lock:
                self._idle += 1


#: The pool, and the process that made it (see `branch_pool`).
_pool: tuple[int, BranchPool] | None = None
_pool_lock: Final = threading.Lock()


def branch_pool() -> BranchPool:
    """The process's `BranchPool`, made when first needed; a child process made by ``fork`` gets one of its own."""
    global _pool  # noqa: PLW0603 - one pool per process
    held = _pool  # pragma: no mutate - None: the check under the lock reads it again
    pid = os.getpid()
    if held is None or held[0] != pid:  # pragma: no mutate - a wrong True: the check under the lock decides
        with _pool_lock:
            # pragma: no mutate start - double-checked: the outer check already saw no pool of this process, so
            # these differ only when two threads make the first pool at once (one more pool, both working)
            held = _pool
            if held is None or held[0] != pid:
                # pragma: no mutate end
                held = _pool = (pid, BranchPool())
    return held[1]


class _Raised:
    """What an attempt on a worker thread gives when a `BaseException` (an interrupt) went through it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _guarded(call: Callable[[], object]) -> Callable[[], object]:
    """*call*, giving a `_Raised` instead of raising: a worker thread must live on."""

    def guarded() -> object:
        try:
            return call()
        except BaseException as error:  # noqa: BLE001 - handed to the driver, which raises it
            return _Raised(error)

    return guarded


def _outcome(value: object) -> object:
    """What a worker gave, or raise what went through it."""
    if isinstance(value, _Raised):
        raise value.error
    return value


def drive(loop: Loop) -> Any:
    """Run *loop* to the end from plain code, and return what it returns."""
    try:
        request = loop.send(None)
        while True:
            if isinstance(request, Sleep):
                time.sleep(request.seconds)
            elif isinstance(request, Gather) and not request.has_async:
                run_branches(request.branches)
            else:
                break
            request = loop.send(None)
    except StopIteration as stop:
        return stop.value
    # An awaitable: run the rest of the run on an event loop.
    rest = drive_async(loop, request)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(rest)
    # Called from inside a running event loop, which must not be re-entered:
    # block it, and run ours in a helper thread that sees this run's context.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="choreograph-run") as pool:  # pragma: no mutate - one task
        return pool.submit(context.run, asyncio.run, rest).result()


class _Join:
    """Branches that a run loop waits for (the thread driver's): how many are left, and who waits."""

    __slots__ = ("left", "parent")

    def __init__(self, parent: Loop | None, left: int) -> None:
        self.parent, self.left = parent, left


class _Branches:
    """
    The thread driver: serves run loops of branches whose callbacks are all plain, in the calling thread.

    Each `Offload` goes to the branch pool when its group has a free slot,
    each `Sleep` to a timer, each nested `Gather` adds its branches, which
    its loop then waits for. Attempts report to one queue.
    """

    def __init__(self) -> None:
        self.pool = branch_pool()
        self.ready: deque[tuple[Loop, object]] = deque()
        self.joins: dict[Loop, _Join] = {}
        self.done: SimpleQueue[tuple[Loop, Slots, object]] = SimpleQueue()
        self.running = 0
        self.timers: list[tuple[float, int, Loop]] = []
        self.order = itertools.count()

    def start(self, branches: tuple[Loop, ...], parent: Loop | None) -> None:
        """Start *branches*; *parent* goes on when all of them ended."""
        join = _Join(parent, len(branches))
        for branch in branches:
            self.joins[branch] = join
            self.ready.append((branch, None))
        # pragma: no mutate start - a group has at least one branch (`Parallel` refuses none): never taken
        if not branches and parent is not None:
            self.ready.append((parent, None))
        # pragma: no mutate end

    def submit(self, request: Offload, branch: Loop) -> None:
        """Make *branch*'s attempt on the pool, or queue it until its group has a free slot."""
        slots = request.slots
        if slots.busy >= slots.limit:
            slots.queue.append((request, branch))
            return
        slots.busy += 1
        self.running += 1
        put = self.done.put
        self.pool.submit(_guarded(request.call), lambda value: put((branch, slots, value)))

    def step(self, branch: Loop, value: object) -> None:
        """Send *branch* what it waited for, and take its next request."""
        try:
            request = branch.send(value)
        except StopIteration:
            join = self.joins.pop(branch)
            join.left -= 1
            if join.left == 0 and join.parent is not None:
                self.ready.append((join.parent, None))
            return
        if isinstance(request, Offload):
            self.submit(request, branch)
        elif isinstance(request, Sleep):
            heapq.heappush(self.timers, (_monotonic() + request.seconds, next(self.order), branch))
        else:
            assert isinstance(request, Gather)  # noqa: S101 - a branch of plain callbacks yields nothing else
            self.start(request.branches, branch)

    def wait(self) -> None:
        """Wait for an attempt to end or a timer to expire, and make ready the branches waiting for them."""
        timers = self.timers
        timeout = None if not timers else max(0.0, timers[0][0] - _monotonic())
        if self.running:
            try:
                self.finished(*self.done.get(timeout=timeout))
                while not self.done.empty():  # take every attempt that ended meanwhile
                    self.finished(*self.done.get())
            except Empty:
                pass
        else:
            time.sleep(timeout or 0.0)
        now = _monotonic()
        while timers and timers[0][0] <= now:  # pragma: no mutate - `<`: a timer due exactly now is taken next turn
            self.ready.append((heapq.heappop(timers)[2], None))

    def finished(self, branch: Loop, slots: Slots, value: object) -> None:
        """An attempt ended: free its slot (starting one queued for it), and make its branch ready."""
        self.running -= 1
        slots.busy -= 1
        if slots.queue:
            self.submit(*slots.queue.popleft())
        self.ready.append((branch, _outcome(value)))  # an interrupt of the callback's goes through

    def run(self, branches: tuple[Loop, ...]) -> None:
        """Run *branches* side by side until every one ended."""
        self.start(branches, None)
        ready = self.ready
        while True:
            while ready:
                self.step(*ready.popleft())
            if not self.running and not self.timers:
                return
            self.wait()


def run_branches(branches: tuple[Loop, ...]) -> None:
    """Run branches whose callbacks are all plain, side by side, until every one ended (see `_Branches`)."""
    _Branches().run(branches)


async def _gather(branches: tuple[Loop, ...]) -> None:
    """Run branches side by side on the running event loop, each a task (the async driver)."""
    tasks = [asyncio.ensure_future(drive_async(branch)) for branch in branches]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def _offload(request: Offload) -> object:
    """Make a plain callback's attempt on the branch pool, once its group has a free slot (the async driver)."""
    async with request.slots.semaphore():
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        branch_pool().submit(_guarded(request.call), lambda value: loop.call_soon_threadsafe(_settle, future, value))
        return _outcome(await future)


def _settle(future: asyncio.Future[object], value: object) -> None:
    if not future.cancelled():
        future.set_result(value)


_START: Final = object()


async def drive_async(loop: Loop, request: object = _START) -> Any:
    """Run *loop* to the end inside a running event loop, and return what it returns."""
    send = loop.send
    try:
        if request is _START:
            request = send(None)
        while True:
            if isinstance(request, Await):
                result, error = await _await(request)
                request = send(result) if error is None else loop.throw(error)
            elif isinstance(request, Commit):
                try:
                    await committed(request.writes)
                except Exception as exc:  # noqa: BLE001 - raised in the loop, where the write was made
                    request = loop.throw(exc)
                else:
                    request = send(None)
            elif isinstance(request, Sleep):
                await asyncio.sleep(request.seconds)
                request = send(None)
            elif isinstance(request, Gather):
                await _gather(request.branches)
                request = send(None)
            else:
                assert isinstance(request, Offload)  # noqa: S101 - a run loop yields nothing else
                request = send(await _offload(request))
    except StopIteration as stop:
        return stop.value


async def _await(request: Await) -> tuple[object, BaseException | None]:
    """Await a callback's awaitable within its limits: ``(result, None)``, or ``(None, error)`` for the loop."""
    limit, by_run = request.limit()
    try:
        if limit is None:
            return await request.awaitable, None
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return await request.awaitable, None
        except TimeoutError:
            if not scope.expired():
                raise
            return None, Expired(by_run)
    except Exception as exc:  # noqa: BLE001 - the callback's error, for the loop to judge
        return None, exc
