"""
Replay: a run rebuilt from a store's events, the same way for every store.

`Resumption` is what a resumed run restores (the steps that completed, the
attempts made so far); `Replay` is a finished run's DataBag, errors and trace,
read back without running anything; `Rerun` chooses the events a rerun's new
generation starts with.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._core.bag import DataBag
from .._core.plan import Plan
from .._core.result import Finished, RawCall
from .._core.state import NOTHING
from .._errors import ChoreographError, Phase, StepError, StoreError
from .codec import Codec, CodecError
from .protocol import Event, Row


class Decoder:
    """A store's codec, with errors that name the store, key and step."""

    __slots__ = ("codec", "key", "location")

    def __init__(self, codec: Codec, location: str, key: str) -> None:
        self.codec, self.location, self.key = codec, location, key

    def output(self, step: str, text: str) -> object:
        """Decode a stored output (or input)."""
        try:
            return self.codec.decode(text)
        except CodecError as exc:
            problem = f"cannot restore the output of step {step!r} of key {self.key!r}: {exc}"
            raise StoreError(self.location, problem) from exc

    def error(self, text: str) -> BaseException:
        """Decode a stored error (never raises: see `Codec.decode_error`)."""
        return self.codec.decode_error(text)

    def fatal(self, text: str | None) -> ChoreographError | None:
        """Decode a stored fatal error; None if there is none, or it isn't a `ChoreographError` any more."""
        if text is None:
            return None
        decoded = self.codec.decode_error(text)
        return decoded if isinstance(decoded, ChoreographError) else None


class RestoredStep:
    """A step that completed in an earlier session: what the run gets back (see `Restored`)."""

    __slots__ = ("calls", "errors", "job_ok", "job_output", "order", "precheck_output")

    def __init__(self) -> None:
        self.order = 0
        self.calls: tuple[RawCall, ...] = ()
        self.precheck_output: object = NOTHING
        self.job_output: object = NOTHING
        self.errors: tuple[StepError, ...] = ()
        self.job_ok = False


class Resumption:
    """
    What a run of a key resumes from: the latest event of every callback in its generation.

    Attributes:
        restored: The steps that completed (a job ok, or skipped by its precheck), by case-folded name.
        latest_ids: The id of each callback's latest event, by (case-folded step, phase).
        attempts: Attempts made so far, by (case-folded step, phase).
        compensated: Case-folded names of the steps compensated successfully.
    """

    def __init__(self, events: Sequence[Event], decoder: Decoder) -> None:
        latest: dict[tuple[str, str], Event] = {}
        self.attempts: dict[tuple[str, Phase], int] = {}
        compensated: set[str] = set()
        names: dict[str, str] = {}
        for event in events:
            folded = event.step.casefold()
            names[folded] = event.step
            latest[folded, event.phase] = event
            where = (folded, event.phase)
            self.attempts[where] = max(self.attempts.get(where, 0), event.attempts)  # events hold running totals
            if event.phase == "compensate" and event.outcome == "ok":
                compensated.add(folded)
        self.compensated = frozenset(compensated)
        self.latest_ids = {where: event.id for where, event in latest.items()}
        self.restored: dict[str, RestoredStep] = {}
        base = began(events)
        for folded, name in names.items():
            pre, job = latest.get((folded, "precheck")), latest.get((folded, "job"))
            if job is not None and completed(pre, job):
                self.restored[folded] = _restored_step(name, pre, job, decoder, base)


def began(events: Sequence[Event]) -> float:
    """
    When the first of *events* started (seconds since the epoch): what a restored call's `Call.started` counts from.

    >>> began([])
    0.0
    """
    return min((event.at - event.seconds for event in events), default=0.0)


def raw_call(event: Event, base: float) -> RawCall:
    """The trace entry of a stored callback: restored, started *base* seconds after the stored run's first."""
    return (
        event.step,
        event.phase,
        event.outcome,
        event.seconds,
        event.attempts,
        True,
        event.at - event.seconds - base,
    )


def completed(pre: Event | None, job: Event) -> bool:
    """Whether a step whose latest events are these completed: its job ok, or skipped by its precheck."""
    return job.outcome == "ok" or (job.outcome == "skipped" and pre is not None)


class Rerun:
    """
    What a rerun of *key* from step *start* of *plan* restores: a `Restore` for `Store.begin`.

    Called with the key's row and the events of its latest generation, once
    the key's lease is taken, it returns the ids of the latest events of every
    step before *start* (in the plan's order), or raises: `KeyError` when the
    key has no run; `ValueError` when its rollback is unfinished, or a step
    before *start* did not complete or was compensated in that generation.
    """

    __slots__ = ("before", "key", "location", "start")

    def __init__(self, plan: Plan, start: int, key: str, location: str) -> None:
        self.before = [(st.key, st.name) for st in plan.steps[:start]]
        self.start = plan.steps[start].name
        self.key, self.location = key, location

    def __call__(self, row: Row | None, events: Sequence[Event]) -> list[int]:
        """The ids of the events to copy into the new generation, oldest first."""
        key = self.key
        if row is None:
            msg = f"no run of key {key!r} in {self.location}"
            raise KeyError(msg)
        if row.status == "compensating":
            msg = (
                f"cannot rerun key {key!r}: its rollback is unfinished (status 'compensating');"
                " resume it to finish the rollback, or run it with fresh=True to abandon it"
            )
            raise ValueError(msg)
        latest: dict[tuple[str, Phase], Event] = {}
        for event in events:
            latest[event.step.casefold(), event.phase] = event
        chosen: list[int] = []
        for folded, name in self.before:
            pre, job = latest.get((folded, "precheck")), latest.get((folded, "job"))
            why = None
            if (folded, "compensate") in latest:
                why = "was compensated (its work undone)"
            elif job is None or not completed(pre, job):
                last = job or pre
                why = "did not complete (it never ran)" if last is None else f"did not complete ({_ended(last)})"
            if why is not None:
                msg = (
                    f"cannot rerun key {key!r} from step {self.start!r}: step {name!r}, before it,"
                    f" {why} in generation {row.generation}; rerun from {name!r} or an earlier step"
                )
                raise ValueError(msg)
            chosen.extend(event.id for event in (pre, job) if event is not None)
        return sorted(chosen)


def _ended(event: Event) -> str:
    """
    How a step's latest callback ended, for messages.

    >>> _ended(Event(id=1, key="k", generation=1, session=1, step="s", phase="job", outcome="failed",
    ...              output=None, error=None, error_type="ValueError", attempts=1, seconds=0.0, at=0.0))
    'its job failed with ValueError'
    """
    if event.phase == "precheck" and event.outcome == "ok":
        return "its job never finished"
    with_error = f" with {event.error_type}" if event.error_type else ""
    return f"its {event.phase} {event.outcome}{with_error}"


def _restored_step(name: str, pre: Event | None, job: Event, decoder: Decoder, base: float) -> RestoredStep:
    step = RestoredStep()
    calls: list[RawCall] = []
    if pre is not None:
        calls.append(raw_call(pre, base))
        if pre.output is not None:
            step.precheck_output = decoder.output(name, pre.output)
        if pre.error is not None:
            step.errors = (StepError(name, "precheck", decoder.error(pre.error)),)
    calls.append(raw_call(job, base))
    step.order = job.id
    if job.outcome == "ok":
        step.job_ok = True
        if job.output is not None:
            step.job_output = decoder.output(name, job.output)
    step.calls = tuple(calls)
    return step


class Replay:
    """Callbacks' outcomes read back from events: the DataBag, errors and trace they make."""

    def __init__(self, events: Sequence[Event], decoder: Decoder) -> None:
        self.bag = DataBag()
        self.errors: list[StepError] = []
        self.calls: list[RawCall] = []
        self.compensation_errors: list[StepError] = []
        base = began(events)
        for event in events:
            if event.output is not None and event.phase != "compensate":
                value = decoder.output(event.step, event.output)
                (self.bag.set_job_data if event.phase == "job" else self.bag.set_precheck_data)(event.step, value)
            if event.error is not None:
                error = StepError(event.step, event.phase, decoder.error(event.error))
                (self.compensation_errors if event.phase == "compensate" else self.errors).append(error)
            self.calls.append(raw_call(event, base))

    @classmethod
    def latest(cls, events: Sequence[Event], decoder: Decoder) -> Replay:
        """Each callback's latest outcome (earlier ones were superseded by a resume)."""
        last = {(event.step.casefold(), event.phase): index for index, event in enumerate(events)}
        return cls([e for i, e in enumerate(events) if last[e.step.casefold(), e.phase] == i], decoder)


def stored_result(
    key: str,
    input: object,  # noqa: A002
    events: Sequence[Event],
    result_ids: Sequence[int] | None,
    fatal: ChoreographError | None,
    decoder: Decoder,
) -> Finished:
    """A finished run of *key*, as its finishing session returned it, rebuilt from its events: nothing runs."""
    if result_ids:
        by_id = {event.id: event for event in events}
        replay = Replay([by_id[i] for i in result_ids if i in by_id], decoder)
    else:  # finished before stores recorded results (SQLite schema version 1)
        replay = Replay.latest(events, decoder)
    return Finished(
        input,
        tuple(replay.errors),
        fatal,
        replay.bag,
        0,
        key,
        tuple(replay.compensation_errors),
        tuple(replay.calls),
    )
