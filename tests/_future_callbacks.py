"""Callbacks defined under postponed evaluation of annotations (all hints are strings)."""

from __future__ import annotations

from dataclasses import dataclass

from choreograph import Context


@dataclass(frozen=True)
class Record:
    """An input type defined in this module: resolving it needs this module's globals."""

    id: int


def job_with_context_and_record(ctx: Context, record: Record) -> str:
    """Return the step's name and the record's id."""
    return f"{ctx.step}:{record.id}"


def precheck_with_generic_context(context: Context[Record]) -> int:
    """Return the id of the run's input, read through the context."""
    return context.input.id


def job_with_input_only(record: Record) -> Record:
    """Return the input unchanged."""
    return record


def job_without_output(ctx: Context) -> None:
    """Return something that must be ignored: the return annotation is ``None``."""
    return ctx.step  # type: ignore[return-value]
