"""
Type aliases and protocols for annotating code that uses choreograph.

>>> from choreograph.typing import Outcome, Phase
>>> outcome: Outcome = "ok"
"""

from collections.abc import Callable

from ._codec import Codec
from ._errors import Phase
from ._result import Outcome, RawCall
from ._retry import RetryPolicy

#: What `Step` accepts as a precheck, job or compensation: checked when the step is added.
Callback = Callable[..., object]

#: `Coordinator(key=...)`: derives a durable run's idempotency key from its input.
KeyFunction = Callable[[object], str | int]

__all__ = ["Callback", "Codec", "KeyFunction", "Outcome", "Phase", "RawCall", "RetryPolicy"]
