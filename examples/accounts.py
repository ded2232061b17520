"""
Bank accounts as durable entities, fed by producer processes: deposits, refused overdrafts, monthly interest.

Each account is an entity of the kind ``"account"``, its state an `Account`.
Three producer processes (this script run again with ``produce``) send
deposits and withdrawals to five accounts, each through its own
`SqliteStore` object on the same file; this process serves them with four
workers. A withdrawal below zero is refused: it is no error (an error would
block the account's later messages until someone retries or drops it), it is
recorded in the state. The first deposit of an account sets its durable
timer to a "month" from now (a fraction of a second here); each time it
fires, the account earns 1% and the timer is set again.

At the end every account's books must balance: its balance is what its
deposits, accepted withdrawals and interest add up to, each counted once,
whatever order the producers' messages came in.

Run it with ``python examples/accounts.py``.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from choreograph import Entities, EntityContext, SqliteStore

ACCOUNTS = [f"acct-{n}" for n in range(5)]
PRODUCERS = 3
MESSAGES = 60  # per producer
MONTH = 0.25  # seconds: a month, for the demo
RATE_PERCENT = 1


@dataclass(frozen=True)
class Account:
    """An account's state: its balance, and what it was told (for the books)."""

    cents: int = 0
    deposited: int = 0
    withdrawn: int = 0
    interest: int = 0
    refused: int = 0  # withdrawals refused: they would have gone below zero


@dataclass(frozen=True)
class Deposit:
    """Put *cents* into the account."""

    cents: int


@dataclass(frozen=True)
class Withdraw:
    """Take *cents* out, unless the balance is short."""

    cents: int


def accounts_in(store: SqliteStore) -> Entities[Account]:
    """The account kind with its handlers."""
    accounts = Entities[Account]("account", store=store)

    @accounts.handler(Deposit)
    def deposit(ctx: EntityContext[Account], message: Deposit) -> None:
        account = ctx.state or Account()
        ctx.state = replace(account, cents=account.cents + message.cents, deposited=account.deposited + message.cents)
        if ctx.timer is None:  # interest starts with the first deposit
            ctx.wake_in(MONTH)

    @accounts.handler(Withdraw)
    def withdraw(ctx: EntityContext[Account], message: Withdraw) -> None:
        account = ctx.state or Account()
        if account.cents < message.cents:
            ctx.state = replace(account, refused=account.refused + 1)
            return
        ctx.state = replace(account, cents=account.cents - message.cents, withdrawn=account.withdrawn + message.cents)

    @accounts.on_timer
    def monthly_interest(ctx: EntityContext[Account]) -> None:
        account = ctx.state or Account()
        earned = account.cents * RATE_PERCENT // 100
        ctx.state = replace(account, cents=account.cents + earned, interest=account.interest + earned)
        ctx.wake_in(MONTH)  # next month

    return accounts


def produce(path: str, seed: int) -> None:
    """A producer process: send deposits and withdrawals (no handlers needed to send)."""
    rng = random.Random(seed)  # noqa: S311 - made-up traffic
    with SqliteStore(path) as store:
        accounts = Entities[Account]("account", store=store)
        for _ in range(MESSAGES):
            account = rng.choice(ACCOUNTS)
            cents = rng.randint(1, 100) * 100
            accounts.send(account, Deposit(cents) if rng.random() < 0.6 else Withdraw(cents))
            time.sleep(rng.random() / 500)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "bank.db")
        with SqliteStore(path) as store:
            accounts = accounts_in(store)
            stop = threading.Event()
            server = threading.Thread(target=accounts.serve, kwargs={"workers": 4, "stop": stop})
            server.start()
            producers = [
                subprocess.Popen([sys.executable, __file__, "produce", path, str(seed)])  # noqa: S603 - this script
                for seed in range(PRODUCERS)
            ]
            codes = [producer.wait(60) for producer in producers]
            while any((info := accounts.info(name)) is not None and info.pending for name in ACCOUNTS):
                time.sleep(0.05)
            time.sleep(2 * MONTH)  # let some interest be paid
            stop.set()
            server.join()
            if codes != [0] * PRODUCERS:
                raise SystemExit(f"a producer failed: {codes}")

            total = 0
            for name in ACCOUNTS:
                account = accounts.state(name) or Account()
                books = account.deposited - account.withdrawn + account.interest
                if account.cents != books or account.cents < 0:  # every message counted once, never overdrawn
                    raise SystemExit(f"{name}'s books do not balance: {account}")
                total += account.deposited
                print(
                    f"{name}: {account.cents / 100:9.2f} (deposited {account.deposited / 100:.2f},"
                    f" withdrew {account.withdrawn / 100:.2f}, interest {account.interest / 100:.2f},"
                    f" {account.refused} withdrawals refused)"
                )
            handled = len(store.runs())
            print(f"{handled} handlings, each a durable run; {total / 100:.2f} deposited in all")


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        produce(sys.argv[2], int(sys.argv[3]))
    else:
        main()
