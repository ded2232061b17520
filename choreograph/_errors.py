"""
The exceptions choreograph raises, and the ones callbacks raise to steer a run.

Every exception keeps its data in attributes and passes its raw fields to
``Exception.__init__``, so that it survives a pickle round trip: results travel
between processes and into stores. Pickling drops ``__cause__``, so classes that
wrap an error keep it as ``.error`` and restore ``__cause__`` from it.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

Phase = Literal["precheck", "job", "compensate"]


class _Missing(enum.Enum):
    """Sentinel type: "no value given" (an enum member pickles by identity)."""

    MISSING = enum.auto()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING


class ChoreographError(Exception):
    """
    Base class of every exception choreograph raises.

    .. versionadded:: 0.1.0
    """


class _WrapsError(ChoreographError):
    """A `ChoreographError` that wraps an original error as `.error`."""

    error: BaseException

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        self.__dict__.update(state or {})
        self.__cause__ = self.error


class _OSErrorFields(ChoreographError, OSError):
    """
    A `ChoreographError` that is also an `OSError` (`TimeoutError` included).

    `OSError` reads two to five constructor arguments as errno, strerror and
    filename. These classes have fields of their own, so that reading is undone:
    ``args`` holds the fields, the OSError attributes are None, and pickling
    calls the constructor with the fields again.
    """

    def _keep(self, *fields: object) -> None:
        self.args = fields
        self.errno = self.strerror = self.filename = self.filename2 = None

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("errno", "strerror", "filename", "filename2")}
        return (type(self), self.args, state)


class StepDefinitionError(ChoreographError, TypeError):
    """
    `Coordinator.add_step` rejected a step.

    Attributes:
        step: The step's name (``""`` when the name itself is the problem).
        callback: ``"precheck"``, ``"job"``, ``"compensate"`` or ``"step"``.
        problem: What is wrong, in words.

    .. versionadded:: 0.1.0
    """

    def __init__(self, step: str, callback: str, problem: str) -> None:
        super().__init__(step, callback, problem)
        self.step, self.callback, self.problem = step, callback, problem

    def __str__(self) -> str:
        return f"step {self.step!r}, {self.callback}: {self.problem}"


class _Unassignable(ChoreographError, TypeError):
    """A value does not match a callback's annotation."""

    _what = "value"

    def __init__(self, step: str, callback: str, expected: str, actual: str) -> None:
        super().__init__(step, callback, expected, actual)
        self.step, self.callback = step, callback
        self.expected, self.actual = expected, actual

    def __str__(self) -> str:
        return (
            f"step {self.step!r}, {self.callback}: {self._what} of type {self.actual}"
            f" is not assignable to the annotation {self.expected}"
        )


class UnassignableInput(_Unassignable):
    """
    The run's input does not match a callback's input annotation.

    The callback was not called. This is the run's fatal error; it is not on the
    error stack.

    Attributes:
        step: The step's name.
        callback: ``"precheck"``, ``"job"`` or ``"compensate"``.
        expected: The annotation, as text.
        actual: The input's type, as text.

    .. versionadded:: 0.1.0
    """

    _what = "input"


class UnassignableOutput(_Unassignable):
    """
    A callback's output does not match its return annotation.

    It counts as a failure of that callback.

    Attributes:
        step: The step's name.
        callback: ``"precheck"``, ``"job"`` or ``"compensate"``.
        expected: The annotation (for ``Result[T, E]``, ``T``), as text.
        actual: The output's type, as text.

    .. versionadded:: 0.1.0
    """

    _what = "output"


class ExecutionCanceled(ChoreographError):
    """
    Raise (or return as a ``Failure``) from a precheck to stop the whole run.

    The error is pushed to the error stack and becomes the run's fatal error.
    Subclass it to carry your own data. From a job it is an ordinary failure
    (the run stops with `JobFailed`).

    Attributes:
        reason: Why the run was stopped.

    .. versionadded:: 0.1.0
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason or type(self).__name__


class Skip(ChoreographError):
    """
    Raise from a precheck to skip the step's job; the run goes on.

    Args:
        reason: Why the job is skipped.
        output: When given, stored as the precheck's output, unchecked.

    .. versionadded:: 0.1.0
    """

    def __init__(self, reason: str = "", *, output: object = MISSING) -> None:
        super().__init__(reason)
        self.reason = reason
        self.output = output

    @property
    def has_output(self) -> bool:
        """Whether an output was given."""
        return self.output is not MISSING

    def __str__(self) -> str:
        return self.reason or "skipped"


class JobFailed(_WrapsError):
    """
    A job failed, so the run stopped.

    Attributes:
        step: The step's name.
        error: The job's original error (also ``__cause__``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(step, error)
        self.step, self.error = step, error
        self.__cause__ = error

    def __str__(self) -> str:
        return f"job of step {self.step!r} failed: {type(self.error).__name__}: {self.error}"


class RunCancelled(_OSErrorFields, TimeoutError):
    """
    The run's timeout expired, so the run stopped.

    Attributes:
        timeout: The run's timeout, in seconds.
        step: The step that was about to run or was running.

    .. versionadded:: 0.1.0
    """

    def __init__(self, timeout: float, step: str) -> None:
        super().__init__(timeout, step)
        self._keep(timeout, step)
        self.timeout, self.step = timeout, step

    def __str__(self) -> str:
        return f"run timed out after {self.timeout:g}s at step {self.step!r}"


class NoDataBagInContext(ChoreographError, LookupError):
    """
    `get_data_bag` was called outside a run.

    .. versionadded:: 0.1.0
    """

    def __str__(self) -> str:
        return "get_data_bag() was called outside a run"


class CallbackFailure(ChoreographError):
    """
    A callback returned ``Failure(value)`` where *value* is not an exception.

    Attributes:
        value: The failure's value.

    .. versionadded:: 0.1.0
    """

    def __init__(self, value: object) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"Failure({self.value!r})"


class StepError(_WrapsError):
    """
    One entry of a run's error stack: a callback's error.

    Attributes:
        step: The step's name.
        phase: ``"precheck"`` or ``"job"`` (``"compensate"`` for compensations).
        error: The original error (also ``__cause__``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, step: str, phase: Phase, error: BaseException) -> None:
        super().__init__(step, phase, error)
        self.step, self.phase, self.error = step, phase, error
        self.__cause__ = error

    def __str__(self) -> str:
        return f"{self.phase} of step {self.step!r}: {type(self.error).__name__}: {self.error}"


class CallbackTimeout(_OSErrorFields, TimeoutError):
    """
    A callback took longer than its step's ``timeout``.

    An ``async def`` callback is cancelled at the limit; a plain one is never
    interrupted, and fails with this error when it returns late (its output is
    discarded). Like any callback error, it can be retried.

    Attributes:
        step: The step's name.
        phase: ``"precheck"``, ``"job"`` or ``"compensate"``.
        timeout: The step's timeout, in seconds.

    .. versionadded:: 0.1.0
    """

    def __init__(self, step: str, phase: Phase, timeout: float) -> None:
        super().__init__(step, phase, timeout)
        self._keep(step, phase, timeout)
        self.step, self.phase, self.timeout = step, phase, timeout

    def __str__(self) -> str:
        return f"{self.phase} of step {self.step!r} took longer than its timeout of {self.timeout:g}s"


class StoreError(_OSErrorFields):
    """
    A durable store can't be used: not a store, corrupt, too new, or unreachable.

    Nothing in the file was changed when this is raised on opening a store.

    Attributes:
        path: The store's file.
        problem: What is wrong.

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self._keep(path, problem)
        self.path, self.problem = path, problem

    def __str__(self) -> str:
        return f"store {self.path}: {self.problem}"


class PoisonedRun(ChoreographError):
    """
    A durable run's key was interrupted too many times, so it is no longer retried.

    Run it again with ``fresh=True`` once the cause is fixed.

    Attributes:
        key: The run's idempotency key.
        interruptions: How many times a run of this key was interrupted.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str, interruptions: int) -> None:
        super().__init__(key, interruptions)
        self.key, self.interruptions = key, interruptions

    def __str__(self) -> str:
        return f"key {self.key!r} was interrupted {self.interruptions} times: marked as poisoned, not run again"


class KeyBusy(ChoreographError):
    """
    A durable run's key stayed leased by another live process for longer than the wait allowed.

    Attributes:
        key: The run's idempotency key.
        owner: Who holds the lease.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str, owner: str) -> None:
        super().__init__(key, owner)
        self.key, self.owner = key, owner

    def __str__(self) -> str:
        return f"key {self.key!r} is being run by {self.owner}"


class UnstorableOutput(ChoreographError, TypeError):
    """
    A durable run's callback returned an output its store's codec can't encode.

    It counts as a failure of that callback, at that step.

    Attributes:
        step: The step's name.
        phase: ``"precheck"`` or ``"job"``.
        type_name: The output's type.
        problem: The codec's explanation.

    .. versionadded:: 0.1.0
    """

    def __init__(self, step: str, phase: Phase, type_name: str, problem: str) -> None:
        super().__init__(step, phase, type_name, problem)
        self.step, self.phase, self.type_name, self.problem = step, phase, type_name, problem

    def __str__(self) -> str:
        return f"{self.phase} of step {self.step!r} returned a {self.type_name} the store can't encode: {self.problem}"


class PrecheckFailed(_WrapsError):
    """
    A precheck failed under ``Coordinator(strict_prechecks=True)``, so the run stopped.

    Raised as the run's fatal error for a precheck error that is neither
    `Skip` nor `ExecutionCanceled` (those keep their meaning).

    Attributes:
        step: The step's name.
        error: The precheck's original error (also ``__cause__``).

    .. versionadded:: 0.2.0
    """

    def __init__(self, step: str, error: BaseException) -> None:
        super().__init__(step, error)
        self.step, self.error = step, error
        self.__cause__ = error

    def __str__(self) -> str:
        return f"precheck of step {self.step!r} failed: {type(self.error).__name__}: {self.error}"


class InputError(_WrapsError):
    """
    A record of `Coordinator.run_many` could not be run: its key could not be derived, or it can't be stored.

    It is that record's fatal error; the batch goes on with the other records.

    Attributes:
        position: The record's position in the input stream, from 0.
        error: What went wrong (also ``__cause__``).

    .. versionadded:: 0.2.0
    """

    def __init__(self, position: int, error: BaseException) -> None:
        super().__init__(position, error)
        self.position, self.error = position, error
        self.__cause__ = error

    def __str__(self) -> str:
        return f"record {self.position} can't be run: {type(self.error).__name__}: {self.error}"


class ListenerWarning(UserWarning):
    """
    A listener of a run's events raised: the run went on as if it hadn't.

    The message names the listener, the event and the error.

    .. versionadded:: 0.2.0
    """


class SpecError(ChoreographError, ValueError):
    """
    A flow spec can't be read (`Coordinator.from_spec`) or written (`Coordinator.to_spec`).

    The message is ``where: problem``, or the problem alone for the whole
    document (a file that is missing, or isn't valid JSON or TOML).

    Attributes:
        where: The place in the spec, as a path such as
            ``steps[1].branches[0][0].job``; ``""`` for the whole document.
        problem: What is wrong, in words.

    .. versionadded:: 0.3.0
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
        self.where, self.problem = where, problem

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}" if self.where else self.problem
