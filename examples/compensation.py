"""
Undo a failed order with compensations: a saga.

An order runs three steps: "reserve stock", "charge card" and "ship". The first
two have a ``compensate=`` callback that undoes their job: "release
reservation" and "refund charge". When "ship" fails (the address is
undeliverable), the run stops with `JobFailed` and the coordinator compensates
the steps whose job completed, in reverse order: the charge is refunded, then
the stock released. A compensation that fails does not stop the others; its
error is reported in ``result.compensation_errors``.

With a `SqliteStore`, the rolled-back run's status is ``"rolled_back"``; one
whose compensation failed stays ``"compensating"``, and running its key again
retries only the compensations that did not complete.

Run it with ``python examples/compensation.py``.
"""

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from choreograph import Context, Coordinator, RunResult, SqliteStore, Step


@dataclass(frozen=True)
class Order:
    """A web shop order."""

    id: str
    sku: str
    quantity: int
    amount: int  # cents
    address: str


@dataclass
class Shop:
    """The shop's state: stock per SKU, charges per order."""

    stock: dict[str, int]
    charges: dict[str, int] = field(default_factory=dict[str, int])
    refunds_fail: bool = False  # the payment provider is down


def shop(ctx: Context[Order]) -> Shop:
    found = ctx.values["shop"]
    if not isinstance(found, Shop):
        raise TypeError("values['shop'] should be a Shop")
    return found


def reserve_stock(ctx: Context[Order], order: Order) -> None:
    stock = shop(ctx).stock
    if stock[order.sku] < order.quantity:
        raise ValueError(f"only {stock[order.sku]} {order.sku} left")
    stock[order.sku] -= order.quantity


def release_reservation(ctx: Context[Order], order: Order) -> None:
    shop(ctx).stock[order.sku] += order.quantity


def charge_card(ctx: Context[Order], order: Order) -> None:
    shop(ctx).charges[order.id] = order.amount


def refund_charge(ctx: Context[Order], order: Order) -> None:
    if shop(ctx).refunds_fail:
        raise ConnectionError("payment provider unavailable")
    del shop(ctx).charges[order.id]


def ship(order: Order) -> str:
    if "Atlantis" in order.address:
        raise ValueError(f"address {order.address!r} is undeliverable")
    return f"parcel for {order.id}"


STEPS = (
    Step("reserve stock", reserve_stock, compensate=release_reservation),
    Step("charge card", charge_card, compensate=refund_charge),
    Step("ship", ship),
)


def report(title: str, result: RunResult[Order], state: Shop) -> None:
    print(f"== {title}")
    for call in result.trace:
        print(f"  {call.step:<14} {call.phase:<10} {call.outcome}{' (restored)' if call.restored else ''}")
    print(f"  fatal: {result.fatal}")
    print(f"  compensations: {[(call.step, call.outcome) for call in result.compensations]}")
    print(f"  compensation_errors: {[str(error) for error in result.compensation_errors]}")
    print(f"  shop: stock={state.stock} charges={state.charges}")


def status(store: SqliteStore, key: str) -> str | None:
    info = store.run_info(key)
    return None if info is None else info.status


def main() -> int:
    order = Order("A-1", "mug", 2, 2400, "1 Main Street, Atlantis")
    coordinator = Coordinator[Order](STEPS)

    state = Shop({"mug": 10})
    report("ship fails: refund, then release", coordinator.run(order, values={"shop": state}), state)

    state = Shop({"mug": 10}, refunds_fail=True)
    report("the refund fails too: the release still runs", coordinator.run(order, values={"shop": state}), state)

    with tempfile.TemporaryDirectory() as tmp, SqliteStore(Path(tmp) / "orders.db") as store:
        durable = Coordinator[Order](STEPS, store=store, key=lambda placed: placed.id)
        durable.run(order, values={"shop": Shop({"mug": 10})})
        print(f"== durable: status of {order.id!r} in the store: {status(store, order.id)}")
        undone = [event.step for event in store.events(order.id) if event.phase == "compensate"]
        print(f"  compensate events recorded: {undone}")

        second, state = replace(order, id="A-2"), Shop({"mug": 10}, refunds_fail=True)
        durable.run(second, values={"shop": state})
        print(f"== durable, the refund fails: status of 'A-2': {status(store, 'A-2')}")
        state.refunds_fail = False  # the provider is back: run the key again
        report("durable, resumed: only the refund runs", durable.resume("A-2", values={"shop": state}), state)
        print(f"  status of 'A-2': {status(store, 'A-2')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
