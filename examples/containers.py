"""
Return `returns` containers from callbacks.

``Success(v)`` and ``IOSuccess(v)`` are unwrapped: the step's output is ``v``.
``Failure(e)`` fails the callback with ``e``; a value that is not an exception
arrives wrapped in `CallbackFailure` (its ``.value`` holds it). An annotation
``-> Result[int, str]`` has its success value checked against ``int``.

Run it with ``python examples/containers.py``.
"""

from dataclasses import dataclass

from returns.io import IOResult, IOSuccess
from returns.result import Failure, Result, Success

from choreograph import CallbackFailure, Context, Coordinator, JobFailed, Step

LIMIT_CENTS = 100_000


@dataclass(frozen=True)
class Payment:
    """A payment request, as received."""

    id: str
    amount: str  # as typed in by a user: "12.50"


class LimitExceededError(ValueError):
    """The payment is above what can be booked without a review."""


def parse_amount(payment: Payment) -> Result[int, str]:
    euros, _, cents = payment.amount.partition(".")
    if not (euros.isdigit() and cents.isdigit() and len(cents) == 2):
        return Failure(f"cannot read {payment.amount!r} as an amount")  # a plain value: CallbackFailure
    return Success(int(euros) * 100 + int(cents))


PARSE = Step("parse_amount", parse_amount)  # a Step[int]: the success type of `Result[int, str]`


def within_limit(ctx: Context[Payment]) -> Result[int, LimitExceededError]:
    cents = ctx.data_bag.job(PARSE)
    if cents > LIMIT_CENTS:
        return Failure(LimitExceededError(f"{cents} cents is over the limit"))  # an exception: kept as is
    return Success(cents)


def book(payment: Payment) -> IOResult[str, OSError]:
    return IOSuccess(f"BK-{payment.id}")  # as a ledger client built on `returns` would


BOOK = Step("book", book, precheck=within_limit)  # a Step[str]


def describe(payment: Payment, coordinator: Coordinator[Payment]) -> str:
    result = coordinator.run(payment)
    match result.to_result():
        case Success(bag) if bag.has_job_data("book"):
            return f"booked as {bag.job(BOOK)}"
        case Success(_):
            return f"not booked ({'; '.join(str(error) for error in result.errors)})"
        case Failure(JobFailed(error=CallbackFailure(value=value))):
            return f"stopped, the job returned Failure({value!r})"
        case _:  # Failure(fatal): type checkers don't know that Success and Failure are all there is
            return f"stopped: {result.fatal}"


def main() -> None:
    coordinator = Coordinator[Payment]([PARSE, BOOK])
    payments = [Payment("P-1", "12.50"), Payment("P-2", "2500.00"), Payment("P-3", "12,50")]
    for payment in payments:
        print(f"{payment.id} {payment.amount:>8}: {describe(payment, coordinator)}")


if __name__ == "__main__":
    main()
