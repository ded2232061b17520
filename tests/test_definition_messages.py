"""
The exact words of what `add_step` and `run` refuse, and how annotations are named in errors.

`test_definition.py` checks which definitions are refused and that the
messages name the step, the callback and the problem; here each problem's text
is pinned, as users read it, with the annotation spelled as they wrote it.
"""

import typing
from typing import Protocol

import pytest
import tenacity
from beartype.door import is_bearable
from beartype.roar import BeartypeException
from returns.result import Result, Success

from choreograph import Coordinator, Step, StepDefinitionError, TenacityRetry


def refused(step: Step) -> StepDefinitionError:
    with pytest.raises(StepDefinitionError) as excinfo:
        Coordinator().add_step(step)
    return excinfo.value


def test_more_than_one_input_parameter_names_them_all():
    """Two parameters without defaults (and no context): the problem lists both names."""

    def job(order, customer, note=None):
        del order, customer, note

    assert refused(Step("s", job)).problem == (
        "takes more than one input parameter ('order', 'customer'); extra parameters need defaults"
    )


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (
            lambda: lambda order, *, verbose=False, **extra: None,
            "**extra is not allowed",
        ),
        (
            lambda: lambda order, *, verbose=False, retries: None,
            "keyword-only parameter 'retries' needs a default (it is never passed)",
        ),
    ],
    ids=["var-keyword", "required-keyword-only"],
)
def test_every_parameter_after_a_defaulted_keyword_only_one_is_checked(make, problem):
    """A keyword-only parameter with a default does not stop the checks of the parameters after it."""
    assert refused(Step("s", make())).problem == problem


class HasId(Protocol):
    """A protocol that is not runtime-checkable: beartype can't check it."""

    id: int


def test_an_annotation_beartype_cannot_check_quotes_beartypes_reason():
    """An input annotation beartype refuses is a definition error quoting the first line of beartype's reason."""
    with pytest.raises(BeartypeException) as beartype_says:
        is_bearable(None, HasId)
    reason = str(beartype_says.value).strip().splitlines()[0]

    def job(record: HasId) -> None:
        del record

    error = refused(Step("s", job))
    assert (error.step, error.callback) == ("s", "job")
    assert error.problem == f"beartype cannot check the input annotation {__name__}.HasId ({reason})"


def test_a_typing_annotation_is_named_without_the_typing_prefix():
    """`UnassignableInput.expected` spells a `typing` annotation as written, without ``typing.``."""

    def job(amount: typing.Optional[int]) -> None:  # noqa: UP045 - the typing spelling is the point
        del amount

    result = Coordinator([Step("s", job)]).run("12")
    assert result.fatal is not None
    assert (result.fatal.expected, result.fatal.actual) == ("Optional[int]", "str")  # type: ignore[attr-defined]


def test_a_none_success_type_is_named_none():
    """For ``-> Result[None, E]``, a success value that is not None fails with expected ``None``."""

    def job() -> Result[None, ValueError]:
        return Success(5)  # type: ignore[arg-type]

    result = Coordinator([Step("s", job)]).run()
    (error,) = result.errors
    assert (error.error.expected, error.error.actual) == ("None", "int")  # type: ignore[attr-defined]


def test_a_retry_of_the_wrong_kind_names_its_type():
    """``Step(retry=...)`` of another kind is a definition error naming the type it got."""
    error = refused(Step("s", lambda: 1, retry=42))  # type: ignore[arg-type]
    assert (error.step, error.callback) == ("s", "step")
    assert error.problem == "retry must be a choreograph.Retry, a tenacity Retrying or None, got int"


def test_a_bare_tenacity_async_retrying_is_accepted_and_drives_the_attempts():
    """A bare ``tenacity.AsyncRetrying`` (from the ``tenacity.asyncio`` module) is wrapped like a ``Retrying``."""
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise OSError("busy")
        return "done"

    retrying = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())
    coordinator = Coordinator()
    step = coordinator.add_step(Step("s", flaky, retry=retrying))  # type: ignore[arg-type]
    assert isinstance(step.retry, tenacity.AsyncRetrying)
    result = coordinator.run()
    assert result.ok
    assert [(c.outcome, c.attempts) for c in result.trace] == [("ok", 2)]
    assert isinstance(TenacityRetry(retrying).delay(OSError(), 1, 0.0), float)


@pytest.mark.parametrize(("timeout", "kind"), [("1", "str"), (True, "bool"), ([1], "list")])
def test_a_run_timeout_of_the_wrong_type_names_its_type(timeout: object, kind: str):
    """`run(timeout=...)` with something other than a number raises `TypeError` naming what it got."""
    with pytest.raises(TypeError) as excinfo:
        Coordinator([Step("s", lambda: 1)]).run(timeout=timeout)  # type: ignore[arg-type]
    assert str(excinfo.value) == f"timeout must be a number of seconds or None, got {kind}"
