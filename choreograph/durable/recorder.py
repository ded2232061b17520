"""The run loop's recorder for durable runs: encodes each outcome and commits it through a `StoreSession`."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

from .._core.callbacks import type_name
from .._core.result import Outcome
from .._core.state import RunState
from .._errors import (
    MISSING,
    CallbackFailure,
    CallbackTimeout,
    ChoreographError,
    Phase,
    RunCancelled,
    UnassignableInput,
    UnassignableOutput,
    UnstorableOutput,
)
from .codec import Codec, CodecError, error_message
from .leases import ACTIVE
from .protocol import Ending, NewEvent, Status, StoreSession

#: ``NewEvent(...)`` and ``Ending(...)`` without their generated ``__new__``: one is made per callback, per run.
_new_event = tuple.__new__
_new_ending = tuple.__new__

#: The most characters of a stored traceback (`Event.traceback`).
TRACEBACK_LIMIT: Final = 16 * 1024
#: The most characters of one part of it (a frame, an exception's message), so that a huge message
#: can't push the frames out.
PART_LIMIT: Final = 2 * 1024
_LEFT_OUT: Final = "[... {} characters left out ...]\n"

#: Errors choreograph gives a callback without the callback raising anything.
_VERDICTS: Final = (UnassignableInput, UnassignableOutput, UnstorableOutput, CallbackTimeout, RunCancelled)


def bounded(text: str, limit: int = TRACEBACK_LIMIT) -> str:
    r"""
    *text* if it has at most *limit* characters; else a quarter of them from its head and the rest from its tail.

    The parts are cut at line ends where there are any, around a marker
    saying how much was left out.

    >>> bounded("short", 100)
    'short'
    >>> text = "".join(f"line {i}\n" for i in range(1000))
    >>> cut = bounded(text, 200)
    >>> len(cut) <= 200, cut.startswith("line 0\n"), cut.endswith("line 999\n")
    (True, True, True)
    >>> print(bounded("x" * 100, 60))
    xxxxxx
    [... 75 characters left out ...]
    xxxxxxxxxxxxxxxxxxx
    """
    if len(text) <= limit:
        return text
    room = limit - len(_LEFT_OUT.format(len(text))) - 1  # and a line end after a head cut mid-line
    head = text[: room // 4]
    if "\n" in head:
        head = head[: head.rindex("\n") + 1]
    tail = text[len(text) - (room - len(head)) :]
    if "\n" in tail[:-1]:
        tail = tail[tail.index("\n") + 1 :]
    marker = _LEFT_OUT.format(len(text) - len(head) - len(tail))
    return f"{head}{marker}{tail}" if head.endswith("\n") else f"{head}\n{marker}{tail}"


def _is_ours(tb: TracebackType) -> bool:
    """Whether the frame of *tb* runs choreograph's code."""
    module = tb.tb_frame.f_globals.get("__name__")
    return isinstance(module, str) and module.startswith("choreograph.")


def _own_frames(tb: TracebackType | None) -> TracebackType | None:
    """*tb* from the first frame that is not choreograph's (the callback's own); *tb* itself if all are."""
    start = tb
    while start is not None and _is_ours(start):
        start = start.tb_next
    return start if start is not None else tb


def _context_is_ours(error: BaseException) -> bool:
    """Whether *error* would be printed after an implicit context raised and handled in choreograph's code only."""
    context = error.__context__
    if context is None or error.__cause__ is not None or error.__suppress_context__:
        return False
    tb = context.__traceback__
    while tb is not None and _is_ours(tb):
        tb = tb.tb_next
    return context.__traceback__ is not None and tb is None


def _origin(error: BaseException) -> str:
    """The line that says how a callback failed without raising *error* itself; "" when it raised it."""
    tb = error.__traceback__
    if isinstance(error, CallbackFailure):
        return (
            "The callback returned a Failure of a value that is not an exception (wrapped in CallbackFailure):"
            " nothing was raised, so there are no frames.\n"
        )
    if isinstance(error, _VERDICTS) and tb is None:
        return "Choreograph failed the callback (it raised nothing), so there are no frames.\n"
    if tb is None:
        return "The callback returned this error in a Failure without raising it, so there are no frames.\n"
    if not _is_ours(tb):
        return "The callback returned this error in a Failure; it was raised and caught here:\n"
    return ""  # raised by the callback: choreograph caught it


def traceback_text(error: BaseException) -> str:
    """
    *error*'s traceback as `Event.traceback` stores it: from the callback's own frames, bounded.

    Chained errors (``__cause__``, ``__context__``) and notes are included,
    as Python prints them; each part has at most `PART_LIMIT` characters and
    the whole at most `TRACEBACK_LIMIT`.

    >>> print(traceback_text(ValueError("no")), end="")
    The callback returned this error in a Failure without raising it, so there are no frames.
    ValueError: no
    """
    try:
        formatted = traceback.TracebackException(type(error), error, _own_frames(error.__traceback__))
        if _context_is_ours(error):  # choreograph's own business (an event loop looked for, say), not the callback's
            formatted.__context__ = None
        text = _origin(error) + "".join(bounded(part, PART_LIMIT) for part in formatted.format())
    except Exception as exc:  # noqa: BLE001  # pragma: no cover - a guard: `traceback` copes with bad errors itself
        text = f"{qualified_type(error)} (its traceback could not be formatted: {qualified_type(exc)})\n"
    return bounded(text)


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


def _retrieved(future: asyncio.Future[object]) -> None:
    """Take a deferred write's outcome, so that asyncio doesn't log a failure that nobody awaits."""
    if not future.cancelled():
        future.exception()


class DurableRecorder:
    """
    Records one run of one key (the core's `Recorder`), encoding with the store's codec.

    Args:
        session: The store's session, holding the key's lease.
        codec: The store's codec.
        latest_ids: The id of each callback's latest earlier event (see `Resumption`),
            for the restored entries of an ``ok`` run's result.
        store: The store, and *key* the run's key: released in `ACTIVE` once
            the session ends, finished or not.
    """

    __slots__ = (
        "_append",
        "_append_ok",
        "_batch",
        "_codec",
        "_commits",
        "_encoded",
        "_ids",
        "_key",
        "_latest",
        "_session",
        "_store",
    )

    def __init__(
        self, session: StoreSession, codec: Codec, latest_ids: dict[tuple[str, str], int], store: object, key: str
    ) -> None:
        self._session, self._codec, self._latest, self._store, self._key = session, codec, latest_ids, store, key
        self._append: Callable[[NewEvent], Any] = session.record  # looked up once per run, not per callback
        # The stores of this package also take an event without an error as its fields (most events are):
        # ``_record_ok(step, phase, outcome, output, attempts, seconds) -> id``, as ``record`` with a
        # `NewEvent` of them would. That spares a NewEvent per callback, which costs more than its insert's
        # Python: the other stores get NewEvents.
        self._append_ok = getattr(session, "_record_ok", None)
        self._encoded: tuple[object, str] | None = None
        self._ids: list[Any] = []  # this session's events, in order: their ids (their futures, deferred)
        self._batch: Any = None  # the event loop's batch its writes are queued on, once deferred
        self._commits: list[Awaitable[object]] = []

    def defer(self, run: RunState) -> bool:
        """
        Queue this run's events and its finish on the running event loop's batch from now on, if its store can.

        The writes of the runs awaited side by side on the loop are then
        committed together (`choreograph.durable._commits.LoopBatch`) instead
        of one transaction each: the run loop waits for them before the run's
        next callback starts (`RunState.commits`), as it waits for a write
        committed at once, and the run returns once its finish is committed.
        A store whose session has no ``record_later`` commits each write at
        once (False).
        """
        session: Any = self._session
        if getattr(session, "record_later", None) is None:
            return False
        self._batch = session.loop_batch()
        self._append, self._append_ok = self._record_later, None
        run.commits = self._commits
        return True

    def _record_later(self, event: NewEvent) -> Awaitable[int]:
        future: Awaitable[int] = self._session.record_later(event, self._batch)  # type: ignore[attr-defined]
        self._commits.append(future)
        return future

    def check_output(self, step: str, phase: Phase, value: object) -> Exception | None:
        """
        Encode *value* now, so that an unstorable output fails its own callback.

        A branch of a parallel group calls it from its worker thread: the
        encoding is kept with its value, and `record` uses it only for that
        very value (another branch's may have replaced it in between).
        """
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
            fast = self._append_ok
            if fast is not None:
                self._ids.append(fast(step, phase, outcome, encoded, attempts, seconds))
                return
            event = _new_event(NewEvent, (step, phase, outcome, encoded, None, None, attempts, seconds, None))
        else:  # a failed callback: only here is its traceback formatted
            error_text, error_type, text = self._codec.encode_error(error), qualified_type(error), traceback_text(error)
            event = _new_event(
                NewEvent, (step, phase, outcome, encoded, error_text, error_type, attempts, seconds, text)
            )
        self._ids.append(self._append(event))

    def rolling_back(self, fatal: ChoreographError) -> None:
        """Mark the run as rolling back, before the first compensation starts."""
        self._session.rolling_back(self._codec.encode_error(fatal))

    def set_trace_context(self, context: str) -> None:
        """Store the run's trace context (see `StoreSession.set_trace_context`), if the store's session can."""
        store_it = getattr(self._session, "set_trace_context", None)  # a session written before 0.3.0 can't
        if store_it is not None:
            store_it(context)

    def finished(self, run: RunState) -> None:
        """Record how the run ended, and release the key (once the finish is committed, when deferred)."""
        try:
            ending = self._ending(run)
            if self._batch is not None:
                future: asyncio.Future[None] = self._session.finish_later(ending, self._batch)  # type: ignore[attr-defined]
                future.add_done_callback(self._release)
                self._commits.append(future)
                return
            self._session.finish(ending)
        except BaseException:
            ACTIVE.release(self._store, self._key)
            raise
        ACTIVE.release(self._store, self._key)

    def _release(self, _: object) -> None:
        ACTIVE.release(self._store, self._key)

    def _ending(self, run: RunState) -> Ending:
        """How the run ended, for its store."""
        fatal = run.fatal
        if fatal is None:  # ok: the result is the ids of its trace's events, in order
            ids = self._ids if self._batch is None else [future.result() for future in self._ids]  # all committed
            latest = self._latest
            if latest:
                new = iter(ids)
                calls = run.raw_calls()
                result = tuple([latest[call[0].casefold(), call[1]] if call[5] else next(new) for call in calls])
            else:  # nothing restored: every entry of the trace is an event of this session, in order
                result = tuple(ids)
            return _new_ending(Ending, ("ok", None, None, None, None, result))
        return Ending(
            status=status_of(run),
            fatal=self._codec.encode_error(fatal),
            failed_step=stopped_at(run),
            error_type=qualified_type(getattr(fatal, "error", None) or fatal),
            error_message=error_message(fatal),
        )

    def interrupted(self) -> None:
        """Give the key up without finishing: the next run of it resumes."""
        for future in self._commits:  # deferred writes no one awaits now: they commit (or fail) unwatched
            future.add_done_callback(_retrieved)  # type: ignore[attr-defined]
        try:
            self._session.release()
        finally:
            ACTIVE.release(self._store, self._key)
