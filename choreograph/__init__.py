"""Run business flows as steps with prechecks and jobs; collect outputs and errors."""

from typing import Any

from loguru import logger as _logger

from ._bag import DataBag
from ._codec import Codec, CodecError, JsonCodec, PickleCodec, StoredError
from ._context import Context, get_data_bag
from ._coordinator import Coordinator
from ._errors import (
    CallbackFailure,
    CallbackTimeout,
    ChoreographError,
    ExecutionCanceled,
    JobFailed,
    KeyBusy,
    NoDataBagInContext,
    PoisonedRun,
    RunCancelled,
    Skip,
    StepDefinitionError,
    StepError,
    StoreError,
    UnassignableInput,
    UnassignableOutput,
    UnstorableOutput,
)
from ._result import Call, RunResult
from ._retry import Retry, RetryPolicy, TenacityRetry
from ._step import Step
from ._store import Event, RunInfo, SqliteStore

__all__ = [
    "Call",
    "CallbackFailure",
    "CallbackTimeout",
    "ChoreographError",
    "Codec",
    "CodecError",
    "Context",
    "Coordinator",
    "DataBag",
    "Event",
    "ExecutionCanceled",
    "JobFailed",
    "JsonCodec",
    "KeyBusy",
    "NoDataBagInContext",
    "PickleCodec",
    "PoisonedRun",
    "Retry",
    "RetryPolicy",
    "RunCancelled",
    "RunInfo",
    "RunResult",
    "Skip",
    "SqliteStore",
    "Step",
    "StepDefinitionError",
    "StepError",
    "StoreError",
    "StoredError",
    "TenacityRetry",
    "UnassignableInput",
    "UnassignableOutput",
    "UnstorableOutput",
    "get_data_bag",
]

_logger.disable(__name__)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - only when asked

        return version("choreograph")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
