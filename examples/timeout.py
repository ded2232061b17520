"""
Bound how long a run, or one step, may take.

* ``run_async(..., timeout=s)`` limits the whole run: once ``s`` seconds have
  passed, no further callback starts, an awaiting ``async def`` callback is
  cancelled, and the run stops with the fatal `RunCancelled`.
* ``Step(..., timeout=s)`` limits each call of that step's callbacks. A call
  over the limit fails with `CallbackTimeout`, which a ``Retry`` can retry.

Run it with ``python examples/timeout.py``.
"""

import asyncio

from choreograph import CallbackTimeout, Coordinator, Retry, RunCancelled, Step


async def slow_report(account: str) -> str:
    await asyncio.sleep(0.1)  # a report that takes too long today
    return f"report for {account}"


def archive(account: str) -> str:
    return f"archived {account}"


class FlakyQuote:
    """A price service whose first answer hangs, and whose next ones are fast."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, _sku: str) -> float:
        """Return the price of *_sku*."""
        self.calls += 1
        await asyncio.sleep(0.1 if self.calls == 1 else 0.001)
        return 9.99


async def whole_run() -> None:
    coordinator = Coordinator[str]([Step("report", slow_report), Step("archive", archive)])
    result = await coordinator.run_async("ACC-7", timeout=0.02)
    print(f"run timeout: ok={result.ok}, fatal is RunCancelled: {isinstance(result.fatal, RunCancelled)}")
    print(f"  fatal: {result.fatal}")
    print(f"  trace: {[(call.step, call.phase, call.outcome) for call in result.trace]}")


async def one_step() -> None:
    retry = Retry(attempts=3, on=CallbackTimeout, initial=0.01, jitter=0.0)
    quote = Step("quote", FlakyQuote(), timeout=0.03, retry=retry)
    coordinator = Coordinator[str]([quote])
    result = await coordinator.run_async("mug")
    (call,) = result.trace
    print(f"step timeout with retry: ok={result.ok}, quote={result.data_bag.job(quote)}")
    print(f"  the job took {call.attempts} attempts and {call.seconds:.2f} s; errors: {len(result.errors)}")


def main() -> None:
    asyncio.run(whole_run())
    asyncio.run(one_step())


if __name__ == "__main__":
    main()
