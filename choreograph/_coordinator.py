"""
The Coordinator: a facade that registers steps and runs them, composing the core, a store and an executor.

- the steps become a plan (`choreograph._core.plan`), rebuilt when one is added;
- a run is set up and driven by `choreograph._core.runs`;
- with a store, a `choreograph.durable.DurableRunner` takes the key's lease
  and sets the run up from the store first;
- `run_many` hands the runs to an executor (`choreograph.executors`);
- logging listens to the run's events (`choreograph._logging`).
"""

from __future__ import annotations

import copy
import os
import pickle
import sys
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, overload

from loguru import logger as _loguru
from typing_extensions import TypeVar

from . import _logging, _progress
from ._core.bag import DataBag
from ._core.callbacks import Callback, compile_callback, type_name, validate_timeout
from ._core.drivers import drive, drive_async
from ._core.generics import InputAlias, declared_input, subscript
from ._core.plan import GroupNode, Plan, Sequence, StepNode
from ._core.result import Finished, RunResult, result_of
from ._core.retry import RetryPolicy, as_policy
from ._core.runs import new_run, run_async, run_plain, run_sync
from ._core.state import RunState
from ._core.step import Parallel, Step
from ._errors import (
    InputError,
    JobFailed,
    Phase,
    PrecheckFailed,
    StepDefinitionError,
    StepError,
    UnstorableOutput,
)
from ._listeners import fan_out, outcome_listener
from .durable.codec import StoredError
from .durable.memory import MemoryStore
from .durable.postgres import PostgresStore
from .durable.protocol import QueueStore, Store
from .durable.queues import check_limit, check_queue
from .durable.recorder import DurableRecorder
from .durable.runner import DurableRunner
from .durable.serve import Served, run_handler
from .durable.serve import serve as serve_queue
from .durable.sqlite import SqliteStore
from .events import CallbackFinished, Emitted, RunEvent, RunFinished, RunStarted
from .executors._resources import Factory, Resources, check_factories
from .executors.processes import ProcessExecutor, check_processes
from .executors.protocol import Executor
from .executors.tasks import AsyncExecutor, check_tasks, map_async
from .executors.threads import ThreadExecutor, check_workers

InputT = TypeVar("InputT", default=object)  # `Coordinator()` takes any input
F = TypeVar("F", bound=Callable[..., object])
OutT = TypeVar("OutT")


def _snapshot(values: object) -> Mapping[str, object]:
    if not isinstance(values, Mapping):
        msg = f"values must be a mapping or None, got {type_name(values)}"
        raise TypeError(msg)
    return MappingProxyType(dict(values))


class Coordinator(Generic[InputT]):
    """
    An ordered list of steps, run once per input.

    One coordinator may run from many threads and tasks at once: each run has
    its own DataBag, error stack and context. Adding steps while runs are going
    on is safe; runs already started keep the steps they started with.

    Args:
        steps: Steps to add, in order (see `add_step`).
        store: Makes runs durable (a `choreograph.typing.Store`: `SqliteStore`,
            `PostgresStore`, `MemoryStore`): each callback's outcome is recorded, and running a
            key again resumes it.
        key: Derives a durable run's idempotency key from its input, for
            `run` without ``key=`` and for `run_many`. It returns a ``str``
            or an ``int``.
        strict_prechecks: A precheck error that is neither `Skip` nor
            `ExecutionCanceled` stops the run with `PrecheckFailed`, instead
            of skipping the job.
        listeners: Callables taking each event of every run (see
            `choreograph.events` and `listen`).
        on_success: Called with the result of every run that finished ok.
        on_failure: Called with the result of every run that finished with a
            fatal error (after its compensations).
        resources: Factories of what callbacks share within a worker, by
            name: ``ctx.resources["db"]`` is what ``factory()`` returned (for a
            context manager, what its ``__enter__`` returned), made on first
            use by each worker (a thread of `run_many`, its event loop or
            worker process, the thread calling `run`) and closed (the context
            manager exited) when the worker ends, or by `close`.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.4.0 *resources*.
    """

    if not TYPE_CHECKING:

        def __class_getitem__(cls, params):
            # `Coordinator[Rec](steps)` tells `__init__` its input type: see `choreograph._core.generics`.
            return subscript(super().__class_getitem__(params), InputAlias)

    def __init__(
        self,
        steps: Iterable[Step | Parallel] = (),
        *,
        store: Store | None = None,
        key: Callable[[InputT], str | int] | None = None,
        strict_prechecks: bool = False,
        listeners: Iterable[Callable[[RunEvent], object]] = (),
        on_success: Callable[[RunResult[InputT]], object] | None = None,
        on_failure: Callable[[RunResult[InputT]], object] | None = None,
        resources: Mapping[str, Callable[[], object]] | None = None,
    ) -> None:
        strict: object = strict_prechecks  # checked at run time: callers may not be typed
        if not isinstance(strict, bool):
            msg = f"strict_prechecks must be a bool, got {type_name(strict_prechecks)}"
            raise TypeError(msg)
        given: object = store
        if given is not None and not isinstance(given, Store):
            msg = (
                "store must implement choreograph.typing.Store (SqliteStore, PostgresStore, MemoryStore) or be None,"
                f" got {type_name(store)}"
            )
            raise TypeError(msg)
        derive: object = key
        if derive is not None and not callable(derive):
            msg = f"key must be a callable deriving a key from an input, got {type_name(derive)}"
            raise TypeError(msg)
        self._lock = threading.Lock()
        #: `Rec` of `Coordinator[Rec]()` (or of a subclass's base), which `Context[X]` parameters must accept.
        self._input_type = declared_input(self, Coordinator)
        self._plan = Plan.empty(strict_prechecks=strict_prechecks)
        self._store = store
        self._key = key
        self._durable = None if store is None else DurableRunner(store, key)
        options: tuple[tuple[str, object], ...] = (("on_success", on_success), ("on_failure", on_failure))
        for name, callback in options:  # checked at run time: callers may not be typed
            if callback is not None and not callable(callback):
                msg = f"{name} must be a callable taking a RunResult, got {type_name(callback)}"
                raise TypeError(msg)
        factories = None if resources is None else check_factories(resources)
        self._resources = Resources(factories) if factories else None
        outcome = outcome_listener(on_success, on_failure)
        self._rebuild_emit(() if outcome is None else ((object(), outcome),))
        for listener in listeners:
            self.listen(listener)
        for step in steps:
            self.add_step(step)

    @property
    def store(self) -> Store | None:
        """
        The store that makes runs durable, if any.

        .. versionadded:: 0.1.0
        """
        return self._store

    @property
    def key(self) -> Callable[[InputT], str | int] | None:
        """
        The function deriving a durable run's key from its input (``Coordinator(key=...)``), if any.

        .. versionadded:: 0.2.0
        """
        return self._key

    @property
    def input_type(self) -> object:
        """
        The ``Rec`` of ``Coordinator[Rec]`` (or of a subclass of ``Coordinator[Rec]``); ``object`` when not declared.

        .. versionadded:: 0.2.0
        """
        return self._input_type

    def with_store(self, store: Store, *, key: Callable[[InputT], str | int] | None = None) -> Coordinator[InputT]:
        """
        Return a coordinator with these steps, listeners and options, made durable by *store*.

        This coordinator is left as it is. Steps added to either afterwards are
        added to that one only.

        Args:
            store: The store of the new coordinator's runs.
            key: Derives a run's key from its input (default: this coordinator's ``key``).

        Raises:
            TypeError: *store* does not implement `choreograph.typing.Store`.

        .. versionadded:: 0.2.0
        """
        given: object = store
        if not isinstance(given, Store):
            msg = (
                "store must implement choreograph.typing.Store (SqliteStore, PostgresStore, MemoryStore),"
                f" got {type_name(store)}"
            )
            raise TypeError(msg)
        made = copy.copy(self)
        made._lock = threading.Lock()  # noqa: SLF001 - its own class
        made._store, made._key = store, key if key is not None else self._key  # noqa: SLF001 - its own class
        made._durable = DurableRunner(store, made._key)  # noqa: SLF001 - its own class
        return made

    @property
    def steps(self) -> tuple[Step, ...]:
        """
        Every step, depth first, in declaration order (the steps of a `Parallel` included).

        .. versionadded:: 0.1.0

        .. versionchanged:: 0.3.0 The steps of groups, depth first.
        """
        return tuple(node.step for node in self._plan.steps)

    @property
    def flow(self) -> tuple[Step | Parallel, ...]:
        """
        The top-level nodes, in run order: each a `Step` or a `Parallel`.

        .. versionadded:: 0.3.0
        """
        return tuple(node.step if isinstance(node, StepNode) else node.group for node in self._plan.root.children)

    # -- listeners ----------------------------------------------------------

    def listen(self, listener: Callable[[RunEvent], object]) -> Callable[[], None]:
        """
        Send every event of the runs that start from now on to *listener*.

        A listener is called synchronously, in the thread running the run;
        one run's events arrive in order. One that raises is reported with a
        `ListenerWarning` and never changes the run.

        Returns:
            A function that unsubscribes *listener* (calling it again does nothing).

        Raises:
            TypeError: *listener* is not callable.

        .. versionadded:: 0.2.0
        """
        given: object = listener  # checked at run time: callers may not be typed
        if not callable(given):
            msg = f"a listener must be a callable taking an event, got {type_name(listener)}"
            raise TypeError(msg)
        marker = object()  # this subscription: the same listener twice is unsubscribed once per listen()
        with self._lock:
            self._rebuild_emit((*self._subscriptions, (marker, listener)))

        def unsubscribe() -> None:
            with self._lock:
                self._rebuild_emit(tuple(s for s in self._subscriptions if s[0] is not marker))

        return unsubscribe

    def _rebuild_emit(self, subscriptions: tuple[tuple[object, Callable[[RunEvent], object]], ...]) -> None:
        """Make the callables a run sends its events to: without logging, and with it."""
        self._subscriptions = subscriptions
        listeners = [listener for _, listener in subscriptions]
        self._emit_quiet = fan_out(listeners)
        self._emit_logged = fan_out([_logging.log, *listeners])
        # `run`'s fast case: nobody listens, and no resources (a run of those is given its worker's).
        self._plain = self._emit_quiet is None and self._resources is None

    def _emit(self) -> Callable[[RunEvent], None] | None:
        """Where a run starting now sends its events, if anywhere."""
        return self._emit_logged if _logging.is_enabled() else self._emit_quiet

    # -- registering steps ----------------------------------------------------

    @overload
    def add_step(self, step: Step[OutT]) -> Step[OutT]: ...
    @overload
    def add_step(self, step: Parallel) -> Parallel: ...
    def add_step(self, step: Step[OutT] | Parallel) -> Step[OutT] | Parallel:
        """
        Validate *step* (a `Step` or a `Parallel` group), inspect its callbacks and append it to the run order.

        Args:
            step: Its name must be unique here among steps and groups,
                ignoring case; so must the names of a group's steps and groups.

        Returns:
            *step*, unchanged, typed with its job's output: a handle for
            `DataBag.job`.

        Raises:
            StepDefinitionError: The name is empty or taken, an option is
                wrong, or a callback can't be used (the message names the
                step, the callback and the problem). With
                ``Coordinator[Rec]``, a ``Context[X]`` parameter whose ``X``
                does not accept a ``Rec`` is such a problem. For a group:
                a branch that is empty or holds something else than steps
                and groups, or a bad ``max_workers`` (``callback`` is
                ``"group"``).

        .. versionadded:: 0.1.0

        .. versionchanged:: 0.3.0 A `Parallel` group.
        """
        names: dict[str, tuple[str, str]] = {}
        node = self._group(step, names) if isinstance(step, Parallel) else self._node(step, names)
        with self._lock:
            for folded, (kind, name) in names.items():
                taken = self._plan.taken.get(folded)
                if taken is not None:
                    raise StepDefinitionError(name, kind, self._taken(taken))
            self._plan = self._plan.add(node)
        return step

    def _taken(self, name: str) -> str:
        what = "step" if name.casefold() in self._plan.names else "group"
        return f"the name is already taken by {what} {name!r} (names ignore case)"

    @staticmethod
    def _claim(name: str, kind: str, names: dict[str, tuple[str, str]]) -> None:
        """Claim *name* for a *kind* (step or group) among the names of what is being added."""
        taken = names.get(name.casefold())
        if taken is not None:
            problem = f"the name is already taken by {taken[0]} {taken[1]!r} in the same group (names ignore case)"
            raise StepDefinitionError(name, kind, problem)
        names[name.casefold()] = (kind, name)

    def _group(self, group: Parallel, names: dict[str, tuple[str, str]]) -> GroupNode:
        """Inspect a group and everything in it."""
        name: object = group.name
        if not isinstance(name, str):
            raise StepDefinitionError(repr(name), "group", f"the name must be a str, got {type_name(name)}")
        if not name.strip():
            raise StepDefinitionError(name, "group", "the name must not be empty")
        self._claim(name, "group", names)
        workers: object = group.max_workers
        if workers is not None and (type(workers) is not int or workers < 1):
            raise StepDefinitionError(name, "group", f"max_workers must be None or an int >= 1, got {workers!r}")
        if not group.branches:
            raise StepDefinitionError(name, "group", "a group needs at least one branch")
        branches: list[Sequence] = []
        for index, branch in enumerate(group.branches):
            if not branch:
                raise StepDefinitionError(name, "group", f"branch {index} is empty")
            children: list[StepNode | GroupNode] = []
            for item in branch:
                given: object = item  # checked at run time: callers may not be typed
                if isinstance(given, Parallel):
                    children.append(self._group(given, names))
                elif isinstance(given, Step):
                    children.append(self._node(given, names))
                else:
                    problem = (
                        f"branch {index} holds a {type_name(item)}; a branch is a Step, a Parallel or a list of them"
                    )
                    raise StepDefinitionError(name, "group", problem)
            branches.append(Sequence(tuple(children)))
        return GroupNode(group, tuple(branches))

    def _node(self, step: object, names: dict[str, tuple[str, str]]) -> StepNode:
        """Inspect a step's options and callbacks."""
        if not isinstance(step, Step):
            raise StepDefinitionError("", "step", f"expected a Step or a Parallel, got {type_name(step)}")
        name = step.name
        if not isinstance(name, str):
            raise StepDefinitionError(repr(name), "step", f"the name must be a str, got {type_name(name)}")
        if not name.strip():
            raise StepDefinitionError(name, "step", "the name must not be empty")
        if step.job is None:
            raise StepDefinitionError(name, "job", "a job is required")
        try:
            timeout = validate_timeout(step.timeout, "timeout")
            retry = as_policy(step.retry)
        except (TypeError, ValueError) as exc:
            raise StepDefinitionError(name, "step", str(exc)) from exc
        if timeout == 0:
            raise StepDefinitionError(name, "step", "timeout must be > 0")
        flag: object = step.compensate_failed
        if not isinstance(flag, bool):
            raise StepDefinitionError(name, "step", f"compensate_failed must be a bool, got {type_name(flag)}")
        self._claim(name, "step", names)
        return StepNode(
            step,
            self._compile(name, "precheck", step.precheck, retry, timeout),
            self._compile(name, "job", step.job, retry, timeout),  # type: ignore[arg-type]  # not None
            self._compile(name, "compensate", step.compensate, retry, timeout),
        )

    def _compile(
        self, name: str, role: str, fn: Callable[..., object] | None, retry: RetryPolicy | None, timeout: float | None
    ) -> Callback | None:
        if fn is None:
            return None
        return compile_callback(name, role, fn, retry=retry, timeout=timeout, input_type=self._input_type)  # type: ignore[arg-type]

    def step(
        self,
        name: str,
        *,
        precheck: Callable[..., object] | None = None,
        retry: RetryPolicy | None = None,
        compensate: Callable[..., object] | None = None,
        compensate_failed: bool = False,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """
        Register the decorated function as the job of a new step.

        The options are those of `Step`. The function is returned unchanged.

        Raises:
            StepDefinitionError: As `add_step`, when decorating.

        .. versionadded:: 0.1.0
        """

        def register(job: F) -> F:
            step = Step(
                name,
                job,
                precheck,
                retry=retry,
                compensate=compensate,
                compensate_failed=compensate_failed,
                timeout=timeout,
            )
            self.add_step(step)
            return job

        return register

    # -- running ------------------------------------------------------------

    def _new_run(self, input: object, values: Mapping[str, object] | None, timeout: float | None) -> RunState:  # noqa: A002
        """Check a run's options and set it up."""
        timeout = validate_timeout(timeout, "timeout")
        shared = None if values is None else _snapshot(values)
        return self._bind(new_run(self._plan, input, shared, timeout, self._emit()))

    def _bind(self, run: RunState) -> RunState:
        """Give *run* the resources of the worker in this thread, if the coordinator has resources."""
        if self._resources is not None:
            run.resources = self._resources.here()
        return run

    def _acquire(
        self,
        input: object,  # noqa: A002
        key: str | int | None,
        values: Mapping[str, object] | None,
        timeout: float | None,
        *,
        fresh: bool,
    ) -> RunState | RunResult[Any] | Generator[object, object, RunState | RunResult[Any]]:
        """
        A durable run's lease, its options checked before the key is taken.

        Returns:
            The run or the result (see `DurableRunner.prepare`); or, while
            another holder runs the key, the generator that waits for it, to drive.
        """
        durable = self._durable
        assert durable is not None  # noqa: S101 - only called for durable coordinators
        name = durable.key(input, key)
        timeout = validate_timeout(timeout, "timeout")
        shared = None if values is None else _snapshot(values)
        return self._lease(durable, input, name, durable.encode(name, input), shared, timeout, fresh=fresh)

    def _lease(
        self,
        durable: DurableRunner,
        input: object,  # noqa: A002
        name: str,
        encoded: str,
        values: Mapping[str, object] | None,
        timeout: float | None,
        *,
        fresh: bool,
    ) -> RunState | RunResult[Any] | Generator[object, object, RunState | RunResult[Any]]:
        emit = self._emit()
        prepared = durable.prepare(self._plan, input, name, encoded, values, timeout, emit, fresh=fresh)
        if isinstance(prepared, str):  # another holder runs the key: wait for it
            return durable.acquire(self._plan, input, name, encoded, values, timeout, emit, fresh=fresh)
        return prepared

    def _acquire_record(
        self,
        input: object,  # noqa: A002
        position: int,
        values: Mapping[str, object] | None,
        timeout: float | None,
        *,
        fresh: bool,
    ) -> RunState | RunResult[Any] | Generator[object, object, RunState | RunResult[Any]]:
        """As `_acquire`, for a record of `run_many`: the options are checked; a bad record gets its result."""
        durable = self._durable
        assert durable is not None  # noqa: S101 - only called for durable coordinators
        named = _named(durable, input, position)
        if isinstance(named, RunResult):
            return named
        return self._lease(durable, input, *named, values, timeout, fresh=fresh)

    @staticmethod
    def _not_durable(key: str | int | None, *, fresh: bool) -> None:
        if key is not None or fresh:
            msg = "key= and fresh= are for durable runs: create the coordinator with store=..."
            raise TypeError(msg)

    @overload
    def run(
        self,
        input: InputT,
        *,
        values: Mapping[str, object] | None = ...,
        timeout: float | None = ...,
        key: str | int | None = ...,
        fresh: bool = ...,
    ) -> RunResult[InputT]: ...
    @overload
    def run(
        self,
        *,
        values: Mapping[str, object] | None = ...,
        timeout: float | None = ...,
        key: str | int | None = ...,
        fresh: bool = ...,
    ) -> RunResult[InputT | None]: ...
    def run(
        self,
        input: InputT | None = None,  # noqa: A002 - the contract's name
        *,
        values: Mapping[str, object] | None = None,
        timeout: float | None = None,
        key: str | int | None = None,
        fresh: bool = False,
    ) -> RunResult[InputT | None]:
        """
        Run the steps once, for *input*, and return what happened.

        Works whatever the callbacks are: ``async def`` callbacks are driven on
        an event loop of the run's own (and, as in `run_async`, cancelled when
        *timeout* expires while they are awaited). Called inside a running
        event loop, that loop is blocked until the run ends: there, prefer
        `run_async`.

        Args:
            input: Passed to every callback that takes an input.
            values: Made available, read-only, as ``ctx.values``.
            timeout: Seconds from now, checked before every callback (the
                precheck and the job of a step alike); once passed, no
                callback starts and the run stops with `RunCancelled`. ``0``
                means already expired.
            key: A durable run's idempotency key (default: derived by the
                coordinator's ``key``). Running a key again resumes it.
            fresh: Run a durable key from scratch even if it finished.

        Raises:
            ValueError: *timeout* is negative.
            TypeError: *values* is not a mapping, *timeout* not a number, or
                a durable run has no key.
            StoreError: The store can't be read or written.

        .. versionadded:: 0.1.0
        """
        if self._durable is not None:
            prepared = self._acquire(input, key, values, timeout, fresh=fresh)
            if isinstance(prepared, Generator):
                prepared = drive(prepared)
            return prepared if isinstance(prepared, RunResult) else run_sync(self._bind(prepared))
        if key is not None or fresh:
            self._not_durable(key, fresh=fresh)
        if timeout is None and values is None and self._plain and not _logging.is_enabled():
            return run_plain(self._plan, input)  # the common case: every call here is paid once per record
        return run_sync(self._new_run(input, values, timeout))

    @overload
    async def run_async(
        self,
        input: InputT,
        *,
        values: Mapping[str, object] | None = ...,
        timeout: float | None = ...,
        key: str | int | None = ...,
        fresh: bool = ...,
    ) -> RunResult[InputT]: ...
    @overload
    async def run_async(
        self,
        *,
        values: Mapping[str, object] | None = ...,
        timeout: float | None = ...,
        key: str | int | None = ...,
        fresh: bool = ...,
    ) -> RunResult[InputT | None]: ...
    async def run_async(
        self,
        input: InputT | None = None,  # noqa: A002 - the contract's name
        *,
        values: Mapping[str, object] | None = None,
        timeout: float | None = None,
        key: str | int | None = None,
        fresh: bool = False,
    ) -> RunResult[InputT | None]:
        """
        Run the steps once inside the running event loop (see `run`).

        Plain callbacks run in the loop's thread, as in `run`. When *timeout*
        expires while an ``async def`` callback is awaited, that callback is
        cancelled and the run stops with `RunCancelled`. A durable run's store
        is written from the loop's thread (each write is a short transaction).

        .. versionadded:: 0.1.0
        """
        if self._durable is not None:
            prepared = self._acquire(input, key, values, timeout, fresh=fresh)
            if isinstance(prepared, Generator):
                prepared = await drive_async(prepared)
            return prepared if isinstance(prepared, RunResult) else await run_async(self._bind(prepared))
        self._not_durable(key, fresh=fresh)
        return await run_async(self._new_run(input, values, timeout))

    def resume(
        self,
        key: str | int,
        *,
        values: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> RunResult[InputT]:
        """
        Run a durable key again with the input stored for it (see `run`).

        Raises:
            TypeError: The coordinator has no store.
            KeyError: The store has no run of *key*.

        .. versionadded:: 0.1.0
        """
        if self._durable is None:
            msg = "resume() needs a durable coordinator: create it with store=..."
            raise TypeError(msg)
        stored: InputT = self._durable.store.stored_input(self._durable.key(None, key))  # type: ignore[assignment]
        return self.run(stored, values=values, timeout=timeout, key=key)

    def rerun(
        self,
        key: str | int,
        *,
        from_step: str,
        values: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> RunResult[InputT]:
        """
        Run a new generation of a durable key, with its stored input, from step *from_step* on.

        The steps before *from_step* (in run order) are restored from the
        key's latest generation, as a resume restores them: their outputs,
        errors and trace entries (``restored=True``), copied into the new
        generation's events when it starts, in the same transaction (a crash
        leaves the key as it was, or the new generation with every copy;
        running the key again then resumes it). *from_step* and every step
        after it run again, their attempts counted from 1. The lease is taken
        as by `run` (a key another holder runs is waited for, then the result's
        fatal is `KeyBusy`), and the older generation's events stay in the store.
        If the rerun fails, its rollback compensates the restored steps too,
        as after a resume.

        Args:
            key: The durable key.
            from_step: The name of the first step to run again (ignoring case).
            values: As in `run`.
            timeout: As in `run`.

        Raises:
            TypeError: The coordinator has no store, or *from_step* is not a str.
            ValueError: No step is named *from_step* (the message lists them);
                or a step before it did not complete, or was compensated, in the
                key's latest generation; or the key's rollback is unfinished
                (status ``"compensating"``). Nothing changed then.
            KeyError: The store has no run of *key*.

        .. versionadded:: 0.2.0
        """
        durable = self._durable
        if durable is None:
            msg = "rerun() needs a durable coordinator: create it with store=..."
            raise TypeError(msg)
        name = durable.key(None, key)
        timeout = validate_timeout(timeout, "timeout")
        shared = None if values is None else _snapshot(values)
        prepared = drive(durable.rerun(self._plan, name, from_step, shared, timeout, self._emit()))
        return prepared if isinstance(prepared, RunResult) else run_sync(self._bind(prepared))

    def run_many(
        self,
        inputs: Iterable[InputT],
        *,
        workers: int | None = None,
        values: Mapping[str, object] | None = None,
        ordered: bool = False,
        timeout: float | None = None,
        fresh: bool = False,
        executor: str | Executor = "threads",
        progress: bool = False,
        total: int | None = None,
    ) -> Generator[RunResult[InputT], None, None]:
        """
        Run the steps once per input, on a pool of threads (or another executor).

        *inputs* is consumed lazily, so memory stays bounded for any number
        of inputs: each worker takes the next input when it is free (a slow
        run holds up only its own worker), and at most ``2 * workers`` inputs
        (growing to ``2 * workers + 1024`` while results are taken) are in
        flight. Runs are isolated: a fatal error in one never affects another,
        and a record of a durable batch that can't be run gets a failed result
        with `InputError`. Closing the iterator (or dropping it) stops taking
        inputs, waits for the runs in flight and stops the workers; so does
        Ctrl-C, which is raised once they stopped.

        Args:
            inputs: Any iterable but a ``str`` or ``bytes``.
            workers: Threads, tasks or processes, as the executor named
                (default: ``min(32, cpu_count + 4)`` threads, 100 tasks, one
                process per CPU).
            values: As in `run`, shared by every run.
            ordered: Yield results in input order instead of as they complete.
            timeout: As in `run`, per run.
            fresh: As in `run`: run durable keys that finished from scratch.
            executor: ``"threads"`` (the default, a `ThreadExecutor`),
                ``"async"`` (an `AsyncExecutor`: one event loop, *workers*
                runs at once as tasks), ``"processes"`` (a `ProcessExecutor`:
                *workers* worker processes), or an `Executor` instance (then
                *workers* is its own business).
            progress: Draw a live progress bar on stderr while the results
                are taken, when stderr is a terminal: runs done (of the
                total, when known), rate, ETA, and how many were ok and failed.
                Needs the extra ``choreograph[cli]`` (rich).
            total: The number of inputs, for the bar, when ``len(inputs)``
                can't tell it.

        With a store, each input's key comes from the coordinator's ``key``:
        keys that finished ok are not run again (their stored result is
        yielded), the others resume where they stopped.

        Raises:
            TypeError: *inputs* is a ``str``, ``bytes`` or not iterable; the
                coordinator has a store but no ``key``; or, with processes,
                something the runs need can't be sent to other processes (the
                message names it: a step's callback, the key function...).
            ValueError: *workers* < 1, or an unknown executor name.
            ImportError: *progress* is true and rich is not installed.

        .. versionchanged:: 0.2.0 *progress* and *total*.

        .. versionchanged:: 0.4.0 ``executor="async"`` and ``executor="processes"``.

        .. versionadded:: 0.1.0
        """
        if isinstance(inputs, str | bytes | bytearray):
            msg = f"inputs must be an iterable of inputs, not {type(inputs).__name__}"
            raise TypeError(msg)
        try:
            iterator = iter(inputs)
        except TypeError:
            msg = f"inputs must be iterable, got {type_name(inputs)}"
            raise TypeError(msg) from None
        chosen = self._executor(executor, workers)
        job = self._batch(values, timeout, fresh=fresh)
        results = self._many(chosen.map(job, iterator, ordered=ordered))  # processes check what they ship here
        if _progress.check(progress, total):
            return _progress.track(results, _progress.known_total(inputs, total))
        return results

    def run_many_async(
        self,
        inputs: Iterable[InputT] | AsyncIterable[InputT],
        *,
        workers: int | None = None,
        values: Mapping[str, object] | None = None,
        ordered: bool = False,
        timeout: float | None = None,
        fresh: bool = False,
    ) -> AsyncGenerator[RunResult[InputT], None]:
        """
        Run the steps once per input as tasks of the running event loop, at most *workers* at once.

        ``async for result in coordinator.run_many_async(inputs): ...``. The
        promises of `run_many` hold: inputs (an iterable, or an async
        iterable) are taken lazily, when a task is free and fewer than
        ``2 * workers`` (growing to ``2 * workers + 1024``) are taken and not
        yet yielded, and only while you iterate: a consumer that stops
        iterating stops the taking. Closing the iterator (``aclose()``, or
        `contextlib.aclosing` around the loop) waits for the runs in flight;
        so does cancelling the task that iterates (Ctrl-C under
        `asyncio.run`), which then goes on. Plain callbacks run in the loop's
        thread, blocking it while they run. The calling thread is the
        worker: runs use its resources (closed by `close`).

        Args:
            inputs: Any iterable but a ``str`` or ``bytes``, or an async iterable.
            workers: Runs at once (default: 100).
            values: As in `run`, shared by every run.
            ordered: Yield results in input order instead of as they complete.
            timeout: As in `run`, per run.
            fresh: As in `run`: run durable keys that finished from scratch.

        Raises:
            TypeError: As `run_many`, when called.
            ValueError: *workers* < 1.

        .. versionadded:: 0.4.0
        """
        iterator: Iterator[InputT] | Any
        if isinstance(inputs, str | bytes | bytearray):
            msg = f"inputs must be an iterable of inputs, not {type(inputs).__name__}"
            raise TypeError(msg)
        if isinstance(inputs, AsyncIterable):
            iterator = aiter(inputs)
        else:
            try:
                iterator = iter(inputs)
            except TypeError:
                msg = f"inputs must be iterable or async iterable, got {type_name(inputs)}"
                raise TypeError(msg) from None
        count = check_tasks(workers)
        return map_async(self._batch(values, timeout, fresh=fresh), iterator, count, ordered=ordered)

    def _batch(self, values: Mapping[str, object] | None, timeout: float | None, *, fresh: bool) -> _BoundRun[InputT]:
        """Check the options of a batch, and bind the runs to them."""
        timeout = validate_timeout(timeout, "timeout")
        shared = None if values is None else _snapshot(values)
        if self._store is not None and self._key is None:
            msg = "a durable run_many needs Coordinator(key=...) to derive each input's key"
            raise TypeError(msg)
        if fresh and self._store is None:
            msg = "fresh= is for durable runs: create the coordinator with store=..."
            raise TypeError(msg)
        return self._bound(shared, timeout, fresh=fresh)

    @staticmethod
    def _executor(executor: object, workers: int | None) -> Executor:
        if isinstance(executor, str):
            if executor == "threads":
                return ThreadExecutor(check_workers(workers))
            if executor == "async":
                return AsyncExecutor(check_tasks(workers))
            if executor == "processes":
                return ProcessExecutor(check_processes(workers))
            msg = f"executor must be 'threads', 'async', 'processes' or an Executor, got {executor!r}"
            raise ValueError(msg)
        if not isinstance(executor, Executor):
            msg = f"executor must be 'threads', 'async', 'processes' or an Executor, got {type_name(executor)}"
            raise TypeError(msg)
        if workers is not None:
            msg = "workers= is for an executor given by name; an Executor instance has its own"
            raise TypeError(msg)
        return executor

    @staticmethod
    def _many(results: Iterator[RunResult[InputT]]) -> Generator[RunResult[InputT], None, None]:
        yield from results

    # -- batches: the runs of one run_many call, as executors run them ----------

    def _bound(self, values: Mapping[str, object] | None, timeout: float | None, *, fresh: bool) -> _BoundRun[InputT]:
        """The runs of a batch with these options (checked), as a `ShippableJob`."""
        together: Callable[[InputT, int], Coroutine[Any, Any, RunResult[InputT]]] | None = None
        record: Callable[[InputT, int], RunResult[InputT]]
        record_async: Callable[[InputT, int], Awaitable[RunResult[InputT]]]
        if self._durable is None:
            run = self.run

            def plain(input: InputT, position: int) -> RunResult[InputT]:  # noqa: A002, ARG001 - the protocol's
                return run(input, values=values, timeout=timeout)

            def awaited(input: InputT, position: int) -> Awaitable[RunResult[InputT]]:  # noqa: A002, ARG001
                # The options were checked once for the batch: straight to the run (a coroutine).
                return run_async(self._bind(new_run(self._plan, input, values, timeout, self._emit())))

            record, record_async = plain, awaited
        else:
            record, record_async, together = self._durable_jobs(values, timeout, fresh=fresh)
        resources = self._resources
        return _BoundRun(
            record,
            record_async,
            together,
            is_async=self._plan.has_async,
            worker=nullcontext if resources is None else resources.worker,
            ship=partial(self._ship, values, timeout, fresh),
            receive=self._receive,
        )

    def _durable_jobs(
        self, values: Mapping[str, object] | None, timeout: float | None, *, fresh: bool
    ) -> tuple[
        Callable[[InputT, int], RunResult[InputT]],
        Callable[[InputT, int], Coroutine[Any, Any, RunResult[InputT]]],
        Callable[[InputT, int], Coroutine[Any, Any, RunResult[InputT]]] | None,
    ]:
        """`_bound`'s runs of a durable coordinator: plain, awaited, and awaited with others' (None: it has groups)."""

        def record(input: InputT, position: int) -> RunResult[InputT]:  # noqa: A002
            prepared = self._acquire_record(input, position, values, timeout, fresh=fresh)
            if isinstance(prepared, Generator):
                prepared = drive(prepared)
            return prepared if isinstance(prepared, RunResult) else run_sync(self._bind(prepared))

        async def record_async(input: InputT, position: int) -> RunResult[InputT]:  # noqa: A002
            prepared = self._acquire_record(input, position, values, timeout, fresh=fresh)
            if isinstance(prepared, Generator):
                prepared = await drive_async(prepared)
            return prepared if isinstance(prepared, RunResult) else await run_async(self._bind(prepared))

        if any(entry.group is not None for entry in self._plan.entries):  # a group's lanes commit at once
            return record, record_async, None
        return record, record_async, partial(self._together, values, timeout, fresh)

    async def _together(
        self,
        values: Mapping[str, object] | None,
        timeout: float | None,
        fresh: bool,  # noqa: FBT001 - bound by `_durable_jobs`
        input: InputT,  # noqa: A002
        position: int,
    ) -> RunResult[InputT]:
        """A durable record of `run_many`, its writes (its begin first) committed with the other runs' on the loop."""
        durable = self._durable
        assert durable is not None  # noqa: S101 - a durable coordinator's
        named = _named(durable, input, position)
        if isinstance(named, RunResult):
            return named
        name, encoded = named
        emit, plan = self._emit(), self._plan
        prepared = await durable.prepare_together(plan, input, name, encoded, values, timeout, emit, fresh=fresh)
        if isinstance(prepared, str):  # another holder runs the key: wait for it, as any run does
            waiting = durable.acquire(plan, input, name, encoded, values, timeout, emit, fresh=fresh)
            prepared = await drive_async(waiting)
        if isinstance(prepared, RunResult):
            return prepared
        run = self._bind(prepared)
        if isinstance(run.recorder, DurableRecorder):
            run.recorder.defer(run)
        return await run_async(run)

    def _ship(self, values: Mapping[str, object] | None, timeout: float | None, fresh: bool) -> bytes:  # noqa: FBT001
        """This coordinator's recipe and a batch's options, pickled for worker processes; what can't be is named."""
        recipe = _Recipe(
            flow=tuple(_packed(node) for node in self.flow),
            strict_prechecks=self._plan.strict_prechecks,
            input_type=self._input_type,
            key=None if self._store is None else self._key,  # only durable runs use it
            store=_store_recipe(self._store),
            resources=None if self._resources is None else dict(self._resources.factories),
        )
        recipe.check(self._plan.steps)
        for name, value in (values or {}).items():
            _check_shippable(value, f"values[{name!r}]")
        listen = bool(self._subscriptions) or _logs()  # else the workers make no event at all
        shipped = _Shipped(recipe, values, timeout, fresh=fresh, listen=listen)
        try:
            return pickle.dumps(shipped, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            msg = f"the batch can't be sent to worker processes: {type(exc).__name__}: {exc}"
            raise TypeError(msg) from exc

    def _receive(self, report: bytes) -> RunResult[InputT]:
        """A run's report from a worker process: its events go to the listeners (here, now), then its result."""
        result: RunResult[InputT]
        result, events = pickle.loads(report)  # noqa: S301 - made by our own worker process
        if events:
            emit = self._emit()
            if emit is not None:
                for event in events:
                    emit(event)
        return result

    # -- queues --------------------------------------------------------------

    def serve(
        self,
        queue: str,
        *,
        workers: int = 1,
        stop: threading.Event | None = None,
        exclusive: bool = False,
    ) -> Served:
        """
        Serve a durable queue of the coordinator's store: run each message as a durable run keyed by its key.

        Messages are taken by priority (higher first), then by the time they
        became due; each becomes ``run(record, key=key)``, so listeners,
        logging and tracing see its run as any other. A run that finishes ok
        settles its message as done; one that fails (or was rolled back, or
        is poisoned) as failed. Delivery is at least once: a message whose
        server died is taken again (after its claim's lease, at once when the
        server was a process of this machine) and its run resumes from the
        store. The guide's "Durable queues" page states the guarantees.

        Args:
            queue: The queue's name.
            workers: Messages handled at once, each on a thread of its own
                (a flow with ``async def`` callbacks runs each on an event loop of its own).
            stop: Serving ends once it is set.
            exclusive: Be the only server of *queue* across every process
                sharing the store: while another one is, wait on standby, and
                take over within the store's lease after it dies.

        Returns:
            What was served (`choreograph.typing.Served`): messages done,
            failed, given back and lost to another server, and the time.
            It returns once *stop* is set or, when called from the main thread,
            at SIGINT or SIGTERM (the handlers before are restored): it takes
            nothing new and lets the runs in flight finish.

        Raises:
            TypeError: The coordinator has no store, or its store has no
                queues; an argument of the wrong type.
            ValueError: An empty queue name, or *workers* < 1.
            StoreError: The store can't be read or written (raised once the
                runs in flight finished).

        .. versionadded:: 0.5.0
        """
        store = self._store
        if store is None:
            msg = "serve() needs a durable coordinator: create it with store=..."
            raise TypeError(msg)
        if not isinstance(store, QueueStore):
            msg = f"serve() needs a store with queues (SqliteStore, PostgresStore, MemoryStore), got {type_name(store)}"
            raise TypeError(msg)
        name = check_queue(queue)
        count = check_limit(workers, "workers")
        given: object = stop
        if given is not None and not isinstance(given, threading.Event):
            msg = f"stop must be a threading.Event or None, got {type_name(stop)}"
            raise TypeError(msg)
        flag: object = exclusive
        if not isinstance(flag, bool):
            msg = f"exclusive must be a bool, got {type_name(exclusive)}"
            raise TypeError(msg)

        def run(record: Any, key: str) -> RunResult[Any]:  # the decoded record, as run() takes it
            return self.run(record, key=key)

        resources = self._resources
        return serve_queue(
            store,
            name,
            run_handler(store, run),
            workers=count,
            stop=stop,
            exclusive=exclusive,
            worker=nullcontext if resources is None else resources.worker,
        )

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """
        Close the resources made so far (``Coordinator(resources=...)``): each context manager is exited.

        Those of `run_many`'s workers are closed when each worker ends; this
        closes the others (those of the threads that called `run`, and of
        workers still going on: call it when no run is). They are made again
        if used afterwards. The store is yours to close.

        .. versionadded:: 0.4.0
        """
        if self._resources is not None:
            self._resources.close()

    def __enter__(self) -> Coordinator[InputT]:
        """Return the coordinator: `close` is called on leaving the ``with`` block."""
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Call `close`."""
        self.close()

    def graph(self, kind: str = "mermaid") -> str:
        """
        Draw the flow: a Mermaid flowchart, or the same picture as Graphviz DOT.

        A start and an end; each step a box with its name, its retries and
        timeout in small; a precheck a diamond before its step, whose
        ``skip`` edge goes around the job; a compensation a dashed ``undo``
        edge to a node of its own; a `Parallel` group a box (a Mermaid
        ``subgraph``, a DOT ``cluster``) holding a fork, its branches side
        by side and a join, nested groups nested. Any step name is safe:
        node ids are made up, and names are escaped in labels.

        Args:
            kind: ``"mermaid"`` (a ``flowchart TD``) or ``"dot"`` (a ``digraph``).

        Returns:
            The picture's text, ending with a newline.

        Raises:
            ValueError: *kind* is not one of them (the message names them).

        .. versionadded:: 0.3.0
        """
        from ._pictures import draw  # noqa: PLC0415 - imported when a flow is first drawn

        return draw(self.flow, kind)

    # -- flows as data ----------------------------------------------------------

    @classmethod
    def from_spec(cls, source: str | os.PathLike[str] | Mapping[str, object]) -> Coordinator[Any]:
        """
        Make a coordinator from a flow spec: a ``.json`` or ``.toml`` file, or a mapping of the same structure.

        The spec holds the version of the format (``"choreograph": 1``), the
        input type (``"input"``, optional), ``"strict_prechecks"``
        (optional) and the ``"steps"``: each a step (``"step"``, ``"job"``,
        and optionally ``"precheck"``, ``"retry"`` with `Retry`'s options,
        ``"timeout"``, ``"compensate"``, ``"compensate_failed"``) or a
        group (``"parallel"``, ``"branches"``: a list of lists of items,
        ``"max_workers"``). Callables and classes are named
        ``"module:qualname"`` and imported. The package ships the format as
        a JSON Schema, ``choreograph/spec.schema.json``.

        Args:
            source: A path ending in ``.json`` or ``.toml``, or a mapping.

        Returns:
            What ``Coordinator[Input](steps, strict_prechecks=...)`` returns
            for the spec's input type and steps (on a subclass, the subclass).

        Raises:
            SpecError: The file is missing or not valid JSON or TOML; a key is
                unknown or missing, or a value of the wrong kind; a module does
                not import or has no such attribute; a step's name is taken; or
                `add_step` refused a step (its `StepDefinitionError` is the
                ``__cause__``). The error names the place in the spec.

        .. versionadded:: 0.3.0
        """
        from . import _spec  # noqa: PLC0415 - it builds coordinators: imported once this module is

        return _spec.load(cls, source)

    def to_spec(self) -> dict[str, object]:
        """
        Write the flow as a spec: a JSON-able dict that `from_spec` turns back into an equivalent coordinator.

        Options at their defaults are left out. The spec holds the flow:
        its input type, steps, groups and ``strict_prechecks``; not the
        store, the ``key`` function or the listeners.

        Returns:
            The spec, with ``from_spec(c.to_spec()).to_spec() == c.to_spec()``.

        Raises:
            SpecError: A callback (or the input type, or an exception class of
                a `Retry`) can't be named by import path: a lambda, a local
                function, a function of ``__main__``, an object whose
                ``module:qualname`` names something else; or a step's retry
                policy is not a plain `Retry` (a `TenacityRetry`). The error
                names the step and its place in the spec.

        .. versionadded:: 0.3.0
        """
        from . import _spec  # noqa: PLC0415 - it builds coordinators: imported once this module is

        return _spec.dump(self.flow, input_type=self._input_type, strict_prechecks=self._plan.strict_prechecks)

    def __contains__(self, name: object) -> bool:
        """Tell whether a step of this name (in any case) was added."""
        return isinstance(name, str) and name.casefold() in self._plan.names

    def __len__(self) -> int:
        """Return the number of steps."""
        return len(self._plan.steps)

    def __repr__(self) -> str:
        return f"Coordinator(steps={[node.name for node in self._plan.steps]!r})"


def _named(durable: DurableRunner, input: object, position: int) -> tuple[str, str] | RunResult[Any]:  # noqa: A002
    """A record of `run_many`'s key and encoded input; or its result, when it has neither (an `InputError`)."""
    try:
        name = durable.key(input, None)
        return name, durable.encode(name, input)
    except Exception as exc:  # noqa: BLE001 - the record's failure, not the batch's
        return result_of(Finished(input, (), InputError(position, exc), DataBag(), 0, None, (), ()))


class _BoundRun(Generic[InputT]):
    """A coordinator's runs with the options of one `run_many` call: what executors run (a `ShippableJob`)."""

    __slots__ = ("_receive", "_ship", "_worker", "is_async", "run", "run_async", "run_together")

    def __init__(
        self,
        run: Callable[[InputT, int], RunResult[InputT]],
        run_async: Callable[[InputT, int], Any],
        run_together: Callable[[InputT, int], Coroutine[Any, Any, RunResult[InputT]]] | None,
        *,
        is_async: bool,
        worker: Callable[[], AbstractContextManager[object]],
        ship: Callable[[], bytes],
        receive: Callable[[bytes], RunResult[InputT]],
    ) -> None:
        #: Run once, from plain code / inside a running event loop (see `RunJob`).
        self.run, self.run_async = run, run_async
        #: A durable run awaited beside others on one event loop, its writes committed with theirs
        #: (`DurableRecorder.defer`): what `AsyncExecutor` awaits when it is not None.
        self.run_together = run_together
        #: Whether the flow has ``async def`` callbacks.
        self.is_async = is_async
        self._worker, self._ship, self._receive = worker, ship, receive

    def worker(self) -> AbstractContextManager[object]:
        """A worker's life: its resources are closed when it ends."""
        return self._worker()

    def ship(self) -> bytes:
        """The runs, packed for worker processes (see `ShippableJob.ship`)."""
        return self._ship()

    def receive(self, report: bytes) -> RunResult[InputT]:
        """A worker process's report: its events to the listeners, then its result."""
        return self._receive(report)

    def failed(self, input: InputT, position: int, error: BaseException) -> RunResult[InputT]:  # noqa: A002
        """The failed result of a record that could not be run in a worker process."""
        return result_of(Finished(input, (), InputError(position, error), DataBag(), 0, None, (), ()))


# -- shipping a coordinator to worker processes ------------------------------------

_BY_REFERENCE = (
    "worker processes import callables by reference: use a function defined at the top level of a module"
    " (not a lambda, a local function, or a bound method of an object that can't be pickled)"
)


def _logs() -> bool:
    """
    Whether loguru would log choreograph's records now: then the workers' events come back to be logged here.

    `_logging.is_enabled` answers True while loguru's cache of enabled modules
    is empty (which is cheap for a run, but would make every batch of worker
    processes ship its events). This reads what the cache is filled from:
    loguru's activation list, which ``logger.enable`` and ``logger.disable``
    set, deepest module first; read-only, as `_logging` reads loguru's core.
    """
    core = getattr(_loguru, "_core", None)
    activations = getattr(core, "activation_list", None)
    if activations is None:  # pragma: no cover - a loguru without these internals
        return _logging.is_enabled()
    if not getattr(core, "handlers", True):
        return False
    name = f"{_logging.__name__}."
    return next((bool(status) for prefix, status in activations if name.startswith(prefix)), True)


def _check_shippable(value: object, what: str) -> None:
    """Raise a `TypeError` naming *what* if *value* can't be pickled for a worker process."""
    main = sys.modules.get("__main__")
    if getattr(value, "__module__", None) == "__main__" and getattr(main, "__file__", None) is None:
        msg = (
            f"{what} can't be sent to worker processes: it is defined in the __main__ module of an interactive"
            " session or of `python -c`, which worker processes can't import; define it in a module"
        )
        raise TypeError(msg)
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        msg = f"{what} can't be sent to worker processes ({type(exc).__name__}: {exc}); {_BY_REFERENCE}"
        raise TypeError(msg) from exc


def _store_recipe(store: Store | None) -> Callable[[], Store] | None:
    """How a worker process opens the coordinator's store: a `SqliteStore` or `PostgresStore` from its configuration."""
    if store is None:
        return None
    if isinstance(store, MemoryStore):
        msg = (
            "a MemoryStore keeps its runs in this process's memory: worker processes can't share it;"
            " use a SqliteStore or a PostgresStore for durable runs in processes"
        )
        raise TypeError(msg)
    if isinstance(store, SqliteStore):
        if store.path == ":memory:":
            msg = "a SqliteStore of ':memory:' lives in this process: worker processes can't share it; give it a file"
            raise TypeError(msg)
        _check_shippable(store.codec, "the store's codec")
        return partial(
            SqliteStore,
            store.path,
            codec=store.codec,
            lease=store.lease,
            max_interruptions=store.max_interruptions,
            synchronous=store.synchronous,
            busy_timeout=store.busy_timeout,
        )
    if isinstance(store, PostgresStore):
        _check_shippable(store.codec, "the store's codec")
        return partial(
            PostgresStore,
            store.conninfo,
            schema=store.schema,
            codec=store.codec,
            lease=store.lease,
            max_interruptions=store.max_interruptions,
            max_connections=store.max_connections,
            timeout=store.timeout,
        )
    _check_shippable(store, "the store")  # a third-party store pickles its own configuration
    return partial(_same, store)


def _same(store: Store) -> Store:
    return store


#: A `Parallel` in a recipe: its name, branches and max_workers (a `Parallel` refuses the attributes unpickling sets).
_Group = tuple[str, tuple[tuple["_Node", ...], ...], int | None]
_Node = Step[Any] | _Group


def _packed(node: Step[Any] | Parallel) -> _Node:
    if isinstance(node, Parallel):
        return (
            node.name,
            tuple(tuple(_packed(child) for child in branch) for branch in node.branches),
            node.max_workers,
        )
    return node


def _unpacked(node: _Node) -> Step[Any] | Parallel:
    if isinstance(node, Step):
        return node
    name, branches, max_workers = node
    return Parallel(
        name, *(tuple(_unpacked(child) for child in branch) for branch in branches), max_workers=max_workers
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Recipe:
    """What a worker process rebuilds a coordinator from: its steps by reference, and its options."""

    flow: tuple[_Node, ...]
    strict_prechecks: bool
    input_type: object
    key: Callable[[Any], str | int] | None
    store: Callable[[], Store] | None
    resources: dict[str, Factory] | None

    def check(self, steps: tuple[StepNode, ...]) -> None:
        """Raise a `TypeError` naming the first step, callback or option that can't be sent to a worker process."""
        for node in steps:
            step = node.step
            for role, fn in (("precheck", step.precheck), ("job", step.job), ("compensate", step.compensate)):
                if fn is not None:
                    name = getattr(fn, "__qualname__", None) or type_name(fn)
                    _check_shippable(fn, f"step {step.name!r}, {role} {name}")
            if step.retry is not None:
                _check_shippable(step.retry, f"step {step.name!r}, its retry policy")
        if self.key is not None:
            _check_shippable(self.key, "the key function")
        for name, factory in (self.resources or {}).items():
            _check_shippable(factory, f"resource {name!r}, its factory")
        _check_shippable(self.input_type, "the input type")

    def build(self) -> Coordinator[Any]:
        """The coordinator, rebuilt (in a worker process)."""
        made = Coordinator if self.input_type is object else Coordinator[self.input_type]  # type: ignore[name-defined]
        return made(
            [_unpacked(node) for node in self.flow],
            store=None if self.store is None else self.store(),
            key=self.key,
            strict_prechecks=self.strict_prechecks,
            resources=self.resources,
        )


class _Shipped(Generic[InputT]):
    """
    A batch's runs in a worker process (a `RemoteJob`): its coordinator rebuilt from the recipe when unpickled.

    When the calling process listens, each run's events are collected and
    sent with its result.
    """

    def __init__(
        self,
        recipe: _Recipe,
        values: Mapping[str, object] | None,
        timeout: float | None,
        *,
        fresh: bool,
        listen: bool,
    ) -> None:
        self._state = (recipe, None if values is None else dict(values), timeout, fresh, listen)
        self._events: list[RunEvent] = []
        self._coordinator: Coordinator[InputT] | None = None
        self._job: _BoundRun[InputT] | None = None

    def __getstate__(self) -> object:
        return self._state

    def __setstate__(self, state: Any) -> None:
        self._state = state
        recipe, values, timeout, fresh, listen = state
        coordinator: Coordinator[InputT] = recipe.build()
        self._events = []
        if listen:
            coordinator.listen(self._events.append)
        self._coordinator = coordinator
        shared = None if values is None else _snapshot(values)
        self._job = coordinator._bound(shared, timeout, fresh=fresh)  # noqa: SLF001 - this module's own class

    @property
    def is_async(self) -> bool:
        """Whether the flow has ``async def`` callbacks."""
        assert self._job is not None  # noqa: S101 - unpickled
        return self._job.is_async

    def run(self, input: InputT, position: int, /) -> bytes:  # noqa: A002
        """Run once; return the result and its events, pickled."""
        assert self._job is not None  # noqa: S101 - unpickled
        result = self._job.run(input, position)
        return _pack(result, self._taken())

    async def run_async(self, input: InputT, position: int, /) -> bytes:  # noqa: A002
        """Run once inside the worker's event loop; return the result and its events, pickled."""
        assert self._job is not None  # noqa: S101 - unpickled
        result = await self._job.run_async(input, position)
        return _pack(result, self._taken())

    def _taken(self) -> tuple[RunEvent, ...]:
        events = tuple(self._events)
        self._events.clear()
        return events

    def close(self) -> None:
        """The worker process ends: close the resources its runs made, and its store."""
        coordinator = self._coordinator
        if coordinator is not None:
            coordinator.close()
            store = coordinator.store
            close = getattr(store, "close", None)
            if close is not None:
                close()


def _pack(result: RunResult[Any], events: tuple[RunEvent, ...]) -> bytes:
    """A run's result and events, pickled; what doesn't pickle is replaced (see `_portable`)."""
    try:
        return pickle.dumps((result, events), pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an error or an output that doesn't pickle: send what does
        portable = _portable(result)
        return pickle.dumps((portable, tuple(_portable_event(event, portable) for event in events)))


def _pickles(value: object) -> bool:
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - anything may fail to pickle
        return False
    return True


def _stand_in(error: BaseException) -> BaseException:
    """*error*, or a `StoredError` with its class and message if it doesn't pickle."""
    if _pickles(error):
        return error
    if isinstance(error, JobFailed | PrecheckFailed):
        return type(error)(error.step, _stand_in(error.error))
    if isinstance(error, StepError):
        return StepError(error.step, error.phase, _stand_in(error.error))
    if isinstance(error, InputError):
        return InputError(error.position, _stand_in(error.error))
    return StoredError(f"{type(error).__module__}.{type(error).__qualname__}", str(error))


def _portable(result: RunResult[Any]) -> RunResult[Any]:
    """
    *result* with what can't be pickled replaced, to leave its worker process.

    An error that doesn't pickle becomes a `StoredError` (its class and
    message); an output that doesn't is left out of the data bag, and a run
    that was ok fails with `UnstorableOutput` naming the first.
    """
    fatal = result.fatal
    bag = DataBag()
    lost: tuple[str, Phase, object] | None = None
    tables: tuple[tuple[Phase, Mapping[str, object]], ...] = (
        ("precheck", result.data_bag.precheck_data),
        ("job", result.data_bag.job_data),
    )
    for phase, outputs in tables:
        for name, value in outputs.items():
            if _pickles(value):
                (bag.set_precheck_data if phase == "precheck" else bag.set_job_data)(name, value)
            elif lost is None:
                lost = (name, phase, value)
    portable_fatal = None if fatal is None else _stand_in(fatal)
    if lost is not None and fatal is None:
        name, phase, value = lost
        portable_fatal = UnstorableOutput(
            name, phase, type_name(value), "it can't be pickled to leave its worker process"
        )
    input_ = result.input if _pickles(result.input) else repr(result.input)
    errors = tuple(_stand_in(error) for error in result.errors)
    compensations = tuple(_stand_in(error) for error in result.compensation_errors)
    calls = tuple((c.step, c.phase, c.outcome, c.seconds, c.attempts, c.restored, c.started) for c in result.trace)
    fields = (input_, errors, portable_fatal, bag, result.run_id, result.key, compensations, calls)
    return result_of(Finished(*fields))  # type: ignore[arg-type]


def _portable_event(event: RunEvent, result: RunResult[Any]) -> RunEvent:
    if isinstance(event, RunFinished):
        return replace(event, result=result)
    if isinstance(event, CallbackFinished) and event.error is not None:
        return replace(event, error=_stand_in(event.error))
    if isinstance(event, Emitted) and not _pickles(event.payload):
        return replace(event, payload=repr(event.payload))
    if isinstance(event, RunStarted) and not _pickles(event.input):
        return replace(event, input=repr(event.input))
    return event
