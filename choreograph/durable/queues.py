"""
What every queue store shares: checking a message before it is stored, and waking a server of this process.

`checked_message` validates the arguments of `QueueStore.enqueue` and encodes
the record, before a store touches its rows: a bad argument or a record its
codec can't encode stores nothing. `DOORBELL` lets a store tell the servers
of this process that a queue got a message, so that they look at once
instead of at their next poll.
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final, NamedTuple, get_args

from .._core.callbacks import type_name
from .codec import Codec, CodecError
from .leases import is_alive
from .protocol import MessageInfo, MessageStatus, Status

#: The range of a message's priority: a 32-bit signed int, as every database stores it.
PRIORITY_MIN: Final = -(2**31)
PRIORITY_MAX: Final = 2**31 - 1
#: Every status of a message, in the order `QueueStore.queue_info` gives them.
MESSAGE_STATUSES: Final[tuple[MessageStatus, ...]] = get_args(MessageStatus)


class Checked(NamedTuple):
    """A message ready to store: its queue, key, encoded record, priority and delay in seconds."""

    queue: str
    key: str
    payload: str
    priority: int
    delay: float


def check_queue(queue: object) -> str:
    """
    Check a queue's name: a non-empty str.

    >>> check_queue("imports")
    'imports'
    """
    if not isinstance(queue, str):
        msg = f"a queue's name must be a str, got {type_name(queue)}"
        raise TypeError(msg)
    if not queue:
        msg = "a queue's name must not be empty"
        raise ValueError(msg)
    return queue


def check_key(key: object) -> str:
    """
    Check a message's key: a non-empty str, or an int (made a str, as `run(key=)` makes it).

    >>> check_key("INV-42"), check_key(7)
    ('INV-42', '7')
    """
    if isinstance(key, bool) or not isinstance(key, str | int):
        msg = f"a message's key must be a str or an int, got {type_name(key)}"
        raise TypeError(msg)
    text = str(key)
    if not text:
        msg = "a message's key must not be empty"
        raise ValueError(msg)
    return text


def check_delay(delay: object) -> float:
    """
    Check a delay: ``None`` (none), seconds as an int or a float, or a `datetime.timedelta`; finite and >= 0.

    >>> check_delay(None), check_delay(2), check_delay(timedelta(minutes=1))
    (0.0, 2.0, 60.0)
    """
    if delay is None:
        return 0.0
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, int | float):
        msg = f"delay must be seconds (an int or a float) or a timedelta, got {type_name(delay)}"
        raise TypeError(msg)
    else:
        seconds = float(delay)
    if not math.isfinite(seconds) or seconds < 0:
        msg = f"delay must be finite and >= 0 seconds, got {delay!r}"
        raise ValueError(msg)
    return seconds


def check_priority(priority: object) -> int:
    """
    Check a priority: an int (not a bool) from -2**31 to 2**31 - 1.

    >>> check_priority(-3)
    -3
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        msg = f"priority must be an int, got {type_name(priority)}"
        raise TypeError(msg)
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        msg = f"priority must be from {PRIORITY_MIN} to {PRIORITY_MAX}, got {priority}"
        raise ValueError(msg)
    return priority


def check_limit(limit: object, name: str = "limit") -> int:
    """
    Check a count that must be an int >= 1 (not a bool): how many messages a claim takes, a server's workers.

    >>> check_limit(4)
    4
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        msg = f"{name} must be an int, got {type_name(limit)}"
        raise TypeError(msg)
    if limit < 1:
        msg = f"{name} must be >= 1, got {limit}"
        raise ValueError(msg)
    return limit


def run_is_live(status: Status, owner: str | None, lease_until: float | None, *, me: str, now: float) -> bool:
    """
    Whether a key's durable run is going on now (for `admit`): running or rolling back, under a live lease.

    A lease held by *me* (the store object itself, in another thread) is live
    until it expires; another holder's while it has not expired and the
    holder is not a dead process of this machine.

    >>> run_is_live("running", "elsewhere:1:ab", 10.0, me="here:2:cd", now=5.0)
    True
    >>> run_is_live("failed", None, None, me="here:2:cd", now=5.0)
    False
    """
    if status not in ("running", "compensating") or owner is None or (lease_until or 0.0) <= now:
        return False
    return owner == me or is_alive(owner, me)


def checked_message(
    codec: Codec, queue: object, record: object, *, key: object, delay: object, priority: object
) -> Checked:
    """
    Check `QueueStore.enqueue`'s arguments and encode *record* with *codec*: what a store then writes.

    Raises:
        TypeError: An argument of the wrong type, or a record *codec* can't encode (naming the key).
        ValueError: An empty queue name or key, a negative or non-finite delay, a priority out of range.

    >>> from choreograph import JsonCodec
    >>> checked_message(JsonCodec(), "q", {"n": 1}, key=5, delay=None, priority=0)
    Checked(queue='q', key='5', payload='{"n":1}', priority=0, delay=0.0)
    """
    name = check_queue(queue)
    text = check_key(key)
    seconds = check_delay(delay)
    rank = check_priority(priority)
    try:
        payload = codec.encode(record)
    except CodecError as exc:
        msg = f"the message of key {text!r} can't be stored: {exc}"
        raise TypeError(msg) from exc
    return Checked(name, text, payload, rank, seconds)


class Doorbell:
    """
    The servers of this process waiting on a queue of a store: a store rings when it stored a message there.

    Stores are told apart by identity; a store's entry goes when the store
    does. A server waits on an `threading.Event` of its own; ringing sets the
    events of every server of that store and queue (a cheap no-op when none
    waits). Servers in other processes learn of new messages at their next
    poll.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, dict[str, set[threading.Event]]] = {}

    def listen(self, store: object, queue: str, event: threading.Event) -> None:
        """Set *event* whenever *store* stores a message on *queue*, until `forget`."""
        with self._lock:
            queues = self._waiting.get(id(store))
            if queues is None:
                queues = self._waiting[id(store)] = {}
                with contextlib.suppress(TypeError):  # a store without weak references keeps its (empty) entry
                    weakref.finalize(store, self._drop, id(store))
            queues.setdefault(queue, set()).add(event)

    def forget(self, store: object, queue: str, event: threading.Event) -> None:
        """Stop setting *event* for *store*'s *queue*."""
        with self._lock:
            queues = self._waiting.get(id(store), {})
            events = queues.get(queue)
            if events is not None:
                events.discard(event)
                if not events:
                    del queues[queue]

    def ring(self, store: object, queue: str) -> None:
        """*store* stored a message on *queue*: wake the servers of this process waiting there."""
        queues = self._waiting.get(id(store))
        if not queues:
            return
        with self._lock:
            events = list(queues.get(queue, ()))
        for event in events:
            event.set()

    def _drop(self, store_id: int) -> None:
        # A finalizer: the collector runs it in whatever thread allocates, maybe one inside `listen` holding
        # the lock, so it must not take the lock (a deadlock); a dict's pop is atomic, and a dead store's
        # id is not reused before its finalizers ran.
        self._waiting.pop(store_id, None)


#: The servers of this process waiting on their queues (see `Doorbell`).
DOORBELL: Final = Doorbell()


#: The columns of a message's row that `message_info_of` reads, in its order: for a store's SELECT.
MESSAGE_INFO_COLUMNS: Final = (
    "key, queue, status, priority, due, enqueued, updated, deliveries, owner, lease_until, error"
)


def message_info_of(row: Sequence[Any]) -> MessageInfo:
    """A `MessageInfo` of a row of `MESSAGE_INFO_COLUMNS` (as SQLite and PostgreSQL stores read it)."""
    key, queue, status, priority, due, enqueued, updated, deliveries, owner, lease_until, error = row
    return MessageInfo(
        key=key,
        queue=queue,
        status=status,
        priority=priority,
        due=due,
        enqueued=enqueued,
        updated=updated,
        deliveries=deliveries,
        owner=owner,
        lease_until=lease_until,
        error=error,
    )
