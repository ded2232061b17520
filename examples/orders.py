"""
An order flow, built in code and loaded from a spec file: two checks in parallel, undone on failure.

An order is validated; then two checks run at the same time, in a
``Parallel("checks", ...)`` group: a credit check that holds the order's amount
on the customer's credit line, and a stock reservation. Each has a
compensation: "release credit hold" and "release stock". Then the order is
booked. When booking fails (the address is undeliverable), the run stops with
`JobFailed` and both checks are undone; when the stock runs short, the credit
hold is released.

``build()`` makes the flow in code; ``orders.toml`` beside this file describes
the same flow as data, naming these functions as ``orders:...``, and
``Coordinator.from_spec`` loads it. Both flows run the same orders, with the
same outcomes.

Run it with ``python examples/orders.py``: as a script, this file is the
module ``__main__``, and its folder is first on ``sys.path``, so the spec's
``orders`` module is this file imported once more. The script hands over to
that module, so that both flows share the same functions and ``Order`` class.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from choreograph import Context, Coordinator, Parallel, Retry, RunResult, Step

SPEC = Path(__file__).with_name("orders.toml")


@dataclass(frozen=True)
class Order:
    """A customer's order."""

    id: str
    customer: str
    sku: str
    quantity: int
    amount: int  # cents
    address: str


@dataclass
class Shop:
    """The shop's books: credit lines and stock, and what the orders hold of them."""

    credit: dict[str, int]  # available credit per customer, in cents
    stock: dict[str, int]  # units per SKU
    holds: dict[str, int] = field(default_factory=dict[str, int])  # credit held per order
    reserved: dict[str, int] = field(default_factory=dict[str, int])  # units reserved per order
    bookings: list[str] = field(default_factory=list[str])

    @classmethod
    def opened(cls) -> "Shop":
        """The books as the day starts."""
        return cls(credit={"ada": 5000, "grace": 20000}, stock={"mug": 10, "lamp": 1})


def shop(ctx: Context[Order]) -> Shop:
    found = ctx.values["shop"]
    if not isinstance(found, Shop):
        raise TypeError("values['shop'] should be a Shop")
    return found


def validate(order: Order) -> None:
    if order.quantity < 1 or order.amount < 1:
        raise ValueError(f"order {order.id} has no quantity or no amount")


def hold_credit(ctx: Context[Order], order: Order) -> int:
    time.sleep(0.02)  # the credit service answers
    books = shop(ctx)
    if books.credit[order.customer] < order.amount:
        raise ValueError(f"{order.customer} has {books.credit[order.customer]} cents of credit left")
    books.credit[order.customer] -= order.amount
    books.holds[order.id] = order.amount
    return books.credit[order.customer]


def release_credit(ctx: Context[Order], order: Order) -> None:
    books = shop(ctx)
    books.credit[order.customer] += books.holds.pop(order.id)


def reserve_stock(ctx: Context[Order], order: Order) -> None:
    books = shop(ctx)
    if books.stock[order.sku] < order.quantity:
        raise ValueError(f"only {books.stock[order.sku]} {order.sku} left")
    books.stock[order.sku] -= order.quantity
    books.reserved[order.id] = order.quantity


def release_stock(ctx: Context[Order], order: Order) -> None:
    books = shop(ctx)
    books.stock[order.sku] += books.reserved.pop(order.id)


def book(ctx: Context[Order], order: Order) -> str:
    if "Atlantis" in order.address:
        raise ValueError(f"address {order.address!r} is undeliverable")
    shop(ctx).bookings.append(order.id)
    return f"booking {order.id}"


def build() -> Coordinator[Order]:
    """The flow, in code: what ``orders.toml`` says as data."""
    credit = Step(
        "credit",
        hold_credit,
        compensate=release_credit,
        retry=Retry(attempts=4, on=ConnectionError, initial=0.01, jitter=0),  # the credit service may be busy
    )
    stock = Step("stock", reserve_stock, compensate=release_stock)
    return Coordinator[Order](
        [
            Step("validate", validate),
            Parallel("checks", credit, stock),  # two branches of one step each
            Step("book", book, timeout=5.0),
        ]
    )


ORDERS = (
    Order("A-1", "ada", "mug", 2, 2400, "1 Main Street"),
    Order("A-2", "ada", "mug", 1, 1200, "3 Harbour Road, Atlantis"),  # booking fails: both checks undone
    Order("A-3", "grace", "lamp", 5, 9000, "2 Elm Street"),  # the stock runs short: the credit hold is released
)


def report(order: Order, result: RunResult[Order], books: Shop) -> None:
    print(f"  order {order.id}: {'ok' if result.ok else result.fatal}")
    for call in result.trace:
        print(f"    {call.step:<9} {call.phase:<11} {call.outcome}")
    undone = [call.step for call in result.compensations if call.outcome == "ok"]
    print(f"    compensated: {', '.join(undone) or 'nothing'}")
    print(f"    books: credit={books.credit} stock={books.stock} bookings={books.bookings}")


def main() -> int:
    in_code = build()
    from_spec = Coordinator.from_spec(SPEC)
    if from_spec.to_spec() != in_code.to_spec():
        raise SystemExit(f"{SPEC.name} and build() describe different flows")
    print(f"{SPEC.name} and build() describe the same flow: {[step.name for step in in_code.steps]}")
    print("== the flow, as a Mermaid flowchart (paste it into https://mermaid.live)")
    print(in_code.graph())
    failed: RunResult[Order] | None = None
    for title, flow in (("built in code", in_code), (f"loaded from {SPEC.name}", from_spec)):
        print(f"== {title}")
        for order in ORDERS:
            books = Shop.opened()
            result = flow.run(order, values={"shop": books})
            report(order, result, books)
            if failed is None and not result.ok:
                failed = result
    if failed is not None:
        print(f"== the timeline of order {failed.input.id}, which failed, as a Mermaid gantt chart")
        print(failed.timeline())
    return 0


if __name__ == "__main__":
    import orders  # this file as the module the spec names (see the docstring)

    raise SystemExit(orders.main())
