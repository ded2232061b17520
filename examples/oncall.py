"""
On call with the `choreograph` command: run a batch of payouts, find what failed, fix it, resume.

The module holds the flow (`oncall:payouts`); run as a script, it walks through
the commands of docs/guide/cli.md in a temporary folder and prints what they
print. It needs the extra: pip install 'choreograph[cli]'.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from choreograph import Coordinator, Skip, Step

#: Accounts the bank froze: paying them fails until ONCALL_UNFROZEN is set (the on-call fix).
FROZEN = {"acct-7"}


@dataclass(frozen=True)
class Payout:
    """One payout to make: an amount to an account, with a notice if asked."""

    id: str
    account: str
    cents: int
    notify: bool = False


class AccountFrozen(Exception):
    """The bank refused the transfer."""


def validate(payout: Payout) -> int:
    if payout.cents <= 0:
        raise ValueError(f"cents must be > 0, got {payout.cents}")
    return payout.cents


def transfer(payout: Payout) -> str:
    if payout.account in FROZEN and not os.environ.get("ONCALL_UNFROZEN"):
        raise AccountFrozen(f"{payout.account} is frozen")
    return f"tx-{payout.id}"


def wants_notice(payout: Payout) -> None:
    if not payout.notify:
        raise Skip("no notice asked")


def notice(payout: Payout) -> str:
    return f"mailed {payout.account}"


payouts = Coordinator[Payout](
    [Step("validate", validate), Step("transfer", transfer), Step("notice", notice, wants_notice)],
    key=lambda payout: payout.id,
)

BATCH = """\
id,account,cents,notify
P-1,acct-1,1250,true
P-2,acct-2,990,false
P-3,acct-7,40000,true
P-4,acct-4,-5,false
P-5,acct-5,12x,false
P-6,acct-6,300,true
"""


def choreograph(folder: Path, *args: str, **env: str) -> int:
    """Run `choreograph ARGS` in *folder*, print the command and what it printed, and return its exit status."""
    print(f"$ {' '.join(f'{k}={v}' for k, v in env.items())}{' ' if env else ''}choreograph {' '.join(args)}")
    here = str(Path(__file__).resolve().parent)
    environment = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "choreograph", *args],
        cwd=folder,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    print(done.stdout.rstrip())
    print(f"(exit status {done.returncode})\n")
    return done.returncode


def expect(status: int, wanted: int) -> None:
    if status != wanted:
        raise SystemExit(f"expected exit status {wanted}, got {status}")


def main() -> None:
    if importlib.util.find_spec("click") is None:
        print("this walkthrough needs the extra: pip install 'choreograph[cli]'")
        return
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "payouts.csv").write_text(BATCH, encoding="utf-8")
        expect(choreograph(folder, "run", "oncall:payouts", "payouts.csv", "--store", "payouts.db"), 1)
        expect(choreograph(folder, "runs", "--store", "payouts.db", "--count"), 0)
        expect(choreograph(folder, "show", "--store", "payouts.db", "P-3"), 0)
        # The bank unfroze acct-7: P-3 goes through; P-4 asks for a negative payout, for the business to fix.
        fixed = choreograph(
            folder, "resume", "oncall:payouts", "--store", "payouts.db", "--failed", ONCALL_UNFROZEN="1"
        )
        expect(fixed, 1)
        expect(choreograph(folder, "runs", "--store", "payouts.db", "--status", "failed"), 0)


if __name__ == "__main__":
    main()
