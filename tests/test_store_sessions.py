"""A store's session through the `StoreSession` protocol: events with and without errors, renewals, failures."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from choreograph import JsonCodec, SqliteStore, StoreError
from choreograph.durable.protocol import Begun, Ending, NewEvent
from choreograph.durable.recorder import DurableRecorder
from choreograph.typing import Store


def begun(store: Store, key: str = "k") -> Begun:
    found = store.begin(key, "null", fresh=False)
    assert isinstance(found, Begun)
    assert found.recorder is not None
    return found


def test_record_stores_every_field_of_a_new_event(store: Store):
    """`record(NewEvent)` keeps each field: with an output, without one, and with an error and its traceback."""
    session = begun(store).recorder
    assert session is not None
    ids = [
        session.record(NewEvent("a", "job", "ok", "1", None, None, 1, 0.5)),
        session.record(NewEvent("b", "precheck", "ok", None, None, None, 2, 0.25)),
        session.record(NewEvent("c", "job", "failed", None, '{"e": 1}', "ValueError", 3, 0.125, "Traceback ...")),
    ]
    session.finish(Ending("ok", result=tuple(ids)))
    events = store.events("k")
    assert [event.id for event in events] == ids
    assert [
        (e.step, e.phase, e.outcome, e.output, e.error, e.error_type, e.attempts, e.seconds, e.traceback)
        for e in events
    ] == [
        ("a", "job", "ok", "1", None, None, 1, 0.5, None),
        ("b", "precheck", "ok", None, None, None, 2, 0.25, None),
        ("c", "job", "failed", None, '{"e": 1}', "ValueError", 3, 0.125, "Traceback ..."),
    ]
    assert all(event.at > 0 for event in events)
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.owner, info.error_type) == ("ok", None, None)


def test_an_ok_ending_with_an_error_message_keeps_it(store: Store):
    """Only an ending with nothing but a status and a result takes the short way: the other fields are kept."""
    session = begun(store).recorder
    assert session is not None
    session.finish(Ending("ok", error_message="but noted", result=()))
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.error) == ("ok", "but noted")


@pytest.mark.parametrize("error", [False, True], ids=["ok", "with an error"])
def test_recording_renews_the_lease_once_a_third_of_it_passed(make_store: Callable[..., Store], error: bool):
    """An event recorded after a third of the lease moves its expiry on, whichever way it is recorded."""
    store = make_store(lease=0.3)
    session = begun(store).recorder
    assert session is not None
    if isinstance(store, SqliteStore):
        before = store.connection().execute("SELECT lease_until FROM runs WHERE key = 'k'").fetchone()[0]
    time.sleep(0.12)
    if error:
        session.record(NewEvent("a", "job", "failed", None, "{}", "ValueError", 1, 0.1, "tb"))
    else:
        session.record(NewEvent("a", "job", "ok", "1", None, None, 1, 0.1))
    if isinstance(store, SqliteStore):
        after = store.connection().execute("SELECT lease_until FROM runs WHERE key = 'k'").fetchone()[0]
        assert after > before + 0.1
    session.release()


@pytest.mark.parametrize("error", [False, True], ids=["ok", "with an error"])
def test_recording_into_a_closed_store_is_a_store_error(tmp_path: Path, error: bool):
    """A session whose store was closed raises StoreError naming the callback, for either kind of event."""
    store = SqliteStore(tmp_path / "runs.db")
    session = begun(store).recorder
    assert session is not None
    store.close()
    event = (
        NewEvent("a", "job", "failed", None, "{}", "ValueError", 1, 0.1, "tb")
        if error
        else NewEvent("a", "job", "ok", "1", None, None, 1, 0.1)
    )
    with pytest.raises(StoreError, match="cannot record job of step 'a'"):
        session.record(event)


class OldSession:
    """A session written against the protocol before `set_trace_context` existed."""

    def __init__(self) -> None:
        self.events: list[NewEvent] = []

    def record(self, event: NewEvent) -> int:
        self.events.append(event)
        return len(self.events)

    def rolling_back(self, fatal: str) -> None: ...

    def finish(self, ending: Ending) -> None: ...

    def release(self) -> None: ...


def test_a_session_without_set_trace_context_stores_none_and_gets_new_events():
    """The recorder skips what an older session can't do, and gives it `NewEvent`s (it has no `_record_ok`)."""
    session = OldSession()
    recorder = DurableRecorder(session, JsonCodec(), {}, object(), "k")
    recorder.set_trace_context("00-ignored")
    recorder.record("a", "job", "ok", 42, None, 1, 0.1)
    (event,) = session.events
    assert isinstance(event, NewEvent)
    assert (event.step, event.output, event.error) == ("a", "42", None)
