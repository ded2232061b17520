"""
Listeners: the callables a coordinator sends its runs' events to, one event at a time.

A run gets one `emit` callable (or ``None`` when nobody listens, so that a
run costs what it cost before listeners existed). `fan_out` makes it from the
coordinator's listeners, `on_success`/`on_failure` and the logging listener:
each is called in turn, synchronously, and one that raises is reported with
a `ListenerWarning` and never changes the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ._core.result import RunResult
from ._errors import ListenerWarning
from .events import RunEvent, RunFinished

Listener = Callable[[RunEvent], object]


def outcome_listener(
    on_success: Callable[[RunResult[Any]], object] | None, on_failure: Callable[[RunResult[Any]], object] | None
) -> Listener | None:
    """A listener calling *on_success* or *on_failure* with each finished run's result."""
    if on_success is None and on_failure is None:
        return None

    def on_finished(event: RunEvent) -> None:
        if type(event) is RunFinished:
            callback = on_success if event.result.ok else on_failure
            if callback is not None:
                callback(event.result)

    on_finished.__qualname__ = f"on_success={on_success!r}, on_failure={on_failure!r}"
    return on_finished


def fan_out(listeners: Sequence[Listener]) -> Callable[[RunEvent], None] | None:
    """One callable sending each event to every listener in turn; ``None`` for no listener."""
    if not listeners:
        return None
    chosen = tuple(listeners)

    def emit(event: RunEvent) -> None:
        for listener in chosen:
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a listener never changes the run
                name = getattr(listener, "__qualname__", None) or repr(listener)
                message = (
                    f"listener {name} raised {type(exc).__name__}: {exc} on {type(event).__name__}"
                    f" of run {event.run_id}; the run goes on"
                )
                warnings.warn(ListenerWarning(message), stacklevel=2)

    return emit
