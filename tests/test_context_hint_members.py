"""
`Context[X]` against `Coordinator[Rec]` for the hints beyond plain classes and unions of them.

Unknown hints (``Any``, ``object``, type variables) say nothing, so they accept
anything and are accepted anywhere, also as one member of a union input;
``Annotated`` is read through; hints that are not classes (``NewType``, a hint
object of another library) can't be compared, so they are accepted. The
checks run at `add_step`, so each test builds its coordinator itself.
"""

import types
from typing import Annotated, Any, NewType, TypeVar

import pytest

from choreograph import Context, Coordinator, Step, StepDefinitionError

T = TypeVar("T")
UserId = NewType("UserId", int)


def job_of(hint: object) -> Any:
    """A job whose context parameter is annotated ``Context[hint]``."""

    def job(ctx: Context[Any]) -> None:
        return None

    job.__annotations__ = {"ctx": Context[hint], "return": None}  # type: ignore[valid-type]
    return job


def refusal(input_type: Any, context: object) -> StepDefinitionError | None:
    """The error `Coordinator[input_type]` raises for a job annotated ``Context[context]``, if any."""
    try:
        Coordinator[input_type]([Step("s", job_of(context))])
    except StepDefinitionError as refused:
        return refused
    return None


def accepted(input_type: Any, context: object) -> bool:
    """Whether `Coordinator[input_type]` takes a job annotated ``Context[context]`` (a refusal names the job)."""
    refused = refusal(input_type, context)
    if refused is not None:
        assert (refused.step, refused.callback) == ("s", "job")
        assert refused.problem.startswith("its context parameter 'ctx' is annotated Context[")
    return refused is None


class ForeignHint:
    """A hint object of another library: not a class, and its own ``issubclass`` says no to everything."""

    def __call__(self, value: object) -> object:  # typing wants a callable type argument
        return value

    def __subclasscheck__(self, cls: type) -> bool:
        return False

    def __repr__(self) -> str:
        return "ForeignHint()"


@pytest.mark.parametrize("context", [Any, object, T, list[T]], ids=repr)
def test_a_context_of_an_unknown_type_takes_any_input(context: object):
    """``Context[Any]``, ``Context[object]``, ``Context[T]`` and ``Context[list[T]]`` say nothing: any input fits."""
    assert accepted(int, context)
    assert accepted(str | None, context)


@pytest.mark.parametrize("unknown", [Any, object], ids=repr)
def test_an_unknown_member_of_a_union_input_is_accepted(unknown: object):
    """In ``Coordinator[int | Any]`` the ``Any`` member says nothing, so ``Context[int]`` takes the input."""
    assert accepted(int | unknown, int)
    assert not accepted(int | unknown, str)  # the int member still has to fit


@pytest.mark.parametrize(
    ("input_type", "context"),
    [(bool | int, int), (int | str, int | str | bytes), (bool | int, float)],
    ids=repr,
)
def test_a_union_input_is_accepted_when_each_member_fits(input_type: Any, context: object):
    """Each member of a union input is checked on its own: a subclass, a wider union, the numeric tower."""
    assert accepted(input_type, context)


def test_a_union_input_is_refused_when_a_member_does_not_fit():
    """`bytes` fits no member of ``Context[int | str]``, so ``Coordinator[int | bytes]`` refuses it."""
    assert not accepted(int | bytes, int | str)


def test_annotated_hints_are_compared_by_their_type():
    """``Annotated[int, ...]`` is an int, on either side: its metadata is not a type."""
    assert accepted(int, Annotated[int, "positive"])
    assert not accepted(str, Annotated[int, "positive"])
    assert accepted(Annotated[int, "positive"], int)
    assert not accepted(Annotated[str, "name"], int)


def test_a_new_type_is_accepted_either_way():
    """A `NewType` is not a class: it can't be compared, so it is accepted as the context and as the input."""
    assert accepted(int, UserId)
    assert accepted(UserId, int)
    assert accepted(UserId, str)
    assert accepted(UserId, float)


class Celsius(float):
    """A subclass of float."""


@pytest.mark.parametrize(("input_type", "context"), [(bool, float), (bool, complex), (Celsius, complex)], ids=repr)
def test_the_numeric_tower_takes_subclasses_too(input_type: type, context: type):
    """A ``bool`` is an ``int``, so ``Context[float]`` takes it, as type checkers do; a float subclass fits complex."""
    assert accepted(input_type, context)
    assert not accepted(context, input_type)


def test_a_hint_that_is_not_a_class_is_accepted_whatever_its_issubclass_says():
    """A foreign hint object, or an alias of one, can't be compared with ``issubclass``: accepted, not refused."""
    hint = ForeignHint()
    assert accepted(int, hint)
    assert accepted(int, types.GenericAlias(hint, (int,)))


def test_a_step_alias_passes_keyword_arguments_on():
    """``Step[int](name, job, precheck=..., timeout=...)`` makes the same plain `Step` as ``Step(...)``."""

    def job(value: int) -> int:
        return value

    def check(value: int) -> None:
        return None

    step = Step[int]("s", job, precheck=check, timeout=2.5)
    assert type(step) is Step
    assert step == Step("s", job, precheck=check, timeout=2.5)
    assert (step.precheck, step.timeout) == (check, 2.5)
