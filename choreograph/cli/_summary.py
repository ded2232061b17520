"""
What a batch did: the summary printed at the end of ``run``, ``resume`` and ``rerun``, and the ``--output`` lines.

Both are written by the thread that takes the results; records that can't
be read are counted by the workers that read the input, under a lock.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from typing import IO, Any

import click

from .._core.result import RunResult
from .._errors import InputError, JobFailed, PrecheckFailed
from ..durable.codec import StoredError
from ..durable.recorder import qualified_type
from ._records import RecordError, jsonable

#: The step of a failure that happened before any step: a record that can't be read, converted or keyed.
INPUT_STEP = "(input)"


def failure(result: RunResult[Any]) -> tuple[str, str, str]:
    """
    Where and why a failed run stopped: ``(step, error type, message)``, the error being the job's or precheck's own.

    >>> from choreograph import Coordinator, Step
    >>> def charge(order: dict) -> None:
    ...     raise ValueError("card declined")
    >>> failure(Coordinator([Step("charge", charge)]).run({}))
    ('charge', 'ValueError', 'card declined')
    """
    fatal = result.fatal
    assert fatal is not None  # noqa: S101 - asked of failed runs only
    cause = fatal.error if isinstance(fatal, JobFailed | PrecheckFailed | InputError) else fatal
    step: str | None = INPUT_STEP if isinstance(fatal, InputError) else getattr(fatal, "step", None)
    if step is None and result.errors:
        step = result.errors[-1].step
    kind = cause.type_name.replace(":", ".") if isinstance(cause, StoredError) else qualified_type(cause)
    return (step or "-", kind, " ".join(str(cause).split()))


class Summary:
    """
    The counts of a batch: runs, ok, restored, resumed, failed by step and error type, skipped steps, time and rate.

    Args:
        title: What ran, for the table's title.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._lock = threading.Lock()
        self.runs = self.ok = self.restored = self.resumed = 0
        self.failed: Counter[tuple[str, str]] = Counter()
        self.skipped: Counter[str] = Counter()
        self._started = time.perf_counter()
        self._seconds: float | None = None

    def add(self, result: RunResult[Any], *, restored: bool = False, resumed: bool = False) -> None:
        """Count one run's result."""
        with self._lock:
            self.runs += 1
            self.restored += restored
            self.resumed += resumed
            if result.ok:
                self.ok += 1
            else:
                step, kind, _ = failure(result)
                self.failed[step, kind] += 1
            for call in result.trace:
                if call.outcome == "skipped" and not call.restored:
                    self.skipped[call.step] += 1

    def add_unreadable(self) -> None:
        """Count a record that could not be read or converted (any thread)."""
        with self._lock:
            self.runs += 1
            self.failed[INPUT_STEP, "RecordError"] += 1

    @property
    def failures(self) -> int:
        """How many runs failed."""
        return self.runs - self.ok

    def exit_code(self, *, interrupted: bool) -> int:
        """130 when interrupted, else 1 when some run failed, else 0."""
        if interrupted:
            return 130
        return 1 if self.failures else 0

    def stop(self) -> None:
        """Stop the clock."""
        if self._seconds is None:
            self._seconds = time.perf_counter() - self._started

    def print(self, *, interrupted: bool = False) -> None:
        """Print the summary table on stderr."""
        from rich.console import Console  # noqa: PLC0415 - the extra, imported to draw
        from rich.table import Table  # noqa: PLC0415

        self.stop()
        seconds = self._seconds or 0.0
        table = Table(title=self.title, box=None, show_header=False, title_justify="left", padding=(0, 1, 0, 2))
        table.add_column("what")
        table.add_column("count", justify="right")
        table.add_row("runs", str(self.runs))
        table.add_row("ok", f"[green]{self.ok}[/]")
        table.add_row("restored", str(self.restored))
        table.add_row("resumed", str(self.resumed))
        table.add_row("failed", f"[red]{self.failures}[/]" if self.failures else "0")
        for (step, kind), count in sorted(self.failed.items(), key=lambda item: (-item[1], item[0])):
            table.add_row(f"  {step}: {kind}", str(count))
        if self.skipped:
            table.add_row("skipped steps", str(sum(self.skipped.values())))
            for step, count in sorted(self.skipped.items(), key=lambda item: (-item[1], item[0])):
                table.add_row(f"  {step}", str(count))
        table.add_row("time", f"{seconds:.2f} s")
        table.add_row("rate", f"{self.runs / seconds:,.1f} runs/s" if seconds > 0 else "-")
        console = Console(stderr=True, highlight=False)
        console.print(table)
        if interrupted:
            console.print(
                "[yellow]interrupted[/]: nothing new was started; the runs in flight finished in the store"
                " (not counted above). Run the same command again to go on."
            )


class Output:
    """
    ``--output FILE``: one JSON line per run (``-`` for standard output).

    A line holds ``key``, ``ok``, ``restored``, ``resumed``, ``input``,
    ``outputs`` (the jobs' outputs by step), ``failed_step``, ``error_type``
    and ``error``; a record that could not be run also its ``position`` in INPUT.
    """

    def __init__(self, location: str) -> None:
        self._file: IO[str]
        if location == "-":
            self._file = sys.stdout
            return
        try:
            self._file = open(location, "w", encoding="utf-8")  # noqa: SIM115, PTH123 - closed by `close`
        except OSError as exc:
            raise click.UsageError(f"cannot write --output {location!r}: {exc.strerror or exc}") from exc

    def result(self, result: RunResult[Any], *, restored: bool, resumed: bool, position: int | None = None) -> None:
        """Write one run's line."""
        step, kind, message = failure(result) if not result.ok else (None, None, None)
        line: dict[str, object] = {"key": result.key, "ok": result.ok, "restored": restored, "resumed": resumed}
        if position is not None:
            line["position"] = position
        line |= {
            "input": jsonable(result.input),
            "outputs": jsonable(dict(result.data_bag.job_data)),
            "failed_step": step,
            "error_type": kind,
            "error": message,
        }
        self._write(line)

    def unreadable(self, position: int, record: object, error: RecordError) -> None:
        """Write the line of a record that could not be read or converted."""
        line: dict[str, object] = {
            "key": None,
            "ok": False,
            "restored": False,
            "resumed": False,
            "position": position,
            "input": None if isinstance(record, RecordError) else jsonable(record),
            "outputs": {},
            "failed_step": INPUT_STEP,
            "error_type": "RecordError",
            "error": str(error),
        }
        self._write(line)

    def _write(self, line: dict[str, object]) -> None:
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")

    def close(self) -> None:
        """Flush; close the file (not standard output)."""
        if self._file is sys.stdout:
            self._file.flush()
        else:
            self._file.close()
