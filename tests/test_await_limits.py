"""
How long an awaited callback may take: the run's timeout cuts it off when the run's time is up, not later.
"""

import asyncio

from choreograph import Coordinator, RunCancelled, Step

WAIT = 10.0  # what the callback would take if nothing cut it off
LONG = 0.9  # seconds within which a 0.2 s timeout must have cut the await off (a broken limit gives 1 s or more)


def test_the_run_timeout_cuts_an_awaiting_callback_off_when_the_runs_time_is_up() -> None:
    async def hangs() -> None:
        await asyncio.sleep(WAIT)

    result = Coordinator([Step("first", lambda: 1), Step("slow", hangs)]).run(timeout=0.2)
    assert isinstance(result.fatal, RunCancelled)
    (call,) = result.trace_of("slow")
    assert call.outcome == "canceled"
    assert 0.1 < call.seconds < LONG
