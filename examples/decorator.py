"""
Register steps with the decorator form, ``@coordinator.step(name, precheck=...)``.

The decorator adds a step whose job is the decorated function, and returns
that function unchanged: it stays an ordinary function you can call (and
unit-test) directly, with its own signature and type.

Run it with ``python examples/decorator.py``.
"""

from dataclasses import dataclass

from choreograph import Context, Coordinator, Skip


@dataclass(frozen=True)
class Order:
    """A web shop order."""

    id: str
    items: tuple[tuple[str, int], ...]  # (SKU, quantity)
    country: str


PRICES = {"mug": 1200, "tee": 2500, "cap": 1800}
coordinator = Coordinator[Order]()


def has_items(order: Order) -> None:
    if not order.items:
        raise Skip("empty basket")


@coordinator.step("subtotal", precheck=has_items)
def subtotal(order: Order) -> int:
    return sum(PRICES[sku] * quantity for sku, quantity in order.items)


def ships_there(order: Order) -> None:
    if order.country not in {"FR", "DE", "NL"}:
        raise Skip(f"no shipping to {order.country}")


@coordinator.step("shipping", precheck=ships_there)
def shipping(ctx: Context[Order], order: Order) -> int:
    cents = ctx.data_bag.get_job_data("subtotal", 0)
    return 0 if (isinstance(cents, int) and cents >= 5000) or not order.items else 490


def main() -> None:
    print("steps:", ", ".join(step.name for step in coordinator.steps))
    orders = [
        Order("A-1", (("mug", 2), ("tee", 1)), "FR"),
        Order("A-2", (("cap", 1),), "US"),
        Order("A-3", (), "DE"),
    ]
    for result in coordinator.run_many(orders, workers=2, ordered=True):
        skipped = {error.step: error.error for error in result.errors}
        parts = [
            f"{name} skipped ({skipped[name]})" if name in skipped else f"{name}={result.data_bag.get_job_data(name)}"
            for name in ("subtotal", "shipping")
        ]
        print(f"{result.input.id}: {', '.join(parts)}")
    # The decorated functions are the plain functions: call them directly.
    print("subtotal is the registered job:", coordinator.steps[0].job is subtotal)
    print("subtotal(...) called directly:", subtotal(Order("T-1", (("mug", 1),), "NL")))


if __name__ == "__main__":
    main()
