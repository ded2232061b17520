"""`run_many`'s workers: slow records don't queue behind each other, Ctrl-C stops cleanly, bad records fail alone."""

import asyncio
import contextvars
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from choreograph import Coordinator, InputError, JobFailed, MemoryStore, Step
from choreograph.typing import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("ordered", [False, True])
def test_slow_records_after_fast_ones_run_side_by_side(ordered: bool):
    """After many fast records, slow ones each get a worker: four of them meet at a barrier only if they overlap."""
    workers = 4
    meeting = threading.Barrier(workers, timeout=10)

    def work(x: int) -> int:
        if x >= 500:
            meeting.wait()  # BrokenBarrierError (a failed run) if the slow records ran one after another
        return x

    flow = Coordinator[int]([Step("work", work)])
    results = list(flow.run_many(range(500 + workers), workers=workers, ordered=ordered))

    assert [r.fatal for r in results if not r.ok] == []
    assert sorted(r.input for r in results) == list(range(500 + workers))
    if ordered:
        assert [r.input for r in results] == list(range(500 + workers))


def test_a_slow_record_does_not_hold_up_the_records_after_it():
    """While one worker runs a record that waits, the other worker finishes every later record."""
    release = threading.Event()
    finished: list[int] = []

    def work(x: int) -> int:
        if x == 0:
            assert release.wait(10)
        else:
            finished.append(x)
            if len(finished) == 99:
                release.set()
        return x

    flow = Coordinator[int]([Step("work", work)])
    results = list(flow.run_many(range(100), workers=2))

    assert all(r.ok for r in results)
    assert sorted(finished) == list(range(1, 100))
    # Unordered: the waiting record comes after the 98 others at least (the 99th may be reported after it).
    assert [r.input for r in results].index(0) >= 98


def test_worker_threads_are_daemons():
    """The workers are daemon threads, so none of them keeps the process alive."""
    seen: list[bool] = []
    flow = Coordinator[int]([Step("s", lambda: seen.append(threading.current_thread().daemon))])
    assert all(r.ok for r in flow.run_many(range(20), workers=3))
    assert seen
    assert all(seen)


INTERRUPTED = textwrap.dedent(
    r"""
    import os, time
    from choreograph import Coordinator, Step

    def work(x: int) -> int:
        if x >= 3000:
            os.write(1, f"start {x}\n".encode())  # one write per line: the workers print at once
            time.sleep(0.5)
            os.write(1, f"end {x}\n".encode())
        return x

    flow = Coordinator[int]([Step("work", work)])
    done = 0
    try:
        for result in flow.run_many(range(3200), workers=4):
            done += 1
    except KeyboardInterrupt:
        os.write(1, f"interrupted {done}\n".encode())
        raise
    """
)


def test_ctrl_c_stops_taking_records_lets_runs_in_flight_finish_and_raises():
    """SIGINT during `run_many`: no new record starts, the ones in flight end, KeyboardInterrupt within seconds."""
    with subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while len([line for line in lines if line.startswith("start")]) < 4:
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"the script ended early: {process.communicate()[1]}")
            lines.append(line.strip())
        interrupted_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        elapsed = time.monotonic() - interrupted_at
    lines += out.splitlines()

    assert process.returncode != 0
    assert "KeyboardInterrupt" in err
    assert elapsed < 10  # 0.5 s runs in flight; before the thread executor, the process went on for minutes
    started = {int(line.split()[1]) for line in lines if line.startswith("start")}
    ended = {int(line.split()[1]) for line in lines if line.startswith("end")}
    assert started == ended  # every run in flight finished
    assert len(started) == 4  # the four in flight at the signal: nothing new was taken after it
    assert any(line.startswith("interrupted") for line in lines)


def test_an_unstorable_record_or_a_failing_key_fails_that_record_only(make_store: Any):
    """A record the codec can't store, or whose key function raises, gets a failed result with `InputError`."""
    store: Store = make_store()

    def key(record: dict[str, Any]) -> str:
        return str(record["id"])

    flow = Coordinator[dict[str, Any]]([Step("s", lambda r: r["id"])], store=store, key=key)
    records: list[dict[str, Any]] = [{"id": 0}, {"no id": 1}, {"id": 2, "bad": object()}, {"id": 3}]
    results = sorted(flow.run_many(records, workers=2), key=lambda r: records.index(r.input))

    assert [r.ok for r in results] == [True, False, False, True]
    missing, unstorable = results[1].fatal, results[2].fatal
    assert isinstance(missing, InputError)
    assert (missing.position, type(missing.error)) == (1, KeyError)
    assert missing.__cause__ is missing.error
    assert str(missing) == "record 1 can't be run: KeyError: 'id'"
    assert isinstance(unstorable, InputError)
    assert (unstorable.position, type(unstorable.error)) == (2, TypeError)
    assert "the input of key '2' can't be stored" in str(unstorable.error)
    assert results[1].trace == results[2].trace == ()
    assert store.run_info("2") is None  # nothing was stored for it
    assert {info.key for info in store.runs()} == {"0", "3"}


def test_a_failing_key_function_in_run_names_itself():
    """`run()` raises the key function's own error, with a note naming the key function and the input."""

    def key(record: dict[str, int]) -> int:
        return record["id"]

    flow = Coordinator[dict[str, int]]([Step("s", lambda: 1)], store=MemoryStore(), key=key)
    with pytest.raises(KeyError) as raised:
        flow.run({"other": 1})
    assert any("Coordinator(key=" in note and "{'other': 1}" in note for note in raised.value.__notes__)


def test_an_error_of_a_durable_batch_is_not_an_input_error_when_the_run_itself_fails(make_store: Any):
    """A job failing in a durable batch is that run's `JobFailed`, not an `InputError`."""
    flow = Coordinator[int]([Step("s", lambda x: 1 // x)], store=make_store(), key=str)
    results = {r.input: r for r in flow.run_many([0, 1], workers=2)}
    assert isinstance(results[0].fatal, JobFailed)
    assert results[1].ok


def test_async_flows_run_on_one_loop_per_worker():
    """A flow with `async def` callbacks runs each worker's records on one event loop, not one loop per record."""
    loops: list[int] = []

    async def work(x: int) -> int:
        loops.append(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        return x

    flow = Coordinator[int]([Step("w", work)])
    results = list(flow.run_many(range(200), workers=2))

    assert sorted(r.data_bag.get_job_data("w") for r in results) == list(range(200))
    assert 1 <= len(set(loops)) <= 2


def test_keyboard_interrupt_in_a_callback_reaches_the_caller():
    """A `KeyboardInterrupt` raised inside a worker's callback stops the batch and is raised to the caller."""

    def work(x: int) -> int:
        if x == 5:
            raise KeyboardInterrupt
        return x

    flow = Coordinator[int]([Step("w", work)])
    with pytest.raises(KeyboardInterrupt):
        list(flow.run_many(range(50), workers=2))


def test_positions_count_records_from_zero_in_stream_order(make_store: Any):
    """`InputError.position` is the record's place in the input stream, whichever worker took it."""

    def key(record: int) -> str:
        if record % 10 == 3:
            raise ValueError(record)
        return str(record)

    flow = Coordinator[int]([Step("s", lambda: None)], store=make_store(), key=key)
    failed = [r for r in flow.run_many(range(100, 140), workers=3) if not r.ok]
    positions = sorted((r.fatal.position, r.input) for r in failed if isinstance(r.fatal, InputError))
    assert positions == [(3, 103), (13, 113), (23, 123), (33, 133)]


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


@pytest.mark.parametrize("flavour", ["plain", "async"])
def test_callbacks_in_workers_see_the_callers_context_variables(flavour: str):
    """Context variables set by the caller of `run_many` (a span, a request id) are seen by every run's callbacks."""

    def plain() -> str:
        return REQUEST.get()

    async def asynchronous() -> str:
        return REQUEST.get()

    flow = Coordinator[int]([Step("s", plain if flavour == "plain" else asynchronous)])
    token = REQUEST.set("req-42")
    try:
        results = list(flow.run_many(range(20), workers=3))
    finally:
        REQUEST.reset(token)
    assert {r.data_bag.get_job_data("s") for r in results} == {"req-42"}
