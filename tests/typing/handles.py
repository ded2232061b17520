"""
Pin typed DataBag reads: mypy --strict and pyright strict check this file, nothing runs it.

User code written this way must type-check without casts: a step's type
comes from its job's return annotation, `add_step` hands the step back with
that type, and `bag.job(step)` returns it.
"""

from dataclasses import dataclass
from typing import Never, NoReturn, assert_type

from returns.io import IOResult, IOSuccess
from returns.result import Result, Success

from choreograph import Context, Coordinator, DataBag, Step


@dataclass(frozen=True)
class Order:
    """An input record."""

    id: str
    cents: int


class Receipt:
    """A class used as a job: its instance is the output, whatever `__init__` says."""

    def __init__(self, order: Order) -> None:
        self.order = order


def total(order: Order) -> int:
    return order.cents


def parse(order: Order) -> Result[int, str]:
    return Success(order.cents)


def book(order: Order) -> IOResult[str, OSError]:
    return IOSuccess(order.id)


async def fetch(order: Order) -> float:
    return order.cents / 100


async def fetch_result(order: Order) -> Result[bytes, ValueError]:
    return Success(order.id.encode())


async def fetch_io(order: Order) -> IOResult[bool, ValueError]:
    return IOSuccess(bool(order.cents))


def notify(ctx: Context[Order]) -> None:
    del ctx


def refuse(order: Order) -> NoReturn:
    raise ValueError(order.id)


def fail(order: Order) -> Never:
    raise ValueError(order.id)


def inferred_from_the_job() -> None:
    assert_type(Step("total", total), Step[int])
    assert_type(Step("parse", parse), Step[int])
    assert_type(Step("book", book), Step[str])
    assert_type(Step("fetch", fetch), Step[float])
    assert_type(Step("fetch_result", fetch_result), Step[bytes])
    assert_type(Step("fetch_io", fetch_io), Step[bool])
    assert_type(Step("notify", notify), Step[None])
    assert_type(Step("receipt", Receipt), Step[Receipt])
    assert_type(Step("refuse", refuse), Step[Never])
    assert_type(Step("fail", fail), Step[Never])
    assert_type(Step("lambda", lambda: "text"), Step[str])
    assert_type(Step("options", total, notify, timeout=1.0, compensate=notify, compensate_failed=True), Step[int])
    assert_type(Step(name="keywords", job=total, precheck=None), Step[int])
    assert_type(Step[int]("explicit", total), Step[int])


def a_bare_step_is_a_step_of_object(step: Step) -> None:
    assert_type(step, Step[object])
    wide: Step[object] = Step("total", total)  # a Step[int] is a Step[object]
    del wide


def add_step_returns_the_typed_step() -> None:
    flow = Coordinator[Order]()
    assert_type(flow.add_step(Step("total", total)), Step[int])
    assert_type(flow.add_step(Step("receipt", Receipt)), Step[Receipt])
    assert_type(flow.steps, tuple[Step, ...])


def reads(bag: DataBag) -> None:
    flow = Coordinator[Order]()
    cents = flow.add_step(Step("total", total))
    booking = flow.add_step(Step("book", book))
    receipt = flow.add_step(Step("receipt", Receipt))
    assert_type(bag.job(cents), int)
    assert_type(bag.job(booking), str)
    assert_type(bag.job(receipt), Receipt)
    assert_type(bag.job(cents, None), int | None)
    assert_type(bag.job(cents, default="none"), int | str)
    assert_type(bag.precheck(cents), object)
    assert_type(bag.precheck(cents, None), object)


def reads_in_a_later_callback() -> None:
    flow = Coordinator[Order]()
    cents = flow.add_step(Step("total", total))

    def euros(ctx: Context[Order]) -> float:
        return ctx.data_bag.job(cents) / 100

    result = flow.run(Order("O-1", 1250))
    assert_type(flow.add_step(Step("euros", euros)), Step[float])
    assert_type(result.data_bag.job(cents), int)


def refused(bag: DataBag) -> None:
    bag.job("total")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    Step[str]("total", total)  # pyright: ignore[reportCallIssue, reportArgumentType]  # (mypy lets it through)
