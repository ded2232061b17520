"""
Type aliases and protocols for annotating code that uses choreograph.

>>> from choreograph.typing import Outcome, Phase
>>> outcome: Outcome = "ok"
"""

from collections.abc import Callable

from ._core.result import Outcome, RawCall
from ._core.retry import RetryPolicy
from ._errors import Phase
from .durable.codec import Codec
from .durable.protocol import (
    Begun,
    Ending,
    EntityInfo,
    EntityStore,
    Message,
    MessageInfo,
    MessageStatus,
    NewEvent,
    QueueStore,
    Settled,
    Status,
    Store,
    StoreSession,
)
from .durable.serve import Served
from .executors.protocol import Executor, RemoteJob, RunJob, ShippableJob

#: What `Step` accepts as a precheck, job or compensation: checked when the step is added.
Callback = Callable[..., object]

#: `Coordinator(key=...)`: derives a durable run's idempotency key from its input.
KeyFunction = Callable[[object], str | int]

__all__ = [
    "Begun",
    "Callback",
    "Codec",
    "Ending",
    "EntityInfo",
    "EntityStore",
    "Executor",
    "KeyFunction",
    "Message",
    "MessageInfo",
    "MessageStatus",
    "NewEvent",
    "Outcome",
    "Phase",
    "QueueStore",
    "RawCall",
    "RemoteJob",
    "RetryPolicy",
    "RunJob",
    "Served",
    "Settled",
    "ShippableJob",
    "Status",
    "Store",
    "StoreSession",
]
