"""
`DaskExecutor`: runs on the workers of a Dask cluster (extra ``choreograph[dask]``).

The flow travels as `ProcessExecutor`'s does: `ShippableJob.ship` packs the
coordinator's recipe (its steps, whose callbacks are importable functions,
its options, its store's configuration). The recipe goes to each Dask worker
once: it is the state of a `WorkerPlugin` registered for the batch, which the
scheduler hands to every worker, those that join later included. Each thread
of a worker that runs the batch's tasks rebuilds the coordinator from it once,
the first time; the plugin's teardown (when the batch ends, or the worker
closes) closes what they opened (their resources, their store).

Inputs travel in chunks: a task runs a chunk of records one after the other
and returns each run's report (its result and, when the calling process
listens, its events), which `ShippableJob.receive` turns back into a result
in the calling thread, giving the events to its listeners. A Dask task costs
the scheduler and the client a few milliseconds, so a chunk holds as many
records as the worker runs in about 100 ms (learnt from the chunks that came
back, from 1 at the start, at most 1,000), unless ``chunksize=`` fixes it;
when the inputs tell how many are left (a list, a range), at most a window's
share of them, so that the last chunks are small and the workers end together.

The window: at most ``window`` tasks (by default twice the cluster's threads
when the batch starts) are held at a time, so the scheduler never holds more
than that many of the batch's tasks; a new chunk is taken from the inputs and
submitted only when one came back (`distributed.as_completed`, fed with
``add``). With ``ordered=True`` the results that came early wait for those
before them; the records taken and not yet yielded stay within the window's
records plus as many as were yielded, up to 1,024 more.

Stopping (the iterator closed, ``KeyboardInterrupt`` in the calling thread,
or the end of the inputs): no chunk is submitted any more; the batch's plugin
is removed from the workers, so that a chunk that has not started runs nothing
and a chunk that is running stops after the record it is running; the calling
thread waits for the tasks the workers have (not for those queued on the
scheduler, or lost with a worker that died), then releases every future (a
second interruption cancels them without waiting). The results of the runs
that finished while stopping are dropped, as `ProcessExecutor` does.

A worker lost while it runs a chunk (it died, or left): the scheduler runs
the chunk again on another worker, up to its
``distributed.scheduler.allowed-failures`` (3 by default) for one that died,
then gives up with `distributed.KilledWorker`. The records of such a chunk
(and of any other lost with the same workers) then run again one at a time,
with nothing else of the batch in flight, so that only the record that kills
its worker gets a failed result (`InputError`, whose error is the
`KilledWorker`); the others run. Records are thus run again after a worker is
lost, which a durable coordinator makes safe: a key that finished is not run
again, and a run that was cut short resumes once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
import pickle
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from .._core.callbacks import type_name
from .._core.result import RunResult
from .protocol import RemoteJob, RunJob, ShippableJob
from .tasks import Order

try:
    import distributed
except ModuleNotFoundError as exc:  # pragma: no cover - the tests run with the extra
    if exc.name not in ("distributed", "dask"):
        raise
    msg = "DaskExecutor needs distributed: install the extra choreograph[dask] (pip install 'choreograph[dask]')"
    raise ImportError(msg, name=exc.name) from exc

InputT = TypeVar("InputT")

#: Untyped in distributed's annotations: called through these.
_as_completed: Any = distributed.as_completed
_wait: Any = distributed.wait

#: What a chunk aims at taking on a worker (seconds), so that a task's own cost stays small beside its runs.
_TARGET: Final = 0.1
#: Records in a chunk at most, when its size is learnt.
_MAX_CHUNK: Final = 1000
#: How far the window of records grows for ordered results, as `ThreadExecutor`'s.
_GROWTH: Final = 1024
#: How often a stopping batch looks again at which of its tasks the workers still have (seconds).
_SETTLING: Final = 0.5
#: Times a record that was not run (its worker stopped the batch's runs) is sent again before it fails.
_RESENDS: Final = 3
#: What a chunk's task says of each of its records.
_REPORT, _UNREADABLE, _RAISED, _NOT_RUN = "report", "unreadable", "raised", "not run"


def _check_count(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int, got {type_name(value)}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{name} must be >= 1, got {value}"
        raise ValueError(msg)
    return value


class DaskExecutor:
    """
    Run on the workers of a Dask cluster: ``run_many(inputs, executor=DaskExecutor(client))``.

    Steps travel by reference, as with `ProcessExecutor`: their callbacks (and
    the key function, the resource factories, the ``values=`` of the batch)
    must pickle, that is, be importable module-level functions and objects,
    importable on the workers too; `map` raises a `TypeError` naming the first
    that doesn't before it takes any input. Inputs and results are pickled. A
    durable coordinator's store is opened again on each worker from its
    configuration, so it must be one every worker reaches: a `SqliteStore`'s
    file for workers on one machine; a `MemoryStore` is refused.

    Each thread of a Dask worker is a worker in the sense of
    ``Coordinator(resources=...)``: it makes its resources the first time
    one of its runs reads them, and they are closed when the batch ends (or
    when the Dask worker closes), in the worker's event loop thread. Give
    the workers one thread each (``nthreads=1``) for one set per worker.

    Args:
        client: A `distributed.Client` connected to the cluster (not an
            asynchronous one).
        window: Tasks held at most, each a chunk of records (default: twice
            the cluster's threads when the batch starts, at least 2).
        chunksize: Records per task (default: learnt, so that a task runs
            for about 100 ms; ``chunksize=1`` sends each record alone).

    Raises:
        TypeError: *client* is not a synchronous `distributed.Client`, or
            *window* or *chunksize* is not an int.
        ValueError: *window* or *chunksize* < 1.

    .. versionadded:: 0.5.0
    """

    def __init__(self, client: distributed.Client, *, window: int | None = None, chunksize: int | None = None) -> None:
        given: object = client  # checked at run time whatever its annotation says
        if not isinstance(given, distributed.Client):
            msg = f"client must be a distributed.Client, got {type_name(client)}"
            raise TypeError(msg)
        if client.asynchronous:
            msg = (
                "DaskExecutor needs a synchronous distributed.Client, used outside its event loop"
                " (run_many is not a coroutine)"
            )
            raise TypeError(msg)
        self.client = client
        self.window = _check_count(window, "window")
        self.chunksize = _check_count(chunksize, "chunksize")

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r}, window={self.window}, chunksize={self.chunksize})"

    def map(self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """
        Yield one result per input (see `Executor.map`); closing the iterator stops the batch's tasks.

        The first ``next()`` hands the recipe to the workers: the error of a
        worker that can't rebuild the flow from it (a module it can't import)
        is raised there, with a note, before any input is taken.

        Raises:
            TypeError: *job* can't run in other processes: it is not a
                coordinator's run, or something it needs doesn't pickle (the
                message names it). Raised by this call, before any input is taken.
        """
        if not isinstance(job, ShippableJob):
            msg = f"DaskExecutor runs a coordinator's runs (a ShippableJob), got {type_name(job)}"
            raise TypeError(msg)
        recipe = job.ship()
        return self._map(job, recipe, inputs, ordered=ordered)

    def _map(
        self, job: ShippableJob[InputT], recipe: bytes, inputs: Iterator[InputT], *, ordered: bool
    ) -> Generator[RunResult[InputT], None, None]:
        batch = _Batch(self.client, job, recipe, inputs, self.window, self.chunksize)
        try:
            yield from batch.results(ordered=ordered)
        finally:
            batch.stop()


# -- in the calling process --------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    """The records of one task: their positions and inputs (for a failed result), and the task's future."""

    records: list[tuple[int, object]]
    future: Any = None
    alone: bool = False  # a suspect: run with nothing else of the batch in flight, after its workers died


@dataclass(slots=True)
class _Sizes:
    """The records per chunk: fixed, or learnt from the time chunks take on the workers."""

    fixed: int | None
    per_record: float | None = None
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = self.fixed or 1

    def learn(self, records: int, seconds: float) -> None:
        if self.fixed is not None or records == 0:
            return
        per = seconds / records
        self.per_record = per if self.per_record is None else 0.7 * self.per_record + 0.3 * per
        self.size = max(1, min(_MAX_CHUNK, int(_TARGET / max(self.per_record, 1e-7))))


class _Batch(Generic[InputT]):
    """The tasks of one `DaskExecutor.map` call, fed and read by the calling thread."""

    def __init__(
        self,
        client: distributed.Client,
        job: ShippableJob[InputT],
        recipe: bytes,
        inputs: Iterator[InputT],
        window: int | None,
        chunksize: int | None,
    ) -> None:
        # distributed's own annotations leave much of its API untyped: used as Any here.
        self._client: Any = client
        self._job, self._recipe, self._inputs = job, recipe, inputs
        self._window = window
        self._sizes = _Sizes(chunksize)
        self._name = f"choreograph-{uuid.uuid4().hex[:16]}"
        self._numbers = itertools.count()
        self._held: dict[str, _Chunk] = {}
        self._completed: Any = None  # a distributed.as_completed
        self._registered = False
        self._stopping = False
        self._exhausted = False
        self._taken = 0
        self._yielded = 0
        self._again: deque[tuple[int, object]] = deque()  # records that were not run: sent again
        self._suspects: deque[tuple[int, object]] = deque()  # records of tasks whose workers died: run alone
        self._resent: dict[int, int] = {}
        self._done: deque[tuple[int, RunResult[InputT]]] = deque()

    def _start(self) -> None:
        """Hand the recipe to every worker (each checks it rebuilds the flow); set the window."""
        self._registered = True  # the scheduler keeps the plugin even when a worker's setup raised: removed in stop
        try:
            self._client.register_plugin(_Plugin(self._name, self._recipe), name=self._name)
        except Exception as exc:
            exc.add_note("raised on a Dask worker, while it rebuilt the flow from the recipe of DaskExecutor")
            raise
        if self._window is None:
            threads = sum(self._client.nthreads().values())
            self._window = max(2, 2 * threads)
        self._completed = _as_completed(loop=self._client.loop, with_results=True, raise_errors=False)

    def results(self, *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """Yield the results as they come (or in input order) until every input has one."""
        self._start()
        completed = self._completed
        assert completed is not None  # noqa: S101 - set by _start
        order: Order[InputT] = Order(ordered=ordered)
        while True:
            while self._done:
                for result in order.add(*self._done.popleft()):
                    self._yielded += 1
                    yield result
            self._feed()
            if self._done:  # inputs that can't be pickled: their results first
                continue
            if not self._held:
                return
            self._wait(completed)

    def _wait(self, completed: Any) -> None:
        """
        Take the tasks that ended (at least one), keeping no reference to their futures, which are then released.

        Not even in a frame: with distributed imported, an error unpickled here gets a traceback
        (tblib's) whose frames lead back to the frames that unpickled it, which a result keeps.
        """
        ended = [(future.key, future.status, value) for future, value in completed.next_batch(block=True)]
        for key, status, value in ended:
            self._came(key, status, value)
        # A dropped future tells the scheduler through two callbacks of the client's loop, a new
        # one through one: after one trip through the loop, the releases go out before the next tasks.
        self._client.sync(_through_the_loop)

    def _room(self) -> bool:
        """Whether a task can be submitted: the window's tasks aren't all held."""
        return not self._stopping and len(self._held) < (self._window or 2)

    def _feed(self) -> None:
        """Submit chunks while the window has room; a suspect alone, once nothing else is in flight."""
        while self._room():
            if self._suspects:
                if not self._held:
                    self._submit(_Chunk([self._suspects.popleft()], alone=True))
                return
            records = self._take(self._size())
            if not records:
                return
            self._submit(_Chunk(records))

    def _size(self) -> int:
        """
        The records of the next chunk: as learnt (or fixed), and at most a window's share of those left.

        The share needs the inputs' length hint (a list's, a range's; a generator has none): the
        last chunks get smaller, so that the workers end together.
        """
        size = self._sizes.size
        if self._sizes.fixed is None:
            left = operator.length_hint(self._inputs, 0)
            if left:
                size = min(size, max(1, left // (self._window or 2)))
        return size

    def _take(self, count: int) -> list[tuple[int, object]]:
        """
        Up to *count* records: those to send again first, then new inputs while the records taken allow.

        Those taken and not yet yielded stay within the window's records, plus as many as were
        yielded (up to `_GROWTH` more) for the results that wait for an earlier one (``ordered``).
        """
        records: list[tuple[int, object]] = []
        while self._again and len(records) < count:
            records.append(self._again.popleft())
        limit = (self._window or 2) * self._sizes.size + min(self._yielded, _GROWTH)
        while not self._exhausted and len(records) < count and self._taken - self._yielded < limit:
            try:
                item = next(self._inputs)
            except StopIteration:
                self._exhausted = True
                break
            records.append((self._taken, item))
            self._taken += 1
        return records

    def _submit(self, chunk: _Chunk) -> None:
        payload: list[tuple[int, bytes]] = []
        sendable: list[tuple[int, object]] = []
        for position, item in chunk.records:
            try:
                payload.append((position, pickle.dumps(item, pickle.HIGHEST_PROTOCOL)))
            except Exception as exc:  # noqa: BLE001 - that record's failure, not the batch's
                self._done.append((position, self._job.failed(item, position, exc)))  # type: ignore[arg-type]
            else:
                sendable.append((position, item))
        if not payload:
            return
        chunk.records = sendable
        key = f"{self._name}-{next(self._numbers)}"
        chunk.future = self._client.submit(_run_chunk, self._name, payload, key=key, retries=0)
        self._held[key] = chunk
        assert self._completed is not None  # noqa: S101 - set by _start
        self._completed.add(chunk.future)

    def _came(self, key: str, status: str, value: Any) -> None:
        """A task ended: its records' results, or their failure."""
        chunk = self._held.pop(key, None)
        if chunk is None:  # pragma: no cover - each future is added once
            return
        chunk.future = None
        if self._stopping:
            return
        if status == "finished":
            seconds, outcomes = value
            self._sizes.learn(self._reports(chunk, outcomes), seconds)
            return
        error = value if isinstance(value, BaseException) else value[1]  # cancelled, or (type, error, traceback)
        if isinstance(error, distributed.KilledWorker) and not chunk.alone:
            # Which record killed the workers? Any of the chunk's, or another task's on the same worker:
            # each runs again alone, with nothing else of the batch in flight, to tell.
            self._suspects.extend(chunk.records)
            return
        for position, item in chunk.records:
            self._done.append((position, self._job.failed(item, position, error)))  # type: ignore[arg-type]

    def _reports(self, chunk: _Chunk, outcomes: list[tuple[int, str, bytes]]) -> int:
        """The results of a chunk's records; returns how many ran."""
        items = dict(chunk.records)
        ran = 0
        for position, kind, payload in outcomes:
            item = items[position]
            if kind == _NOT_RUN:
                self._not_run(position, item, payload)
                continue
            if (
                kind == _RAISED
            ):  # a BaseException (KeyboardInterrupt, SystemExit) went through a run: it stops the batch
                raise pickle.loads(payload)  # noqa: S301 - from our own task
            ran += 1
            try:
                if kind == _UNREADABLE:
                    error = pickle.loads(payload)  # noqa: S301 - from our own task
                    result = self._job.failed(item, position, error)  # type: ignore[arg-type]
                else:
                    result = self._job.receive(payload)
            except Exception as exc:  # noqa: BLE001 - a report that can't be unpickled here (a class only workers have)
                result = self._job.failed(item, position, exc)  # type: ignore[arg-type]
            self._done.append((position, result))
        return ran

    def _not_run(self, position: int, item: object, why: bytes) -> None:
        """A record its worker did not run (it was closing): sent again, a few times at most."""
        count = self._resent.get(position, 0) + 1
        if count > _RESENDS:
            self._resent.pop(position, None)
            error = RuntimeError(f"no Dask worker ran this record in {_RESENDS} tries: {why.decode()}")
            self._done.append((position, self._job.failed(item, position, error)))  # type: ignore[arg-type]
            return
        self._resent[position] = count
        self._again.append((position, item))

    def stop(self) -> None:
        """Submit nothing more; stop the workers' runs after those in flight; wait for them; release every future."""
        self._stopping = True
        try:
            if self._registered and self._client.status == "running":
                with contextlib.suppress(Exception):  # stopping anyway: a worker's teardown error is its log's
                    self._client.unregister_worker_plugin(self._name)
            futures = [chunk.future for chunk in self._held.values() if chunk.future is not None]
            if futures and self._client.status == "running":
                with contextlib.suppress(Exception):  # stopping anyway: what a task raised is dropped
                    self._settle(futures)
        finally:
            futures = [chunk.future for chunk in self._held.values() if chunk.future is not None]
            if futures and self._client.status == "running":
                with contextlib.suppress(Exception):
                    self._client.cancel(futures)
            del futures
            self._held.clear()
            completed, self._completed = self._completed, None
            if completed is not None:
                completed.clear()

    def _settle(self, futures: list[Any]) -> None:
        """
        Wait for the tasks a worker has: they end after the record they run, or at once if not started.

        Not for those no worker has (queued on the scheduler, or lost with a worker that died,
        as those of a LocalCluster do when Ctrl-C reaches their process group): nothing of theirs runs.
        """
        while futures:
            with contextlib.suppress(TimeoutError):
                _wait(futures, timeout=_SETTLING)
            futures = [future for future in futures if not future.done()]
            if futures:
                processing = {key for keys in self._client.processing().values() for key in keys}
                futures = [future for future in futures if future.key in processing]


async def _through_the_loop() -> None:
    """Nothing, on the client's event loop: what was asked of the loop before is done when it returns."""


# -- on the Dask workers -----------------------------------------------------------


class _Thread:
    """One worker thread's job (the coordinator rebuilt from the recipe), and its event loop for async flows."""

    __slots__ = ("busy", "job", "runner")

    def __init__(self, job: RemoteJob[Any]) -> None:
        self.job = job
        self.runner: asyncio.Runner | None = None
        self.busy = False

    def run(self, item: object, position: int) -> bytes:
        if not self.job.is_async:
            return self.job.run(item, position)
        if self.runner is None:  # one loop per thread, kept between chunks (the thread's async resources live on it)
            self.runner = asyncio.Runner()
        return self.runner.run(self.job.run_async(item, position))

    def close(self) -> None:
        try:
            self.job.close()
        finally:
            if self.runner is not None:
                self.runner.close()


class _Plugin(distributed.WorkerPlugin):
    """
    A batch's recipe on a Dask worker: each thread rebuilds the job from it once; the teardown closes them.

    What travels is only its name and the recipe (bytes): the rest is the worker's own.
    """

    idempotent = False

    def __init__(self, name: str, recipe: bytes) -> None:
        self.name, self.recipe = name, recipe
        self._fresh()

    def _fresh(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[int, _Thread] = {}
        self._spare: _Thread | None = None
        self.closed = False

    def __getstate__(self) -> object:
        return (self.name, self.recipe)

    def __setstate__(self, state: tuple[str, bytes]) -> None:
        self.name, self.recipe = state
        self._fresh()

    def setup(self, worker: object) -> None:  # noqa: ARG002 - the plugin protocol's
        """Rebuild the flow once on joining the batch: an error here is raised by the caller's registration."""
        made = _Thread(pickle.loads(self.recipe))  # noqa: S301 - from the calling process
        with self._lock:
            self._spare = made  # the first thread to run takes it

    def teardown(self, worker: object) -> None:  # noqa: ARG002 - the plugin protocol's
        """The batch ended or the worker closes: close the idle threads' jobs; the busy ones close after their run."""
        with self._lock:
            self.closed = True
            idle = [made for made in self._threads.values() if not made.busy]
            if self._spare is not None:
                idle.append(self._spare)
            self._spare = None
            self._threads.clear()
        with contextlib.ExitStack() as stack:  # every one is closed, even when one raises
            for made in idle:
                stack.callback(made.close)

    def is_closed(self) -> bool:
        """Whether the batch ended here: the runs in flight finish, no other starts."""
        return self.closed

    @contextlib.contextmanager
    def thread(self) -> Iterator[_Thread]:
        """This thread's job, rebuilt the first time; closed on leaving if the batch ended meanwhile."""
        ident = threading.get_ident()
        with self._lock:
            made = self._threads.get(ident)
            if made is None and self._spare is not None:
                made, self._spare = self._spare, None
        if made is None:
            made = _Thread(pickle.loads(self.recipe))  # noqa: S301 - from the calling process
        with self._lock:
            kept = not self.closed
            if kept:
                self._threads[ident] = made
            made.busy = True
        try:
            yield made
        finally:
            with self._lock:
                made.busy = False
                close = not kept or self.closed
            if close:
                made.close()


def _pickled_error(error: BaseException) -> bytes:
    """An error, pickled for the calling process; its text and traceback when the error itself doesn't pickle."""
    try:
        return pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - anything may fail to pickle: send its text instead
        text = "".join(traceback.format_exception(error)).rstrip()
        return pickle.dumps(RuntimeError(f"{type(error).__name__}: {error} (on a Dask worker)\n{text}"))


def _run_chunk(name: str, payload: list[tuple[int, bytes]]) -> tuple[float, list[tuple[int, str, bytes]]]:
    """
    A task: run a chunk's records one after the other in this worker thread, with the batch's job.

    Returns the seconds its runs took and, per record, ``(position, kind, bytes)``: a run's report,
    an input that can't be unpickled here, a `BaseException` that went through a run (the rest is
    not run), or a record not run because the batch is stopping here (its plugin is gone).
    """
    worker = distributed.get_worker()
    plugin: object = worker.plugins.get(name)
    if not isinstance(plugin, _Plugin) or plugin.is_closed():
        why = f"the Dask worker {worker.address} had no recipe for the batch (it is closing)".encode()
        return 0.0, [(position, _NOT_RUN, why) for position, _ in payload]
    outcomes: list[tuple[int, str, bytes]] = []
    started = time.perf_counter()
    with plugin.thread() as here:
        for index, (position, data) in enumerate(payload):
            if plugin.is_closed():  # stopping: the runs in flight finish, the others don't start
                why = f"the Dask worker {worker.address} stopped the batch's runs".encode()
                outcomes.extend((later, _NOT_RUN, why) for later, _ in payload[index:])
                break
            try:
                item = pickle.loads(data)  # noqa: S301 - from the calling process
            except Exception as exc:  # noqa: BLE001 - that record's failure
                outcomes.append((position, _UNREADABLE, _pickled_error(exc)))
                continue
            try:
                outcomes.append((position, _REPORT, here.run(item, position)))
            except BaseException as exc:  # noqa: BLE001 - sent to the calling process, which raises it
                outcomes.append((position, _RAISED, _pickled_error(exc)))
                break
    return time.perf_counter() - started, outcomes
