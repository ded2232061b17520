"""Run business flows as steps with prechecks and jobs; collect outputs and errors."""

from typing import Any

from loguru import logger as _logger

from ._coordinator import Coordinator
from ._core.bag import DataBag
from ._core.context import Context, get_data_bag
from ._core.result import Call, RunResult
from ._core.retry import Retry, RetryPolicy, TenacityRetry
from ._core.step import Parallel, Step
from ._errors import (
    CallbackFailure,
    CallbackTimeout,
    ChoreographError,
    ExecutionCanceled,
    InputError,
    JobFailed,
    KeyBusy,
    ListenerWarning,
    NoDataBagInContext,
    PoisonedRun,
    PrecheckFailed,
    RunCancelled,
    Skip,
    SpecError,
    StepDefinitionError,
    StepError,
    StoreError,
    UnassignableInput,
    UnassignableOutput,
    UnstorableOutput,
)
from .durable.codec import Codec, CodecError, JsonCodec, PickleCodec, StoredError
from .durable.memory import MemoryStore
from .durable.postgres import PostgresStore
from .durable.protocol import Event, RunInfo
from .durable.sqlite import SqliteStore
from .entities import Entities, EntityContext

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
    "Entities",
    "EntityContext",
    "Event",
    "ExecutionCanceled",
    "InputError",
    "JobFailed",
    "JsonCodec",
    "KeyBusy",
    "ListenerWarning",
    "MemoryStore",
    "NoDataBagInContext",
    "Parallel",
    "PickleCodec",
    "PoisonedRun",
    "PostgresStore",
    "PrecheckFailed",
    "Retry",
    "RetryPolicy",
    "RunCancelled",
    "RunInfo",
    "RunResult",
    "Skip",
    "SpecError",
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
