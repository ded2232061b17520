"""
``runs``, ``show`` and ``store verify`` / ``store prune``: reading and tending a store, without importing a flow.

Values whose classes live in a flow's modules are shown as the JSON the
store holds (see `InspectCodec`): inspection never imports code named by a store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import click

from .._errors import StoreError
from ..durable.codec import StoredError
from ..durable.protocol import Event, RunInfo, Status, Store
from ..durable.replay import began
from ..durable.runlist import STATUSES
from ._records import jsonable
from ._target import inspect_store, open_store

#: Runs read to size the columns of ``runs``' table (the rest are printed as they are read).
_SIZING = 1000
#: Characters of an error message that ``runs`` prints.
_ERROR_WIDTH = 60


def when(seconds: float) -> str:
    """
    A time stamp in local time, to the second, with its offset.

    >>> when(0.0)[:4] in ("1970", "1969")
    True
    """
    return dt.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def _run_record(info: RunInfo) -> dict[str, object]:
    record = dataclasses.asdict(info)
    record["created"], record["updated"] = when(info.created), when(info.updated)
    return record


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


# -- runs ------------------------------------------------------------------------


def list_runs(
    *,
    store_location: str,
    status: Status | None,
    step: str | None,
    error_type: str | None,
    limit: int | None,
    count: bool,
    as_json: bool,
) -> int:
    """``choreograph runs``: list runs (most recently updated first), or count them."""
    store = inspect_store(store_location)
    if count:
        _count_runs(store, status=status, step=step, error_type=error_type, as_json=as_json)
        return 0
    runs = store.runs(status=status, step=step, error_type=error_type, limit=limit)
    if as_json:  # a JSON array, written as the runs are read
        click.echo("[", nl=False)
        for index, info in enumerate(runs):
            click.echo(("," if index else "") + "\n  " + json.dumps(_run_record(info), ensure_ascii=False), nl=False)
        click.echo("\n]")
        return 0
    _print_table(iter(runs))
    return 0


def _count_runs(
    store: Store, *, status: Status | None, step: str | None, error_type: str | None, as_json: bool
) -> None:
    """Counts by status, then the runs that stopped, by status, step and error type."""
    counts = dict(store.counts(status=status, step=step, error_type=error_type))
    stopped: dict[tuple[str, str, str], int] = {}
    for state, n in counts.items():
        if state == "ok" or not n:
            continue
        for info in store.runs(status=state, step=step, error_type=error_type):
            group = (state, info.failed_step or "-", info.error_type or "-")
            stopped[group] = stopped.get(group, 0) + 1
    groups = sorted(stopped.items(), key=lambda item: (-item[1], item[0]))
    if as_json:
        _echo_json(
            {
                "total": sum(counts.values()),
                "by_status": counts,
                "stopped": [
                    {"status": state, "step": stp, "error_type": kind, "runs": n} for (state, stp, kind), n in groups
                ],
            }
        )
        return
    width = max(len(state) for state in counts)
    for state, n in counts.items():
        click.echo(f"{state:<{width}}  {n:>8}")
    click.echo(f"{'total':<{width}}  {sum(counts.values()):>8}")
    if groups:
        click.echo("\nstopped runs by status, step and error type:")
        rows = [(state, stp, kind, str(n)) for (state, stp, kind), n in groups]
        for line in _aligned(rows, right=(3,)):
            click.echo("  " + line)


def _aligned(rows: Sequence[Sequence[str]], *, right: tuple[int, ...] = ()) -> Iterator[str]:
    """
    Rows as lines of aligned columns.

    >>> list(_aligned([("a", "1"), ("bbb", "22")], right=(1,)))
    ['a     1', 'bbb  22']
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        yield "  ".join(cells).rstrip()


_COLUMNS = ("KEY", "STATUS", "GEN", "STEP", "ERROR TYPE", "UPDATED", "ERROR")


def _cells(info: RunInfo) -> tuple[str, ...]:
    error = " ".join((info.error or "").split())
    return (
        info.key,
        info.status,
        str(info.generation),
        info.failed_step or "",
        info.error_type or "",
        when(info.updated),
        error if len(error) <= _ERROR_WIDTH else error[: _ERROR_WIDTH - 1] + "…",
    )


def _print_table(runs: Iterator[RunInfo]) -> None:
    """Print runs as a table: the columns are sized on the first runs, the others follow as they are read."""
    first = [_cells(info) for info in islice(runs, _SIZING)]
    if not first:
        click.echo("no runs", err=True)
        return
    widths = [max(len(column), *(len(row[i]) for row in first)) for i, column in enumerate(_COLUMNS)]

    def line(cells: Iterable[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    click.echo(line(_COLUMNS))
    for row in first:
        click.echo(line(row))
    for info in runs:
        click.echo(line(_cells(info)))


# -- show ------------------------------------------------------------------------


def _decoded(store: Store, text: str | None) -> object:
    return None if text is None else store.decode(text)


def _error(store: Store, event: Event) -> dict[str, object] | None:
    if event.error is None:
        return None
    error = store.decode_error(event.error)
    message = error.message if isinstance(error, StoredError) else str(error)
    return {
        "type": event.error_type,
        "message": " ".join(message.split()),
        "traceback": getattr(event, "traceback", None),  # stored by stores that record tracebacks
    }


def show_key(*, store_location: str, key: str, as_json: bool) -> int:
    """``choreograph show``: one key's status, input, events, outputs and errors."""
    store = inspect_store(store_location)
    info = store.run_info(key)
    if info is None:
        raise click.UsageError(f"no run of key {key!r} in {store.location}")
    stored_input = store.stored_input(key)  # never fails: the key has a row, and the codec gives back plain JSON
    events = store.events(key)
    records = [
        {
            "id": event.id,
            "generation": event.generation,
            "session": event.session,
            "step": event.step,
            "phase": event.phase,
            "outcome": event.outcome,
            "attempts": event.attempts,
            "seconds": event.seconds,
            "at": when(event.at),
            "output": _decoded(store, event.output),
            "error": _error(store, event),
        }
        for event in events
    ]
    latest = [record for record in records if record["generation"] == info.generation]
    outputs: dict[str, object] = {}
    for record in latest:  # the last output of each step's job in the current generation
        if record["phase"] == "job" and record["output"] is not None:
            outputs[str(record["step"])] = record["output"]
    errors = [{"step": r["step"], "phase": r["phase"], **r["error"]} for r in latest if isinstance(r["error"], dict)]
    current = [event for event in events if event.generation == info.generation]
    base = began(current)
    timeline = [
        {
            "step": e.step,
            "phase": e.phase,
            "outcome": e.outcome,
            "started": round(e.at - e.seconds - base, 6),
            "seconds": e.seconds,
        }
        for e in current
    ]
    if as_json:
        _echo_json(
            jsonable(
                {
                    "run": _run_record(info),
                    "input": stored_input,
                    "events": records,
                    "outputs": outputs,
                    "errors": errors,
                    "timeline": timeline,
                }
            )
        )
        return 0
    _print_key(info, stored_input, records, outputs, errors)
    _print_timeline(info.generation, timeline)
    return 0


#: Columns of a timeline's bars.
_BAR = 40


def _print_timeline(generation: int, calls: list[dict[str, Any]]) -> None:
    """
    Print the current generation's calls as bars on one time axis: calls of parallel branches overlap.

    Each call's bar starts where it started (from the generation's first
    callback's start, as `Call.started` counts for a restored call) and is as
    long as it took, at least one column.
    """
    if not calls:
        return
    end = max(call["started"] + call["seconds"] for call in calls) or 1.0
    click.echo(f"\ntimeline (generation {generation}; {end:.3f} s from its first callback's start)")
    rows = []
    for call in calls:
        first = min(_BAR - 1, int(call["started"] / end * _BAR))
        width = max(1, round(call["seconds"] / end * _BAR))
        bar = " " * first + "\u2588" * min(width, _BAR - first)
        rows.append((call["step"], call["phase"], call["outcome"], f"{call['started']:.3f} s", f"|{bar:<{_BAR}}|"))
    for line in _aligned(rows, right=(3,)):
        click.echo("  " + line)


def _print_key(
    info: RunInfo,
    stored_input: object,
    events: list[dict[str, Any]],
    outputs: dict[str, object],
    errors: list[dict[str, Any]],
) -> None:
    """Print one key as text: its row, its events (an error under its event), outputs, errors with tracebacks."""
    head = [
        ("key", info.key),
        ("status", info.status),
        ("generation", f"{info.generation} ({info.sessions} sessions, {info.interruptions} interruptions)"),
    ]
    if info.failed_step is not None or info.error is not None:
        head.append(("stopped at", f"{info.failed_step or '-'}: {' '.join((info.error or '').split())}"))
    head += [("created", when(info.created)), ("updated", when(info.updated)), ("input", _text(stored_input))]
    for line in _aligned(head):
        click.echo(line)
    click.echo("\nevents")
    rows = [("#", "gen", "session", "step", "phase", "outcome", "attempts", "seconds", "at")]
    rows += [
        (
            str(event["id"]),
            str(event["generation"]),
            str(event["session"]),
            event["step"],
            event["phase"],
            event["outcome"],
            str(event["attempts"]),
            f"{event['seconds']:.3f}",
            event["at"],
        )
        for event in events
    ]
    for line, event in zip(_aligned(rows, right=(0, 1, 2, 6, 7)), [None, *events], strict=True):
        click.echo("  " + line)
        if event is not None and event["error"] is not None:
            click.echo(f"      {event['error']['type']}: {event['error']['message']}")
    if outputs:
        click.echo("\noutputs")
        for line in _aligned([(f"{step}:", _text(output)) for step, output in outputs.items()]):
            click.echo("  " + line)
    if errors:
        click.echo("\nerrors")
        for error in errors:
            click.echo(f"  {error['step']} ({error['phase']}): {error['type']}: {error['message']}")
            traceback = error["traceback"]
            if traceback:
                click.echo("    " + traceback.rstrip().replace("\n", "\n    "))
            else:
                click.echo("    (no traceback stored)")


def _text(value: object) -> str:
    """
    A value on one line: as JSON when it can be, else its ``repr``.

    >>> _text({"id": "A-1", "n": 2}), _text("x")
    ('{"id": "A-1", "n": 2}', '"x"')
    """
    return json.dumps(jsonable(value), ensure_ascii=False)


# -- store ------------------------------------------------------------------------


def verify_store(*, store_location: str) -> int:
    """``choreograph store verify``: 0 when the store is sound, 1 (naming the problems) when not."""
    store = open_store(store_location, create=False)
    try:
        store.verify()
    except StoreError as exc:
        click.echo(f"choreograph store verify: {exc}", err=True)
        return 1
    click.echo(f"{store.location}: ok")
    return 0


def parse_before(text: str) -> float:
    """
    ``--before``: an ISO date or date and time (local time unless it has an offset), as seconds since the epoch.

    >>> parse_before("2026-01-02T03:04:05+00:00")
    1767323045.0
    """
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO date (2026-01-31) or date and time", param_hint="--before"
        ) from None
    return moment.timestamp()


def prune_store(*, store_location: str, status: Status, before: str | None) -> int:
    """``choreograph store prune``: delete finished runs with *status* (last updated before *before*)."""
    cutoff = None if before is None else parse_before(before)
    store = open_store(store_location, create=False)
    deleted = store.prune(status=status, before=cutoff)
    click.echo(f"deleted {deleted} {status} run{'s' if deleted != 1 else ''} from {store.location}")
    return 0


__all__ = ["STATUSES", "list_runs", "parse_before", "prune_store", "show_key", "verify_store", "when"]
