"""The store file: what `SqliteStore` refuses to open (leaving it untouched), and several processes sharing one."""

import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreograph import ChoreographError, Coordinator, KeyBusy, SqliteStore, Step, StoreError

WORKER = Path(__file__).with_name("_contention_worker.py")
# Bounds on waiting for helper processes: only a hang comes near them, even on a loaded machine.
START_WITHIN = 60.0
EXIT_WITHIN = 120.0
SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x43686F72  # "Chor"


def make_store_file(path: Path, keys: int = 300) -> None:
    """Fill a real store with runs, then close it (checkpointing the WAL into the file)."""
    with SqliteStore(path) as store:
        coordinator = Coordinator(
            [Step("a", lambda item: "x" * 200), Step("b", lambda item: list(range(50)))], store=store, key=str
        )
        for result in coordinator.run_many(range(keys), workers=4):
            assert result.ok


def assert_refused(path: Path) -> StoreError:
    """Opening *path* raises StoreError (an OSError and a ChoreographError) and leaves its bytes unchanged."""
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        SqliteStore(path)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, ChoreographError)
    assert info.value.path == str(path)
    assert path.read_bytes() == before
    return info.value


# -- files that are not (our) stores ---------------------------------------------------------------


@settings(deadline=None, max_examples=50)
@given(st.binary(min_size=1, max_size=3000).filter(lambda data: not SQLITE_MAGIC.startswith(data[:16])))
def test_a_file_of_random_bytes_is_refused_and_left_unchanged(data: bytes):
    """Any non-empty file that is not a SQLite database raises StoreError and keeps its bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.db"
        path.write_bytes(data)
        error = assert_refused(path)
        assert "not a SQLite database" in str(error) or "corrupt" in str(error)


@pytest.mark.parametrize("size", [1, 7, 100, 4096])
def test_a_small_non_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path, size: int):
    """A short text file is not a store: StoreError, and its bytes stay as they were."""
    path = tmp_path / "notes.db"
    path.write_bytes((b"my notes\n" * size)[:size])
    assert_refused(path)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_a_truncated_store_raises_store_error_and_is_left_unchanged(tmp_path: Path, keep: float):
    """A store file cut short raises StoreError on opening or at the first read; its bytes are not changed."""
    original = tmp_path / "full.db"
    make_store_file(original)
    data = original.read_bytes()
    path = tmp_path / "truncated.db"
    path.write_bytes(data[: int(len(data) * keep)])
    before = path.read_bytes()

    with pytest.raises(StoreError):  # noqa: PT012 - opening or the first read may be the one that fails
        store = SqliteStore(path)
        try:
            store.runs()
            store.run_info("0")
            store.events("0")
        finally:
            store.close()

    assert path.read_bytes() == before


def test_a_sqlite_file_of_another_application_is_refused(tmp_path: Path):
    """A SQLite file with tables but no choreograph application id raises StoreError and stays unchanged."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ann')")
    conn.close()

    error = assert_refused(path)

    assert "another application" in str(error)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM customers").fetchall() == [("ann",)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("customers",)]
    conn.close()


def test_a_sqlite_file_with_another_application_id_is_refused(tmp_path: Path):
    """An empty SQLite file stamped with another application's id is refused too."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()

    assert_refused(path)


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path):
    """A store whose schema version is newer than this choreograph's raises StoreError naming the version."""
    path = tmp_path / "runs.db"
    make_store_file(path, keys=5)
    conn = sqlite3.connect(path)
    newer = conn.execute("PRAGMA user_version").fetchone()[0] + 1
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.commit()
    conn.close()

    error = assert_refused(path)

    assert str(newer) in error.problem
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (newer,)
    assert conn.execute("SELECT count(*) FROM runs").fetchone() == (5,)
    conn.close()


def test_an_empty_existing_file_becomes_a_store(tmp_path: Path):
    """An existing empty file is accepted and becomes a store that runs and reopens."""
    path = tmp_path / "empty.db"
    path.touch()

    with SqliteStore(path) as store:
        assert Coordinator([Step("a", lambda: "A")], store=store).run(None, key="k").ok
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    conn.close()
    with SqliteStore(path) as reopened:
        info = reopened.run_info("k")
        assert info is not None
        assert info.status == "ok"


def test_a_missing_file_is_created_as_a_store(tmp_path: Path):
    """A path that does not exist yet becomes a new store."""
    path = tmp_path / "new.db"
    with SqliteStore(path) as store:
        assert store.runs() == []
    assert path.read_bytes().startswith(SQLITE_MAGIC)


def test_a_closed_store_raises_store_error(tmp_path: Path):
    """Using a store after `close()` raises StoreError."""
    store = SqliteStore(tmp_path / "runs.db")
    store.close()
    with pytest.raises(StoreError):
        store.runs()


# -- several processes on one file -------------------------------------------------------------------


def test_processes_sharing_a_store_run_each_key_exactly_once(tmp_path: Path):
    """Four processes running `run_many` over the same 100 keys: every key ok, every job run exactly once."""
    store_path, ledger = tmp_path / "runs.db", tmp_path / "ledger.db"
    SqliteStore(store_path).close()
    conn = sqlite3.connect(ledger)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE ledger (key INTEGER NOT NULL, step TEXT NOT NULL, pid INTEGER NOT NULL)")
    conn.commit()
    conn.close()
    go = tmp_path / "go"
    orders = ["up", "down", "rotated", "up"]
    readies = [tmp_path / f"ready-{n}" for n in range(len(orders))]
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "many", str(store_path), str(ledger), str(ready), str(go), order],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready, order in zip(readies, orders, strict=True)
    ]
    try:
        deadline = time.monotonic() + START_WITHIN
        while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()  # all start at once
        outputs = [process.communicate(timeout=EXIT_WITHIN) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert "database is locked" not in stderr
        assert process.returncode == 0, stderr
        summary = json.loads(stdout)
        assert (summary["results"], summary["ok"], summary["fatals"], summary["bad_outputs"]) == (100, 100, [], [])
    assert sum(json.loads(stdout)["ran"] for stdout, _ in outputs) == 100  # each key run by exactly one process
    with SqliteStore(store_path) as store:
        runs = store.runs()
        assert len(runs) == 100
        assert {info.status for info in runs} == {"ok"}
        assert all(info.sessions == 1 and info.interruptions == 0 for info in runs)
    conn = sqlite3.connect(ledger)
    rows = conn.execute("SELECT key, step, count(*) FROM ledger GROUP BY key, step").fetchall()
    conn.close()
    assert sorted((key, step) for key, step, _ in rows) == sorted(
        (key, step) for key in range(100) for step in ("reserve", "charge")
    )
    assert {count for _, _, count in rows} == {1}


def _hold(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start a process that runs key "held" and keeps it until the returned path is created."""
    started, release = tmp_path / "started", tmp_path / "release"
    process = subprocess.Popen(
        [sys.executable, str(WORKER), "hold", str(tmp_path / "runs.db"), str(started), str(release)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + START_WITHIN
    while not started.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the holding process did not start"
        time.sleep(0.01)
    return process, release


def test_a_key_held_by_another_live_process_gives_key_busy(tmp_path: Path):
    """A key another live process runs is waited for up to lease + 1 s, then the result's fatal is `KeyBusy`."""
    SqliteStore(tmp_path / "runs.db").close()
    process, release = _hold(tmp_path)
    try:
        calls: list[str] = []
        with SqliteStore(tmp_path / "runs.db", lease=0.2) as store:
            coordinator = Coordinator([Step("wait", lambda: calls.append("wait"))], store=store)
            started = time.monotonic()
            result = coordinator.run(None, key="held")
            waited = time.monotonic() - started
            info = store.run_info("held")
    finally:
        release.touch()
        stdout, stderr = process.communicate(timeout=EXIT_WITHIN)

    assert process.returncode == 0, stderr
    assert isinstance(result.fatal, KeyBusy)
    assert result.fatal.key == "held"
    assert result.fatal.owner == json.loads(stdout)["owner"]
    assert f":{process.pid}:" in result.fatal.owner
    assert calls == []
    # Waited lease + 1 s; a waiter that never gave up would wait for the holder, which keeps the key for 60 s.
    assert 1.1 <= waited < 12
    assert info is not None
    assert info.owner == result.fatal.owner


def test_a_run_waiting_for_a_key_gets_its_result_when_the_holder_finishes(tmp_path: Path):
    """A key released by its holder while another process waits: the waiter returns the stored result, runs nothing."""
    SqliteStore(tmp_path / "runs.db").close()
    process, release = _hold(tmp_path)
    timer = threading.Timer(0.1, release.touch)
    try:
        calls: list[str] = []
        # The waiter gives up only after lease + 1 s, far longer than a loaded holder takes to finish.
        with SqliteStore(tmp_path / "runs.db", lease=60) as store:
            coordinator = Coordinator([Step("wait", lambda: calls.append("wait"))], store=store)
            timer.start()
            result = coordinator.run(None, key="held")
    finally:
        timer.join()
        release.touch()
        _, stderr = process.communicate(timeout=EXIT_WITHIN)

    assert process.returncode == 0, stderr
    assert result.ok
    assert calls == []
    assert [(c.step, c.outcome, c.restored) for c in result.trace] == [("wait", "ok", True)]
    assert result.data_bag.get_job_data("wait") == "held"


def test_a_key_leased_by_a_dead_process_is_taken_over_at_once(tmp_path: Path):
    """A key whose holder died (lease not expired) is taken over at once, counted as an interruption, and resumed."""
    path = tmp_path / "runs.db"
    SqliteStore(path).close()

    process = subprocess.Popen([sys.executable, str(WORKER), "die", str(path)], stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate(timeout=EXIT_WITHIN)

    assert process.returncode == 3, stderr
    with SqliteStore(path) as store:
        info = store.run_info("dies")
        assert info is not None
        assert (info.status, info.sessions) == ("running", 1)
        assert info.owner is not None
        assert f":{process.pid}:" in info.owner  # still leased by the dead process
        calls: list[str] = []
        coordinator = Coordinator(
            [Step("a", lambda: calls.append("a") or "A"), Step("b", lambda: calls.append("b") or "B")], store=store
        )
        started = time.monotonic()
        result = coordinator.run(None, key="dies")
        waited = time.monotonic() - started
        info = store.run_info("dies")

    assert waited < 5  # waiting for the dead holder's lease would take 61 s
    assert result.ok
    assert calls == ["b"]
    assert [(c.step, c.restored) for c in result.trace] == [("a", True), ("b", False)]
    assert result.data_bag.get_job_data("a") == "A"
    assert info is not None
    assert (info.status, info.sessions, info.interruptions, info.owner) == ("ok", 2, 1, None)


def test_two_store_objects_in_one_process_share_a_key_safely(tmp_path: Path):
    """Two stores on one file in one process: while one runs a key, the other waits and then gets its result."""
    path = tmp_path / "runs.db"
    first, second = SqliteStore(path), SqliteStore(path, lease=10)
    inside, leave = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow() -> str:
        calls.append("slow")
        inside.set()
        leave.wait(10)
        return "done"

    holder = threading.Thread(target=lambda: Coordinator([Step("slow", slow)], store=first).run(None, key="k"))
    holder.start()
    try:
        assert inside.wait(10)
        threading.Timer(0.1, leave.set).start()
        result = Coordinator([Step("slow", slow)], store=second).run(None, key="k")
    finally:
        leave.set()
        holder.join(10)
        first.close()
        second.close()

    assert calls == ["slow"]
    assert result.ok
    assert result.data_bag.get_job_data("slow") == "done"
    assert all(c.restored for c in result.trace)


def test_stores_in_threads_of_one_process_do_not_lock_each_other_out(tmp_path: Path):
    """Many threads running distinct keys on one store all finish ok without 'database is locked'."""
    with SqliteStore(tmp_path / "runs.db") as store:
        coordinator = Coordinator(
            [Step(f"s{i}", lambda item, i=i: (item, i)) for i in range(3)], store=store, key=lambda item: item
        )
        results = list(coordinator.run_many(range(200), workers=16))
        assert all(r.ok for r in results)
        assert len(store.runs(status="ok")) == 200
        assert Path(store.path).exists()


def test_a_version_1_store_is_migrated_and_keeps_its_runs(tmp_path: Path):
    """A store written before schema version 2 is migrated on opening; its finished runs still come back."""
    path = tmp_path / "v1.db"
    calls: list[str] = []

    def job(x: int) -> int:
        calls.append("job")
        return x * 2

    with SqliteStore(path) as store:
        assert Coordinator([Step("double", job)], store=store).run(21, key="k").ok
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE runs DROP COLUMN result")
    conn.execute("ALTER TABLE runs DROP COLUMN error_message")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    with SqliteStore(path) as store:
        again = Coordinator([Step("double", job)], store=store).run(21, key="k")
        assert store.run_info("k").status == "ok"  # type: ignore[union-attr]
    assert calls == ["job"]
    assert again.data_bag.get_job_data("double") == 42
    assert [(c.step, c.outcome, c.restored) for c in again.trace] == [("double", "ok", True)]
    conn = sqlite3.connect(path)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
    assert {"result", "error_message"} <= columns
