"""
Logging, as one consumer of a run's events: loguru records at the levels the contract lists.

Disabled by default (``logger.disable("choreograph")``, as loguru advises
libraries); ``logger.enable("choreograph")`` turns it on. While it is off, a
run has no listener for it and costs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from loguru import logger

from ._errors import ExecutionCanceled, Skip
from .events import CallbackFinished, CallbackStarted, Emitted, RunEvent, RunFinished, RunStarted

_NAME: Final = __name__


def is_enabled() -> bool:
    """
    Tell, cheaply, whether loguru would emit this module's records.

    loguru answers that only by inspecting the caller's frame on every call
    (about a microsecond, even while disabled). Its cache of enabled modules is
    read here once per run instead; when it is unavailable or not filled yet,
    logging is attempted and loguru decides.
    """
    try:
        core = logger._core  # type: ignore[attr-defined]  # noqa: SLF001 - loguru's, read-only, see above
        if not core.handlers:
            return False
        return core.enabled.get(_NAME, True) is not False
    except AttributeError:  # pragma: no cover - a future loguru without these internals
        return True


def log(event: RunEvent) -> None:
    """Log one event."""
    _BY_TYPE[type(event)](event)


def _callback_finished(event: CallbackFinished) -> None:
    error = event.error
    if error is None:
        if event.outcome == "skipped":
            logger.debug("step {step} job skipped by its precheck", run_id=event.run_id, step=event.step, phase="job")
        return
    fields = {"run_id": event.run_id, "step": event.step, "phase": event.phase, "error": error}
    if event.phase == "job":
        logger.error("step {step} job failed: {error!r}", attempts=event.attempt, **fields)
    elif event.phase == "compensate":
        logger.error("step {step} compensation failed: {error!r}", **fields)
    elif isinstance(error, Skip):
        logger.debug("step {step} skipped by its precheck: {error}", **fields)
    elif isinstance(error, ExecutionCanceled):
        logger.warning("step {step} precheck canceled the run: {error!r}", **fields)
    else:
        logger.warning("step {step} precheck failed: {error!r}", **fields)


def _callback_started(event: CallbackStarted) -> None:
    if event.attempt > 1:
        logger.info(
            "step {step} {phase} attempt {attempt} starting: retrying after a failure",
            run_id=event.run_id,
            step=event.step,
            phase=event.phase,
            attempt=event.attempt,
        )


def _run_started(event: RunStarted) -> None:
    logger.info("run {run_id} started", run_id=event.run_id, key=event.key)


def _run_finished(event: RunFinished) -> None:
    result = event.result
    fields = {"run_id": event.run_id, "key": event.key, "errors": len(result.errors)}
    if result.ok:
        logger.info("run {run_id} finished ok", **fields)
    else:
        logger.warning("run {run_id} stopped: {fatal!r}", fatal=result.fatal, **fields)


def _emitted(event: Emitted) -> None:
    logger.debug(
        "step {step} emitted {kind}", run_id=event.run_id, step=event.step, kind=event.kind, payload=event.payload
    )


_BY_TYPE: Final[dict[type, Callable[..., None]]] = {
    CallbackFinished: _callback_finished,
    CallbackStarted: _callback_started,
    RunStarted: _run_started,
    RunFinished: _run_finished,
    Emitted: _emitted,
}
