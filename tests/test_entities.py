"""
Durable entities (`Entities`): messages to one id in order, ids side by side, state and acknowledgement in one commit.

Every test runs on SqliteStore and MemoryStore (the `make` fixture here, not conftest's `STORES`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from choreograph import (
    Context,
    Coordinator,
    Entities,
    EntityContext,
    MemoryStore,
    Retry,
    SqliteStore,
    Step,
    StepDefinitionError,
    StoreError,
)
from choreograph.durable.protocol import EntityCommit, EntityStore
from choreograph.typing import Store


@dataclasses.dataclass
class Balance:
    cents: int
    log: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Deposit:
    cents: int


@dataclasses.dataclass
class Withdraw:
    cents: int


@dataclasses.dataclass
class BigDeposit(Deposit):
    pass


@dataclasses.dataclass
class Bad:
    cents: int


Make = Callable[..., Any]


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Open stores of one kind (a new SQLite file each, a MemoryStore, a PostgresStore in a fresh schema each)."""
    opened: list[SqliteStore | MemoryStore] = []
    make_pg = request.getfixturevalue("make_pg_store") if request.param == "postgres" else None

    def open_store(**options: Any) -> Store:
        if make_pg is not None:
            return make_pg(**options)  # type: ignore[no-any-return]
        made = (
            SqliteStore(tmp_path / f"entities{len(opened)}.db", **options)
            if request.param == "sqlite"
            else MemoryStore(**options)
        )
        opened.append(made)
        return made

    yield open_store
    for made in opened:
        made.close()


@pytest.fixture
def store(make: Make) -> SqliteStore | MemoryStore:
    made: SqliteStore | MemoryStore = make()
    return made


def failure(store: Store) -> tuple[str, BaseException]:
    """The one failed run's key and the error its last event stored (decoded: as a user reads it back)."""
    (failed,) = list(store.runs(status="failed"))
    event = store.events(failed.key)[-1]
    assert event.error is not None
    return failed.key, store.decode_error(event.error)


def accounts_on(store: Store) -> Entities[Balance]:
    """An account kind: deposits add, withdrawals below zero are refused (they raise)."""
    accounts = Entities[Balance]("account", store=store)

    @accounts.handler(Deposit)
    def deposit(ctx: EntityContext[Balance], message: Deposit) -> None:
        before = ctx.state or Balance(0)
        ctx.state = Balance(before.cents + message.cents, [*before.log, message.cents])

    @accounts.handler(Withdraw)
    def withdraw(ctx: EntityContext[Balance], message: Withdraw) -> None:
        before = ctx.state or Balance(0)
        if before.cents < message.cents:
            raise ValueError(f"{ctx.id}: {message.cents} is more than the {before.cents} there")
        ctx.state = Balance(before.cents - message.cents, [*before.log, -message.cents])

    return accounts


# -- sending, serving, reading ------------------------------------------------------------------


def test_messages_are_handled_in_send_order_and_the_state_is_committed(store: Store):
    """Each id's state holds its messages' effects once each, in the order they were sent."""
    accounts = accounts_on(store)
    for cents in range(1, 6):
        accounts.send("a", Deposit(cents))
        accounts.send("b", Deposit(10 * cents))
    accounts.send("a", Withdraw(4))

    assert accounts.state("a") is None  # nothing handled before serve
    accounts.serve(until_idle=True)

    assert accounts.state("a") == Balance(11, [1, 2, 3, 4, 5, -4])
    assert accounts.state("b") == Balance(150, [10, 20, 30, 40, 50])
    assert accounts.state("nobody") is None
    assert accounts.ids() == ["a", "b"]
    info = accounts.info("a")
    assert info is not None
    assert (info.pending, info.version, info.failed, info.owner, info.starts) == (0, 6, None, None, 0)


def test_each_handling_is_a_durable_run_keyed_by_the_entity_and_message(store: Store):
    """The runs are listed by the store: key kind/id/seq, one step named after the handler, the message as input."""
    accounts = accounts_on(store)
    accounts.send("a", Deposit(7))
    accounts.serve(until_idle=True)

    (info,) = list(store.runs())
    assert info.key.startswith("account/a/")
    assert info.key.rsplit("/", 1)[1].isdigit()
    assert info.status == "ok"
    assert [(e.step, e.outcome) for e in store.events(info.key)] == [("deposit", "ok")]
    assert store.stored_input(info.key) == Deposit(7)


def test_the_context_names_the_entity_the_message_and_the_run(store: Store):
    """`ctx.id`, `kind`, `message`, `item`, `key`, `step` and `attempt`; the repr names the entity."""
    seen: list[tuple[object, ...]] = []
    kind = Entities[Balance]("account", store=store)

    @kind.handler(Deposit)
    def deposit(ctx: EntityContext[Balance], message: Deposit) -> None:
        assert isinstance(ctx, Context)
        seen.append((ctx.id, ctx.kind, ctx.message, ctx.item, ctx.key, ctx.step, ctx.attempt, ctx.input, repr(ctx)))

    kind.send(42, Deposit(1))  # an int id is its str
    kind.serve(until_idle=True)

    ((name, of, message, item, key, step, attempt, given, text),) = seen
    assert (name, of, message, item, step, attempt, given) == (
        "42",
        "account",
        Deposit(1),
        "message",
        "deposit",
        1,
        Deposit(1),
    )
    assert key == store.runs()[0].key
    assert text == "<EntityContext account '42' message step='deposit'>"


def test_every_callback_form_is_a_handler(store: Store):
    """A handler may take the context, the message, both or neither, and may be async."""
    calls: list[str] = []
    kind = Entities[int]("counter", store=store)

    @kind.handler(Deposit)
    def both(ctx: EntityContext[int], message: Deposit) -> None:
        ctx.state = (ctx.state or 0) + message.cents

    @kind.handler(Withdraw)
    def only_message(message: Withdraw) -> None:
        calls.append(f"withdraw {message.cents}")

    @kind.handler(int)
    def only_context(ctx) -> None:
        ctx.state = (ctx.state or 0) * 10

    @kind.handler(str)
    def neither() -> None:
        calls.append("str")

    @kind.handler(float)
    async def asynchronous(ctx: EntityContext[int], message: float) -> None:
        await asyncio.sleep(0)
        ctx.state = (ctx.state or 0) + int(message)

    for message in (Deposit(2), Withdraw(1), 3, "x", 1.0):
        kind.send("c", message)
    kind.serve(until_idle=True)

    assert kind.state("c") == 21
    assert calls == ["withdraw 1", "str"]


def test_a_subclass_message_goes_to_its_base_class_handler(store: Store):
    accounts = accounts_on(store)
    accounts.send("a", BigDeposit(5))
    accounts.serve(until_idle=True)
    assert accounts.state("a") == Balance(5, [5])


def test_ids_are_handled_side_by_side_and_one_id_never_twice_at_once(store: Store):
    """With 4 workers, 8 ids' messages go on at once; handlings of one id never overlap, and keep their order."""
    kind = Entities[list[int]]("seq", store=store)
    lock = threading.Lock()
    running: set[str] = set()
    overlaps: list[str] = []
    most = [0]

    @kind.handler(int)
    def record(ctx: EntityContext[list[int]], n: int) -> None:
        with lock:
            if ctx.id in running:
                overlaps.append(ctx.id)
            running.add(ctx.id)
            most[0] = max(most[0], len(running))
        time.sleep(0.002)
        ctx.state = [*(ctx.state or []), n]
        with lock:
            running.discard(ctx.id)

    for n in range(15):
        for name in "abcdefgh":
            kind.send(name, n)
    kind.serve(workers=4, until_idle=True)

    assert overlaps == []
    assert most[0] > 1  # ids went on side by side
    assert all(kind.state(name) == list(range(15)) for name in "abcdefgh")


def test_serve_returns_when_stop_is_set_and_the_handling_in_flight_commits(store: Store):
    kind = Entities[int]("slow", store=store)
    stop = threading.Event()
    started = threading.Event()

    @kind.handler(int)
    def slow(ctx: EntityContext[int], n: int) -> None:
        started.set()
        stop.set()  # asked to stop while handling: this handling still commits
        ctx.state = n

    kind.send("s", 1)
    kind.send("s", 2)
    server = threading.Thread(target=kind.serve, kwargs={"stop": stop})
    server.start()
    assert started.wait(10)
    server.join(10)
    assert not server.is_alive()
    assert kind.state("s") == 1
    info = kind.info("s")
    assert info is not None
    assert (info.pending, info.owner, info.starts) == (
        1,
        None,
        0,
    )  # the second waits, unclaimed, not counted as started


# -- the end of an entity -------------------------------------------------------------------------


def test_state_none_ends_the_entity_its_row_and_timer_go(store: Store):
    kind = Entities[int]("temp", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[int], n: int) -> None:
        if n:
            ctx.state = n
            ctx.wake_in(3600)
        else:
            ctx.state = None

    kind.send("t", 5)
    kind.serve(until_idle=True)
    info = kind.info("t")
    assert info is not None
    assert info.timer is not None
    assert info.timer > time.time() + 3000

    kind.send("t", 0)
    kind.serve(until_idle=True)
    assert kind.info("t") is None
    assert kind.ids() == []
    assert kind.state("t") is None
    assert [info.status for info in store.runs()] == ["ok", "ok"]  # the history stays


# -- failures -------------------------------------------------------------------------------------


def test_a_failed_handler_leaves_the_state_and_blocks_its_id_only(store: Store):
    """The message is a failed durable run with its traceback; later messages to the id wait; other ids go on."""
    accounts = accounts_on(store)
    accounts.send("a", Deposit(5))
    accounts.send("a", Withdraw(9))  # refused: raises
    accounts.send("a", Deposit(1))
    accounts.send("b", Deposit(3))
    accounts.serve(until_idle=True)

    assert accounts.state("a") == Balance(5, [5])
    assert accounts.state("b") == Balance(3, [3])
    (failed,) = list(store.runs(status="failed"))
    assert failed.failed_step == "withdraw"
    assert failed.error_type == "ValueError"
    assert failed.error == "job of step 'withdraw' failed: ValueError: a: 9 is more than the 5 there"
    (event,) = store.events(failed.key)
    assert event.traceback is not None
    assert 'raise ValueError(f"{ctx.id}: {message.cents} is more than the {before.cents} there")' in event.traceback
    info = accounts.info("a")
    assert info is not None
    assert (info.failed, info.failed_item, info.pending) == (failed.key, "message", 2)

    accounts.serve(until_idle=True)  # tried again at every serve start: fails again, the same key
    assert accounts.state("a") == Balance(5, [5])
    again = store.run_info(failed.key)
    assert again is not None
    assert (again.status, again.generation) == ("failed", 2)

    assert accounts.drop("a") is True  # the withdrawal discarded: the deposit behind it goes on
    assert accounts.drop("a") is False
    accounts.serve(until_idle=True)
    assert accounts.state("a") == Balance(6, [5, 1])


def test_retry_handles_the_failed_message_again(store: Store):
    allowed = threading.Event()
    kind = Entities[int]("gate", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[int], n: int) -> None:
        if not allowed.is_set():
            raise RuntimeError("not yet")
        ctx.state = (ctx.state or 0) + n

    kind.send("g", 1)
    kind.send("g", 2)
    kind.serve(until_idle=True)
    assert kind.state("g") is None
    assert kind.retry("nobody") is False

    allowed.set()
    assert kind.retry("g") is True
    assert kind.retry("g") is False  # not blocked any more
    kind.serve(until_idle=True)
    assert kind.state("g") == 3


def test_every_attempt_of_a_retried_handler_starts_from_the_stored_state(store: Store):
    """The retry policy's attempts are one run's; an attempt's changes to ctx.state and the timer are dropped."""
    seen: list[object] = []
    kind = Entities[Balance]("flaky", store=store)

    @kind.handler(Deposit, retry=Retry(attempts=3))
    def deposit(ctx: EntityContext[Balance], message: Deposit) -> None:
        state = ctx.state
        assert state is not None
        seen.append((ctx.attempt, list(state.log), ctx.timer))
        state.log.append(message.cents)  # mutated in place...
        ctx.state = Balance(state.cents + message.cents, state.log)
        if ctx.attempt < 3:
            ctx.wake_in(60)
            raise ConnectionError("flaky")  # ...and dropped with the attempt

    @kind.handler(int)
    def start(ctx: EntityContext[Balance]) -> None:
        ctx.state = Balance(0)

    kind.send("f", 0)
    kind.send("f", Deposit(4))
    kind.serve(until_idle=True)

    assert seen == [(1, [], None), (2, [], None), (3, [], None)]
    assert kind.state("f") == Balance(4, [4])
    info = kind.info("f")
    assert info is not None
    assert info.timer is None
    key = store.runs()[0].key
    assert [(e.step, e.outcome, e.attempts) for e in store.events(key)] == [("deposit", "ok", 3)]


def test_a_state_of_the_wrong_type_fails_the_handling_naming_the_entity(store: Store):
    kind = Entities[Balance]("typed", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[Balance], n: int) -> None:
        ctx.state = n  # type: ignore[assignment]

    kind.send("x", 3)
    kind.serve(until_idle=True)
    assert kind.state("x") is None
    _, error = failure(store)
    assert type(error) is TypeError
    assert str(error) == "entity typed 'x': its state must be tests.test_entities.Balance or None, got int"


def test_a_state_mutated_into_the_wrong_type_fails_at_the_commit(store: Store):
    """A parametrized state type is checked (with beartype) when the handling ends, whatever changed it."""
    kind = Entities[list[int]]("ints", store=store)

    @kind.handler(str)
    def handle(ctx: EntityContext[list[int]], text: str) -> None:
        state = ctx.state or []
        ctx.state = state
        state.append(text)  # type: ignore[arg-type]

    kind.send("i", "no")
    kind.serve(until_idle=True)
    _, error = failure(store)
    assert str(error) == "entity ints 'i': its state must be list[int] or None, got list"


def test_an_unstorable_state_fails_the_handling_and_nothing_is_stored(store: Store):
    kind = Entities[object]("any", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[object], n: int) -> None:
        ctx.state = {"f": lambda: n}

    kind.send("u", 1)
    kind.serve(until_idle=True)
    info = kind.info("u")
    assert info is not None
    assert info.state is None
    _, error = failure(store)
    assert type(error) is TypeError
    assert str(error).startswith("entity any 'u': its state can't be stored: cannot encode a value of type")


def test_a_message_without_a_handler_in_the_server_fails_visibly(store: Store):
    """A producer's object has no handlers and sends anything; the server's refusal is a failed run naming the type."""
    producer = Entities[Balance]("account", store=store)
    producer.send("a", Bad(1))
    producer.send("a", Deposit(2))
    accounts = accounts_on(store)
    accounts.serve(until_idle=True)

    (failed,) = list(store.runs(status="failed"))
    assert failed.failed_step == "refused"
    assert str(failure(store)[1]) == (
        "entities of kind 'account' have no handler of tests.test_entities.Bad messages"
        " (they handle tests.test_entities.Deposit, tests.test_entities.Withdraw)"
    )
    assert accounts.state("a") is None
    assert accounts.drop("a")
    accounts.serve(until_idle=True)
    assert accounts.state("a") == Balance(2, [2])


def test_an_item_interrupted_too_often_is_failed_without_running(make: Make):
    """A message whose handling was started more than max_interruptions + 1 times without ending is refused."""
    store = make(max_interruptions=1)
    accounts = accounts_on(store)
    accounts.send("a", Deposit(1))
    entity_store: EntityStore = store
    for _ in range(3):  # three servers took it and died before committing
        (row,) = entity_store.entity_claim("account", 1)
        entity_store.entity_release("account", "a", started=True)
    assert row.starts == 3

    accounts.serve(until_idle=True)
    assert accounts.state("a") is None
    _, error = failure(store)
    assert type(error) is RuntimeError
    assert str(error) == (
        "entity account 'a': handling this message was interrupted 3 times (a crash each time?);"
        " entities.retry(id) tries it again, entities.drop(id) discards it"
    )
    accounts.serve(until_idle=True)  # a serve start does not run it again: its starts are kept
    assert accounts.state("a") is None
    assert accounts.retry("a")
    accounts.serve(until_idle=True)
    assert accounts.state("a") == Balance(1, [1])


# -- timers and boots -----------------------------------------------------------------------------


def timed_on(store: Store, fired: list[str]) -> Entities[int]:
    kind = Entities[int]("timed", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[int], n: int) -> None:
        ctx.state = n
        if n > 0:
            ctx.wake_in(dt.timedelta(seconds=n / 100))
        elif n < 0:
            ctx.cancel_timer()

    @kind.on_timer
    def wake(ctx: EntityContext[int]) -> None:
        fired.append(f"{ctx.id} {ctx.item} {ctx.message} {ctx.state}")
        ctx.state = (ctx.state or 0) + 1000

    return kind


def test_a_due_timer_calls_on_timer_once_and_is_consumed(store: Store):
    fired: list[str] = []
    kind = timed_on(store, fired)
    kind.send("t", 1)
    kind.serve(until_idle=True)
    info = kind.info("t")
    assert info is not None
    assert info.timer is not None  # set, due in 10 ms: until_idle does not wait for it
    time.sleep(0.05)
    kind.serve(until_idle=True)
    assert fired == ["t timer None 1"]
    assert kind.state("t") == 1001
    info = kind.info("t")
    assert info is not None
    assert info.timer is None
    timer_runs = [run.key for run in store.runs() if "/timer-" in run.key]
    assert timer_runs == ["timed/t/timer-1"]


def test_cancel_timer_removes_it(store: Store):
    fired: list[str] = []
    kind = timed_on(store, fired)
    kind.send("t", 1)
    kind.send("t", -1)
    kind.serve(until_idle=True)
    time.sleep(0.05)
    kind.serve(until_idle=True)
    assert fired == []
    info = kind.info("t")
    assert info is not None
    assert info.timer is None


def test_wake_at_takes_an_aware_datetime_only(store: Store):
    kind = Entities[int]("at", store=store)
    when = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)

    @kind.handler(int)
    def handle(ctx: EntityContext[int], n: int) -> None:
        ctx.state = n
        if n == 1:
            ctx.wake_at(when)
            assert ctx.timer == when
        else:
            ctx.wake_at(dt.datetime(2100, 1, 1))  # noqa: DTZ001 - the naive datetime refused

    kind.send("a", 1)
    kind.send("b", 2)
    kind.serve(until_idle=True)
    info = kind.info("a")
    assert info is not None
    assert info.timer == when.timestamp()
    _, error = failure(store)
    assert type(error) is ValueError
    assert str(error).startswith("wake_at() takes an aware datetime, got the naive 2100-01-01T00:00:00")


@pytest.mark.parametrize(
    ("seconds", "error", "text"),
    [
        (-1, ValueError, "wake_in() takes seconds >= 0, got -1"),
        (float("nan"), ValueError, "wake_in() takes seconds >= 0, got nan"),
        ("1", TypeError, "wake_in() takes seconds (a number or a timedelta), got str"),
        (True, TypeError, "wake_in() takes seconds (a number or a timedelta), got bool"),
    ],
)
def test_wake_in_refuses_what_is_no_number_of_seconds(store: Store, seconds: object, error: type, text: str):
    kind = Entities[int]("in", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[int]) -> None:
        ctx.wake_in(seconds)  # type: ignore[arg-type]

    kind.send("a", 1)
    kind.serve(until_idle=True)
    _, found = failure(store)
    assert (type(found), str(found)) == (error, text)


def test_a_timer_survives_a_restart(tmp_path: Path):
    """Set by one store object, closed; a new one, in a new serve, fires it."""
    path = tmp_path / "timers.db"
    fired: list[str] = []
    with SqliteStore(path) as first:
        kind = timed_on(first, fired)
        kind.send("t", 5)
        kind.serve(until_idle=True)
    assert fired == []
    time.sleep(0.08)
    with SqliteStore(path) as second:
        again = timed_on(second, fired)
        again.serve(until_idle=True)
        assert again.state("t") == 1005
    assert fired == ["t timer None 5"]


def test_a_timer_without_on_timer_fails_visibly(store: Store):
    kind = Entities[int]("notimer", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[int], n: int) -> None:
        ctx.state = n
        ctx.wake_in(0)

    kind.send("a", 1)
    kind.serve(until_idle=True)
    kind.serve(until_idle=True)
    assert str(failure(store)[1]) == "entity notimer 'a': its timer is due, and its kind has no on_timer handler"
    info = kind.info("a")
    assert info is not None
    assert info.failed_item == "timer"
    assert kind.drop("a")
    info = kind.info("a")
    assert info is not None
    assert (info.timer, info.failed, info.state) == (None, None, "1")


def test_on_boot_runs_for_every_live_entity_before_its_messages(store: Store):
    order: list[str] = []
    kind = Entities[int]("booted", store=store)

    @kind.handler(int)
    def handle(ctx: EntityContext[int], n: int) -> None:
        order.append(f"{ctx.id} message {n}")
        ctx.state = n

    kind.send("a", 1)
    kind.send("b", 0)
    kind.serve(until_idle=True)  # no boot handler yet
    order.clear()

    @kind.on_boot
    def boot(ctx: EntityContext[int]) -> None:
        order.append(f"{ctx.id} boot {ctx.state} {ctx.item}")

    kind.send("a", 2)
    kind.send("new", 3)  # no state yet: no boot
    kind.serve(until_idle=True)
    assert sorted(order) == ["a boot 1 boot", "a message 2", "b boot 0 boot", "new message 3"]
    assert order.index("a boot 1 boot") < order.index("a message 2")
    assert sorted(run.key for run in store.runs() if "/boot-" in run.key) == ["booted/a/boot-1", "booted/b/boot-1"]


# -- a coordinator as a handler ---------------------------------------------------------------------


def test_a_coordinator_handler_runs_its_steps_with_the_entity_context(store: Store):
    """The message is its input; every callback gets the EntityContext; its last step stores the state."""
    accounts = Entities[Balance]("account", store=store)

    def check(ctx: Context[Deposit], message: Deposit) -> None:
        if message.cents <= 0:
            raise ValueError("a deposit must be positive")

    def add(ctx: EntityContext[Balance], message: Deposit) -> int:
        before = ctx.state or Balance(0)
        ctx.state = Balance(before.cents + message.cents, [*before.log, message.cents])
        return ctx.state.cents

    def audit(ctx: EntityContext[Balance], message: Deposit) -> None:
        if message.cents == 13:
            raise RuntimeError("unlucky")

    flow = Coordinator[Deposit]([Step("check", add, check), Step("audit", audit)])
    assert accounts.handler(Deposit, flow) is flow
    accounts.send("a", Deposit(5))
    accounts.send("a", Deposit(13))  # audit fails after add changed the state: nothing is committed
    accounts.serve(until_idle=True)

    assert accounts.state("a") == Balance(5, [5])
    ok, failed = sorted(store.runs(), key=lambda run: run.status != "ok")
    assert [(e.step, e.phase) for e in store.events(ok.key)] == [
        ("check", "precheck"),
        ("check", "job"),
        ("audit", "job"),
        ("entity state", "job"),
    ]
    assert (failed.status, failed.failed_step) == ("failed", "audit")
    assert [step.name for step in flow.steps] == ["check", "audit"]  # the coordinator itself is unchanged


def test_a_coordinator_handler_needs_an_input_type_that_takes_the_messages(store: Store):
    accounts = Entities[Balance]("account", store=store)
    with pytest.raises(TypeError, match=r"the coordinator's input is int: it can't handle .*Deposit messages"):
        accounts.handler(Deposit, Coordinator[int]([Step("x", lambda x: x)]))
    with pytest.raises(TypeError, match="retry= and timeout= are for a function handler"):
        accounts.handler(Deposit, Coordinator(), retry=Retry(attempts=2))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="takes a Coordinator, got int"):
        accounts.handler(Deposit, 3)  # type: ignore[call-overload]


# -- misuse ---------------------------------------------------------------------------------------


def test_send_refuses_an_unstorable_message_and_stores_nothing(store: Store):
    kind = Entities[int]("k", store=store)
    with pytest.raises(TypeError, match=r"the message to entity k 'a' can't be stored: cannot encode a value of type"):
        kind.send("a", object())
    assert kind.info("a") is None


def test_send_refuses_a_message_no_handler_of_this_object_takes(store: Store):
    accounts = accounts_on(store)
    with pytest.raises(TypeError, match=r"have no handler of tests.test_entities.Bad messages \(they handle"):
        accounts.send("a", Bad(1))
    assert accounts.info("a") is None


@pytest.mark.parametrize(
    ("name", "error", "text"),
    [(None, TypeError, "got None"), ("", ValueError, "not be empty"), (True, TypeError, "got bool")],
)
def test_an_id_is_a_non_empty_str_or_an_int(store: Store, name: object, error: type, text: str):
    kind = Entities[int]("k", store=store)
    with pytest.raises(error, match=text):
        kind.send(name, 1)  # type: ignore[arg-type]


def test_the_constructor_checks_its_arguments(store: Store):
    with pytest.raises(TypeError, match="an entity kind must be a str, got int"):
        Entities(1, store=store)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without '/'"):
        Entities("a/b", store=store)
    with pytest.raises(ValueError, match="non-empty"):
        Entities(" ", store=store)
    with pytest.raises(TypeError, match=r"store must implement .*EntityStore .* got object"):
        Entities("k", store=object())  # type: ignore[arg-type]
    kind = Entities[Balance]("k", store=store)
    assert (kind.kind, kind.store, kind.state_type) == ("k", store, Balance)
    assert repr(kind).startswith("Entities[tests.test_entities.Balance]('k', store=")
    assert Entities("k", store=store).state_type is object


def test_a_message_type_has_one_handler_and_handlers_are_callbacks(store: Store):
    kind = Entities[int]("k", store=store)
    kind.handler(int)(lambda: None)
    with pytest.raises(TypeError, match="have a handler of int messages already"):
        kind.handler(int)(lambda: None)
    with pytest.raises(TypeError, match="takes the class of the messages"):
        kind.handler("int")  # type: ignore[call-overload]
    with pytest.raises(StepDefinitionError, match=r"\*args is not allowed"):
        kind.handler(str)(lambda *args: None)
    kind.on_timer(lambda: None)
    with pytest.raises(TypeError, match="have an timer handler already"):
        kind.on_timer(retry=Retry(attempts=2))(lambda: None)


def test_serve_checks_its_arguments(store: Store):
    kind = Entities[int]("k", store=store)
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        kind.serve(workers=0)
    with pytest.raises(TypeError, match="workers must be an int >= 1, got float"):
        kind.serve(workers=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"stop must be a threading\.Event or None, got int"):
        kind.serve(stop=3)  # type: ignore[arg-type]


def test_an_undecodable_state_is_a_store_error_naming_the_entity(store: Store):
    """A state whose class can't be found is refused by `state()` and fails the next handling: never guessed."""
    kind = Entities[int]("k", store=store)
    kind.handler(int)(lambda ctx, n: setattr(ctx, "state", (ctx.state or 0) + n))
    entity_store: EntityStore = store
    entity_store.entity_send("k", "a", "1")
    (claimed,) = entity_store.entity_claim("k", 1)
    assert claimed.head is not None
    gone = '{"$dataclass":"nowhere:Gone","fields":{}}'
    assert entity_store.entity_commit("k", "a", EntityCommit("message", claimed.head.seq, gone, None)) is None

    with pytest.raises(StoreError, match="cannot decode the state of entity k 'a'"):
        kind.state("a")
    kind.send("a", 2)
    kind.serve(until_idle=True)
    _, error = failure(store)
    assert type(error) is StoreError
    assert "cannot decode the state of entity k 'a'" in str(error)
    info = kind.info("a")
    assert info is not None
    assert info.state == gone


def test_until_idle_returns_only_once_every_id_is_handled(store: Store):
    """Many ids, few workers: ids released and claimed again while others finish are never left behind."""
    kind = Entities[int]("many", store=store)
    kind.handler(int)(lambda ctx, n: setattr(ctx, "state", (ctx.state or 0) + n))
    for n in range(2):
        for i in range(300):
            kind.send(f"m{i}", n + 1)
    kind.serve(workers=4, until_idle=True)
    assert [kind.state(f"m{i}") for i in range(300)] == [3] * 300


def test_an_entity_context_annotation_marks_the_context_parameter():
    """`EntityContext` (a class, parametrized, or a string) marks a context; its argument is not the input's."""
    from choreograph._core.callbacks import compile_callback

    def named(c, m) -> None:
        del c, m

    named.__annotations__ = {"c": "choreograph.EntityContext", "return": "None"}
    compiled = compile_callback("s", "job", named, retry=None, timeout=None)
    assert (compiled.takes_context, compiled.takes_input) == (True, True)

    def typed(c: EntityContext[Balance], m: Deposit) -> None:
        del c, m

    assert compile_callback("s", "job", typed, retry=None, timeout=None, input_type=Deposit).takes_context

    def plain(c: Context[int], m: Deposit) -> None:
        del c, m

    with pytest.raises(StepDefinitionError, match=r"annotated Context\[int\], but the coordinator's input is"):
        compile_callback("s", "job", plain, retry=None, timeout=None, input_type=Deposit)


def test_a_plain_run_still_gets_a_plain_context():
    seen: list[type] = []
    Coordinator([Step("s", lambda ctx: seen.append(type(ctx)))]).run(1)
    assert seen == [Context]
