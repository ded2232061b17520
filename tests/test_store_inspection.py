"""Reading a store: `runs()` as a lazy sequence, `counts()`, `decode()`, `decode_error()`, `verify()`; every store."""

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from choreograph import (
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    MemoryStore,
    PickleCodec,
    RunInfo,
    Step,
    StoredError,
    StoreError,
)
from choreograph.typing import Store


class LedgerError(Exception):
    """A user-defined error class: the JSON codec can't rebuild it."""


def fail_with(error: Exception) -> Callable[[], None]:
    def job() -> None:
        raise error

    return job


def fill(store: Store, keys: int) -> None:
    """Run *keys* keys, "0" to str(keys - 1): a third fail at step "pay" with KeyError, the others end ok."""

    def pay(item: int) -> int:
        if item % 3 == 0:
            raise KeyError(item)
        return item

    flow = Coordinator([Step("pay", pay)], store=store, key=str)
    for result in flow.run_many(range(keys), workers=4):
        assert result.ok == (int(result.key or 0) % 3 != 0)


def mixed(store: Store) -> None:
    """Keys of every kind of ending the filters tell apart."""
    Coordinator([Step("a", lambda: 1)], store=store).run(None, key="ok-1")
    Coordinator([Step("a", lambda: 1)], store=store).run(None, key="ok-2")
    Coordinator([Step("Pay", fail_with(LedgerError("full")))], store=store).run(None, key="ledger")
    Coordinator([Step("pay", fail_with(KeyError("x")))], store=store).run(None, key="keyerror")
    Coordinator([Step("ship", lambda: 1, fail_with(ExecutionCanceled("stop")))], store=store).run(None, key="canceled")
    undone = [Step("done", lambda: 1, compensate=lambda: None), Step("undo", fail_with(ValueError("v")))]
    Coordinator(undone, store=store).run(None, key="rolled")


# -- counts -------------------------------------------------------------------------------


def test_counts_gives_every_status_with_zeros_in_a_fixed_order(store: Store):
    """`counts()` maps each of the six statuses, in their documented order, to its number of runs, 0 included."""
    assert dict(store.counts()) == dict.fromkeys(
        ["running", "ok", "failed", "compensating", "rolled_back", "poisoned"], 0
    )

    mixed(store)

    counted = store.counts()
    assert list(counted) == ["running", "ok", "failed", "compensating", "rolled_back", "poisoned"]
    assert dict(counted) == {
        "running": 0,
        "ok": 2,
        "failed": 3,
        "compensating": 0,
        "rolled_back": 1,
        "poisoned": 0,
    }


def test_counts_takes_the_filters_of_runs(store: Store):
    """`counts(status=, step=, error_type=)` counts exactly the runs `runs()` lists with the same filters."""
    mixed(store)
    filters: list[dict[str, Any]] = [
        {},
        {"status": "failed"},
        {"status": "ok"},
        {"step": "PAY"},
        {"step": "pay", "error_type": "KeyError"},
        {"error_type": "LedgerError"},
        {"error_type": f"{LedgerError.__module__}.LedgerError"},
        {"error_type": "ExecutionCanceled"},
        {"status": "rolled_back", "error_type": "ValueError"},
        {"error_type": "Error"},
    ]
    for chosen in filters:
        listed = [info.status for info in store.runs(**chosen)]
        counted = store.counts(**chosen)
        assert {status: n for status, n in counted.items() if n} == {s: listed.count(s) for s in set(listed)}, chosen
    assert store.counts(step="pay")["failed"] == 2
    assert store.counts(status="ok") == {**dict.fromkeys(store.counts(), 0), "ok": 2}


def test_counts_counts_a_running_key(store: Store):
    """A key whose run is going on is counted as "running" while it runs."""
    seen: list[dict[str, int]] = []
    Coordinator([Step("look", lambda: seen.append(dict(store.counts())))], store=store).run(None, key="k")

    assert seen[0]["running"] == 1
    assert store.counts()["running"] == 0
    assert store.counts()["ok"] == 1


# -- runs: a lazy sequence ----------------------------------------------------------------


def test_runs_iterates_every_run_across_pages_newest_first(store: Store):
    """More runs than one page holds: iteration gives each exactly once, in `updated` order, then by key."""
    fill(store, 2_345)

    infos = list(store.runs())

    assert len(infos) == 2_345
    assert {info.key for info in infos} == {str(i) for i in range(2_345)}
    assert [(info.updated, info.key) for info in infos] == sorted(
        ((info.updated, info.key) for info in infos), key=lambda pair: (-pair[0], pair[1])
    )
    assert [info.key for info in store.runs(status="failed")] == [i.key for i in infos if i.status == "failed"]
    assert len(list(store.runs(status="failed"))) == 782
    assert [info.key for info in store.runs(limit=1_500)] == [info.key for info in infos[:1_500]]
    assert [info.key for info in store.runs(status="ok", limit=1_001)] == [i.key for i in infos if i.status == "ok"][
        :1_001
    ]


def test_runs_behaves_as_a_read_only_sequence(store: Store):
    """`len`, truth, indexing (negative too), slicing, `in`, `index`, `reversed` and `==` work as on a list."""
    mixed(store)
    snapshot = list(store.runs())
    runs = store.runs()

    assert len(runs) == len(snapshot) == 6
    assert bool(runs)
    assert not store.runs(status="poisoned")
    assert runs == snapshot
    assert snapshot == runs
    assert runs != snapshot[:-1]
    assert runs != [*snapshot, snapshot[0]]
    assert runs != "not a sequence of runs"
    assert store.runs(status="poisoned") == []
    assert runs[0] == snapshot[0]
    assert runs[5] == runs[-1] == snapshot[-1]
    assert runs[-6] == snapshot[0]
    assert runs[1:3] == snapshot[1:3]
    assert runs[::2] == snapshot[::2]
    assert runs[::-1] == snapshot[::-1]
    assert runs[4:1:-1] == snapshot[4:1:-1]
    assert runs[10:] == []
    assert list(reversed(runs)) == snapshot[::-1]
    assert snapshot[2] in runs
    assert runs.index(snapshot[3]) == 3
    assert runs.index(snapshot[3], -3) == 3
    assert runs.count(snapshot[1]) == 1
    for position in (6, -7):
        with pytest.raises(IndexError):
            runs[position]
    with pytest.raises(ValueError, match="not in the runs"):
        runs.index(snapshot[0], 1)
    with pytest.raises(TypeError):
        hash(runs)
    assert all(isinstance(info, RunInfo) for info in runs)


def test_runs_applies_its_limit_to_every_use(store: Store):
    """With `limit=`, length, iteration, indexing and slicing all stop at the limit."""
    mixed(store)
    everything = list(store.runs())

    limited = store.runs(limit=2)

    assert len(limited) == 2
    assert list(limited) == everything[:2]
    assert limited[-1] == everything[1]
    assert limited[1:10] == everything[1:2]
    with pytest.raises(IndexError):
        limited[2]
    assert len(store.runs(limit=0)) == 0
    assert not store.runs(limit=0)
    assert list(store.runs(limit=0)) == []
    assert store.runs(limit=0)[0:3] == []


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_runs_refuses_a_bad_limit(store: Store, limit: Any):
    """A `limit` that is negative or not an int raises ValueError at the call."""
    with pytest.raises(ValueError, match="limit must be an int >= 0"):
        store.runs(limit=limit)


def test_runs_reads_the_store_again_at_each_use(store: Store):
    """The result is a view: runs finished after the call show up when it is used; `list()` takes a snapshot."""
    flow = Coordinator([Step("a", lambda item: item)], store=store, key=str)
    flow.run(1)
    view, snapshot = store.runs(), list(store.runs())

    flow.run(2)

    assert [info.key for info in view] == ["2", "1"]
    assert len(view) == 2
    assert [info.key for info in snapshot] == ["1"]
    assert "runs of" in repr(store.runs(status="ok", limit=3))
    assert "status='ok'" in repr(store.runs(status="ok", limit=3))


def test_a_run_updated_during_iteration_is_never_listed_twice(store: Store):
    """Keys run again while a loop over `runs()` goes on move ahead of it: none comes twice, only they may be missed."""
    fill(store, 1_200)
    flow = Coordinator([Step("again", lambda item: item)], store=store, key=str)
    moved: set[str] = set()

    seen = []
    for info in store.runs():
        seen.append(info.key)
        unseen = set(map(str, range(1_200))) - set(seen) - moved
        if len(seen) % 100 == 0 and unseen:
            key = min(unseen, key=int)  # from the end of the list
            flow.run(int(key), fresh=True)  # now the most recently updated: ahead of the loop
            moved.add(key)

    assert len(seen) == len(set(seen))
    assert set(map(str, range(1_200))) - set(seen) <= moved


def test_a_closed_store_refuses_runs_counts_and_verify(store: Store):
    """After `close()`, `runs()`, `counts()` and `verify()` raise StoreError at the call."""
    store.close()
    for call in (store.runs, store.counts, store.verify):
        with pytest.raises(StoreError, match="closed"):
            call()


# -- decode and decode_error ----------------------------------------------------------------


def test_decode_error_gives_back_the_exception_and_decode_does_not(store: Store):
    """`decode_error(event.error)` rebuilds a builtin error as itself and a user error as StoredError."""
    Coordinator([Step("pay", fail_with(KeyError("card")))], store=store).run(None, key="builtin")
    Coordinator([Step("pay", fail_with(LedgerError("full")))], store=store).run(None, key="user")
    (builtin,) = store.events("builtin")
    (user,) = store.events("user")
    assert builtin.error is not None
    assert user.error is not None

    error = store.decode_error(builtin.error)
    assert type(error) is KeyError
    assert error.args == ("card",)
    stored = store.decode_error(user.error)
    assert isinstance(stored, StoredError)
    assert (stored.type_name, stored.message) == (f"{LedgerError.__module__}.LedgerError", "full")
    assert isinstance(store.decode_error("{not json"), StoredError)  # never raises

    raw = store.decode(builtin.error)  # the JSON codec's error record, not the exception: what the docs say
    assert not isinstance(raw, BaseException)
    assert isinstance(raw, dict)
    assert (raw["type"], raw["message"]) == ("builtins:KeyError", "'card'")


def test_decode_error_with_the_pickle_codec_gives_the_original_exception(make_store: Callable[..., Store]):
    """With PickleCodec, `decode_error` unpickles the error itself, and `decode` can't read an error record."""
    store = make_store(codec=PickleCodec())
    result = Coordinator([Step("pay", fail_with(LedgerError("full")))], store=store).run(None, key="k")
    assert isinstance(result.fatal, JobFailed)
    (event,) = store.events("k")
    assert event.error is not None

    error = store.decode_error(event.error)

    assert type(error) is LedgerError
    assert error.args == ("full",)


# -- verify --------------------------------------------------------------------------------


def test_verify_returns_none_for_a_sound_store(store: Store):
    """A store with runs of every ending, one going on, and pruned keys passes `verify()`."""
    store.verify()
    mixed(store)
    fill(store, 30)
    store.prune(keys=["0", "1"])
    checked: list[None] = []
    Coordinator([Step("during", lambda: checked.append(store.verify()))], store=store).run(None, key="live")

    assert store.verify() is None
    assert checked == [None]


def test_memory_store_numbers_events_in_order_after_a_prune():
    """After `prune()`, new events get new, increasing ids (none reused), and the store still verifies."""
    store = MemoryStore()
    flow = Coordinator([Step("a", lambda item: item), Step("b", lambda item: item)], store=store, key=str)
    flow.run(1)
    flow.run(2)
    before = [event.id for event in store.events("2")]

    store.prune(keys=["1"])
    flow.run(3)

    after = [event.id for event in store.events("3")]
    assert min(after) > max(before)
    assert len(set(before + after)) == 4
    store.verify()
    again = flow.run(3)
    assert [call.restored for call in again.trace] == [True, True]


def test_memory_store_verify_names_every_broken_invariant():
    """`MemoryStore.verify()` raises StoreError naming each broken rule, with how many rows and an example key."""
    store = MemoryStore()
    flow = Coordinator([Step("a", lambda item: item)], store=store, key=str)
    for item in range(3):
        flow.run(item)
    # Break the store's rows the way a bug in a store would: through its internals.
    runs, events = store._runs, store._events  # there is no public way to damage a store
    del runs["0"]
    runs["1"].row = dataclasses.replace(runs["1"].row, status="lost", owner="someone")  # type: ignore[arg-type]
    events.append(events[-1])

    with pytest.raises(StoreError) as info:
        store.verify()

    problem = info.value.problem
    assert "1 events have no run (e.g. key '0')" in problem
    assert "1 runs have an unknown status (e.g. key '1')" in problem
    assert "a lease holder without a lease expiry" in problem
    assert "not numbered in increasing order (e.g. key '2')" in problem


def test_memory_store_verify_names_events_of_a_generation_their_run_never_had():
    """An event claiming a later generation than its run's is named by `verify()`."""
    store = MemoryStore()
    Coordinator([Step("a", lambda: 1)], store=store).run(None, key="k")
    events = store._events  # there is no public way to damage a store
    events[0] = dataclasses.replace(events[0], generation=2)

    with pytest.raises(StoreError, match=r"1 events belong to a generation or session their run never had"):
        store.verify()
