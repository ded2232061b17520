"""
The `Executor` protocol: how `Coordinator.run_many` spreads runs over workers.

An executor gets a `RunJob` (a coordinator's run, bound to the options of one
`run_many` call) and an iterator of inputs, and yields one `RunResult` per
input. Every executor keeps `run_many`'s promises: it takes inputs lazily with
a bounded number in flight, runs are isolated, results come in input order
when asked, and closing the iterator it returns stops taking inputs, waits
for the runs in flight and releases its workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar, runtime_checkable

from .._core.result import RunResult

InputT = TypeVar("InputT")


class RunJob(Protocol[InputT]):
    """
    One input's run, as an executor calls it.

    .. versionadded:: 0.2.0
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


@runtime_checkable
class Executor(Protocol):
    """
    Runs a `RunJob` once per input (see the module's docstring for the promises).

    .. versionadded:: 0.2.0
    """

    def map(self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """Yield one result per input: as runs complete, or in input order with *ordered*."""
        ...
