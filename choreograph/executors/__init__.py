"""
Executors: where `Coordinator.run_many` runs its runs.

`ThreadExecutor` (the default, ``executor="threads"``) runs them on a pool of
threads; `AsyncExecutor` (``executor="async"``) as tasks of one event loop;
`ProcessExecutor` (``executor="processes"``) in worker processes. `Executor`
is the protocol every executor implements; `RunJob` what it runs, and
`ShippableJob` and `RemoteJob` what an executor running runs in other
processes ships there.
"""

from .processes import ProcessExecutor
from .protocol import Executor, RemoteJob, RunJob, ShippableJob
from .tasks import AsyncExecutor
from .threads import ThreadExecutor

__all__ = ["AsyncExecutor", "Executor", "ProcessExecutor", "RemoteJob", "RunJob", "ShippableJob", "ThreadExecutor"]
