"""
What is PostgreSQL's own about `PostgresStore`: its schema, migrations, connections, processes and machines.

The durable suite (every test taking ``store`` or ``make_store``) runs on PostgreSQL too;
these tests cover the rest. Each works in schemas of its own (the ``pg_schema`` fixture).
"""

import contextlib
import copy
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import choreograph.durable.postgres as pg
from choreograph import ChoreographError, Coordinator, JsonCodec, KeyBusy, PostgresStore, Step, StoreError
from choreograph._coordinator import _store_recipe
from choreograph.durable.leases import HOST

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "_pg_worker.py"
if str(TESTS) not in sys.path:  # worker processes import the callbacks by reference: from a module on sys.path
    sys.path.insert(0, str(TESTS))

import _pg_worker  # noqa: E402

START_WITHIN = 60.0
EXIT_WITHIN = 120.0


@contextlib.contextmanager
def server(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the test server (autocommit), outside any store."""
    with contextlib.closing(psycopg.connect(url, autocommit=True)) as conn:
        yield conn


def tables_of(url: str, schema: str) -> list[str]:
    with server(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", (schema,)
        ).fetchall()
    return [name for (name,) in rows]


def schema_exists(url: str, schema: str) -> bool:
    with server(url) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def run_sql(url: str, statement: str, schema: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run *statement* with ``{}`` as the quoted *schema*; its rows, if it has any."""
    with server(url) as conn:
        cursor = conn.execute(sql.SQL(statement).format(sql.Identifier(schema)), params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def schema(pg_schema: Callable[[], str]) -> str:
    return pg_schema()


#: The tables of a store of the current version, sorted.
TABLES = ["entities", "entity_messages", "events", "messages", "queue_servers", "runs", "store_version"]


def open_store(url: str, schema: str, **options: Any) -> PostgresStore:
    return PostgresStore(url, schema=schema, **options)


# -- the schema -----------------------------------------------------------------------------


def test_a_missing_schema_is_created_with_its_tables_and_version(postgres_url: str, schema: str):
    assert not schema_exists(postgres_url, schema)
    with open_store(postgres_url, schema) as store:
        assert store.location == f"{postgres_url}#{schema}"
        assert repr(store) == f"PostgresStore({postgres_url + '#' + schema!r}, codec='json')"
        assert (store.schema, store.lease, store.max_interruptions) == (schema, 60.0, 3)
        store.verify()
    assert tables_of(postgres_url, schema) == TABLES
    assert run_sql(postgres_url, "SELECT application, version FROM {}.store_version", schema) == [
        ("choreograph", pg.SCHEMA_VERSION)
    ]


def test_an_empty_schema_made_beforehand_gets_the_tables(postgres_url: str, schema: str):
    """A schema a database administrator created (empty) is the store's to fill."""
    run_sql(postgres_url, "CREATE SCHEMA {}", schema)
    with open_store(postgres_url, schema) as store:
        result = Coordinator([Step("a", lambda: "A")], store=store).run(None, key="k")
        assert result.ok
    assert tables_of(postgres_url, schema) == TABLES


def test_reopening_keeps_the_runs(postgres_url: str, schema: str):
    with open_store(postgres_url, schema) as store:
        assert Coordinator([Step("a", lambda x: x * 2)], store=store, key=str).run(21).ok
    calls: list[int] = []
    with open_store(postgres_url, schema) as again:
        result = Coordinator([Step("a", lambda x: calls.append(x) or 0)], store=again, key=str).run(21)
        info = again.run_info("21")
    assert calls == []
    assert result.data_bag.get_job_data("a") == 42
    assert [c.restored for c in result.trace] == [True]
    assert info is not None
    assert info.status == "ok"


def test_create_false_refuses_a_missing_store_and_creates_nothing(postgres_url: str, schema: str):
    with pytest.raises(StoreError) as info:
        open_store(postgres_url, schema, create=False)
    assert info.value.path == f"{postgres_url}#{schema}"
    assert info.value.problem == f"no choreograph store in schema {schema!r} (create=False); nothing was created"
    assert not schema_exists(postgres_url, schema)


def test_a_schema_holding_other_tables_is_refused_untouched(postgres_url: str, schema: str):
    run_sql(postgres_url, "CREATE SCHEMA {0}; CREATE TABLE {0}.orders (id int); CREATE TABLE {0}.runs (x int)", schema)
    with pytest.raises(StoreError) as info:
        open_store(postgres_url, schema)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, ChoreographError)
    assert info.value.problem == (
        f"schema {schema!r} holds tables that aren't a choreograph store's (orders, runs);"
        " choose another schema. Nothing was changed"
    )
    assert tables_of(postgres_url, schema) == ["orders", "runs"]


def test_a_version_table_of_another_shape_is_not_choreographs(postgres_url: str, schema: str):
    run_sql(postgres_url, "CREATE SCHEMA {0}; CREATE TABLE {0}.store_version (name text)", schema)
    with pytest.raises(StoreError, match=r"holds tables that aren't a choreograph store's \(store_version\)"):
        open_store(postgres_url, schema)


def test_a_schema_of_a_newer_choreograph_is_refused_untouched(postgres_url: str, schema: str):
    open_store(postgres_url, schema).close()
    run_sql(postgres_url, "UPDATE {}.store_version SET version = 99", schema)
    with pytest.raises(StoreError) as info:
        open_store(postgres_url, schema)
    assert info.value.problem == (
        f"schema version 99 is newer than this choreograph supports ({pg.SCHEMA_VERSION}); nothing was changed"
    )
    assert run_sql(postgres_url, "SELECT version FROM {}.store_version", schema) == [(99,)]


def test_an_older_schema_is_migrated_in_place_keeping_its_runs(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
):
    """A schema of version N opened by a choreograph of N + 1: the next migration runs, under the lock, once."""
    with open_store(postgres_url, schema) as store:
        assert Coordinator([Step("a", lambda: "A")], store=store).run(None, key="old").ok
    monkeypatch.setitem(pg.MIGRATIONS, pg.SCHEMA_VERSION, "ALTER TABLE {s}.runs ADD COLUMN note text")
    monkeypatch.setattr(pg, "SCHEMA_VERSION", pg.SCHEMA_VERSION + 1)

    stores = [open_store(postgres_url, schema) for _ in range(2)]  # the second finds it migrated
    try:
        assert run_sql(postgres_url, "SELECT version FROM {}.store_version", schema) == [(pg.SCHEMA_VERSION,)]
        columns = run_sql(
            postgres_url,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'runs'"
            " AND column_name = 'note'",
            schema,
            (schema,),
        )
        assert columns == [("note",)]
        info = stores[1].run_info("old")
        assert info is not None
        assert info.status == "ok"
        stores[1].verify()  # the schema the migrations build, now with the note
    finally:
        for store in stores:
            store.close()


def test_stores_opening_one_new_schema_at_once_create_it_once(postgres_url: str, schema: str):
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        start.wait()
        try:
            opened.append(open_store(postgres_url, schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()
    assert errors == []
    assert len(opened) == 4
    assert run_sql(postgres_url, "SELECT count(*) FROM {}.store_version", schema) == [(1,)]


def test_two_schemas_are_two_stores(postgres_url: str, pg_schema: Callable[[], str]):
    """The same key in two schemas of one database: two runs, listed, counted and pruned apart."""
    with open_store(postgres_url, pg_schema()) as first, open_store(postgres_url, pg_schema()) as second:
        Coordinator([Step("a", lambda: "one")], store=first).run(None, key="k")
        Coordinator([Step("a", lambda: "two")], store=second).run(None, key="k")
        Coordinator([Step("b", lambda: "B")], store=second).run(None, key="only-second")

        assert [info.key for info in first.runs()] == ["k"]
        assert sorted(info.key for info in second.runs()) == ["k", "only-second"]
        assert first.counts()["ok"] == 1
        assert second.counts()["ok"] == 2
        assert [first.decode(e.output or "") for e in first.events("k")] == ["one"]
        assert [second.decode(e.output or "") for e in second.events("k")] == ["two"]
        assert first.prune(status="ok") == 1
        assert first.run_info("k") is None
        assert second.run_info("k") is not None


def test_a_schema_name_is_quoted(postgres_url: str, pg_schema: Callable[[], str]):
    odd = f'{pg_schema()} "Odd"; name'
    try:
        with open_store(postgres_url, odd) as store:
            assert Coordinator([Step("a", lambda: 1)], store=store).run(None, key="k").ok
            assert store.location.endswith(f"#{odd}")
        assert tables_of(postgres_url, odd) == TABLES
    finally:
        run_sql(postgres_url, "DROP SCHEMA IF EXISTS {} CASCADE", odd)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"schema": ""}, ValueError, "schema must be a name of 1 to 63 bytes"),
        ({"schema": "x" * 64}, ValueError, "schema must be a name of 1 to 63 bytes"),
        ({"schema": "pg_mine"}, ValueError, "not starting with 'pg_'"),
        ({"schema": 3}, TypeError, "schema must be a str, got int"),
        ({"lease": 0}, ValueError, "lease must be > 0 seconds, got 0"),
        ({"timeout": -1}, ValueError, "timeout must be > 0 seconds, got -1"),
        ({"max_interruptions": -1}, ValueError, "max_interruptions must be an int >= 0, got -1"),
        ({"max_connections": 0}, ValueError, "max_connections must be an int >= 1, got 0"),
        ({"codec": "json"}, TypeError, "codec must implement choreograph.Codec, got str"),
    ],
)
def test_bad_options_are_refused_before_connecting(options: dict[str, Any], error: type[Exception], message: str):
    with pytest.raises(error, match=message):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none", **options)


def test_a_conninfo_that_is_not_a_str_is_a_type_error():
    with pytest.raises(TypeError, match=r"conninfo must be a str \(a postgresql:// URL or key=value pairs\), got int"):
        PostgresStore(5432)  # type: ignore[arg-type]


# -- connections -------------------------------------------------------------------------------


def test_an_unreachable_server_is_a_store_error_naming_it_without_the_password():
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        PostgresStore("postgresql://app:s3cret@127.0.0.1:1/runs", schema="batch", timeout=5)
    assert time.monotonic() - started < 5  # refused at once, not waited for
    assert info.value.path == "postgresql://app@127.0.0.1:1/runs#batch"
    assert info.value.problem.startswith("cannot connect to the server: connection failed:")
    assert 'connection to server at "127.0.0.1", port 1 failed' in info.value.problem
    assert "\n" not in info.value.problem
    assert "s3cret" not in str(info.value)


def test_a_missing_database_is_named(postgres_url: str):
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(StoreError, match='database "no_such_database_here" does not exist') as info:
        PostgresStore(url)
    assert info.value.path == f"{url}#choreograph"


def test_a_connection_string_that_does_not_parse_is_named_without_its_password():
    with pytest.raises(StoreError, match="invalid connection string") as info:
        PostgresStore("host=db password=s3cret port")
    assert "s3cret" not in str(info.value)
    assert info.value.path == "host=db password=*** port"


def test_key_value_conninfo_and_its_location(postgres_url: str, schema: str):
    params = psycopg.conninfo.conninfo_to_dict(postgres_url)
    conninfo = f"host={params['host']} port={params['port']} dbname={params['dbname']} user={params['user']}"
    with PostgresStore(conninfo, schema=schema) as store:
        assert (
            store.location
            == f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}#{schema}"
        )
        assert store.conninfo == conninfo


def test_a_pool_with_every_connection_in_use_times_out_with_a_store_error(postgres_url: str, schema: str):
    with open_store(postgres_url, schema, max_connections=1, timeout=0.3) as store:
        outcome: list[object] = []
        with store.connection() as conn:
            conn.execute("SELECT 1")
            thread = threading.Thread(target=lambda: outcome.append(_raised(lambda: store.run_info("k"))))
            thread.start()
            thread.join(30)
        error = outcome[0]
        assert isinstance(error, StoreError)
        assert error.problem.startswith(
            "cannot read: no connection within 0.3 s (all 1 of the store's connections in use, or the server"
            " unreachable:"
        )
        assert store.run_info("k") is None  # the connection is back: reads work again


def _raised(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as exc:
        return exc


def test_many_threads_share_a_few_connections(postgres_url: str, schema: str):
    """32 workers on a pool of 2 connections: every run finishes, each event committed through some connection."""
    with open_store(postgres_url, schema, max_connections=2) as store:
        flow = Coordinator[int]([Step("a", lambda x: x + 1), Step("b", lambda x: x * 2)], store=store, key=str)
        results = list(flow.run_many(range(200), workers=32))
        assert sorted(r.data_bag.get_job_data("b") for r in results) == [x * 2 for x in range(200)]
        assert store.counts()["ok"] == 200
        assert {(info.sessions, info.interruptions) for info in store.runs()} == {(1, 0)}  # each begun once
        with store.connection() as conn:
            (others,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'choreograph'"
                " AND pid <> pg_backend_pid() AND query LIKE %s",
                (f"%{schema}%",),
            ).fetchone()
        assert others <= 1  # the other of its 2 connections (this one is in use here)


def test_a_closed_store_refuses_everything_and_closing_twice_is_fine(postgres_url: str, schema: str):
    store = open_store(postgres_url, schema)
    flow = Coordinator([Step("a", lambda: 1)], store=store)
    begun = store.begin("k", "null", fresh=False)
    assert not isinstance(begun, str)
    assert begun.recorder is not None
    store.close()
    store.close()
    for call in (
        lambda: store.run_info("k"),
        store.runs,
        store.counts,
        store.verify,
        store.prune,
        lambda: store.begin("j", "null", fresh=False),
        lambda: begun.recorder.record(pg.NewEvent("a", "job", "ok", "1", None, None, 1, 0.1)),  # type: ignore[union-attr]
    ):
        with pytest.raises(StoreError, match="the store is closed") as info:
            call()
        assert info.value.path == store.location
    begun.recorder.release()  # quietly: the run is over either way
    with pytest.raises(StoreError, match="the store is closed"):
        flow.run(None, key="m")


def test_a_store_can_not_be_pickled_or_copied_but_its_configuration_ships(postgres_url: str, schema: str):
    with open_store(postgres_url, schema, lease=12.5, max_interruptions=7, max_connections=3, timeout=4) as store:
        for attempt in (lambda: pickle.dumps(store), lambda: copy.copy(store)):
            with pytest.raises(TypeError, match=r"a PostgresStore can't be pickled \(it holds open connections\)"):
                attempt()
        recipe = _store_recipe(store)
        assert recipe is not None
        with pickle.loads(pickle.dumps(recipe))() as reopened:  # noqa: S301 - our own recipe
            assert isinstance(reopened, PostgresStore)
            assert (reopened.conninfo, reopened.schema, reopened.location) == (postgres_url, schema, store.location)
            assert (reopened.lease, reopened.max_interruptions, reopened.max_connections, reopened.timeout) == (
                12.5,
                7,
                3,
                4.0,
            )
            assert isinstance(reopened.codec, JsonCodec)
            assert reopened.owner != store.owner


def test_worker_processes_reopen_the_store_from_its_configuration(postgres_url: str, schema: str):
    """ProcessExecutor: each worker opens the same schema; the runs are there, run by other processes."""
    with open_store(postgres_url, schema, lease=30) as store:
        flow = Coordinator[int]([Step("pid", _pg_worker.pid)], store=store, key=_pg_worker.key_of)
        results = list(flow.run_many(range(8), executor="processes", workers=2))
        assert all(r.ok for r in results)
        pids = {r.data_bag.get_job_data("pid") for r in results}
        assert os.getpid() not in pids
        assert store.counts()["ok"] == 8
        assert {store.decode(e.output or "") for info in store.runs() for e in store.events(info.key)} == pids
        again = list(flow.run_many(range(8), executor="processes", workers=2))
        assert all(call.restored for r in again for call in r.trace)


def test_choreograph_imports_without_psycopg_and_the_store_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
):
    script = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "from choreograph import PostgresStore\n"
        "try:\n"
        "    PostgresStore('postgresql://nobody@127.0.0.1:1/none')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "PostgresStore needs psycopg 3 and psycopg-pool: install the extra with pip install 'choreograph[postgres]'"
    )
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, choreograph; print('psycopg' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert plain.stdout.strip() == "False"


# -- leases across processes and machines ----------------------------------------------------------


def _lease(url: str, schema: str, key: str, owner: str, seconds: float, *, value: object = None) -> None:
    """Give *key* a running row leased to *owner* for *seconds* from now on the server's clock (negative: expired)."""
    run_sql(
        url,
        "INSERT INTO {}.runs (key, status, generation, sessions, input, owner, lease_until, created, updated)"
        " VALUES (%s, 'running', 1, 1, %s, %s, extract(epoch FROM clock_timestamp()) + %s, 0, 0)",
        schema,
        (key, json.dumps(value), owner, seconds),
    )


def test_a_key_another_machine_holds_is_waited_for_then_busy(postgres_url: str, schema: str):
    with open_store(postgres_url, schema, lease=0.2) as store:
        _lease(postgres_url, schema, "held", "elsewhere:1:abcd", 600)
        calls: list[str] = []
        started = time.monotonic()
        result = Coordinator([Step("a", lambda: calls.append("a"))], store=store).run(None, key="held")
    assert 1.1 <= time.monotonic() - started < 12
    assert isinstance(result.fatal, KeyBusy)
    assert result.fatal.owner == "elsewhere:1:abcd"
    assert calls == []


def test_a_lease_is_timed_on_the_servers_clock(postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch):
    """This machine's clock an hour ahead: another machine's live lease is still live."""
    with open_store(postgres_url, schema, lease=0.2) as store:
        _lease(postgres_url, schema, "held", "elsewhere:1:abcd", 600)
        ahead = types.SimpleNamespace(time=lambda: time.time() + 3600)
        monkeypatch.setattr(pg, "time", ahead)
        result = Coordinator([Step("a", lambda: "A")], store=store).run(None, key="held")
    assert isinstance(result.fatal, KeyBusy)


def test_an_expired_lease_of_another_machine_is_taken_over(postgres_url: str, schema: str):
    with open_store(postgres_url, schema) as store:
        _lease(postgres_url, schema, "stale", "elsewhere:1:abcd", -1)
        started = time.monotonic()
        result = Coordinator([Step("a", lambda: "A")], store=store).run(None, key="stale")
        info = store.run_info("stale")
    assert time.monotonic() - started < 5
    assert result.ok
    assert info is not None
    assert (info.status, info.sessions, info.interruptions, info.owner) == ("ok", 2, 1, None)


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(postgres_url: str, schema: str):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    with open_store(postgres_url, schema) as store:
        _lease(postgres_url, schema, "orphan", f"{HOST}:{gone.stdout.strip()}:abcd", 600)
        started = time.monotonic()
        result = Coordinator([Step("a", lambda: "A")], store=store).run(None, key="orphan")
    assert time.monotonic() - started < 5  # waiting for the lease would take 600 s
    assert result.ok


def test_a_session_that_lost_its_lease_records_nothing_more(postgres_url: str, schema: str):
    """A holder whose lease another took over: its renewing record fails, and its event is not stored."""
    with open_store(postgres_url, schema, lease=0.3) as store:
        begun = store.begin("k", "null", fresh=False)
        assert not isinstance(begun, str)
        assert begun.recorder is not None
        run_sql(postgres_url, "UPDATE {}.runs SET owner = 'elsewhere:1:abcd'", schema)
        time.sleep(0.15)  # past a third of the lease: the next record renews it
        with pytest.raises(StoreError, match="lost the lease of key 'k' to another process"):
            begun.recorder.record(pg.NewEvent("a", "job", "ok", "1", None, None, 1, 0.1))
        assert store.events("k") == []


def test_processes_contending_for_the_same_keys_run_each_once(postgres_url: str, schema: str, tmp_path: Path):
    """
    Three processes run the same 100 keys at once (in different orders), half of them stale leases of a dead machine.

    Every key is run (or taken over) by exactly one process: the ledger has each step once, every
    process gets every result ok, and each stale key was resumed once (2 sessions, 1 interruption).
    """
    open_store(postgres_url, schema).close()
    for key in range(0, 100, 2):
        _lease(postgres_url, schema, f"key-{key}", "elsewhere:1:abcd", -1, value=key)
    ledger = tmp_path / "ledger.db"
    with contextlib.closing(sqlite3.connect(ledger)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE ledger (key INTEGER, step TEXT, pid INTEGER)")
    go = tmp_path / "go"
    orders = ["up", "down", "rotated"]
    readies = [tmp_path / f"ready-{order}" for order in orders]
    location = f"{postgres_url}#{schema}"
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "many", location, str(ledger), str(ready), str(go), order],
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
        go.touch()
        outputs = [process.communicate(timeout=EXIT_WITHIN) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        summary = json.loads(stdout)
        assert (summary["results"], summary["ok"], summary["fatals"], summary["bad_outputs"]) == (100, 100, [], [])
    assert sum(json.loads(stdout)["ran"] for stdout, _ in outputs) == 100
    with contextlib.closing(sqlite3.connect(ledger)) as conn:
        rows = conn.execute("SELECT key, step, count(*) FROM ledger GROUP BY key, step").fetchall()
    assert sorted((key, step) for key, step, _ in rows) == sorted(
        (key, step) for key in range(100) for step in ("reserve", "charge")
    )
    assert {count for _, _, count in rows} == {1}
    with open_store(postgres_url, schema) as store:
        infos = {info.key: info for info in store.runs()}
        store.verify()
    assert {info.status for info in infos.values()} == {"ok"}
    assert {(infos[f"key-{k}"].sessions, infos[f"key-{k}"].interruptions) for k in range(0, 100, 2)} == {(2, 1)}
    assert {(infos[f"key-{k}"].sessions, infos[f"key-{k}"].interruptions) for k in range(1, 100, 2)} == {(1, 0)}


# -- verify ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("DELETE FROM {}.runs WHERE key = 'a'", "2 events have no runs row (e.g. key 'a')"),
        ("UPDATE {}.events SET session = 9", "3 events belong to a generation or session their run never had"),
        ("UPDATE {}.runs SET status = 'odd' WHERE key = 'b'", "1 runs have an unknown status (e.g. key 'b')"),
        (
            "UPDATE {}.runs SET lease_until = 5 WHERE key = 'b'",
            "1 runs have a lease holder without a lease expiry, or the other way round (e.g. key 'b')",
        ),
        ("DROP INDEX {}.runs_by_status", "index runs_by_status is missing"),
        (
            "DROP INDEX {0}.runs_by_status; CREATE INDEX runs_by_status ON {0}.runs (updated)",
            "index runs_by_status is not on the expected columns",
        ),
        ("DROP TABLE {}.store_version", "table store_version is missing"),
        ("ALTER TABLE {}.events DROP COLUMN traceback", "table events has no column traceback"),
        (
            "ALTER TABLE {}.runs ALTER COLUMN sessions TYPE bigint",
            "table runs: column sessions is ('bigint', 'NO', '', 'NO'), expected ('integer', 'NO', '', 'NO')",
        ),
        ("UPDATE {}.store_version SET application = 'other'", f"store_version holds [('other', {pg.SCHEMA_VERSION})]"),
    ],
)
def test_verify_names_what_is_wrong(postgres_url: str, schema: str, damage: str, problem: str):
    with open_store(postgres_url, schema) as store:
        flow = Coordinator([Step("x", lambda: 1), Step("y", lambda: 2)], store=store)
        flow.run(None, key="a")
        Coordinator([Step("x", lambda: 1)], store=store).run(None, key="b")
        store.verify()
        run_sql(postgres_url, damage, schema)
        with pytest.raises(StoreError) as info:
            store.verify()
    assert problem in info.value.problem
    assert info.value.path == store.location


def test_verify_leaves_nothing_behind(postgres_url: str, schema: str):
    with open_store(postgres_url, schema, max_connections=1) as store:  # one connection: verify's
        store.verify()
        with store.connection() as conn:
            (temporary,) = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"
            ).fetchone()
    assert temporary == 0
    assert tables_of(postgres_url, schema) == TABLES


# -- failures underneath ------------------------------------------------------------------------------


def test_without_psycopg_the_store_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # an import of it raises ImportError
    monkeypatch.setattr(pg, "_psycopg", None)
    with pytest.raises(ImportError, match=r"pip install 'choreograph\[postgres\]'") as info:
        PostgresStore("postgresql://nobody@127.0.0.1:1/none")
    assert info.value.name == "psycopg"


def test_connection_options_given_in_the_conninfo_are_kept(postgres_url: str, schema: str):
    with PostgresStore(f"{postgres_url}?connect_timeout=3&application_name=nightly", schema=schema) as store:
        with store.connection() as conn:
            (name,) = conn.execute("SELECT current_setting('application_name')").fetchone()
        assert name == "nightly"
        assert store.location == f"{postgres_url}#{schema}"


def test_a_role_that_may_not_create_the_schema_gets_a_store_error(postgres_url: str, schema: str):
    role = f"reader_{schema}"
    run_sql(postgres_url, "CREATE ROLE {} LOGIN", role)
    try:
        url = postgres_url.replace("://postgres@", f"://{role}@")
        with pytest.raises(StoreError) as info:
            PostgresStore(url, schema=schema)
        assert info.value.problem.startswith("cannot open the store's schema: permission denied for database")
        assert not schema_exists(postgres_url, schema)
    finally:
        run_sql(postgres_url, "DROP ROLE {}", role)


def test_a_role_granted_an_empty_schema_fills_it(postgres_url: str, schema: str):
    """A schema an administrator made and granted: a role without CREATE on the database opens the store in it."""
    role = f"app_{schema}"
    run_sql(postgres_url, "CREATE ROLE {} LOGIN", role)
    try:
        with server(postgres_url) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(*map(sql.Identifier, (schema, role))))
        with PostgresStore(postgres_url.replace("://postgres@", f"://{role}@"), schema=schema) as store:
            assert Coordinator([Step("a", lambda: "A")], store=store).run(None, key="k").ok
            store.verify()
        assert tables_of(postgres_url, schema) == TABLES
    finally:
        run_sql(postgres_url, "DROP SCHEMA IF EXISTS {} CASCADE", schema)
        run_sql(postgres_url, "DROP ROLE {}", role)


def test_closing_the_store_wakes_a_thread_waiting_for_a_connection(postgres_url: str, schema: str):
    store = open_store(postgres_url, schema, max_connections=1, timeout=30)
    outcome: list[object] = []
    with store.connection():
        waiting = threading.Thread(target=lambda: outcome.append(_raised(lambda: store.run_info("k"))))
        waiting.start()
        time.sleep(0.2)  # it waits in the pool
        closing = threading.Thread(target=store.close)
        closing.start()
        waiting.join(20)
    closing.join(20)
    assert isinstance(outcome[0], StoreError)
    assert outcome[0].problem == "the store is closed"


def test_tables_dropped_underneath_are_a_store_error_naming_the_call(postgres_url: str, schema: str):
    with open_store(postgres_url, schema) as store:
        flow = Coordinator(
            [Step("drop", lambda: run_sql(postgres_url, "DROP TABLE {}.events", schema) and None)], store=store
        )
        with pytest.raises(StoreError) as info:
            flow.run(None, key="k")
        assert info.value.problem.startswith("cannot record job of step 'drop': relation")
        assert "events" in info.value.problem
        with pytest.raises(StoreError, match="cannot read: relation"):
            store.events("k")


def test_a_store_closed_by_a_callback_fails_the_next_record(postgres_url: str, schema: str):
    store = open_store(postgres_url, schema)
    flow = Coordinator([Step("close", store.close)], store=store)
    with pytest.raises(StoreError, match="the store is closed"):
        flow.run(None, key="k")


def test_an_input_the_codec_cant_read_is_a_store_error(postgres_url: str, schema: str):
    with open_store(postgres_url, schema) as store:
        Coordinator([Step("a", lambda x: x)], store=store, key=str).run(5)
        run_sql(postgres_url, "UPDATE {}.runs SET input = 'not json{{'", schema)
        with pytest.raises(StoreError, match="cannot restore the input of key '5'"):
            store.stored_input("5")


def test_a_key_created_by_another_process_during_begin_is_read_again(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
):
    """Between `begin` finding no row and inserting one, another holder inserted it: begin reads its row instead."""
    with open_store(postgres_url, schema) as store:
        real = pg.begin_row
        calls: list[object] = []

        def racing(row: pg.Row | None, **options: Any) -> Any:
            if row is None and not calls:
                _lease(postgres_url, schema, "k", "elsewhere:1:abcd", 600)  # the other process, just now
            calls.append(row)
            return real(row, **options)

        monkeypatch.setattr(pg, "begin_row", racing)
        begun = store.begin("k", "null", fresh=True, restore=lambda row, events: [])
    assert begun == "elsewhere:1:abcd"
    assert calls[0] is None
    assert isinstance(calls[1], pg.Row)


# -- group commit ----------------------------------------------------------------------------------------


def test_writes_arriving_during_a_commit_are_committed_together(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
):
    """While one batch commits, the runs' next writes wait; the next batch takes them all, in one transaction."""
    with open_store(postgres_url, schema) as store:
        committer = store._commits
        batches: list[int] = []
        first_inside, release_first = threading.Event(), threading.Event()
        real = pg._GroupCommit._commit

        def commit(self: Any, batch: list[Any]) -> None:
            batches.append(len(batch))
            if len(batches) == 1:
                first_inside.set()
                release_first.wait(30)
            real(self, batch)

        begun = [store.begin(f"k{n}", "null", fresh=False) for n in range(6)]
        sessions = [b.recorder for b in begun if not isinstance(b, str)]
        monkeypatch.setattr(pg._GroupCommit, "_commit", commit)
        ids: dict[int, int] = {}

        def record(n: int) -> None:
            ids[n] = sessions[n].record(pg.NewEvent("a", "job", "ok", str(n), None, None, 1, 0.1))  # type: ignore[union-attr]

        first = threading.Thread(target=record, args=(0,))
        first.start()
        assert first_inside.wait(30)
        others = [threading.Thread(target=record, args=(n,)) for n in range(1, 6)]
        for thread in others:
            thread.start()
        deadline = time.monotonic() + 30
        while len(committer._waiting) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        release_first.set()
        for thread in [first, *others]:
            thread.join(30)

        assert batches == [1, 5]
        assert sorted(ids) == list(range(6))
        assert len(set(ids.values())) == 6
        for n in range(6):
            assert [(e.id, store.decode(e.output or "")) for e in store.events(f"k{n}")] == [(ids[n], n)]


def test_a_statement_that_fails_in_a_batch_fails_only_its_own_write(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
):
    """A batch is tried again a statement at a time after one statement failed: the others are committed."""
    with open_store(postgres_url, schema) as store:
        sessions = [store.begin(f"k{n}", "null", fresh=False).recorder for n in range(3)]  # type: ignore[union-attr]
        batch = [
            pg._Write("k0", store._sql.record_ok, ("k0", 1, 1, "a", "job", "ok", "0", 1, 0.1)),
            pg._Write("k1", store._sql.record_ok, ("k1", 1, 1, "a\x00b", "job", "ok", "1", 1, 0.1)),  # NUL: refused
            pg._Write("k2", store._sql.record_ok, ("k2", 1, 1, "a", "job", "ok", "2", 1, 0.1)),
        ]
        store._commits._commit(batch)
        assert [write.committed for write in batch] == [True, False, True]
        assert isinstance(batch[1].error, psycopg.DataError)
        assert [len(store.events(f"k{n}")) for n in range(3)] == [1, 0, 1]
        assert all(session is not None for session in sessions)


def test_a_nul_in_an_error_message_is_stored_as_an_escape(postgres_url: str, schema: str):
    """PostgreSQL's text can't hold NUL: a traceback's and an error message's NUL are stored as the text \\x00."""

    def fails() -> None:
        raise ValueError("bad\x00byte")

    with open_store(postgres_url, schema) as store:
        result = Coordinator([Step("a", fails)], store=store).run(None, key="k")
        info = store.run_info("k")
        (event,) = store.events("k")
    assert not result.ok
    assert info is not None
    assert info.error == "job of step 'a' failed: ValueError: bad\\x00byte"
    assert event.traceback is not None
    assert "ValueError: bad\\x00byte" in event.traceback
    assert str(store.decode_error(event.error or "")) == "bad\x00byte"  # the error itself, encoded, keeps it


def test_a_key_postgres_cant_hold_is_a_store_error_naming_it(postgres_url: str, schema: str):
    with open_store(postgres_url, schema) as store:
        with pytest.raises(StoreError, match=r"cannot begin key 'a\\x00b': .*NUL") as info:
            store.begin("a\x00b", "null", fresh=False)
        assert info.value.path == store.location


def test_a_batch_the_server_rolls_back_in_a_deadlock_is_committed_again_a_write_at_a_time(
    postgres_url: str, schema: str
):
    """Another transaction takes k2 and then waits for k1, which the batch holds: the server breaks the deadlock."""
    with open_store(postgres_url, schema) as store:
        batch = [pg._Write(key, store._sql.insert_new, (key, "null", store.owner, 60.0)) for key in ("k1", "k2")]
        with server(postgres_url) as other:
            other.execute("BEGIN")
            insert = sql.SQL(
                "INSERT INTO {}.runs (key, status, generation, sessions, owner, lease_until, created, updated)"
                " VALUES (%s, 'running', 1, 1, 'elsewhere:1:abcd', 1e12, 0, 0)"
            ).format(sql.Identifier(schema))
            other.execute(insert, ("k2",))
            committing = threading.Thread(target=store._commits._commit, args=(batch,))
            committing.start()  # inserts k1, then waits for k2
            time.sleep(0.3)
            # It waits for the batch's k1: a deadlock, which the server breaks. When it rolls the batch back,
            # this insert goes on, and fails if the batch's k1, committed again on its own, came first.
            with contextlib.suppress(psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation):
                other.execute(insert, ("k1",))
            time.sleep(0.3)
            other.execute("ROLLBACK")
            committing.join(30)
        assert [(write.committed, write.error, write.rowcount) for write in batch] == [(True, None, 1), (True, None, 1)]
        assert sorted(info.key for info in store.runs()) == ["k1", "k2"]
