"""
``run``, ``resume`` and ``rerun``: batches of runs, with a live bar, a summary, and Ctrl-C handled.

``run`` hands its records to `Coordinator.run_many`, on the executor
``--executor`` names (with ``processes`` and ``dask``, the status of each
record's key is read here, as the record is taken, since the key function
runs in the workers; ``dask`` connects a client to ``--scheduler``); ``resume`` and ``rerun`` run keys of a store, on a
`ThreadExecutor` of their own (each task runs one key). Either way Ctrl-C stops taking new work, lets the runs
in flight finish, prints the summary and exits with 130: every key not
finished stays in the store, to resume.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import click

from .._coordinator import Coordinator
from .._core.result import RunResult
from .._errors import InputError
from .._progress import Bar, is_terminal
from ..durable.protocol import Status, Store
from ..executors.threads import ThreadExecutor, default_workers
from ._records import Converter, RecordError, Source
from ._summary import Output, Summary
from ._target import coordinator_key, field_key, flow_store, input_type, load_target, with_store

#: The statuses of a key whose next run continues the last one (instead of starting a generation).
_CONTINUED: frozenset[Status | None] = frozenset({"running", "failed", "compensating"})

Task = Callable[[], RunResult[Any]]


class _Before:
    """The statuses keys had before this batch ran them, read as each record's key is derived."""

    def __init__(self, store: Store, key: Callable[[Any], str | int], *, fresh: bool) -> None:
        self._store, self._key, self._fresh = store, key, fresh
        self._statuses: dict[str, Status | None] = {}
        self._lock = threading.Lock()

    def key(self, record: object) -> str | int:
        """The record's key (as the coordinator's key function); notes the key's status first."""
        found = self._key(record)
        if not self._fresh:  # a key that is not a str or an int is refused by the runner, after this
            info = self._store.run_info(str(found))
            with self._lock:
                self._statuses[str(found)] = None if info is None else info.status
        return found

    def pop(self, key: str | None) -> Status | None:
        with self._lock:
            return None if key is None else self._statuses.pop(key, None)


def classify(result: RunResult[Any], before: Status | None) -> tuple[bool, bool]:
    """``(restored, resumed)``: the key had finished and nothing ran; or the key continued an earlier run."""
    restored = before == "ok" and all(call.restored for call in result.trace)
    return restored, before in _CONTINUED


def run_records(
    *,
    target: str,
    source_location: str,
    store_location: str | None,
    key_field: str | None,
    workers: int | None,
    executor: str,
    fresh: bool,
    output: str | None,
    chosen_format: str,
    progress: bool,
    scheduler: str | None = None,
) -> int:
    """``choreograph run``: every record of INPUT through TARGET; return the exit status."""
    shipped = executor in ("processes", "dask")
    with _executor(executor, scheduler, workers) as chosen:
        return _run_records(
            target=target,
            source_location=source_location,
            store_location=store_location,
            key_field=key_field,
            workers=None if executor == "dask" else workers,
            executor=chosen,
            fresh=fresh,
            output=output,
            chosen_format=chosen_format,
            progress=progress,
            shipped=shipped,
        )


@contextlib.contextmanager
def _executor(name: str, scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """What ``--executor`` names: its name, or a `DaskExecutor` on a client of ``--scheduler`` (closed after)."""
    if name != "dask":
        if scheduler is not None:
            raise click.UsageError("--scheduler is for --executor dask")
        yield name
        return
    if scheduler is None:
        raise click.UsageError("--executor dask needs --scheduler ADDRESS, the Dask scheduler's (tcp://host:8786)")
    if workers is not None:
        raise click.UsageError("--workers is for threads, processes and async: a Dask cluster has its own workers")
    try:
        import distributed  # noqa: PLC0415 - the extra, imported only here

        from ..executors.dask import DaskExecutor  # noqa: PLC0415
    except ImportError as exc:
        msg = "--executor dask needs the extra choreograph[dask] (pip install 'choreograph[dask]')"
        raise click.UsageError(msg) from exc
    try:
        client = distributed.Client(scheduler, timeout=10)
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--scheduler {scheduler}: can't connect: {exc}") from exc
    try:
        yield DaskExecutor(client)
    finally:
        client.close()


def _run_records(
    *,
    target: str,
    source_location: str,
    store_location: str | None,
    key_field: str | None,
    workers: int | None,
    executor: Any,
    fresh: bool,
    output: str | None,
    chosen_format: str,
    progress: bool,
    shipped: bool,
) -> int:
    flow, before, converter = _prepare(target, store_location, key_field, fresh=fresh, shipped=shipped)
    source = Source(source_location, chosen_format)
    try:
        out = Output(output) if output is not None else None
    except click.UsageError:
        source.close()
        raise
    bar = Bar(source.count()) if progress and is_terminal(sys.stderr) else None
    summary = Summary(f"choreograph run {target} {source_location}")
    records = _Records(source, converter, summary, bar, before if shipped else None)
    try:
        results = flow.run_many(records, workers=workers, fresh=fresh, executor=executor)
    except TypeError as exc:  # processes and dask: what can't be sent to them
        source.close()
        name = executor if isinstance(executor, str) else "dask"
        raise click.UsageError(f"--executor {name}: {exc}") from exc
    interrupted = False
    try:
        for result in results:
            restored, resumed = classify(result, None if before is None else before.pop(result.key))
            summary.add(result, restored=restored, resumed=resumed)
            if bar is not None:
                bar.count(ok=result.ok)
            if out is not None:
                records.flush(out)
                position = records.position(result.fatal.position) if isinstance(result.fatal, InputError) else None
                out.result(result, restored=restored, resumed=resumed, position=position)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        results.close()
        if bar is not None:
            bar.close()
        source.close()
        if out is not None:
            records.flush(out)
            out.close()
    flow.close()
    summary.print(interrupted=interrupted)
    return summary.exit_code(interrupted=interrupted)


class _Field:
    """
    ``--key FIELD`` for worker processes: reads *field* of a record, as `field_key` does, and pickles.

    >>> _Field("id")({"id": "A-1"})
    'A-1'
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self.__qualname__ = f"field {field!r}"

    def __call__(self, record: object) -> str | int:
        value: Any = record[self.field] if isinstance(record, Mapping) else getattr(record, self.field)
        return value  # type: ignore[no-any-return]  # the runner checks it is a str or an int


def _prepare(
    target: str, store_location: str | None, key_field: str | None, *, fresh: bool, shipped: bool = False
) -> tuple[Coordinator[Any], _Before | None, Converter]:
    """The flow to run (durable with its store and key, if it has a store), and its converter of records."""
    flow = load_target(target)
    store = flow_store(flow, store_location, create=True)
    key = coordinator_key(flow) if key_field is None else (_Field if shipped else field_key)(key_field)
    if store is None:
        if key_field is not None:
            raise click.UsageError("--key names each record's key in a store: give --store too")
        if fresh:
            raise click.UsageError("--fresh runs finished keys of a store again: give --store too")
    converter = Converter(input_type(flow))
    if key_field is not None and converter.fields is not None and key_field not in converter.fields:
        fields = ", ".join(converter.fields)
        raise click.UsageError(f"--key {key_field!r} is not a field of the flow's input (its fields: {fields})")
    if store is None:
        return flow, None, converter
    if key is None:
        raise click.UsageError(
            "runs in a store need each record's key: give --key FIELD, or Coordinator(key=...) in the flow"
        )
    before = _Before(store, key, fresh=fresh)
    # Worker processes run the key function itself; the statuses are then noted here (see `_Records`).
    return with_store(flow, store, key if shipped else before.key), before, converter


class _Records:
    """
    The converted records of INPUT, as `run_many` takes them (in its workers, one at a time).

    A record that can't be read or converted is counted as a failure and
    left out; `position` maps `run_many`'s positions back to INPUT's.
    """

    def __init__(
        self, source: Source, converter: Converter, summary: Summary, bar: Bar | None, before: _Before | None = None
    ) -> None:
        self._source, self._converter, self._summary, self._bar = source, converter, summary, bar
        self._before = before  # notes each key's status as its record is taken (for worker processes)
        self._left_out: list[int] = []  # INPUT positions, ascending
        self._unreadable: deque[tuple[int, object, RecordError]] = deque()

    def __iter__(self) -> Iterator[object]:
        convert = self._converter.convert
        for position, raw in self._source.records():
            try:
                record = convert(raw)
            except RecordError as exc:
                self._left_out.append(position)
                self._unreadable.append((position, raw, exc))
                self._summary.add_unreadable()
                if self._bar is not None:
                    self._bar.count(ok=False)
                continue
            if self._before is not None:
                with contextlib.suppress(Exception):  # a key that can't be derived fails its run, in its worker
                    self._before.key(record)
            yield record

    def position(self, given: int) -> int:
        """
        The INPUT position of the record `run_many` counted as *given*.

        >>> records = _Records.__new__(_Records)
        >>> records._left_out = [1, 2, 5]
        >>> [records.position(n) for n in range(4)]
        [0, 3, 4, 6]
        """
        found = given
        while (shifted := given + bisect_right(self._left_out, found)) != found:
            found = shifted
        return found

    def flush(self, out: Output) -> None:
        """Write the lines of the records left out so far."""
        while self._unreadable:
            position, raw, error = self._unreadable.popleft()
            out.unreadable(position, raw, error)


class _Tasks:
    """A `RunJob` whose inputs are tasks: each runs one key of a store."""

    is_async = False

    def worker(self) -> AbstractContextManager[object]:
        """Nothing to do: the flow's resources are closed when the command ends (see `Coordinator.close`)."""
        return nullcontext()

    def run(self, task: Task, position: int, /) -> RunResult[Any]:  # noqa: ARG002 - the protocol's
        """Run the task."""
        return task()

    async def run_async(self, task: Task, position: int, /) -> RunResult[Any]:  # noqa: ARG002  # pragma: no cover - never: is_async is False
        """Run the task (never called: `is_async` is false)."""
        return task()


def _run_tasks(tasks: Mapping[str, tuple[Task, Status | None]], summary: Summary, *, progress: bool) -> bool:
    """Run one task per key on threads, counting their results; return whether Ctrl-C stopped them."""
    if not tasks:
        return False
    bar = Bar(len(tasks)) if progress and is_terminal(sys.stderr) else None
    pool = ThreadExecutor(min(len(tasks), default_workers()))
    results = pool.map(_Tasks(), (task for task, _ in tasks.values()), ordered=False)
    interrupted = False
    try:
        for result in results:
            task = tasks.get(result.key or "")
            before = None if task is None else task[1]
            summary.add(result, resumed=classify(result, before)[1])
            if bar is not None:
                bar.count(ok=result.ok)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        results.close()
        if bar is not None:
            bar.close()
    return interrupted


def _durable_flow(target: str, store_location: str) -> tuple[Coordinator[Any], Store]:
    flow = load_target(target)
    store = flow_store(flow, store_location, create=False)
    assert store is not None  # noqa: S101 - a location was given
    return with_store(flow, store, coordinator_key(flow)), store


def _status(store: Store, key: str) -> Status:
    info = store.run_info(key)
    if info is None:
        raise click.UsageError(f"no run of key {key!r} in {store.location}")
    return info.status


def resume_keys(
    *, target: str, store_location: str, keys: tuple[str, ...], failed: bool, poisoned: bool, progress: bool
) -> int:
    """``choreograph resume``: run keys again with their stored inputs; return the exit status."""
    if not (keys or failed or poisoned):
        raise click.UsageError("name the KEYs to resume, or give --failed or --poisoned")
    flow, store = _durable_flow(target, store_location)
    chosen = {key: _status(store, key) for key in keys}
    for status, wanted in (("failed", failed), ("poisoned", poisoned)):
        if wanted:
            for info in store.runs(status=status):  # type: ignore[arg-type]  # a Status
                chosen.setdefault(info.key, info.status)
    tasks = {key: (partial(_resume, flow, key, status), status) for key, status in chosen.items()}
    summary = Summary(f"choreograph resume {target}")
    interrupted = _run_tasks(tasks, summary, progress=progress)
    flow.close()
    summary.print(interrupted=interrupted)
    return summary.exit_code(interrupted=interrupted)


def _resume(flow: Coordinator[Any], key: str, status: Status) -> RunResult[Any]:
    if status == "poisoned":  # its last tries never finished: only a fresh start runs it
        store = flow.store
        assert store is not None  # noqa: S101 - a durable flow
        return flow.run(store.stored_input(key), key=key, fresh=True)
    return flow.resume(key)


def rerun_keys(*, target: str, store_location: str, from_step: str, keys: tuple[str, ...], progress: bool) -> int:
    """``choreograph rerun``: a new generation of each key from *from_step*; return the exit status."""
    flow, store = _durable_flow(target, store_location)
    if from_step not in flow:
        steps = ", ".join(step.name for step in flow.steps)
        raise click.UsageError(f"--from {from_step!r} is not a step of {target} (its steps: {steps})")
    for key in keys:
        _status(store, key)
    rerun = flow.rerun
    tasks = {key: (partial(rerun, key, from_step=from_step), None) for key in keys}
    summary = Summary(f"choreograph rerun {target} --from {from_step}")
    interrupted = _run_tasks(tasks, summary, progress=progress)
    flow.close()
    summary.print(interrupted=interrupted)
    return summary.exit_code(interrupted=interrupted)


__all__ = ["classify", "rerun_keys", "resume_keys", "run_records"]
