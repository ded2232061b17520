"""Retry policies: ours, and an adapter for tenacity's."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .._errors import ExecutionCanceled, Skip, StepDefinitionError, UnassignableInput, UnassignableOutput

#: Errors that are decisions or bugs, never transient: they are never retried.
NEVER_RETRIED = (ExecutionCanceled, Skip, StepDefinitionError, UnassignableInput, UnassignableOutput)


@runtime_checkable
class RetryPolicy(Protocol):
    """
    What the coordinator asks a retry policy (see `Retry`).

    .. versionadded:: 0.1.0
    """

    @property
    def prechecks(self) -> bool:
        """Whether the step's precheck is retried too (its job always is)."""
        ...

    def delay(self, error: Exception, attempt: int, elapsed: float) -> float | None:
        """
        Return the seconds to wait before attempt ``attempt + 1``, or None to give up.

        Args:
            error: The error of attempt *attempt*.
            attempt: The attempt that failed, from 1.
            elapsed: Seconds since the first attempt started.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """
    Retry a failing callback with exponential backoff and jitter.

    The wait before attempt ``n + 1`` is
    ``min(max_delay, initial * multiplier ** (n - 1)) + uniform(0, jitter)``.
    `ExecutionCanceled`, `Skip` and type mismatches are never retried.

    Args:
        attempts: Total attempts, the first included (``1`` never retries).
        on: The exception types that are retried (subclasses included).
        initial: Seconds before the second attempt.
        multiplier: Growth of the wait per attempt.
        max_delay: Cap on the wait, jitter excluded.
        jitter: At most this many seconds are added to each wait, at random.
        timeout: Give up once this many seconds passed since the first attempt
            (``None`` or ``math.inf``: no limit).
        prechecks: Also retry the step's precheck (by default only its job and
            compensation are retried).

    >>> policy = Retry(attempts=3, initial=1.0, jitter=0.0)
    >>> policy.delay(OSError(), 1, 0.0), policy.delay(OSError(), 2, 1.0), policy.delay(OSError(), 3, 3.0)
    (1.0, 2.0, None)

    .. versionadded:: 0.1.0
    """

    attempts: int = 3
    on: type[Exception] | tuple[type[Exception], ...] = Exception
    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.1
    timeout: float | None = None
    prechecks: bool = False
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        attempts: object = self.attempts  # checked at run time: callers may not be typed
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            msg = f"Retry(attempts=...) must be an int >= 1, got {self.attempts!r}"
            raise ValueError(msg)
        for name in ("initial", "multiplier", "max_delay", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                msg = f"Retry({name}=...) must be a finite number >= 0, got {value!r}"
                raise ValueError(msg)
        timeout: object = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0
        ):
            msg = f"Retry(timeout=...) must be None or a number of seconds >= 0 (inf: no limit), got {timeout!r}"
            raise ValueError(msg)
        prechecks: object = self.prechecks
        if not isinstance(prechecks, bool):
            msg = f"Retry(prechecks=...) must be a bool, got {prechecks!r}"
            raise TypeError(msg)
        on: object = self.on
        kinds: tuple[object, ...] = on if isinstance(on, tuple) else (on,)
        if not kinds or not all(isinstance(k, type) and issubclass(k, Exception) for k in kinds):
            msg = f"Retry(on=...) must be an Exception subclass or a tuple of them, got {self.on!r}"
            raise TypeError(msg)

    def delay(self, error: Exception, attempt: int, elapsed: float) -> float | None:
        """
        Return the seconds to wait before attempt ``attempt + 1``, or None to give up.

        .. versionadded:: 0.1.0
        """
        if attempt >= self.attempts or isinstance(error, NEVER_RETRIED) or not isinstance(error, self.on):
            return None
        wait = min(self.max_delay, self.initial * self.multiplier ** (attempt - 1))
        if self.jitter:
            wait += self._random.uniform(0, self.jitter)
        if self.timeout is not None and elapsed + wait > self.timeout:
            return None
        return wait


class TenacityRetry:
    """
    Use a tenacity ``Retrying`` object's ``stop``, ``wait`` and ``retry`` strategies.

    ``Step(retry=tenacity.Retrying(...))`` is wrapped in this automatically.
    Tenacity's ``before``/``after`` hooks and ``reraise`` are not used: the
    coordinator drives the attempts and records them.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("prechecks", "retrying")

    def __init__(self, retrying: object, *, prechecks: bool = False) -> None:
        import tenacity  # noqa: PLC0415 - optional: only for tenacity users

        if not isinstance(retrying, tenacity.BaseRetrying):
            msg = f"expected a tenacity Retrying object, got {type(retrying).__name__}"
            raise TypeError(msg)
        self.retrying = retrying
        self.prechecks = prechecks

    def delay(self, error: Exception, attempt: int, elapsed: float) -> float | None:
        """Ask tenacity's strategies whether and how long to wait."""
        import tenacity  # noqa: PLC0415 - optional: only for tenacity users

        if isinstance(error, NEVER_RETRIED):
            return None
        state = tenacity.RetryCallState(self.retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        state.outcome_timestamp = state.start_time + elapsed
        future = tenacity.Future(attempt)
        future.set_exception(error)
        state.outcome = future
        if not self.retrying.retry(state):
            return None
        # As tenacity's own loop: the wait first, so that `stop_before_delay` sees it.
        wait = float(self.retrying.wait(state))
        state.upcoming_sleep = wait
        if self.retrying.stop(state):
            return None
        return wait


def as_policy(retry: object) -> RetryPolicy | None:
    """Return *retry* as a policy: ours, tenacity's (wrapped), or None."""
    if isinstance(retry, type):
        msg = f"retry must be a retry policy, not the class {retry.__qualname__}: write retry={retry.__qualname__}()"
        raise TypeError(msg)
    if retry is None or isinstance(retry, RetryPolicy):
        return retry
    if type(retry).__module__.partition(".")[0] == "tenacity":
        return TenacityRetry(retry)
    msg = f"retry must be a choreograph.Retry, a tenacity Retrying or None, got {type(retry).__name__}"
    raise TypeError(msg)
