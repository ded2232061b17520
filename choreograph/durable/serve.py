"""
Serving a durable queue: claim due messages, handle each on a worker thread, settle it, until told to stop.

`serve` is the loop behind `Coordinator.serve`, written against the
`QueueStore` protocol and a *handler*: `run_handler` makes the coordinator's
one (a message becomes a durable run keyed by its key, its record the run's
input); another layer (entities) can pass its own and reuse the claims, the
leases and the stopping rules.

The main thread of the loop claims and dispatches; *workers* threads handle.
It claims only as many messages as it has free workers, so a message is never
claimed and left waiting in this process. Every third of the store's lease
(the *beat*) it renews the claims it holds, takes or renews the queue's
exclusive lease when asked to be the only server, and queues again the
messages whose claimant died (`QueueStore.recover`). An empty queue is
polled with a back-off from 5 ms up to `IDLE_MAX`; a message stored by this
process (through the same store object) wakes the loop at once
(`choreograph.durable.queues.DOORBELL`).
"""

from __future__ import annotations

import queue as _queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, Literal, NamedTuple

from loguru import logger

from .._core.result import RunResult
from .._errors import KeyBusy
from .codec import CodecError
from .leases import new_owner
from .protocol import Message, QueueStore
from .queues import DOORBELL

#: Seconds between two looks at an empty queue, at first and at most (doubling in between).
IDLE_MIN: Final = 0.005
IDLE_MAX: Final = 0.1
#: Seconds a message whose key another holder runs waits before it is due again.
AGAIN: Final = 1.0
#: Seconds between two tries of a standby server to take the exclusive lease, at most.
STANDBY_MAX: Final = 0.5
#: The longest error text kept on a failed message.
ERROR_LIMIT: Final = 1000

_monotonic: Final = time.monotonic


class Verdict(NamedTuple):
    """
    What a handler made of a message: ``"done"``, ``"failed"`` (with why), or ``"again"`` (give it back).

    .. versionadded:: 0.5.0
    """

    outcome: Literal["done", "failed", "again"]
    error: str | None = None


#: What `Served` counts.
Counted = Literal["done", "failed", "returned", "lost"]

#: Handles one claimed message on a worker thread.
Handler = Callable[[Message], Verdict]


@dataclass(frozen=True, slots=True, kw_only=True)
class Served:
    """
    What one `Coordinator.serve` did, once it returned.

    Attributes:
        queue: The queue served.
        done: Messages it settled as done (their run finished ok, now or before).
        failed: Messages it settled as failed (their run failed, was rolled
            back or is poisoned, or the record could not be decoded).
        returned: Messages it gave back to the queue unsettled: their key
            was run by another holder for longer than the wait, or handling
            them raised (see the log); they are claimed again later.
        lost: Messages it handled but could not settle, because another
            server had taken them over (this server stalled for longer than
            the lease): that server settles them.
        seconds: How long it served.

    .. versionadded:: 0.5.0
    """

    queue: str
    done: int
    failed: int
    returned: int
    lost: int
    seconds: float


def describe_error(error: BaseException) -> str:
    """
    An error as a failed message keeps it: ``Type: message``, at most `ERROR_LIMIT` characters.

    >>> describe_error(ValueError("no"))
    'ValueError: no'
    """
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 3] + "..."


def run_handler(store: QueueStore, run: Callable[[object, str], RunResult[Any]]) -> Handler:
    """
    The handler of `Coordinator.serve`: decode the record, run it durably by its key, judge the result.

    A run that finished ok (now, or before: the store's result) is done; one
    that failed, was rolled back or is poisoned is failed, its fatal error
    kept; `KeyBusy` (another holder ran the key for longer than the wait)
    gives the message back. A record the codec can't decode fails the message
    without running anything.
    """

    def handle(message: Message) -> Verdict:
        try:
            record = store.decode(message.payload)
        except CodecError as exc:
            return Verdict("failed", describe_error(exc))
        result = run(record, message.key)
        fatal = result.fatal
        if fatal is None:
            return Verdict("done")
        if isinstance(fatal, KeyBusy):
            return Verdict("again", describe_error(fatal))
        return Verdict("failed", describe_error(fatal))

    return handle


def serve(
    store: QueueStore,
    queue: str,
    handle: Handler,
    *,
    workers: int,
    stop: threading.Event | None,
    exclusive: bool,
    worker: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> Served:
    """
    Serve *queue* of *store* with *handle* on *workers* threads until *stop* is set (or SIGINT/SIGTERM).

    Arguments are checked by the caller (`Coordinator.serve`). *worker* is
    entered by each worker thread for its life (a coordinator's resources).

    Raises:
        StoreError: The store could not be read or written while claiming;
            raised once the messages in flight are settled.
    """
    return _Server(store, queue, handle, workers=workers, stop=stop, exclusive=exclusive, worker=worker).run()


class _Server:
    """One `serve` call: its claims, its workers, its counts."""

    def __init__(
        self,
        store: QueueStore,
        queue: str,
        handle: Handler,
        *,
        workers: int,
        stop: threading.Event | None,
        exclusive: bool,
        worker: Callable[[], AbstractContextManager[object]],
    ) -> None:
        self.store, self.queue, self.handle, self.workers = store, queue, handle, workers
        self.stop, self.exclusive, self.worker = stop, exclusive, worker
        self.owner = new_owner()  # this server's name on its claims: two servers of a process differ
        self.beat = store.lease / 3
        self.wake = threading.Event()  # a worker finished, or a message was stored by this process
        self.inbox: _queue.SimpleQueue[Message | None] = _queue.SimpleQueue()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.counts: dict[Counted, int] = dict.fromkeys(("done", "failed", "returned", "lost"), 0)
        self.unsettled: list[tuple[Message, Verdict]] = []  # settling raised: tried again at each beat
        self.signalled: int | None = None  # set by a signal handler: nothing else is safe there
        self.holding = not exclusive
        self.role: str | None = None  # an exclusive server's: "alone" or "standby", once it looked

    def stopping(self) -> bool:
        return self.signalled is not None or (self.stop is not None and self.stop.is_set())

    def run(self) -> Served:
        began = _monotonic()
        threads = [
            threading.Thread(target=self._work, name=f"choreograph-serve-{self.queue}-{n}", daemon=True)
            for n in range(self.workers)
        ]
        DOORBELL.listen(self.store, self.queue, self.wake)
        try:
            with self._signals():
                for thread in threads:
                    thread.start()
                logger.debug("serving queue {queue} as {owner}", queue=self.queue, owner=self.owner)
                try:
                    self._loop()
                finally:
                    for _ in threads:
                        self.inbox.put(None)
                    self._drain(threads)
                    for thread in threads:
                        thread.join()
                    self._settle_again()
                    self.counts["lost"] += len(self.unsettled)  # their claims expire: served again elsewhere
        finally:
            DOORBELL.forget(self.store, self.queue, self.wake)
            if self.exclusive and self.holding:
                self.store.leave_queue(self.queue, self.owner)
        logger.debug("stopped serving queue {queue}: {counts}", queue=self.queue, counts=self.counts)
        counts = self.counts
        return Served(
            queue=self.queue,
            done=counts["done"],
            failed=counts["failed"],
            returned=counts["returned"],
            lost=counts["lost"],
            seconds=_monotonic() - began,
        )

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """In the main thread, SIGINT and SIGTERM stop the server as *stop* does; the handlers before come back."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop_serving(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal's signature
            self.signalled = signum  # only a flag: taking a lock here could deadlock with the interrupted code

        previous = {number: signal.signal(number, stop_serving) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _loop(self) -> None:
        """Claim and dispatch until told to stop."""
        store, queue = self.store, self.queue
        next_beat = 0.0
        idle = IDLE_MIN
        while not self.stopping():
            now = _monotonic()
            if now >= next_beat:
                self._beat()
                next_beat = now + (self.beat if self.holding else min(self.beat, STANDBY_MAX))
            if not self.holding:
                self._wait(next_beat - now)
                continue
            with self.lock:
                free = self.workers - self.in_flight
            if free <= 0:
                self._wait(min(next_beat - now, IDLE_MAX))
                continue
            self.wake.clear()  # before the claim: a message stored after it wakes the wait below
            claimed = store.claim(queue, self.owner, limit=free)
            if claimed:
                with self.lock:
                    self.in_flight += len(claimed)
                for message in claimed:
                    self.inbox.put(message)
                idle = IDLE_MIN
                continue
            self._wait(min(idle, next_beat - now))
            idle = min(idle * 2, IDLE_MAX)

    def _wait(self, seconds: float) -> None:
        """Sleep until woken, at most *seconds* and at most `IDLE_MAX` (to see *stop* and signals)."""
        if self.wake.wait(max(0.0, min(seconds, IDLE_MAX))):
            self.wake.clear()

    def _beat(self) -> None:
        """Renew this server's claims and exclusive lease, settle what could not be, recover what dead servers held."""
        store = self.store
        self._settle_again()
        with self.lock:
            busy = self.in_flight + len(self.unsettled)
        if busy:
            store.renew_claims(self.owner)
        if self.exclusive:
            holder = store.hold_queue(self.queue, self.owner)
            role = "alone" if holder is None else "standby"
            if role != self.role:  # the first beat, a take-over, or a lease lost (this server stalled)
                self.role, self.holding = role, holder is None
                if holder is None:
                    logger.debug("queue {queue}: {owner} serves it alone", queue=self.queue, owner=self.owner)
                else:
                    logger.debug("queue {queue}: on standby, {holder} serves it", queue=self.queue, holder=holder)
        if self.holding:
            recovered = store.recover(self.queue)
            if recovered:
                logger.debug("queue {queue}: {n} messages of dead servers queued again", queue=self.queue, n=recovered)

    def _drain(self, threads: list[threading.Thread]) -> None:
        """Wait for the messages in flight to be settled, renewing their claims (and the queue's lease) meanwhile."""
        while True:
            with self.lock:
                if not self.in_flight:
                    return
            if not any(thread.is_alive() for thread in threads):  # pragma: no cover - a callback ended every thread
                return  # (SystemExit in each): what they held is recovered once its claim expires
            self.wake.wait(self.beat)
            self.wake.clear()
            with self.lock:
                busy = self.in_flight
            if busy:
                self.store.renew_claims(self.owner)
                if self.exclusive and self.holding:
                    self.store.hold_queue(self.queue, self.owner)

    def _work(self) -> None:
        """A worker thread: handle messages from the inbox until it gives None."""
        with self.worker():
            while (message := self.inbox.get()) is not None:
                try:
                    self._settle(message, self._handle(message))
                finally:
                    with self.lock:
                        self.in_flight -= 1
                    self.wake.set()

    def _handle(self, message: Message) -> Verdict:
        try:
            return self.handle(message)
        except Exception as exc:  # noqa: BLE001 - the message's trouble, not the server's: it is given back
            logger.opt(exception=exc).warning(
                "queue {queue}: handling key {key} raised {error!r}; given back",
                queue=self.queue,
                key=message.key,
                error=exc,
            )
            return Verdict("again", describe_error(exc))

    def _settle(self, message: Message, verdict: Verdict) -> None:
        store, key = self.store, message.key
        counted: Counted
        try:
            if verdict.outcome == "again":
                settled = store.give_back(key, self.owner, delay=AGAIN)
                counted = "returned" if settled else "lost"
            else:
                settled = store.settle(key, self.owner, verdict.outcome, verdict.error)
                counted = verdict.outcome if settled else "lost"
        except Exception as exc:  # noqa: BLE001 - the store's trouble: tried again at the next beat
            logger.opt(exception=exc).warning(
                "queue {queue}: settling key {key} raised {error!r}; tried again later",
                queue=self.queue,
                key=key,
                error=exc,
            )
            with self.lock:
                self.unsettled.append((message, verdict))
            return
        with self.lock:
            self.counts[counted] += 1

    def _settle_again(self) -> None:
        """Try again to settle the messages whose settling raised (their claims were renewed meanwhile)."""
        with self.lock:
            pending, self.unsettled = self.unsettled, []
        for message, verdict in pending:
            self._settle(message, verdict)
