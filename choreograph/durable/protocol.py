"""
The `Store` protocol: what a durable store keeps, and the records it exchanges with the runner.

A store is a persistence layer and nothing more. It keeps one row per key (a
`RunInfo`, plus the encoded input and fatal error) and an append-only log of
events (`Event`), and it hands out a key's lease atomically (`Store.begin`). What a
resumed run restores, how outputs are encoded and what a run's status is are
decided by the durable runner, the same way for every store, from the events
a store gives back.

To write a store, implement `Store` and `StoreSession`; `begin_row` holds the
rules of `Store.begin` as a pure function over the key's row, so a store only
has to read the row, call it and write the row back in one transaction.
`choreograph.durable.memory.MemoryStore` is the shortest complete example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal, NamedTuple, Protocol, runtime_checkable

from .._core.result import Outcome
from .._errors import Phase
from .codec import Codec

Status = Literal["running", "ok", "failed", "compensating", "rolled_back", "poisoned"]

#: The most characters of a stored trace context (`StoreSession.set_trace_context`).
TRACE_CONTEXT_LIMIT: Final = 512


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """
    One durable run, as the store knows it.

    Attributes:
        key: The idempotency key.
        status: ``"running"``, ``"ok"``, ``"failed"``, ``"compensating"``
            (rolling back, or a compensation failed), ``"rolled_back"`` or
            ``"poisoned"``.
        generation: Bumped each time the key starts from scratch.
        sessions: How many times a run of this key started.
        interruptions: Runs of this key that ended without finishing (a crash).
        failed_step: The step whose failure stopped the run, if any.
        error_type: The class of the run's fatal error (for `JobFailed`, of
            the job's error), if any.
        error: The fatal error's message, if any.
        owner: Who holds the lease while the run is going on.
        created: When the key was first run (seconds since the epoch).
        updated: When its row last changed.
        trace_context: The trace context its generation's first traced
            session stored (`StoreSession.set_trace_context`): with
            `choreograph.otel.Tracing`, the W3C ``traceparent`` of that
            session's run span. ``None`` if none did.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0 ``trace_context``.
    """

    key: str
    status: Status
    generation: int
    sessions: int
    interruptions: int
    failed_step: str | None
    error_type: str | None
    error: str | None
    owner: str | None
    created: float
    updated: float
    trace_context: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """
    One callback's recorded outcome.

    Attributes:
        id: Its number in the store: events are numbered in the order they were recorded.
        key: The run's idempotency key.
        generation: The generation of the run it belongs to.
        session: Which start of the run recorded it, from 1.
        step: The step's name.
        phase: ``"precheck"``, ``"job"`` or ``"compensate"``.
        outcome: As in `Call.outcome`.
        output: The encoded output, if one was stored: `Store.decode` gives it back.
        error: The encoded error, if any: `Store.decode_error` gives the exception back
            (`Store.decode` would only give the raw record).
        error_type: The error's class, if any.
        attempts: Calls made, retries included.
        seconds: Wall time.
        at: When it was recorded (seconds since the epoch); a copy made by a
            rerun keeps the time of the event it copies.
        traceback: For a callback that failed, its error's formatted traceback
            (plain text: reading it runs nothing; at most 16,384 characters,
            keeping its head and its innermost frames). An error
            the callback did not raise (a returned ``Failure``, or a verdict
            of choreograph's, such as `UnassignableOutput`) says so and has no
            frames. ``None`` for the other events, and for those recorded
            before SQLite schema version 4.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.2.0 ``traceback``.
    """

    id: int
    key: str
    generation: int
    session: int
    step: str
    phase: Phase
    outcome: Outcome
    output: str | None
    error: str | None
    error_type: str | None
    attempts: int
    seconds: float
    at: float
    traceback: str | None = None


class NewEvent(NamedTuple):
    """
    What a session records for one callback (`StoreSession.record`); the store adds the rest of an `Event`.

    A named tuple: one is made per callback. Fields are only ever added at
    the end, with a default, so that a store reading them by name or position
    keeps working.

    .. versionadded:: 0.2.0
    """

    step: str
    phase: Phase
    outcome: Outcome
    output: str | None
    error: str | None
    error_type: str | None
    attempts: int
    seconds: float
    traceback: str | None = None


class Ending(NamedTuple):
    """
    How a run ended (`StoreSession.finish`).

    Attributes:
        status: The key's new status.
        fatal: The encoded fatal error, if any.
        failed_step: The step where it stopped, if it did.
        error_type: The class of the error that stopped it (for `JobFailed`, of the job's error).
        error_message: The fatal error's message.
        result: For an ``ok`` run, the ids of the events its result shows, in trace order.

    .. versionadded:: 0.2.0
    """

    status: Status
    fatal: str | None = None
    failed_step: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    result: tuple[int, ...] | None = None


@runtime_checkable
class StoreSession(Protocol):
    """
    One run of one key, holding its lease: what the runner records through.

    .. versionadded:: 0.2.0
    """

    def record(self, event: NewEvent) -> int:
        """Commit one event before returning (renewing the lease when due); return its id."""
        ...

    def rolling_back(self, fatal: str) -> None:
        """Set the key's status to ``"compensating"`` with this encoded fatal error."""
        ...

    def finish(self, ending: Ending) -> None:
        """Record how the run ended and release the lease."""
        ...

    def release(self) -> None:
        """Release the lease without finishing: the run was interrupted, and the next one resumes it."""
        ...

    def set_trace_context(self, context: str) -> None:
        """
        Store the trace context of the run's generation (`Begun.trace_context`), unless it has one already.

        *context* is opaque text of at most `TRACE_CONTEXT_LIMIT` characters
        (choreograph stores a W3C ``traceparent``); a new generation starts
        without one. The runner calls it once the run has started, before its
        first callback, when `Begun.trace_context` was ``None`` and a listener
        gave one (see `RunStarted.trace_context`).

        .. versionadded:: 0.3.0
        """
        ...


class Begun(NamedTuple):
    """
    What `Store.begin` found, and the session when the run goes on (a named tuple: one is made per run).

    Attributes:
        status: ``"running"`` or ``"compensating"`` (the run goes on, through
            *session*), or ``"ok"`` / ``"poisoned"`` (nothing runs).
        generation: The generation the run belongs to.
        session: Which start of the key this is, from 1.
        interruptions: Runs of this generation that ended without finishing.
        fatal: The encoded fatal error of a run being rolled back, or of a finished one.
        events: The generation's events so far, oldest first (none for ``"poisoned"``).
        result: For ``"ok"``, the `Ending.result` the finishing session recorded (``None`` if it recorded none).
        recorder: The session, for ``"running"`` and ``"compensating"``.
        trace_context: What a session of this generation stored with
            `StoreSession.set_trace_context` (the row's `Row.trace_context`), if any.

    .. versionadded:: 0.2.0

    .. versionchanged:: 0.3.0 ``trace_context``.
    """

    status: Status
    generation: int
    session: int
    interruptions: int = 0
    fatal: str | None = None
    events: Sequence[Event] = ()
    result: Sequence[int] | None = None
    recorder: StoreSession | None = None
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """
    The part of a key's row that `begin_row` reads and decides: its lease, status and generation.

    *trace_context* belongs to the generation, as *fatal* does: `begin_row`
    clears both when a new generation starts.

    .. versionchanged:: 0.3.0 ``trace_context``.
    """

    status: Status
    generation: int
    sessions: int
    interruptions: int
    owner: str | None
    lease_until: float | None
    fatal: str | None
    trace_context: str | None = None


#: A rerun's choice of the events its new generation starts with (see `Store.begin`):
#: given the key's row (``None`` for a key without one) and the events of its
#: current generation, it returns the ids of the events to copy, or raises.
Restore = Callable[[Row | None, Sequence[Event]], Sequence[int]]


def begin_row(
    row: Row | None,
    *,
    owner: str,
    now: float,
    lease: float,
    max_interruptions: int,
    fresh: bool,
    alive: Callable[[str], bool],
) -> tuple[Row | None, Row | str]:
    """
    Decide what `Store.begin` does with a key's row: ``(row to write or None, outcome)``.

    The outcome is the holder's name when another live owner holds the lease;
    else the row the run starts from (its status says whether anything runs:
    see `Begun.status`). The row to write is ``None`` when nothing changes.

    >>> new, outcome = begin_row(None, owner="me", now=0.0, lease=60.0, max_interruptions=3, fresh=False,
    ...                          alive=lambda owner: True)
    >>> (outcome.status, outcome.generation, outcome.sessions, new.lease_until)
    ('running', 1, 1, 60.0)
    """
    until = now + lease
    if row is None:
        started = Row("running", 1, 1, 0, owner, until, None)
        return started, started
    if row.owner is not None and row.owner != owner and (row.lease_until or 0.0) > now and alive(row.owner):
        return None, row.owner
    status, generation, interruptions, fatal = row.status, row.generation, row.interruptions, row.fatal
    if status == "running":  # the last session of the key ended without finishing
        interruptions += 1
        if interruptions > max_interruptions and not fresh:
            poisoned = dataclasses.replace(
                row, status="poisoned", interruptions=interruptions, owner=None, lease_until=None
            )
            return poisoned, poisoned
    if status in ("ok", "poisoned") and not fresh:
        return None, row
    trace_context = row.trace_context
    if fresh or status in ("ok", "poisoned", "rolled_back"):
        generation, interruptions, fatal, trace_context, status = generation + 1, 0, None, None, "running"
    elif status != "compensating":
        status = "running"
    started = Row(status, generation, row.sessions + 1, interruptions, owner, until, fatal, trace_context)
    return started, started


@runtime_checkable
class Store(Protocol):
    """
    A durable store: pass one as ``Coordinator(store=...)``.

    `SqliteStore`, `MemoryStore` (and third-party stores) implement it. The
    guarantees every store gives: `begin` is atomic per key across every
    process sharing the store; `StoreSession.record` has committed its event
    when it returns; a key's row and events are never changed by anything but
    its lease holder, `prune` and a new `begin`.

    .. versionadded:: 0.2.0
    """

    @property
    def codec(self) -> Codec:
        """How outputs, inputs and errors are encoded."""
        ...

    @property
    def lease(self) -> float:
        """Seconds a key stays leased to its runner without a renewal."""
        ...

    @property
    def owner(self) -> str:
        """This store object's name as a lease holder (``host:pid:random``)."""
        ...

    @property
    def location(self) -> str:
        """Where the store is (a path, a URL), for messages."""
        ...

    def begin(self, key: str, input: str, *, fresh: bool, restore: Restore | None = None) -> Begun | str:  # noqa: A002
        """
        Take the lease of *key* (see `begin_row`), storing its encoded *input*.

        *restore* is a rerun's (`Coordinator.rerun`), always with *fresh*.
        Once the lease is taken (not while another holder has it) and before
        anything is written, call ``restore(row, events)`` with the key's row
        (``None`` if it has none) and the events of the generation it is at.
        It returns the ids of events of *key* to copy into the new
        generation; write the copies (every field but the id, generation and
        session kept) in that order, in the same transaction as the row: a
        crash leaves either the key as it was, or the new generation with
        every copy. When it raises, write nothing and let the error through.
        `Begun.events` are then the copies.

        Returns:
            The holder's name while another live owner holds the lease; else `Begun`.
        """
        ...

    def stored_input(self, key: str) -> object:
        """Return the decoded input last run for *key*; `KeyError` if there is none."""
        ...

    def run_info(self, key: str) -> RunInfo | None:
        """What the store knows of *key*."""
        ...

    def runs(
        self,
        *,
        status: Status | None = None,
        step: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
    ) -> Sequence[RunInfo]:
        """
        List runs, most recently updated first, then by key (see `SqliteStore.runs`).

        Filters: *status*; *step*, the step that stopped the run (ignoring
        case); *error_type*, the error's class, by name or ``module.QualName``.
        The sequence may read the store as it is used (a store that keeps its
        runs outside the process must: iterating it takes bounded memory
        however many runs there are, as `SqliteStore.runs` does); no run
        comes twice in one iteration; a negative *limit* is a `ValueError`.
        """
        ...

    def counts(
        self, *, status: Status | None = None, step: str | None = None, error_type: str | None = None
    ) -> Mapping[Status, int]:
        """Count the runs `runs` would list with these filters, by status: every status, 0 where no run has it."""
        ...

    def verify(self) -> None:
        """Check the store's integrity; raise `StoreError` naming what is wrong, return None when it is sound."""
        ...

    def events(self, key: str, *, generation: int | None = None) -> list[Event]:
        """The recorded callbacks of *key*, in the order they were recorded."""
        ...

    def decode(self, text: str) -> object:
        """Decode an `Event.output` (or a stored input) with the store's codec."""
        ...

    def decode_error(self, text: str) -> BaseException:
        """Decode an `Event.error` with the store's codec (`Codec.decode_error`): never raises."""
        ...

    def prune(self, *, status: Status | None = None, before: float | None = None, keys: list[str] | None = None) -> int:
        """Delete finished runs and their events; return how many runs were deleted."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


# -- durable queues -----------------------------------------------------------------------------------

#: A message's state in its queue (`QueueStore.queue_info`, `MessageInfo.status`).
MessageStatus = Literal["queued", "running", "done", "failed"]

#: How a server settles a message it claimed (`QueueStore.settle`).
Settled = Literal["done", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """
    A message a server claimed (`QueueStore.claim`): what it runs, and its place in the queue.

    Attributes:
        key: The message's key: the key of the durable run it becomes.
        queue: The queue it was put on.
        payload: The record, encoded with the store's codec (`Store.decode` gives it back).
        priority: Higher is taken first.
        due: When it became (or becomes) due, in seconds since the epoch.
        enqueued: When `QueueStore.enqueue` stored it.
        deliveries: How many times it was claimed, this claim included: more
            than 1 after a server died holding it, gave it back, or it was
            queued again after a failure.

    .. versionadded:: 0.5.0
    """

    key: str
    queue: str
    payload: str
    priority: int
    due: float
    enqueued: float
    deliveries: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageInfo:
    """
    One message, as the store knows it (`QueueStore.message_info`): the handle of a key put on a queue.

    Attributes:
        key: The message's key.
        queue: Its queue.
        status: ``"queued"`` (waiting, or delayed: see *due*), ``"running"``
            (claimed by *owner* until *lease_until*), ``"done"`` or ``"failed"``.
        priority: Higher is taken first.
        due: When it is due (seconds since the epoch).
        enqueued: When it was last put on the queue.
        updated: When its row last changed.
        deliveries: How many times a server claimed it.
        owner: The server holding it while ``"running"``.
        lease_until: When that server's claim expires unless renewed.
        error: For ``"failed"``, why: the run's fatal error as ``Type: message``.

    .. versionadded:: 0.5.0
    """

    key: str
    queue: str
    status: MessageStatus
    priority: int
    due: float
    enqueued: float
    updated: float
    deliveries: int
    owner: str | None
    lease_until: float | None
    error: str | None


def admit(message: MessageStatus | None, run: Status | None, *, run_live: bool) -> bool:
    """
    Decide whether `QueueStore.enqueue` stores a message for a key (keys are one namespace per store).

    Args:
        message: The status of the key's message, if it has one.
        run: The status of the key's durable run (its row in the runs), if it has one.
        run_live: Whether that run is going on now: ``"running"`` or
            ``"compensating"`` with a lease holder that is alive and whose
            lease has not expired (a `run(key=)` somewhere, outside any queue).

    Returns:
        ``False`` (store nothing) when the key is queued, running or done:
        its message is queued or running, its run finished ``"ok"`` or is
        going on, or its message is done and it has no run (a pruned run
        deletes its finished message too); ``True`` otherwise: a new key, a
        run that failed, was rolled back, was interrupted or is poisoned
        (the message is queued again, and its run resumes as `run(key=)`
        would resume it).

    >>> admit(None, None, run_live=False), admit("failed", "failed", run_live=False)
    (True, True)
    >>> admit("queued", None, run_live=False), admit(None, "ok", run_live=False), admit("done", None, run_live=False)
    (False, False, False)
    """
    if message in ("queued", "running"):
        return False
    if run is None:
        return message != "done"
    return run != "ok" and not run_live


def may_hold(holder: str | None, until: float | None, *, owner: str, now: float, alive: Callable[[str], bool]) -> bool:
    """
    Decide whether *owner* may take (or keep) a queue's exclusive lease, held by *holder* until *until*.

    It may when nobody holds it, when it holds it itself, when the lease
    expired, or when the holder is a dead process (checked by *alive*, which
    can only tell for processes of this machine).

    >>> may_hold(None, None, owner="a", now=5.0, alive=lambda h: True)
    True
    >>> alive = lambda holder: True
    >>> may_hold("b", 10.0, owner="a", now=5.0, alive=alive), may_hold("b", 4.0, owner="a", now=5.0, alive=alive)
    (False, True)
    """
    return holder is None or holder == owner or (until or 0.0) <= now or not alive(holder)


@runtime_checkable
class QueueStore(Store, Protocol):
    """
    A `Store` with durable queues: producers `enqueue` from any process, servers claim and settle.

    Keys are one namespace per store: a message's key is the key of the
    durable run a server makes of it (`Coordinator.serve`), the same key a
    `run(key=)` would use. A key has at most one message, in one queue.

    The server side (`claim`, `renew_claims`, `settle`, `give_back`,
    `recover`, `hold_queue`, `leave_queue`) is what `Coordinator.serve`
    calls; a server names itself with an *owner* of its own
    (``host:pid:random``, as `Store.owner`), distinct from the store's, so
    that two servers in one process are told apart. The guarantees a store
    gives: `enqueue`, `claim`, `settle`, `give_back`, `recover` and
    `hold_queue` are each atomic across every process sharing the store; a
    message is claimed by one server at a time (its claim lasts
    `Store.lease` seconds unless renewed); nothing but its claimant
    changes a running message, but `recover` once the claim expired (or its
    claimant is a dead process of this machine).

    A store with rows in a database claims with ``FOR UPDATE SKIP LOCKED`` (or
    a statement that takes the write lock first, as SQLite's ``UPDATE ...
    RETURNING`` does), so that concurrent servers neither block on each
    other's rows nor claim one message twice.

    .. versionadded:: 0.5.0
    """

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
        Store a message for *key* on *queue*, unless the key is queued, running or done.

        Check the arguments with `choreograph.durable.queues.checked_message`
        (which encodes *record* with the store's codec) before touching the
        store, then, in one transaction, read the key's message and run
        rows, decide with `admit`, and write the message: a new row, or the
        key's earlier (failed) message queued again with the new record,
        priority and due time (its deliveries kept). Ring
        `choreograph.durable.queues.DOORBELL` after the commit, so that a
        server of this process waiting on *queue* looks at once.

        Args:
            queue: The queue's name: a non-empty str.
            record: The message: the input of the run it becomes, encoded with the store's codec.
            key: The message's key (a non-empty str, or an int, as for `run(key=)`).
            delay: Seconds (a number, or a `datetime.timedelta`) before it is
                due; ``None`` or 0 means now.
            priority: An int from -2**31 to 2**31 - 1; higher is taken first.

        Returns:
            ``True`` when the message was stored; ``False`` (and nothing
            stored) when the key is queued, running or done (see `admit`).

        Raises:
            TypeError: A wrong type (the message names which), or a record the codec can't encode.
            ValueError: An empty name or key, a negative or non-finite delay, a priority out of range.
            StoreError: The store can't be written.
        """
        ...

    def queue_info(self, queue: str) -> Mapping[MessageStatus, int]:
        """
        Count *queue*'s messages by status: ``queued``, ``running``, ``done``, ``failed``, each 0 when none.

        A delayed message (not yet due) counts as ``queued``, and so does a
        claim whose lease expired (its server died: the next server to look
        takes it again). A name with no messages counts zeros.
        """
        ...

    def queues(self) -> list[str]:
        """Return the names of the queues that have messages, sorted."""
        ...

    def message_info(self, key: str) -> MessageInfo | None:
        """What the store knows of *key*'s message, or None when it has none."""
        ...

    def claim(self, queue: str, owner: str, *, limit: int) -> list[Message]:
        """
        Claim up to *limit* due messages of *queue* for *owner*, by priority (higher first), then due time.

        Atomically mark them ``"running"``, held by *owner* for `Store.lease`
        seconds, and add one to their deliveries; a message due at the same
        time as another keeps the order it was stored in. Two servers
        claiming at once get different messages.

        Returns:
            The claimed messages in that order; an empty list when none is due.
        """
        ...

    def renew_claims(self, owner: str) -> int:
        """Extend every claim *owner* holds by `Store.lease` seconds from now; return how many it still holds."""
        ...

    def settle(self, key: str, owner: str, status: Settled, error: str | None = None) -> bool:
        """
        Mark *key*'s message *status* (``"done"`` or ``"failed"``, with *error* saying why) and drop its claim.

        Only while *owner* holds the claim: returns ``False``, changing
        nothing, when another server took the message over (see `recover`).
        """
        ...

    def give_back(self, key: str, owner: str, *, delay: float) -> bool:
        """
        Put *key*'s message back on its queue, due in *delay* seconds, without settling it.

        Only while *owner* holds the claim; returns whether it did.
        """
        ...

    def recover(self, queue: str) -> int:
        """
        Queue again the messages of *queue* whose claim expired, or whose claimant is a dead process of this machine.

        They keep their due time, and so their place in the queue. The
        liveness check is `choreograph.durable.leases.is_alive`'s, against
        `Store.owner`. Returns how many were queued again.
        """
        ...

    def hold_queue(self, queue: str, owner: str) -> str | None:
        """
        Take or renew *queue*'s exclusive lease for *owner*, for `Store.lease` seconds (see `may_hold`).

        Returns:
            ``None`` when *owner* holds it now; else the holder's name.
        """
        ...

    def leave_queue(self, queue: str, owner: str) -> None:
        """Give up *queue*'s exclusive lease, if *owner* holds it."""
        ...


# -- entities -------------------------------------------------------------------------------

#: What an entity's handling is for: a queued message, its timer, or its boot (see `EntityStore`).
EntityItem = Literal["message", "timer", "boot"]


@dataclass(frozen=True, slots=True)
class EntityMessage:
    """
    A message queued for an entity, as its store keeps it.

    Attributes:
        seq: Its number in the store: messages are numbered in the order they were stored.
        message: The encoded message.
        sent: When it was stored (seconds since the epoch, the sender's clock).

    .. versionadded:: 0.5.0
    """

    seq: int
    message: str
    sent: float


@dataclass(frozen=True, slots=True)
class EntityRow:
    """
    One entity as its claim holder sees it: what `EntityStore.entity_claim` and `entity_commit` return.

    Attributes:
        kind: The entity's kind.
        id: Its id.
        state: Its encoded state; ``None`` while it has none.
        version: Handlings committed so far (the keys of timer and boot runs name it).
        timer: When its timer is due (seconds since the epoch), if it has one.
        boot: Whether its ``on_boot`` handling is due.
        starts: How many times the item now due was given to a server without being
            committed or failed: 1 the first time, more after crashes.
        head: The first of its queued messages, if any.

    .. versionadded:: 0.5.0
    """

    kind: str
    id: str
    state: str | None
    version: int
    timer: float | None
    boot: bool
    starts: int
    head: EntityMessage | None


@dataclass(frozen=True, slots=True)
class EntityInfo:
    """
    What a store knows of one entity (`EntityStore.entity_info`).

    Attributes:
        kind, id, state, version, timer, boot: As in `EntityRow`.
        pending: Messages queued for it.
        failed: The key of the durable run whose failure blocks it, if one does.
        failed_item: What that run handled: ``"message"`` (the first queued one), ``"timer"`` or ``"boot"``.
        owner: The server holding its claim, if one does.
        starts: As in `EntityRow`.
        updated: When its row last changed (seconds since the epoch).

    .. versionadded:: 0.5.0
    """

    kind: str
    id: str
    state: str | None
    version: int
    timer: float | None
    boot: bool
    pending: int
    failed: str | None
    failed_item: EntityItem | None
    owner: str | None
    starts: int
    updated: float


class EntityCommit(NamedTuple):
    """
    The end of one handling, committed in one transaction by `EntityStore.entity_commit`.

    Attributes:
        item: What was handled.
        seq: For a message, its `EntityMessage.seq`: it is deleted (acknowledged).
        state: The entity's new encoded state; ``None`` ends the entity (its row goes
            once it has no messages left).
        timer: Its timer from now on (``None``: none); a handled timer is consumed
            unless the handling set it again.
        release: Give the claim up even if another item is due.

    .. versionadded:: 0.5.0
    """

    item: EntityItem
    seq: int | None
    state: str | None
    timer: float | None
    release: bool = False


def entity_ready(row_boot: bool, head_sent: float | None, timer: float | None) -> float | None:  # noqa: FBT001
    """
    When an entity next has something to handle (``None``: nothing until a message comes).

    Its boot is due at once (0), a message when it was sent, the timer when it is due;
    servers take entities in this order. A store keeps it in a column, to find the
    entities that are due with an index.

    >>> entity_ready(False, None, None), entity_ready(False, 5.0, 3.0), entity_ready(True, 5.0, None)
    (None, 3.0, 0.0)
    """
    if row_boot:
        return 0.0
    if head_sent is None:
        return timer
    return head_sent if timer is None else min(head_sent, timer)


def next_item(row: EntityRow, now: float) -> EntityItem | None:
    """
    What the holder of *row*'s claim handles next, if anything is due at *now*.

    The boot first; then the timer, once due, unless the first queued message
    was sent before it was due; then the first message.

    >>> row = EntityRow("k", "a", None, 0, 2.0, False, 1, EntityMessage(1, "{}", 3.0))
    >>> next_item(row, 1.0), next_item(row, 2.5)
    ('message', 'timer')
    """
    if row.boot:
        return "boot"
    head, timer = row.head, row.timer
    if timer is not None and timer <= now and (head is None or timer <= head.sent):
        return "timer"
    return "message" if head is not None else None


@runtime_checkable
class EntityStore(Protocol):
    """
    The store methods of durable entities (`choreograph.Entities`): one row per entity, and its queued messages.

    An entity row holds the encoded state, the timer, the boot flag, the failure
    that blocks it, its claim (holder and lease expiry, as a run's lease) and
    its *ready* time (`entity_ready`, ``None`` while blocked), kept on an index
    so that `entity_claim` finds the due entities without a scan. Messages are
    rows numbered in the order they were stored.

    Every method is one transaction. A store over a server database (Postgres)
    writes `entity_claim` as ``SELECT ... WHERE kind = $1 AND ready <= $2 AND
    (owner IS NULL OR lease_until < $2) ORDER BY ready LIMIT $3 FOR UPDATE SKIP
    LOCKED`` then an ``UPDATE`` of those rows, and every other method as
    ``SELECT ... FOR UPDATE`` of the entity's row (a ``send`` as an
    ``INSERT ... ON CONFLICT DO UPDATE``), so that senders and the claim holder
    of one entity queue on its row while other entities go on.

    .. versionadded:: 0.5.0
    """

    def entity_send(self, kind: str, id: str, message: str) -> int:  # noqa: A002
        """Store an encoded message for the entity (creating its row), due at once unless it is blocked; its seq."""
        ...

    def entity_claim(self, kind: str, limit: int, *, reap: bool = False) -> list[EntityRow]:
        """
        Claim up to *limit* entities of *kind* that are due, oldest *ready* first, for this store's `owner`.

        An entity is free when nobody holds its claim or the claim's lease
        expired; with *reap*, also when its holder is a dead process of this
        machine (`leases.is_alive`). Each claimed entity's ``starts`` is
        incremented, its lease set to `Store.lease` from now.
        """
        ...

    def entity_commit(self, kind: str, id: str, commit: EntityCommit) -> EntityRow | None:  # noqa: A002
        """
        Commit a handling: the new state, the acknowledgement of its item and the timer, in one transaction.

        The entity's version is incremented and its ``starts`` reset. Then,
        unless *commit* says to release, the claim is kept (renewed) when
        another item is due: that row is returned, its ``starts`` already 1.
        Otherwise the claim is released and ``None`` returned. An entity left
        with no state, messages, timer or boot loses its row.

        Raises:
            StoreError: This store does not hold the entity's claim (it was
                taken over after its lease expired): nothing was written.
        """
        ...

    def entity_fail(self, kind: str, id: str, key: str, item: EntityItem, *, interrupted: bool = False) -> None:  # noqa: A002
        """
        Block the entity behind its failed *item* (handled by the durable run *key*) and release its claim.

        Its ``starts`` is reset, unless the item is failed for being *interrupted*
        too often: then a ``serve`` start that unblocks it refuses it again at once.
        """
        ...

    def entity_release(self, kind: str, id: str, *, started: bool) -> None:  # noqa: A002
        """Release this store's claim of the entity; unless *started*, the item taken was not handled (starts - 1)."""
        ...

    def entity_renew(self, kind: str, ids: Sequence[str]) -> list[str]:
        """Renew this store's claims of *ids*; return those it no longer holds."""
        ...

    def entity_start(self, kind: str, *, boot: bool) -> int:
        """
        A server of *kind* starts: unblock its failed entities, to be tried again.

        With *boot*, every entity with a state gets its boot due. Returns how many were unblocked.
        """
        ...

    def entity_retry(self, kind: str, id: str) -> bool:  # noqa: A002
        """Unblock the entity (its failed item is handled again, its ``starts`` reset); False if it was not blocked."""
        ...

    def entity_drop(self, kind: str, id: str) -> bool:  # noqa: A002
        """Discard the failed item (the message, the timer or the boot) and unblock the entity; False if not blocked."""
        ...

    def entity_info(self, kind: str, id: str) -> EntityInfo | None:  # noqa: A002
        """What the store knows of the entity; ``None`` when it has no row."""
        ...

    def entity_ids(self, kind: str) -> list[str]:
        """The ids of *kind* with a row (a state, queued messages, a timer or a failure), sorted."""
        ...
