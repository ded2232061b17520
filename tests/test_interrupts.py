"""
KeyboardInterrupt and SystemExit from a callback, on every way of running: they propagate unchanged.

`test_run.py` covers a plain `run()`; here the runs have a timeout or values
(set up like listened-to runs), or use `run_async`. Afterwards no run is
current any more: `get_data_bag()` raises `NoDataBagInContext` again.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from choreograph import Coordinator, NoDataBagInContext, Step, get_data_bag

RUNS: dict[str, Callable[[Coordinator[Any]], object]] = {
    "run-timeout": lambda coordinator: coordinator.run(timeout=30),
    "run-values": lambda coordinator: coordinator.run(values={"a": 1}),
    "run_async": lambda coordinator: asyncio.run(coordinator.run_async()),
    "run_async-timeout": lambda coordinator: asyncio.run(coordinator.run_async(timeout=30)),
}


@pytest.mark.parametrize("error_type", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("way", list(RUNS))
def test_a_base_exception_propagates_and_leaves_no_current_run(way: str, error_type: type[BaseException]):
    """A KeyboardInterrupt or SystemExit from a job comes out of the run as it is; no later callback runs."""
    later: list[str] = []

    def stop() -> None:
        raise error_type

    coordinator = Coordinator([Step("first", lambda: 1), Step("stop", stop), Step("later", lambda: later.append("x"))])
    with pytest.raises(error_type):
        RUNS[way](coordinator)
    assert later == []
    with pytest.raises(NoDataBagInContext):
        get_data_bag()
