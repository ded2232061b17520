"""The Coordinator: holds the steps and runs them, once per input."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import MappingProxyType
from typing import Final, Generic, overload

from loguru import logger
from typing_extensions import TypeVar

from ._bag import DataBag
from ._codec import StoredError
from ._context import _current
from ._engine import CompiledStep, Loop, Plan, Run, drive, drive_async, execute, hand_over
from ._errors import KeyBusy, PoisonedRun, StepDefinitionError
from ._result import Finished, RunResult, result_of
from ._retry import RetryPolicy, as_policy
from ._step import Callback, Step, compile_callback, type_name, validate_timeout
from ._store import Replay, Resumption, SqliteStore, Status, StoreSession, stored_result

InputT = TypeVar("InputT", default=object)  # `Coordinator()` takes any input
F = TypeVar("F", bound=Callable[..., object])

_EMPTY: Final[Mapping[str, object]] = MappingProxyType({})
_run_ids: Final = itertools.count(1)
_clock_ns: Final = time.perf_counter_ns
_monotonic: Final = time.monotonic
_POLL: Final = 0.05  # seconds between looks at a key another process runs


def _snapshot(values: object) -> Mapping[str, object]:
    if not isinstance(values, Mapping):
        msg = f"values must be a mapping or None, got {type_name(values)}"
        raise TypeError(msg)
    return MappingProxyType(dict(values))


def _logging_enabled() -> bool:
    """
    Tell, cheaply, whether loguru would emit this module's INFO records.

    loguru answers that only by inspecting the caller's frame on every call
    (about a microsecond, even while disabled). Its cache of enabled modules is
    read here once per run instead; when it is unavailable or not filled yet,
    logging is attempted and loguru decides.
    """
    try:
        core = logger._core  # type: ignore[attr-defined]  # noqa: SLF001
        if not core.handlers:
            return False
        return core.enabled.get(__name__, True) is not False
    except AttributeError:  # pragma: no cover - a future loguru without these internals
        return True


class _Batches(Generic[InputT]):
    """
    Feed `run_many`'s pool: inputs in batches sized so that a task lasts about `TASK_SECONDS`.

    A task per input costs a pool round trip (tens of microseconds), more than
    a short run itself; a task per batch amortises it. Batches start at one
    input and grow only while runs are short, so slow (I/O-bound) runs still
    spread over every worker. At most two tasks per worker are in flight.
    When the steps have ``async def`` callbacks, a batch runs on one event
    loop (with `Coordinator.run_async`) instead of starting a loop per run.
    """

    TASK_SECONDS: Final = 0.002
    MAX_BATCH: Final = 256

    def __init__(
        self, coordinator: Coordinator[InputT], inputs: Iterator[InputT], options: Mapping[str, object]
    ) -> None:
        self._coordinator, self._inputs, self._options = coordinator, inputs, options
        self._size = 1

    def _task(self, items: list[InputT]) -> tuple[list[RunResult[InputT]], float]:
        started = time.perf_counter()
        coordinator, options = self._coordinator, self._options
        if coordinator._plan.has_async:  # noqa: SLF001
            results = asyncio.run(self._on_one_loop(items))
        else:
            results = [coordinator.run(item, **options) for item in items]  # type: ignore[call-overload]
        return results, time.perf_counter() - started

    async def _on_one_loop(self, items: list[InputT]) -> list[RunResult[InputT]]:
        coordinator, options = self._coordinator, self._options
        return [await coordinator.run_async(item, **options) for item in items]  # type: ignore[call-overload]

    def _submit(self, pool: ThreadPoolExecutor) -> Future[tuple[list[RunResult[InputT]], float]] | None:
        items = list(itertools.islice(self._inputs, self._size))
        return pool.submit(self._task, items) if items else None

    def _results(self, future: Future[tuple[list[RunResult[InputT]], float]]) -> list[RunResult[InputT]]:
        results, seconds = future.result()
        per_run = seconds / len(results)
        self._size = max(1, min(self.MAX_BATCH, int(self.TASK_SECONDS / per_run) if per_run else self.MAX_BATCH))
        return results

    def ordered(self, pool: ThreadPoolExecutor, workers: int) -> Iterator[RunResult[InputT]]:
        """Yield results in input order."""
        queue: deque[Future[tuple[list[RunResult[InputT]], float]]] = deque()
        while True:
            while len(queue) < 2 * workers and (future := self._submit(pool)) is not None:
                queue.append(future)
            if not queue:
                return
            yield from self._results(queue.popleft())

    def unordered(self, pool: ThreadPoolExecutor, workers: int) -> Iterator[RunResult[InputT]]:
        """Yield results as their batches complete."""
        pending: set[Future[tuple[list[RunResult[InputT]], float]]] = set()
        while True:
            while len(pending) < 2 * workers and (future := self._submit(pool)) is not None:
                pending.add(future)
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for finished in done:
                yield from self._results(finished)


def _status(run: Run) -> Status:
    """How a durable run ended, for its store."""
    if run._fatal is None:  # noqa: SLF001
        return "ok"
    if run._compensation_errors:  # noqa: SLF001
        return "compensating"  # resumed (the failed compensations retried) when run again
    if run._rollback or any(call[1] == "compensate" for call in run._calls or ()):  # noqa: SLF001
        return "rolled_back"
    return "failed"


def _stopped_at(run: Run) -> str | None:
    """The step where the run's fatal error stopped it (a precheck's ExecutionCanceled names none itself)."""
    fatal = run._fatal  # noqa: SLF001
    if fatal is None:
        return None
    step = getattr(fatal, "step", None)
    if isinstance(step, str):
        return step
    return run._errors[-1].step if run._errors else None  # noqa: SLF001


class Coordinator(Generic[InputT]):
    """
    An ordered list of steps, run once per input.

    One coordinator may run from many threads and tasks at once: each run has
    its own DataBag, error stack and context. Adding steps while runs are going
    on is safe; runs already started keep the steps they started with.

    Args:
        steps: Steps to add, in order (see `add_step`).
        store: Makes runs durable (see `SqliteStore`): each callback's outcome
            is recorded, and running a key again resumes it.
        key: Derives a durable run's idempotency key from its input, for
            `run` without ``key=`` and for `run_many`. It returns a ``str``
            or an ``int``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        steps: Iterable[Step] = (),
        *,
        store: SqliteStore | None = None,
        key: Callable[[InputT], str | int] | None = None,
    ) -> None:
        given: object = store
        if given is not None and not isinstance(given, SqliteStore):
            msg = f"store must be a SqliteStore or None, got {type_name(store)}"
            raise TypeError(msg)
        derive: object = key
        if derive is not None and not callable(derive):
            msg = f"key must be a callable deriving a key from an input, got {type_name(derive)}"
            raise TypeError(msg)
        self._lock = threading.Lock()
        self._plan = Plan(())
        self._store = store
        self._key = key
        for step in steps:
            self.add_step(step)

    @property
    def store(self) -> SqliteStore | None:
        """
        The store that makes runs durable, if any.

        .. versionadded:: 0.1.0
        """
        return self._store

    @property
    def steps(self) -> tuple[Step, ...]:
        """
        The steps, in execution order.

        .. versionadded:: 0.1.0
        """
        return tuple(compiled.step for compiled in self._plan.steps)

    def add_step(self, step: Step) -> Step:
        """
        Validate *step*, inspect its callbacks and append it to the run order.

        Args:
            step: Its name must be unique here, ignoring case.

        Returns:
            *step*, unchanged.

        Raises:
            StepDefinitionError: The name is empty or taken, or a callback
                can't be used (the message names the step, the callback and
                the problem).

        .. versionadded:: 0.1.0
        """
        if not isinstance(step, Step):
            raise StepDefinitionError("", "step", f"expected a Step, got {type_name(step)}")
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
        compiled = CompiledStep(
            step,
            self._compile(name, "precheck", step.precheck, retry, timeout),
            self._compile(name, "job", step.job, retry, timeout),  # type: ignore[arg-type]  # not None
            self._compile(name, "compensate", step.compensate, retry, timeout),
        )
        with self._lock:
            taken = self._plan.names.get(compiled.key)
            if taken is not None:
                problem = f"the name is already taken by step {taken!r} (names ignore case)"
                raise StepDefinitionError(name, "step", problem)
            self._plan = Plan((*self._plan.steps, compiled))
        return step

    @staticmethod
    def _compile(
        name: str, role: str, fn: Callable[..., object] | None, retry: RetryPolicy | None, timeout: float | None
    ) -> Callback | None:
        if fn is None:
            return None
        return compile_callback(name, role, fn, retry=retry, timeout=timeout)  # type: ignore[arg-type]

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
            self.add_step(
                Step(
                    name,
                    job,
                    precheck,
                    retry=retry,
                    compensate=compensate,
                    compensate_failed=compensate_failed,
                    timeout=timeout,
                )
            )
            return job

        return register

    # -- running ------------------------------------------------------------

    def _start(
        self,
        input: object,  # noqa: A002
        values: Mapping[str, object] | None,
        timeout: float | None,
    ) -> Run:
        """Set a run up; on the full loop if it has a timeout or logs."""
        if timeout is not None:
            timeout = validate_timeout(timeout, "timeout")
        run = Run(self._plan, input, _EMPTY if values is None else _snapshot(values), next(_run_ids))
        if timeout is not None:
            run._timeout = timeout  # noqa: SLF001
            run._deadline = _monotonic() + timeout  # noqa: SLF001
        if _logging_enabled():
            run._log = True  # noqa: SLF001
            logger.info("run {run_id} started", run_id=run._run_id)  # noqa: SLF001
        return run

    @staticmethod
    def _begin(run: Run) -> Loop | None:
        """Start *run*: on the fast path when nothing calls for the full loop."""
        if run._deadline is not None or run._log:  # noqa: SLF001
            return execute(run)
        plan = run._plan  # noqa: SLF001
        run._stamps = stamps = [0] * plan.size  # noqa: SLF001
        stamps[0] = _clock_ns()
        bag = run._bag  # noqa: SLF001
        stopped = plan.fast(run, run._input, bag._precheck, bag._job, stamps)  # noqa: SLF001
        return None if stopped < 0 else hand_over(run, stopped)

    @staticmethod
    def _finish(run: Run) -> RunResult[InputT]:
        if run._log:  # noqa: SLF001
            if run._fatal is None:  # noqa: SLF001
                logger.info("run {run_id} finished ok", run_id=run._run_id, errors=len(run._errors))  # noqa: SLF001
            else:
                logger.info(
                    "run {run_id} stopped: {fatal!r}",
                    run_id=run._run_id,  # noqa: SLF001
                    fatal=run._fatal,  # noqa: SLF001
                    errors=len(run._errors),  # noqa: SLF001
                )
        return result_of(run)

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
        if self._store is not None:
            return self._run_durable(input, key, values, timeout, fresh=fresh)
        if key is not None or fresh:
            msg = "key= and fresh= are for durable runs: create the coordinator with store=..."
            raise TypeError(msg)
        if timeout is None and values is None and not _logging_enabled():
            # The common case, inlined: every call here is paid once per record.
            plan = self._plan
            run = Run(plan, input, _EMPTY, next(_run_ids))
            run._stamps = stamps = [0] * plan.size  # noqa: SLF001
            token = _current.set(run)
            try:
                stamps[0] = _clock_ns()
                bag = run._bag  # noqa: SLF001
                stopped = plan.fast(run, input, bag._precheck, bag._job, stamps)  # noqa: SLF001
                if stopped >= 0:
                    drive(hand_over(run, stopped), run)
            finally:
                _current.reset(token)
            return result_of(run)
        run = self._start(input, values, timeout)
        token = _current.set(run)
        try:
            loop = self._begin(run)
            if loop is not None:
                drive(loop, run)
        finally:
            _current.reset(token)
        return self._finish(run)

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
        is written from the loop's thread (each write is a short SQLite
        transaction).

        .. versionadded:: 0.1.0
        """
        if self._store is not None:
            give_up = _monotonic() + self._store.lease + 1.0
            prepared = self._prepare(input, key, values, timeout, fresh=fresh)
            while isinstance(prepared, str):  # another process runs the key: wait for it
                if _monotonic() >= give_up:
                    return self._busy(input, key, prepared)
                await asyncio.sleep(_POLL)
                prepared = self._prepare(input, key, values, timeout, fresh=fresh)
            if isinstance(prepared, RunResult):
                return prepared
            run, session = prepared
            token = _current.set(run)
            try:
                await drive_async(execute(run), run)
            except BaseException:
                session.release()
                raise
            finally:
                _current.reset(token)
            session.finish(_status(run), run._fatal, _stopped_at(run), run._calls or ())  # noqa: SLF001
            return self._finish(run)
        if key is not None or fresh:
            msg = "key= and fresh= are for durable runs: create the coordinator with store=..."
            raise TypeError(msg)
        run = self._start(input, values, timeout)
        token = _current.set(run)
        try:
            loop = self._begin(run)
            if loop is not None:
                await drive_async(loop, run)
        finally:
            _current.reset(token)
        return self._finish(run)

    # -- durable runs ---------------------------------------------------------

    def _run_durable(
        self,
        input: object,  # noqa: A002
        key: str | int | None,
        values: Mapping[str, object] | None,
        timeout: float | None,
        *,
        fresh: bool,
    ) -> RunResult[InputT]:
        give_up = _monotonic() + self._store.lease + 1.0  # type: ignore[union-attr]  # durable here
        prepared = self._prepare(input, key, values, timeout, fresh=fresh)
        while isinstance(prepared, str):  # another process runs the key: wait for it
            if _monotonic() >= give_up:
                return self._busy(input, key, prepared)
            time.sleep(_POLL)
            prepared = self._prepare(input, key, values, timeout, fresh=fresh)
        if isinstance(prepared, RunResult):
            return prepared
        run, session = prepared
        token = _current.set(run)
        try:
            drive(execute(run), run)
        except BaseException:
            session.release()  # interrupted: the next run of the key resumes it
            raise
        finally:
            _current.reset(token)
        session.finish(_status(run), run._fatal, _stopped_at(run), run._calls or ())  # noqa: SLF001
        return self._finish(run)

    def _busy(self, input: object, key: str | int | None, owner: str) -> RunResult[InputT]:  # noqa: A002
        """The result of a run that waited too long for another process to release its key."""
        name = self._durable_key(input, key)
        return result_of(Finished(input, (), KeyBusy(name, owner), DataBag(), 0, name, (), ()))

    def _durable_key(self, input: object, key: str | int | None) -> str:  # noqa: A002
        if key is None:
            if self._key is None:
                msg = "a durable run needs a key: pass run(..., key=...) or Coordinator(key=...)"
                raise TypeError(msg)
            key = self._key(input)  # type: ignore[arg-type]
        if isinstance(key, bool) or not isinstance(key, str | int):
            msg = f"a durable run's key must be a str or an int, got {type_name(key)}"
            raise TypeError(msg)
        key = str(key)
        if not key:
            msg = "a durable run's key must not be empty"
            raise ValueError(msg)
        return key

    def _prepare(
        self,
        input: object,  # noqa: A002
        key: str | int | None,
        values: Mapping[str, object] | None,
        timeout: float | None,
        *,
        fresh: bool,
    ) -> tuple[Run, StoreSession] | RunResult[InputT] | str:
        """
        Take the key's lease and set the run up from what the store knows.

        Returns:
            The run and its recorder; or the result, when nothing is to run
            (the key finished ok, or is poisoned); or, while another live
            process holds the key, who holds it.
        """
        store = self._store
        assert store is not None  # noqa: S101 - only called for durable coordinators
        name = self._durable_key(input, key)
        if timeout is not None:
            validate_timeout(timeout, "timeout")
        if values is not None:
            _snapshot(values)  # refuse bad arguments before the key is taken
        begun = store.begin(name, input, fresh=fresh)
        if isinstance(begun, str):
            return begun
        if begun.status == "ok":
            return result_of(stored_result(store, name, begun))
        if begun.status == "poisoned":
            fatal = PoisonedRun(name, begun.interruptions)
            return result_of(Finished(input, (), fatal, DataBag(), 0, name, (), ()))
        session = store.session(name, begun)
        try:
            run = self._start(input, values, timeout)
            run._key = name  # noqa: SLF001
            run._recorder = session  # noqa: SLF001
            run._restored = begun.restored or None  # noqa: SLF001
            run._attempt_base = begun.attempts or None  # noqa: SLF001
            run._compensated = begun.compensated  # noqa: SLF001
            if begun.status == "compensating":
                self._resume_rollback(run, begun)
        except BaseException:
            session.release()  # nothing ran: give the key back as it was
            raise
        return run, session

    def _resume_rollback(self, run: Run, begun: Resumption) -> None:
        """Set up a run whose rollback was interrupted: restore what completed, then compensate."""
        fatal = begun.fatal if begun.fatal is not None else StoredError("unknown", "the fatal error was not recorded")
        run._rollback = True  # noqa: SLF001
        run._fatal = fatal  # noqa: SLF001
        # The result shows the run as it stood: every callback's latest outcome,
        # but for the failed compensations, which run again now.
        replay = Replay.latest(self._store, run._key or "", begun.generation)  # type: ignore[arg-type]  # noqa: SLF001
        run._calls = [call for call in replay.calls if call[1] != "compensate" or call[2] == "ok"]  # noqa: SLF001
        run._errors.extend(replay.errors)  # noqa: SLF001
        run._bag._job.update(replay.bag._job)  # noqa: SLF001
        run._bag._precheck.update(replay.bag._precheck)  # noqa: SLF001
        failed_step = str(getattr(fatal, "step", "")).casefold()
        run._completed = [  # noqa: SLF001
            st
            for st in run._plan.steps  # noqa: SLF001
            if (st.key in begun.restored and begun.restored[st.key].job_ok)
            or (st.compensate_failed and st.key == failed_step)
        ]

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
        if self._store is None:
            msg = "resume() needs a durable coordinator: create it with store=..."
            raise TypeError(msg)
        stored: InputT = self._store.stored_input(self._durable_key(None, key))  # type: ignore[assignment]
        return self.run(stored, values=values, timeout=timeout, key=key)

    def run_many(
        self,
        inputs: Iterable[InputT],
        *,
        workers: int | None = None,
        values: Mapping[str, object] | None = None,
        ordered: bool = False,
        timeout: float | None = None,
        fresh: bool = False,
    ) -> Generator[RunResult[InputT], None, None]:
        """
        Run the steps once per input, on a pool of threads.

        *inputs* is consumed lazily, so memory stays bounded for any number
        of inputs: at most ``2 * workers`` tasks are in flight, each a batch of
        inputs run one after the other. Batches start at one input and grow
        (up to 256) only while runs are short, to amortise the pool's cost per
        task; slow runs keep one input per task, spread over every worker.
        Runs are isolated: a fatal error in one never affects another.
        Closing the iterator (or dropping it) stops submitting, waits for the runs in flight and shuts
        the pool down.

        Args:
            inputs: Any iterable but a ``str`` or ``bytes``.
            workers: Threads (default: ``min(32, cpu_count + 4)``).
            values: As in `run`, shared by every run.
            ordered: Yield results in input order instead of as they complete.
            timeout: As in `run`, per run.
            fresh: As in `run`: run durable keys that finished from scratch.

        With a store, each input's key comes from the coordinator's ``key``:
        keys that finished ok are not run again (their stored result is
        yielded), the others resume where they stopped.

        Raises:
            TypeError: *inputs* is a ``str``, ``bytes`` or not iterable; or the
                coordinator has a store but no ``key``.
            ValueError: *workers* < 1.

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
        if workers is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
        elif isinstance(workers, bool) or not isinstance(workers, int):
            msg = f"workers must be an int, got {type_name(workers)}"
            raise TypeError(msg)
        elif workers < 1:
            msg = f"workers must be >= 1, got {workers}"
            raise ValueError(msg)
        validate_timeout(timeout, "timeout")
        shared = None if values is None else _snapshot(values)
        if self._store is not None and self._key is None:
            msg = "a durable run_many needs Coordinator(key=...) to derive each input's key"
            raise TypeError(msg)
        if fresh and self._store is None:
            msg = "fresh= is for durable runs: create the coordinator with store=..."
            raise TypeError(msg)
        return self._many(iterator, workers, shared, ordered=ordered, timeout=timeout, fresh=fresh)

    def _many(
        self,
        inputs: Iterator[InputT],
        workers: int,
        values: Mapping[str, object] | None,
        *,
        ordered: bool,
        timeout: float | None,
        fresh: bool,
    ) -> Generator[RunResult[InputT], None, None]:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="choreograph")
        batches = _Batches(self, inputs, {"values": values, "timeout": timeout} | ({"fresh": True} if fresh else {}))
        try:
            yield from batches.ordered(pool, workers) if ordered else batches.unordered(pool, workers)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def __contains__(self, name: object) -> bool:
        """Tell whether a step of this name (in any case) was added."""
        return isinstance(name, str) and name.casefold() in self._plan.names

    def __len__(self) -> int:
        """Return the number of steps."""
        return len(self._plan.steps)

    def __repr__(self) -> str:
        return f"Coordinator(steps={[c.name for c in self._plan.steps]!r})"
