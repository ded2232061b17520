"""
Callbacks and a scheduler plugin for tests/test_executor_dask.py: importable by Dask workers.

Workers in processes import callbacks by reference, so they live at the top
level of a module on ``sys.path`` (``tests/`` is not a package); those of
`_process_steps` serve too. In-process workers (``LocalCluster(processes=False)``)
share this module with the tests: `STARTED` and `ENDED` tell what ran.
"""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

from distributed import SchedulerPlugin

from choreograph import Context

#: The records `slow` started and ended, in this process (for in-process workers).
STARTED: list[int] = []
ENDED: list[int] = []
_LOCK = threading.Lock()


def thread_name(x: int) -> str:
    return threading.current_thread().name


def slow(x: int) -> int:
    """A record of 0.2 s, noted when it starts and when it ends."""
    with _LOCK:
        STARTED.append(x)
    time.sleep(0.2)
    with _LOCK:
        ENDED.append(x)
    return x


def slow_first(x: int) -> int:
    """The first record takes 0.3 s, the others nothing."""
    if x == 0:
        time.sleep(0.3)
    return x


def naps(ctx: Context[int], x: int) -> int:
    """A record of ``values['nap']`` seconds."""
    time.sleep(float(str(ctx.values["nap"])))
    return x


def fails_first(ctx: Context[int], x: int) -> int:
    """Fail while ``values['marker']`` names no file (the first batch); succeed once it exists."""
    from pathlib import Path

    if x % 2 and not Path(str(ctx.values["marker"])).exists():
        raise ValueError(f"not yet: {x}")
    return x * 10


#: The threads that unpickled a `Rebuilt`, in this process: one per rebuild of the flow from its recipe.
REBUILT: list[int] = []


class Rebuilt:
    """A value of the batch that notes each time it is unpickled, that is, each time a worker rebuilds the flow."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_rebuilt, ())


def _rebuilt() -> Rebuilt:
    with _LOCK:
        REBUILT.append(threading.get_ident())
    return Rebuilt()


class HeldTasks(SchedulerPlugin):
    """Counts the tasks whose key starts with *prefix* that the scheduler holds, and the most it held at once."""

    def __init__(self, prefix: str = "choreograph-") -> None:
        self.prefix = prefix
        self.held: set[Any] = set()
        self.most = 0
        self.seen = 0

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002
        if not str(key).startswith(self.prefix):
            return
        if finish == "forgotten":
            self.held.discard(key)
        elif key not in self.held:
            self.held.add(key)
            self.seen += 1
            self.most = max(self.most, len(self.held))


class Unreadable:
    """An input that pickles here and can't be unpickled anywhere (with an error that doesn't pickle either)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_refuse, ())


def _refuse() -> object:
    from _process_steps import LockedError

    raise LockedError(7)


def drops_recipe(x: int) -> int:
    """At record 1, the worker loses the batch's recipe and gets it back, as a worker that left and came back would."""
    if x == 1:
        from distributed import get_worker

        worker = get_worker()
        name = next(name for name in worker.plugins if name.startswith("choreograph-"))
        plugin = worker.plugins.pop(name)
        plugin.teardown(worker)
        fresh = pickle.loads(pickle.dumps(plugin))  # noqa: S301 - our own
        fresh.setup(worker)
        worker.plugins[name] = fresh
    return slow(x)
