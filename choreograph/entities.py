"""
Durable entities: stateful objects identified by an id, whose state a handler updates when a message arrives.

``Entities[Balance]("account", store=store)`` is a *kind*; its entities live in
the store, each with an encoded state, a queue of messages and one durable
timer. `Entities.serve` hands them out to worker threads: messages to one id
one at a time, in the order they were stored, ids side by side. Each handling
is a durable run of the store (its key names the entity and the message), so
that it is listed by `Store.runs` with its events and traceback; the new
state, the message's acknowledgement and the timer then commit in one
transaction of the store (`EntityStore.entity_commit`).

The guarantees, precisely (docs/guide/entities.md says the same with examples):

- ``send`` is durable when it returns. A message's *effect on the state* is
  exactly once: the state that handling produced is committed with the
  acknowledgement, or neither is. The handler's *side effects* outside the
  state are at least once: a crash before the commit makes the message be
  handled again, from the old state.
- A handling that crashed is started again from the stored state, never
  resumed mid-way: the steps that completed changed ``ctx.state`` in memory
  only, and a resumed run would skip them. The durable run's key gets a new
  generation for every start (``fresh=True``); the earlier ones stay in its history.
- A handler that fails (after its retries) commits nothing: the message is
  marked failed and blocks its id (later messages wait behind it, other ids
  go on) until `Entities.retry`, `Entities.drop` or the next ``serve``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast, overload

from beartype.door import is_bearable
from beartype.roar import BeartypeException
from loguru import logger as _logger

from ._coordinator import Coordinator
from ._core.callbacks import Callback, compile_callback, hint_name, type_name
from ._core.context import Context
from ._core.generics import InputAlias, accepts, declared_input, is_known, subscript
from ._core.result import RunResult
from ._core.retry import RetryPolicy
from ._core.runs import run_sync
from ._core.state import RunState
from ._core.step import Step
from ._errors import StoreError
from .durable.codec import CodecError
from .durable.protocol import EntityCommit, EntityInfo, EntityItem, EntityRow, EntityStore, Store, next_item
from .durable.runner import DurableRunner

StateT = TypeVar("StateT")
F = TypeVar("F", bound=Callable[..., object])

#: Items an entity's server handles before giving the id up for others, and seconds likewise.
_SLICE_ITEMS: Final = 100
_SLICE_SECONDS: Final = 0.5
#: Seconds the serve loop waits for work when none was found.
_POLL: Final = 0.05
#: Seconds between looks for the claims of dead processes of this machine.
_REAP: Final = 1.0
#: The step a coordinator handler gets appended: it checks and encodes the state.
_SEAL_STEP: Final = "entity state"


class EntityContext(Context[Any], Generic[StateT]):
    """
    What an entity's handler knows: the entity, its state, and the message being handled.

    A `Context` (``ctx.step``, ``ctx.attempt``, ``ctx.logger``, ``ctx.key`` the
    handling's durable run...), given to a handler's context parameter
    (annotated ``EntityContext[State]``, ``Context``, or named ``ctx``), and to
    the callbacks of a coordinator registered as a handler.

    ``ctx.state`` reads the entity's state (``None`` while it has none) and
    takes a new one; ``ctx.state = None`` ends the entity. Assignments, and
    the timer's changes, take effect when the handling commits: a handling
    that fails changes nothing.

    .. versionadded:: 0.5.0
    """

    def _handling(self) -> _Handling:
        handling: object = getattr(self._run, "entity", None)
        if not isinstance(handling, _Handling):  # pragma: no cover - made only for entity runs
            msg = "this context belongs to a run that is no entity's handling"
            raise TypeError(msg)
        return handling

    @property
    def id(self) -> str:
        """The entity's id."""
        return self._handling().id

    @property
    def kind(self) -> str:
        """The entity's kind (``Entities(kind, ...)``)."""
        return self._handling().kind

    @property
    def message(self) -> object:
        """The message being handled; ``None`` for the timer's and the boot's handlings."""
        return self._handling().message

    @property
    def item(self) -> EntityItem:
        """What is handled: ``"message"``, ``"timer"`` or ``"boot"``."""
        return self._handling().item

    @property
    def state(self) -> StateT | None:
        """
        The entity's state, as this handling left it so far; ``None`` while it has none.

        Raises:
            TypeError: (on assignment) the value is not of the declared state type;
                the message names the entity.
            StoreError: (on reading) the stored state can't be decoded.
        """
        return cast("StateT | None", self._handling().get_state())

    @state.setter
    def state(self, value: StateT | None) -> None:
        self._handling().set_state(value)

    @property
    def timer(self) -> dt.datetime | None:
        """When the entity's timer is due (aware, UTC) as this handling left it so far, if it has one."""
        due = self._handling().timer
        return None if due is None else dt.datetime.fromtimestamp(due, dt.UTC)

    def wake_in(self, seconds: float | dt.timedelta) -> None:
        """
        Set the entity's timer to fire *seconds* from now (replacing the one it had).

        When it is due, `Entities.on_timer`'s handler is called (a timer of
        an entity whose handling is blocked waits too).

        Raises:
            TypeError: *seconds* is not a number or a `datetime.timedelta`.
            ValueError: *seconds* is negative, NaN or infinite.
        """
        given: object = seconds
        if isinstance(given, dt.timedelta):
            given = given.total_seconds()
        if isinstance(given, bool) or not isinstance(given, int | float):
            msg = f"wake_in() takes seconds (a number or a timedelta), got {type_name(seconds)}"
            raise TypeError(msg)
        if not math.isfinite(given) or given < 0:
            msg = f"wake_in() takes seconds >= 0, got {seconds!r}"
            raise ValueError(msg)
        self._handling().timer = time.time() + given

    def wake_at(self, when: dt.datetime) -> None:
        """
        Set the entity's timer to fire at *when*, an aware datetime (replacing the one it had).

        Raises:
            TypeError: *when* is not a `datetime.datetime`.
            ValueError: *when* is naive (no ``tzinfo``): it would mean a different
                moment on every machine.
        """
        given: object = when
        if not isinstance(given, dt.datetime):
            msg = f"wake_at() takes an aware datetime, got {type_name(when)}"
            raise TypeError(msg)
        if given.tzinfo is None or given.utcoffset() is None:
            msg = (
                f"wake_at() takes an aware datetime, got the naive {given.isoformat()}:"
                " give it a tzinfo (datetime.now(timezone.utc) + ..., or .replace(tzinfo=...))"
            )
            raise ValueError(msg)
        self._handling().timer = given.timestamp()

    def cancel_timer(self) -> None:
        """Remove the entity's timer, if it has one."""
        self._handling().timer = None

    def __repr__(self) -> str:
        handling = self._handling()
        return f"<EntityContext {handling.kind} {handling.id!r} {handling.item} step={self.step!r}>"


class _Handling:
    """One handling of one entity's item: its state as the handler changes it, and its timer."""

    __slots__ = (
        "_assigned",
        "_state",
        "encoded",
        "entities",
        "id",
        "item",
        "kind",
        "message",
        "started",
        "stored",
        "timer",
    )

    def __init__(self, entities: Entities[Any], row: EntityRow, item: EntityItem, message: object) -> None:
        self.entities, self.kind, self.id, self.item, self.message = entities, row.kind, row.id, item, message
        self.stored = row.state  # the encoded state the handling starts from
        self.timer = None if item == "timer" else row.timer  # a timer's handling consumes it
        self.started = self.timer
        self.encoded: str | None = row.state
        self._state: object = None
        self._assigned = False  # the state was read (decoded) or assigned in this attempt

    def name(self) -> str:
        return f"entity {self.kind} {self.id!r}"

    def restart(self) -> None:
        """A new attempt: the stored state again, the timer as the handling found it."""
        self._assigned = False
        self._state = None
        self.timer = self.started

    def get_state(self) -> object:
        if not self._assigned:
            self._state = None if self.stored is None else self.entities.decode_state(self.stored, self.name())
            self._assigned = True
        return self._state

    def set_state(self, value: object) -> None:
        self.entities.check_state(value, self.name())
        self._state, self._assigned = value, True

    def seal(self) -> None:
        """Check and encode the state the handling leaves (raising makes the handling fail)."""
        if not self._assigned:
            self.encoded = self.stored
            return
        state = self._state
        if state is None:
            self.encoded = None
            self.timer = None  # the entity ends: its timer with it
            return
        self.entities.check_state(state, self.name())
        try:
            self.encoded = self.entities.store.codec.encode(state)
        except CodecError as exc:
            msg = f"{self.name()}: its state can't be stored: {exc}"
            raise TypeError(msg) from exc


def _handling_of(ctx: Context[Any]) -> _Handling:
    return cast("EntityContext[Any]", ctx)._handling()  # noqa: SLF001 - this module's own class


def _seal(ctx: Context[Any]) -> None:
    """The last step of a coordinator handler: the state it leaves is checked and encoded."""
    _handling_of(ctx).seal()


class _Handler:
    """A registered handler: the coordinator its handlings run (a copy of it, made durable by the store)."""

    __slots__ = ("flow", "name")

    def __init__(self, name: str, flow: Coordinator[Any]) -> None:
        self.name, self.flow = name, flow


def _wrap(compiled: Callback) -> Callable[..., object]:
    """The job running a function handler: each attempt from the stored state; the state sealed when it returns."""
    call = compiled.call
    if compiled.is_async:

        async def job_async(ctx: Context[Any], message: object) -> object:
            handling = _handling_of(ctx)
            handling.restart()
            result = await cast("Any", call(ctx, message))
            handling.seal()
            return result

        return job_async

    def job(ctx: Context[Any], message: object) -> object:
        handling = _handling_of(ctx)
        handling.restart()
        result = call(ctx, message)
        handling.seal()
        return result

    return job


class Entities(Generic[StateT]):
    """
    A kind of durable entity: entities by id, each with a state of type ``StateT``, fed by messages.

    ``Entities[Balance]("account", store=store)`` declares the state's type
    (checked when a handler assigns ``ctx.state`` and when the handling
    commits). Register handlers with `handler`, `on_timer` and `on_boot`;
    `send` messages from any process sharing the store; `serve` handles them.
    The state and the messages are encoded with the store's codec.

    Args:
        kind: The entities' kind: a non-empty name without ``/``. Kinds share
            the store; each has its own ids.
        store: A store implementing `choreograph.typing.EntityStore` as well
            as `choreograph.typing.Store` (`SqliteStore`, `PostgresStore`, `MemoryStore`).

    Raises:
        TypeError: *kind* is not a str, *store* not such a store, or ``StateT``
            an annotation beartype can't check.
        ValueError: *kind* is empty or holds ``/``.

    .. versionadded:: 0.5.0
    """

    if not TYPE_CHECKING:

        def __class_getitem__(cls, params):
            # `Entities[Balance](...)` tells `__init__` its state type, as `Coordinator[Rec]` does.
            return subscript(super().__class_getitem__(params), InputAlias)

    def __init__(self, kind: str, *, store: Store) -> None:
        self._state_type = declared_input(self, Entities)
        given: object = kind
        if not isinstance(given, str):
            msg = f"an entity kind must be a str, got {type_name(kind)}"
            raise TypeError(msg)
        if not given.strip() or "/" in given:
            msg = f"an entity kind must be a non-empty name without '/', got {kind!r}"
            raise ValueError(msg)
        chosen: object = store
        if not isinstance(chosen, Store) or not isinstance(chosen, EntityStore):
            msg = (
                "store must implement choreograph.typing.Store and choreograph.typing.EntityStore"
                f" (SqliteStore, PostgresStore, MemoryStore), got {type_name(store)}"
            )
            raise TypeError(msg)
        self._kind = kind
        self._store: Store = chosen
        self._entity_store: EntityStore = chosen
        self._check = _state_check(self._state_type)
        self._runner = DurableRunner(chosen, None)
        self._lock = threading.Lock()
        self._handlers: dict[type, _Handler] = {}
        self._timer: _Handler | None = None
        self._boot: _Handler | None = None

    @property
    def kind(self) -> str:
        """The entities' kind."""
        return self._kind

    @property
    def store(self) -> Store:
        """The store the entities live in."""
        return self._store

    @property
    def state_type(self) -> object:
        """The ``StateT`` of ``Entities[StateT]``; ``object`` when not declared."""
        return self._state_type

    def __repr__(self) -> str:
        return f"Entities[{hint_name(self._state_type)}]({self._kind!r}, store={self._store!r})"

    # -- the state: checked and encoded ---------------------------------------------

    def check_state(self, value: object, name: str) -> None:
        """Raise `TypeError` unless *value* (not None) is of the declared state type; *name* names the entity."""
        check = self._check
        if value is not None and check is not None and not check(value):
            msg = f"{name}: its state must be {hint_name(self._state_type)} or None, got {type_name(value)}"
            raise TypeError(msg)

    def decode_state(self, text: str, name: str) -> object:
        """The state stored as *text*; `StoreError` naming the entity when it can't be decoded."""
        try:
            return self._store.codec.decode(text)
        except CodecError as exc:
            raise StoreError(self._store.location, f"cannot decode the state of {name}: {exc}") from exc

    # -- registering handlers --------------------------------------------------------

    @overload
    def handler(
        self, message_type: type, *, retry: RetryPolicy | None = ..., timeout: float | None = ...
    ) -> Callable[[F], F]: ...
    @overload
    def handler(self, message_type: type, coordinator: Coordinator[Any]) -> Coordinator[Any]: ...
    def handler(
        self,
        message_type: type,
        coordinator: Coordinator[Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F] | Coordinator[Any]:
        """
        Register the handler of messages of *message_type* (and of its subclasses without their own).

        As a decorator, of a function taking any callback form: the context
        (an `EntityContext`), the message, both or neither, plain or ``async
        def``. It runs as the one step of a durable run, named after the
        function, with *retry* and *timeout* as a `Step`'s: every attempt
        starts from the stored state. Or give a *coordinator*: its steps run
        as the handling, the message as its input, and its callbacks' context
        is the `EntityContext` (a failed step retried by its policy sees the
        state as the steps before it left it). The coordinator is copied as
        it is now, and gets a last step, ``"entity state"``, that checks and
        stores the state.

        Returns:
            The decorator; with *coordinator*, *coordinator*.

        Raises:
            TypeError: *message_type* is not a class; it has a handler already;
                *coordinator* is not a `Coordinator`, its input type does not
                accept *message_type*, or it came with *retry* or *timeout*.
            StepDefinitionError: The function can't be a callback (see `Step`).
        """
        kind: object = message_type  # checked at run time: callers may not be typed
        if not isinstance(kind, type):
            msg = f"handler() takes the class of the messages it handles, got {type_name(kind)}"
            raise TypeError(msg)
        if coordinator is None:

            def register(fn: F) -> F:
                self._add(message_type, self._function(fn, retry, timeout))
                return fn

            return register
        if retry is not None or timeout is not None:
            msg = "retry= and timeout= are for a function handler: a coordinator's steps have their own"
            raise TypeError(msg)
        given: object = coordinator
        if not isinstance(given, Coordinator):
            msg = f"handler(message_type, coordinator) takes a Coordinator, got {type_name(coordinator)}"
            raise TypeError(msg)
        if not accepts(given.input_type, message_type):
            msg = (
                f"the coordinator's input is {hint_name(given.input_type)}:"
                f" it can't handle {hint_name(message_type)} messages"
            )
            raise TypeError(msg)
        self._add(message_type, self._coordinator(given))
        return given

    def _add(self, message_type: type, made: _Handler) -> None:
        with self._lock:
            if message_type in self._handlers:
                msg = f"entities of kind {self._kind!r} have a handler of {hint_name(message_type)} messages already"
                raise TypeError(msg)
            self._handlers[message_type] = made

    def _function(self, fn: object, retry: RetryPolicy | None, timeout: float | None) -> _Handler:
        """A function handler's coordinator: one step, its job the function wrapped."""
        name = str(getattr(fn, "__name__", "") or "handler")
        compiled = compile_callback(name, "job", fn, retry=None, timeout=None)
        flow: Coordinator[Any] = Coordinator(store=self._store)
        flow.add_step(Step(name, _wrap(compiled), retry=retry, timeout=timeout))
        return _Handler(name, flow)

    def _coordinator(self, coordinator: Coordinator[Any]) -> _Handler:
        flow = coordinator.with_store(self._store)
        flow.add_step(Step(_SEAL_STEP, _seal))
        first = flow.steps[0].name if flow.steps else _SEAL_STEP
        return _Handler(first, flow)

    def _special(
        self, fn: Callable[..., object] | None, retry: RetryPolicy | None, timeout: float | None, what: str
    ) -> Any:
        def register(given: Callable[..., object]) -> Callable[..., object]:
            made = self._function(given, retry, timeout)
            with self._lock:
                if getattr(self, what) is not None:
                    msg = f"entities of kind {self._kind!r} have an {what.strip('_')} handler already"
                    raise TypeError(msg)
                setattr(self, what, made)
            return given

        return register if fn is None else register(fn)

    @overload
    def on_timer(self, fn: F, /) -> F: ...
    @overload
    def on_timer(
        self, fn: None = None, /, *, retry: RetryPolicy | None = ..., timeout: float | None = ...
    ) -> Callable[[F], F]: ...
    def on_timer(
        self,
        fn: Callable[..., object] | None = None,
        /,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """
        Register the handler called when an entity's timer is due (``@entities.on_timer``, or with options).

        It takes the callback forms of `handler` (its message is ``None``).
        The timer is consumed by the handling, unless the handler sets it
        again; while the entity's messages wait, the timer is handled in time
        order with them (before the first message sent after it was due).

        Raises:
            TypeError: A timer handler is registered already.
            StepDefinitionError: The function can't be a callback.
        """
        return self._special(fn, retry, timeout, "_timer")

    @overload
    def on_boot(self, fn: F, /) -> F: ...
    @overload
    def on_boot(
        self, fn: None = None, /, *, retry: RetryPolicy | None = ..., timeout: float | None = ...
    ) -> Callable[[F], F]: ...
    def on_boot(
        self,
        fn: Callable[..., object] | None = None,
        /,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Any:
        """
        Register the handler run for every entity with a state when `serve` starts, before its messages.

        It takes the callback forms of `handler` (its message is ``None``).
        Every ``serve`` start of a process that registered it makes each live
        entity's boot due once (a second server starting boots them again).

        Raises:
            TypeError: A boot handler is registered already.
            StepDefinitionError: The function can't be a callback.
        """
        return self._special(fn, retry, timeout, "_boot")

    # -- sending and reading ----------------------------------------------------------

    def _id(self, id: str | int) -> str:  # noqa: A002
        given: object = id
        if isinstance(given, bool) or not isinstance(given, str | int):
            msg = f"an entity id must be a str or an int, got {type_name(id)}"
            raise TypeError(msg)
        text = str(given)
        if not text:
            msg = "an entity id must not be empty"
            raise ValueError(msg)
        return text

    def send(self, id: str | int, message: object) -> None:  # noqa: A002
        """
        Store *message* for entity *id*: durable when this returns, from any process sharing the store.

        Messages to one id are handled in the order they were stored (for one
        sender, the order it sent them). An entity that does not exist yet
        is made by its first message.

        Raises:
            TypeError: *id* is not a str or an int; this object has handlers and
                none for the message's type; the codec can't encode *message*
                (nothing is stored then).
            ValueError: *id* is empty.
            StoreError: The store can't be written.
        """
        name = self._id(id)
        if self._handlers and self._dispatch(type(message)) is None:
            msg = (
                f"entities of kind {self._kind!r} have no handler of {type_name(message)} messages"
                f" (they handle {self._handled()})"
            )
            raise TypeError(msg)
        try:
            encoded = self._store.codec.encode(message)
        except CodecError as exc:
            msg = f"the message to entity {self._kind} {name!r} can't be stored: {exc}"
            raise TypeError(msg) from exc
        self._entity_store.entity_send(self._kind, name, encoded)

    def state(self, id: str | int) -> StateT | None:  # noqa: A002
        """
        The entity's committed state; ``None`` when it has none (never had one, or ended).

        Raises:
            StoreError: The stored state can't be decoded (its class's module not imported?).
        """
        name = self._id(id)
        info = self._entity_store.entity_info(self._kind, name)
        if info is None or info.state is None:
            return None
        return cast("StateT", self.decode_state(info.state, f"entity {self._kind} {name!r}"))

    def info(self, id: str | int) -> EntityInfo | None:  # noqa: A002
        """What the store knows of entity *id* (its encoded state, pending messages, failure...), or ``None``."""
        return self._entity_store.entity_info(self._kind, self._id(id))

    def ids(self) -> list[str]:
        """The ids of the entities of this kind with a state, messages, a timer or a failure, sorted."""
        return self._entity_store.entity_ids(self._kind)

    def retry(self, id: str | int) -> bool:  # noqa: A002
        """
        Unblock entity *id*: its failed message (or timer, or boot) is handled again by the next `serve`.

        Returns:
            Whether it was blocked.
        """
        return self._entity_store.entity_retry(self._kind, self._id(id))

    def drop(self, id: str | int) -> bool:  # noqa: A002
        """
        Discard entity *id*'s failed message (or timer, or boot) and unblock it: the next messages go on.

        The failed durable run stays in the store's history.

        Returns:
            Whether it was blocked.
        """
        return self._entity_store.entity_drop(self._kind, self._id(id))

    def _dispatch(self, kind: type) -> _Handler | None:
        handlers = self._handlers
        found = handlers.get(kind)
        if found is None:
            found = next((handlers[base] for base in kind.__mro__[1:] if base in handlers), None)
        return found

    def _handled(self) -> str:
        return ", ".join(sorted(hint_name(kind) for kind in self._handlers)) or "none"

    # -- serving ------------------------------------------------------------------------

    def serve(self, workers: int = 4, stop: threading.Event | None = None, *, until_idle: bool = False) -> None:
        """
        Handle the entities' messages, timers and boots, *workers* entities at once, until stopped.

        At the start, the entities blocked by a failure are unblocked (their
        failed item is tried again) and, with an `on_boot` handler, every
        entity with a state gets its boot. Then each worker thread claims a
        due entity (a lease, as a durable run's: no other server handles it
        meanwhile; a dead server's claims are taken over after their lease,
        or at once on this machine) and handles its items one at a time until
        none is due or it handled a slice of them, then gives it up.

        It returns when *stop* is set, at SIGINT or SIGTERM (in the main
        thread), or, with *until_idle*, once nothing is due (a timer due later
        is left for the next ``serve``). Stopping takes nothing new: the
        handlings in flight finish and commit first.

        Raises:
            TypeError: *workers* is not an int, or *stop* not an event.
            ValueError: *workers* < 1.
            StoreError: The store failed other than for one entity.
        """
        count: object = workers
        if isinstance(count, bool) or not isinstance(count, int):
            msg = f"workers must be an int >= 1, got {type_name(workers)}"
            raise TypeError(msg)
        if count < 1:
            msg = f"workers must be an int >= 1, got {workers!r}"
            raise ValueError(msg)
        if stop is not None and not callable(getattr(stop, "is_set", None)):
            msg = f"stop must be a threading.Event or None, got {type_name(stop)}"
            raise TypeError(msg)
        _Server(self, count, stop, until_idle=until_idle).run()

    def handle(self, row: EntityRow, item: EntityItem, *, release: bool) -> EntityRow | None:
        """
        Handle *row*'s due *item* as a durable run, then commit it or mark it failed.

        The internal interface of `_Server`: the claim of *row* is held.

        Returns:
            The entity's next row while its claim is kept, else ``None``.
        """
        store = self._entity_store
        kind, name = row.kind, row.id
        seq = None if item != "message" or row.head is None else row.head.seq
        encoded = "null" if seq is None or row.head is None else row.head.message
        key = f"{kind}/{name}/{seq}" if seq is not None else f"{kind}/{name}/{item}-{row.version}"
        if item == "boot" and self._boot is None:  # a server without on_boot: the boot is done
            return store.entity_commit(kind, name, EntityCommit(item, None, row.state, row.timer, release))
        message, handler, problem = self._choose(row, item, encoded)
        interrupted = problem is not None and row.starts > self._interruptions() + 1
        handling = _Handling(self, row, item, message)
        result = self._run(handler, handling, message, key, encoded)
        if result is None:  # another holder runs the key: give the entity up for now
            store.entity_release(kind, name, started=False)
            return None
        if result.ok and problem is None:
            return store.entity_commit(kind, name, EntityCommit(item, seq, handling.encoded, handling.timer, release))
        store.entity_fail(kind, name, key, item, interrupted=interrupted)
        return None

    def _interruptions(self) -> int:
        limit: object = getattr(self._store, "max_interruptions", 3)
        return limit if isinstance(limit, int) else 3

    def _choose(self, row: EntityRow, item: EntityItem, encoded: str) -> tuple[object, _Handler, Exception | None]:
        """The message, its handler and, when it can't be handled, why (the handler then fails with it)."""
        label = f"entity {row.kind} {row.id!r}"
        limit = self._interruptions()
        message: object = None
        handler: _Handler | None = None
        problem: Exception | None = None
        if row.starts > limit + 1:
            problem = RuntimeError(
                f"{label}: handling this {item} was interrupted {row.starts - 1} times (a crash each time?);"
                " entities.retry(id) tries it again, entities.drop(id) discards it"
            )
        elif item == "message":
            try:
                message = self._store.codec.decode(encoded)
            except CodecError as exc:
                problem = TypeError(f"{label}: its message can't be decoded: {exc}")
            else:
                handler = self._dispatch(type(message))
                if handler is None:
                    problem = TypeError(
                        f"entities of kind {row.kind!r} have no handler of {type_name(message)} messages"
                        f" (they handle {self._handled()})"
                    )
        else:
            handler = self._timer if item == "timer" else self._boot
            if handler is None:
                problem = TypeError(f"{label}: its timer is due, and its kind has no on_timer handler")
        if problem is not None or handler is None:
            return message, _refusal(problem or RuntimeError(label), self._store), problem
        return message, handler, None

    def _run(
        self, handler: _Handler, handling: _Handling, message: object, key: str, encoded: str
    ) -> RunResult[Any] | None:
        flow = handler.flow
        plan = flow._plan  # noqa: SLF001 - the package's coordinator, run here with an entity's context
        emit = flow._emit()  # noqa: SLF001 - as above
        prepared = self._runner.prepare(plan, message, key, encoded, None, None, emit, fresh=True)
        if isinstance(prepared, str):
            return None
        if isinstance(prepared, RunResult):  # pragma: no cover - a fresh begin always runs
            return prepared
        run: RunState = prepared
        run.context_class = EntityContext
        run.entity = handling  # type: ignore[attr-defined]  # read by EntityContext
        return run_sync(flow._bind(run))  # noqa: SLF001 - as above


def _refusal(problem: Exception, store: Store) -> _Handler:
    """A handler that fails with *problem*: the item's durable run shows why it was not handled."""

    def refuse() -> None:
        raise problem

    flow: Coordinator[Any] = Coordinator([Step("refused", refuse)], store=store)
    return _Handler("refused", flow)


def _state_check(hint: object) -> Callable[[object], bool] | None:
    """How a state is checked against the declared type: ``None`` when anything goes."""
    if not is_known(hint):
        return None
    if isinstance(hint, type) and not getattr(hint, "_is_protocol", False):
        return functools.partial(_is_instance, hint)
    any_hint: Any = hint
    try:
        is_bearable(None, any_hint)
    except BeartypeException as exc:
        msg = f"beartype can't check the state type {hint_name(hint)}: {exc}"
        raise TypeError(msg) from exc
    return functools.partial(_bearable, any_hint)


def _is_instance(cls: type, value: object) -> bool:
    return isinstance(value, cls)


def _bearable(hint: Any, value: object) -> bool:
    return is_bearable(value, hint)


class _Server:
    """One `Entities.serve` call: the claiming loop and its worker threads."""

    def __init__(
        self, entities: Entities[Any], workers: int, stop: threading.Event | None, *, until_idle: bool
    ) -> None:
        self.entities, self.workers, self.stop, self.until_idle = entities, workers, stop, until_idle
        self.store = entities._entity_store  # noqa: SLF001 - its own module's class
        self.kind = entities.kind
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.in_flight: dict[str, Future[None]] = {}
        self.fatal: BaseException | None = None

    def stopped(self) -> bool:
        return self.stopping.is_set() or (self.stop is not None and self.stop.is_set())

    def run(self) -> None:
        entities = self.entities
        self.store.entity_start(self.kind, boot=entities._boot is not None)  # noqa: SLF001 - its own module's class
        lease = entities.store.lease
        with self._signals(), ThreadPoolExecutor(self.workers, thread_name_prefix=f"entities-{self.kind}") as pool:
            reaped = renewed = time.monotonic()
            reap = True
            try:
                while not self.stopped():
                    self.wake.clear()
                    with self.lock:
                        busy = len(self.in_flight)  # before claiming: with none busy, no claim of ours hides work
                    free = self.workers - busy
                    claimed = self.store.entity_claim(self.kind, free, reap=reap) if free else []
                    now = time.monotonic()
                    reap = now - reaped >= _REAP
                    if reap:
                        reaped = now
                    for row in claimed:
                        with self.lock:
                            future = pool.submit(self._work, row)
                            self.in_flight[row.id] = future
                        future.add_done_callback(functools.partial(self._done, row.id))
                    if now - renewed >= lease / 3 and self.in_flight:
                        renewed = now
                        with self.lock:
                            held = list(self.in_flight)
                        for lost in self.store.entity_renew(self.kind, held):
                            _logger.warning(
                                "entity {} {!r}: its claim was taken over by another server", self.kind, lost
                            )
                    if self.until_idle and not claimed and not busy:
                        break
                    if not claimed or busy + len(claimed) >= self.workers:
                        self.wake.wait(_POLL)
            finally:
                self.stopping.set()
        if self.fatal is not None:
            raise self.fatal

    def _done(self, name: str, future: Future[None]) -> None:
        with self.lock:
            if self.in_flight.get(name) is future:  # not a later claim of the same id's
                del self.in_flight[name]
        self.wake.set()

    def _work(self, first: EntityRow) -> None:
        entities, store = self.entities, self.store
        row: EntityRow | None = first
        handled = 0
        deadline = time.monotonic() + _SLICE_SECONDS
        try:
            while row is not None:
                item = next_item(row, time.time())
                if item is None or self.stopped():
                    store.entity_release(self.kind, row.id, started=False)
                    return
                handled += 1
                last = handled >= _SLICE_ITEMS or time.monotonic() >= deadline
                row = entities.handle(row, item, release=last or self.stopped())
        except StoreError as exc:  # this entity's: its claim is taken over after its lease
            _logger.warning("entity {} {!r}: {}", self.kind, first.id, exc)
        except BaseException as exc:
            self.fatal = self.fatal or exc
            self.stopping.set()
            raise

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM stop serving, as *stop* does (in the main thread only: signals go there)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: object) -> None:
            del signum, frame
            self.stopping.set()
            self.wake.set()

        previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


__all__ = ["Entities", "EntityContext"]
