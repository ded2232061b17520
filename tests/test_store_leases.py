import asyncio
import dataclasses
import os
import socket
import sqlite3
import sys
import time
import types
from pathlib import Path

import pytest

from choreograph import Coordinator, KeyBusy, SqliteStore, Step, StoreError


def lease_row(path: Path, key: str, owner: str, seconds: float) -> None:
    """Make *owner* hold *key*'s lease for *seconds*, as another process would."""
    conn = sqlite3.connect(path)
    now = time.time()
    conn.execute(
        "INSERT INTO runs (key, status, generation, sessions, owner, lease_until, created, updated)"
        " VALUES (?, 'running', 1, 1, ?, ?, ?, ?)",
        (key, owner, now + seconds, now, now),
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease": 0}, "lease"),
        ({"max_interruptions": -1}, "max_interruptions"),
        ({"max_interruptions": True}, "max_interruptions"),
        ({"synchronous": "OFF"}, "synchronous"),
        ({"codec": object()}, "codec"),
    ],
)
def test_bad_store_settings_are_refused_naming_them(tmp_path: Path, options, message):
    """SqliteStore rejects bad settings with an error naming the setting, before touching the file."""
    path = tmp_path / "s.db"
    with pytest.raises((ValueError, TypeError), match=message):
        SqliteStore(path, **options)
    assert not path.exists()


def test_a_closed_store_refuses_to_work(tmp_path: Path):
    """After close(), using the store raises StoreError saying it is closed."""
    store = SqliteStore(tmp_path / "s.db")
    assert "s.db" in repr(store)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.runs()


def test_a_long_run_renews_its_lease(tmp_path: Path):
    """A run longer than its lease renews it as it records events, so no one else may take the key."""
    store = SqliteStore(tmp_path / "s.db", lease=0.15)
    leases: list[float] = []

    def step(x: int) -> int:
        time.sleep(0.06)
        conn = sqlite3.connect(tmp_path / "s.db")
        leases.append(conn.execute("SELECT lease_until FROM runs WHERE key = '1'").fetchone()[0])
        conn.close()
        return x

    coordinator = Coordinator([Step(f"s{i}", step) for i in range(6)], store=store, key=str)
    assert coordinator.run(1).ok
    assert leases[-1] > leases[0]  # renewed during the run
    assert store.run_info("1").owner is None  # type: ignore[union-attr]  # released at the end


def test_a_run_that_lost_its_lease_stops_with_a_store_error(tmp_path: Path):
    """When another owner took the key over, the next renewal raises StoreError and the run stops."""
    path = tmp_path / "s.db"
    store = SqliteStore(path, lease=0.09)
    ran: list[str] = []

    def step(name: str):
        def job(x: int) -> int:
            ran.append(name)
            if name == "first":  # another process takes the key over while we are slow
                conn = sqlite3.connect(path)
                conn.execute("UPDATE runs SET owner = 'elsewhere:1:x' WHERE key = '1'")
                conn.commit()
                conn.close()
                time.sleep(0.05)
            return x

        return Step(name, job)

    coordinator = Coordinator([step("first"), step("second"), step("third")], store=store, key=str)
    with pytest.raises(StoreError, match="lost the lease"):
        coordinator.run(1)
    assert "third" not in ran


def test_a_lease_of_another_machine_is_trusted_until_it_expires(tmp_path: Path):
    """A key leased by a process of another host is waited for, then reported as KeyBusy."""
    path = tmp_path / "s.db"
    store = SqliteStore(path, lease=0.1)
    lease_row(path, "k", "another-host:1234:abcd", seconds=60)
    calls: list[int] = []
    coordinator = Coordinator([Step("s", lambda: calls.append(1))], store=store)
    started = time.monotonic()
    result = coordinator.run(None, key="k")
    assert isinstance(result.fatal, KeyBusy)
    assert result.fatal.owner == "another-host:1234:abcd"
    assert "another-host" in str(result.fatal)
    assert time.monotonic() - started >= 1.0  # waited the lease plus a second
    assert calls == []


def test_a_lease_of_a_live_local_process_is_respected(tmp_path: Path):
    """A key leased by a live process of this machine is not taken over."""
    path = tmp_path / "s.db"
    store = SqliteStore(path, lease=0.05)
    lease_row(path, "k", f"{socket.gethostname()}:{os.getppid()}:abcd", seconds=60)
    result = Coordinator([Step("s", lambda: 1)], store=store).run(None, key="k")
    assert isinstance(result.fatal, KeyBusy)


def test_a_lease_of_a_dead_local_process_is_taken_over_at_once(tmp_path: Path):
    """A key leased by a dead process of this machine is resumed at once, counting an interruption."""
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    lease_row(path, "k", f"{socket.gethostname()}:{dead}:abcd", seconds=600)
    started = time.monotonic()
    result = Coordinator([Step("s", lambda: 1)], store=store).run(None, key="k")
    assert result.ok
    assert time.monotonic() - started < 5  # waiting for the lease would take 61 s
    assert store.run_info("k").interruptions == 1  # type: ignore[union-attr]


def test_run_async_waits_for_a_busy_key_without_blocking_the_loop(tmp_path: Path):
    """run_async on a key leased elsewhere polls with asyncio.sleep, then reports KeyBusy."""
    path = tmp_path / "s.db"
    store = SqliteStore(path, lease=0.1)
    lease_row(path, "k", "another-host:1:abcd", seconds=60)
    coordinator = Coordinator([Step("s", lambda: 1)], store=store)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.05)

    async def main():
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker's first tick
        before = ticks
        result = await coordinator.run_async(None, key="k")
        task.cancel()
        return result, ticks - before

    result, during = asyncio.run(main())
    assert isinstance(result.fatal, KeyBusy)
    # The wait lasts lease + 1 s, room for about 20 ticks; a loop blocked by the wait would tick none.
    assert during >= 5


def test_an_output_that_no_longer_decodes_gives_a_clear_store_error(tmp_path: Path):
    """Resuming a key whose restored output's class is gone raises StoreError naming the step and the key."""
    module = types.ModuleType("vanishing_records")
    exec(  # noqa: S102 - a throwaway module for the test
        "import dataclasses\n@dataclasses.dataclass\nclass Record:\n    n: int\n",
        module.__dict__,
    )
    sys.modules["vanishing_records"] = module
    record_class = module.Record
    assert dataclasses.is_dataclass(record_class)
    fail = True

    def load(x: int) -> object:
        return record_class(x)

    def use(x: int) -> int:
        if fail:
            raise ValueError("not yet")
        return x

    store = SqliteStore(tmp_path / "s.db")
    coordinator = Coordinator([Step("load", load), Step("use", use)], store=store, key=str)
    assert not coordinator.run(1).ok
    del sys.modules["vanishing_records"]
    fail = False
    with pytest.raises(StoreError, match=r"step 'load' of key '1'.*not imported"):
        coordinator.run(1)


def test_a_keyboard_interrupt_releases_the_key_and_counts_an_interruption(tmp_path: Path):
    """A BaseException leaves the key resumable: its lease is released and the next run resumes it."""
    store = SqliteStore(tmp_path / "s.db")
    interrupt = True
    done: list[str] = []

    def first(x: int) -> int:
        done.append("first")
        return x

    def second(x: int) -> int:
        if interrupt:
            raise KeyboardInterrupt
        done.append("second")
        return x

    coordinator = Coordinator([Step("first", first), Step("second", second)], store=store, key=str)
    with pytest.raises(KeyboardInterrupt):
        coordinator.run(1)
    info = store.run_info("1")
    assert info is not None
    assert (info.status, info.owner) == ("running", None)
    interrupt = False
    result = coordinator.run(1)
    assert result.ok
    assert done == ["first", "second"]
    assert store.run_info("1").interruptions == 1  # type: ignore[union-attr]


def test_prune_deletes_finished_runs_and_their_events(tmp_path: Path):
    """prune() removes the selected runs with their events, and reports how many."""
    store = SqliteStore(tmp_path / "s.db")
    coordinator = Coordinator([Step("s", lambda x: x)], store=store, key=str)
    for i in range(3):
        coordinator.run(i)
    assert store.prune(keys=["0", "1"]) == 2
    assert [info.key for info in store.runs()] == ["2"]
    assert store.events("0") == []
    assert len(store.events("2")) == 1
    assert store.prune(status="failed") == 0
    assert store.prune(before=time.time() + 1) == 1


def test_a_run_refused_for_bad_arguments_does_not_touch_its_key(tmp_path: Path):
    """A durable run with bad values= is refused before its key is taken: nothing is recorded or leased."""
    store = SqliteStore(tmp_path / "s.db", lease=30)
    coordinator = Coordinator([Step("s", lambda x: x)], store=store, key=str)
    with pytest.raises(TypeError, match="values"):
        coordinator.run(1, values=[("not", "a mapping")])  # type: ignore[arg-type]
    assert store.run_info("1") is None
    started = time.monotonic()
    assert coordinator.run(1).ok
    assert time.monotonic() - started < 5  # a leased key would be waited for 31 s
    assert store.run_info("1").interruptions == 0  # type: ignore[union-attr]


def test_a_run_whose_restore_fails_gives_its_key_back(tmp_path: Path):
    """When a resumed run can't be set up (an output no longer decodes), the key is not left leased."""
    fail = True

    def make(x: int) -> object:
        return {"n": x}

    def then(x: int) -> int:
        if fail:
            raise ValueError("not yet")
        return x

    path = tmp_path / "s.db"
    store = SqliteStore(path, lease=30)
    assert not Coordinator([Step("make", make), Step("then", then)], store=store, key=str).run(1).ok
    conn = sqlite3.connect(path)
    conn.execute("UPDATE events SET output = '{\"$nope\": 1}' WHERE step = 'make'")
    conn.commit()
    conn.close()
    fail = False
    coordinator = Coordinator([Step("make", make), Step("then", then)], store=store, key=str)
    with pytest.raises(StoreError, match="step 'make'"):
        coordinator.run(1)
    assert store.run_info("1").owner is None  # type: ignore[union-attr]
