"""
Executors: where `Coordinator.run_many` runs its runs.

`ThreadExecutor` (the default, ``executor="threads"``) runs them on a pool of
threads; `AsyncExecutor` (``executor="async"``) as tasks of one event loop;
`ProcessExecutor` (``executor="processes"``) in worker processes;
`DaskExecutor` on the workers of a Dask cluster (extra ``choreograph[dask]``,
imported when first used). `Executor` is the protocol every executor
implements; `RunJob` what it runs, and `ShippableJob` and `RemoteJob` what an
executor running runs in other processes ships there.
"""

from typing import TYPE_CHECKING, Any

from .processes import ProcessExecutor
from .protocol import Executor, RemoteJob, RunJob, ShippableJob
from .tasks import AsyncExecutor
from .threads import ThreadExecutor

if TYPE_CHECKING:  # for type checkers and the reference; at run time `__getattr__` imports it when first asked
    from .dask import DaskExecutor

__all__ = [
    "AsyncExecutor",
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "RemoteJob",
    "RunJob",
    "ShippableJob",
    "ThreadExecutor",
]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":  # distributed is imported only by those who use it
        from .dask import DaskExecutor  # noqa: PLC0415 - only when asked

        return DaskExecutor
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
