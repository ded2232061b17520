"""
The durable runner: a key's lease, what its run restores, and how it ends, for any `Store`.

`DurableRunner.acquire` is written once for plain and async callers: it is a
generator that yields a `Sleep` while another holder runs the key, and
returns either the run to go on with (set up from the store's events) or
the result when nothing is to run (the key finished, is poisoned, or stayed
busy). The caller drives it with `drive` or `drive_async`, then runs the
run the same way as any other (`choreograph._core.runs`); the run's
`DurableRecorder` commits every outcome and, at the end, the key's status.

`DurableRunner.rerun` is `acquire` for a new generation that starts with
copies of the earlier steps' events (see `Rerun`): the run that follows is
set up from them as a resumed run is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final

from .._core.bag import DataBag
from .._core.callbacks import type_name
from .._core.drivers import Sleep
from .._core.plan import Plan
from .._core.result import Finished, RunResult, result_of
from .._core.runs import new_run
from .._core.state import RunState
from .._errors import KeyBusy, PoisonedRun
from ..events import RunEvent, RunStarted
from .codec import CodecError, StoredError
from .leases import ACTIVE
from .protocol import TRACE_CONTEXT_LIMIT, Begun, Restore, Store
from .recorder import DurableRecorder
from .replay import Decoder, Replay, Rerun, Resumption, stored_result

#: Seconds between looks at a key another holder runs.
POLL: Final = 0.05

_monotonic: Final = time.monotonic


class DurableRunner:
    """
    Runs of a coordinator's plan, made durable by *store*.

    Args:
        store: Where runs are recorded.
        key_of: Derives a run's key from its input, when ``run`` gets no ``key=``.
    """

    __slots__ = ("key_of", "store")

    def __init__(self, store: Store, key_of: Callable[[Any], str | int] | None) -> None:
        self.store, self.key_of = store, key_of

    def key(self, input: object, key: str | int | None) -> str:  # noqa: A002
        """The run's key: *key*, else derived from *input*; checked."""
        if type(key) is str and key:  # the common case, in one test
            return key
        if key is None:
            if self.key_of is None:
                msg = "a durable run needs a key: pass run(..., key=...) or Coordinator(key=...)"
                raise TypeError(msg)
            try:
                key = self.key_of(input)
            except Exception as exc:
                exc.add_note(f"choreograph: raised by Coordinator(key={self.key_of!r}) deriving the key of {input!r}")
                raise
        if isinstance(key, bool) or not isinstance(key, str | int):
            msg = f"a durable run's key must be a str or an int, got {type_name(key)}"
            raise TypeError(msg)
        key = str(key)
        if not key:
            msg = "a durable run's key must not be empty"
            raise ValueError(msg)
        return key

    def encode(self, key: str, input: object) -> str:  # noqa: A002
        """The run's input, encoded for the store; `TypeError` when the codec can't."""
        try:
            return self.store.codec.encode(input)
        except CodecError as exc:
            raise TypeError(f"the input of key {key!r} can't be stored: {exc}") from exc

    def acquire(
        self,
        plan: Plan,
        input: object,  # noqa: A002
        key: str,
        encoded: str,
        values: Mapping[str, object] | None,
        timeout: float | None,
        emit: Callable[[RunEvent], None] | None,
        *,
        fresh: bool,
        restore: Restore | None = None,
    ) -> Generator[Sleep, object, RunState | RunResult[Any]]:
        """
        Take *key*'s lease, waiting while another holder runs it (at most the lease and a second).

        The arguments are those of `prepare`, which callers try first: most keys are free.

        Returns:
            The run, set up to resume from the store; or the result, when nothing is to run.
        """
        give_up = _monotonic() + self.store.lease + 1.0
        while True:
            prepared = self.prepare(plan, input, key, encoded, values, timeout, emit, fresh=fresh, restore=restore)
            if not isinstance(prepared, str):
                return prepared
            if _monotonic() >= give_up:
                return result_of(Finished(input, (), KeyBusy(key, prepared), DataBag(), 0, key, (), ()))
            yield Sleep(POLL)

    def prepare(
        self,
        plan: Plan,
        input: object,  # noqa: A002
        key: str,
        encoded: str,
        values: Mapping[str, object] | None,
        timeout: float | None,
        emit: Callable[[RunEvent], None] | None,
        *,
        fresh: bool,
        restore: Restore | None = None,
    ) -> RunState | RunResult[Any] | str:
        """
        Try once to take *key*'s lease (*encoded* is the input as `encode` gives it).

        *restore* is a rerun's (see `rerun`): the new generation starts with
        the events it chooses, and the run is set up from them.

        Returns:
            The run, set up to resume from the store; the result, when nothing is
            to run; or the holder's name, while another holder runs the key.
        """
        store = self.store
        if not ACTIVE.claim(store, key):  # another thread of this process runs it: wait as for a process
            return store.owner
        try:
            if restore is None:  # as stores written before reruns know it
                begun = store.begin(key, encoded, fresh=fresh)
            else:
                begun = store.begin(key, encoded, fresh=fresh, restore=restore)
        except BaseException:
            ACTIVE.release(store, key)
            raise
        return self._set_up(begun, plan, input, key, values, timeout, emit)

    async def prepare_together(
        self,
        plan: Plan,
        input: object,  # noqa: A002
        key: str,
        encoded: str,
        values: Mapping[str, object] | None,
        timeout: float | None,
        emit: Callable[[RunEvent], None] | None,
        *,
        fresh: bool,
    ) -> RunState | RunResult[Any] | str:
        """
        `prepare`, its begin committed with the other writes of the running event loop, when the store can.

        A store with ``begin_later`` (`SqliteStore`) queues the begin on the
        loop's batch (see `choreograph.durable._commits.LoopBatch`); another
        begins at once, as `prepare` does.
        """
        store = self.store
        begin_later = getattr(store, "begin_later", None)
        if begin_later is None:
            return self.prepare(plan, input, key, encoded, values, timeout, emit, fresh=fresh)
        if not ACTIVE.claim(store, key):
            return store.owner
        future = begin_later(key, encoded, fresh=fresh)
        try:
            begun = await asyncio.shield(future)  # a cancelled run leaves the begin to commit: see below
        except BaseException:
            ACTIVE.release(store, key)
            future.add_done_callback(_give_back)  # a begin committed after its run was cancelled gives the key back
            raise
        return self._set_up(begun, plan, input, key, values, timeout, emit)

    def _set_up(
        self,
        begun: Begun | str,
        plan: Plan,
        input: object,  # noqa: A002
        key: str,
        values: Mapping[str, object] | None,
        timeout: float | None,
        emit: Callable[[RunEvent], None] | None,
    ) -> RunState | RunResult[Any] | str:
        """The run *begun* starts (see `prepare`), with *key* claimed in `ACTIVE`; released unless it runs."""
        store = self.store
        if isinstance(begun, str):
            ACTIVE.release(store, key)
            return begun
        session = begun.recorder
        if session is None:  # nothing runs: the key finished, or is poisoned
            ACTIVE.release(store, key)
            return self._stored(begun, key, input)
        try:
            run = new_run(plan, input, values, timeout, emit, key=key)
            events = begun.events
            if events:
                decoder = Decoder(store.codec, store.location, key)
                resumption = Resumption(events, decoder)
                run.recorder = recorder = DurableRecorder(session, store.codec, resumption.latest_ids, store, key)
                run.restored = resumption.restored or None
                run.attempt_base = resumption.attempts or None
                run.compensated = resumption.compensated
                if begun.status == "compensating":
                    _resume_rollback(run, begun, resumption, decoder)
            else:  # a new key, or a new generation: nothing to restore
                run.recorder = recorder = DurableRecorder(session, store.codec, {}, store, key)
            if emit is not None:
                run.emit = _TraceContext(run, emit, recorder, begun.trace_context)
        except BaseException:
            try:
                session.release()  # nothing ran: give the key back as it was
            finally:
                ACTIVE.release(store, key)
            raise
        return run

    def _stored(self, begun: Begun, key: str, input: object) -> RunResult[Any]:  # noqa: A002
        """The result of a key that runs nothing: it finished ok (rebuilt from its events), or is poisoned."""
        if begun.status == "poisoned":
            return result_of(Finished(input, (), PoisonedRun(key, begun.interruptions), DataBag(), 0, key, (), ()))
        decoder = Decoder(self.store.codec, self.store.location, key)
        return result_of(stored_result(key, input, begun.events, begun.result, None, decoder))

    def rerun(
        self,
        plan: Plan,
        key: str,
        from_step: str,
        values: Mapping[str, object] | None,
        timeout: float | None,
        emit: Callable[[RunEvent], None] | None,
    ) -> Generator[Sleep, object, RunState | RunResult[Any]]:
        """
        Set up a new generation of *key*, run with its stored input, from step *from_step* of *plan*.

        The steps before it are restored from the key's latest generation (see
        `Rerun`), copied into the new one when it begins, in the same
        transaction; the lease is taken as by `acquire`, to drive.

        Raises:
            TypeError: *from_step* is not a str.
            ValueError: *plan* has no step *from_step* (ignoring case); or,
                when driven, what `Rerun` refuses.
            KeyError: The store has no run of *key*.
        """
        given: object = from_step
        if not isinstance(given, str):
            msg = f"from_step must be a step's name, got {type_name(given)}"
            raise TypeError(msg)
        folded = from_step.casefold()
        start = next((index for index, st in enumerate(plan.steps) if st.key == folded), None)
        if start is None:
            steps = ", ".join(repr(st.name) for st in plan.steps) or "none"
            msg = f"rerun from an unknown step {from_step!r}: the steps are {steps}"
            raise ValueError(msg)
        stored = self.store.stored_input(key)
        restore = Rerun(plan, start, key, self.store.location)
        return self.acquire(
            plan, stored, key, self.encode(key, stored), values, timeout, emit, fresh=True, restore=restore
        )


def _resume_rollback(run: RunState, begun: Begun, resumption: Resumption, decoder: Decoder) -> None:
    """Set up a run whose rollback was interrupted: restore what completed, then compensate."""
    fatal = decoder.fatal(begun.fatal) or StoredError("unknown", "the fatal error was not recorded")
    run.rollback = True
    run.fatal = fatal
    # The result shows the run as it stood: every callback's latest outcome,
    # but for the failed compensations, which run again now.
    replay = Replay.latest(begun.events, decoder)
    run.calls = [call for call in replay.calls if call[1] != "compensate" or call[2] == "ok"]
    run.errors.extend(replay.errors)
    for name, value in replay.bag.job_data.items():
        run.job_data[name.casefold()] = value
    for name, value in replay.bag.precheck_data.items():
        run.precheck_data[name.casefold()] = value
    failed_step = str(getattr(fatal, "step", "")).casefold()
    restored = resumption.restored
    run.completed = [
        st
        for st in run.plan.steps
        if (st.key in restored and restored[st.key].job_ok) or (st.compensate_failed and st.key == failed_step)
    ]


def _give_back(future: asyncio.Future[Begun | str]) -> None:
    """A begin whose run was cancelled before it started: give the key back if it was taken."""
    if future.cancelled() or future.exception() is not None:
        return
    begun = future.result()
    if not isinstance(begun, str) and begun.recorder is not None:
        with contextlib.suppress(Exception):
            begun.recorder.release()


class _TraceContext:
    """
    A durable run's `emit` until its first event: its `RunStarted` gets the run's trace context (a carrier).

    The carrier holds the W3C ``traceparent`` a session of the run's
    generation stored, if any; else it is empty, and what a listener puts in
    it (`choreograph.otel.Tracing` its run span's ``traceparent``) is stored
    once the listeners have seen the event, before the first callback. Then
    the run's events go straight to *emit*: this costs nothing per callback.
    """

    __slots__ = ("emit", "recorder", "run", "stored")

    def __init__(
        self, run: RunState, emit: Callable[[RunEvent], None], recorder: DurableRecorder, stored: str | None
    ) -> None:
        self.run, self.emit, self.recorder, self.stored = run, emit, recorder, stored

    def __call__(self, event: RunEvent) -> None:
        emit = self.emit
        self.run.emit = emit
        if type(event) is not RunStarted:  # pragma: no cover - a run's first event is its RunStarted
            emit(event)
            return
        stored = self.stored
        carrier: dict[str, str] = {} if stored is None else {"traceparent": stored}
        emit(RunStarted(run_id=event.run_id, key=event.key, input=event.input, at=event.at, trace_context=carrier))
        if stored is None:
            given = carrier.get("traceparent")
            if isinstance(given, str) and 0 < len(given) <= TRACE_CONTEXT_LIMIT:
                self.recorder.set_trace_context(given)
