"""Shared fixtures: the anyio backend and a capture of choreograph's log records."""

from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger


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
