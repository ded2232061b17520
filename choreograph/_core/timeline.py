"""
A run's calls as a Mermaid gantt chart: what `RunResult.timeline` draws.

It reads the trace only (`Call.started` and `Call.seconds`), so it draws a
result read back from a store or unpickled as well as a fresh one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

#: A bar is at least this share of the chart's span wide, so that a call of a few microseconds still shows.
MIN_SHARE: Final = 0.01
#: Characters gantt lines reserve (a task's name ends at ``:``; ``#`` and ``;`` end a line in some
#: versions), drawn as look-alikes.
_MINUTE: Final = 60_000
_HOUR: Final = 60 * _MINUTE
_RESERVED: Final = str.maketrans({":": "\u2236", "#": "\uff03", ";": "\uff1b", "\n": " ", "\r": " ", "\t": " "})


class TracedCall(Protocol):
    """What the chart reads of a trace entry (a `Call`)."""

    @property
    def step(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def seconds(self) -> float: ...
    @property
    def attempts(self) -> int: ...
    @property
    def restored(self) -> bool: ...
    @property
    def started(self) -> float: ...


@dataclass(frozen=True, slots=True)
class _Bar:
    section: str
    name: str
    tags: tuple[str, ...]
    start: int  # milliseconds from the run's start
    end: int


def gantt(calls: Iterable[TracedCall], *, run_id: int, key: str | None, fatal: BaseException | None) -> str:
    """
    Draw *calls* as a Mermaid ``gantt`` chart: a section per step, its precheck and job as bars, then compensations.

    Bars are placed to the millisecond by each call's start (``dateFormat x``:
    milliseconds from the run's start) and are at least `MIN_SHARE` of the
    chart wide. A failed call is ``crit``; a canceled one ``active``; a job
    skipped by its precheck a ``milestone``; a restored one ``done``. Every
    bar's name says its phase, outcome and wall time.

    >>> from choreograph import Call
    >>> print(gantt([Call(step="a", phase="job", outcome="ok", seconds=0.25)], run_id=1, key=None, fatal=None), end="")
    gantt
        title run 1: ok
        dateFormat x
        axisFormat %S.%L
        todayMarker off
        section a
            job · ok · 250 ms :0, 250
    """
    ordered = sorted(calls, key=lambda call: (call.started, call.started + call.seconds))
    span = max((_ms(call.started + call.seconds) for call in ordered), default=0)
    least = max(1, math.ceil(span * MIN_SHARE))
    bars = [_bar(call, least) for call in ordered]
    sections: dict[str, list[_Bar]] = {}
    for bar in bars:  # the steps in the order they started, the compensations last
        sections.setdefault(bar.section, []).append(bar)
    undo = sections.pop("", [])
    lines = [
        "gantt",
        f"    title {_title(run_id, key, fatal)}",
        "    dateFormat x",
        f"    axisFormat {_axis(span)}",
        "    todayMarker off",
    ]
    for section, members in [*sections.items(), *([("compensations", undo)] if undo else [])]:
        lines.append(f"    section {_text(section)}")
        lines.extend(
            f"        {bar.name} :{''.join(f'{tag}, ' for tag in bar.tags)}{bar.start}, {bar.end}" for bar in members
        )
    if not bars:
        lines += ["    section run", "        no callback ran :milestone, 0, 1"]
    return "\n".join(lines) + "\n"


def _bar(call: TracedCall, least: int) -> _Bar:
    tags: list[str] = []
    if call.outcome == "failed":
        tags.append("crit")
    elif call.outcome == "canceled":
        tags.append("active")
    elif call.outcome == "skipped":
        tags.append("milestone")
    if call.restored:
        tags.append("done")
    start = _ms(call.started)
    end = max(_ms(call.started + call.seconds), start + least)
    words = [call.phase, call.outcome]
    if call.outcome != "skipped":
        words.append(_duration(call.seconds))
    if call.attempts > 1:
        words.append(f"{call.attempts} attempts")
    if call.restored:
        words.append("restored")
    if call.phase == "compensate":
        # Named after the step, in a section of their own; "undo" first keeps
        # a step named like a gantt keyword ("title") from starting the line.
        return _Bar("", _text(f"undo {call.step} · {' · '.join(words[1:])}"), tuple(tags), start, end)
    return _Bar(call.step, _text(" · ".join(words)), tuple(tags), start, end)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _text(text: str) -> str:
    r"""
    *text* as gantt lines take it: reserved characters as look-alikes, on one line.

    >>> _text("a: b#1;\nc") == "a\u2236 b\uff031\uff1b c"
    True
    """
    return " ".join(text.translate(_RESERVED).split())


def _title(run_id: int, key: str | None, fatal: BaseException | None) -> str:
    """
    The chart's title: the run, and how it ended.

    >>> from choreograph import JobFailed
    >>> _title(7, None, None), _title(7, "A-1", JobFailed("book", KeyError("x")))
    ('run 7: ok', 'key A-1: JobFailed at book (KeyError)')
    """
    who = f"run {run_id}" if key is None else f"key {key}"
    if fatal is None:
        return f"{_text(who)}: ok"
    what = type(fatal).__name__
    step: object = getattr(fatal, "step", None)
    if isinstance(step, str):
        what += f" at {step}"
    error: object = getattr(fatal, "error", None)
    if isinstance(error, BaseException):
        what += f" ({type(error).__name__})"
    return f"{_text(who)}: {_text(what)}"


def _axis(span: int) -> str:
    """
    The axis's time format for a chart *span* milliseconds wide.

    >>> _axis(900), _axis(59_000), _axis(3_599_000), _axis(3_600_000)
    ('%S.%L', '%S.%L', '%M:%S', '%H:%M:%S')
    """
    if span < _MINUTE:
        return "%S.%L"
    if span < _HOUR:
        return "%M:%S"
    return "%H:%M:%S"


def _duration(seconds: float) -> str:
    """
    *seconds*, readably.

    >>> _duration(0.0000112), _duration(0.0105), _duration(0.25), _duration(2.5), _duration(75)
    ('0.0112 ms', '10.5 ms', '250 ms', '2.5 s', '75.0 s')
    """
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.1f} s"
