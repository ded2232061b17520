"""
Share resources between runs with ``values=``: a database and settings.

The mapping passed as ``values=`` to `run` or `run_many` reaches every callback,
read-only, as ``ctx.values``: here an in-memory SQLite connection (and a lock,
as `run_many` runs records on threads) and settings, instead of globals.

Run it with ``python examples/values.py``.
"""

import sqlite3
import threading
from dataclasses import dataclass
from typing import TypeVar

from choreograph import Context, Coordinator, Skip, Step

T = TypeVar("T")
Lock = type(threading.Lock())  # threading.Lock is a factory function, not the class


@dataclass(frozen=True)
class Settings:
    """Application settings."""

    countries: frozenset[str]
    welcome_credit: int  # cents


@dataclass(frozen=True)
class Signup:
    """A sign-up form."""

    email: str
    country: str


def value(ctx: Context[Signup], key: str, kind: type[T]) -> T:
    """Read ``ctx.values[key]``, checked to be a *kind*."""
    found = ctx.values[key]
    if not isinstance(found, kind):
        raise TypeError(f"values[{key!r}] should be a {kind.__name__}")
    return found


def can_register(ctx: Context[Signup], signup: Signup) -> None:
    if signup.country not in value(ctx, "settings", Settings).countries:
        raise Skip(f"country {signup.country} not served")
    with value(ctx, "lock", Lock):
        taken = value(ctx, "db", sqlite3.Connection).execute("SELECT 1 FROM user WHERE email = ?", (signup.email,))
        if taken.fetchone():
            raise Skip("already registered")


def register(ctx: Context[Signup], signup: Signup) -> int:
    credit = value(ctx, "settings", Settings).welcome_credit
    with value(ctx, "lock", Lock):
        query = "INSERT INTO user (email, credit) VALUES (?, ?) RETURNING id"
        (user_id,) = value(ctx, "db", sqlite3.Connection).execute(query, (signup.email, credit)).fetchone()
    return int(user_id)


def main() -> None:
    db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    db.execute("CREATE TABLE user (id INTEGER PRIMARY KEY, email TEXT UNIQUE, credit INTEGER)")
    db.execute("INSERT INTO user (email, credit) VALUES ('grace@example.com', 0)")
    values = {"db": db, "lock": threading.Lock(), "settings": Settings(frozenset({"FR", "NL"}), 500)}
    coordinator = Coordinator[Signup]()
    registered = coordinator.add_step(Step("register", register, precheck=can_register))  # a Step[int]
    signups = [Signup("ada@example.com", "FR"), Signup("grace@example.com", "NL"), Signup("alan@example.com", "UK")]
    for result in coordinator.run_many(signups, workers=3, values=values, ordered=True):
        skip = "; ".join(str(error.error) for error in result.errors)
        outcome = f"skipped: {skip}" if skip else f"registered as user #{result.data_bag.job(registered)}"
        print(f"{result.input.email:<18} {outcome}")
    ((count, credit),) = db.execute("SELECT count(*), sum(credit) FROM user").fetchall()
    print(f"users in the database: {count}, welcome credit given: {credit / 100:.2f} EUR")
    db.close()


if __name__ == "__main__":
    main()
