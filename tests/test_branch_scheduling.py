"""
How branches' plain callbacks are scheduled: the branch pool's threads, their reuse, and each group's slots.

The branch pool is made once per process, by the first run with a group; the
tests here that look at its threads start from a fresh pool (``fresh_pool``),
so that what they see was made by the code under test and not by an earlier
test. Concurrency is shown with barriers and events; the few waits are long.
"""

import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from choreograph import Coordinator, Parallel, Retry, Step
from choreograph._core import drivers

WAIT = 10.0  # seconds a test waits for another thread before it fails
SETTLE = 0.2  # seconds for a worker to go idle after handing back a result (it takes microseconds)
LONG = 0.9  # seconds that something taking milliseconds is given, where a broken driver would take 1 s or forever


@pytest.fixture
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's branch pool is made anew by the next run that needs it (the old one comes back afterwards)."""
    monkeypatch.setattr(drivers, "_pool", None)


def meeting(parties: int) -> Callable[[str], Callable[[], tuple[str, int]]]:
    """Callbacks that each wait for *parties* of them at a barrier, and return the thread they ran on (name, ident)."""
    barrier = threading.Barrier(parties, timeout=WAIT)

    def make(name: str) -> Callable[[], tuple[str, int]]:
        def met() -> tuple[str, int]:
            barrier.wait()
            return threading.current_thread().name, threading.get_ident()

        return met

    return make


def group_of(parties: int) -> Coordinator[Any]:
    meet = meeting(parties)
    return Coordinator([Parallel("g", *(Step(f"s{i}", meet(f"s{i}")) for i in range(parties)))])


@pytest.mark.usefixtures("fresh_pool")
def test_a_fresh_pool_starts_a_thread_for_each_callback_that_finds_none_idle() -> None:
    result = group_of(3).run()
    assert result.ok, result.fatal
    names = {name for name, _ in result.data_bag.job_data.values()}
    assert len(names) == 3
    assert all(name.startswith("choreograph-branch-") for name in names)


@pytest.mark.usefixtures("fresh_pool")
def test_a_single_branch_runs_on_a_fresh_pool() -> None:
    result = Coordinator([Parallel("g", Step("only", lambda: threading.current_thread().name))]).run()
    assert result.ok, result.fatal
    assert result.data_bag.get_job_data("only") == "choreograph-branch-0"


@pytest.mark.usefixtures("fresh_pool")
def test_idle_threads_are_reused_by_later_runs() -> None:
    flow = group_of(2)
    threads: set[int] = set()  # idle threads live on, so no two of them share an ident
    for _ in range(6):
        result = flow.run()
        assert result.ok, result.fatal
        threads.update(ident for _, ident in result.data_bag.job_data.values())
        time.sleep(SETTLE)  # both workers go idle
    assert len(threads) == 2  # a new thread per callback (or a new pool per run) would make 12


def test_a_branch_waiting_to_retry_is_woken_while_another_branch_still_runs() -> None:
    """The driver waits for an attempt to end *or* a retry's wait to end, whichever comes first."""
    retried = threading.Event()
    failures = [ValueError("flaky")]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        retried.set()
        return "second attempt"

    def waits() -> str:  # still running while `flaky` waits to retry: its retry must not wait for this
        return "saw the retry" if retried.wait(LONG) else "never saw it"

    retry = Retry(attempts=2, initial=0.01, jitter=0.0)
    result = Coordinator([Parallel("g", Step("flaky", flaky, retry=retry), Step("waits", waits))]).run()
    assert result.ok, result.fatal
    assert result.data_bag.get_job_data("waits") == "saw the retry"
    assert result.trace_of("flaky")[0].attempts == 2


@pytest.mark.usefixtures("fresh_pool")
def test_branch_threads_are_daemons() -> None:
    """Idle pool threads must not keep the process alive once the program ends."""
    result = Coordinator([Parallel("g", Step("a", lambda: threading.current_thread().daemon))]).run()
    assert result.data_bag.get_job_data("a") is True


def test_a_nested_group_ends_only_when_its_last_branch_ended() -> None:
    """The branch around a nested group goes on after every one of the group's branches ended, not before."""
    post_started = threading.Event()

    def slow() -> bool:  # would see `post` start if the outer branch went on after `quick` alone
        return post_started.wait(LONG)

    def post() -> str:
        post_started.set()
        return "post"

    inner = Parallel("inner", Step("quick", lambda: "quick"), Step("slow", slow))
    result = Coordinator([Parallel("outer", [inner, Step("post", post)], Step("other", lambda: "other"))]).run()
    assert result.ok, result.fatal
    assert result.data_bag.get_job_data("slow") is False
    steps = [c.step for c in result.trace]
    assert steps.index("post") > max(steps.index("quick"), steps.index("slow"))


def test_a_branch_waits_its_retry_delay_before_the_next_attempt() -> None:
    began: list[float] = []

    def flaky() -> str:
        began.append(time.monotonic())
        if len(began) == 1:
            raise ValueError("flaky")
        return "ok"

    retry = Retry(attempts=2, initial=0.2, jitter=0.0)
    result = Coordinator([Parallel("g", Step("flaky", flaky, retry=retry), Step("other", lambda: 1))]).run()
    assert result.ok, result.fatal
    assert began[1] - began[0] >= 0.2  # at least the delay (the clock is monotonic)


def test_a_branch_waiting_to_retry_sleeps_instead_of_spinning() -> None:
    """While the only branch left waits to retry, the driver sleeps: the process spends next to no CPU time."""
    failures = [ValueError("flaky")]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    flow = Coordinator([Parallel("g", Step("flaky", flaky, retry=Retry(attempts=2, initial=0.5, jitter=0.0)))])
    cpu = time.process_time()
    result = flow.run()
    cpu = time.process_time() - cpu
    assert result.ok, result.fatal
    assert cpu < 0.05  # a sleeping driver costs about 2 ms; spinning through the 0.5 s wait, 0.2 s or more


def test_a_retry_without_a_delay_in_a_branch_is_made_at_once() -> None:
    failures = [ValueError("one"), ValueError("two")]

    def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    flow = Coordinator([Parallel("g", Step("flaky", flaky, retry=Retry(attempts=3, initial=0.0, jitter=0.0)))])
    result = flow.run()
    assert result.ok, result.fatal
    assert result.trace_of("flaky")[0].attempts == 3
    assert result.trace_of("flaky")[0].seconds < LONG


def test_one_slot_runs_a_groups_callbacks_one_at_a_time_and_every_one_of_them() -> None:
    """With ``max_workers=1``, a branch's next step waits for the other branch's callback, and none is lost."""
    lock = threading.Lock()
    now = most = 0

    def busy(name: str) -> Callable[[], str]:
        def run() -> str:
            nonlocal now, most
            with lock:
                now += 1
                most = max(most, now)
            time.sleep(0.05)
            with lock:
                now -= 1
            return name

        return run

    group = Parallel("g", [Step("a1", busy("a1")), Step("a2", busy("a2"))], Step("b1", busy("b1")), max_workers=1)
    result = Coordinator([group]).run()
    assert result.ok, result.fatal
    assert dict(result.data_bag.job_data) == {"a1": "a1", "a2": "a2", "b1": "b1"}
    assert most == 1


@pytest.mark.usefixtures("fresh_pool")
def test_the_pool_grows_when_more_callbacks_run_at_once_than_it_has_idle_threads() -> None:
    first = group_of(2).run()
    assert first.ok, first.fatal
    time.sleep(SETTLE)  # both workers go idle
    second = group_of(3).run()  # three at once at a barrier: the two idle threads and a new one
    assert second.ok, second.fatal
    before = {ident for _, ident in first.data_bag.job_data.values()}
    after = {ident for _, ident in second.data_bag.job_data.values()}
    assert len(after) == 3
    assert before < after


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_process_made_by_fork_runs_groups_on_threads_of_its_own() -> None:
    """The parent's pool threads don't exist in a forked child: the child's runs make a pool of their own."""
    assert group_of(2).run().ok  # the parent has a pool, its threads idle
    time.sleep(SETTLE)
    with warnings.catch_warnings():  # Python 3.12+ warns of forking a process that has threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: exit 0 if the run ended well, and never hang
        code = 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(WAIT))
            code = 0 if group_of(2).run().ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
