"""
Shared fixtures: the anyio backend, a capture of choreograph's log records, every kind of store,
and, under a mutant of mutmut's, a bound on each test's time.
"""

import contextlib
import functools
import json
import os
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from loguru import logger

from choreograph import MemoryStore, PostgresStore, SqliteStore
from choreograph.typing import Store


@pytest.fixture
def anyio_backend() -> str:
    """Run `@pytest.mark.anyio` tests on asyncio only."""
    return "asyncio"


@pytest.fixture
def log_records() -> Iterator[list[dict[str, Any]]]:
    """Enable choreograph's logging and collect every record (DEBUG and up) in a list."""
    records: list[dict[str, Any]] = []
    logger.enable("choreograph")
    sink_id = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(sink_id)
        logger.disable("choreograph")


#: Every store the suite runs against: each test that takes `store` or `make_store` runs once per store.
STORES = ["sqlite", "memory", "postgres"]

#: The PostgreSQL server the ``postgres`` stores live on, each test's in schemas of its own.
POSTGRES_URL = os.environ.get("CHOREOGRAPH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


#: The suite's stores don't wait for the server's disk at each commit (``synchronous_commit=off``): what they
#: commit is seen by every session at once, as usual, and only a crash of the server itself could lose it.
_NO_FSYNC_WAIT = ("&" if "?" in POSTGRES_URL else "?") + "options=-csynchronous_commit%3Doff"


@functools.cache
def _postgres_missing() -> str | None:
    """Why no test can run on PostgreSQL here (psycopg missing, no server answering), or None."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc}): pip install 'choreograph[postgres]'"
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL server at {POSTGRES_URL} ({' '.join(str(exc).split())}); set CHOREOGRAPH_TEST_POSTGRES"
    return None


def require_postgres() -> str:
    """The test server's URL; without one, the test skips, or fails on CI (``CI=true``), with the reason."""
    missing = _postgres_missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required on CI: {missing}")
        pytest.skip(missing)
    return POSTGRES_URL


def drop_schemas(*names: str) -> None:
    """Drop these schemas of the test server, with everything in them (a missing one is fine)."""
    import psycopg
    from psycopg import sql

    with contextlib.closing(psycopg.connect(POSTGRES_URL, autocommit=True)) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url() -> str:
    """The test server's URL (`require_postgres`)."""
    return require_postgres()


@pytest.fixture
def pg_schema() -> Iterator[Callable[[], str]]:
    """Fresh schema names on the test server (``t_<random>_<n>``), each dropped after the test."""
    require_postgres()
    base = f"t_{uuid.uuid4().hex[:12]}"
    made: list[str] = []

    def fresh() -> str:
        made.append(f"{base}_{len(made)}")
        return made[-1]

    yield fresh
    if made:
        drop_schemas(*made)


@pytest.fixture
def make_pg_store(pg_schema: Callable[[], str]) -> Iterator[Callable[..., PostgresStore]]:
    """
    Open PostgresStores on the test server with the options given; close them afterwards.

    Each in a fresh schema (dropped after the test) unless given ``schema=``: pass
    one store's ``schema`` to open another on the same tables.
    """
    opened: list[PostgresStore] = []

    def make(**options: Any) -> PostgresStore:
        options.setdefault("schema", pg_schema())
        opened.append(PostgresStore(POSTGRES_URL + _NO_FSYNC_WAIT, **options))
        return opened[-1]

    yield make
    for made in opened:
        made.close()


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    """Open stores of one kind, with the options given; close them afterwards (a PostgreSQL one in its own schema)."""
    opened: list[SqliteStore | MemoryStore | PostgresStore] = []
    schemas: list[str] = []
    url = require_postgres() if request.param == "postgres" else ""
    base = f"t_{uuid.uuid4().hex[:12]}"

    def make(**options: Any) -> Store:
        made: SqliteStore | MemoryStore | PostgresStore
        if request.param == "sqlite":
            made = SqliteStore(tmp_path / f"runs{len(opened)}.db", **options)
        elif request.param == "postgres":
            schemas.append(f"{base}_{len(schemas)}")
            made = PostgresStore(url + _NO_FSYNC_WAIT, schema=schemas[-1], **options)
        else:
            made = MemoryStore(**options)
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()
    if schemas:
        drop_schemas(*schemas)


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


def _usual_seconds() -> dict[str, float]:
    """Each test's seconds in mutmut's stats run (its working directory is mutants/), if there was one."""
    try:
        stats = json.loads(Path("mutmut-stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(stats.get("duration_by_test", {}))


_USUAL: dict[str, float] | None = None


#: Seconds any test may take outside mutmut's runs: far above the slowest (under 60 s on CI), short of a hang.
HANG_LIMIT = 300.0


def _stacks() -> str:
    """Every thread's stack, for a test that hung: where each waits."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(
        f"--- thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    )


@pytest.fixture(autouse=True)
def _bounded(request: pytest.FixtureRequest) -> Iterator[None]:
    """
    Fail a test that hangs, with every thread's stack, instead of hanging the suite.

    Under a mutant (mutmut's ``MUTANT_UNDER_TEST`` names one) the bound is 5 s
    plus 3 times the test's usual time, well under mutmut's own limit
    ((usual + 1) x 10): a mutant that makes a run wait forever (a worker's
    result never handed back) fails its tests, as a mutant that breaks them
    does, instead of counting as a timeout. Otherwise it is `HANG_LIMIT`: a
    deadlock once hung a CI run until its time ran out, printing nothing.
    """
    global _USUAL  # noqa: PLW0603 - read once per process
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if "__mutmut_" in os.environ.get("MUTANT_UNDER_TEST", ""):
        if _USUAL is None:
            _USUAL = _usual_seconds()
        budget = 5.0 + 3.0 * _USUAL.get(request.node.nodeid, 0.0)
        why = "under the mutant"
    else:
        budget, why = HANG_LIMIT, "hung"

    def hung(signum: int, frame: FrameType | None) -> None:
        pytest.fail(f"{why}: over {budget:.1f} s; the threads were at:\n{_stacks()}")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
