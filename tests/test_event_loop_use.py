"""
Where `run` executes callbacks: plain flows never touch asyncio; a flow with ``async def`` callbacks gets its own loop.

A flow whose callbacks are all plain runs entirely in the calling thread, with
no event loop, retries and their waits included. `run` called inside a running
event loop cannot re-enter it: the async part of the run goes to a helper
thread named ``choreograph-run…``, and the caller's loop is blocked meanwhile.
"""

import asyncio
import threading

from choreograph import Coordinator, Retry, Step


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def test_a_plain_flow_with_retries_runs_without_an_event_loop_in_the_calling_thread():
    """Every attempt of a retried plain job runs in the thread that called `run`, with no event loop running."""
    seen: list[tuple[threading.Thread, asyncio.AbstractEventLoop | None]] = []

    def flaky() -> str:
        seen.append((threading.current_thread(), running_loop()))
        if len(seen) < 3:
            raise OSError("busy")
        return "done"

    result = Coordinator([Step("fetch", flaky, retry=Retry(attempts=3, initial=0.01, jitter=0.0))]).run()

    assert result.ok
    assert [c.attempts for c in result.trace] == [3]
    assert seen == [(threading.current_thread(), None)] * 3


def test_run_inside_a_running_loop_runs_the_async_part_on_a_named_helper_thread():
    """Inside a running event loop, `run` of an async flow runs it on a "choreograph-run" thread, not the loop's."""
    where: dict[str, str] = {}

    async def fetch() -> int:
        await asyncio.sleep(0)
        where["async"] = threading.current_thread().name
        return 1

    def total() -> int:
        where["plain"] = threading.current_thread().name
        return 2

    coordinator = Coordinator([Step("fetch", fetch), Step("total", total)])

    async def main() -> tuple[str, object]:
        result = coordinator.run()
        return threading.current_thread().name, result

    caller, result = asyncio.run(main())

    assert result.ok  # type: ignore[attr-defined]
    assert where["async"] == where["plain"]
    assert where["async"].startswith("choreograph-run")
    assert where["async"] != caller
