"""
The live progress bar of ``run_many(progress=True)``: rich draws it on stderr, when stderr is a terminal.

`track` wraps the iterator of results that an executor yields: the results
pass through unchanged, and each one is counted (done, ok, failed) as the
caller takes it. rich (the extra ``choreograph[cli]``) is imported when a bar
is drawn, never before: `check` only asks whether rich can be found.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Generator, Iterator, Sized
from typing import Any, Final, TypeVar

from ._core.callbacks import type_name
from ._core.result import RunResult

T = TypeVar("T")

#: Seconds between two updates of the bar: results coming faster are counted, and drawn with the next update.
_EVERY: Final = 0.1

NEEDS_RICH: Final = "progress bars need rich: install the extra choreograph[cli] (pip install 'choreograph[cli]')"


def check(progress: object, total: object) -> bool:
    """
    Check ``run_many``'s *progress* and *total*; return whether a bar is wanted.

    >>> check(False, None), check(False, 10)
    (False, False)

    Raises:
        TypeError: *progress* is not a bool, or *total* not an int or None.
        ValueError: *total* is negative.
        ImportError: A bar is wanted and rich is not installed.
    """
    if not isinstance(progress, bool):
        msg = f"progress must be a bool, got {type_name(progress)}"
        raise TypeError(msg)
    if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
        msg = f"total must be an int or None, got {type_name(total)}"
        raise TypeError(msg)
    if total is not None and total < 0:
        msg = f"total must be >= 0, got {total}"
        raise ValueError(msg)
    if progress and importlib.util.find_spec("rich") is None:
        raise ImportError(NEEDS_RICH, name="rich")
    return progress


def known_total(inputs: object, total: int | None) -> int | None:
    """
    The number of inputs: *total* when given, else ``len(inputs)`` when it has one.

    >>> known_total([1, 2, 3], None), known_total(iter([1]), None), known_total(iter([1]), 5)
    (3, None, 5)
    """
    if total is not None or not isinstance(inputs, Sized):
        return total
    return len(inputs)


def is_terminal(stream: object) -> bool:
    """
    Tell whether *stream* is a terminal (where a bar can be drawn).

    >>> import io
    >>> is_terminal(io.StringIO())
    False
    """
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def track(results: Generator[RunResult[T], None, None], total: int | None) -> Generator[RunResult[T], None, None]:
    """
    Return *results*, drawing a bar on stderr while they are taken if stderr is a terminal.

    Closing the returned generator closes *results* (which stops the
    executor's workers) and the bar; so does an exception, Ctrl-C included.
    """
    if not is_terminal(sys.stderr):
        return results
    return _tracked(results, total)


def _tracked(results: Generator[RunResult[T], None, None], total: int | None) -> Generator[RunResult[T], None, None]:
    bar = Bar(total)
    try:
        for result in results:
            bar.count(ok=result.ok)
            yield result
    finally:
        try:
            results.close()
        finally:
            bar.close()


class Bar:
    """
    A live bar on stderr: done (of *total* when known), rate, elapsed time, ETA, and the ok and failed counts.

    `count` may be called from any thread; the bar is redrawn by rich's own
    thread, ten times a second.
    """

    def __init__(self, total: int | None, *, what: str = "runs") -> None:
        from rich.console import Console  # noqa: PLC0415 - the extra, imported only to draw
        from rich.progress import Progress  # noqa: PLC0415

        self._lock = threading.Lock()
        self._done = self._ok = self._failed = 0
        self._drawn_at = 0.0
        self._progress = Progress(
            *_columns(what),
            console=Console(stderr=True, force_terminal=True),
            redirect_stdout=is_terminal(sys.stdout),  # else what the runs print would land on stderr
            redirect_stderr=True,
        )
        self._task = self._progress.add_task(what, total=total, ok=0, failed=0)
        self._progress.start()

    def count(self, *, ok: bool) -> None:
        """Count one finished run."""
        with self._lock:
            self._done += 1
            if ok:
                self._ok += 1
            else:
                self._failed += 1
            now = time.monotonic()
            if now - self._drawn_at >= _EVERY:
                self._drawn_at = now
                self._update()

    def _update(self) -> None:
        self._progress.update(self._task, completed=self._done, ok=self._ok, failed=self._failed)

    def close(self) -> None:
        """Draw the final counts and stop redrawing (the last bar stays on the screen)."""
        with self._lock:
            self._update()
        self._progress.stop()


def _columns(what: str) -> Iterator[Any]:
    """The bar's columns: ``━━━━╺━━  42/100  35.2/s  0:00:01 ETA 0:00:02  40 ok 2 failed``."""
    from rich.progress import (  # noqa: PLC0415 - the extra, imported only to draw
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text  # noqa: PLC0415

    class RateColumn(ProgressColumn):
        """Runs per second, over rich's speed window."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-/s" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")

    yield BarColumn()
    yield MofNCompleteColumn()
    yield TextColumn(what)
    yield RateColumn()
    yield TimeElapsedColumn()
    yield TextColumn("ETA")
    yield TimeRemainingColumn()
    yield TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]")
