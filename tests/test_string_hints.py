"""
Hints written as strings that resolve only one at a time, with the callback's module globals.

The callbacks live in `tests/_string_hints.py`, which annotates the context
parameter with a ``Context`` it does not import (``"Context"`` and
``"choreograph.Context"``), as the contract allows. Every form of callback
(function, bound method, callable instance, partial, class) must then resolve
its other hints with its own module's globals, and an unresolvable hint must be
a `StepDefinitionError` saying which hint it is.
"""

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

from choreograph import Coordinator, Step, StepDefinitionError, UnassignableInput, UnassignableOutput


def _load() -> ModuleType:
    """Import tests/_string_hints.py (tests/ is not a package, nor on sys.path)."""
    name = "choreograph_tests_string_hints"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_string_hints.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hints = _load()


def partial_of_plain() -> object:
    """A partial whose function takes the context and the input (nothing bound)."""
    return functools.partial(hints.plain)


@pytest.mark.parametrize(
    "make",
    [
        lambda: hints.plain,
        lambda: hints.dotted,
        lambda: hints.generic,
        lambda: hints.Billing().bill,
        hints.Charge,
        partial_of_plain,
    ],
    ids=["function", "dotted-marker", "subscripted-marker", "bound-method", "callable-instance", "partial"],
)
def test_the_context_and_input_hints_resolve_with_the_callbacks_module(make):
    """The string context marker is recognised, and the input hint is resolved and checked with the module's globals."""
    coordinator = Coordinator([Step("bill", make())])
    result = coordinator.run(hints.Order(7))
    assert result.ok, result.fatal
    assert result.data_bag.get_job_data("bill") == "bill:7"

    refused = coordinator.run({"id": 7})  # not an Order: the resolved hint is checked
    assert isinstance(refused.fatal, UnassignableInput)
    assert refused.fatal.expected.endswith("Order")
    assert refused.fatal.actual == "dict"


def test_a_return_hint_resolves_with_the_callbacks_module():
    """A string return hint naming a class of the callback's module is resolved, and the output checked against it."""
    ok = Coordinator([Step("echo", hints.echo)]).run(hints.Order(7))
    assert ok.ok, ok.fatal
    assert ok.data_bag.get_job_data("echo") == hints.Order(7)

    wrong = Coordinator([Step("echo", hints.echo_dict)]).run(hints.Order(7))
    (error,) = wrong.errors
    assert isinstance(error.error, UnassignableOutput)
    assert error.error.expected.endswith("Order")
    assert error.error.actual == "dict"


Order = hints.Order


class Receipt:
    """A class used as a job, whose string hint resolves at once with this module's globals."""

    made: ClassVar[list["Receipt"]] = []

    def __init__(self, order: "Order") -> None:
        self.order = order
        Receipt.made.append(self)


def test_a_class_jobs_string_hints_resolve_with_its_module():
    """A class job whose ``__init__`` hint is a string naming a class of its module is resolved and checked."""
    Receipt.made.clear()
    coordinator = Coordinator([Step("receipt", Receipt)])
    result = coordinator.run(hints.Order(3))
    assert result.ok, result.fatal
    assert [receipt.order for receipt in Receipt.made] == [hints.Order(3)]
    refused = coordinator.run("3")
    assert isinstance(refused.fatal, UnassignableInput)
    assert refused.fatal.expected.endswith("Order")
    assert len(Receipt.made) == 1


def test_a_class_used_as_a_job_resolves_its_hints_with_its_module():
    """A class job whose ``__init__`` hints are strings resolves them with the class's module globals."""
    coordinator = Coordinator([Step("invoice", hints.Invoice)])
    result = coordinator.run(hints.Order(7))
    assert result.ok, result.fatal
    assert isinstance(coordinator.run({"id": 7}).fatal, UnassignableInput)


def test_an_unresolvable_input_hint_names_the_parameter():
    """An input hint that names nothing is a definition error saying which parameter's annotation, and why."""
    with pytest.raises(StepDefinitionError) as excinfo:
        Coordinator().add_step(Step("s", hints.unresolvable_input))
    assert (excinfo.value.step, excinfo.value.callback) == ("s", "job")
    assert excinfo.value.problem == (
        "cannot resolve the annotation of 'order': 'NoSuchOrder' (NameError: name 'NoSuchOrder' is not defined)"
    )


def test_an_unresolvable_return_hint_names_the_return_annotation():
    """A return hint that names nothing is a definition error saying it is the return annotation, and why."""
    with pytest.raises(StepDefinitionError) as excinfo:
        Coordinator().add_step(Step("s", lambda: None, precheck=hints.unresolvable_return))
    assert (excinfo.value.step, excinfo.value.callback) == ("s", "precheck")
    assert excinfo.value.problem == (
        "cannot resolve the return annotation: 'NoSuchResult' (NameError: name 'NoSuchResult' is not defined)"
    )


def test_an_unresolvable_hint_of_a_class_job_is_a_definition_error():
    """A class job whose ``__init__`` hint names nothing is a `StepDefinitionError` naming the parameter."""
    with pytest.raises(StepDefinitionError) as excinfo:
        Coordinator().add_step(Step("s", hints.Unresolvable))
    assert excinfo.value.problem == (
        "cannot resolve the annotation of 'order': 'NoSuchOrder' (NameError: name 'NoSuchOrder' is not defined)"
    )
