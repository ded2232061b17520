"""
`ProcessExecutor`: runs in worker processes, for flows whose callbacks compute in Python.

The flow travels by reference: `ShippableJob.ship` packs a recipe of the
coordinator (its steps, whose callbacks are importable functions, its
options, its store's configuration) that each worker process unpickles once,
importing the callbacks' modules and rebuilding the coordinator. Then each
input travels pickled to a worker, and its run's report (its result and, when
the calling process listens, its events) pickled back; the calling thread
gives the events to the listeners, then yields the result.

Start method: ``"forkserver"`` where the platform has it, else ``"spawn"``.
``fork`` is refused: it copies the calling process with its threads' locks
held (a branch pool, a logging sink, a store's connection), and the child
can deadlock on them. A forkserver is a clean single-threaded process, started
once per calling process (it imports the main module, as spawn does); each
worker is then a fork of it, so workers start in milliseconds instead of the
interpreter start and imports that every spawned worker pays.

Each worker has a pipe of its own each way. Inputs travel in chunks, several
to a message: one input each at first, then as many as about 10 ms of runs
(from how long runs take in the workers; 64 at most). The calling thread
sends a worker a chunk when it holds at most one (its run, the rest of its
chunk) and the window has room (``2 * workers`` inputs taken and not yet
yielded, growing by one per result yielded, up to 1,024 more), the emptiest
worker first. Each run's report comes back in a message of its own, sent
before the worker starts its next run; the calling thread waits on the
workers' pipes and their process sentinels at once (a worker that dies is
seen at once), takes what every pipe has, and, while every worker holds more
than a chunk, lets reports pile up for a few milliseconds between
wake-ups, as each wake-up costs more than the reports it takes. A thread in
each worker reads its pipe, so the calling thread never blocks on a busy worker.

A worker that dies (``os._exit`` in a callback, a signal, a crash) gives
the record it was running a failed result (`InputError`, whose error is a
`ChildProcessError` with the exit code); the records waiting for it (the
rest of its chunks) go to the other workers, and a new worker takes its
place. A worker that can't rebuild the flow (a module that won't import
there) stops the batch with that error.

Closing the iterator, an interruption of the calling thread
(``KeyboardInterrupt``) or the end of the inputs stops taking inputs: each
worker finishes the run it has (those waiting for it are dropped), and
exits; the calling thread waits for them (a second interruption kills them).
The workers ignore SIGINT, so that Ctrl-C in a terminal, sent to every
process of the group, reaches only the calling process. They are daemonic
processes: none outlives the calling process.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import queue
import selectors
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Generator, Iterator
from typing import Any, Final, Generic, Protocol, TypeVar

from .._core.callbacks import type_name
from .._core.result import RunResult
from . import _window
from .protocol import RemoteJob, RunJob, ShippableJob
from .tasks import Order

InputT = TypeVar("InputT")

#: Seconds of a worker's runs that one message of inputs carries, once the runs' pace is known.
_CHUNK_SECONDS: Final = 0.01
#: The most inputs in one message.
_MAX_CHUNK: Final = 64
#: The longest the calling thread lets reports pile up while every worker has a chunk to go on with (seconds).
_NAP: Final = 0.005
#: What a message from a worker is (after the record's position, 8 bytes; then its run's nanoseconds, 8 bytes).
_REPORT, _UNREADABLE, _RAISED, _BROKEN, _READY = b"r", b"u", b"x", b"b", b"k"
_STOP: Final = b""


class _Channel(Protocol):
    """One end of a `multiprocessing.Pipe` (`multiprocessing.connection.Connection`, imported when a pool starts)."""

    def send_bytes(self, buf: bytes) -> None: ...
    def recv_bytes(self) -> bytes: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...
    def close(self) -> None: ...


def default_processes() -> int:
    """The number of CPUs."""
    return os.cpu_count() or 1


def check_processes(workers: object) -> int:
    """
    Check a number of worker processes: ``None`` (the default: the number of CPUs) or an int >= 1.

    >>> check_processes(2)
    2
    """
    if workers is None:
        return default_processes()
    if isinstance(workers, bool) or not isinstance(workers, int):
        msg = f"workers must be an int, got {type_name(workers)}"
        raise TypeError(msg)
    if workers < 1:
        msg = f"workers must be >= 1, got {workers}"
        raise ValueError(msg)
    return workers


def _header(position: int, kind: bytes, nanoseconds: int = 0) -> bytes:
    return position.to_bytes(8, "little", signed=True) + kind + nanoseconds.to_bytes(8, "little")


def _describe(error: BaseException) -> bytes:
    """An error, pickled for the calling process; its text and traceback when the error itself doesn't pickle."""
    try:
        return pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - anything may fail to pickle: send its text instead
        text = "".join(traceback.format_exception(error)).rstrip()
        return pickle.dumps(RuntimeError(f"{type(error).__name__}: {error} (in a worker process)\n{text}"))


class ProcessExecutor:
    """
    Run in *workers* worker processes: for flows whose callbacks compute in Python (one run at a time per process).

    Steps travel by reference: their callbacks (and the key function, the
    resource factories, the ``values=`` of the batch) must pickle, that is,
    be importable module-level functions and objects; `map` raises a
    `TypeError` naming the first that doesn't before it takes any input.
    Inputs and results are pickled; a durable coordinator's store is opened
    again in each worker from its configuration (a `SqliteStore`'s path and
    options; a `MemoryStore` can't be shared between processes).

    Args:
        workers: Worker processes (default: the number of CPUs).
        start_method: ``"forkserver"`` (the default where available) or
            ``"spawn"``; ``"fork"`` is refused (it is unsafe in a process
            with threads).

    Raises:
        ValueError: Another start method, or one the platform lacks.

    .. versionadded:: 0.4.0
    """

    def __init__(self, workers: int | None = None, *, start_method: str | None = None) -> None:
        self.workers = check_processes(workers)
        available = multiprocessing.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in available else "spawn"
        if start_method not in ("forkserver", "spawn"):
            msg = (
                f"start_method must be 'forkserver' or 'spawn', got {start_method!r}"
                " ('fork' copies the calling process's threads' locks: unsafe here)"
            )
            raise ValueError(msg)
        if start_method not in available:
            msg = f"start method {start_method!r} is not available here (available: {', '.join(available)})"
            raise ValueError(msg)
        self.start_method = start_method

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers}, start_method={self.start_method!r})"

    def map(self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """
        Yield one result per input (see `Executor.map`); closing the iterator stops the workers.

        Raises:
            TypeError: *job* can't run in other processes: it is not a
                coordinator's run, or something it needs doesn't pickle (the
                message names it). Raised by this call, before any input is taken.
        """
        if not isinstance(job, ShippableJob):
            msg = f"ProcessExecutor runs a coordinator's runs (a ShippableJob), got {type_name(job)}"
            raise TypeError(msg)
        recipe = job.ship()
        return self._map(job, recipe, inputs, ordered=ordered)

    def _map(
        self, job: ShippableJob[InputT], recipe: bytes, inputs: Iterator[InputT], *, ordered: bool
    ) -> Generator[RunResult[InputT], None, None]:
        pool = _Pool(job, recipe, inputs, self.workers, self.start_method)
        try:
            yield from pool.results(ordered=ordered)
        finally:
            pool.stop()


class _Worker:
    """A worker process, seen from the calling process: its pipes, and the inputs it holds (the first is running)."""

    def __init__(self, context: Any, recipe: bytes, number: int) -> None:
        tasks_out, tasks_in = context.Pipe(duplex=False)
        results_out, results_in = context.Pipe(duplex=False)
        self.process = context.Process(
            target=serve,
            args=(recipe, tasks_out, results_in),
            name=f"choreograph-process-{number}",
            daemon=True,
        )
        self.process.start()
        tasks_out.close()  # the child's ends: closed here, so that a dead child shows as an end of file
        results_in.close()
        self.tasks: _Channel = tasks_in
        self.results: _Channel = results_out
        self.held: deque[tuple[int, object]] = deque()
        self.ready = False
        self.stopped = False

    def send(self, chunk: list[tuple[int, bytes]]) -> bool:
        """Send inputs (their positions, and each pickled) in one message; False if the worker is gone."""
        try:
            self.tasks.send_bytes(pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL))
        except OSError:  # a broken pipe: the worker died, which its sentinel tells
            return False
        return True

    def stop(self) -> None:
        """Ask the worker to finish the run it has and exit."""
        if not self.stopped:
            self.stopped = True
            with contextlib.suppress(OSError):  # it died: nothing to stop
                self.tasks.send_bytes(_STOP)

    def close(self) -> None:
        self.tasks.close()
        self.results.close()


class _Waiter:
    """
    Waits on the workers' pipes and process sentinels at once: ``(worker, True)`` for a pipe, ``False`` for an end.

    One poll object for the whole batch where the platform has it: `multiprocessing.connection.wait`
    makes and fills one per call, which cost more than the rest of a record's handling here.
    """

    def __init__(self) -> None:
        self._selector = selectors.PollSelector() if hasattr(selectors, "PollSelector") else None
        self._workers: list[_Worker] = []

    def add(self, worker: _Worker) -> None:
        self._workers.append(worker)
        if self._selector is not None:
            self._selector.register(worker.results, selectors.EVENT_READ, (worker, True))  # type: ignore[arg-type]
            self._selector.register(worker.process.sentinel, selectors.EVENT_READ, (worker, False))

    def remove(self, worker: _Worker) -> None:
        self._workers.remove(worker)
        if self._selector is not None:
            self._selector.unregister(worker.results)  # type: ignore[arg-type]
            self._selector.unregister(worker.process.sentinel)

    def wait(self, timeout: float | None) -> list[tuple[_Worker, bool]]:
        if self._selector is not None:
            return [key.data for key, _ in self._selector.select(timeout)]
        from multiprocessing.connection import wait  # noqa: PLC0415  # pragma: no cover - Windows: no poll()

        owners: dict[Any, tuple[_Worker, bool]] = {w.results: (w, True) for w in self._workers}  # pragma: no cover
        owners |= {worker.process.sentinel: (worker, False) for worker in self._workers}  # pragma: no cover
        return [owners[ready] for ready in wait(list(owners), timeout)]  # pragma: no cover - Windows

    def close(self) -> None:
        if self._selector is not None:
            self._selector.close()


class _Pool(Generic[InputT]):
    """The worker processes of one `ProcessExecutor.map` call, fed and read by the calling thread."""

    def __init__(
        self, job: ShippableJob[InputT], recipe: bytes, inputs: Iterator[InputT], workers: int, method: str
    ) -> None:
        self._job, self._recipe, self._inputs = job, recipe, inputs
        self._context = multiprocessing.get_context(method)
        if method == "forkserver":
            _preload(self._context)
        self._size = workers
        self._window = _window.start(workers)
        self._chunk = 1  # inputs per message: one until the runs' pace is known (see `_pace`)
        self._per_run = 0.0  # seconds a run takes in a worker (a moving average), once known
        self._workers: list[_Worker] = []
        self._started = 0
        self._taken = 0
        self._yielded = 0
        self._exhausted = False
        self._stopping = False
        self._again: deque[tuple[int, object]] = deque()  # inputs of a dead worker it never started
        self._done: deque[tuple[int, RunResult[InputT]]] = deque()
        self._waiter = _Waiter()

    def _start(self) -> None:
        worker = _Worker(self._context, self._recipe, self._started)
        self._workers.append(worker)
        self._waiter.add(worker)
        self._started += 1

    def _next(self) -> tuple[int, object] | None:
        """The next input to send, or None."""
        if self._again:
            return self._again.popleft()
        if self._exhausted or _window.full(self._taken, self._yielded, self._window):
            return None
        try:
            item = next(self._inputs)
        except StopIteration:
            self._exhausted = True
            return None
        position = self._taken
        self._taken = position + 1
        return position, item

    def _feed(self) -> None:
        """
        Send inputs while the window has room to each worker holding at most a chunk, the emptiest first.

        A worker then holds its run, the rest of its chunk and the next
        chunk, so that it never waits for the calling process between runs.
        """
        if self._stopping:
            return
        for worker in sorted(self._workers, key=lambda worker: len(worker.held)):
            if worker.stopped or len(worker.held) > self._chunk:
                continue
            chunk: list[tuple[int, bytes]] = []
            held: list[tuple[int, object]] = []
            while len(chunk) < self._chunk and (taken := self._next()) is not None:
                position, item = taken
                try:
                    data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001 - that record's failure, not the batch's
                    self._done.append((position, self._job.failed(item, position, exc)))  # type: ignore[arg-type]
                    continue
                chunk.append((position, data))
                held.append(taken)
            if not chunk:
                return
            if worker.send(chunk):
                worker.held.extend(held)
            else:  # it died: its sentinel says so, and the inputs go to another
                self._again.extendleft(reversed(held))

    def _pace(self, nanoseconds: int) -> None:
        """Size the chunks from how long runs take in the workers: about `_CHUNK_SECONDS` of runs each."""
        seconds = nanoseconds / 1e9
        self._per_run = per_run = seconds if self._per_run == 0.0 else 0.9 * self._per_run + 0.1 * seconds
        self._chunk = max(1, min(_MAX_CHUNK, int(_CHUNK_SECONDS / per_run) if per_run > 0 else _MAX_CHUNK))

    def _nap(self) -> None:
        """
        Let reports pile up for a few milliseconds while every worker has a chunk of inputs to go on with.

        Each wake-up of the calling thread costs more than handling a report
        (a context switch, cold caches), so one wake-up takes several: a
        worker never waits for it, as it holds at least a chunk more.
        """
        workers = self._workers
        if self._chunk > 1 and workers and all(len(worker.held) > self._chunk for worker in workers):
            time.sleep(min(_NAP, self._chunk * self._per_run / 2))

    def results(self, *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """Yield the results as they come (or in input order) until every input has one."""
        for _ in range(self._size):
            self._start()
        order: Order[InputT] = Order(ordered=ordered)
        while True:
            while self._done:
                for result in order.add(*self._done.popleft()):
                    self._yielded += 1
                    yield result
            self._feed()
            if self._done:  # inputs that can't be pickled: their results first
                continue
            if self._exhausted and not self._again and not any(worker.held for worker in self._workers):
                return
            self._nap()
            self._wait()

    def _wait(self) -> None:
        """Wait for messages from the workers or for a worker's end; take them, one per pipe, while there are more."""
        ready = self._waiter.wait(None)
        rounds = 0
        while ready:
            for worker, pipe in ready:
                if worker not in self._workers:  # it ended earlier in this round
                    continue
                if not pipe:
                    self._ended(worker)
                    continue
                try:
                    message = worker.results.recv_bytes()
                except (EOFError, OSError):
                    self._ended(worker)
                else:
                    self._message(worker, message)
            rounds += 1
            # What else is there already, without waiting (a bounded number of rounds: inputs are sent between).
            ready = self._waiter.wait(0.0) if rounds < _MAX_CHUNK else []

    def _ended(self, worker: _Worker) -> None:
        """*worker*'s process ended: take what it sent before, and deal with what it held."""
        try:
            while True:  # its end of the pipe is closed: what is left, then the end of file
                self._message(worker, worker.results.recv_bytes())
        except (EOFError, OSError):
            pass
        worker.process.join()
        self._workers.remove(worker)
        self._waiter.remove(worker)
        worker.close()
        if not worker.ready:
            code = worker.process.exitcode
            msg = f"a worker process of ProcessExecutor exited with code {code} before it could run anything"
            raise ChildProcessError(msg)
        if worker.held:
            position, item = worker.held.popleft()
            code = worker.process.exitcode
            died = ChildProcessError(f"the worker process running this record died (exit code {code})")
            self._done.append((position, self._job.failed(item, position, died)))  # type: ignore[arg-type]
            self._again.extendleft(reversed(worker.held))  # never started: the other workers run them
            worker.held.clear()
        if not self._stopping:
            self._start()

    def _message(self, worker: _Worker, message: bytes) -> None:
        position, kind, payload = int.from_bytes(message[:8], "little", signed=True), message[8:9], message[17:]
        if kind == _READY:
            worker.ready = True
            return
        if kind == _BROKEN:
            error = pickle.loads(payload)  # noqa: S301 - from our own worker process
            error.add_note("raised in a worker process of ProcessExecutor, while it rebuilt the flow from its recipe")
            raise error
        held_position, item = worker.held.popleft()
        assert held_position == position  # noqa: S101 - a worker runs its inputs in order
        self._pace(int.from_bytes(message[9:17], "little"))
        if kind == _RAISED:  # a BaseException (KeyboardInterrupt, SystemExit) went through a run: it stops the batch
            if not self._stopping:
                raise pickle.loads(payload)  # noqa: S301 - from our own worker process
            return
        try:
            if kind == _UNREADABLE:
                error = pickle.loads(payload)  # noqa: S301 - from our own worker process
                result = self._job.failed(item, position, error)  # type: ignore[arg-type]
            else:
                result = self._job.receive(payload)
        except Exception as exc:  # noqa: BLE001 - a report that can't be unpickled here (a class only the worker has)
            result = self._job.failed(item, position, exc)  # type: ignore[arg-type]
        if not self._stopping:
            self._done.append((position, result))

    def stop(self) -> None:
        """Stop taking inputs; let each worker finish its run and exit; wait for them (a second interruption kills)."""
        self._stopping = True
        for worker in self._workers:
            worker.stop()
        try:
            while self._workers:
                with contextlib.suppress(Exception):  # stopping anyway: what a worker raised is dropped
                    self._wait()
        finally:
            for worker in self._workers:  # only after a second interruption
                worker.process.kill()
                worker.process.join()
                worker.close()
            self._workers.clear()
            self._waiter.close()


def _preload(context: Any) -> None:
    """
    Have the forkserver import choreograph when it starts, so that each worker, a fork of it, has it already.

    Python 3.11's forkserver doesn't import the main module it is told to
    preload, so without this every worker would import choreograph (and its
    dependencies) itself. The flow's own modules are imported by each worker
    when it unpickles the recipe: importing them in the forkserver could
    start threads there, which would make forking it unsafe. The list keeps
    what was set with `multiprocessing.set_forkserver_preload`; once the
    forkserver runs, setting it changes nothing.
    """
    from multiprocessing import forkserver  # noqa: PLC0415 - only for a forkserver

    server = getattr(forkserver, "_forkserver", None)  # the list isn't public: read it if it is where 3.11-3.13 keep it
    current = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if "choreograph" not in current:
        context.set_forkserver_preload([*current, "choreograph"])


# -- in the worker process ------------------------------------------------------


def serve(recipe: bytes, tasks: _Channel, results: _Channel) -> None:
    """
    A worker process's life: rebuild the job from *recipe*, then run each input *tasks* brings, in order.

    A thread reads *tasks* into a queue, so that the calling process never
    waits for this one to finish a run before it can send the next input.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the calling process's: it stops the batch
    try:
        job: RemoteJob[object] = pickle.loads(recipe)  # noqa: S301 - from the calling process
        is_async = job.is_async
    except BaseException as exc:  # noqa: BLE001 - sent to the calling process, which raises it
        results.send_bytes(_header(-1, _BROKEN) + _describe(exc))
        return
    results.send_bytes(_header(-1, _READY))
    inbox: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
    stopping = threading.Event()

    def read() -> None:
        try:
            while message := tasks.recv_bytes():
                for entry in pickle.loads(message):  # noqa: S301 - from the calling process
                    inbox.put(entry)
        except (EOFError, OSError):  # the calling process went away
            pass
        stopping.set()
        inbox.put(None)

    threading.Thread(target=read, name="choreograph-inbox", daemon=True).start()
    try:
        if is_async:
            asyncio.run(_serve_async(job, inbox, stopping, results))
        else:
            while (entry := inbox.get()) is not None and not stopping.is_set():
                position, item = _input(entry, results)
                if position >= 0:
                    started = time.perf_counter_ns()
                    report = _guarded(job.run, item, position, results)
                    results.send_bytes(_header(position, _REPORT, time.perf_counter_ns() - started) + report)
    finally:
        job.close()


async def _serve_async(
    job: RemoteJob[object],
    inbox: queue.SimpleQueue[tuple[int, bytes] | None],
    stopping: threading.Event,
    results: _Channel,
) -> None:
    """The worker's runs of an ``async def`` flow: one event loop, one run at a time (waiting for input blocks it)."""
    while (entry := inbox.get()) is not None and not stopping.is_set():
        position, item = _input(entry, results)
        if position < 0:
            continue
        started = time.perf_counter_ns()
        try:
            report = await job.run_async(item, position)
        except BaseException as exc:
            results.send_bytes(_header(position, _RAISED) + _describe(exc))
            raise
        results.send_bytes(_header(position, _REPORT, time.perf_counter_ns() - started) + report)


def _input(entry: tuple[int, bytes], results: _Channel) -> tuple[int, object]:
    """An input's position and the input; ``(-1, None)`` if it can't be unpickled here (reported as such)."""
    position, data = entry
    try:
        return position, pickle.loads(data)  # noqa: S301 - from the calling process
    except Exception as exc:  # noqa: BLE001 - that record's failure
        results.send_bytes(_header(position, _UNREADABLE) + _describe(exc))
        return -1, None


def _guarded(run: Any, item: object, position: int, results: _Channel) -> bytes:
    """``run(item, position)``; a `BaseException` through it is told to the calling process first."""
    try:
        report: bytes = run(item, position)
    except BaseException as exc:
        results.send_bytes(_header(position, _RAISED) + _describe(exc))
        raise
    return report
