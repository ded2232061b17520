"""
The store file: what `SqliteStore` refuses to open (leaving it untouched), what `verify()` finds, and sharing one.
"""

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from choreograph import ChoreographError, Coordinator, KeyBusy, SqliteStore, Step, StoreError
from choreograph.durable.sqlite import SCHEMA_VERSION

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


def snapshot(folder: Path) -> dict[str, bytes]:
    """
    Every file in *folder* and its bytes.

    An ``-shm`` file only by name: it is SQLite's shared-memory index, where every reader of a WAL notes its
    place, and it holds no data (SQLite rebuilds it from the WAL).
    """
    return {
        item.name: b"" if item.name.endswith("-shm") else item.read_bytes()
        for item in sorted(folder.iterdir())
        if item.is_file()
    }


def assert_refused(path: Path) -> StoreError:
    """
    Opening *path* raises StoreError (an OSError and a ChoreographError) and changes nothing.

    The file keeps its bytes, and no file appears beside it or changes there (no -wal, -shm or -journal). Nor did
    one appear for a while: SQLite was only asked through connections that can't write (read-only or immutable).
    """
    before = snapshot(path.parent)
    with patch.object(sqlite3, "connect", wraps=sqlite3.connect) as connect, pytest.raises(StoreError) as info:
        SqliteStore(path)
    for call in connect.call_args_list:
        assert call.kwargs.get("uri") is True, call
        assert call.args[0].endswith(("?immutable=1", "?mode=ro")), call
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, ChoreographError)
    assert info.value.path == str(path)
    assert "nothing was changed" in info.value.problem
    assert snapshot(path.parent) == before
    return info.value


def page_size(data: bytes) -> int:
    raw = int.from_bytes(data[16:18], "big")
    return 65536 if raw == 1 else raw


def header_pages(data: bytes) -> int:
    return int.from_bytes(data[28:32], "big")


@pytest.fixture(scope="module")
def store_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real, closed store of 300 runs (its header's page count valid, no WAL left)."""
    path = tmp_path_factory.mktemp("store") / "full.db"
    make_store_file(path)
    data = path.read_bytes()
    assert int.from_bytes(data[24:28], "big") == int.from_bytes(data[92:96], "big")  # the in-header size is valid
    assert len(data) == header_pages(data) * page_size(data)
    return data


def damaged(tmp_path: Path, data: bytes | bytearray) -> Path:
    """A store file holding *data*, alone in its own folder."""
    folder = tmp_path / "damaged"
    folder.mkdir(parents=True)
    path = folder / "runs.db"
    path.write_bytes(bytes(data))
    return path


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


CUTS = {
    "1 byte": lambda size, page: size - 1,
    "half a page": lambda size, page: size - page // 2,
    "a page": lambda size, page: size - page,
    "3 pages": lambda size, page: size - 3 * page,
    "to half": lambda size, page: size // 2,
    "to a tenth": lambda size, page: size // 10,
    "to one page": lambda size, page: page,
    "to 99 bytes": lambda size, page: 99,
}


@pytest.mark.parametrize("cut", CUTS)
def test_a_truncated_store_is_refused_on_opening_and_left_unchanged(tmp_path: Path, store_bytes: bytes, cut: str):
    """A store cut short, by a byte, half a page or whole pages, is refused at once: StoreError, nothing changed."""
    size = CUTS[cut](len(store_bytes), page_size(store_bytes))
    path = damaged(tmp_path, store_bytes[:size])

    error = assert_refused(path)

    assert "truncated" in error.problem
    if size >= 100:
        assert f"the file has {size} bytes" in error.problem
        assert f"says {header_pages(store_bytes)} pages of {page_size(store_bytes)} bytes" in error.problem


def test_a_header_claiming_more_pages_than_the_file_holds_is_refused(tmp_path: Path, store_bytes: bytes):
    """A header whose page count says the file is longer than it is: refused, nothing changed."""
    data = bytearray(store_bytes)
    data[28:32] = (header_pages(store_bytes) + 2).to_bytes(4, "big")

    error = assert_refused(damaged(tmp_path, data))

    assert f"says {header_pages(store_bytes) + 2} pages" in error.problem


def test_a_file_longer_than_its_header_says_is_refused(tmp_path: Path, store_bytes: bytes):
    """A whole page more than the header counts (something wrote past the end): refused, nothing changed."""
    error = assert_refused(damaged(tmp_path, store_bytes + bytes(page_size(store_bytes))))

    assert "truncated or damaged" in error.problem


def test_without_a_valid_page_count_the_file_must_still_be_whole_pages(tmp_path: Path, store_bytes: bytes):
    """
    A header whose page count is not valid (version-valid-for != change counter, as old SQLite writers left it).

    SQLite then takes the size from the file: whole pages open, whatever the stale count says; half a page more is
    refused.
    """
    data = bytearray(store_bytes)
    data[92:96] = (int.from_bytes(data[24:28], "big") + 1).to_bytes(4, "big")
    data[28:32] = (7).to_bytes(4, "big")  # stale: ignored

    with SqliteStore(damaged(tmp_path, data)) as store:
        assert len(store.runs()) == 300
        store.verify()
    error = assert_refused(damaged(tmp_path / "cut", data[: -page_size(data) // 2]))
    assert "not a whole number of 4096-byte pages" in error.problem


def test_a_header_with_an_impossible_page_size_is_refused(tmp_path: Path, store_bytes: bytes):
    """A page size that is not a power of two between 512 and 65536 is damage: refused, nothing changed."""
    data = bytearray(store_bytes)
    data[16:18] = (1000).to_bytes(2, "big")

    error = assert_refused(damaged(tmp_path, data))

    assert "impossible page size (1000)" in error.problem


def test_random_bytes_in_the_middle_open_and_are_caught_by_verify(tmp_path: Path, store_bytes: bytes):
    """
    256 random bytes (seed 2024) written into the middle of a store: its header and size are right, so it opens.

    Opening does not read every page (``PRAGMA quick_check`` costs 60 ms or more on a 50 MB store, see
    benchmarks/store_open.py): `verify()` is what finds the damage, naming SQLite's findings. Opening, verifying
    and closing write nothing: the folder holds the same bytes afterwards.
    """
    data = bytearray(store_bytes)
    size = page_size(data)
    middle = len(data) // 2 // size * size + size // 2  # inside the middle page, clear of its header
    data[middle : middle + 256] = random.Random(2024).randbytes(256)
    path = damaged(tmp_path, data)
    before = snapshot(path.parent)

    with SqliteStore(path) as store:
        with pytest.raises(StoreError) as info:
            store.verify()
        with pytest.raises(StoreError):  # reading the damaged pages fails too, as a StoreError
            [store.events(str(key)) for key in range(300)]

    assert "SQLite's integrity check failed" in info.value.problem
    assert "page" in info.value.problem
    assert snapshot(path.parent) == before


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


def test_a_store_whose_schema_page_is_damaged_is_refused_without_a_wal_appearing(tmp_path: Path, store_bytes: bytes):
    """
    Page 1 garbled after its 100-byte header (the schema's b-tree): the header and size are right, SQLite can't read.

    Refused; SQLite only read it as immutable, so no -wal or -shm file appeared, not even for a moment.
    """
    data = bytearray(store_bytes)
    data[100:1100] = random.Random(7).randbytes(1000)

    error = assert_refused(damaged(tmp_path, data))

    assert "corrupt" in error.problem


def test_a_sqlite_file_of_another_application_in_wal_mode_is_refused_without_a_wal_appearing(tmp_path: Path):
    """Another application's WAL-mode file, closed: refused from its header alone; no -wal or -shm file appears."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    assert sorted(item.name for item in tmp_path.iterdir()) == ["other.db"]

    error = assert_refused(path)

    assert "another application" in error.problem


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


# -- files with a WAL: another process has them open, or died with them open --------------------------------


def open_elsewhere(path: Path) -> sqlite3.Connection:
    """Another connection to the store that writes 400 runs to its WAL and never checkpoints (as another process)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA wal_autocheckpoint=0")
    other.execute("BEGIN")
    other.executemany(
        "INSERT INTO runs (key, status, generation, sessions, input, created, updated)"
        " VALUES (?, 'ok', 1, 1, ?, ?, ?3)",
        ((f"w{i}", json.dumps("y" * 500), time.time() + i) for i in range(400)),
    )
    other.execute("COMMIT")
    return other


def test_a_store_with_uncheckpointed_wal_frames_of_a_live_connection_opens(tmp_path: Path):
    """While another connection's runs are only in the WAL, the store opens, sees them, verifies; both go on."""
    path = tmp_path / "runs.db"
    make_store_file(path, keys=5)
    other = open_elsewhere(path)
    try:
        assert Path(f"{path}-wal").stat().st_size > 400 * 500  # the new pages are in the WAL, not in the file
        with SqliteStore(path) as store:
            assert store.counts()["ok"] == 405
            store.verify()
            assert Coordinator([Step("a", lambda: 1)], store=store).run(None, key="mine").ok
        assert other.execute("SELECT count(*) FROM runs").fetchone() == (406,)
    finally:
        other.close()
    with SqliteStore(path) as store:
        assert len(store.runs()) == 406


def crashed(tmp_path: Path, *statements: str) -> Path:
    """
    The files a process leaves when it is killed with runs in its WAL (after *statements*): the file, -wal, -shm.

    No connection to them is alive: the next one to close would checkpoint the WAL into the file.
    """
    live = tmp_path / "live" / "runs.db"
    live.parent.mkdir()
    make_store_file(live, keys=5)
    other = open_elsewhere(live)
    for statement in statements:
        other.execute(statement)
    left = tmp_path / "crashed" / "runs.db"
    left.parent.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(f"{live}{suffix}", f"{left}{suffix}")
    other.close()
    return left


def crashed_mid_checkpoint(tmp_path: Path) -> Path:
    """
    The files a crash in the middle of a checkpoint leaves: the WAL whole, the file's page 1 already copied from it.

    A checkpoint copies pages in page order, so page 1 (the header) reaches the file first: after that crash the
    header counts pages the file does not have yet. SQLite recovers from the WAL; the header check must allow it.
    """
    path = crashed(tmp_path)
    wal = Path(f"{path}-wal").read_bytes()
    size = int.from_bytes(wal[8:12], "big")
    frames = [wal[at : at + 24 + size] for at in range(32, len(wal) - size - 23, 24 + size)]
    first_page = [frame[24:] for frame in frames if int.from_bytes(frame[:4], "big") == 1][-1]
    with path.open("r+b") as file:
        file.write(first_page)
    assert header_pages(first_page) * size > path.stat().st_size
    return path


def test_a_store_left_by_a_crash_in_the_middle_of_a_checkpoint_opens_whole(tmp_path: Path):
    """A header ahead of the file's length is no damage while the WAL holds the pages: it opens with every run."""
    path = crashed_mid_checkpoint(tmp_path)

    with SqliteStore(path) as store:
        assert store.counts()["ok"] == 405
        store.verify()


def test_the_same_file_without_its_wal_is_refused(tmp_path: Path):
    """Without the WAL, that header disagrees with the file's size: refused, nothing changed."""
    path = crashed_mid_checkpoint(tmp_path)
    Path(f"{path}-wal").unlink()

    assert "truncated or damaged" in assert_refused(path).problem


def test_a_wal_holding_a_newer_schema_is_refused_without_checkpointing_it(tmp_path: Path):
    """
    A newer choreograph was killed after raising the schema version in its WAL: refused, by a read-only look.

    Neither the file nor its WAL changes: a read-write connection, closing last, would checkpoint the WAL.
    """
    path = crashed(tmp_path, "PRAGMA user_version = 99")

    assert "schema version 99" in assert_refused(path).problem


def test_a_wal_holding_a_damaged_schema_is_refused_without_checkpointing_it(tmp_path: Path):
    """A WAL left by a killed process, in which the runs table is gone: refused by the read-only look, unchanged."""
    path = crashed(tmp_path, "DROP TABLE runs")

    assert "no such table: runs" in assert_refused(path).problem


def test_a_wal_of_a_killed_process_is_recovered_on_opening(tmp_path: Path):
    """A sound store left with runs only in its WAL by a killed process opens with every run."""
    path = crashed(tmp_path)

    with SqliteStore(path) as store:
        assert store.counts()["ok"] == 405
        store.verify()


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


def test_a_store_in_a_folder_with_uri_characters_in_its_name_opens_again(tmp_path: Path):
    """A path with spaces, ``#``, ``?`` and ``%`` (SQLite is asked through file: URIs) opens, and reopens."""
    folder = tmp_path / "my runs #1 ?a=b %41"
    folder.mkdir()
    with SqliteStore(folder / "runs?.db") as store:
        assert Coordinator([Step("a", lambda: "A")], store=store).run(None, key="k").ok
    with SqliteStore(folder / "runs?.db") as store:
        assert [info.key for info in store.runs()] == ["k"]
        store.verify()


def test_an_empty_sqlite_database_becomes_a_store(tmp_path: Path):
    """A SQLite file with one page and no tables (no application id yet) is accepted and becomes a store."""
    path = tmp_path / "blank.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # writes page 1, nothing else
    conn.close()
    assert path.stat().st_size == page_size(path.read_bytes())

    with SqliteStore(path) as store:
        assert Coordinator([Step("a", lambda: "A")], store=store).run(None, key="k").ok
        store.verify()


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
    conn.executescript("DROP TABLE entity_messages; DROP TABLE entities")  # undo schema version 7
    conn.execute("DROP TABLE messages")  # undo schema version 6
    conn.execute("DROP TABLE queue_servers")
    conn.execute("ALTER TABLE runs DROP COLUMN trace_context")  # undo schema version 5
    conn.execute("ALTER TABLE events DROP COLUMN traceback")
    conn.execute("DROP INDEX runs_by_updated")
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


def test_a_version_2_store_gets_the_index_runs_lists_by(tmp_path: Path):
    """A store of schema version 2 is migrated on opening: the index on (updated, key) appears; runs stay."""
    path = tmp_path / "v2.db"
    make_store_file(path, keys=5)
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE entity_messages; DROP TABLE entities")  # undo schema version 7
    conn.execute("DROP TABLE messages")  # undo schema version 6
    conn.execute("DROP TABLE queue_servers")
    conn.execute("ALTER TABLE runs DROP COLUMN trace_context")  # undo schema version 5
    conn.execute("ALTER TABLE events DROP COLUMN traceback")
    conn.execute("DROP INDEX runs_by_updated")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()

    with SqliteStore(path) as store:
        assert len(store.runs()) == 5
        store.verify()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT key FROM runs ORDER BY updated DESC, key LIMIT 5").fetchall()
    conn.close()
    assert "runs_by_updated" in str(plan)


# -- runs(): pages of keys, in bounded memory ------------------------------------------------------------


def insert_runs(path: Path, rows: list[tuple[str, str, float]]) -> None:
    """Write (key, status, updated) rows straight into the runs table: many runs, fast, with chosen times."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (key, status, generation, sessions, input, created, updated)"
        ' VALUES (?, ?, 1, 1, \'{"some": "input of a realistic size for a record"}\', ?3, ?3)',
        rows,
    )
    conn.execute("COMMIT")
    conn.close()


def test_runs_pages_through_equal_update_times_without_losing_or_repeating_a_run(tmp_path: Path):
    """
    2,500 runs with only 3 distinct `updated` values, so page boundaries fall inside runs of equal time.

    Iteration gives every run once, ordered by `updated` descending, then key; the filters page the same way.
    """
    path = tmp_path / "runs.db"
    SqliteStore(path).close()
    rows = [(f"k{i:05d}", "ok" if i % 4 else "failed", float(i % 3)) for i in range(2_500)]
    insert_runs(path, rows)
    expected = [key for key, _, _ in sorted(rows, key=lambda row: (-row[2], row[0]))]

    with SqliteStore(path) as store:
        assert [info.key for info in store.runs()] == expected
        failed = [key for key, status, _ in sorted(rows, key=lambda row: (-row[2], row[0])) if status == "failed"]
        assert [info.key for info in store.runs(status="failed")] == failed
        assert [info.key for info in store.runs(limit=2_001)] == expected[:2_001]
        assert store.runs()[1_999].key == expected[1_999]
        assert [info.key for info in store.runs()[998:1_003]] == expected[998:1_003]
        assert len(store.runs()) == 2_500
        assert store.counts() == {**dict.fromkeys(store.counts(), 0), "ok": 1_875, "failed": 625}


def test_iterating_runs_holds_one_page_in_memory_however_many_runs(tmp_path: Path):
    """
    A loop over 30,000 runs keeps Python's memory peak under 2 MB (one page of 1,000 runs).

    Holding them all, as `list(store.runs())` does, takes several times that: the bound is real, not a small store.
    """
    path = tmp_path / "runs.db"
    SqliteStore(path).close()
    insert_runs(path, [(f"order-{i:08d}", "ok", float(i)) for i in range(30_000)])

    def peak(action: object) -> float:
        with SqliteStore(path) as store:
            tracemalloc.start()
            try:
                action(store)  # type: ignore[operator]
                return tracemalloc.get_traced_memory()[1] / 1e6
            finally:
                tracemalloc.stop()

    looped = peak(lambda store: sum(1 for _ in store.runs()))
    held = peak(lambda store: list(store.runs()))

    assert looped < 2.0
    assert held > 4 * looped


# -- verify() ---------------------------------------------------------------------------------------------


def tamper(path: Path, *statements: str) -> None:
    """Change the file the way a bug, a tool or a person would, behind the store's back."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.close()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    make_store_file(path, keys=20)
    return path


def verify_problem(path: Path) -> str:
    """Open the store at *path* (it must open), and return the problem `verify()` raises."""
    with SqliteStore(path) as store, pytest.raises(StoreError) as info:
        store.verify()
    return info.value.problem


def test_verify_returns_none_for_a_sound_file(store_path: Path):
    """`verify()` of a sound store returns None and leaves the file's bytes as they were."""
    before = store_path.read_bytes()
    with SqliteStore(store_path) as store:
        assert store.verify() is None
    assert store_path.read_bytes() == before


def test_verify_names_events_without_a_run(store_path: Path):
    """Events whose run row is gone (deleted behind the store's back) are named, with their count and a key."""
    tamper(store_path, "DELETE FROM runs WHERE key IN ('3', '7')")

    assert "4 events have no runs row (e.g. key '3')" in verify_problem(store_path)


def test_verify_names_events_of_a_later_generation_or_session(store_path: Path):
    """An event of a generation or session its run never had is named."""
    tamper(
        store_path, "UPDATE events SET generation = 5 WHERE key = '2'", "UPDATE events SET session = 9 WHERE key = '4'"
    )

    assert "4 events belong to a generation or session their run never had (e.g. key '2')" in verify_problem(store_path)


def test_verify_names_unknown_statuses_and_half_leases(store_path: Path):
    """A status choreograph does not know, and an owner without a lease expiry, are named together."""
    tamper(store_path, "UPDATE runs SET status = 'lost' WHERE key = '1'", "UPDATE runs SET owner = 'x' WHERE key = '5'")

    problem = verify_problem(store_path)

    assert "1 runs have an unknown status (e.g. key '1')" in problem
    assert "1 runs have a lease holder without a lease expiry" in problem


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("ALTER TABLE runs DROP COLUMN error_message", "table runs has no column error_message"),
        ("DROP INDEX events_by_run", "index events_by_run is missing"),
        ("DROP INDEX runs_by_updated", "index runs_by_updated is missing"),
    ],
)
def test_verify_names_a_missing_column_or_index(store_path: Path, change: str, named: str):
    """A schema that lost a column or an index (it still opens) is named by `verify()`."""
    tamper(store_path, change)

    assert named in verify_problem(store_path)


def test_verify_names_a_column_of_another_type_and_an_index_on_other_columns(store_path: Path):
    """A column redeclared with another type, and an index rebuilt on other columns, are named."""
    tamper(
        store_path,
        "ALTER TABLE runs DROP COLUMN error_message",
        "ALTER TABLE runs ADD COLUMN error_message BLOB",
        "DROP INDEX events_by_run",
        "CREATE INDEX events_by_run ON events (key)",
    )

    problem = verify_problem(store_path)

    assert "table runs: column error_message is ('BLOB', 0, 0), expected ('TEXT', 0, 0)" in problem
    assert "index events_by_run is not on the expected columns" in problem


def test_verify_names_another_application_id_and_schema_version(store_path: Path):
    """An application id or schema version changed while the store is open are named by `verify()`."""
    with SqliteStore(store_path) as store:
        tamper(store_path, "PRAGMA application_id = 7", "PRAGMA user_version = 1")
        with pytest.raises(StoreError) as info:
            store.verify()

    assert f"application id 0x7 is not choreograph's ({APPLICATION_ID:#x})" in info.value.problem
    assert f"schema version 1, expected {SCHEMA_VERSION}" in info.value.problem


def test_verify_names_a_file_cut_short_while_open(store_path: Path):
    """A file truncated by half a page while a store has it open: `verify()` says so, as opening would."""
    with SqliteStore(store_path) as store:
        size = store_path.stat().st_size
        os.truncate(store_path, size - 2048)
        with pytest.raises(StoreError, match="truncated or damaged"):
            store.verify()


def test_verify_of_a_deleted_file_says_it_is_gone(store_path: Path):
    """A store whose file was deleted while open: `verify()` says the file is gone."""
    with SqliteStore(store_path) as store:
        for item in store_path.parent.glob("runs.db*"):
            item.unlink()
        with pytest.raises(StoreError, match="the file is gone"):
            store.verify()


def test_a_sqlite_store_shows_its_connection_settings(tmp_path: Path) -> None:
    """`synchronous` and `busy_timeout` say how the store opens its connections (a process executor reopens it so)."""
    with SqliteStore(tmp_path / "a.db", synchronous="FULL", busy_timeout=2.5) as store:
        assert (store.synchronous, store.busy_timeout) == ("FULL", 2.5)
    with SqliteStore(tmp_path / "b.db") as store:
        assert store.synchronous in {"NORMAL", "FULL"}
        assert store.busy_timeout > 0
