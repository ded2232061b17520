"""
Unit-test a business flow with ``result.trace``, ``result.errors`` and the DataBag.

``result.trace`` lists the callbacks a run considered, in order, with their
outcomes: one ``assert`` states the path a record took through the flow. The
``test_*`` functions are what a pytest module would hold. Run the checks with
``python examples/testing_flows.py`` (not with ``-O``, which drops asserts).
"""

# ruff: noqa: S101 - asserts are the point of this example

from dataclasses import dataclass

from choreograph import Context, Coordinator, JobFailed, RunResult, Skip, Step

ORDERS = {"O-1": "ada@example.com", "O-2": "grace@example.com"}


@dataclass(frozen=True)
class Refund:
    """A customer's refund request."""

    order: str
    days_since_delivery: int


def load_order(refund: Refund) -> str:
    return ORDERS[refund.order]  # KeyError for an unknown order: the run stops


def within_window(refund: Refund) -> None:
    if refund.days_since_delivery > 30:
        raise Skip("asked after 30 days")


def refund(refund: Refund) -> str:
    return f"RF-{refund.order}"


def notify(ctx: Context[Refund]) -> str:
    return f"mail to {ctx.data_bag.job(LOAD_ORDER)}"


flow = Coordinator[Refund]()
LOAD_ORDER = flow.add_step(Step("load_order", load_order))  # a Step[str]: reads of its output are typed
REFUND = flow.add_step(Step("refund", refund, precheck=within_window))
flow.add_step(Step("notify", notify))


def path(result: RunResult[Refund]) -> list[tuple[str, str, str]]:
    return [(call.step, call.phase, call.outcome) for call in result.trace]


def test_refund_is_issued() -> None:
    result = flow.run(Refund("O-1", days_since_delivery=3))
    assert result.ok
    ok = [("load_order", "job", "ok"), ("refund", "precheck", "ok"), ("refund", "job", "ok"), ("notify", "job", "ok")]
    assert path(result) == ok
    assert result.errors == ()
    assert result.data_bag.job(REFUND) == "RF-O-1"


def test_late_request_is_not_refunded() -> None:
    result = flow.run(Refund("O-2", days_since_delivery=45))
    assert result.ok
    assert path(result)[1:] == [("refund", "precheck", "failed"), ("refund", "job", "skipped"), ("notify", "job", "ok")]
    assert [(error.step, error.phase, type(error.error)) for error in result.errors] == [("refund", "precheck", Skip)]
    assert result.data_bag.job(REFUND, None) is None


def test_unknown_order_stops_the_flow() -> None:
    result = flow.run(Refund("O-404", days_since_delivery=1))
    assert path(result) == [("load_order", "job", "failed")]
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, KeyError)
    assert [error.error for error in result.errors] == [result.fatal.error]


def main() -> None:
    for test in (test_refund_is_issued, test_late_request_is_not_refunded, test_unknown_order_stops_the_flow):
        test()
        print(f"ok  {test.__name__}")
    print("all checks passed")


if __name__ == "__main__":
    main()
