"""
Create account statements in a SQLite database, durably: fix a failure, resume.

The README example of the Go package worldline-go/choreograph, made real. Each
record runs two steps: "create statement", whose precheck skips the job (with
`Skip`, passing the existing id on) when the statement already exists, and
"create statement lines", whose job reads the statement id from the DataBag
and inserts the lines. `run_many` runs the records on 4 threads; each thread
opens its own SQLite connection (WAL mode, busy timeout) the first time a
callback reads ``ctx.resources["db"]``, and closes it when the batch ends.

The coordinator records every run in a `SqliteStore` next to the database, keyed
by ``account/period``. One record holds a credit note (a negative line) that the
lines job rejects, so the first pass reports one failure. The example then
"fixes the code" and runs every record again: the keys that finished are
restored from the store (no callback runs), the failed one resumes at its
failed step. Run the script twice on the same file and everything is restored.

Run it with ``python examples/statements.py [DB_PATH]`` (default: a new
temporary directory).
"""

import sqlite3
import sys
import tempfile
from collections.abc import Generator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from choreograph import Context, Coordinator, JobFailed, RunResult, Skip, SqliteStore, Step


class Rules:
    """The business rules the lines job applies; `main` "fixes" them between passes."""

    accept_credit_notes = False


@dataclass(frozen=True)
class Statement:
    """One input record: an account's statement for a period."""

    account: str
    period: str
    lines: tuple[int, ...]  # amounts, in cents


def statement_key(record: Statement) -> str:
    return f"{record.account}/{record.period}"


SCHEMA = """
CREATE TABLE IF NOT EXISTS statements (id INTEGER PRIMARY KEY, account TEXT, period TEXT, UNIQUE(account, period));
CREATE TABLE IF NOT EXISTS statement_lines (statement_id, line_no, amount, UNIQUE(statement_id, line_no));
-- Imported earlier by another system: the precheck skips its job.
INSERT OR IGNORE INTO statements (account, period) VALUES ('ACME', '2024-01');
"""


def make_records() -> list[Statement]:
    records: list[Statement] = []
    for a, account in enumerate(("ACME", "GLOBEX", "INITECH", "UMBRELLA")):
        for p, period in enumerate(("2024-01", "2024-02", "2024-03", "2024-04", "2024-05")):
            lines = tuple(1000 * (a + 1) + 250 * n + p for n in range(1 + (a + p) % 3))
            if (account, period) == ("INITECH", "2024-03"):
                lines = (*lines, -1500)  # a credit note: the bad record
            records.append(Statement(account, period, lines))
    return records


@contextmanager
def connect(path: str) -> Generator[sqlite3.Connection, None, None]:
    """A worker's connection to the business database (a resource): its write transactions wait up to 30 s."""
    # Another thread may close it (`Coordinator.close` closes the resources of every thread).
    conn = sqlite3.connect(path, timeout=30, isolation_level="IMMEDIATE", check_same_thread=False)
    try:
        yield conn
    finally:
        conn.close()


def db(ctx: Context[Statement]) -> sqlite3.Connection:
    conn = ctx.resources["db"]  # this worker's: made at its first use, closed when the worker ends
    if not isinstance(conn, sqlite3.Connection):
        raise TypeError("resources['db'] should be a sqlite3 connection")
    return conn


def statement_exists(ctx: Context[Statement], record: Statement) -> None:
    query = "SELECT id FROM statements WHERE account = ? AND period = ?"
    row = db(ctx).execute(query, (record.account, record.period)).fetchone()
    if row is not None:
        raise Skip("statement exists", output=row[0])


def create_statement(ctx: Context[Statement], record: Statement) -> int:
    with db(ctx) as conn:  # commits
        cursor = conn.execute("INSERT INTO statements (account, period) VALUES (?, ?)", (record.account, record.period))
    return int(cursor.lastrowid or 0)


STATEMENT = Step("create statement", create_statement, precheck=statement_exists)


def create_lines(ctx: Context[Statement], record: Statement) -> int:
    # Created by the job (an int, as `create_statement` says), or found by the precheck (its Skip's output).
    created = ctx.data_bag.job(STATEMENT, None)
    statement_id = created if created is not None else ctx.data_bag.precheck(STATEMENT)
    for line_no, amount in enumerate(record.lines, 1):
        if amount < 0 and not Rules.accept_credit_notes:
            raise ValueError(f"line {line_no}: negative amount {amount} (credit notes not supported)")
    rows = [(statement_id, line_no, amount) for line_no, amount in enumerate(record.lines, 1)]
    with db(ctx) as conn:  # idempotent: lines already there are left alone
        return conn.executemany("INSERT OR IGNORE INTO statement_lines VALUES (?, ?, ?)", rows).rowcount


def summarize(title: str, results: list[RunResult[Statement]]) -> None:
    restored = sum(all(call.restored for call in result.trace) for result in results)
    called = sum(not call.restored and call.attempts > 0 for result in results for call in result.trace)
    skips = sum(isinstance(error.error, Skip) for result in results for error in result.errors)
    print(f"{title}: {len(results)} runs, {sum(result.ok for result in results)} ok")
    print(f"  restored from the store, nothing run: {restored} runs; callbacks called now: {called}")
    print(f"  jobs skipped by a precheck (Skip): {skips}")
    for result in results:
        if isinstance(result.fatal, JobFailed):
            error = result.fatal.error
            print(f"  failed: {result.key} at {result.fatal.step!r}: {type(error).__name__}: {error}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:  # the files are kept: run again with the same path to see every key restored
        return demo(args[0])
    with tempfile.TemporaryDirectory(prefix="statements-") as folder:  # removed afterwards
        return demo(str(Path(folder) / "statements.db"))


def demo(path: str) -> int:
    print(f"business database: {path}")
    with closing(sqlite3.connect(path)) as setup:
        setup.execute("PRAGMA journal_mode=WAL")  # readers and the writer don't block each other
        setup.executescript(SCHEMA)
    store = SqliteStore(f"{path}.runs")
    coordinator = Coordinator[Statement](
        [STATEMENT, Step("create statement lines", create_lines)],
        store=store,
        key=statement_key,
        resources={"db": partial(connect, path)},
    )
    records = make_records()

    summarize("pass 1", list(coordinator.run_many(records, workers=4)))
    failed = list(store.runs(status="failed"))  # a snapshot: runs() reads the store again at each use
    for info in failed:
        print(f"  store.runs(status='failed'): {info.key} (step {info.failed_step!r}, {info.error_type})")
    if failed:
        print("fixing the code: credit notes are accepted now; running every record again")
        Rules.accept_credit_notes = True
        results = list(coordinator.run_many(records, workers=4, ordered=True))
        summarize("pass 2", results)
        for result in results:
            if result.key in {info.key for info in failed}:
                for call in result.trace:
                    how = "restored" if call.restored else f"ran now (attempt {call.attempts})"
                    print(f"  {result.key}: {call.step} / {call.phase}: {call.outcome}, {how}")
    else:
        print("  no failed keys: nothing to resume")
    statuses = [info.status for info in store.runs()]
    print(f"store: {statuses.count('ok')} of {len(statuses)} keys ok ({store.path})")
    with closing(sqlite3.connect(path)) as conn:
        (counts,) = conn.execute("SELECT (SELECT count(*) FROM statements), (SELECT count(*) FROM statement_lines)")
    print(f"database: {counts[0]} statements, {counts[1]} lines")
    print("run it with a file to keep, twice, to see every key restored: python examples/statements.py statements.db")
    store.close()
    coordinator.close()  # the workers closed their connections; this closes any other (none here)
    return 0


if __name__ == "__main__":
    sys.exit(main())
