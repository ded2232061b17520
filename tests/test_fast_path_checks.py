"""
How often a run asks a class whether a value is its instance, on the fast path of a run that only succeeds.

The input is the same object throughout a run, so a plain-class input check
is made once per run and class, however many callbacks annotate it; an output
of exactly its annotated class is accepted without asking the class at all.
A class's metaclass sees every question asked (its ``__instancecheck__``).
The fast path also shows up as such in the tracebacks of callback errors.
"""

import traceback
from typing import Any

import pytest

from choreograph import Context, Coordinator, Step


@pytest.fixture(autouse=True)
def logging_state_cached() -> None:
    """
    Run a trivial flow first, so that plain `run()` calls take the fast path.

    Whether choreograph's logging is on is known cheaply only once loguru was
    asked (see `choreograph._logging.is_enabled`); until then a run also
    goes through the logging listener, on the general loop.
    """
    Coordinator([Step("warm-up", lambda: None)]).run()


class Counting(type):
    """A metaclass that counts the instance checks made against its classes."""

    checks = 0

    def __instancecheck__(cls, instance: Any) -> bool:
        Counting.checks += 1
        return super().__instancecheck__(instance)


class Order(metaclass=Counting):
    """An input type whose instance checks are counted."""

    def __init__(self, id: int) -> None:  # noqa: A002
        self.id = id


class RushOrder(Order):
    """A subclass: `isinstance` of it against `Order` asks `Order`'s metaclass."""


class Receipt(metaclass=Counting):
    """An output type whose instance checks are counted."""


def checks_during(coordinator: Coordinator[Any], input: object) -> int:  # noqa: A002
    Counting.checks = 0
    result = coordinator.run(input)
    assert result.ok, result.fatal
    return Counting.checks


def test_an_input_class_is_checked_once_per_run():
    """Three callbacks annotated with the same input class make one instance check per run, not three."""

    def check(order: Order) -> bool:
        return order.id > 0

    def load(order: Order) -> int:
        return order.id

    def save(ctx: Context, order: Order) -> None:
        del ctx, order

    coordinator = Coordinator([Step("load", load, check), Step("save", save)])
    assert checks_during(coordinator, RushOrder(1)) == 1
    assert checks_during(coordinator, RushOrder(2)) == 1  # and again in the next run


def test_an_output_of_exactly_its_class_is_accepted_without_a_check():
    """A job returning an instance of exactly its annotated class is accepted without asking the class."""

    def issue() -> Receipt:
        return Receipt()

    coordinator = Coordinator([Step("issue", issue)])
    assert checks_during(coordinator, None) == 0


def test_a_callback_error_on_the_fast_path_shows_the_fast_path_in_its_traceback():
    """The traceback of an error raised by a callback on the fast path has a frame labelled as the fast path."""

    def fail() -> None:
        raise ValueError("declined")

    result = Coordinator([Step("ok", lambda: 1), Step("fail", fail)]).run()
    (error,) = result.errors
    files = [frame.filename for frame in traceback.extract_tb(error.error.__traceback__)]
    assert "<choreograph fast path>" in files
