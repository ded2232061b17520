"""
Pin the types of `DaskExecutor`: mypy --strict and pyright strict check this file, nothing runs it.

Each check sits in a function that is never called; a ``# type: ignore`` with its
``# pyright: ignore`` marks a call that must be refused (both fail if it starts to type-check).
The file is not named ``dask.py``: a module of that name would hide the ``dask`` package from the checkers.
"""

from collections.abc import Generator
from dataclasses import dataclass
from typing import assert_type

from distributed import Client

from choreograph import Coordinator, RunResult
from choreograph.executors import DaskExecutor, Executor


@dataclass(frozen=True)
class Rec:
    """An input record."""

    id: int


def run_many_on_dask(client: Client) -> None:
    executor = DaskExecutor(client, window=8, chunksize=4)
    assert_type(executor, DaskExecutor)
    protocol: Executor = executor  # it implements the protocol
    del protocol
    results = Coordinator[Rec]().run_many([Rec(1), Rec(2)], executor=executor, ordered=True)
    assert_type(results, Generator[RunResult[Rec], None, None])
    results.close()


def refused(client: Client) -> None:
    DaskExecutor("tcp://scheduler:8786")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    DaskExecutor(client, 8)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    DaskExecutor(client, window="8")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
