"""The run loop's recorder for durable runs: encodes each outcome and commits it through a `StoreSession`."""

from __future__ import annotations

from collections.abc import Callable

from .._core.callbacks import type_name
from .._core.result import Outcome
from .._core.state import RunState
from .._errors import MISSING, ChoreographError, Phase, UnstorableOutput
from .codec import Codec, CodecError, error_message
from .protocol import Ending, NewEvent, Status, StoreSession

#: ``NewEvent(...)`` without its generated ``__new__``: one is made per callback.
_new_event = tuple.__new__


def qualified_type(error: BaseException) -> str:
    """
    An error's class as stored: ``QualName`` for builtins, else ``module.QualName``.

    >>> import json
    >>> qualified_type(KeyError()), qualified_type(json.JSONDecodeError("m", "d", 0))
    ('KeyError', 'json.decoder.JSONDecodeError')
    """
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def status_of(run: RunState) -> Status:
    """How a durable run ended, for its store."""
    if run.fatal is None:
        return "ok"
    if run.compensation_errors:
        return "compensating"  # resumed (the failed compensations retried) when run again
    if run.rollback or any(call[1] == "compensate" for call in run.calls or ()):
        return "rolled_back"
    return "failed"


def stopped_at(run: RunState) -> str | None:
    """The step where the run's fatal error stopped it (a precheck's ExecutionCanceled names none itself)."""
    fatal = run.fatal
    if fatal is None:
        return None
    step = getattr(fatal, "step", None)
    if isinstance(step, str):
        return step
    return run.errors[-1].step if run.errors else None


class DurableRecorder:
    """
    Records one run of one key (the core's `Recorder`), encoding with the store's codec.

    Args:
        session: The store's session, holding the key's lease.
        codec: The store's codec.
        latest_ids: The id of each callback's latest earlier event (see `Resumption`),
            for the restored entries of an ``ok`` run's result.
        done: Called once the key is released, finished or not.
    """

    __slots__ = ("_codec", "_done", "_encoded", "_ids", "_latest", "_session")

    def __init__(
        self,
        session: StoreSession,
        codec: Codec,
        latest_ids: dict[tuple[str, str], int],
        done: Callable[[], None],
    ) -> None:
        self._session, self._codec, self._latest, self._done = session, codec, latest_ids, done
        self._encoded: tuple[object, str] | None = None
        self._ids: list[int] = []  # this session's events, in order

    def check_output(self, step: str, phase: Phase, value: object) -> Exception | None:
        """Encode *value* now, so that an unstorable output fails its own callback."""
        try:
            self._encoded = (value, self._codec.encode(value))
        except CodecError as exc:
            self._encoded = None
            return UnstorableOutput(step, phase, type_name(value), exc.problem)
        return None

    def record(
        self,
        step: str,
        phase: Phase,
        outcome: Outcome,
        output: object,
        error: BaseException | None,
        attempts: int,
        seconds: float,
    ) -> None:
        """Commit one callback's outcome; *output* is MISSING when none was stored."""
        encoded = None
        if output is not MISSING:
            cached = self._encoded  # check_output encoded it already
            encoded = cached[1] if cached is not None and cached[0] is output else self._codec.encode(output)
        self._encoded = None
        if error is None:
            event = _new_event(NewEvent, (step, phase, outcome, encoded, None, None, attempts, seconds))
        else:
            error_text, error_type = self._codec.encode_error(error), qualified_type(error)
            event = _new_event(NewEvent, (step, phase, outcome, encoded, error_text, error_type, attempts, seconds))
        self._ids.append(self._session.record(event))

    def rolling_back(self, fatal: ChoreographError) -> None:
        """Mark the run as rolling back, before the first compensation starts."""
        self._session.rolling_back(self._codec.encode_error(fatal))

    def finished(self, run: RunState) -> None:
        """Record how the run ended, and release the key."""
        status = status_of(run)
        fatal = run.fatal
        result = None
        if status == "ok":
            new = iter(self._ids)
            result = tuple(
                self._latest[call[0].casefold(), call[1]] if call[5] else next(new) for call in run.raw_calls()
            )
        ending = Ending(status=status, result=result)
        if fatal is not None:
            ending = Ending(
                status=status,
                fatal=self._codec.encode_error(fatal),
                failed_step=stopped_at(run),
                error_type=qualified_type(getattr(fatal, "error", None) or fatal),
                error_message=error_message(fatal),
            )
        try:
            self._session.finish(ending)
        finally:
            self._done()

    def interrupted(self) -> None:
        """Give the key up without finishing: the next run of it resumes."""
        try:
            self._session.release()
        finally:
            self._done()
