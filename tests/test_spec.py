"""
Flows as data: `Coordinator.from_spec` and `Coordinator.to_spec`, their errors, and the shipped JSON Schema.

The specs here name this module's functions by import path (``HERE``): pytest
imports this file as a module of its own, which the loader imports again by name.
"""

import copy
import functools
import json
import math
import pickle
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

import choreograph
from choreograph import (
    ChoreographError,
    Context,
    Coordinator,
    Parallel,
    PrecheckFailed,
    Retry,
    SpecError,
    Step,
    StepDefinitionError,
    TenacityRetry,
)

HERE = __name__
ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "choreograph" / "spec.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
GUIDE = ROOT / "docs" / "guide" / "flows-as-data.md"


# -- what the specs name --------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """The input of the flows here."""

    id: str
    amount: int


@dataclass(frozen=True)
class Other:
    """Another input type, which `Context[Rec]` callbacks don't accept."""

    name: str


class Declined(Exception):
    """A retried error."""


def validate(rec: Rec) -> str:
    if rec.amount < 0:
        raise ValueError("negative amount")
    return f"valid {rec.id}"


def is_new(rec: Rec) -> bool:
    return rec.id != "old"


def credit(ctx: Context[Rec], rec: Rec) -> int:
    return rec.amount * 2


def reserve(rec: Rec) -> str:
    return f"reserved {rec.id}"


def release(ctx: Context[Rec]) -> None:
    UNDONE.append(ctx.step)


def quote(rec: Rec) -> int:
    return rec.amount + 1


def book(rec: Rec) -> str:
    if rec.id == "undeliverable":
        raise ValueError("no address")
    return f"booked {rec.id}"


def broken_precheck(rec: Rec) -> None:
    raise KeyError("amout")


def takes_three(a: int, b: int, c: int) -> None:
    """Three parameters without defaults: `add_step` refuses it."""


def any_input(value: object) -> None:
    """A job that takes any input."""


UNDONE: list[str] = []
LIMIT = 100  # not callable


class Checks:
    """Callbacks as a class's members: named ``module:Checks.member``."""

    @staticmethod
    def credit(rec: Rec) -> int:
        return rec.amount

    @classmethod
    def stock(cls, rec: Rec) -> str:
        return f"{cls.__name__} {rec.id}"


def ref(name: str) -> str:
    return f"{HERE}:{name}"


def spec_of(*steps: object, **options: object) -> dict[str, Any]:
    return {"choreograph": 1, **options, "steps": list(steps)}


def step(name: str, job: str = "reserve", **options: object) -> dict[str, object]:
    return {"step": name, "job": ref(job), **options}


FULL: dict[str, Any] = {
    "choreograph": 1,
    "input": ref("Rec"),
    "strict_prechecks": True,
    "steps": [
        {
            "step": "validate",
            "job": ref("validate"),
            "precheck": ref("is_new"),
            "retry": {
                "attempts": 5,
                "on": [ref("Declined"), "builtins:ConnectionError"],
                "initial": 0.5,
                "multiplier": 3,
                "max_delay": 10,
                "jitter": 0,
                "timeout": 60,
                "prechecks": True,
            },
            "timeout": 5,
            "compensate": ref("release"),
            "compensate_failed": True,
        },
        {
            "parallel": "checks",
            "max_workers": 4,
            "branches": [
                [{"step": "credit", "job": ref("credit"), "compensate": ref("release")}],
                [
                    {"step": "reserve", "job": ref("reserve"), "compensate": ref("release")},
                    {
                        "parallel": "inner",
                        "branches": [
                            [{"step": "quote", "job": ref("quote")}],
                            [{"step": "static", "job": ref("Checks.credit")}],
                            [{"step": "classmethod", "job": ref("Checks.stock"), "retry": {}}],
                        ],
                    },
                ],
            ],
        },
        {"step": "book", "job": ref("book"), "retry": {"on": "builtins:OSError"}},
    ],
}


@pytest.fixture(autouse=True)
def _clear_undone() -> Iterator[None]:
    UNDONE.clear()
    yield
    UNDONE.clear()


def load_error(source: object) -> SpecError:
    with pytest.raises(SpecError) as raised:
        Coordinator.from_spec(source)  # type: ignore[arg-type]  # some sources are wrong on purpose
    error = raised.value
    assert isinstance(error, ChoreographError)
    assert isinstance(error, ValueError)
    return error


# -- loading --------------------------------------------------------------------------------


def test_a_spec_makes_every_step_group_and_option_it_names():
    """Every key of the format becomes the `Step`, `Parallel`, `Retry` and coordinator option it stands for."""
    flow = Coordinator.from_spec(FULL)

    assert flow.input_type is Rec
    assert [node.name for node in flow.flow] == ["validate", "checks", "book"]
    assert [s.name for s in flow.steps] == ["validate", "credit", "reserve", "quote", "static", "classmethod", "book"]
    first = flow.steps[0]
    assert first == Step(
        "validate",
        validate,
        is_new,
        retry=Retry(
            attempts=5,
            on=(Declined, ConnectionError),
            initial=0.5,
            multiplier=3,
            max_delay=10,
            jitter=0,
            timeout=60,
            prechecks=True,
        ),
        timeout=5,
        compensate=release,
        compensate_failed=True,
    )
    checks = flow.flow[1]
    assert isinstance(checks, Parallel)
    assert checks.max_workers == 4
    assert [[node.name for node in branch] for branch in checks.branches] == [["credit"], ["reserve", "inner"]]
    inner = checks.branches[1][1]
    assert isinstance(inner, Parallel)
    assert inner.max_workers is None
    assert inner.branches[1][0].job is Checks.credit  # type: ignore[union-attr]
    assert inner.branches[2][0].job == Checks.stock  # type: ignore[union-attr]  # a bound classmethod, made anew
    assert inner.branches[2][0].retry == Retry()  # type: ignore[union-attr]  # "retry": {} is Retry()
    book_step = flow.steps[-1]
    assert (book_step.precheck, book_step.timeout, book_step.compensate) == (None, None, None)
    assert book_step.retry == Retry(on=OSError)


def test_the_loaded_flow_runs_as_the_one_built_in_code():
    """A flow loaded from a spec produces the outputs, trace and compensations of its twin built in code."""
    loaded = Coordinator.from_spec(FULL)
    result = loaded.run(Rec("r-1", 20))
    assert result.ok, result.fatal
    bag = result.data_bag
    outputs = {name: bag.get_job_data(name) for name in ("validate", "credit", "reserve", "quote", "static", "book")}
    assert outputs == {
        "validate": "valid r-1",
        "credit": 40,
        "reserve": "reserved r-1",
        "quote": 21,
        "static": 20,
        "book": "booked r-1",
    }
    assert bag.get_job_data("classmethod") == "Checks r-1"

    failed = loaded.run(Rec("undeliverable", 1))
    assert not failed.ok
    assert sorted(call.step for call in failed.compensations) == ["credit", "reserve", "validate"]
    assert sorted(UNDONE) == ["credit", "reserve", "validate"]


def test_strict_prechecks_from_a_spec_stops_the_run_on_a_precheck_error():
    """``"strict_prechecks": true`` is `Coordinator(strict_prechecks=True)`: the precheck's bug is fatal."""
    items = [step("book", "book", precheck=ref("broken_precheck"))]
    strict = Coordinator.from_spec(spec_of(*items, strict_prechecks=True)).run(Rec("r", 1))
    assert isinstance(strict.fatal, PrecheckFailed)
    assert strict.fatal.step == "book"
    lenient = Coordinator.from_spec(spec_of(*items)).run(Rec("r", 1))
    assert lenient.ok
    assert [(c.step, c.phase, c.outcome) for c in lenient.trace] == [
        ("book", "precheck", "failed"),
        ("book", "job", "skipped"),
    ]


def test_the_input_makes_what_the_generic_subscript_makes():
    """``"input"`` gives what ``Coordinator[Rec](...)`` gives: the input type, ``__orig_class__``, Context checks."""
    items = [step("credit", "credit")]
    loaded = Coordinator.from_spec(spec_of(*items, input=ref("Rec")))
    in_code = Coordinator[Rec]([Step("credit", credit)])
    assert type(loaded) is type(in_code) is Coordinator
    assert loaded.input_type is in_code.input_type is Rec
    assert loaded.__orig_class__ == in_code.__orig_class__ == Coordinator[Rec]  # type: ignore[attr-defined]

    without = Coordinator.from_spec(spec_of(*items))
    assert without.input_type is object
    assert not hasattr(without, "__orig_class__")

    error = load_error(spec_of(*items, input=ref("Other")))
    assert error.where == "steps[0].job"
    assert isinstance(error.__cause__, StepDefinitionError)
    assert error.problem == str(error.__cause__)
    assert error.problem.startswith("step 'credit', job: ")
    assert "Other" in error.problem


def test_a_subclass_loads_a_spec_as_itself():
    """``Flow.from_spec`` makes a ``Flow``; a subclass that fixed its input type takes no ``"input"``."""

    class Flow(Coordinator[Rec]):
        """A coordinator class of the application's own."""

    loaded = Flow.from_spec(spec_of(step("credit", "credit")))
    assert type(loaded) is Flow
    assert loaded.input_type is Rec

    with pytest.raises(SpecError) as raised:
        Flow.from_spec(spec_of(input=ref("Rec")))
    error = raised.value
    assert error.where == "input"
    assert error.problem.startswith(f"'{HERE}:Rec' can't be an input type: ")


def test_an_empty_flow_is_a_spec_too():
    """``"steps": []`` is a coordinator without steps, and it writes back as such."""
    flow = Coordinator.from_spec({"choreograph": 1, "steps": []})
    assert flow.steps == ()
    assert flow.to_spec() == {"choreograph": 1, "steps": []}


@pytest.mark.parametrize("kind", ["json", "toml"])
@pytest.mark.parametrize("as_path", [True, False], ids=["Path", "str"])
def test_json_and_toml_files_load(tmp_path: Path, kind: str, as_path: bool):
    """A ``.json`` and a ``.toml`` file of the same spec give the same flow, from a `Path` or a `str`."""
    path = tmp_path / f"flow.{kind}"
    if kind == "json":
        path.write_text(json.dumps(FULL), encoding="utf-8")
    else:
        path.write_text(to_toml(FULL), encoding="utf-8")
        assert tomllib.loads(path.read_text(encoding="utf-8")) == FULL
    flow = Coordinator.from_spec(path if as_path else str(path))
    assert flow.to_spec() == Coordinator.from_spec(FULL).to_spec()


def test_the_suffix_is_read_ignoring_case(tmp_path: Path):
    """``FLOW.JSON`` is a JSON spec."""
    path = tmp_path / "FLOW.JSON"
    path.write_text(json.dumps(spec_of(step("a"))), encoding="utf-8")
    assert [s.name for s in Coordinator.from_spec(path).steps] == ["a"]


def to_toml(spec: dict[str, Any]) -> str:
    """Write *spec* as TOML: top-level scalars, then each step as a ``[[steps]]`` table of inline values."""

    def value(data: object) -> str:
        if isinstance(data, dict):
            return "{ " + ", ".join(f"{key} = {value(item)}" for key, item in data.items()) + " }"
        if isinstance(data, list):
            return "[" + ", ".join(value(item) for item in data) + "]"
        return json.dumps(data)  # strings, numbers and booleans are written alike

    lines = [f"{key} = {value(item)}" for key, item in spec.items() if key != "steps"]
    for item in spec["steps"]:
        lines += ["", "[[steps]]", *(f"{key} = {value(field)}" for key, field in item.items())]
    return "\n".join(lines) + "\n"


# -- errors of loading ----------------------------------------------------------------------

#: (test id, the spec, where, the message) for specs the JSON Schema refuses as well.
SCHEMA_REFUSES: list[tuple[str, object, str, str]] = [
    ("not a mapping", [1], "", "a spec is a path to a .json or .toml file, or a mapping; got list"),
    ("no version", {"steps": []}, "", "missing key 'choreograph': the version of the spec format, 1"),
    (
        "version 2",
        {"choreograph": 2, "steps": []},
        "choreograph",
        "unsupported version 2: this choreograph reads version 1",
    ),
    (
        "version true",
        {"choreograph": True, "steps": []},
        "choreograph",
        "the version of the spec format is the integer 1, got a bool (True)",
    ),
    (
        "version as text",
        {"choreograph": "1", "steps": []},
        "choreograph",
        "the version of the spec format is the integer 1, got a str ('1')",
    ),
    (
        "unknown top-level key",
        {"choreograph": 1, "steps": [], "store": "runs.db"},
        "store",
        "unknown key 'store': a spec has 'choreograph', 'input', 'strict_prechecks', 'steps'",
    ),
    ("no steps", {"choreograph": 1}, "", "missing key 'steps': the list of steps and groups"),
    (
        "steps not a list",
        {"choreograph": 1, "steps": {"step": "a"}},
        "steps",
        "steps is a list of steps and groups, got a dict",
    ),
    (
        "input not a string",
        spec_of(input=3),
        "input",
        "expected a 'module:qualname' string, got an int (3)",
    ),
    (
        "strict_prechecks not a bool",
        spec_of(strict_prechecks="yes"),
        "strict_prechecks",
        "expected true or false, got a str ('yes')",
    ),
    (
        "item not a mapping",
        spec_of("validate"),
        "steps[0]",
        "expected a step (with 'step' and 'job') or a group (with 'parallel' and 'branches'), got a str ('validate')",
    ),
    (
        "item neither a step nor a group",
        spec_of({"job": ref("reserve")}),
        "steps[0]",
        "an item needs 'step' (a step's name) or 'parallel' (a group's name)",
    ),
    (
        "item both a step and a group",
        spec_of({"step": "a", "parallel": "b", "job": ref("reserve")}),
        "steps[0]",
        "an item is a step ('step') or a group ('parallel'), not both",
    ),
    ("step without a job", spec_of({"step": "a"}), "steps[0]", "missing key 'job': the job of step 'a'"),
    (
        "unknown key of a step",
        spec_of(step("a"), {"step": "b", "jobb": ref("reserve")}),
        "steps[1].jobb",
        (
            "unknown key 'jobb': a step has 'step', 'job', 'precheck', 'retry', 'timeout', 'compensate',"
            " 'compensate_failed'"
        ),
    ),
    (
        "name not a string",
        spec_of({"step": 7, "job": ref("reserve")}),
        "steps[0].step",
        "a step's name is a string, got an int (7)",
    ),
    ("blank name", spec_of(step("  ")), "steps[0].step", "a step's name must not be empty"),
    (
        "a key that is not a string (in a mapping from Python)",
        spec_of({"step": "a", "job": ref("reserve"), 3: "x"}),
        "steps[0]",
        "keys are strings, got 3",
    ),
    (
        "job not a string",
        spec_of({"step": "a", "job": 3}),
        "steps[0].job",
        "expected a 'module:qualname' string, got an int (3)",
    ),
    (
        "job without a colon",
        spec_of({"step": "a", "job": "shop.steps.validate"}),
        "steps[0].job",
        "expected 'module:qualname' (for example 'shop.steps:validate'), got 'shop.steps.validate'",
    ),
    (
        "job with a relative module",
        spec_of({"step": "a", "job": ".steps:validate"}),
        "steps[0].job",
        "expected 'module:qualname' (for example 'shop.steps:validate'), got '.steps:validate'",
    ),
    (
        "precheck of null",
        spec_of(step("a", precheck=None)),
        "steps[0].precheck",
        "expected a 'module:qualname' string, got null",
    ),
    ("timeout of 0", spec_of(step("a", timeout=0)), "steps[0].timeout", "expected a number of seconds > 0, got 0"),
    (
        "negative timeout",
        spec_of(step("a", timeout=-1.5)),
        "steps[0].timeout",
        "expected a number of seconds > 0, got -1.5",
    ),
    ("timeout as text", spec_of(step("a", timeout="5")), "steps[0].timeout", "expected a number, got a str ('5')"),
    ("timeout true", spec_of(step("a", timeout=True)), "steps[0].timeout", "expected a number, got a bool (True)"),
    (
        "compensate_failed not a bool",
        spec_of(step("a", compensate_failed=1)),
        "steps[0].compensate_failed",
        "expected true or false, got an int (1)",
    ),
    (
        "group without branches",
        spec_of({"parallel": "g"}),
        "steps[0]",
        "missing key 'branches': the branches of group 'g'",
    ),
    (
        "unknown key of a group",
        spec_of({"parallel": "g", "branches": [[step("a")]], "workers": 2}),
        "steps[0].workers",
        "unknown key 'workers': a group has 'parallel', 'max_workers', 'branches'",
    ),
    (
        "max_workers of 0",
        spec_of({"parallel": "g", "max_workers": 0, "branches": [[step("a")]]}),
        "steps[0].max_workers",
        "expected an integer >= 1, got 0",
    ),
    (
        "max_workers true",
        spec_of({"parallel": "g", "max_workers": True, "branches": [[step("a")]]}),
        "steps[0].max_workers",
        "expected an integer >= 1, got a bool (True)",
    ),
    (
        "no branch",
        spec_of({"parallel": "g", "branches": []}),
        "steps[0].branches",
        "group 'g' needs at least one branch",
    ),
    (
        "an empty branch",
        spec_of(step("a"), {"parallel": "g", "branches": [[step("b")], []]}),
        "steps[1].branches[1]",
        "a branch needs at least one step or group",
    ),
    (
        "a branch that is not a list",
        spec_of({"parallel": "g", "branches": [step("a")]}),
        "steps[0].branches[0]",
        "a branch is a list of steps and groups, got a dict",
    ),
    (
        "branches not a list",
        spec_of({"parallel": "g", "branches": "a"}),
        "steps[0].branches",
        "branches is a list of branches, each a list of steps and groups; got a str ('a')",
    ),
    (
        "deep inside nested groups",
        spec_of(
            step("a"),
            {"parallel": "g", "branches": [[{"parallel": "h", "branches": [[{"step": "b", "job": 1}]]}]]},
        ),
        "steps[1].branches[0][0].branches[0][0].job",
        "expected a 'module:qualname' string, got an int (1)",
    ),
    (
        "retry not a table",
        spec_of(step("a", retry=3)),
        "steps[0].retry",
        "expected a table of Retry's options, got an int (3)",
    ),
    (
        "unknown key of a retry",
        spec_of(step("a", retry={"attemps": 3})),
        "steps[0].retry.attemps",
        (
            "unknown key 'attemps': a retry has 'attempts', 'on', 'initial', 'multiplier', 'max_delay', 'jitter',"
            " 'timeout', 'prechecks'"
        ),
    ),
    (
        "retry attempts of 0",
        spec_of(step("a", retry={"attempts": 0})),
        "steps[0].retry.attempts",
        "expected an integer >= 1, got 0",
    ),
    (
        "retry attempts true",
        spec_of(step("a", retry={"attempts": True})),
        "steps[0].retry.attempts",
        "expected an integer >= 1, got a bool (True)",
    ),
    (
        "negative retry delay (Retry's own check)",
        spec_of(step("a", retry={"initial": -1})),
        "steps[0].retry.initial",
        "Retry(initial=...) must be a finite number >= 0, got -1",
    ),
    (
        "negative retry timeout (Retry's own check)",
        spec_of(step("a", retry={"timeout": -2})),
        "steps[0].retry.timeout",
        "Retry(timeout=...) must be None or a number of seconds >= 0 (inf: no limit), got -2",
    ),
    (
        "retry jitter as text",
        spec_of(step("a", retry={"jitter": "0.1"})),
        "steps[0].retry.jitter",
        "expected a number, got a str ('0.1')",
    ),
    (
        "retry prechecks not a bool",
        spec_of(step("a", retry={"prechecks": "no"})),
        "steps[0].retry.prechecks",
        "expected true or false, got a str ('no')",
    ),
    (
        "retry on no exception",
        spec_of(step("a", retry={"on": []})),
        "steps[0].retry.on",
        "expected at least one exception class",
    ),
    (
        "retry on a number",
        spec_of(step("a", retry={"on": ["builtins:OSError", 5]})),
        "steps[0].retry.on[1]",
        "expected a 'module:qualname' string, got an int (5)",
    ),
]

#: (test id, the spec, where, the message) for what only the loader can know: the JSON Schema accepts these.
LOADER_REFUSES: list[tuple[str, object, str, str]] = [
    (
        "a module that is not there",
        spec_of({"step": "a", "job": "shop.stepz:validate"}),
        "steps[0].job",
        "no module named 'shop' (importing 'shop.stepz')",
    ),
    (
        "a submodule that is not there",
        spec_of({"step": "a", "job": "json.stepz:validate"}),
        "steps[0].job",
        "no module named 'json.stepz'",
    ),
    (
        "a missing attribute",
        spec_of(step("a"), {"parallel": "g", "branches": [[{"step": "b", "job": ref("credt")}]]}),
        "steps[1].branches[0][0].job",
        f"module '{HERE}' has no attribute 'credt'",
    ),
    (
        "a missing attribute of a class",
        spec_of(step("a", "Checks.stok")),
        "steps[0].job",
        f"'{HERE}:Checks' has no attribute 'stok'",
    ),
    (
        "not callable",
        spec_of(step("a", "LIMIT")),
        "steps[0].job",
        f"'{HERE}:LIMIT' is not callable: it is an int (100)",
    ),
    (
        "a compensation that is not callable",
        spec_of(step("a", compensate=ref("UNDONE"))),
        "steps[0].compensate",
        f"'{HERE}:UNDONE' is not callable: it is a list",
    ),
    (
        "a duplicate name, ignoring case",
        spec_of(step("credit"), {"parallel": "checks", "branches": [[step("Credit")]]}),
        "steps[1].branches[0][0].step",
        "the name 'Credit' is taken by the step 'credit' at steps[0] (names ignore case)",
    ),
    (
        "a step named as a group",
        spec_of({"parallel": "checks", "branches": [[step("a")]]}, step("CHECKS")),
        "steps[1].step",
        "the name 'CHECKS' is taken by the group 'checks' at steps[0] (names ignore case)",
    ),
    (
        "retry on a class that is not an exception",
        spec_of(step("a", retry={"on": ref("Rec")})),
        "steps[0].retry.on",
        f"'{HERE}:Rec' is not an exception class (a subclass of Exception)",
    ),
    (
        "an input that is a function",
        spec_of(input=ref("validate")),
        "input",
        f"'{HERE}:validate' is a function, not a type",
    ),
    (
        "an input that is a module's constant",
        spec_of(input=ref("LIMIT")),
        "input",
        f"'{HERE}:LIMIT' is an int (100), not a type",
    ),
    (
        "a float where an integer goes",
        spec_of(step("a", retry={"attempts": 3.0})),
        "steps[0].retry.attempts",
        "expected an integer >= 1, got a float (3.0)",
    ),
    (
        "a float version",
        {"choreograph": 1.0, "steps": []},
        "choreograph",
        "the version of the spec format is the integer 1, got a float (1.0)",
    ),
    (
        "an infinite retry delay (TOML has inf; Retry's own check)",
        spec_of(step("a", retry={"max_delay": math.inf})),
        "steps[0].retry.max_delay",
        "Retry(max_delay=...) must be a finite number >= 0, got inf",
    ),
    (
        "a callback add_step refuses",
        spec_of(step("a"), {"parallel": "g", "branches": [[step("b"), step("three", "takes_three")]]}),
        "steps[1].branches[0][1].job",
        "step 'three', job: ",  # add_step's message follows
    ),
]


def check(error: SpecError, where: str, message: str) -> None:
    assert error.where == where
    if message.endswith(": "):  # a prefix, then a message of another module's
        assert error.problem.startswith(message)
    else:
        assert error.problem == message
    assert str(error) == (f"{where}: {error.problem}" if where else error.problem)


@pytest.mark.parametrize(
    ("spec", "where", "message"), [case[1:] for case in SCHEMA_REFUSES], ids=[c[0] for c in SCHEMA_REFUSES]
)
def test_the_loader_refuses_a_bad_spec_naming_the_place(spec: object, where: str, message: str):
    """Each mistake is a `SpecError` whose ``.where`` is its place and whose ``.problem`` says what is wrong."""
    check(load_error(spec), where, message)


@pytest.mark.parametrize(
    ("spec", "where", "message"), [case[1:] for case in LOADER_REFUSES], ids=[c[0] for c in LOADER_REFUSES]
)
def test_the_loader_refuses_what_only_it_can_check(spec: object, where: str, message: str):
    """Imports, names and `add_step`'s checks: a `SpecError` naming the place, as for the others."""
    check(load_error(spec), where, message)


def test_add_steps_refusal_is_the_cause():
    """A step `add_step` refuses: the `StepDefinitionError` is the ``__cause__``, and its message the problem."""
    error = load_error(spec_of(step("three", "takes_three")))
    cause = error.__cause__
    assert isinstance(cause, StepDefinitionError)
    assert (cause.step, cause.callback) == ("three", "job")
    assert error.problem == str(cause)
    assert error.where == "steps[0].job"


def test_retrys_own_refusal_is_the_cause():
    """A `Retry` option out of range: Retry's `ValueError` is the ``__cause__``, its message the problem."""
    error = load_error(spec_of(step("a"), step("b", retry={"attempts": 2, "multiplier": -0.5})))
    assert isinstance(error.__cause__, ValueError)
    assert not isinstance(error.__cause__, SpecError)
    check(error, "steps[1].retry.multiplier", str(error.__cause__))
    assert error.problem == "Retry(multiplier=...) must be a finite number >= 0, got -0.5"


def test_a_group_add_step_refuses_is_named_by_its_place(monkeypatch: pytest.MonkeyPatch):
    """A refusal about a group itself (not one of its callbacks) points at the group's item."""

    def refuse(self: Coordinator[Any], node: object) -> object:
        raise StepDefinitionError("Inner", "group", "refused")

    monkeypatch.setattr(Coordinator, "add_step", refuse)
    spec = spec_of(step("a"), {"parallel": "g", "branches": [[{"parallel": "inner", "branches": [[step("b")]]}]]})
    error = load_error(spec)
    assert error.where == "steps[1].branches[0][0]"  # found by the name, ignoring case
    assert error.problem == "step 'Inner', group: refused"


def test_a_module_that_raises_on_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module that fails while imported: the error names the module and what it raised, on one line."""
    (tmp_path / "spec_broken_mod.py").write_text("raise RuntimeError('no database\\nconfigured')\n", encoding="utf-8")
    (tmp_path / "spec_needs_mod.py").write_text("import spec_not_installed\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    error = load_error(spec_of({"step": "a", "job": "spec_broken_mod:run"}))
    check(error, "steps[0].job", "module 'spec_broken_mod' does not import: RuntimeError: no database configured")
    assert isinstance(error.__cause__, RuntimeError)
    error = load_error(spec_of({"step": "a", "job": "spec_needs_mod:run"}))
    message = "module 'spec_needs_mod' does not import: ModuleNotFoundError: No module named 'spec_not_installed'"
    check(error, "steps[0].job", message)


def test_a_source_that_is_neither_a_path_nor_a_mapping():
    """A list, bytes or None is not a spec source."""
    for source, kind in ((["a.json"], "list"), (b"a.json", "bytes"), (None, "None")):
        check(load_error(source), "", f"a spec is a path to a .json or .toml file, or a mapping; got {kind}")


def test_file_errors_name_the_file(tmp_path: Path):
    """A missing file, an unknown suffix, a folder, bytes that aren't UTF-8: the problem names the file."""
    missing = tmp_path / "missing.toml"
    check(load_error(missing), "", f"no spec file at {missing}")
    yaml = tmp_path / "flow.yaml"
    yaml.write_text("steps: []", encoding="utf-8")
    check(load_error(yaml), "", f"{yaml}: a spec file's name ends in .json or .toml, got '.yaml'")
    bare = tmp_path / "flow"
    check(load_error(str(bare)), "", f"{bare}: a spec file's name ends in .json or .toml, got no suffix")
    folder = tmp_path / "flows.json"
    folder.mkdir()
    error = load_error(folder)
    assert error.where == ""
    assert error.problem.startswith(f"{folder}: can't be read: ")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"choreograph": 1, "steps": [], "note": "caf\u00e9"}'.encode("latin-1"))
    check(load_error(latin), "", f"{latin}: not UTF-8 text (invalid continuation byte at byte 44)")


def test_invalid_json_names_the_line_and_column(tmp_path: Path):
    """A JSON syntax error says where the parser stopped; duplicate keys and NaN are refused too."""
    path = tmp_path / "flow.json"
    path.write_text('{"choreograph": 1,\n "steps": [\n  {"step": "a" "job": "x:y"}]}\n', encoding="utf-8")
    check(load_error(path), "", f"{path}: invalid JSON at line 3, column 16: Expecting ',' delimiter")
    path.write_text('{"choreograph": 1, "steps": [{"step": "a", "job": "x:y", "job": "x:z"}]}', encoding="utf-8")
    check(load_error(path), "", f"{path}: invalid JSON: the key 'job' appears twice in one object")
    path.write_text('{"choreograph": 1, "steps": [{"step": "a", "job": "x:y", "timeout": NaN}]}', encoding="utf-8")
    check(load_error(path), "", f"{path}: invalid JSON: NaN is not a JSON number")
    path.write_text("[]", encoding="utf-8")
    check(load_error(path), "", "a spec is a mapping (a JSON object, a TOML document), got a list")


def test_invalid_toml_names_the_line(tmp_path: Path):
    """A TOML syntax error keeps the parser's message, which ends with the line and column."""
    path = tmp_path / "flow.toml"
    path.write_text('choreograph = 1\n\n[[steps]]\nstep = "a"\njob = \n', encoding="utf-8")
    error = load_error(path)
    assert error.where == ""
    assert re.fullmatch(rf"{re.escape(str(path))}: invalid TOML: .+ \(at line 5, column 7\)", error.problem), error
    path.write_text('choreograph = 1\n\n[[steps]]\nstep = "a"\njob = "x:y"\njob = "x:z"\n', encoding="utf-8")
    error = load_error(path)
    assert error.problem.startswith(f"{path}: invalid TOML: ")
    assert "line 6" in error.problem


def test_toml_values_json_lacks_are_checked_as_well(tmp_path: Path):
    """TOML's ``nan`` and ``inf``: a NaN timeout is refused, an infinite one means no limit."""
    path = tmp_path / "flow.toml"
    path.write_text(
        f'choreograph = 1\n[[steps]]\nstep = "a"\njob = "{ref("reserve")}"\ntimeout = nan\n', encoding="utf-8"
    )
    check(load_error(path), "steps[0].timeout", "expected a number of seconds > 0, got nan")
    path.write_text(
        f'choreograph = 1\n[[steps]]\nstep = "a"\njob = "{ref("reserve")}"\ntimeout = inf\n', encoding="utf-8"
    )
    flow = Coordinator.from_spec(path)
    assert flow.steps[0].timeout == math.inf
    assert flow.to_spec() == spec_of(step("a"))  # no limit: written as without one


# -- SpecError ------------------------------------------------------------------------------


def test_spec_error_is_a_value_error_whose_args_are_its_fields():
    """`SpecError(where, problem)`: a `ChoreographError` and a `ValueError`, with ``args`` its two fields."""
    error = SpecError("steps[1].branches[0][0].job", "module 'shop.steps' has no attribute 'credt'")
    assert isinstance(error, ChoreographError)
    assert isinstance(error, ValueError)
    assert not isinstance(error, TypeError)
    assert error.args == ("steps[1].branches[0][0].job", "module 'shop.steps' has no attribute 'credt'")
    assert repr(error) == "SpecError('steps[1].branches[0][0].job', \"module 'shop.steps' has no attribute 'credt'\")"
    assert str(error) == "steps[1].branches[0][0].job: module 'shop.steps' has no attribute 'credt'"
    assert str(SpecError("", "no spec file at flows/orders.toml")) == "no spec file at flows/orders.toml"
    assert "SpecError" in choreograph.__all__


def test_spec_error_survives_copies_and_pickling_with_its_fields_and_notes():
    """A copy and a pickle round trip keep ``where``, ``problem``, the message and the notes."""
    error = load_error(spec_of(step("a", "missing")))
    error.add_note("while loading flows/orders.toml")
    for twin in (copy.copy(error), pickle.loads(pickle.dumps(error))):  # noqa: S301 - our own data
        assert type(twin) is SpecError
        assert (
            (twin.where, twin.problem)
            == (error.where, error.problem)
            == ("steps[0].job", f"module '{HERE}' has no attribute 'missing'")
        )
        assert twin.args == error.args
        assert str(twin) == str(error)
        assert twin.__notes__ == ["while loading flows/orders.toml"]


# -- writing --------------------------------------------------------------------------------


def test_to_spec_writes_every_option_and_leaves_defaults_out():
    """A flow built in code writes as the spec that names it, with no ``null`` and no default value."""
    flow = Coordinator[Rec](
        [
            Step("validate", validate, is_new, retry=Retry(attempts=2, on=Declined, jitter=0), timeout=2.5),
            Parallel(
                "checks",
                Step("credit", credit, compensate=release, compensate_failed=True),
                [Step("reserve", reserve), Parallel("inner", Step("static", Checks.credit), max_workers=1)],
                max_workers=2,
            ),
            Step("book", book, retry=Retry()),
        ],
        strict_prechecks=True,
    )
    assert flow.to_spec() == {
        "choreograph": 1,
        "input": ref("Rec"),
        "strict_prechecks": True,
        "steps": [
            {
                "step": "validate",
                "job": ref("validate"),
                "precheck": ref("is_new"),
                "retry": {"attempts": 2, "on": ref("Declined"), "jitter": 0},
                "timeout": 2.5,
            },
            {
                "parallel": "checks",
                "max_workers": 2,
                "branches": [
                    [{"step": "credit", "job": ref("credit"), "compensate": ref("release"), "compensate_failed": True}],
                    [
                        {"step": "reserve", "job": ref("reserve")},
                        {
                            "parallel": "inner",
                            "max_workers": 1,
                            "branches": [[{"step": "static", "job": ref("Checks.credit")}]],
                        },
                    ],
                ],
            },
            {"step": "book", "job": ref("book"), "retry": {}},
        ],
    }
    json.dumps(flow.to_spec(), allow_nan=False)  # JSON-able


def test_to_spec_of_a_coordinator_without_options():
    """No input type, no strict prechecks: the spec has the version and the steps only."""
    flow = Coordinator([Step("a", any_input), Step("b", Checks.stock)])
    assert flow.to_spec() == {
        "choreograph": 1,
        "steps": [{"step": "a", "job": ref("any_input")}, {"step": "b", "job": ref("Checks.stock")}],
    }


def test_round_trip_of_a_spec():
    """``from_spec(c.to_spec()).to_spec() == c.to_spec()``, and a spec without defaults comes back unchanged."""
    flow = Coordinator.from_spec(FULL)
    spec = flow.to_spec()
    assert Coordinator.from_spec(spec).to_spec() == spec
    assert spec == FULL
    assert json.loads(json.dumps(spec)) == spec


def infinite_timeouts() -> Coordinator[Any]:
    return Coordinator([Step("a", any_input, timeout=math.inf, retry=Retry(timeout=math.inf))])


def test_infinite_timeouts_are_written_as_no_limit():
    """``timeout=math.inf`` (no limit) is left out, so the spec stays JSON."""
    assert infinite_timeouts().to_spec() == {
        "choreograph": 1,
        "steps": [{"step": "a", "job": ref("any_input"), "retry": {}}],
    }


def local_function() -> Any:
    def job(rec: Rec) -> None: ...

    return job


def renamed() -> Any:
    def impostor(rec: Rec) -> None: ...

    impostor.__qualname__ = "reserve"  # names this module's `reserve`, another function
    impostor.__module__ = HERE
    return impostor


def in_main() -> Any:
    def job(rec: Rec) -> None: ...

    job.__module__, job.__qualname__ = "__main__", "job"
    return job


def vanished() -> Any:
    def job(rec: Rec) -> None: ...

    job.__module__, job.__qualname__ = HERE, "gone"
    return job


class Service:
    """A callable class: its instances have no ``__qualname__``."""

    def __call__(self, rec: Rec) -> None: ...

    def method(self, rec: Rec) -> None: ...


class Policy:
    """A retry policy of the application's own."""

    prechecks = False

    def delay(self, error: Exception, attempt: int, elapsed: float) -> float | None:  # noqa: ARG002 - the protocol's
        return None


#: (test id, the flow's steps, where, the message) of flows `to_spec` can't write.
UNNAMED: list[tuple[str, Any, str, str]] = [
    (
        "a lambda job",
        lambda: [Step("a", any_input), Parallel("g", Step("b", lambda rec: rec))],
        "steps[1].branches[0][0].job",
        "step 'b': the job is a lambda, which has no import path: define it with def at module level",
    ),
    (
        "a local function as a precheck",
        lambda: [Step("a", any_input, local_function())],
        "steps[0].precheck",
        (
            "step 'a': the precheck is local_function.<locals>.job, defined in a function, which has no import path:"
            " define it at module level"
        ),
    ),
    (
        "a function of __main__ as a compensation",
        lambda: [Step("a", any_input, compensate=in_main())],
        "steps[0].compensate",
        "step 'a': the compensation is __main__:job, defined in the script being run: define it in a module to import",
    ),
    (
        "a path that names another object",
        lambda: [Step("a", renamed())],
        "steps[0].job",
        f"step 'a': the job's import path '{HERE}:reserve' names another object, not this function",
    ),
    (
        "a path that does not resolve",
        lambda: [Step("a", vanished())],
        "steps[0].job",
        f"step 'a': the job's import path '{HERE}:gone' does not resolve: module '{HERE}' has no attribute 'gone'",
    ),
    (
        "a callable instance",
        lambda: [Step("a", Service())],
        "steps[0].job",
        (
            f"step 'a': the job is a {HERE}.Service, which has no import path: only functions, classes and methods"
            " are named as 'module:qualname'"
        ),
    ),
    (
        "a bound method of an instance",
        lambda: [Step("a", Service().method)],
        "steps[0].job",
        f"step 'a': the job's import path '{HERE}:Service.method' names another object, not this method",
    ),
    (
        "a functools.partial",
        lambda: [Step("a", functools.partial(reserve))],
        "steps[0].job",
        (
            "step 'a': the job is a functools.partial, which has no import path: only functions, classes and methods"
            " are named as 'module:qualname'"
        ),
    ),
    (
        "a TenacityRetry",
        lambda: [Step("a", any_input, retry=TenacityRetry(tenacity.Retrying()))],
        "steps[0].retry",
        "step 'a': the retry policy is a choreograph.TenacityRetry; a spec holds only a choreograph.Retry",
    ),
    (
        "a bare tenacity Retrying",
        lambda: [Step("a", any_input, retry=tenacity.Retrying())],  # type: ignore[arg-type]  # wrapped by add_step
        "steps[0].retry",
        "step 'a': the retry policy is a tenacity.Retrying; a spec holds only a choreograph.Retry",
    ),
    (
        "a retry policy of one's own",
        lambda: [Step("a", any_input, retry=Policy())],
        "steps[0].retry",
        f"step 'a': the retry policy is a {HERE}.Policy; a spec holds only a choreograph.Retry",
    ),
    (
        "a retried exception defined in a function",
        lambda: [Step("a", any_input, retry=Retry(on=(OSError, type("Local", (Exception,), {}))))],
        "steps[0].retry.on",
        (
            f"step 'a': the retried exception's import path '{HERE}:Local' does not resolve:"
            f" module '{HERE}' has no attribute 'Local'"
        ),
    ),
]


@pytest.mark.parametrize(("steps", "where", "message"), [case[1:] for case in UNNAMED], ids=[c[0] for c in UNNAMED])
def test_to_spec_refuses_what_has_no_import_path(steps: Any, where: str, message: str):
    """A callback, policy or class that can't be named by import path: `SpecError` naming the step and the place."""
    flow = Coordinator(steps())
    with pytest.raises(SpecError) as raised:
        flow.to_spec()
    check(raised.value, where, message)


@pytest.mark.parametrize(
    ("input_type", "message"),
    [
        (list[Rec], "the input type's import path 'builtins:list' names another object, not this types.GenericAlias"),
        (
            local_function().__class__,
            (
                "the input type's import path 'builtins:function' does not resolve:"
                " module 'builtins' has no attribute 'function'"
            ),
        ),
    ],
    ids=["a generic alias", "a class builtins does not name"],
)
def test_to_spec_refuses_an_input_type_without_import_path(input_type: Any, message: str):
    """An input type that no ``module:qualname`` names: `SpecError` at ``input``."""
    flow = Coordinator[input_type]([Step("a", any_input)])  # type: ignore[valid-type]
    with pytest.raises(SpecError) as raised:
        flow.to_spec()
    check(raised.value, "input", message)


def test_to_spec_leaves_the_store_key_and_listeners_out():
    """The spec describes the flow: a durable coordinator writes the same spec as its plain twin."""
    plain = Coordinator[Rec]([Step("a", reserve)])
    durable = plain.with_store(choreograph.MemoryStore(), key=lambda rec: rec.id)
    durable.listen(print)
    assert durable.to_spec() == plain.to_spec() == {"choreograph": 1, "input": ref("Rec"), "steps": [step("a")]}


FENCE = re.compile(r"^```(json|toml|text)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def guide_blocks() -> list[tuple[str, object, str | None]]:
    """The guide's JSON and TOML blocks, parsed, each with the ```text block right after it, if any."""
    blocks = FENCE.findall(GUIDE.read_text(encoding="utf-8"))
    found: list[tuple[str, object, str | None]] = []
    for index, (kind, text) in enumerate(blocks):
        if kind == "text":
            continue
        after = blocks[index + 1] if index + 1 < len(blocks) else None
        data = json.loads(text) if kind == "json" else tomllib.loads(text)
        found.append((kind, data, after[1].strip() if after and after[0] == "text" else None))
    return found


# -- the JSON Schema ------------------------------------------------------------------------


def schema_where(error: jsonschema.ValidationError) -> str:
    """The schema error's place, written as `SpecError.where` writes it."""
    where = ""
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where


def schema_places(errors: list[jsonschema.ValidationError]) -> set[str]:
    """
    Where the schema finds the problems: into each ``oneOf`` (a step or a group, a class or a list of them).

    Of a ``oneOf``'s alternatives, the one whose errors lie deepest is the one the item meant to be.
    """
    places: set[str] = set()
    for error in errors:
        if error.validator != "oneOf" or not error.context:
            places.add(schema_where(error))
            continue
        by_alternative: dict[object, list[jsonschema.ValidationError]] = {}
        for inner in error.context:
            by_alternative.setdefault(inner.relative_schema_path[0], []).append(inner)
        meant = max(by_alternative.values(), key=lambda found: max(len(e.absolute_path) for e in found))
        places |= schema_places(meant)
    return places


def test_the_schema_is_a_valid_draft_2020_12_schema():
    """The shipped schema is itself valid, for the draft it declares."""
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def example_specs() -> list[tuple[str, object]]:
    """The specs the project shows: FULL, the example's TOML, the guide's blocks that load."""
    found: list[tuple[str, object]] = [("FULL", FULL)]
    found.append(
        ("examples/orders.toml", tomllib.loads((ROOT / "examples" / "orders.toml").read_text(encoding="utf-8")))
    )
    found += [
        (f"guide {kind} block {i}", data) for i, (kind, data, message) in enumerate(guide_blocks()) if not message
    ]
    return found


@pytest.mark.parametrize(("name", "spec"), example_specs(), ids=[name for name, _ in example_specs()])
def test_every_example_spec_validates(name: str, spec: object):
    """The schema accepts every spec the project shows."""
    VALIDATOR.validate(spec)


@pytest.mark.parametrize(("spec", "where"), [(c[1], c[2]) for c in SCHEMA_REFUSES], ids=[c[0] for c in SCHEMA_REFUSES])
def test_the_schema_refuses_what_the_loader_refuses(spec: object, where: str):
    """Each bad spec the schema can tell is refused by it too, at the loader's place or around it."""
    errors = list(VALIDATOR.iter_errors(spec))
    assert errors, "the schema accepts it"
    places = schema_places(errors)
    # The loader's place is the schema's, or a key of it (an unknown key: the schema tells the object that has it).
    top_level = not re.search(r"[.\[]", where)
    assert any(
        where == place or where.startswith((f"{place}.", f"{place}[")) or (place == "" and top_level)
        for place in places
    ), places
    assert all(where.startswith(place) for place in places), places


@pytest.mark.parametrize(("spec", "where"), [(c[1], c[2]) for c in LOADER_REFUSES], ids=[c[0] for c in LOADER_REFUSES])
def test_what_only_the_loader_knows_is_valid_for_the_schema(spec: object, where: str):
    """The loader-only list holds specs the schema accepts: what it can't express (imports, names, integral floats)."""
    VALIDATOR.validate(spec)


def test_more_than_fifteen_distinct_problems_are_checked_by_both():
    """The bad specs cover many distinct problems, each refused by both the loader and the schema."""
    assert len({problem for _, _, _, problem in SCHEMA_REFUSES}) >= 15
    assert len(SCHEMA_REFUSES) == len({case[0] for case in SCHEMA_REFUSES})


# -- random specs ---------------------------------------------------------------------------

JOBS = ["validate", "credit", "reserve", "quote", "book", "Checks.credit", "Checks.stock"]
EXCEPTIONS = ["builtins:OSError", "builtins:ConnectionError", ref("Declined")]
RETRY_OPTIONS = {  # values other than Retry's defaults: a spec without defaults comes back unchanged
    "attempts": st.sampled_from([1, 2, 5]),
    "on": st.one_of(st.sampled_from(EXCEPTIONS), st.lists(st.sampled_from(EXCEPTIONS), min_size=1, max_size=3)),
    "initial": st.sampled_from([0, 0.5, 2]),
    "multiplier": st.sampled_from([1, 1.5, 3]),
    "max_delay": st.sampled_from([0, 1.0, 60]),
    "jitter": st.sampled_from([0, 0.25, 1]),
    "timeout": st.sampled_from([0, 10, 2.5]),
    "prechecks": st.just(True),
}


@st.composite
def options(draw: st.DrawFn, choices: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(choices)), unique=True))
    return {key: draw(choices[key]) for key in sorted(keys, key=list(choices).index)}


STEP_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "precheck": st.sampled_from([ref("is_new"), ref("broken_precheck")]),
    "retry": options(RETRY_OPTIONS),
    "timeout": st.sampled_from([0.5, 3, 30.0]),
    "compensate": st.just(ref("release")),
    "compensate_failed": st.just(True),
}

steps_st = st.builds(
    lambda job, extra: {"step": "", "job": ref(job), **extra}, st.sampled_from(JOBS), options(STEP_OPTIONS)
)
nodes_st = st.recursive(
    steps_st,
    lambda children: st.builds(
        lambda branches, workers: {
            "parallel": "",
            **({"max_workers": workers} if workers else {}),
            "branches": branches,
        },
        st.lists(st.lists(children, min_size=1, max_size=3), min_size=1, max_size=3),
        st.sampled_from([None, 1, 4]),
    ),
    max_leaves=12,
)


def named(nodes: list[dict[str, Any]], counter: Iterator[int]) -> list[dict[str, Any]]:
    """Give every step and group a name of its own, in document order."""
    made = []
    for node in nodes:
        key = "step" if "step" in node else "parallel"
        item = {**node, key: f"{key} {next(counter)}"}
        if key == "parallel":
            item["branches"] = [named(branch, counter) for branch in node["branches"]]
        made.append(item)
    return made


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"choreograph": 1}
    spec |= draw(options({"input": st.just(ref("Rec")), "strict_prechecks": st.just(True)}))
    spec["steps"] = named(draw(st.lists(nodes_st, max_size=5)), iter(range(1000)))
    return spec


@settings(deadline=None, max_examples=120)
@given(specs())
def test_random_specs_are_accepted_by_both_and_round_trip(spec: dict[str, Any]):
    """Any spec of the format (nested groups, every option) validates, loads, and writes back unchanged."""
    VALIDATOR.validate(spec)
    flow = Coordinator.from_spec(spec)
    assert flow.to_spec() == spec
    assert Coordinator.from_spec(flow.to_spec()).to_spec() == spec

    def count(nodes: list[dict[str, Any]]) -> int:
        return sum(1 if "step" in node else count([n for b in node["branches"] for n in b]) for node in nodes)

    assert len(flow.steps) == count(spec["steps"])
    assert flow.input_type is (Rec if "input" in spec else object)


# -- the example and the guide --------------------------------------------------------------


@pytest.fixture
def orders_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """examples/orders.py, importable as ``orders``, as its spec names it."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import orders  # type: ignore[import-not-found]  # examples/ is on sys.path now

    return orders


def test_the_example_spec_is_the_flow_built_in_code(orders_module: Any):
    """examples/orders.toml loads into the flow ``build()`` makes, and is exactly what ``to_spec`` writes of it."""
    from_spec = Coordinator.from_spec(ROOT / "examples" / "orders.toml")
    in_code = orders_module.build()
    assert from_spec.input_type is orders_module.Order
    assert from_spec.to_spec() == in_code.to_spec()
    assert in_code.to_spec() == tomllib.loads((ROOT / "examples" / "orders.toml").read_text(encoding="utf-8"))
    checks = from_spec.flow[1]
    assert isinstance(checks, Parallel)
    assert [[node.name for node in branch] for branch in checks.branches] == [["credit"], ["stock"]]


@pytest.mark.parametrize("way", ["code", "spec"])
def test_the_example_flow_books_or_undoes_its_checks(orders_module: Any, way: str):
    """A good order is booked; a failed booking releases the stock and the credit hold; short stock the hold."""
    flow = orders_module.build() if way == "code" else Coordinator.from_spec(ROOT / "examples" / "orders.toml")
    good, undeliverable, short = orders_module.ORDERS
    books = orders_module.Shop.opened()
    result = flow.run(good, values={"shop": books})
    assert result.ok
    assert result.compensations == ()
    assert books.bookings == ["A-1"]
    assert (books.credit["ada"], books.stock["mug"]) == (2600, 8)

    for order, failed, undone in ((undeliverable, "book", {"credit", "stock"}), (short, "stock", {"credit"})):
        books = orders_module.Shop.opened()
        result = flow.run(order, values={"shop": books})
        assert isinstance(result.fatal, choreograph.JobFailed)
        assert result.fatal.step == failed
        assert {call.step for call in result.compensations if call.outcome == "ok"} == undone
        assert books == orders_module.Shop.opened()  # everything held was given back


def test_the_guides_specs_load_or_fail_as_the_guide_says(orders_module: Any):
    """Each spec of the guide loads; one followed by a text block fails with exactly that message."""
    blocks = guide_blocks()
    assert len(blocks) >= 4
    failing = 0
    for kind, data, message in blocks:
        if message is None:
            flow = Coordinator.from_spec(data)  # type: ignore[arg-type]
            assert flow.to_spec() == Coordinator.from_spec(flow.to_spec()).to_spec(), kind
        else:
            failing += 1
            assert f"SpecError: {load_error(data)}" == message
    assert failing >= 2


def test_import_choreograph_does_not_import_the_spec_loader():
    """The loader (and json, tomllib) is imported on first use of `from_spec` or `to_spec`."""
    import subprocess

    code = "import sys, choreograph; print('choreograph._spec' in sys.modules, 'tomllib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
