"""`AsyncExecutor` and `Coordinator.run_many_async`: runs as tasks of one event loop, at most *workers* at once."""

import asyncio
import contextlib
import contextvars
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from choreograph import Context, Coordinator, InputError, JobFailed, RunCancelled, Step, get_data_bag
from choreograph.executors import AsyncExecutor
from choreograph.typing import Store

ROOT = Path(__file__).resolve().parent.parent


class Source:
    """An input iterable that counts how many items were pulled from it."""

    def __init__(self, items: Iterator[int]) -> None:
        self.items = items
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for item in self.items:
            self.pulled += 1
            yield item


class Gauge:
    """How many runs are inside a callback at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.started = self.ended = 0

    async def job(self, x: int) -> int:
        self.now += 1
        self.started += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.005)
        self.now -= 1
        self.ended += 1
        return x


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "choreograph-loop"]


@pytest.fixture(autouse=True)
def no_loop_left() -> Iterator[None]:
    yield
    assert loop_threads() == []


async def remember(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def check(ctx: Context[int], x: int) -> bool:
    await asyncio.sleep(0)
    return get_data_bag() is ctx.data_bag and ctx.data_bag.get_job_data("remember") == x


def isolated() -> Coordinator[int]:
    return Coordinator[int]([Step("remember", remember), Step("check", check)])


@pytest.mark.parametrize("ordered", [False, True])
def test_every_input_gets_its_own_isolated_run(ordered: bool):
    """300 runs interleave on one loop; each sees only its own DataBag; ordered=True keeps input order."""
    results = list(isolated().run_many(range(300), executor="async", workers=16, ordered=ordered))

    assert sorted(r.input for r in results) == list(range(300))
    assert all(r.ok and r.data_bag.get_job_data("check") is True for r in results)
    if ordered:
        assert [r.input for r in results] == list(range(300))


def test_at_most_workers_runs_at_once_and_that_many_overlap():
    gauge = Gauge()
    flow = Coordinator[int]([Step("job", gauge.job)])
    results = list(flow.run_many(range(200), executor=AsyncExecutor(workers=20)))

    assert len(results) == 200
    assert gauge.most == 20


def test_unordered_results_come_as_they_complete():
    """A slow first run doesn't hold up the results of the others."""
    release = asyncio.Event()
    seen: list[int] = []

    async def job(x: int) -> int:
        if x == 0:
            await asyncio.wait_for(release.wait(), 10)
        else:
            seen.append(x)
            if len(seen) == 49:
                release.set()
        return x

    results = [r.input for r in Coordinator[int]([Step("job", job)]).run_many(range(50), executor="async", workers=4)]
    assert results.index(0) >= 48


def test_an_infinite_input_is_taken_lazily_within_the_window():
    """100 results of an endless stream pull at most 2 * 100 + 2 * workers inputs."""
    source = Source(itertools.count())
    results = isolated().run_many(source, executor="async", workers=8)
    assert source.pulled == 0
    taken = list(itertools.islice(results, 100))
    results.close()

    assert len(taken) == 100
    assert source.pulled <= 2 * 100 + 2 * 8


def test_a_consumer_that_stops_taking_results_stops_the_taking():
    source = Source(itertools.count())
    results = isolated().run_many(source, executor="async", workers=8)
    next(results)
    time.sleep(0.3)
    pulled = source.pulled
    results.close()
    assert pulled <= 1 + 2 * 8 + 1


def test_closing_waits_for_the_runs_in_flight_and_stops_the_loop():
    gauge = Gauge()
    source = Source(itertools.count())
    results = Coordinator[int]([Step("job", gauge.job)]).run_many(source, executor="async", workers=10)
    [next(results) for _ in range(15)]
    assert loop_threads()
    results.close()

    assert loop_threads() == []
    assert gauge.started == gauge.ended
    pulled = source.pulled
    with pytest.raises(StopIteration):
        next(results)
    assert source.pulled == pulled


def test_plain_callbacks_run_in_the_loops_thread_one_at_a_time():
    threads: set[str] = set()
    gauge = {"now": 0, "most": 0}

    def plain(x: int) -> int:
        gauge["now"] += 1
        gauge["most"] = max(gauge["most"], gauge["now"])
        threads.add(threading.current_thread().name)
        time.sleep(0.001)
        gauge["now"] -= 1
        return x

    results = list(Coordinator[int]([Step("plain", plain)]).run_many(range(30), executor="async", workers=8))
    assert len(results) == 30
    assert threads == {"choreograph-loop"}
    assert gauge["most"] == 1


def test_run_timeouts_cancel_awaiting_callbacks():
    async def slow(x: int) -> int:
        await asyncio.sleep(30 if x == 1 else 0)
        return x

    started = time.monotonic()
    flow = Coordinator[int]([Step("slow", slow)])
    results = {r.input: r for r in flow.run_many(range(4), executor="async", workers=4, timeout=0.5)}
    assert time.monotonic() - started < 10
    assert isinstance(results[1].fatal, RunCancelled)
    assert all(results[x].ok for x in (0, 2, 3))


def test_an_error_from_the_inputs_propagates():
    def broken() -> Iterator[int]:
        yield from range(20)
        raise LookupError

    with pytest.raises(LookupError):
        list(isolated().run_many(broken(), executor="async", workers=4))


def test_keyboard_interrupt_in_a_callback_reaches_the_caller():
    async def job(x: int) -> int:
        await asyncio.sleep(0)
        if x == 5:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        list(Coordinator[int]([Step("job", job)]).run_many(range(50), executor="async", workers=4))


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


def test_callbacks_see_the_callers_context_variables():
    async def job() -> str:
        return REQUEST.get()

    token = REQUEST.set("req-7")
    try:
        results = list(Coordinator[int]([Step("job", job)]).run_many(range(5), executor="async"))
    finally:
        REQUEST.reset(token)
    assert {r.data_bag.get_job_data("job") for r in results} == {"req-7"}


def test_durable_runs_through_the_loop(make_store: Any):
    """Durable runs of async callbacks on one loop: recorded, restored the second time, bad keys failed alone."""
    store: Store = make_store()

    def key(x: int) -> str:
        if x == 7:
            raise ValueError(x)
        return str(x)

    flow = Coordinator[int]([Step("remember", remember)], store=store, key=key)
    first = {r.input: r for r in flow.run_many(range(10), executor="async", workers=4)}
    assert [x for x, r in first.items() if not r.ok] == [7]
    assert isinstance(first[7].fatal, InputError)
    again = {r.input: r for r in flow.run_many(range(10), executor="async", workers=4)}
    assert all(call.restored for x in again if x != 7 for call in again[x].trace)


@pytest.mark.parametrize(
    ("workers", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), (False, TypeError)]
)
def test_bad_worker_counts_are_refused(workers: object, error: type[Exception]):
    with pytest.raises(error, match="workers"):
        AsyncExecutor(workers)  # type: ignore[arg-type]
    with pytest.raises(error, match="workers"):
        isolated().run_many([1], executor="async", workers=workers)  # type: ignore[arg-type]
    with pytest.raises(error, match="workers"):
        isolated().run_many_async([1], workers=workers)  # type: ignore[arg-type]


def test_the_executor_names():
    assert repr(AsyncExecutor()) == "AsyncExecutor(workers=100)"
    with pytest.raises(ValueError, match="'threads', 'async', 'processes'"):
        isolated().run_many([1], executor="fibers")
    with pytest.raises(TypeError, match="workers= is for an executor given by name"):
        isolated().run_many([1], executor=AsyncExecutor(2), workers=2)


INTERRUPTED = textwrap.dedent(
    r"""
    import asyncio, os, sys
    from choreograph import Coordinator, Step

    async def work(x: int) -> int:
        if x >= 3000:
            os.write(1, f"start {x}\n".encode())
            await asyncio.sleep(0.5)
            os.write(1, f"end {x}\n".encode())
        return x

    flow = Coordinator[int]([Step("work", work)])
    done = 0
    try:
        if sys.argv[1] == "executor":
            for result in flow.run_many(range(1_000_000), executor="async", workers=8):
                done += 1
        else:
            async def main():
                global done
                async for result in flow.run_many_async(range(1_000_000), workers=8):
                    done += 1
            asyncio.run(main())
    except KeyboardInterrupt:
        os.write(1, f"interrupted {done}\n".encode())
        raise
    """
)


@pytest.mark.parametrize("way", ["executor", "run_many_async"])
def test_ctrl_c_stops_taking_lets_runs_in_flight_finish_and_raises(way: str):
    with subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, way],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while len([line for line in lines if line.startswith("start")]) < 8:
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"the script ended early: {process.communicate()[1]}")
            lines.append(line.strip())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    lines += out.splitlines()

    assert process.returncode != 0
    assert "KeyboardInterrupt" in err
    started = {line.split()[1] for line in lines if line.startswith("start")}
    ended = {line.split()[1] for line in lines if line.startswith("end")}
    assert started == ended
    assert len(started) == 8
    assert any(line.startswith("interrupted") for line in lines)


# -- run_many_async: on the caller's loop ------------------------------------------------


def test_run_many_async_yields_every_result_on_the_callers_loop():
    loops: set[int] = set()

    async def job(x: int) -> int:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        return x

    async def main() -> tuple[list[int], int]:
        flow = Coordinator[int]([Step("job", job)])
        return [r.input async for r in flow.run_many_async(range(50), workers=5, ordered=True)], id(
            asyncio.get_running_loop()
        )

    inputs, here = asyncio.run(main())
    assert inputs == list(range(50))
    assert loops == {here}


def test_run_many_async_keeps_at_most_workers_at_once():
    gauge = Gauge()

    async def main() -> int:
        flow = Coordinator[int]([Step("job", gauge.job)])
        return len([r async for r in flow.run_many_async(range(100), workers=10)])

    assert asyncio.run(main()) == 100
    assert gauge.most == 10


def test_run_many_async_takes_an_async_iterable():
    async def records() -> AsyncIterator[int]:
        for x in range(20):
            await asyncio.sleep(0)
            yield x

    async def main() -> list[int]:
        return sorted([r.input async for r in isolated().run_many_async(records(), workers=4)])

    assert asyncio.run(main()) == list(range(20))


def test_breaking_out_stops_the_taking_and_aclose_waits_for_the_runs_in_flight():
    gauge = Gauge()
    source = Source(itertools.count())

    async def main() -> tuple[int, int]:
        results = Coordinator[int]([Step("job", gauge.job)]).run_many_async(source, workers=10)
        async with contextlib.aclosing(results):
            async for result in results:
                if result.input >= 20:
                    break
            pulled = source.pulled
            await asyncio.sleep(0.05)  # runs in flight go on, but nothing new is taken
            assert source.pulled == pulled
        return pulled, gauge.started - gauge.ended

    pulled, unfinished = asyncio.run(main())
    assert unfinished == 0  # aclose waited for them
    assert pulled <= 2 * 21 + 2 * 10


def test_plain_flows_run_in_the_callers_thread():
    threads: set[int] = set()

    def plain(x: int) -> int:
        threads.add(threading.get_ident())
        return x

    async def main() -> list[int]:
        flow = Coordinator[int]([Step("plain", plain)])
        return [r.input async for r in flow.run_many_async(range(10), ordered=True)]

    assert asyncio.run(main()) == list(range(10))
    assert threads == {threading.get_ident()}


def test_run_many_async_checks_its_arguments_when_called():
    with pytest.raises(TypeError, match="not str"):
        isolated().run_many_async("abc")
    with pytest.raises(TypeError, match="iterable"):
        isolated().run_many_async(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        isolated().run_many_async([1], timeout=-1)


def test_run_many_async_propagates_errors_after_waiting_for_the_others():
    gauge = Gauge()

    async def job(x: int) -> int:
        if x == 30:
            raise KeyboardInterrupt  # through the run: not a failure of the run
        return await gauge.job(x)

    def broken() -> Iterator[int]:
        yield from range(20)
        raise LookupError

    async def main(inputs: Any) -> None:
        async for _ in Coordinator[int]([Step("job", job)]).run_many_async(inputs, workers=5):
            pass

    with pytest.raises(LookupError):
        asyncio.run(main(broken()))
    assert gauge.started == gauge.ended
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main(range(100)))


def test_run_many_async_durable(make_store: Any):
    flow = Coordinator[int]([Step("remember", remember)], store=make_store(), key=str)

    async def main() -> list[Any]:
        return [r async for r in flow.run_many_async(range(6), workers=3, ordered=True)]

    first = asyncio.run(main())
    assert [r.key for r in first] == [str(x) for x in range(6)]
    again = asyncio.run(main())
    assert all(call.restored for r in again for call in r.trace)


def test_a_failing_run_does_not_stop_the_others():
    async def job(x: int) -> int:
        await asyncio.sleep(0)
        if x % 7 == 0:
            raise ValueError(x)
        return x

    async def main() -> list[Any]:
        return [r async for r in Coordinator[int]([Step("job", job)]).run_many_async(range(30), workers=4)]

    results = asyncio.run(main())
    failed = sorted(r.input for r in results if not r.ok)
    assert failed == [0, 7, 14, 21, 28]
    assert all(isinstance(r.fatal, JobFailed) for r in results if not r.ok)
