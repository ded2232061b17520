"""
Property test of the run semantics against a small, independent reference model.

For any sequence of steps whose prechecks and jobs succeed or fail in any of the
ways API.md names, `run()` (and `run_async()`) must produce exactly the trace,
error stack, fatal error and DataBag the model predicts; nothing runs after a
fatal error and the error stack keeps execution order.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure

from choreograph import (
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    RunResult,
    Skip,
    Step,
    UnassignableOutput,
)

KINDS = ("ok", "raise", "skip", "skip_output", "cancel", "failure", "wrong_type")


@dataclass(frozen=True)
class Behaviour:
    """What one callback does when called."""

    kind: str
    #: The output of "ok", or the `Skip` output of "skip_output" (unchecked, so maybe a str).
    value: object
    is_async: bool


@dataclass(frozen=True)
class StepSpec:
    name: str
    precheck: Behaviour | None
    job: Behaviour


@st.composite
def behaviours(draw: st.DrawFn) -> Behaviour:
    kind = draw(st.sampled_from(KINDS))
    if kind == "skip_output":
        value: object = draw(st.one_of(st.integers(), st.text(max_size=3)))
    else:
        value = draw(st.integers())
    return Behaviour(kind, value, draw(st.booleans()))


@st.composite
def flows(draw: st.DrawFn) -> list[StepSpec]:
    count = draw(st.integers(min_value=1, max_value=6))
    return [StepSpec(f"step{i}", draw(st.none() | behaviours()), draw(behaviours())) for i in range(count)]


# -- the reference model ----------------------------------------------------------

#: The error a failing behaviour puts on the error stack.
ERROR_TYPES: dict[str, type[Exception]] = {
    "raise": ValueError,
    "skip": Skip,
    "skip_output": Skip,
    "cancel": ExecutionCanceled,
    "failure": ValueError,
    "wrong_type": UnassignableOutput,
}


@dataclass
class Prediction:
    calls: list[tuple[str, str]] = field(default_factory=list)
    trace: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[tuple[str, str, type[Exception]]] = field(default_factory=list)
    #: None; ExecutionCanceled; or (JobFailed, step name).
    fatal: object = None
    precheck_data: dict[str, object] = field(default_factory=dict)
    job_data: dict[str, object] = field(default_factory=dict)


def predict(flow: list[StepSpec]) -> Prediction:
    """Apply API.md's run semantics, step by step."""
    model = Prediction()
    for spec in flow:
        name, precheck, job = spec.name, spec.precheck, spec.job
        if precheck is not None:
            model.calls.append((name, "precheck"))
            if precheck.kind == "ok":
                model.trace.append((name, "precheck", "ok"))
                model.precheck_data[name] = precheck.value
            elif precheck.kind == "cancel":
                model.trace.append((name, "precheck", "canceled"))
                model.errors.append((name, "precheck", ExecutionCanceled))
                model.fatal = ExecutionCanceled
                return model
            else:
                model.trace.append((name, "precheck", "failed"))
                model.errors.append((name, "precheck", ERROR_TYPES[precheck.kind]))
                if precheck.kind == "skip_output":
                    model.precheck_data[name] = precheck.value
                model.trace.append((name, "job", "skipped"))
                continue
        model.calls.append((name, "job"))
        if job.kind == "ok":
            model.trace.append((name, "job", "ok"))
            model.job_data[name] = job.value
        else:
            model.trace.append((name, "job", "failed"))
            model.errors.append((name, "job", ERROR_TYPES[job.kind]))
            model.fatal = (JobFailed, name)
            return model
    return model


# -- the flow, built with the library ---------------------------------------------


def act(behaviour: Behaviour, label: str) -> object:
    kind = behaviour.kind
    if kind == "ok":
        return behaviour.value
    if kind == "raise":
        raise ValueError(label)
    if kind == "skip":
        raise Skip(label)
    if kind == "skip_output":
        raise Skip(label, output=behaviour.value)
    if kind == "cancel":
        raise ExecutionCanceled(label)
    if kind == "failure":
        return Failure(ValueError(label))
    assert kind == "wrong_type"
    return f"not an int: {label}"


def callback(behaviour: Behaviour, name: str, phase: str, log: list[tuple[str, str]]) -> Callable[..., Any]:
    label = f"{name}.{phase}"

    if behaviour.is_async:

        async def async_callback() -> int:
            log.append((name, phase))
            await asyncio.sleep(0)
            return act(behaviour, label)  # type: ignore[return-value]

        return async_callback

    def plain_callback() -> int:
        log.append((name, phase))
        return act(behaviour, label)  # type: ignore[return-value]

    return plain_callback


def build(flow: list[StepSpec], log: list[tuple[str, str]]) -> Coordinator[Any]:
    coordinator: Coordinator[Any] = Coordinator()
    for spec in flow:
        precheck = None if spec.precheck is None else callback(spec.precheck, spec.name, "precheck", log)
        coordinator.add_step(Step(spec.name, callback(spec.job, spec.name, "job", log), precheck))
    return coordinator


def check(result: RunResult[Any], log: list[tuple[str, str]], flow: list[StepSpec], model: Prediction) -> None:
    assert log == model.calls
    assert [(c.step, c.phase, c.outcome) for c in result.trace] == model.trace
    assert [(e.step, e.phase, type(e.error)) for e in result.errors] == model.errors

    if model.fatal is None:
        assert result.fatal is None
        assert result.ok
    elif model.fatal is ExecutionCanceled:
        assert type(result.fatal) is ExecutionCanceled
        assert result.fatal is result.errors[-1].error
        assert not result.ok
    else:
        _, step = model.fatal
        assert isinstance(result.fatal, JobFailed)
        assert result.fatal.step == step
        assert result.fatal.error is result.errors[-1].error
        assert result.fatal.__cause__ is result.fatal.error
        assert not result.ok

    bag = result.data_bag
    for spec in flow:
        assert bag.has_precheck_data(spec.name) == (spec.name in model.precheck_data)
        assert bag.has_job_data(spec.name) == (spec.name in model.job_data)
        if spec.name in model.precheck_data:
            assert bag.get_precheck_data(spec.name) == model.precheck_data[spec.name]
        if spec.name in model.job_data:
            assert bag.get_job_data(spec.name) == model.job_data[spec.name]

    # Independent of the model: errors keep execution order, and a fatal error is the last thing that ran.
    positions = [log.index((e.step, e.phase)) for e in result.errors]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    if result.fatal is not None:
        last = result.errors[-1]
        assert log[-1] == (last.step, last.phase)
        assert result.trace[-1].step == last.step
        assert result.trace[-1].phase == last.phase


@settings(max_examples=200, deadline=None)
@given(flows())
def test_run_matches_the_reference_model(flow):
    """`run()` and `run_async()` produce the trace, error stack, fatal and DataBag that the model predicts."""
    model = predict(flow)

    log: list[tuple[str, str]] = []
    coordinator = build(flow, log)
    check(coordinator.run(), log, flow, model)

    log.clear()
    check(asyncio.run(coordinator.run_async()), log, flow, model)
