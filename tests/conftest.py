"""
Shared fixtures: the anyio backend, a capture of choreograph's log records, every kind of store,
and, under a mutant of mutmut's, a bound on each test's time.
"""

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from loguru import logger

from choreograph import MemoryStore, SqliteStore
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
STORES = ["sqlite", "memory"]


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    """Open stores of one kind, with the options given; close them afterwards."""
    opened: list[SqliteStore | MemoryStore] = []

    def make(**options: Any) -> Store:
        made = (
            SqliteStore(tmp_path / f"runs{len(opened)}.db", **options)
            if request.param == "sqlite"
            else MemoryStore(**options)
        )
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()


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


@pytest.fixture(autouse=True)
def _bounded_under_a_mutant(request: pytest.FixtureRequest) -> Iterator[None]:
    """
    Under a mutant (mutmut's ``MUTANT_UNDER_TEST`` names one), fail a test that runs far longer than usual.

    A mutant that makes a run wait forever (a worker's result never handed
    back) would otherwise hang its tests until mutmut's own time limit kills
    them, and count as a timeout: a test that hangs fails, as a test that
    breaks does. The bound is 5 s plus 3 times the test's usual time, well
    under mutmut's limit ((usual + 1) x 10) and far above what any test takes.
    """
    global _USUAL  # noqa: PLW0603 - read once per process
    if (
        "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", "")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    if _USUAL is None:
        _USUAL = _usual_seconds()
    budget = 5.0 + 3.0 * _USUAL.get(request.node.nodeid, 0.0)

    def hung(signum: int, frame: FrameType | None) -> None:
        pytest.fail(f"hung under the mutant: over {budget:.1f} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
