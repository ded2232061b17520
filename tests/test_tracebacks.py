"""`Event.traceback`: the formatted traceback of every failed callback, bounded, in every store; its SQLite column."""

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from returns.result import Failure, Result, safe

from choreograph import Coordinator, Retry, Skip, SqliteStore, Step, UnstorableOutput
from choreograph.durable.sqlite import SCHEMA_VERSION
from choreograph.typing import Store


class LedgerError(Exception):
    """A user-defined error."""


def explode(message: str = "card declined") -> None:
    raise LedgerError(message)


RAISE_LINE = explode.__code__.co_firstlineno + 1


def charge() -> None:
    explode()


def tracebacks(store: Store, *steps: Step, key: str = "k") -> dict[tuple[str, str], str | None]:
    """Run *steps* once as key *key*; return each event's traceback by (step, phase)."""
    Coordinator(steps, store=store).run(None, key=key)
    return {(e.step, e.phase): e.traceback for e in store.events(key)}


def test_a_raised_error_is_stored_with_the_frames_of_the_callback(store: Store):
    """The traceback starts at the callback (no frame of choreograph's) and ends with the raising line and the error."""
    found = tracebacks(store, Step("fine", lambda: 1), Step("charge", charge))

    assert found[("fine", "job")] is None  # a callback that succeeded has none
    text = found[("charge", "job")]
    assert text is not None
    assert text.startswith("Traceback (most recent call last):\n")
    assert f'{__file__}", line {RAISE_LINE}, in explode\n    raise LedgerError(message)\n' in text
    assert text.index("in charge\n") < text.index("in explode\n")
    assert text.endswith("LedgerError: card declined\n")
    assert "choreograph" not in text.replace(__file__, "")


def test_every_kind_of_failed_callback_has_a_traceback(store: Store):
    """A skipping precheck, a failing compensation and a retried job (its last attempt) have one; a skipped job not."""
    attempts: list[int] = []

    def skip() -> None:
        raise Skip("not today")

    def flaky() -> None:
        attempts.append(1)
        explode(f"attempt {len(attempts)}")

    def undo() -> None:
        raise RuntimeError("cannot undo")

    found = tracebacks(
        store,
        Step("skipped", lambda: 1, skip),
        Step("undone", lambda: 1, compensate=undo),
        Step("flaky", flaky, retry=Retry(attempts=2, initial=0.0, jitter=0.0)),
    )

    skipped = found[("skipped", "precheck")]
    assert skipped is not None
    assert "in skip\n" in skipped
    assert skipped.endswith("Skip: not today\n")
    assert found[("skipped", "job")] is None
    undone = found[("undone", "compensate")]
    assert undone is not None
    assert "in undo\n" in undone
    assert undone.endswith("RuntimeError: cannot undo\n")
    flaky_text = found[("flaky", "job")]
    assert flaky_text is not None
    assert flaky_text.endswith("LedgerError: attempt 2\n")
    assert "attempt 1" not in flaky_text


def test_an_async_callbacks_traceback_has_its_own_frames_only(store: Store):
    """Nothing of the event loop choreograph drives the callback on shows, nor what it handled on the way."""

    async def pay() -> None:
        await asyncio.sleep(0)
        explode()

    text = tracebacks(store, Step("pay", pay))[("pay", "job")]

    assert text is not None
    assert text.startswith("Traceback (most recent call last):\n")
    assert "in pay\n" in text
    assert f"line {RAISE_LINE}, in explode\n" in text
    assert "During handling" not in text
    assert "choreograph" not in text.replace(__file__, "")


def test_a_chained_error_keeps_its_cause(store: Store):
    """The cause comes first with its own frames, as Python prints it."""

    def wrapped() -> None:
        try:
            explode()
        except LedgerError as exc:
            raise KeyError("charge") from exc

    text = tracebacks(store, Step("wrapped", wrapped))[("wrapped", "job")]

    assert text is not None
    cause, _, error = text.partition("The above exception was the direct cause of the following exception:")
    assert "in explode\n" in cause
    assert cause.rstrip().endswith("LedgerError: card declined")
    assert "in wrapped\n" in error
    assert error.endswith("KeyError: 'charge'\n")


def returns_failure() -> Result[int, Exception]:
    return Failure(LedgerError("declined, not raised"))


def returns_a_value() -> Result[int, str]:
    return Failure("declined")


@safe
def safely() -> int:
    explode()
    return 1


class Opaque:
    """A value no JSON codec can store."""


def opaque() -> Opaque:
    return Opaque()


@pytest.mark.parametrize(
    ("job", "first_line", "last_line"),
    [
        (
            returns_failure,
            "The callback returned this error in a Failure without raising it, so there are no frames.",
            "LedgerError: declined, not raised",
        ),
        (
            returns_a_value,
            (
                "The callback returned a Failure of a value that is not an exception (wrapped in CallbackFailure):"
                " nothing was raised, so there are no frames."
            ),
            "CallbackFailure: Failure('declined')",
        ),
        (
            safely,
            "The callback returned this error in a Failure; it was raised and caught here:",
            "LedgerError: card declined",
        ),
        (
            opaque,
            "Choreograph failed the callback (it raised nothing), so there are no frames.",
            f"{UnstorableOutput.__name__}: job of step 'job' returned a",
        ),
    ],
)
def test_an_error_the_callback_did_not_raise_says_so(
    store: Store, job: Callable[[], object], first_line: str, last_line: str
):
    """A returned Failure, a Failure of a non-exception, a caught error returned, and choreograph's own verdict."""
    text = tracebacks(store, Step("job", job))[("job", "job")]

    assert text is not None
    lines = text.splitlines()
    assert lines[0] == first_line
    assert last_line in lines[-1]
    assert ("Traceback (most recent call last):" in text) == (job is safely)
    if job is safely:
        assert f"line {RAISE_LINE}, in explode" in text


def ping(depth: int) -> None:
    if depth == 0:
        explode()
    pong(depth - 1)


def pong(depth: int) -> None:
    ping(depth)


def test_a_long_traceback_keeps_its_head_and_its_innermost_frames_within_16_kib(store: Store):
    """Hundreds of frames: the outermost and the innermost stay, with a marker between; at most 16,384 characters."""

    def deep() -> None:
        ping(300)

    text = tracebacks(store, Step("deep", deep))[("deep", "job")]

    assert text is not None
    assert 12_000 < len(text) <= 16_384
    head, marker, tail = text.partition("[... ")
    assert marker
    assert head.startswith("Traceback (most recent call last):\n")
    assert "in deep\n" in head
    assert tail.split("\n", 1)[0].endswith("characters left out ...]")
    assert f"line {RAISE_LINE}, in explode\n" in tail
    assert tail.endswith("LedgerError: card declined\n")
    assert len(text) > 3 * len(head)  # the tail, nearest the error, gets the most room


def test_a_huge_message_does_not_push_the_frames_out(store: Store):
    """A message of 100,000 characters is cut on its own: the frames and the start of the message stay."""

    def loud() -> None:
        explode("declined: " + "x" * 100_000)

    text = tracebacks(store, Step("loud", loud))[("loud", "job")]

    assert text is not None
    assert len(text) <= 4_096
    assert "in loud\n" in text
    assert f"line {RAISE_LINE}, in explode\n" in text
    assert "LedgerError: declined: xxx" in text
    assert "characters left out ...]" in text


def test_the_traceback_of_an_error_whose_message_cannot_be_rendered_is_still_stored(store: Store):
    """An error whose `__str__` raises is stored with its frames, as Python prints such an error."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError

    def job() -> None:
        raise Unprintable

    text = tracebacks(store, Step("job", job))[("job", "job")]

    assert text is not None
    assert "in job\n" in text
    assert "Unprintable: <exception str() failed>" in text


# -- SQLite: schema version 4 ------------------------------------------------------------------------


def make_version_3(path: Path, *steps: Step, key: str = "k") -> None:
    """A store as choreograph wrote it at schema version 3: one run of *steps*, no traceback column."""
    with SqliteStore(path) as store:
        Coordinator(steps, store=store).run(None, key=key)
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE entity_messages; DROP TABLE entities")  # undo schema version 7
    conn.execute("DROP TABLE messages")  # undo schema version 6
    conn.execute("DROP TABLE queue_servers")
    conn.execute("ALTER TABLE runs DROP COLUMN trace_context")  # undo schema version 5
    conn.execute("ALTER TABLE events DROP COLUMN traceback")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


def test_a_version_3_store_is_migrated_and_its_runs_resume(tmp_path: Path):
    """Opening a v3 store adds the column: old events read with no traceback, the run resumes, new ones have one."""
    path = tmp_path / "v3.db"
    calls: list[str] = []
    failing = [True]

    def first() -> str:
        calls.append("first")
        return "one"

    def second() -> str:
        calls.append("second")
        if failing[0]:
            explode()
        return "two"

    make_version_3(path, Step("first", first), Step("second", second))

    with SqliteStore(path) as store:
        store.verify()
        old = store.events("k")
        assert [(e.step, e.outcome, e.error_type is not None, e.traceback) for e in old] == [
            ("first", "ok", False, None),
            ("second", "failed", True, None),
        ]
        again = Coordinator([Step("first", first), Step("second", second)], store=store).run(None, key="k")
        assert isinstance(again.fatal, Exception)
        newest = store.events("k")[-1]
        assert newest.traceback is not None
        assert f"line {RAISE_LINE}, in explode" in newest.traceback
        failing[0] = False
        fixed: Any = Coordinator([Step("first", first), Step("second", second)], store=store).run(None, key="k")
        assert fixed.ok
        assert fixed.data_bag.job_data == {"first": "one", "second": "two"}
    assert calls == ["first", "second", "second", "second"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert "traceback" in {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    conn.close()
