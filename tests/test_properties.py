"""
Property test of the run semantics against a small, independent reference model.

For any sequence of steps whose prechecks and jobs succeed or fail in any of the
ways API.md names, `run()` (and `run_async()`) must produce exactly the trace,
error stack, fatal error and DataBag the model predicts; nothing runs after a
fatal error and the error stack keeps execution order. Random flows with parallel groups must
obey the group rules (see "flows with parallel groups" below).
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure

from choreograph import (
    Coordinator,
    DataBag,
    ExecutionCanceled,
    JobFailed,
    Parallel,
    RunResult,
    Skip,
    Step,
    UnassignableOutput,
)
from choreograph._core.result import Finished

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


# -- flows with parallel groups ---------------------------------------------------
#
# Branches race, so the model does not predict one trace: it predicts, for
# every step, the outcome of each of its callbacks *if* it runs, and the rules
# that any legal run obeys (API.md "Flow graphs: parallel groups"):
#
# - within a sequence (the flow, or a branch), a node starts only after the
#   node before it ended, and never after a fatal error inside that node;
# - a step's job is skipped exactly when its precheck failed without
#   canceling; a callback that ran has the outcome its behaviour predicts; a
#   step may be cut short (precheck traced, job not) only by a fatal error;
# - with no fatal error anywhere, every step runs, and the run is ok;
# - otherwise the run's fatal error is that of the first fatal outcome in the
#   trace (the trace is in the order callbacks finished);
# - the error stack is the failed callbacks' errors in trace order, the log of
#   calls is exactly the callbacks traced as called, and the DataBag holds
#   exactly the outputs of the callbacks traced ``ok`` (and ``Skip`` outputs).


@dataclass(frozen=True)
class GroupSpec:
    name: str
    branches: tuple[tuple["Spec", ...], ...]
    max_workers: int | None


Spec = StepSpec | GroupSpec


@st.composite
def nodes(draw: st.DrawFn, names: list[int], depth: int) -> Spec:
    names[0] += 1
    number = names[0]
    if depth > 0 and draw(st.integers(0, 2)) == 0:
        branches = tuple(
            tuple(draw(nodes(names, depth - 1)) for _ in range(draw(st.integers(1, 2))))
            for _ in range(draw(st.integers(1, 3)))
        )
        return GroupSpec(f"group{number}", branches, draw(st.none() | st.integers(1, 3)))
    return StepSpec(f"step{number}", draw(st.none() | behaviours()), draw(behaviours()))


@st.composite
def group_flows(draw: st.DrawFn) -> list[Spec]:
    names = [0]
    flow = [draw(nodes(names, 2)) for _ in range(draw(st.integers(1, 4)))]
    if not any(isinstance(node, GroupSpec) for node in flow):  # at least one group, anywhere
        branches = tuple((draw(nodes(names, 0)),) for _ in range(draw(st.integers(1, 3))))
        flow.insert(draw(st.integers(0, len(flow))), GroupSpec(f"group{names[0] + 1}", branches, None))
    return flow


def build_groups(flow: list[Spec], log: list[tuple[str, str]]) -> Coordinator[Any]:
    def node(spec: Spec) -> Step[Any] | Parallel:
        if isinstance(spec, GroupSpec):
            return Parallel(
                spec.name, *[[node(n) for n in branch] for branch in spec.branches], max_workers=spec.max_workers
            )
        precheck = None if spec.precheck is None else callback(spec.precheck, spec.name, "precheck", log)
        return Step(spec.name, callback(spec.job, spec.name, "job", log), precheck)

    return Coordinator([node(spec) for spec in flow])


# -- the model's rules -------------------------------------------------------------------


def steps_of(spec: Spec) -> list[StepSpec]:
    if isinstance(spec, StepSpec):
        return [spec]
    return [step for branch in spec.branches for node in branch for step in steps_of(node)]


def outcomes(spec: StepSpec) -> list[tuple[str, str]]:
    """The (phase, outcome) entries the step traces if it runs to its end, in order."""
    entries: list[tuple[str, str]] = []
    if spec.precheck is not None:
        kind = spec.precheck.kind
        if kind == "ok":
            entries.append(("precheck", "ok"))
        elif kind == "cancel":
            return [("precheck", "canceled")]
        else:
            return [("precheck", "failed"), ("job", "skipped")]
    entries.append(("job", "ok" if spec.job.kind == "ok" else "failed"))
    return entries


def is_fatal(phase: str, outcome: str) -> bool:
    return outcome == "canceled" or (phase == "job" and outcome == "failed")


def has_fatal(spec: Spec) -> bool:
    """Whether the node, run to its end, hits a fatal error (then a sequence stops after it)."""
    if isinstance(spec, StepSpec):
        return any(is_fatal(phase, outcome) for phase, outcome in outcomes(spec))
    return any(any(has_fatal(node) for node in branch) for branch in spec.branches)


class Checker:
    """Checks one result against the rules, knowing the trace's positions."""

    def __init__(self, result: RunResult[Any]) -> None:
        self.result = result
        self.trace = [(c.step, c.phase, c.outcome) for c in result.trace]
        self.positions: dict[str, list[int]] = {}
        for index, (step, _, _) in enumerate(self.trace):
            self.positions.setdefault(step, []).append(index)
        fatal = [i for i, (_, phase, outcome) in enumerate(self.trace) if is_fatal(phase, outcome)]
        self.first_fatal = fatal[0] if fatal else None

    def span(self, spec: Spec) -> list[int]:
        """The trace positions of a node's callbacks."""
        return sorted(i for st in steps_of(spec) for i in self.positions.get(st.name, []))

    def step(self, spec: StepSpec) -> bool:
        """Check a step's entries; return whether it ran to its end."""
        got = [(phase, outcome) for step, phase, outcome in self.trace if step == spec.name]
        full = outcomes(spec)
        assert got == full[: len(got)], (spec.name, got, full)
        if len(got) < len(full):  # cut short: only a fatal error elsewhere may do that
            assert self.first_fatal is not None, (spec.name, got)
            return False
        return True

    def sequence(self, specs: tuple[Spec, ...] | list[Spec]) -> bool:
        """Check a sequence; return whether it ran to its end."""
        ended_at = -1
        for index, spec in enumerate(specs):
            span = self.span(spec)
            if not span:  # never started: a fatal error somewhere stopped it
                assert self.first_fatal is not None, spec
                for later in specs[index:]:
                    assert not self.span(later), later
                return False
            assert span[0] > ended_at, ("started before the node before it ended", spec)
            complete = self.step(spec) if isinstance(spec, StepSpec) else self.group(spec)
            ended_at = span[-1]
            if not complete or has_fatal(spec):
                for later in specs[index + 1 :]:
                    assert not self.span(later), ("ran after a fatal error", later)
                return False
        return True

    def group(self, spec: GroupSpec) -> bool:
        ended = [self.sequence(branch) for branch in spec.branches]  # every branch checked, not only up to one
        return all(ended)


def check_groups(result: RunResult[Any], log: list[tuple[str, str]], flow: list[Spec]) -> None:
    checker = Checker(result)
    complete = checker.sequence(flow)
    trace = checker.trace

    if checker.first_fatal is None:
        assert complete
        assert result.ok
        assert result.fatal is None
        assert not any(has_fatal(spec) for spec in flow)
    else:
        step, phase, outcome = trace[checker.first_fatal]
        if outcome == "canceled":
            assert type(result.fatal) is ExecutionCanceled
        else:
            assert isinstance(result.fatal, JobFailed)
            assert result.fatal.step == step
        first_error = next(e for e in result.errors if (e.step, e.phase) == (step, phase))
        assert result.fatal is first_error.error or getattr(result.fatal, "error", None) is first_error.error

    failed = [(s, p) for s, p, o in trace if o in {"failed", "canceled"}]
    assert [(e.step, e.phase) for e in result.errors] == failed
    specs = {spec.name: spec for top in flow for spec in steps_of(top)}
    for error in result.errors:
        behaviour = specs[error.step].precheck if error.phase == "precheck" else specs[error.step].job
        assert behaviour is not None
        assert isinstance(error.error, ERROR_TYPES[behaviour.kind])
    assert sorted(log) == sorted((s, p) for s, p, o in trace if o != "skipped")

    bag = result.data_bag
    for name, spec in specs.items():
        pre = [o for s, p, o in trace if s == name and p == "precheck"]
        job = [o for s, p, o in trace if s == name and p == "job"]
        assert bag.has_job_data(name) == (job == ["ok"])
        if job == ["ok"]:
            assert bag.get_job_data(name) == spec.job.value
        kept = pre == ["ok"] or (
            pre == ["failed"] and spec.precheck is not None and spec.precheck.kind == "skip_output"
        )
        assert bag.has_precheck_data(name) == kept
        if kept:
            assert spec.precheck is not None
            assert bag.get_precheck_data(name) == spec.precheck.value


@settings(max_examples=150, deadline=None)
@given(group_flows())
def test_group_flows_obey_the_group_rules(flow: list[Spec]) -> None:
    """`run()` and `run_async()` of random flows with groups obey the model's rules."""
    log: list[tuple[str, str]] = []
    coordinator = build_groups(flow, log)
    check_groups(coordinator.run(), log, flow)
    log.clear()
    check_groups(asyncio.run(coordinator.run_async()), log, flow)


def test_the_checker_refuses_a_run_that_breaks_the_rules() -> None:
    """The checker is not vacuous: a trace where a node ran after a fatal one fails it."""
    fails = Behaviour("raise", 0, False)
    ok = Behaviour("ok", 1, False)
    flow: list[Spec] = [StepSpec("a", None, fails), StepSpec("b", None, ok)]

    calls = (("a", "job", "failed", 0.0, 1, False, 0.0), ("b", "job", "ok", 0.0, 1, False, 0.0))
    broken = RunResult(Finished(None, (), None, DataBag(), 1, None, (), calls))
    with pytest.raises(AssertionError, match="ran after a fatal error"):
        Checker(broken).sequence(flow)
