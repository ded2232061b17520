"""A `Context[X]` callback must accept the input of a `Coordinator[Rec]`: checked at `add_step`, member by member."""

from typing import Any, Generic, TypeVar

import pytest

from choreograph import Context, Coordinator, Step, StepDefinitionError

T = TypeVar("T")


def job_of(hint: object) -> Any:
    def job(ctx: Context[Any]) -> None:
        return None

    job.__annotations__ = {"ctx": Context[hint], "return": None}  # type: ignore[valid-type]
    return job


ACCEPTED = [
    (int, int),
    (int, int | str),  # one member of the annotation takes the input
    (int | str, int | str),
    (int, float),  # the numeric tower
    (list[int], list[str]),  # generics compare by their origin class only
    (int | None, int | None),
    (bool, int),  # a subclass's input fits its base
    (Any, str),
    (object, str),
]
REFUSED = [
    (int, str),
    (int | str, int),  # the str member isn't accepted
    (float, int),
    (list[int], dict[str, int]),
    (int | None, int),
    (int, bool),
]


@pytest.mark.parametrize(("input_type", "context"), ACCEPTED, ids=repr)
def test_a_context_that_accepts_the_input_is_accepted(input_type: Any, context: Any):
    """`Coordinator[I]` takes a callback whose context is `Context[C]` when every member of I fits C."""
    flow = Coordinator[input_type]([Step("s", job_of(context))])
    assert len(flow) == 1


@pytest.mark.parametrize(("input_type", "context"), REFUSED, ids=repr)
def test_a_context_that_does_not_accept_the_input_is_refused(input_type: Any, context: Any):
    """Otherwise `add_step` refuses it, naming the step, the callback, the context and the input."""
    with pytest.raises(StepDefinitionError) as raised:
        Coordinator[input_type]([Step("s", job_of(context))])
    assert (raised.value.step, raised.value.callback) == ("s", "job")
    assert "context parameter 'ctx'" in raised.value.problem


def test_keyword_arguments_reach_the_coordinator_through_its_alias():
    """`Coordinator[int](steps=..., strict_prechecks=True)`: the alias passes keyword arguments on."""
    flow = Coordinator[int](steps=[Step("s", job_of(int))], strict_prechecks=True)
    assert len(flow) == 1
    assert flow.input_type is int


def test_a_generic_subclass_gets_its_type_argument():
    """`G[int]()` for `class G(Coordinator[T])` knows its input is int, and refuses a `Context[str]` callback."""

    class G(Coordinator[T], Generic[T]):
        pass

    assert G[int]().input_type is int
    with pytest.raises(StepDefinitionError):
        G[int]([Step("s", job_of(str))])
