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
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, overload

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
from ._errors import InputError, StepDefinitionError
from ._listeners import fan_out, outcome_listener
from .durable.protocol import Store
from .durable.runner import DurableRunner
from .events import RunEvent
from .executors.protocol import Executor
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
            `MemoryStore`): each callback's outcome is recorded, and running a
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

    .. versionadded:: 0.1.0
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
    ) -> None:
        strict: object = strict_prechecks  # checked at run time: callers may not be typed
        if not isinstance(strict, bool):
            msg = f"strict_prechecks must be a bool, got {type_name(strict_prechecks)}"
            raise TypeError(msg)
        given: object = store
        if given is not None and not isinstance(given, Store):
            msg = (
                "store must implement choreograph.typing.Store (SqliteStore, MemoryStore) or be None,"
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
            msg = f"store must implement choreograph.typing.Store (SqliteStore, MemoryStore), got {type_name(store)}"
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
        return new_run(self._plan, input, shared, timeout, self._emit())

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
        try:
            name = durable.key(input, None)
            encoded = durable.encode(name, input)
        except Exception as exc:  # noqa: BLE001 - the record's failure, not the batch's
            return result_of(Finished(input, (), InputError(position, exc), DataBag(), 0, None, (), ()))
        return self._lease(durable, input, name, encoded, values, timeout, fresh=fresh)

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
            return prepared if isinstance(prepared, RunResult) else run_sync(prepared)
        if key is not None or fresh:
            self._not_durable(key, fresh=fresh)
        if timeout is None and values is None and self._emit_quiet is None and not _logging.is_enabled():
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
            return prepared if isinstance(prepared, RunResult) else await run_async(prepared)
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
        return prepared if isinstance(prepared, RunResult) else run_sync(prepared)

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
            workers: Threads (default: ``min(32, cpu_count + 4)``).
            values: As in `run`, shared by every run.
            ordered: Yield results in input order instead of as they complete.
            timeout: As in `run`, per run.
            fresh: As in `run`: run durable keys that finished from scratch.
            executor: ``"threads"`` (the default), or an `Executor` instance
                (then *workers* is its own business).
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
            TypeError: *inputs* is a ``str``, ``bytes`` or not iterable; or the
                coordinator has a store but no ``key``.
            ValueError: *workers* < 1, or an unknown executor name.
            ImportError: *progress* is true and rich is not installed.

        .. versionchanged:: 0.2.0 *progress* and *total*.

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
        validate_timeout(timeout, "timeout")
        shared = None if values is None else _snapshot(values)
        if self._store is not None and self._key is None:
            msg = "a durable run_many needs Coordinator(key=...) to derive each input's key"
            raise TypeError(msg)
        if fresh and self._store is None:
            msg = "fresh= is for durable runs: create the coordinator with store=..."
            raise TypeError(msg)
        results = self._many(chosen, _BoundRun(self, shared, timeout, fresh=fresh), iterator, ordered=ordered)
        if _progress.check(progress, total):
            return _progress.track(results, _progress.known_total(inputs, total))
        return results

    @staticmethod
    def _executor(executor: object, workers: int | None) -> Executor:
        if isinstance(executor, str):
            if executor != "threads":
                msg = f"executor must be 'threads' or an Executor, got {executor!r}"
                raise ValueError(msg)
            return ThreadExecutor(check_workers(workers))
        if not isinstance(executor, Executor):
            msg = f"executor must be 'threads' or an Executor, got {type_name(executor)}"
            raise TypeError(msg)
        if workers is not None:
            msg = "workers= is for executor='threads'; an Executor instance has its own"
            raise TypeError(msg)
        return executor

    @staticmethod
    def _many(
        executor: Executor, job: _BoundRun[InputT], inputs: Iterator[InputT], *, ordered: bool
    ) -> Generator[RunResult[InputT], None, None]:
        yield from executor.map(job, inputs, ordered=ordered)

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


class _BoundRun(Generic[InputT]):
    """A coordinator's run with the options of one `run_many` call: what executors run (a `RunJob`)."""

    __slots__ = ("_coordinator", "_fresh", "_timeout", "_values")

    def __init__(
        self,
        coordinator: Coordinator[InputT],
        values: Mapping[str, object] | None,
        timeout: float | None,
        *,
        fresh: bool,
    ) -> None:
        self._coordinator, self._values, self._timeout, self._fresh = coordinator, values, timeout, fresh

    @property
    def is_async(self) -> bool:
        """Whether the flow has ``async def`` callbacks."""
        return self._coordinator._plan.has_async  # noqa: SLF001 - this module's own class

    def run(self, input: InputT, position: int, /) -> RunResult[InputT]:  # noqa: A002
        """Run once, from plain code."""
        coordinator = self._coordinator
        if coordinator._durable is None:  # noqa: SLF001 - this module's own class
            return coordinator.run(input, values=self._values, timeout=self._timeout)
        values, timeout, fresh = self._values, self._timeout, self._fresh
        prepared = coordinator._acquire_record(input, position, values, timeout, fresh=fresh)  # noqa: SLF001 - this module's
        if isinstance(prepared, Generator):
            prepared = drive(prepared)
        return prepared if isinstance(prepared, RunResult) else run_sync(prepared)

    async def run_async(self, input: InputT, position: int, /) -> RunResult[InputT]:  # noqa: A002
        """Run once, inside a running event loop."""
        coordinator = self._coordinator
        if coordinator._durable is None:  # noqa: SLF001 - this module's own class
            return await coordinator.run_async(input, values=self._values, timeout=self._timeout)
        values, timeout, fresh = self._values, self._timeout, self._fresh
        prepared = coordinator._acquire_record(input, position, values, timeout, fresh=fresh)  # noqa: SLF001 - this module's
        if isinstance(prepared, Generator):
            prepared = await drive_async(prepared)
        return prepared if isinstance(prepared, RunResult) else await run_async(prepared)
