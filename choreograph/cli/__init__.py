"""
The ``choreograph`` command: run flows over batches of records, inspect and repair their stores.

Install it with the extra ``choreograph[cli]`` (click, rich, pydantic). This
module imports none of them until `main` is called, and `main` imports only
click to parse the command line: a command imports what it needs when it runs
(rich to draw, pydantic to convert records), so ``choreograph --help`` stays
fast. See the guide's "Command line" page.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]

NEEDS_EXTRA = "choreograph: the command line needs the extra choreograph[cli]: pip install 'choreograph[cli]'"


def main(args: Sequence[str] | None = None) -> NoReturn:
    """
    Run the ``choreograph`` command with *args* (default: ``sys.argv[1:]``) and exit with its status.

    Exit statuses: 0 everything ok, 1 some runs failed, 2 a usage or
    definition error, 130 interrupted.

    .. versionadded:: 0.2.0
    """
    try:
        from ._commands import run_command  # noqa: PLC0415 - click, only when the command runs
    except ImportError as exc:
        if exc.name not in ("click", "rich", "pydantic"):
            raise
        print(NEEDS_EXTRA, file=sys.stderr)  # noqa: T201 - no click to echo with
        raise SystemExit(2) from None
    raise SystemExit(run_command(args))
