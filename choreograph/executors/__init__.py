"""
Executors: where `Coordinator.run_many` runs its runs.

`ThreadExecutor` (the default, ``executor="threads"``) runs them on a pool of
threads. `Executor` is the protocol every executor implements.
"""

from .protocol import Executor, RunJob
from .threads import ThreadExecutor

__all__ = ["Executor", "RunJob", "ThreadExecutor"]
