"""
The `Executor` protocol: how `Coordinator.run_many` spreads runs over workers.

An executor gets a `RunJob` (a coordinator's run, bound to the options of one
`run_many` call) and an iterator of inputs, and yields one `RunResult` per
input. Every executor keeps `run_many`'s promises: it takes inputs lazily with
a bounded number in flight, runs are isolated, results come in input order
when asked, and closing the iterator it returns stops taking inputs, waits
for the runs in flight and releases its workers.

A worker (a thread, an event loop, a process) enters `RunJob.worker` for its
whole life, so that the resources its runs create (``ctx.resources``) are
closed when it ends. An executor running runs in other processes asks for a
`ShippableJob` and sends what `ShippableJob.ship` packs to them: a `RemoteJob`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar, runtime_checkable

from .._core.result import RunResult

InputT = TypeVar("InputT")
InputT_contra = TypeVar("InputT_contra", contravariant=True)


class RunJob(Protocol[InputT]):
    """
    One input's run, as an executor calls it.

    .. versionadded:: 0.2.0

    .. versionchanged:: 0.4.0 `worker`.
    """

    @property
    def is_async(self) -> bool:
        """Whether the flow has ``async def`` callbacks: its runs are best served on one event loop."""
        ...

    def run(self, input: InputT, position: int, /) -> RunResult[InputT]:  # noqa: A002
        """
        Run once for *input*, from plain code.

        *position* is the input's position in the stream, from 0: a record
        that can't be run gets a failed result naming it (`InputError`).
        """
        ...

    async def run_async(self, input: InputT, position: int, /) -> RunResult[InputT]:  # noqa: A002
        """Run once, inside a running event loop (see `run`)."""
        ...

    def worker(self) -> AbstractContextManager[object]:
        """
        A worker's life: enter it in the worker's thread before its first run, exit it there after its last.

        The resources the worker's runs create (``Coordinator(resources=...)``)
        are closed on exit. An executor that doesn't enter it still works:
        its threads' resources are closed by ``Coordinator.close()`` then.
        """
        ...


class RemoteJob(Protocol[InputT_contra]):
    """
    A `RunJob` unpickled in a worker process (what `ShippableJob.ship` packs).

    Its reports are bytes, for the calling process's `ShippableJob.receive`.

    .. versionadded:: 0.4.0
    """

    @property
    def is_async(self) -> bool:
        """As `RunJob.is_async`."""
        ...

    def run(self, input: InputT_contra, position: int, /) -> bytes:  # noqa: A002
        """Run once, from plain code; return the report of the run (its result and events, pickled)."""
        ...

    async def run_async(self, input: InputT_contra, position: int, /) -> bytes:  # noqa: A002
        """Run once, inside a running event loop (see `run`)."""
        ...

    def close(self) -> None:
        """The worker process is done: close what its runs opened (its resources, its store)."""
        ...


@runtime_checkable
class ShippableJob(RunJob[InputT], Protocol[InputT]):
    """
    A `RunJob` that can run in other processes (the coordinator's runs are).

    .. versionadded:: 0.4.0
    """

    def ship(self) -> bytes:
        """
        Pack this job for worker processes: a pickled `RemoteJob`.

        Raises:
            TypeError: Something the job needs can't be pickled; the message
                names it (a step's callback, the key function, a resource...).
        """
        ...

    def receive(self, report: bytes) -> RunResult[InputT]:
        """Unpack a `RemoteJob`'s report in the calling process: give its events to the listeners, return its result."""
        ...

    def failed(self, input: InputT, position: int, error: BaseException) -> RunResult[InputT]:  # noqa: A002
        """The failed result of a record that could not be run in a worker process (fatal `InputError`)."""
        ...


@runtime_checkable
class Executor(Protocol):
    """
    Runs a `RunJob` once per input (see the module's docstring for the promises).

    .. versionadded:: 0.2.0
    """

    def map(self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """Yield one result per input: as runs complete, or in input order with *ordered*."""
        ...
