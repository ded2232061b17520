"""
Callbacks whose hints are strings that only this module's globals resolve.

The context marker is written as a string naming a `Context` this module does
not import (``"Context"``, ``"choreograph.Context"``), as the contract allows:
resolving the hints all at once then fails, and each hint is resolved on its
own, with this module's globals for the others.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Order:
    """An input type of this module."""

    id: int


def plain(ctx: Context, order: Order) -> str:  # noqa: F821 - the context marker, as a string
    """Return the step's name and the order's id."""
    return f"{ctx.step}:{order.id}"


def dotted(ctx: choreograph.Context, order: Order) -> str:  # noqa: F821 - the context marker, dotted
    """Return the step's name and the order's id."""
    return f"{ctx.step}:{order.id}"


def generic(ctx: Context[Order], order: Order) -> str:  # noqa: F821 - the context marker, subscripted
    """Return the step's name and the order's id."""
    return f"{ctx.step}:{order.id}"


def echo(ctx: Context, order: Order) -> Order:  # noqa: F821 - the context marker, as a string
    """Return the order: the return hint is a class of this module."""
    return order


def echo_dict(ctx: Context, order: Order) -> Order:  # noqa: F821 - the context marker, as a string
    """Return a dict where the return hint says an `Order`."""
    return {"id": order.id}  # type: ignore[return-value]


class Billing:
    """A class whose bound method is a callback."""

    def bill(self, ctx: Context, order: Order) -> str:  # noqa: F821 - the context marker, as a string
        """Return the step's name and the order's id."""
        return f"{ctx.step}:{order.id}"


class Charge:
    """A class whose instances are callbacks."""

    def __call__(self, ctx: Context, order: Order) -> str:  # noqa: F821 - the context marker, as a string
        """Return the step's name and the order's id."""
        return f"{ctx.step}:{order.id}"


class Invoice:
    """A class used as a job."""

    def __init__(self, ctx: Context, order: Order) -> None:  # noqa: F821 - the context marker, as a string
        self.label = f"{ctx.step}:{order.id}"


class Unresolvable:
    """A class used as a job whose input hint names nothing."""

    def __init__(self, order: NoSuchOrder) -> None:  # noqa: F821 - unresolvable on purpose
        self.order = order


def unresolvable_input(ctx: Context, order: NoSuchOrder) -> None:  # noqa: F821 - unresolvable on purpose
    """Take an input whose hint names nothing."""


def unresolvable_return(ctx: Context, order: Order) -> NoSuchResult:  # noqa: F821 - unresolvable on purpose
    """Return something whose hint names nothing."""
