"""Shared fixtures: the anyio backend, a capture of choreograph's log records, and every kind of store."""

from collections.abc import Callable, Iterator
from pathlib import Path
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
