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
from ..events import RunEvent
from .codec import CodecError, StoredError
from .leases import ActiveKeys
from .protocol import Begun, Restore, Store
from .recorder import DurableRecorder
from .replay import Decoder, Replay, Rerun, Resumption, stored_result

#: Seconds between looks at a key another holder runs.
POLL: Final = 0.05

_active: Final = ActiveKeys()
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
        begun = self._begin(key, encoded, fresh=fresh, restore=restore)
        if isinstance(begun, str):
            return begun
        decoder = Decoder(self.store.codec, self.store.location, key)
        if begun.status == "ok":
            return result_of(stored_result(key, input, begun.events, begun.result, None, decoder))
        if begun.status == "poisoned":
            fatal = PoisonedRun(key, begun.interruptions)
            return result_of(Finished(input, (), fatal, DataBag(), 0, key, (), ()))
        session = begun.recorder
        assert session is not None  # noqa: S101 - a store gives one for a run that goes on
        try:
            run = new_run(plan, input, values, timeout, emit, key=key)
            resumption = Resumption(begun.events, decoder) if begun.events else None
            run.recorder = DurableRecorder(
                session, self.store.codec, {} if resumption is None else resumption.latest_ids, self._releaser(key)
            )
            if resumption is not None:
                run.restored = resumption.restored or None
                run.attempt_base = resumption.attempts or None
                run.compensated = resumption.compensated
                if begun.status == "compensating":
                    _resume_rollback(run, begun, resumption, decoder)
        except BaseException:
            try:
                session.release()  # nothing ran: give the key back as it was
            finally:
                _active.release(self.store, key)
            raise
        return run

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

    def _releaser(self, key: str) -> Callable[[], None]:
        """What the run's recorder calls once the key is released: this process no longer runs it."""
        return lambda: _active.release(self.store, key)

    def _begin(self, key: str, encoded_input: str, *, fresh: bool, restore: Restore | None) -> Begun | str:
        """The store's `begin`, for one thread of this process at a time per key."""
        store = self.store
        if not _active.claim(store, key):  # another thread of this process runs it: wait as for a process
            return store.owner
        try:
            if restore is None:  # as stores written before reruns know it
                begun = store.begin(key, encoded_input, fresh=fresh)
            else:
                begun = store.begin(key, encoded_input, fresh=fresh, restore=restore)
        except BaseException:
            _active.release(store, key)
            raise
        if isinstance(begun, str) or begun.recorder is None:
            _active.release(store, key)
        return begun


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
