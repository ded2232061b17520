"""
Durable queues in one process, on every store with queues: enqueue and its dedup rules, the order of claims, delays,
counts, failure and resume, poisoned keys, servers in threads, exclusive servers, stopping.

Process-level behaviour (producers and servers in several processes, SIGKILL, signals) is in
tests/test_queues_processes.py and tests/test_queues_crash.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from choreograph import Context, Coordinator, JobFailed, MemoryStore, PostgresStore, SqliteStore, Step, StoreError
from choreograph.durable.protocol import Message, MessageInfo, QueueStore, admit, may_hold
from choreograph.durable.queues import DOORBELL, Doorbell, check_delay
from choreograph.durable.serve import Served, Verdict, describe_error
from choreograph.durable.serve import serve as serve_queue
from choreograph.events import RunEvent, RunFinished, RunStarted

#: Seconds any wait in these tests gives up after: far longer than anything takes, short of a hang.
PATIENCE = 30.0

QUEUE_STORES = ["sqlite", "memory", "postgres"]

AnyQueueStore = SqliteStore | MemoryStore | PostgresStore


@pytest.fixture(params=QUEUE_STORES)
def make_queue_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., AnyQueueStore]]:
    """
    Open queue stores of one kind, with the options given; close them afterwards.

    Two stores of a test share their tables: SQLite ones a file, PostgreSQL ones a
    schema (fresh for the test); a memory store can only be shared as the same object.
    """
    opened: list[AnyQueueStore] = []
    shared: dict[str, MemoryStore] = {}
    schema: list[str] = []
    make_pg = request.getfixturevalue("make_pg_store") if request.param == "postgres" else None

    def make(**options: Any) -> AnyQueueStore:
        made: AnyQueueStore
        if request.param == "sqlite":
            made = SqliteStore(tmp_path / "queues.db", **options)
        elif make_pg is not None:
            made = make_pg(**options) if not schema else make_pg(schema=schema[0], **options)
            schema.append(made.schema)
        else:
            made = shared.setdefault("store", MemoryStore(**options))
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()


@pytest.fixture
def store(make_queue_store: Callable[..., AnyQueueStore]) -> AnyQueueStore:
    return make_queue_store()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition* until it holds; fail naming *what* after `PATIENCE` seconds."""
    give_up = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


class Recorder:
    """A flow's jobs, counting every call by (key, step) and collecting keys in the order they ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.order: list[str] = []
        self.threads: dict[str, str] = {}

    def step(self, name: str, job: Callable[[Any], Any] | None = None) -> Step[Any]:
        def run(ctx: Context, record: Any) -> Any:
            key = str(ctx.key)
            with self.lock:
                self.calls[key, name] += 1
                if name == "first" or job is None:
                    self.order.append(key)
                self.threads[key] = threading.current_thread().name
            return record if job is None else job(record)

        run.__name__ = name
        return Step(name, run)


def serve_until(
    flow: Coordinator[Any], queue: str, done: Callable[[], bool], **options: Any
) -> tuple[Served, list[BaseException]]:
    """Serve *queue* in a thread until *done()* holds, then stop it; return what it served."""
    stop = threading.Event()
    served: list[Served] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            served.append(flow.serve(queue, stop=stop, **options))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    try:
        wait_for(lambda: done() or bool(errors), f"queue {queue!r} to be served")
    finally:
        stop.set()
        thread.join(PATIENCE)
    assert not thread.is_alive(), "serve() did not return after stop was set"
    if errors:
        raise errors[0]
    return served[0], errors


def counts(store: QueueStore, queue: str = "q") -> dict[str, int]:
    return dict(store.queue_info(queue))


# -- enqueue: what is stored, and dedup ---------------------------------------------------------


def test_enqueue_stores_a_message_once_per_key(store: AnyQueueStore):
    """A second enqueue of a queued key returns False and stores nothing: the first record, priority and time stay."""
    before = time.time()
    assert store.enqueue("imports", {"invoice": 42}, key="INV-42", priority=3) is True
    assert store.enqueue("imports", {"invoice": 43}, key="INV-42", priority=9) is False
    assert store.enqueue("other", {"invoice": 44}, key="INV-42") is False  # one namespace: any queue
    info = store.message_info("INV-42")
    assert isinstance(info, MessageInfo)
    assert (info.key, info.queue, info.status, info.priority, info.deliveries) == ("INV-42", "imports", "queued", 3, 0)
    assert (info.owner, info.lease_until, info.error) == (None, None, None)
    assert before <= info.enqueued == info.due <= time.time()
    assert counts(store, "imports") == {"queued": 1, "running": 0, "done": 0, "failed": 0}
    assert counts(store, "other") == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert store.queues() == ["imports"]
    assert store.message_info("nothing") is None
    [message] = store.claim("imports", "server", limit=5)
    assert store.decode(message.payload) == {"invoice": 42}


def test_an_int_key_is_the_str_key(store: AnyQueueStore):
    """Keys are strings, as for run(key=): 7 and "7" are one key."""
    assert store.enqueue("q", 1, key=7)
    assert not store.enqueue("q", 2, key="7")
    assert store.message_info("7") is not None


def test_a_running_or_done_key_is_not_queued_again(store: AnyQueueStore):
    """While its message is claimed (running), and once it is done, enqueue returns False."""
    store.enqueue("q", 1, key="k")
    [message] = store.claim("q", "server", limit=1)
    assert message.deliveries == 1
    assert not store.enqueue("q", 2, key="k")
    assert counts(store) == {"queued": 0, "running": 1, "done": 0, "failed": 0}
    assert store.settle("k", "server", "done")
    assert not store.enqueue("q", 3, key="k")
    assert counts(store) == {"queued": 0, "running": 0, "done": 1, "failed": 0}


def test_a_failed_key_is_queued_again_with_the_new_record(store: AnyQueueStore):
    """A failed message is queued again (True): the new record, queue and priority; its deliveries are kept."""
    store.enqueue("q", "old", key="k", priority=1)
    store.claim("q", "server", limit=1)
    assert store.settle("k", "server", "failed", "ValueError: no")
    assert store.message_info("k").error == "ValueError: no"  # type: ignore[union-attr]
    assert store.enqueue("retry", "new", key="k", priority=5)
    info = store.message_info("k")
    assert info is not None
    assert (info.queue, info.status, info.priority, info.deliveries, info.error) == ("retry", "queued", 5, 1, None)
    assert counts(store) == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    [message] = store.claim("retry", "server", limit=1)
    assert (store.decode(message.payload), message.deliveries) == ("new", 2)


def test_keys_are_shared_with_durable_runs(store: AnyQueueStore):
    """A key run ok with run(key=) is done (False); a failed one is queued (True) and its run resumes when served."""
    fail = [True]
    calls: list[str] = []

    def second(x: int) -> int:
        calls.append("second")
        if fail[0] and x == 2:
            raise ValueError("not yet")
        return x + 1

    def first(x: int) -> int:
        calls.append("first")
        return x

    flow = Coordinator[int]([Step("first", first), Step("second", second)], store=store)
    assert flow.run(1, key="ok").ok
    assert not flow.run(2, key="failed").ok
    assert store.enqueue("q", 1, key="ok") is False
    assert store.message_info("ok") is None
    assert store.enqueue("q", 2, key="failed") is True
    fail[0] = False
    calls.clear()
    served, _ = serve_until(flow, "q", lambda: counts(store)["done"] == 1)
    assert (served.done, served.failed) == (1, 0)
    assert calls == ["second"]  # "first" was restored from the failed run
    assert store.run_info("failed").status == "ok"  # type: ignore[union-attr]
    assert flow.run(2, key="failed").data_bag.get_job_data("second") == 3
    assert calls == ["second"]  # restored, not run


def test_a_key_run_elsewhere_now_is_not_queued(store: AnyQueueStore):
    """While run(key=) runs a key (a live lease), enqueue returns False; once it failed, True."""
    started, release = threading.Event(), threading.Event()

    def blocking(x: int) -> int:
        started.set()
        release.wait(PATIENCE)
        raise ValueError("failed after all")

    flow = Coordinator[int]([Step("block", blocking)], store=store)
    thread = threading.Thread(target=flow.run, args=(1,), kwargs={"key": "busy"})
    thread.start()
    try:
        assert started.wait(PATIENCE)
        assert store.enqueue("q", 1, key="busy") is False
    finally:
        release.set()
        thread.join(PATIENCE)
    assert store.enqueue("q", 1, key="busy") is True


def test_admit_decides_by_message_then_run():
    """The pure rule every store follows (see QueueStore.enqueue)."""
    assert admit(None, None, run_live=False)
    assert not admit("queued", "failed", run_live=False)
    assert not admit("running", None, run_live=False)
    assert not admit("done", None, run_live=False)
    assert admit("done", "failed", run_live=False)  # its run was run again (fresh) and failed
    assert not admit("failed", "ok", run_live=False)  # resumed by hand since
    assert not admit(None, "running", run_live=True)
    for status in ("running", "failed", "compensating", "rolled_back", "poisoned"):
        assert admit(None, status, run_live=False), status  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"queue": ""}, ValueError, "a queue's name must not be empty"),
        ({"queue": 5}, TypeError, "a queue's name must be a str, got int"),
        ({"key": ""}, ValueError, "a message's key must not be empty"),
        ({"key": True}, TypeError, "a message's key must be a str or an int, got bool"),
        ({"key": None}, TypeError, "a message's key must be a str or an int, got None"),
        ({"delay": -1}, ValueError, "delay must be finite and >= 0 seconds, got -1"),
        ({"delay": math.nan}, ValueError, "delay must be finite and >= 0 seconds, got nan"),
        ({"delay": math.inf}, ValueError, "delay must be finite and >= 0 seconds, got inf"),
        ({"delay": timedelta(seconds=-1)}, ValueError, "delay must be finite and >= 0 seconds"),
        ({"delay": True}, TypeError, "delay must be seconds (an int or a float) or a timedelta, got bool"),
        ({"delay": "5"}, TypeError, "delay must be seconds (an int or a float) or a timedelta, got str"),
        ({"priority": True}, TypeError, "priority must be an int, got bool"),
        ({"priority": 1.5}, TypeError, "priority must be an int, got float"),
        ({"priority": 2**31}, ValueError, "priority must be from -2147483648 to 2147483647, got 2147483648"),
        ({"record": object()}, TypeError, "the message of key 'k' can't be stored: "),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_stored(
    store: AnyQueueStore, options: dict[str, Any], error: type[Exception], text: str
):
    """Each mistake raises naming it; the store is left without a message."""
    arguments: dict[str, Any] = {"queue": "q", "record": 1, "key": "k", **options}
    queue, record = arguments.pop("queue"), arguments.pop("record")
    with pytest.raises(error) as info:
        store.enqueue(queue, record, **arguments)
    assert str(info.value).startswith(text)
    assert store.queues() == []
    assert store.message_info("k") is None


def test_the_edges_of_priority_and_delay_are_accepted(store: AnyQueueStore):
    assert store.enqueue("q", 1, key="low", priority=-(2**31), delay=0)
    assert store.enqueue("q", 1, key="high", priority=2**31 - 1, delay=timedelta(0))
    assert [m.key for m in store.claim("q", "s", limit=5)] == ["high", "low"]
    assert check_delay(1.5) == 1.5


def test_queue_info_checks_the_name(store: AnyQueueStore):
    with pytest.raises(ValueError, match="must not be empty"):
        store.queue_info("")
    with pytest.raises(TypeError, match="must be a str"):
        store.claim(None, "s", limit=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        store.claim("q", "s", limit=0)


# -- claims: order, delay, leases -----------------------------------------------------------------


def test_claims_go_by_priority_then_age(store: AnyQueueStore):
    """Higher priority first; within a priority, the message due first (ties in the order stored)."""
    for key, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 1)]:
        store.enqueue("q", key, key=key, priority=priority)
    first = store.claim("q", "s", limit=3)
    assert [m.key for m in first] == ["b", "d", "f"]
    assert [m.priority for m in first] == [5, 5, 1]
    assert all(m.queue == "q" and m.deliveries == 1 for m in first)
    assert [m.key for m in store.claim("q", "s", limit=10)] == ["a", "c", "e"]
    assert store.claim("q", "s", limit=10) == []


def test_a_delayed_message_is_claimed_once_due_and_counts_as_queued(store: AnyQueueStore):
    """delay= defers a message: counted as queued meanwhile, taken once due (ahead of younger ones of its priority)."""
    before = time.time()
    store.enqueue("q", 1, key="later", delay=timedelta(hours=1))
    store.enqueue("q", 1, key="soon", delay=0.05)
    info = store.message_info("later")
    assert info is not None
    assert info.due >= before + 3600
    assert counts(store)["queued"] == 2
    found: list[Message] = []
    wait_for(lambda: bool(found.extend(store.claim("q", "s", limit=5)) or found), "the message delayed 0.05 s")
    assert [m.key for m in found] == ["soon"]
    store.enqueue("q", 1, key="now")
    assert [m.key for m in store.claim("q", "s", limit=5)] == ["now"]
    assert counts(store) == {"queued": 1, "running": 2, "done": 0, "failed": 0}


def test_a_claim_is_settled_or_given_back_only_by_its_holder(store: AnyQueueStore):
    store.enqueue("q", 1, key="k")
    store.claim("q", "mine", limit=1)
    assert not store.settle("k", "theirs", "done")
    assert not store.give_back("k", "theirs", delay=0)
    assert store.give_back("k", "mine", delay=0)
    assert not store.settle("k", "mine", "done")  # given back: no longer held
    [again] = store.claim("q", "theirs", limit=1)
    assert again.deliveries == 2
    assert store.renew_claims("theirs") == 1
    assert store.renew_claims("mine") == 0


def test_an_expired_claim_counts_as_queued_and_is_recovered(make_queue_store: Callable[..., Any]):
    """A claim not renewed within the lease: counted as queued, queued again by recover() at its place in line."""
    store = make_queue_store(lease=0.2)
    store.enqueue("q", 1, key="first")
    store.enqueue("q", 1, key="second")
    assert [m.key for m in store.claim("q", "elsewhere:1:dead", limit=1)] == ["first"]
    assert store.recover("q") == 0  # another machine's server: only its lease's expiry tells
    wait_for(lambda: counts(store)["queued"] == 2, "the claim to expire")
    assert counts(store)["running"] == 0
    assert store.recover("q") == 1
    assert store.message_info("first").status == "queued"  # type: ignore[union-attr]
    assert [m.key for m in store.claim("q", "s", limit=1)] == ["first"]  # ahead of "second", as before
    assert not store.settle("first", "elsewhere:1:dead", "done")


def test_a_claim_of_a_dead_process_is_recovered_at_once(store: AnyQueueStore):
    """A claimant that is a dead process of this machine: its claims are queued again without waiting for the lease."""
    dead = dead_pid()
    store.enqueue("q", 1, key="k")
    store.claim("q", f"{os.uname().nodename}:{dead}:abcd1234", limit=1)
    assert counts(store)["running"] == 1
    assert store.recover("q") == 1
    assert counts(store)["queued"] == 1


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_exclusive_lease_of_a_queue(make_queue_store: Callable[..., Any]):
    """One holder at a time; renewed by its holder; taken over once expired or when the holder is dead."""
    store = make_queue_store(lease=0.2)
    assert store.hold_queue("q", "elsewhere:1:a") is None
    assert store.hold_queue("q", "elsewhere:1:b") == "elsewhere:1:a"
    assert store.hold_queue("q", "elsewhere:1:a") is None  # renewed
    assert store.hold_queue("other", "elsewhere:1:b") is None  # queues are separate
    wait_for(lambda: store.hold_queue("q", "elsewhere:1:b") is None, "the lease to expire")
    store.leave_queue("q", "elsewhere:1:a")  # not its holder any more: nothing happens
    assert store.hold_queue("q", "elsewhere:1:a") == "elsewhere:1:b"
    store.leave_queue("q", "elsewhere:1:b")
    assert store.hold_queue("q", "elsewhere:1:a") is None
    local_dead = f"{os.uname().nodename}:{dead_pid()}:abcd1234"
    assert store.hold_queue("third", local_dead) is None
    assert store.hold_queue("third", "elsewhere:1:a") is None
    assert may_hold("x", 10.0, owner="y", now=1.0, alive=lambda holder: False)


def test_prune_deletes_the_finished_message_with_its_run(store: AnyQueueStore):
    """Once a done key's run is pruned, the key can be queued again; a queued message is never pruned."""
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store)
    store.enqueue("q", 1, key="done")
    serve_until(flow, "q", lambda: counts(store)["done"] == 1)
    assert flow.run(2, key="queued").ok
    assert not store.enqueue("q", 2, key="queued")  # done by run(key=)
    assert store.prune(status="ok") == 2
    assert store.message_info("done") is None
    assert store.enqueue("q", 1, key="done")
    store.verify()


def test_verify_names_message_rows_that_break_the_rules(tmp_path: Path):
    """A running message without a claim, or an unknown status, is named by verify()."""
    path = tmp_path / "bad.db"
    with SqliteStore(path) as store:
        store.enqueue("q", 1, key="a")
        store.enqueue("q", 1, key="b")
        store.verify()
        conn = store.connection()
        conn.execute("UPDATE messages SET status = 'running' WHERE key = 'a'")
        conn.execute("UPDATE messages SET status = 'lost' WHERE key = 'b'")
        with pytest.raises(StoreError) as info:
            store.verify()
    assert "1 messages have an unknown status (e.g. key 'b')" in info.value.problem
    assert "1 messages are running without a claim, or claimed without running (e.g. key 'a')" in info.value.problem


def test_a_memory_store_verifies_its_messages():
    store = MemoryStore()
    store.enqueue("q", 1, key="a")
    store.verify()
    store.enqueue("q", 1, key="b")
    store._queues.messages["a"].status = "running"  # breaking the rules on purpose
    store._queues.messages["b"].status = "lost"  # type: ignore[assignment]
    with pytest.raises(StoreError) as info:
        store.verify()
    assert "1 messages are running without a claim, or claimed without running (e.g. key 'a')" in info.value.problem
    assert "1 messages have an unknown status (e.g. key 'b')" in info.value.problem


def test_a_closed_store_refuses_queue_calls(make_queue_store: Callable[..., Any]):
    store = make_queue_store()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.enqueue("q", 1, key="k")
    with pytest.raises(StoreError, match="closed"):
        store.claim("q", "s", limit=1)


# -- serve ---------------------------------------------------------------------------------------------------


def test_serve_runs_each_message_as_a_durable_run_keyed_by_its_key(store: AnyQueueStore):
    """The record is the run's input; listeners see the runs; failures are kept on the message; counts come back."""
    events: list[RunEvent] = []

    def double(x: int) -> int:
        if x == 3:
            raise ValueError("three is refused")
        return x * 2

    flow = Coordinator[int]([Step("double", double)], store=store)
    flow.listen(events.append)
    for n in range(6):
        assert store.enqueue("q", n, key=f"k{n}")
    served, _ = serve_until(flow, "q", lambda: counts(store)["done"] + counts(store)["failed"] == 6, workers=3)
    assert (served.queue, served.done, served.failed, served.returned, served.lost) == ("q", 5, 1, 0, 0)
    assert served.seconds > 0
    assert counts(store) == {"queued": 0, "running": 0, "done": 5, "failed": 1}
    failed = store.message_info("k3")
    assert failed is not None
    assert failed.error == "JobFailed: job of step 'double' failed: ValueError: three is refused"
    assert store.run_info("k3").error_type == "ValueError"  # type: ignore[union-attr]
    assert flow.run(4, key="k4").data_bag.get_job_data("double") == 8  # stored by the served run
    started = sorted(e.key for e in events if isinstance(e, RunStarted))  # type: ignore[misc]
    assert started == [f"k{n}" for n in range(6)]
    finished = {e.run_id for e in events if isinstance(e, RunFinished)}
    assert len(finished) == 6


def test_serve_takes_messages_by_priority_then_age(store: AnyQueueStore):
    recorder = Recorder()
    flow = Coordinator[Any]([recorder.step("first")], store=store)
    for key, priority in [("a", 0), ("b", 2), ("c", 0), ("d", 2), ("e", 1)]:
        store.enqueue("q", key, key=key, priority=priority)
    serve_until(flow, "q", lambda: counts(store)["done"] == 5, workers=1)
    assert recorder.order == ["b", "d", "e", "a", "c"]


def test_a_failed_message_queued_again_resumes_its_run(store: AnyQueueStore):
    """The completed steps are restored, only the failed one runs again."""
    recorder = Recorder()
    broken = [True]

    def check(record: int) -> int:
        if broken[0]:
            raise RuntimeError("service down")
        return record

    flow = Coordinator[int]([recorder.step("first"), recorder.step("second", check)], store=store)
    store.enqueue("q", 7, key="k")
    serve_until(flow, "q", lambda: counts(store)["failed"] == 1)
    assert store.message_info("k").error == (  # type: ignore[union-attr]
        "JobFailed: job of step 'second' failed: RuntimeError: service down"
    )
    broken[0] = False
    assert store.enqueue("q", 7, key="k")
    served, _ = serve_until(flow, "q", lambda: counts(store)["done"] == 1)
    assert served.done == 1
    assert recorder.calls == Counter({("k", "first"): 1, ("k", "second"): 2})
    assert store.message_info("k").deliveries == 2  # type: ignore[union-attr]


def test_a_poisoned_key_fails_its_message_without_running(make_queue_store: Callable[..., Any]):
    """A key interrupted more than max_interruptions times is poisoned: its message fails with PoisonedRun."""
    store = make_queue_store(max_interruptions=1)
    recorder = Recorder()
    flow = Coordinator[int]([recorder.step("first")], store=store)
    # Sessions that end without finishing, as a crash leaves them, until the key is poisoned.
    while (session := store.begin("poisoned", "1", fresh=False).recorder) is not None:
        session.release()
    store.enqueue("q", 1, key="poisoned")
    store.enqueue("q", 2, key="healthy")
    served, _ = serve_until(flow, "q", lambda: counts(store)["done"] + counts(store)["failed"] == 2)
    assert (served.done, served.failed) == (1, 1)
    assert store.message_info("poisoned").error == (  # type: ignore[union-attr]
        "PoisonedRun: key 'poisoned' was interrupted 2 times: marked as poisoned, not run again"
    )
    assert recorder.calls == Counter({("healthy", "first"): 1})
    assert flow.run(1, key="poisoned", fresh=True).ok  # the way out, once the cause is fixed
    assert not store.enqueue("q", 1, key="poisoned")  # done now


def test_an_undecodable_record_fails_its_message_without_running(tmp_path: Path):
    """A record whose class can't be rebuilt: the message fails with the codec's error, nothing runs."""
    store = SqliteStore(tmp_path / "s.db")
    flow = Coordinator[Any]([Step("a", lambda x: x)], store=store)
    store.enqueue("q", 1, key="k")
    store.connection().execute(
        """UPDATE messages SET payload = '{"$dataclass": "nowhere.module:Gone", "fields": {}}' WHERE key = 'k'"""
    )
    served, _ = serve_until(flow, "q", lambda: counts(store)["failed"] == 1)
    assert served.failed == 1
    error = store.message_info("k").error  # type: ignore[union-attr]
    assert error is not None
    assert error.startswith("CodecError: ")
    assert "nowhere.module" in error
    assert store.run_info("k") is None
    store.close()


def test_servers_in_threads_run_every_message_once(make_queue_store: Callable[..., Any]):
    """Three servers (SQLite: on three store objects of one file) share a queue: each key runs once, none is lost."""
    stores = [make_queue_store() for _ in range(3)]
    recorder = Recorder()
    flows = [Coordinator[int]([recorder.step("first"), recorder.step("second")], store=s) for s in stores]
    keys = [f"k{n}" for n in range(150)]
    for n, key in enumerate(keys):
        stores[n % 3].enqueue("q", n, key=key, priority=n % 4)
    stop = threading.Event()
    results: list[Served] = []
    threads = [threading.Thread(target=lambda f=f: results.append(f.serve("q", workers=3, stop=stop))) for f in flows]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: counts(stores[0])["done"] == len(keys), "every message done")
    finally:
        stop.set()
        for thread in threads:
            thread.join(PATIENCE)
    assert recorder.calls == Counter({(key, step): 1 for key in keys for step in ("first", "second")})
    assert sum(r.done for r in results) == len(keys)
    assert sum(r.returned + r.lost + r.failed for r in results) == 0
    assert all(stores[0].run_info(key).status == "ok" for key in keys)  # type: ignore[union-attr]


def test_messages_enqueued_while_serving_are_taken(store: AnyQueueStore):
    """A server waiting on an empty queue takes what producers (threads here) store, until stopped."""
    recorder = Recorder()
    flow = Coordinator[int]([recorder.step("first")], store=store)

    def produce(first: int) -> None:
        for n in range(first, first + 40):
            store.enqueue("q", n, key=f"k{n}")
            time.sleep(0.001)

    producers = [threading.Thread(target=produce, args=(n * 40,)) for n in range(3)]
    stop = threading.Event()
    served: list[Served] = []
    server = threading.Thread(target=lambda: served.append(flow.serve("q", workers=2, stop=stop)))
    server.start()
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    wait_for(lambda: counts(store)["done"] == 120, "every message done")
    stop.set()
    server.join(PATIENCE)
    assert served[0].done == 120
    assert set(recorder.calls) == {(f"k{n}", "first") for n in range(120)}
    assert set(recorder.calls.values()) == {1}


def test_a_key_busy_elsewhere_is_given_back_then_done(make_queue_store: Callable[..., Any]):
    """A message whose key another holder runs past the wait: given back (not failed), then done once that run ended."""
    store = make_queue_store(lease=0.3)
    started, release = threading.Event(), threading.Event()

    def slow(x: int) -> int:
        started.set()
        release.wait(PATIENCE)
        return x

    flow = Coordinator[int]([Step("slow", slow)], store=store)
    store.enqueue("q", 1, key="k")
    direct = threading.Thread(target=flow.run, args=(1,), kwargs={"key": "k"})  # run(key=) races the queue
    direct.start()
    assert started.wait(PATIENCE)
    stop = threading.Event()
    served: list[Served] = []
    server = threading.Thread(target=lambda: served.append(flow.serve("q", stop=stop)))
    server.start()
    try:  # the server waits for the key (lease + 1 s), gives the message back, takes it again
        wait_for(lambda: store.message_info("k").deliveries >= 2, "the message given back and taken again")
    finally:
        release.set()
        direct.join(PATIENCE)
    wait_for(lambda: counts(store)["done"] == 1, "the message done")
    stop.set()
    server.join(PATIENCE)
    assert served[0].done == 1
    assert served[0].returned >= 1
    assert store.run_info("k").sessions == 1  # type: ignore[union-attr]  # the served runs ran nothing


def test_a_handler_that_raises_gives_the_message_back(store: AnyQueueStore, log_records: list[Any]):
    """The serve loop with a handler of its own (as entities use it): an exception gives back and is logged."""
    seen: list[int] = []

    def handle(message: Message) -> Verdict:
        seen.append(message.deliveries)
        if message.deliveries == 1:
            raise RuntimeError("flaky")
        return Verdict("done")

    store.enqueue("q", 1, key="k")
    stop = threading.Event()
    result: list[Served] = []
    thread = threading.Thread(
        target=lambda: result.append(serve_queue(store, "q", handle, workers=1, stop=stop, exclusive=False))
    )
    thread.start()
    wait_for(lambda: counts(store)["done"] == 1, "the message done")  # given back for 1 s, then taken again
    stop.set()
    thread.join(PATIENCE)
    assert seen == [1, 2]
    assert (result[0].done, result[0].returned) == (1, 1)
    warnings = [r for r in log_records if r["level"].name == "WARNING"]
    assert "handling key k raised RuntimeError('flaky'); given back" in warnings[0]["message"]


def take_over(store: AnyQueueStore, key: str) -> None:
    """What another server does to a claim this one let expire: recover it and claim it."""
    if isinstance(store, SqliteStore):
        store.connection().execute("UPDATE messages SET owner = 'elsewhere:1:other' WHERE key = ?", (key,))
    elif isinstance(store, PostgresStore):
        with store.connection() as conn:
            conn.execute(
                store._sql.format("UPDATE {s}.messages SET owner = 'elsewhere:1:other' WHERE key = %s"), (key,)
            )
    else:
        store._queues.messages[key].owner = "elsewhere:1:other"


def test_a_message_taken_over_by_another_server_is_counted_lost(store: AnyQueueStore):
    """A server that can't settle (another server took the message over meanwhile) counts it as lost."""

    def handle(message: Message) -> Verdict:
        take_over(store, message.key)
        return Verdict("done")

    store.enqueue("q", 1, key="k")
    store.enqueue("q", 2, key="again")
    stop = threading.Event()
    result: list[Served] = []
    handlers = iter([handle, lambda message: (take_over(store, message.key), Verdict("again"))[1]])
    thread = threading.Thread(
        target=lambda: result.append(serve_queue(store, "q", next(handlers), workers=1, stop=stop, exclusive=False))
    )
    thread.start()
    wait_for(lambda: store.message_info("again").owner == "elsewhere:1:other", "both messages handled")
    stop.set()
    thread.join(PATIENCE)
    assert (result[0].lost, result[0].done, result[0].returned) == (2, 0, 0)
    assert store.message_info("k").owner == "elsewhere:1:other"  # type: ignore[union-attr]  # its to settle


def test_a_message_whose_settling_raised_is_settled_at_the_next_beat(
    make_queue_store: Callable[..., Any], log_records: list[Any]
):
    """The store refused to settle once: the server keeps the claim, tries again at its next beat, and counts it."""
    store = make_queue_store(lease=0.3)
    original, failures = store.settle, [StoreError(store.location, "disk full")]

    def settle(*args: Any, **options: Any) -> bool:
        if failures:
            raise failures.pop()
        return original(*args, **options)

    store.settle = settle
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store)
    store.enqueue("q", 1, key="k")
    served, _ = serve_until(flow, "q", lambda: counts(store)["done"] == 1)
    assert (served.done, served.lost) == (1, 0)
    assert store.message_info("k").deliveries == 1  # type: ignore[union-attr]
    warnings = [r["message"] for r in log_records if r["level"].name == "WARNING"]
    assert any("settling key k raised StoreError" in text and "tried again later" in text for text in warnings)


def test_a_message_that_could_never_be_settled_is_counted_lost(make_queue_store: Callable[..., Any]):
    """A store that refuses every settling: once stopped, the server counts the message lost; its claim expires."""
    store = make_queue_store(lease=0.3)

    def settle(*args: Any, **options: Any) -> bool:
        raise StoreError(store.location, "disk full")

    store.settle = settle
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store)
    store.enqueue("q", 1, key="k")
    served, _ = serve_until(flow, "q", lambda: getattr(store.run_info("k"), "status", None) == "ok")
    assert (served.done, served.lost) == (0, 1)
    wait_for(lambda: counts(store)["queued"] == 1, "the claim to expire")  # for the next server to settle


def test_serve_refuses_what_it_cannot_serve(store: AnyQueueStore):
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store)
    with pytest.raises(TypeError, match=r"serve\(\) needs a durable coordinator: create it with store="):
        Coordinator[int]([Step("a", lambda x: x)]).serve("q")
    with pytest.raises(ValueError, match="a queue's name must not be empty"):
        flow.serve("")
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        flow.serve("q", workers=0)
    with pytest.raises(TypeError, match="workers must be an int, got bool"):
        flow.serve("q", workers=True)
    with pytest.raises(TypeError, match=r"stop must be a threading\.Event or None, got bool"):
        flow.serve("q", stop=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exclusive must be a bool, got int"):
        flow.serve("q", exclusive=1)  # type: ignore[arg-type]


#: The members of the `Store` protocol (a store without queues has these only).
STORE_MEMBERS = [
    "codec",
    "lease",
    "owner",
    "location",
    "begin",
    "stored_input",
    "run_info",
    "runs",
    "counts",
    "verify",
    "events",
    "decode",
    "decode_error",
    "prune",
    "close",
]


def test_serve_needs_a_store_with_queues():
    """A third-party store without the queue methods: a clear TypeError naming its class."""
    members = {name: property(lambda self, n=name: getattr(self.inner, n)) for name in STORE_MEMBERS}
    runs_only = type("RunsOnly", (), members)()
    runs_only.inner = MemoryStore()
    flow = Coordinator[int]([Step("a", lambda x: x)], store=runs_only)
    with pytest.raises(
        TypeError,
        match=r"serve\(\) needs a store with queues \(SqliteStore, PostgresStore, MemoryStore\), got .*RunsOnly",
    ):
        flow.serve("q")


def test_serve_with_stop_already_set_returns_at_once(store: AnyQueueStore):
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store)
    store.enqueue("q", 1, key="k")
    stop = threading.Event()
    stop.set()
    served = flow.serve("q", stop=stop)
    assert dataclasses.asdict(served) | {"seconds": 0} == {
        "queue": "q",
        "done": 0,
        "failed": 0,
        "returned": 0,
        "lost": 0,
        "seconds": 0,
    }
    assert counts(store)["queued"] == 1


def test_stopping_lets_the_runs_in_flight_finish(make_queue_store: Callable[..., Any]):
    """Once stop is set nothing new is taken; the runs going on finish and are settled, their claims renewed."""
    store = make_queue_store(lease=0.3)
    started, release = threading.Event(), threading.Event()

    def slow(x: int) -> int:
        started.set()
        release.wait(PATIENCE)
        return x

    flow = Coordinator[int]([Step("slow", slow)], store=store)
    store.enqueue("q", 1, key="first", priority=1)
    store.enqueue("q", 2, key="second")
    stop = threading.Event()
    served: list[Served] = []
    thread = threading.Thread(target=lambda: served.append(flow.serve("q", stop=stop, workers=1)))
    thread.start()
    assert started.wait(PATIENCE)
    stop.set()
    time.sleep(0.6)  # serve() sees stop, and waits for the run in flight: longer than the claim's lease
    assert thread.is_alive()
    assert counts(store)["running"] == 1  # the claim was renewed
    release.set()
    thread.join(PATIENCE)
    assert (served[0].done, served[0].lost) == (1, 0)
    assert store.message_info("first").status == "done"  # type: ignore[union-attr]
    assert store.message_info("second").status == "queued"  # type: ignore[union-attr]


def test_sigint_in_the_main_thread_stops_serving_and_the_handlers_come_back(store: AnyQueueStore):
    """serve() in the main thread: SIGINT stops it as stop= would; the handlers it replaced are restored."""
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store)
    store.enqueue("q", 1, key="k")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def interrupt_once_done() -> None:
        try:
            wait_for(lambda: counts(store)["done"] == 1, "the message done")
        finally:  # even when that fails: serve() must end for the test to
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_done).start()
    served = flow.serve("q")  # no stop: only the signal ends it
    assert counts(store)["done"] == 1
    assert served.done == 1
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_exclusive_servers_in_one_process_take_turns(make_queue_store: Callable[..., Any]):
    """A second exclusive server waits on standby while the first serves, and takes over once it stops."""
    store = make_queue_store(lease=0.6)
    served_by: dict[str, str] = {}
    lock = threading.Lock()

    def flow_of(name: str) -> Coordinator[int]:
        def job(ctx: Context, x: int) -> int:
            with lock:
                served_by[str(ctx.key)] = name
            return x

        return Coordinator[int]([Step("job", job)], store=store)

    stops = {"a": threading.Event(), "b": threading.Event()}
    results: dict[str, Served] = {}

    def run(name: str) -> None:
        results[name] = flow_of(name).serve("q", exclusive=True, stop=stops[name], workers=2)

    a = threading.Thread(target=run, args=("a",))
    a.start()
    store.enqueue("q", 0, key="k0")
    wait_for(lambda: "k0" in served_by, "a to serve")
    b = threading.Thread(target=run, args=("b",))
    b.start()
    time.sleep(0.3)  # b looks, and goes on standby
    for n in range(1, 6):
        store.enqueue("q", n, key=f"k{n}")
    wait_for(lambda: counts(store)["done"] == 6, "a to serve the rest")
    stops["a"].set()
    a.join(PATIENCE)
    for n in range(6, 10):
        store.enqueue("q", n, key=f"k{n}")
    wait_for(lambda: counts(store)["done"] == 10, "b to take over")
    stops["b"].set()
    b.join(PATIENCE)
    assert {key for key, name in served_by.items() if name == "a"} == {f"k{n}" for n in range(6)}
    assert {key for key, name in served_by.items() if name == "b"} == {f"k{n}" for n in range(6, 10)}
    assert (results["a"].done, results["b"].done) == (6, 4)


def test_an_exclusive_server_takes_over_once_the_holders_lease_expires(make_queue_store: Callable[..., Any]):
    """The queue's lease held by a server of another machine that stopped renewing: taken over after its expiry."""
    store = make_queue_store(lease=0.5)
    began = time.time()
    assert store.hold_queue("q", "elsewhere:1:gone") is None
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store)
    store.enqueue("q", 1, key="k")
    served, _ = serve_until(flow, "q", lambda: counts(store)["done"] == 1, exclusive=True)
    assert served.done == 1
    assert store.run_info("k").created >= began + 0.5  # type: ignore[union-attr]  # not before the lease ran out
    assert store.hold_queue("q", "elsewhere:1:other") is None  # left when it stopped


def test_the_doorbell_wakes_servers_of_its_store_and_queue_only():
    bell = Doorbell()
    store, other = MemoryStore(), MemoryStore()
    event = threading.Event()
    bell.ring(store, "q")  # nobody listens: nothing happens
    bell.listen(store, "q", event)
    bell.ring(other, "q")
    bell.ring(store, "elsewhere")
    assert not event.is_set()
    bell.ring(store, "q")
    assert event.is_set()
    bell.forget(store, "q", event)
    bell.forget(store, "q", event)  # twice: nothing happens
    event.clear()
    bell.ring(store, "q")
    assert not event.is_set()
    assert DOORBELL is not bell


def test_describe_error_shortens_long_messages():
    text = describe_error(JobFailed("step", ValueError("x" * 5000)))
    assert len(text) == 1000
    assert text.startswith("JobFailed: ")
    assert text.endswith("...")
