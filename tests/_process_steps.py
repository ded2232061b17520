"""
Callbacks for tests/test_executor_processes.py and tests/test_resources.py: importable by worker processes.

Worker processes import callbacks by reference, so they live here, at the
top level of a module that the tests put on ``sys.path`` (``tests/`` is not
a package). Rendezvous between processes go through files: a test gives a
folder in the run's ``values``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from choreograph import Context, Skip, get_data_bag
from choreograph.events import Emitted


def double(x: int) -> int:
    return x * 2


def pid(x: int) -> int:
    return os.getpid()


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(x)
    return x


def skip_odd(x: int) -> None:
    if x % 2:
        raise Skip("odd", output=x)


def checked(ctx: Context[int], x: int) -> int:
    """The run's own input and bag, whatever else runs in the process."""
    if ctx.input != x or get_data_bag() is not ctx.data_bag:
        raise AssertionError(x)
    return x


def burn(x: int) -> int:
    """About a millisecond of pure-Python work, whatever the machine (a fixed amount of it)."""
    total = 0
    for i in range(20_000):
        total += i * i
    return x


def emits(ctx: Context[int], x: int) -> int:
    ctx.emit("progress", {"x": x, "pid": os.getpid()})
    return x


def meet(ctx: Context[int], x: int) -> int:
    """Wait until *count* runs are in this call at once, each in a process of its own (files in values['folder'])."""
    folder = Path(str(ctx.values["folder"]))
    count = int(str(ctx.values["count"]))
    (folder / f"{os.getpid()}-{x}").touch()
    deadline = time.monotonic() + 30
    while len({path.name.split("-")[0] for path in folder.iterdir()}) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(x)
        time.sleep(0.01)
    return os.getpid()


def dies_on_three(x: int) -> int:
    if x == 3:
        os._exit(7)
    return x


def interrupts_on_five(x: int) -> int:
    if x == 5:
        raise KeyboardInterrupt
    return x


class LockedError(Exception):
    """An error that can't be pickled: it holds a lock."""

    def __init__(self, x: int) -> None:
        super().__init__(x)
        self.lock = threading.Lock()


def raises_unpicklable(x: int) -> int:
    raise LockedError(x)


def unpicklable_output(x: int) -> object:
    return threading.Lock()


async def waits(x: int) -> int:
    await asyncio.sleep(0.001)
    return x


def key_of(x: int) -> str:
    return str(x)


def record_key(record: dict[str, int]) -> str:
    return str(record["id"])


def announce(x: int) -> int:
    """Print the record's start and end (one write each): the SIGINT tests read them."""
    os.write(1, f"start {x} {os.getpid()}\n".encode())
    time.sleep(0.5)
    os.write(1, f"end {x} {os.getpid()}\n".encode())
    return x


def slow_after(x: int) -> int:
    if x >= 1000:
        return announce(x)
    return x


# -- resources ---------------------------------------------------------------


def log_line(path: str, line: str) -> None:
    with Path(path).open("a", encoding="utf-8") as log:
        log.write(line + "\n")


@contextmanager
def counted(path: str) -> Iterator[dict[str, int]]:
    """A resource that writes ``open PID`` and ``close PID`` lines to *path* (use with `functools.partial`)."""
    log_line(path, f"open {os.getpid()}")
    try:
        yield {"pid": os.getpid()}
    finally:
        log_line(path, f"close {os.getpid()}")


def resource_pid(ctx: Context[int], x: int) -> int:
    db = ctx.resources["db"]
    assert isinstance(db, dict)
    return int(db["pid"])


def is_emitted(event: object) -> bool:
    return isinstance(event, Emitted)


def size(record: dict[str, int]) -> int:
    return len(record)


class WorkerOnly:
    """A class whose module exists only in worker processes (see `worker_only`)."""


if multiprocessing.parent_process() is not None:  # in a worker process: register the module there only
    _ONLY = types.ModuleType("choreograph_worker_only")
    WorkerOnly.__module__ = _ONLY.__name__
    _ONLY.WorkerOnly = WorkerOnly  # type: ignore[attr-defined]
    sys.modules[_ONLY.__name__] = _ONLY


def worker_only(x: int) -> object:
    """An output the calling process can't unpickle: its class's module is the worker's own."""
    return WorkerOnly()
