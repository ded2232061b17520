"""
How `add_step` inspects a callback: what it refuses (and says), how it resolves string hints, what it awaits.

This module does not import `Context` by name, as a user's module may not
(the contract allows the string ``"Context"``): resolving a callback's hints
all at once then fails, and each hint is resolved on its own, with builtins and
the callback's module globals.
"""

import functools
import inspect
import types
from typing import Any, NoReturn
from unittest.mock import AsyncMock

import pytest
from beartype.roar import BeartypeDecorHintPepUnsupportedException

import choreograph._core.callbacks
from choreograph import Coordinator, Step, StepDefinitionError, UnassignableInput

GENERATOR_PROBLEM = (
    "is a generator function (it yields): calling it only makes a generator, without running its body;"
    " return the values instead (a list, say)"
)


def refusal(*steps: Step[Any], input_type: object = object) -> StepDefinitionError:
    """The error `add_step` raises for *steps* (in a `Coordinator[input_type]`)."""
    with pytest.raises(StepDefinitionError) as raised:
        Coordinator[input_type](steps)  # type: ignore[valid-type]
    return raised.value


# -- what is not a callback ----------------------------------------------------


@pytest.mark.parametrize(("value", "kind"), [(5, "int"), ({"a": 1}, "dict")])
def test_a_value_that_is_not_callable_is_refused_naming_its_type(value: object, kind: str):
    """A job that is not callable is refused with its type's name, and no hint after it."""
    error = refusal(Step("s", value))  # type: ignore[arg-type]
    assert (error.step, error.callback, error.problem) == ("s", "job", f"must be callable, got {kind}")


def test_a_generator_object_is_refused_saying_to_pass_the_function():
    """``Step("s", gen())`` passes what a call made: the message says to pass the generator function itself."""

    def numbers():
        yield 1

    made = numbers()
    try:
        error = refusal(Step("s", made))  # type: ignore[arg-type]
    finally:
        made.close()
    assert error.problem == "must be callable, got generator (the result of a call: pass the function itself)"


class Source:
    """A class with generator methods and a callable instance that yields."""

    def rows(self, value: int):
        yield value

    @staticmethod
    def static_rows(value: int):
        yield value

    def __call__(self, value: int):
        yield value


@pytest.mark.parametrize(
    "make",
    [
        lambda: Source().rows,
        lambda: vars(Source)["static_rows"],  # `Step("s", static_rows)` in the class body
        lambda: functools.partial(Source().rows),
        lambda: types.MethodType(Source(), object()),  # a method whose function is a callable instance
    ],
    ids=["bound-method", "staticmethod-object", "partial-of-bound-method", "method-of-callable-instance"],
)
def test_a_generator_behind_a_method_is_refused(make):
    """However the generator function is wrapped (bound, static, partial), the callback is refused as one."""
    error = refusal(Step("s", make()))
    assert (error.callback, error.problem) == ("job", GENERATOR_PROBLEM)


def test_a_function_taking_cls_first_is_refused_with_the_method_hint():
    """A classmethod's function taken from its class takes ``cls`` and the input: the message says so."""

    def from_record(cls: type, record: dict[str, int]) -> None:
        return None

    error = refusal(Step("s", from_record))
    assert error.problem == (
        "takes more than one input parameter ('cls', 'record'); extra parameters need defaults"
        " (a method taken from its class? 'cls' is not passed: use a bound method)"
    )


# -- string hints ----------------------------------------------------------------


def test_quoted_hints_under_postponed_evaluation_are_resolved():
    """``x: "int"`` under ``from __future__ import annotations`` is the string ``"'int'"``: resolved to int."""

    def double(value):
        return value * 2

    double.__annotations__ = {"value": "'int'", "return": "'int'"}  # what the future import stores
    coordinator = Coordinator([Step("s", double)])
    result = coordinator.run(3)
    assert result.ok, result.fatal
    assert result.data_bag.job_data == {"s": 6}
    refused = coordinator.run("3")
    assert isinstance(refused.fatal, UnassignableInput)
    assert (refused.fatal.expected, refused.fatal.actual) == ("int", "str")


def test_quoted_hints_resolve_where_the_module_lacks_the_context_name():
    """Where `Context` isn't importable by name, each hint is resolved alone: a quoted one is evaluated again."""

    def double(ctx, value):  # type: ignore[no-untyped-def]
        return value * 2

    # What ``def double(ctx: Context, value: "int") -> "int"`` stores under the future import,
    # in a module that doesn't import Context.
    double.__annotations__ = {"ctx": "Context", "value": "'int'", "return": "'int'"}
    coordinator = Coordinator([Step("s", double)])
    assert coordinator.run(3).data_bag.job_data == {"s": 6}
    refused = coordinator.run("3")
    assert isinstance(refused.fatal, UnassignableInput)
    assert (refused.fatal.expected, refused.fatal.actual) == ("int", "str")


SELF = "SELF"  # a name whose value is its own name: resolving it never ends


def test_a_hint_that_names_itself_is_a_definition_error():
    def job(ctx, value):  # type: ignore[no-untyped-def]
        return value

    job.__annotations__ = {"ctx": "Context", "value": "'SELF'"}
    error = refusal(Step("s", job))
    assert error.problem == "cannot resolve the annotation of 'value': \"'SELF'\" names itself again ('SELF')"


def greet(ctx: "Context[str]") -> str:  # noqa: F821 - the context marker, as a string this module can't resolve
    """A job whose context is a subscripted string marker."""
    return f"hello {ctx.input}"


def test_a_subscripted_context_string_is_checked_against_the_input_type():
    """``"Context[str]"`` is resolved with `Context` even where the module lacks it, and so checked."""
    error = refusal(Step("s", greet), input_type=int)
    assert error.problem == "its context parameter 'ctx' is annotated Context[str], but the coordinator's input is int"
    result = Coordinator[str]([Step("s", greet)]).run("Ada")
    assert result.ok, result.fatal
    assert result.data_bag.job_data == {"s": "hello Ada"}


def test_a_class_whose_module_is_gone_resolves_its_hints_with_builtins():
    """A class used as a job whose module left `sys.modules` still gets its hints resolved, and checked."""

    class Reading:
        def __init__(self, ctx: "Context", value: "int") -> None:  # noqa: F821 - the context marker
            self.step, self.value = ctx.step, value

    Reading.__module__ = "choreograph_tests_unloaded_module"
    coordinator = Coordinator([Step("read", Reading)])
    result = coordinator.run(7)
    assert result.ok, result.fatal
    reading = result.data_bag.get_job_data("read")
    assert (type(reading), reading.step, reading.value) == (Reading, "read", 7)
    assert isinstance(coordinator.run("7").fatal, UnassignableInput)


def test_a_hint_beartype_refuses_without_a_message_is_named_by_the_exception(monkeypatch: pytest.MonkeyPatch):
    """When beartype refuses a hint with an empty message, the problem names beartype's exception instead."""

    def refuse(value: object, hint: object) -> NoReturn:
        raise BeartypeDecorHintPepUnsupportedException(" \n")

    monkeypatch.setattr(choreograph._core.callbacks, "is_bearable", refuse)

    def total(values: list[int]) -> None:
        return None

    error = refusal(Step("s", total))
    assert error.problem == (
        "beartype cannot check the input annotation list[int] (BeartypeDecorHintPepUnsupportedException)"
    )


# -- async callbacks -------------------------------------------------------------


def test_an_async_mock_with_the_jobs_signature_is_awaited():
    """An `AsyncMock` standing in for an async job (given the job's signature) is awaited: its value is the output."""

    async def fetch(record_id: int) -> str:
        raise NotImplementedError

    mock = AsyncMock(return_value="row")
    mock.__signature__ = inspect.signature(fetch)
    result = Coordinator([Step("fetch", mock)]).run(7)
    assert result.ok, result.fatal
    assert result.data_bag.job_data == {"fetch": "row"}
    mock.assert_awaited_once_with(7)
