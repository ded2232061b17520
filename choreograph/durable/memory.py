"""
`MemoryStore`: a durable store in memory, for unit tests of durable flows.

It keeps the same records as `SqliteStore` (a row per key, an event log) and
follows the same rules (`begin_row`), with the same codec: an output the codec
can't encode fails its callback here too, and what a resumed run restores is
a decoded copy, as from a file. Nothing outlives the process; several threads
may share one store.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Self

from .._core.callbacks import type_name
from .._errors import StoreError
from .codec import Codec, CodecError, JsonCodec
from .leases import is_alive, new_owner
from .protocol import (
    TRACE_CONTEXT_LIMIT,
    Begun,
    Ending,
    EntityCommit,
    EntityInfo,
    EntityItem,
    EntityMessage,
    EntityRow,
    Event,
    Message,
    MessageInfo,
    MessageStatus,
    NewEvent,
    Restore,
    Row,
    RunInfo,
    Settled,
    Status,
    admit,
    begin_row,
    entity_ready,
    may_hold,
)
from .queues import DOORBELL, MESSAGE_STATUSES, Checked, check_limit, check_queue, checked_message, run_is_live
from .runlist import STATUSES, RunList, checked_limit, describe


@dataclass(slots=True, kw_only=True)
class _Run:
    row: Row
    input: str
    created: float
    updated: float
    failed_step: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    result: tuple[int, ...] | None = None

    def info(self, key: str) -> RunInfo:
        row = self.row
        return RunInfo(
            key=key,
            status=row.status,
            generation=row.generation,
            sessions=row.sessions,
            interruptions=row.interruptions,
            failed_step=self.failed_step,
            error_type=self.error_type,
            error=self.error_message,
            owner=row.owner,
            created=self.created,
            updated=self.updated,
            trace_context=row.trace_context,
        )


@dataclass(slots=True, kw_only=True)
class _Entity:
    """One entity's row (see `EntityStore`) and its queued messages, oldest first."""

    created: float
    updated: float
    messages: deque[EntityMessage] = dataclasses.field(default_factory=deque)
    state: str | None = None
    version: int = 0
    timer: float | None = None
    boot: bool = False
    starts: int = 0
    failed: str | None = None
    failed_item: EntityItem | None = None
    owner: str | None = None
    lease_until: float | None = None

    def ready(self) -> float | None:
        if self.failed is not None:
            return None
        return entity_ready(self.boot, self.messages[0].sent if self.messages else None, self.timer)

    def row(self, kind: str, id: str) -> EntityRow:  # noqa: A002
        head = self.messages[0] if self.messages else None
        return EntityRow(kind, id, self.state, self.version, self.timer, self.boot, self.starts, head)

    def empty(self) -> bool:
        return self.state is None and not self.messages and self.timer is None and not self.boot and not self.failed


class MemoryStore:
    """
    A durable store in memory: `SqliteStore`'s semantics without a file.

    Args:
        codec: How outputs, inputs and errors are encoded (default: `JsonCodec`).
        lease: Seconds a key stays leased without a renewal (see `SqliteStore`).
        max_interruptions: A key interrupted more often is marked ``"poisoned"``.

    >>> from choreograph import Coordinator, MemoryStore, Step
    >>> store = MemoryStore()
    >>> flow = Coordinator([Step("double", lambda x: x * 2)], store=store)
    >>> flow.run(21, key="k").data_bag.get_job_data("double"), store.run_info("k").status
    (42, 'ok')

    .. versionadded:: 0.2.0
    """

    def __init__(self, *, codec: Codec | None = None, lease: float = 60.0, max_interruptions: int = 3) -> None:
        chosen: object = codec if codec is not None else JsonCodec()
        if not isinstance(chosen, Codec):
            msg = f"codec must implement choreograph.Codec, got {type_name(codec)}"
            raise TypeError(msg)
        seconds: object = lease  # checked at run time: callers may not be typed
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            msg = f"lease must be > 0 seconds, got {lease!r}"
            raise ValueError(msg)
        limit: object = max_interruptions
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            msg = f"max_interruptions must be an int >= 0, got {max_interruptions!r}"
            raise ValueError(msg)
        self.codec: Codec = chosen
        self.lease = float(lease)
        self.max_interruptions = max_interruptions
        self.owner = new_owner()
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._events: list[Event] = []
        self._last_id = 0  # events are numbered in the order they were recorded, never reused
        self._entities: dict[tuple[str, str], _Entity] = {}
        self._last_seq = 0  # entity messages likewise
        self._closed = False
        self._queues = _Queues()

    @property
    def location(self) -> str:
        """``":memory:"``, for messages."""
        return ":memory:"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(self.location, "the store is closed")

    def begin(self, key: str, input: str, *, fresh: bool, restore: Restore | None = None) -> Begun | str:  # noqa: A002
        """Take the lease of *key*, storing its encoded *input* (see `Store.begin`, also for *restore*)."""
        now = time.time()
        with self._lock:
            self._check_open()
            run = self._runs.get(key)
            new, outcome = begin_row(
                None if run is None else run.row,
                owner=self.owner,
                now=now,
                lease=self.lease,
                max_interruptions=self.max_interruptions,
                fresh=fresh,
                alive=lambda holder: is_alive(holder, self.owner),
            )
            if isinstance(outcome, str):
                return outcome
            copies: list[Event] = []
            if restore is not None:
                current = [] if run is None else self.events(key, generation=run.row.generation)
                chosen = restore(None if run is None else run.row, current)
                by_id = {event.id: event for event in self._events if event.key == key}
                copies = [by_id[number] for number in chosen if number in by_id]
            if new is not None:
                if run is None:
                    self._runs[key] = _Run(row=new, input=input, created=now, updated=now)
                else:
                    run.row, run.updated = new, now
                    if new.status != "poisoned":
                        run.input = input
            if outcome.status == "poisoned":
                return Begun(
                    status="poisoned",
                    generation=outcome.generation,
                    session=outcome.sessions,
                    interruptions=outcome.interruptions,
                )
            for copied in copies:
                self._last_id += 1
                self._events.append(
                    dataclasses.replace(
                        copied, id=self._last_id, generation=outcome.generation, session=outcome.sessions
                    )
                )
            events = self.events(key, generation=outcome.generation)
            result = self._runs[key].result if outcome.status == "ok" else None
        return Begun(
            status=outcome.status,
            generation=outcome.generation,
            session=outcome.sessions,
            interruptions=outcome.interruptions,
            fatal=outcome.fatal,
            events=events,
            result=result,
            recorder=None if outcome.status == "ok" else MemorySession(self, key, outcome.generation, outcome.sessions),
            trace_context=outcome.trace_context,
        )

    def _append(self, key: str, generation: int, session: int, event: NewEvent) -> int:
        with self._lock:
            self._check_open()
            self._last_id += 1
            number = self._last_id
            self._events.append(
                Event(
                    id=number,
                    key=key,
                    generation=generation,
                    session=session,
                    step=event.step,
                    phase=event.phase,
                    outcome=event.outcome,
                    output=event.output,
                    error=event.error,
                    error_type=event.error_type,
                    attempts=event.attempts,
                    seconds=event.seconds,
                    at=time.time(),
                    traceback=event.traceback,
                )
            )
            return number

    def _held(self, key: str) -> _Run | None:
        """The run of *key* if this store holds its lease."""
        run = self._runs.get(key)
        return run if run is not None and run.row.owner == self.owner else None

    def _renew(self, key: str) -> None:
        with self._lock:
            run = self._held(key)
            if run is None:
                raise StoreError(self.location, f"lost the lease of key {key!r} to another holder")
            run.row = dataclasses.replace(run.row, lease_until=time.time() + self.lease)

    def _rolling_back(self, key: str, fatal: str) -> None:
        with self._lock:
            run = self._held(key)
            if run is not None:
                run.row = dataclasses.replace(run.row, status="compensating", fatal=fatal)
                run.updated = time.time()

    def _finish(self, key: str, ending: Ending) -> None:
        with self._lock:
            run = self._held(key)
            if run is None:
                return
            run.row = dataclasses.replace(
                run.row, status=ending.status, fatal=ending.fatal, owner=None, lease_until=None
            )
            run.failed_step, run.error_type, run.error_message = (
                ending.failed_step,
                ending.error_type,
                ending.error_message,
            )
            run.result = ending.result
            run.updated = time.time()

    def _set_trace_context(self, key: str, generation: int, context: str) -> None:
        with self._lock:
            run = self._held(key)
            if run is not None and run.row.generation == generation and run.row.trace_context is None:
                run.row = dataclasses.replace(run.row, trace_context=context[:TRACE_CONTEXT_LIMIT])

    def _release(self, key: str) -> None:
        with self._lock:
            run = self._held(key)
            if run is not None:
                run.row = dataclasses.replace(run.row, owner=None, lease_until=None)

    # -- inspection ---------------------------------------------------------

    def stored_input(self, key: str) -> object:
        """
        Return the input last run for *key*.

        Raises:
            KeyError: The store has no run of *key*.
        """
        with self._lock:
            run = self._runs.get(key)
        if run is None:
            msg = f"no run of key {key!r} in {self.location}"
            raise KeyError(msg)
        try:
            return self.codec.decode(run.input)
        except CodecError as exc:
            raise StoreError(self.location, f"cannot restore the input of key {key!r}: {exc}") from exc

    def run_info(self, key: str) -> RunInfo | None:
        """Return what the store knows of *key*, or None."""
        with self._lock:
            run = self._runs.get(key)
            return None if run is None else run.info(key)

    def runs(
        self,
        *,
        status: Status | None = None,
        step: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
    ) -> Sequence[RunInfo]:
        """
        List runs, most recently updated first, then by key (the filters of `SqliteStore.runs`).

        A lazy sequence, like `SqliteStore.runs`: each use reads the store again.
        A loop over it goes over the runs as they were when it started.
        """
        chosen = checked_limit(limit)
        self._check_open()

        def select() -> list[RunInfo]:
            with self._lock:
                found = [run.info(key) for key, run in self._runs.items()]
            found = [info for info in found if _matches(info, status, step, error_type)]
            found.sort(key=lambda info: info.key)
            found.sort(key=lambda info: info.updated, reverse=True)
            return found

        def iterate(n: int | None) -> Iterator[RunInfo]:
            yield from select()[:n]

        return RunList(
            iterate=iterate,
            read=lambda offset, n: select()[offset : offset + n],
            count=lambda: len(select()),
            limit=chosen,
            label=describe(self.location, status=status, step=step, error_type=error_type, limit=limit),
        )

    def counts(
        self, *, status: Status | None = None, step: str | None = None, error_type: str | None = None
    ) -> dict[Status, int]:
        """Count runs by status, with the filters of `runs`: every status, 0 where no run has it."""
        self._check_open()
        counted: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        with self._lock:
            for key, run in self._runs.items():
                info = run.info(key)
                if _matches(info, status, step, error_type):
                    counted[info.status] = counted.get(info.status, 0) + 1
        return counted

    def events(self, key: str, *, generation: int | None = None) -> list[Event]:
        """Return the recorded callbacks of *key*, in the order they were recorded."""
        with self._lock:
            return [e for e in self._events if e.key == key and (generation is None or e.generation == generation)]

    def decode(self, text: str) -> object:
        """Decode an `Event.output` (or a stored input) with this store's codec; for errors, see `decode_error`."""
        return self.codec.decode(text)

    def decode_error(self, text: str) -> BaseException:
        """Decode an `Event.error`: the exception, or a `StoredError` when its class can't be rebuilt."""
        return self.codec.decode_error(text)

    def verify(self) -> None:
        """
        Check the store's invariants (what `SqliteStore.verify` checks of its rows).

        Every event belongs to a run, and to one of its generations and
        sessions so far; events are numbered in increasing order; every
        status is known; a run has a lease holder exactly when it has a lease
        expiry.

        Raises:
            StoreError: Naming every rule broken, each with an example key.
        """
        with self._lock:
            self._check_open()
            problems = _problems(self._runs, self._events) + self._queues.problems()
        if problems:
            raise StoreError(self.location, "; ".join(problems))

    def prune(self, *, status: Status | None = None, before: float | None = None, keys: list[str] | None = None) -> int:
        """Delete finished runs and their events; runs going on (a live lease) are never deleted."""
        now = time.time()
        with self._lock:
            doomed = {
                key
                for key, run in self._runs.items()
                if (run.row.owner is None or (run.row.lease_until or 0.0) < now)
                and (status is None or run.row.status == status)
                and (before is None or run.updated < before)
                and (keys is None or key in keys)
            }
            for key in doomed:
                del self._runs[key]
            self._events = [e for e in self._events if e.key not in doomed]
            self._queues.forget_finished(doomed)
        return len(doomed)

    def close(self) -> None:
        """Forget everything; the store can't be used afterwards."""
        with self._lock:
            self._closed = True
            self._runs.clear()
            self._events.clear()
            self._entities.clear()
            self._queues = _Queues()

    # -- entities (see `EntityStore`) ------------------------------------------------

    def entity_send(self, kind: str, id: str, message: str) -> int:  # noqa: A002
        """Queue an encoded message for an entity (see `EntityStore.entity_send`); its seq."""
        now = time.time()
        with self._lock:
            self._check_open()
            entity = self._entities.get((kind, id))
            if entity is None:
                entity = self._entities[kind, id] = _Entity(created=now, updated=now)
            self._last_seq += 1
            entity.messages.append(EntityMessage(self._last_seq, message, now))
            entity.updated = now
            return self._last_seq

    def entity_claim(self, kind: str, limit: int, *, reap: bool = False) -> list[EntityRow]:
        """Claim up to *limit* due entities of *kind* (see `EntityStore.entity_claim`)."""
        now = time.time()
        with self._lock:
            self._check_open()
            due: list[tuple[float, str, _Entity]] = []
            for (of, id_), entity in self._entities.items():
                ready = entity.ready()
                if of != kind or ready is None or ready > now:
                    continue
                held = entity.owner is not None and (entity.lease_until or 0.0) >= now
                if held and not (reap and entity.owner != self.owner and not is_alive(entity.owner or "", self.owner)):
                    continue
                due.append((ready, id_, entity))
            due.sort(key=lambda found: (found[0], found[1]))
            claimed: list[EntityRow] = []
            for _, id_, entity in due[: max(limit, 0)]:
                entity.owner, entity.lease_until = self.owner, now + self.lease
                entity.starts += 1
                claimed.append(entity.row(kind, id_))
            return claimed

    def _claimed(self, kind: str, id: str) -> _Entity:  # noqa: A002
        entity = self._entities.get((kind, id))
        if entity is None or entity.owner != self.owner:
            msg = f"lost the claim of entity {kind} {id!r} to another server"
            raise StoreError(self.location, msg)
        return entity

    def entity_commit(self, kind: str, id: str, commit: EntityCommit) -> EntityRow | None:  # noqa: A002
        """Commit a handling (see `EntityStore.entity_commit`): the next row while the claim is kept."""
        now = time.time()
        with self._lock:
            self._check_open()
            entity = self._claimed(kind, id)
            if commit.item == "message" and entity.messages and entity.messages[0].seq == commit.seq:
                entity.messages.popleft()
            if commit.item == "boot":
                entity.boot = False
            entity.state, entity.timer = commit.state, commit.timer
            entity.version += 1
            entity.updated = now
            ready = entity.ready()
            if entity.empty():
                del self._entities[kind, id]
                return None
            if commit.release or ready is None or ready > now:
                entity.owner = entity.lease_until = None
                entity.starts = 0
                return None
            entity.starts, entity.lease_until = 1, now + self.lease
            return entity.row(kind, id)

    def entity_fail(self, kind: str, id: str, key: str, item: EntityItem, *, interrupted: bool = False) -> None:  # noqa: A002
        """Block the entity behind its failed item and release it (see `EntityStore.entity_fail`)."""
        with self._lock:
            self._check_open()
            entity = self._claimed(kind, id)
            entity.failed, entity.failed_item = key, item
            entity.owner = entity.lease_until = None
            if not interrupted:
                entity.starts = 0
            entity.updated = time.time()

    def entity_release(self, kind: str, id: str, *, started: bool) -> None:  # noqa: A002
        """Release this store's claim of the entity (see `EntityStore.entity_release`)."""
        with self._lock:
            entity = self._entities.get((kind, id))
            if entity is not None and entity.owner == self.owner:
                entity.owner = entity.lease_until = None
                if not started:
                    entity.starts = max(entity.starts - 1, 0)

    def entity_renew(self, kind: str, ids: Sequence[str]) -> list[str]:
        """Renew this store's claims of *ids*; return those it lost."""
        until = time.time() + self.lease
        lost: list[str] = []
        with self._lock:
            self._check_open()
            for id_ in ids:
                entity = self._entities.get((kind, id_))
                if entity is None or entity.owner != self.owner:
                    lost.append(id_)
                else:
                    entity.lease_until = until
        return lost

    def entity_start(self, kind: str, *, boot: bool) -> int:
        """Unblock the failed entities of *kind*; with *boot*, make every live one's boot due."""
        with self._lock:
            self._check_open()
            unblocked = 0
            for (of, _), entity in self._entities.items():
                if of != kind:
                    continue
                if entity.failed is not None:
                    entity.failed = entity.failed_item = None
                    unblocked += 1
                if boot and entity.state is not None:
                    entity.boot = True
            return unblocked

    def entity_retry(self, kind: str, id: str) -> bool:  # noqa: A002
        """Unblock the entity (see `EntityStore.entity_retry`)."""
        with self._lock:
            self._check_open()
            entity = self._entities.get((kind, id))
            if entity is None or entity.failed is None:
                return False
            entity.failed = entity.failed_item = None
            entity.starts = 0
            entity.updated = time.time()
            return True

    def entity_drop(self, kind: str, id: str) -> bool:  # noqa: A002
        """Discard the entity's failed item and unblock it (see `EntityStore.entity_drop`)."""
        with self._lock:
            self._check_open()
            entity = self._entities.get((kind, id))
            if entity is None or entity.failed is None:
                return False
            if entity.failed_item == "message" and entity.messages:
                entity.messages.popleft()
            elif entity.failed_item == "timer":
                entity.timer = None
            elif entity.failed_item == "boot":
                entity.boot = False
            entity.failed = entity.failed_item = None
            entity.starts = 0
            entity.updated = time.time()
            if entity.empty() and entity.owner is None:
                del self._entities[kind, id]
            return True

    def entity_info(self, kind: str, id: str) -> EntityInfo | None:  # noqa: A002
        """What the store knows of the entity, or None."""
        with self._lock:
            self._check_open()
            entity = self._entities.get((kind, id))
            if entity is None:
                return None
            return EntityInfo(
                kind=kind,
                id=id,
                state=entity.state,
                version=entity.version,
                timer=entity.timer,
                boot=entity.boot,
                pending=len(entity.messages),
                failed=entity.failed,
                failed_item=entity.failed_item,
                owner=entity.owner,
                starts=entity.starts,
                updated=entity.updated,
            )

    def entity_ids(self, kind: str) -> list[str]:
        """The ids of *kind* with a row, sorted."""
        with self._lock:
            self._check_open()
            return sorted(id_ for of, id_ in self._entities if of == kind)

    # -- queues ---------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        record: object,
        *,
        key: str | int,
        delay: float | timedelta | None = None,
        priority: int = 0,
    ) -> bool:
        """
        Store a message for *key* on *queue*, unless the key is queued, running or done (see `QueueStore.enqueue`).

        .. versionadded:: 0.5.0
        """
        checked = checked_message(self.codec, queue, record, key=key, delay=delay, priority=priority)
        now = time.time()
        with self._lock:
            self._check_open()
            queues = self._queues
            found = queues.messages.get(checked.key)
            run = self._runs.get(checked.key)
            row = None if run is None else run.row
            live = row is not None and run_is_live(row.status, row.owner, row.lease_until, me=self.owner, now=now)
            if not admit(None if found is None else found.status, None if row is None else row.status, run_live=live):
                return False
            queues.put(checked, now, found)
        DOORBELL.ring(self, checked.queue)
        return True

    def queue_info(self, queue: str) -> dict[MessageStatus, int]:
        """
        Count *queue*'s messages by status (see `QueueStore.queue_info`).

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        now = time.time()
        counted: dict[MessageStatus, int] = dict.fromkeys(MESSAGE_STATUSES, 0)
        with self._lock:
            self._check_open()
            for message in self._queues.messages.values():
                if message.queue == name:
                    counted[message.counted_as(now)] += 1
        return counted

    def queues(self) -> list[str]:
        """
        Return the names of the queues that have messages, sorted.

        .. versionadded:: 0.5.0
        """
        with self._lock:
            self._check_open()
            return sorted({message.queue for message in self._queues.messages.values()})

    def message_info(self, key: str) -> MessageInfo | None:
        """
        Return what the store knows of *key*'s message, or None.

        .. versionadded:: 0.5.0
        """
        with self._lock:
            found = self._queues.messages.get(key)
            return None if found is None else found.info(key)

    def claim(self, queue: str, owner: str, *, limit: int) -> list[Message]:
        """
        Claim up to *limit* due messages of *queue* for *owner* (see `QueueStore.claim`).

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        count = check_limit(limit)
        now = time.time()
        with self._lock:
            self._check_open()
            return self._queues.take(name, owner, now=now, until=now + self.lease, limit=count)

    def renew_claims(self, owner: str) -> int:
        """
        Extend *owner*'s claims by the lease; return how many it holds (see `QueueStore.renew_claims`).

        .. versionadded:: 0.5.0
        """
        until = time.time() + self.lease
        with self._lock:
            self._check_open()
            held = [m for m in map(self._queues.messages.__getitem__, self._queues.running) if m.owner == owner]
            for message in held:
                message.lease_until = until
            return len(held)

    def settle(self, key: str, owner: str, status: Settled, error: str | None = None) -> bool:
        """
        Mark *key*'s message done or failed, if *owner* holds it (see `QueueStore.settle`).

        .. versionadded:: 0.5.0
        """
        with self._lock:
            self._check_open()
            return self._queues.settle(key, owner, status, error, time.time())

    def give_back(self, key: str, owner: str, *, delay: float) -> bool:
        """
        Put *key*'s message back on its queue, due in *delay* seconds, if *owner* holds it.

        .. versionadded:: 0.5.0
        """
        now = time.time()
        with self._lock:
            self._check_open()
            return self._queues.give_back(key, owner, now=now, due=now + max(0.0, delay))

    def recover(self, queue: str) -> int:
        """
        Queue again the messages of *queue* whose claimant died or whose claim expired (see `QueueStore.recover`).

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        now = time.time()
        with self._lock:
            self._check_open()
            return self._queues.recover(name, now, lambda holder: is_alive(holder, self.owner))

    def hold_queue(self, queue: str, owner: str) -> str | None:
        """
        Take or renew *queue*'s exclusive lease for *owner*; None when it holds it, else the holder.

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        now = time.time()
        with self._lock:
            self._check_open()
            holder, until = self._queues.servers.get(name, (None, None))
            if not may_hold(holder, until, owner=owner, now=now, alive=lambda h: is_alive(h, self.owner)):
                return holder
            self._queues.servers[name] = (owner, now + self.lease)
            return None

    def leave_queue(self, queue: str, owner: str) -> None:
        """
        Give up *queue*'s exclusive lease, if *owner* holds it.

        .. versionadded:: 0.5.0
        """
        with self._lock:
            servers = self._queues.servers
            if servers.get(queue, (None, None))[0] == owner:
                del servers[queue]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryStore(codec={self.codec.name!r}, runs={len(self._runs)})"


def _matches(info: RunInfo, status: Status | None, step: str | None, error_type: str | None) -> bool:
    """Whether *info* passes the filters of `Store.runs`."""
    return (
        (status is None or info.status == status)
        and (step is None or (info.failed_step is not None and info.failed_step.casefold() == step.casefold()))
        and (error_type is None or info.error_type == error_type or (info.error_type or "").endswith(f".{error_type}"))
    )


def _problems(runs: dict[str, _Run], events: list[Event]) -> list[str]:
    """Every broken invariant of a memory store's rows, each with its count and an example key."""
    broken: dict[str, list[str]] = {}

    def note(message: str, key: str) -> None:
        broken.setdefault(message, []).append(key)

    last = 0
    for event in events:
        run = runs.get(event.key)
        if run is None:
            note("{} events have no run (e.g. key {!r})", event.key)
        elif not (1 <= event.generation <= run.row.generation and 1 <= event.session <= run.row.sessions):
            note("{} events belong to a generation or session their run never had (e.g. key {!r})", event.key)
        if event.id <= last:
            note("{} events are not numbered in increasing order (e.g. key {!r})", event.key)
        last = max(last, event.id)
    for key, run in runs.items():
        if run.row.status not in STATUSES:
            note("{} runs have an unknown status (e.g. key {!r})", key)
        if (run.row.owner is None) != (run.row.lease_until is None):
            note("{} runs have a lease holder without a lease expiry, or the other way round (e.g. key {!r})", key)
    return [message.format(len(keys), min(keys)) for message, keys in broken.items()]


class MemorySession:
    """Records one run of one key in a `MemoryStore` (a `StoreSession`)."""

    __slots__ = ("_renew_at", "generation", "key", "session", "store")

    def __init__(self, store: MemoryStore, key: str, generation: int, session: int) -> None:
        self.store, self.key, self.generation, self.session = store, key, generation, session
        self._renew_at = time.monotonic() + store.lease / 3

    def record(self, event: NewEvent) -> int:
        """Append one event, renewing the lease when due; return its id."""
        number = self.store._append(self.key, self.generation, self.session, event)  # noqa: SLF001 - its own store
        if time.monotonic() >= self._renew_at:
            self.store._renew(self.key)  # noqa: SLF001 - its own store
            self._renew_at = time.monotonic() + self.store.lease / 3
        return number

    def rolling_back(self, fatal: str) -> None:
        """Mark the run as rolling back."""
        self.store._rolling_back(self.key, fatal)  # noqa: SLF001 - its own store

    def finish(self, ending: Ending) -> None:
        """Record how the run ended, and release the key."""
        self.store._finish(self.key, ending)  # noqa: SLF001 - its own store

    def set_trace_context(self, context: str) -> None:
        """Store the generation's trace context, unless it has one."""
        self.store._set_trace_context(self.key, self.generation, context)  # noqa: SLF001 - its own store

    def release(self) -> None:
        """Give the key up without finishing."""
        self.store._release(self.key)  # noqa: SLF001 - its own store


# -- queues --------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Message:
    queue: str
    status: MessageStatus
    payload: str
    priority: int
    due: float
    enqueued: float
    updated: float
    seq: int  # the order it was stored in: ties of priority and due time go by it
    deliveries: int = 0
    owner: str | None = None
    lease_until: float | None = None
    error: str | None = None

    def info(self, key: str) -> MessageInfo:
        return MessageInfo(
            key=key,
            queue=self.queue,
            status=self.status,
            priority=self.priority,
            due=self.due,
            enqueued=self.enqueued,
            updated=self.updated,
            deliveries=self.deliveries,
            owner=self.owner,
            lease_until=self.lease_until,
            error=self.error,
        )

    def counted_as(self, now: float) -> MessageStatus:
        """Its status for `queue_info`: a claim whose lease expired counts as queued."""
        if self.status == "running" and (self.lease_until or 0.0) < now:
            return "queued"
        return self.status


@dataclass(slots=True)
class _Queues:
    """
    A memory store's messages, with two heaps per queue to claim from.

    A queued message has one entry, ``(due, seq, key)``, in its queue's
    *delayed* heap until it is due; a claim moves the due ones to the
    *ready* heap, ordered ``(-priority, due, seq, key)``, and pops from it.
    An entry whose message has changed since (another *seq*, or no longer
    queued) is stale and skipped.
    """

    messages: dict[str, _Message] = field(default_factory=dict)
    delayed: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)
    ready: dict[str, list[tuple[int, float, int, str]]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    servers: dict[str, tuple[str, float]] = field(default_factory=dict)
    seq: int = 0

    def put(self, checked: Checked, now: float, found: _Message | None) -> None:
        """Store a new message, or queue *found* (a finished one) again with the checked fields."""
        self.seq += 1
        due = now + checked.delay
        if found is None:
            found = _Message(
                queue=checked.queue,
                status="queued",
                payload=checked.payload,
                priority=checked.priority,
                due=due,
                enqueued=now,
                updated=now,
                seq=self.seq,
            )
            self.messages[checked.key] = found
        else:
            found.queue, found.status, found.payload, found.priority = (
                checked.queue,
                "queued",
                checked.payload,
                checked.priority,
            )
            found.due, found.enqueued, found.updated, found.seq, found.error = due, now, now, self.seq, None
        self._push(checked.key, found)

    def _push(self, key: str, message: _Message) -> None:
        heapq.heappush(self.delayed.setdefault(message.queue, []), (message.due, message.seq, key))

    def _current(self, key: str, seq: int) -> _Message | None:
        message = self.messages.get(key)
        return message if message is not None and message.seq == seq and message.status == "queued" else None

    def take(self, queue: str, owner: str, *, now: float, until: float, limit: int) -> list[Message]:
        delayed, ready = self.delayed.get(queue, []), self.ready.setdefault(queue, [])
        while delayed and delayed[0][0] <= now:
            due, seq, key = heapq.heappop(delayed)
            message = self._current(key, seq)
            if message is not None:
                heapq.heappush(ready, (-message.priority, due, seq, key))
        taken: list[Message] = []
        while ready and len(taken) < limit:
            _, _, seq, key = heapq.heappop(ready)
            message = self._current(key, seq)
            if message is None:
                continue
            message.status, message.owner, message.lease_until, message.updated = "running", owner, until, now
            message.deliveries += 1
            self.running.add(key)
            taken.append(
                Message(
                    key=key,
                    queue=queue,
                    payload=message.payload,
                    priority=message.priority,
                    due=message.due,
                    enqueued=message.enqueued,
                    deliveries=message.deliveries,
                )
            )
        return taken

    def _held(self, key: str, owner: str) -> _Message | None:
        message = self.messages.get(key)
        return message if message is not None and message.status == "running" and message.owner == owner else None

    def settle(self, key: str, owner: str, status: Settled, error: str | None, now: float) -> bool:
        message = self._held(key, owner)
        if message is None:
            return False
        message.status, message.error, message.updated = status, error, now
        message.owner = message.lease_until = None
        self.running.discard(key)
        return True

    def give_back(self, key: str, owner: str, *, now: float, due: float) -> bool:
        message = self._held(key, owner)
        if message is None:
            return False
        self._queue_again(key, message, now)
        message.due = due
        self._push(key, message)
        return True

    def _queue_again(self, key: str, message: _Message, now: float) -> None:
        message.status, message.updated = "queued", now
        message.owner = message.lease_until = None
        self.running.discard(key)

    def recover(self, queue: str, now: float, alive: Callable[[str], bool]) -> int:
        lost = [
            key
            for key in self.running
            if (message := self.messages[key]).queue == queue
            and ((message.lease_until or 0.0) < now or message.owner is None or not alive(message.owner))
        ]
        for key in lost:
            message = self.messages[key]
            self._queue_again(key, message, now)
            self._push(key, message)  # its due time and seq as they were: its place in the queue
        return len(lost)

    def forget_finished(self, keys: set[str]) -> None:
        """`prune` deleted the runs of *keys*: their finished messages go too."""
        for key in keys:
            message = self.messages.get(key)
            if message is not None and message.status in ("done", "failed"):
                del self.messages[key]

    def problems(self) -> list[str]:
        """What breaks the queue rows' rules, as `SqliteStore.verify` words it."""
        broken: dict[str, list[str]] = {}
        for key, message in self.messages.items():
            if message.status not in MESSAGE_STATUSES:
                broken.setdefault("{} messages have an unknown status (e.g. key {!r})", []).append(key)
            claimed = message.owner is not None and message.lease_until is not None
            if (message.status == "running") != claimed or (message.owner is None) != (message.lease_until is None):
                broken.setdefault(
                    "{} messages are running without a claim, or claimed without running (e.g. key {!r})", []
                ).append(key)
        return [text.format(len(keys), min(keys)) for text, keys in broken.items()]
