"""The Coordinator: holds the steps and runs them, once per input."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import MappingProxyType
from typing import Final, Generic, TypeVar

from loguru import logger

from ._context import _current
from ._engine import CompiledStep, Loop, Plan, Run, drive, drive_async, execute, hand_over
from ._errors import StepDefinitionError
from ._result import RunResult, result_of
from ._retry import RetryPolicy, as_policy
from ._step import Callback, Step, compile_callback, type_name, validate_timeout

InputT = TypeVar("InputT")
F = TypeVar("F", bound=Callable[..., object])

_EMPTY: Final[Mapping[str, object]] = MappingProxyType({})
_run_ids: Final = itertools.count(1)
_clock_ns: Final = time.perf_counter_ns
_monotonic: Final = time.monotonic


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
        return core.enabled.get(__name__, True) is not False  # type: ignore[no-any-return]
    except AttributeError:  # pragma: no cover - a future loguru without these internals
        return True


class Coordinator(Generic[InputT]):
    """
    An ordered list of steps, run once per input.

    One coordinator may run from many threads and tasks at once: each run has
    its own DataBag, error stack and context. Adding steps while runs are going
    on is safe; runs already started keep the steps they started with.

    Args:
        steps: Steps to add, in order (see `add_step`).

    .. versionadded:: 0.1.0
    """

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self._lock = threading.Lock()
        self._plan = Plan(())
        for step in steps:
            self.add_step(step)

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

    def run(
        self,
        input: InputT | None = None,  # noqa: A002 - the contract's name
        *,
        values: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> RunResult[InputT]:
        """
        Run the steps once, for *input*, and return what happened.

        Works whatever the callbacks are: ``async def`` callbacks are driven on
        an event loop of the run's own. Called inside a running event loop,
        that loop is blocked until the run ends: there, prefer `run_async`.

        Args:
            input: Passed to every callback that takes an input.
            values: Made available, read-only, as ``ctx.values``.
            timeout: Seconds from now; once passed, no callback starts and the
                run stops with `RunCancelled`. ``0`` means already expired.

        Raises:
            ValueError: *timeout* is negative.
            TypeError: *values* is not a mapping, *timeout* not a number.

        .. versionadded:: 0.1.0
        """
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

    async def run_async(
        self,
        input: InputT | None = None,  # noqa: A002 - the contract's name
        *,
        values: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> RunResult[InputT]:
        """
        Run the steps once inside the running event loop (see `run`).

        Plain callbacks run in the loop's thread, as in `run`. When *timeout*
        expires while an ``async def`` callback is awaited, that callback is
        cancelled and the run stops with `RunCancelled`.

        .. versionadded:: 0.1.0
        """
        run = self._start(input, values, timeout)
        token = _current.set(run)
        try:
            loop = self._begin(run)
            if loop is not None:
                await drive_async(loop, run)
        finally:
            _current.reset(token)
        return self._finish(run)

    def run_many(
        self,
        inputs: Iterable[InputT],
        *,
        workers: int | None = None,
        values: Mapping[str, object] | None = None,
        ordered: bool = False,
        timeout: float | None = None,
    ) -> Iterator[RunResult[InputT]]:
        """
        Run the steps once per input, on a pool of threads.

        *inputs* is consumed lazily: at most ``2 * workers`` runs are submitted
        ahead of the consumer, so memory stays bounded for any number of
        inputs. Runs are isolated: a fatal error in one never affects another.
        Closing the iterator (or dropping it, or leaving a ``with`` block
        around it) stops submitting, waits for the runs in flight and shuts
        the pool down.

        Args:
            inputs: Any iterable but a ``str`` or ``bytes``.
            workers: Threads (default: ``min(32, cpu_count + 4)``).
            values: As in `run`, shared by every run.
            ordered: Yield results in input order instead of as they complete.
            timeout: As in `run`, per run.

        Raises:
            TypeError: *inputs* is a ``str``, ``bytes`` or not iterable.
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
        return self._many(iterator, workers, shared, ordered=ordered, timeout=timeout)

    def _many(
        self,
        inputs: Iterator[InputT],
        workers: int,
        values: Mapping[str, object] | None,
        *,
        ordered: bool,
        timeout: float | None,
    ) -> Iterator[RunResult[InputT]]:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="choreograph")
        window = 2 * workers
        submit = pool.submit
        run = self.run
        try:
            if ordered:
                queue: deque[Future[RunResult[InputT]]] = deque()
                for item in inputs:
                    queue.append(submit(run, item, values=values, timeout=timeout))
                    if len(queue) >= window:
                        yield queue.popleft().result()
                while queue:
                    yield queue.popleft().result()
                return
            pending: set[Future[RunResult[InputT]]] = set()
            for item in inputs:
                pending.add(submit(run, item, values=values, timeout=timeout))
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
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
