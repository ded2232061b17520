"""`ProcessExecutor`: runs in worker processes, with steps shipped by reference and events sent back."""

import functools
import itertools
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from choreograph import (
    Coordinator,
    InputError,
    JobFailed,
    MemoryStore,
    Parallel,
    RunResult,
    SqliteStore,
    Step,
    StoredError,
    UnstorableOutput,
)
from choreograph.events import CallbackFinished, CallbackStarted, Emitted, RunFinished, RunStarted
from choreograph.executors import ProcessExecutor

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# Only opened, never run; of this test process alone (another checkout's tests may have made one of a newer schema).
DB = str(Path(tempfile.gettempdir()) / f"choreograph-test-processes-{os.getpid()}.db")
if str(TESTS) not in sys.path:  # worker processes import the callbacks by reference: from a module on sys.path
    sys.path.insert(0, str(TESTS))

import _process_steps as steps  # noqa: E402


class Source:
    """An input iterable that counts how many items were pulled from it."""

    def __init__(self, items: Iterator[int]) -> None:
        self.items = items
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for item in self.items:
            self.pulled += 1
            yield item


def alive(pid: int) -> bool:
    """Whether process *pid* exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture(autouse=True, scope="module")
def no_database_left() -> Iterator[None]:
    """The store that `DB` names is removed after this module's tests."""
    yield
    for suffix in ("", "-wal", "-shm"):
        Path(DB + suffix).unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    """Every test leaves no worker process behind."""
    yield
    assert multiprocessing.active_children() == []


def test_runs_happen_in_worker_processes_and_results_come_back():
    """Each record runs in a worker process (not this one); its outputs come back with the result."""
    flow = Coordinator[int]([Step("double", steps.double), Step("pid", steps.pid)])
    results = list(flow.run_many(range(30), executor="processes", workers=2))

    assert sorted(r.input for r in results) == list(range(30))
    assert all(r.ok for r in results)
    assert all(r.data_bag.get_job_data("double") == 2 * r.input for r in results)
    pids = {r.data_bag.get_job_data("pid") for r in results}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_two_workers_run_two_records_at_once(tmp_path: Path):
    """Two records meet in the same callback at the same time, each in a process of its own."""
    flow = Coordinator[int]([Step("meet", steps.meet)])
    values = {"folder": str(tmp_path), "count": 2}
    results = list(flow.run_many(range(2), executor="processes", workers=2, values=values))

    assert [r.fatal for r in results if not r.ok] == []
    assert len({r.data_bag.get_job_data("meet") for r in results}) == 2


@pytest.mark.parametrize("ordered", [False, True])
def test_ordered_or_as_they_complete(ordered: bool):
    """Every input gets its result; with ordered=True, in input order."""
    flow = Coordinator[int]([Step("checked", steps.checked), Step("fails", steps.fails_on_three)])
    results = list(flow.run_many(range(40), executor="processes", workers=2, ordered=ordered))

    assert sorted(r.input for r in results) == list(range(40))
    if ordered:
        assert [r.input for r in results] == list(range(40))
    failed = [r for r in results if not r.ok]
    assert [r.input for r in failed] == [3]
    assert isinstance(failed[0].fatal, JobFailed)
    assert isinstance(failed[0].fatal.error, ValueError)


def test_an_infinite_input_is_taken_lazily_within_the_window():
    """Taking 50 results of an endless stream pulls at most 2 * 50 + 2 * workers inputs."""
    source = Source(itertools.count())
    flow = Coordinator[int]([Step("double", steps.double)])
    results = flow.run_many(source, executor="processes", workers=2)
    assert source.pulled == 0  # nothing before the first result is asked for
    taken = list(itertools.islice(results, 50))
    results.close()

    assert len(taken) == 50
    assert source.pulled <= 2 * 50 + 2 * 2


def test_a_consumer_that_stops_taking_results_stops_the_taking():
    """While the first result is not followed by others being taken, at most the window is pulled."""
    source = Source(itertools.count())
    flow = Coordinator[int]([Step("double", steps.double)])
    results = flow.run_many(source, executor="processes", workers=2)
    next(results)
    time.sleep(0.5)  # the workers would take more if they could
    pulled = source.pulled
    results.close()

    assert pulled <= 1 + 2 * 2 + 1


def test_closing_the_iterator_stops_the_workers():
    """After close(), no worker process is left and nothing more is pulled."""
    source = Source(itertools.count())
    flow = Coordinator[int]([Step("pid", steps.pid)])
    results = flow.run_many(source, executor="processes", workers=2)
    pids = {next(results).data_bag.get_job_data("pid") for _ in range(10)}
    results.close()
    pulled = source.pulled

    assert multiprocessing.active_children() == []
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(StopIteration):
        next(results)
    assert source.pulled == pulled


def test_values_reach_the_workers():
    """The batch's values= travel with the recipe."""
    flow = Coordinator[int]([Step("meet", steps.meet)])
    results = list(flow.run_many([1], executor="processes", workers=1, values={"folder": "/nonexistent", "count": 0}))
    assert isinstance(results[0].fatal, JobFailed)
    assert isinstance(results[0].fatal.error, FileNotFoundError)  # the folder of values= was used there


# -- what can't be shipped ------------------------------------------------------------


def local_flow() -> Coordinator[int]:
    def local(x: int) -> int:
        return x

    return Coordinator[int]([Step("fine", steps.double), Step("local", local)])


class Holder:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def work(self, x: int) -> int:
        return x


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (
            lambda: Coordinator[int]([Step("fine", steps.double), Step("anonymous", lambda x: x)]),
            "step 'anonymous', job",
        ),
        (local_flow, "step 'local', job local_flow.<locals>.local"),
        (lambda: Coordinator[int]([Step("held", Holder().work)]), "step 'held', job Holder.work"),
        (lambda: Coordinator[int]([Step("p", steps.double, lambda x: None)]), "step 'p', precheck"),
        (lambda: Coordinator[int]([Parallel("g", Step("inner", lambda x: x))]), "step 'inner', job"),
        (
            lambda: Coordinator[int]([Step("s", steps.double)], store=SqliteStore(DB), key=lambda x: f"{x}"),
            "the key function",
        ),
        (
            lambda: Coordinator[int]([Step("s", steps.double)], resources={"db": lambda: 1}),
            "resource 'db', its factory",
        ),
    ],
    ids=["lambda", "local", "bound-method", "precheck", "in-a-group", "key", "resource"],
)
def test_what_cant_be_shipped_is_named_before_any_input_is_taken(make: Any, named: str):
    """A callback, key function or resource factory that doesn't pickle: a TypeError naming it, from run_many."""
    source = Source(iter(range(10)))
    flow = make()
    with pytest.raises(TypeError, match="can't be sent to worker processes") as raised:
        flow.run_many(source, executor="processes", workers=2)
    assert named in str(raised.value)
    assert "module" in str(raised.value)  # what to do instead
    assert source.pulled == 0


def test_unpicklable_values_are_named():
    flow = Coordinator[int]([Step("s", steps.double)])
    with pytest.raises(TypeError, match=r"values\['lock'\] can't be sent to worker processes"):
        flow.run_many([1], executor="processes", values={"lock": threading.Lock()})


@pytest.mark.parametrize("store", [MemoryStore(), SqliteStore(":memory:")], ids=["memory", "sqlite-in-memory"])
def test_a_store_in_memory_cant_be_shared_between_processes(store: Any):
    flow = Coordinator[int]([Step("s", steps.double)], store=store, key=steps.key_of)
    with pytest.raises(TypeError, match="can't share it"):
        flow.run_many([1], executor="processes")


def test_callbacks_of_python_c_are_refused_with_the_reason():
    """A function of `python -c` pickles here but can't be imported by workers: refused, saying so."""
    script = textwrap.dedent(
        """
        from choreograph import Coordinator, Step

        def work(x: int) -> int:
            return x

        try:
            Coordinator[int]([Step("work", work)]).run_many([1], executor="processes")
        except TypeError as exc:
            print(exc)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "step 'work', job work can't be sent to worker processes" in done.stdout
    assert "python -c" in done.stdout


def test_a_flow_the_workers_cant_rebuild_stops_the_batch_with_the_workers_error():
    """A callback whose module exists only in this process: the worker's import error is raised here, with a note."""
    phantom = types.ModuleType("choreograph_phantom_steps")

    def work(x: int) -> int:
        return x

    work.__module__ = phantom.__name__
    work.__qualname__ = "work"
    phantom.work = work  # type: ignore[attr-defined]
    sys.modules[phantom.__name__] = phantom
    try:
        flow = Coordinator[int]([Step("work", work)])
        with pytest.raises(ModuleNotFoundError, match="choreograph_phantom_steps") as raised:
            list(flow.run_many(range(5), executor="processes", workers=2))
    finally:
        del sys.modules[phantom.__name__]
    assert any("rebuilt the flow" in note for note in raised.value.__notes__)


def test_a_job_that_is_not_a_coordinators_is_refused():
    class Job:
        is_async = False

        def run(self, item: int, position: int) -> RunResult[int]:  # noqa: ARG002
            raise AssertionError

    with pytest.raises(TypeError, match="ShippableJob"):
        ProcessExecutor(1).map(Job(), iter([1]), ordered=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("workers", "error"), [(0, ValueError), (-1, ValueError), ("2", TypeError), (True, TypeError)])
def test_bad_worker_counts_are_refused(workers: object, error: type[Exception]):
    with pytest.raises(error, match="workers"):
        ProcessExecutor(workers)  # type: ignore[arg-type]
    with pytest.raises(error, match="workers"):
        Coordinator[int]([Step("s", steps.double)]).run_many([1], executor="processes", workers=workers)  # type: ignore[arg-type]


def test_fork_is_refused_and_the_default_is_forkserver():
    with pytest.raises(ValueError, match="fork"):
        ProcessExecutor(start_method="fork")
    assert ProcessExecutor().start_method == "forkserver"
    assert ProcessExecutor().workers == os.cpu_count()
    assert repr(ProcessExecutor(2, start_method="spawn")) == "ProcessExecutor(workers=2, start_method='spawn')"


def test_spawn_works_too():
    flow = Coordinator[int]([Step("double", steps.double)])
    results = list(flow.run_many(range(6), executor=ProcessExecutor(2, start_method="spawn"), ordered=True))
    assert [r.data_bag.get_job_data("double") for r in results] == [0, 2, 4, 6, 8, 10]


# -- events and listeners ------------------------------------------------------------


def test_events_of_worker_runs_reach_the_listeners_here_each_runs_in_order():
    """Listeners, listen(), on_success, on_failure: called in this process and thread, each run's events in order."""
    events: list[Any] = []
    heard: list[Any] = []
    outcomes: list[tuple[str, int, int, str]] = []
    here = threading.current_thread().name

    def on(outcome: str) -> Any:
        def record(result: RunResult[int]) -> None:
            outcomes.append((outcome, result.input, os.getpid(), threading.current_thread().name))

        return record

    flow = Coordinator[int](
        [Step("emits", steps.emits), Step("fails", steps.fails_on_three)],
        listeners=[events.append],
        on_success=on("ok"),
        on_failure=on("failed"),
    )
    unsubscribe = flow.listen(heard.append)
    results = list(flow.run_many(range(6), executor="processes", workers=2))
    unsubscribe()

    assert len(results) == 6
    assert heard == events
    assert sorted((o, x) for o, x, _, _ in outcomes) == [("failed", 3)] + [("ok", x) for x in (0, 1, 2, 4, 5)]
    assert {(pid, thread) for _, _, pid, thread in outcomes} == {(os.getpid(), here)}
    # Each run's events arrive together, in order: started, its callbacks, finished.
    runs: list[list[Any]] = []
    for event in events:
        if isinstance(event, RunStarted):
            runs.append([])
        runs[-1].append(event)
    assert len(runs) == 6
    for run in runs:
        x = run[0].input
        kinds = [type(event) for event in run]
        assert kinds[:4] == [RunStarted, CallbackStarted, Emitted, CallbackFinished]
        assert kinds[-1] is RunFinished
        assert run[2].payload["x"] == x
        assert run[2].payload["pid"] != os.getpid()
        assert run[-1].result.input == x
        assert {event.run_id for event in run} == {run[0].run_id}
    finished = {run[-1].result.input: run[-1].result for run in runs}
    assert all(finished[r.input] is r for r in results)  # the event's result is the one yielded


def test_without_listeners_no_event_is_made_in_the_workers(log_records: list[dict[str, Any]]):
    """Nobody listens and logging is off: the workers make no event (a run costs what it costs without listeners)."""
    flow = Coordinator[int]([Step("emits", steps.emits)])
    logger.disable("choreograph")
    assert all(r.ok for r in flow.run_many(range(4), executor="processes", workers=1))
    remote = pickle.loads(flow._batch(None, None, fresh=False).ship())  # noqa: S301 - our own
    assert remote._coordinator._subscriptions == ()
    logger.enable("choreograph")
    remote = pickle.loads(flow._batch(None, None, fresh=False).ship())  # noqa: S301 - our own
    assert len(remote._coordinator._subscriptions) == 1  # the collector of events, for this process's logging
    assert log_records == []


def test_worker_runs_are_logged_here(log_records: list[dict[str, Any]]):
    flow = Coordinator[int]([Step("fails", steps.fails_on_three)])
    list(flow.run_many(range(5), executor="processes", workers=2))

    messages = [record["message"] for record in log_records]
    assert sum("finished ok" in message for message in messages) == 4
    assert any("stopped" in message for message in messages)
    assert {record["process"].id for record in log_records} == {os.getpid()}


def test_an_error_that_does_not_pickle_comes_back_as_a_stored_error():
    """The result and the events keep the error's class and message, as a StoredError."""
    events: list[Any] = []
    flow = Coordinator[int]([Step("raises", steps.raises_unpicklable)], listeners=[events.append])
    (result,) = flow.run_many([4], executor="processes", workers=1)

    assert isinstance(result.fatal, JobFailed)
    error = result.fatal.error
    assert isinstance(error, StoredError)
    assert error.type_name == "_process_steps.LockedError"
    assert error.message == "4"
    assert isinstance(result.errors[0].error, StoredError)
    finished = [e for e in events if isinstance(e, CallbackFinished)]
    assert isinstance(finished[0].error, StoredError)
    assert events[-1].result is result


def test_an_output_that_does_not_pickle_fails_the_run_with_unstorable_output():
    """The run ran; its output can't leave the worker: left out, and the result says why."""
    flow = Coordinator[int]([Step("double", steps.double), Step("lock", steps.unpicklable_output)])
    (result,) = flow.run_many([4], executor="processes", workers=1)

    assert isinstance(result.fatal, UnstorableOutput)
    assert result.fatal.step == "lock"
    assert "pickled" in str(result.fatal)
    assert result.data_bag.get_job_data("double") == 8
    assert not result.data_bag.has_job_data("lock")
    assert [(c.step, c.outcome) for c in result.trace] == [("double", "ok"), ("lock", "ok")]


def test_an_input_that_does_not_pickle_fails_alone():
    """A record that can't be sent gets a failed result (InputError naming its position); the batch goes on."""
    flow = Coordinator[object]([Step("s", steps.pid)])
    records: list[object] = [1, threading.Lock(), 3]
    results = sorted(flow.run_many(records, executor="processes", workers=1), key=lambda r: records.index(r.input))

    assert [r.ok for r in results] == [True, False, True]
    fatal = results[1].fatal
    assert isinstance(fatal, InputError)
    assert fatal.position == 1


def test_a_report_that_cant_be_unpickled_here_fails_its_record():
    """An output of a class only the worker can import: that record fails with the error; the others go on."""
    flow = Coordinator[int]([Step("only", steps.worker_only)])
    (result,) = flow.run_many([1], executor="processes", workers=1)
    assert isinstance(result.fatal, InputError)
    assert isinstance(result.fatal.error, ModuleNotFoundError)
    assert result.input == 1


def test_results_pickle_with_their_fields():
    """A RunResult survives a pickle round trip: what travels back from workers."""
    result = Coordinator[int]([Step("fails", steps.fails_on_three), Step("d", steps.double)]).run(3)
    back = pickle.loads(pickle.dumps(result))  # noqa: S301 - our own
    assert back.input == 3
    assert isinstance(back.fatal, JobFailed)
    assert back.trace == result.trace
    assert [type(e.error) for e in back.errors] == [ValueError]


# -- workers that die, interruptions ---------------------------------------------------


def test_a_worker_that_dies_fails_its_record_and_the_batch_goes_on():
    """os._exit in a callback: that record's result is an InputError (ChildProcessError), every other record runs."""
    flow = Coordinator[int]([Step("dies", steps.dies_on_three)])
    results = {r.input: r for r in flow.run_many(range(12), executor="processes", workers=2)}

    assert sorted(results) == list(range(12))
    fatal = results[3].fatal
    assert isinstance(fatal, InputError)
    assert fatal.position == 3
    assert isinstance(fatal.error, ChildProcessError)
    assert "exit code 7" in str(fatal.error)
    assert all(results[x].ok for x in results if x != 3)


def test_a_worker_that_dies_late_in_a_long_batch_fails_only_the_record_it_was_running():
    """Once inputs travel several to a message, a worker's death still fails only its running record, once."""
    records = [*range(10, 610), 3, *range(610, 1000)]  # 3 (the one that kills its worker) at position 600
    flow = Coordinator[int]([Step("dies", steps.dies_on_three)])
    results = list(flow.run_many(records, executor="processes", workers=2))

    assert sorted(r.input for r in results) == sorted(records)  # each record once: none lost, none run twice
    failed = [r for r in results if not r.ok]
    assert [r.input for r in failed] == [3]
    assert isinstance(failed[0].fatal, InputError)
    assert failed[0].fatal.position == 600
    assert isinstance(failed[0].fatal.error, ChildProcessError)


@pytest.mark.parametrize("ordered", [False, True])
def test_a_long_batch_of_short_runs_gives_each_record_one_result(ordered: bool):
    """Thousands of short runs (sent several to a message), an input that can't be pickled among them."""
    records: list[object] = list(range(3000))
    records[1500] = threading.Lock()
    flow = Coordinator[object]([Step("double", steps.double)])
    results = list(flow.run_many(records, executor="processes", workers=2, ordered=ordered))

    positions = [records.index(r.input) if r.input is records[1500] else r.input for r in results]
    assert sorted(positions) == list(range(3000))
    if ordered:
        assert positions == list(range(3000))
    assert [r.ok for r in results].count(False) == 1
    (failed,) = [r for r in results if not r.ok]
    assert isinstance(failed.fatal, InputError)
    assert failed.fatal.position == 1500
    assert all(r.data_bag.get_job_data("double") == 2 * r.input for r in results if r.ok)


def test_keyboard_interrupt_in_a_callback_reaches_the_caller():
    flow = Coordinator[int]([Step("i", steps.interrupts_on_five)])
    with pytest.raises(KeyboardInterrupt):
        list(flow.run_many(range(20), executor="processes", workers=2))


INTERRUPTED = textwrap.dedent(
    r"""
    import os, sys
    sys.path.insert(0, {tests!r})
    import _process_steps as steps
    from choreograph import Coordinator, Step

    if __name__ == "__main__":
        flow = Coordinator[int]([Step("slow", steps.slow_after)])
        done = 0
        try:
            for result in flow.run_many(range(1_000_000), executor="processes", workers=2):
                done += 1
        except KeyboardInterrupt:
            os.write(1, f"interrupted {{done}}\n".encode())
            raise
    """
)


@pytest.mark.parametrize("to_group", [False, True], ids=["to-the-caller", "to-the-group"])
def test_ctrl_c_stops_taking_lets_runs_in_flight_finish_and_leaves_no_process(tmp_path: Path, to_group: bool):
    """SIGINT (to the caller, or to the whole group as a terminal does): in-flight runs end, then KeyboardInterrupt."""
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED.format(tests=str(TESTS)), encoding="utf-8")
    with subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while len([line for line in lines if line.startswith("start")]) < 2:
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"the script ended early: {process.communicate()[1]}")
            lines.append(line.strip())
        if to_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    lines += out.splitlines()

    assert process.returncode != 0
    assert "KeyboardInterrupt" in err
    started = {line.split()[1] for line in lines if line.startswith("start")}
    ended = {line.split()[1] for line in lines if line.startswith("end")}
    assert started == ended  # every run in flight finished
    assert len(started) == 2  # the two in flight at the signal: nothing new was started after it
    assert any(line.startswith("interrupted") for line in lines)
    pids = {int(line.split()[2]) for line in lines if line.startswith("start")}
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


# -- durable runs, resources, flows -----------------------------------------------------


def test_durable_runs_open_the_store_in_each_worker_and_resume(tmp_path: Path):
    """Each worker opens the SqliteStore from its path and options; a second batch restores what finished."""
    store = SqliteStore(tmp_path / "runs.db", lease=30.0, synchronous="FULL")
    flow = Coordinator[int](
        [Step("fails", steps.fails_on_three), Step("d", steps.double)], store=store, key=steps.key_of
    )
    first = {r.input: r for r in flow.run_many(range(6), executor="processes", workers=2)}

    assert [x for x, r in first.items() if not r.ok] == [3]
    assert {info.key: info.status for info in store.runs()} == {
        "0": "ok",
        "1": "ok",
        "2": "ok",
        "3": "failed",
        "4": "ok",
        "5": "ok",
    }
    again = {r.input: r for r in flow.run_many(range(6), executor="processes", workers=2)}
    assert all(call.restored for x in (0, 1, 2, 4, 5) for call in again[x].trace)
    assert [c.restored for c in again[3].trace] == [False]  # the failed step ran again
    store.close()


def test_a_bad_key_in_a_durable_batch_fails_that_record(tmp_path: Path):
    store = SqliteStore(tmp_path / "runs.db")
    flow = Coordinator[dict[str, int]]([Step("s", steps.size)], store=store, key=steps.record_key)
    records = [{"id": 1}, {"no": 2}, {"id": 3}]
    results = sorted(flow.run_many(records, executor="processes", workers=1), key=lambda r: records.index(r.input))
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].fatal, InputError)
    assert results[1].fatal.position == 1
    store.close()


def test_each_worker_process_makes_its_resources_once_and_closes_them(tmp_path: Path):
    """A resource per process, made on first use, closed when the worker ends (counted in a file)."""
    log = tmp_path / "resources.log"
    flow = Coordinator[int](
        [Step("r", steps.resource_pid)], resources={"db": functools.partial(steps.counted, str(log))}
    )
    results = list(flow.run_many(range(30), executor="processes", workers=2))

    lines = log.read_text(encoding="utf-8").splitlines()
    opened = [line.split()[1] for line in lines if line.startswith("open")]
    closed = [line.split()[1] for line in lines if line.startswith("close")]
    assert sorted(opened) == sorted(closed)
    assert len(opened) == len(set(opened)) <= 2  # once per worker process
    assert {str(r.data_bag.get_job_data("r")) for r in results} <= set(opened)


def test_async_flows_and_groups_run_in_workers_too():
    flow = Coordinator[int](
        [Parallel("both", Step("waits", steps.waits), Step("double", steps.double)), Step("pid", steps.pid)]
    )
    results = list(flow.run_many(range(8), executor="processes", workers=2, ordered=True))
    assert [r.data_bag.get_job_data("waits") for r in results] == list(range(8))
    assert [r.data_bag.get_job_data("double") for r in results] == [2 * x for x in range(8)]


def test_a_flow_with_async_callbacks_can_be_interrupted_in_a_worker():
    flow = Coordinator[int]([Step("waits", steps.waits), Step("i", steps.interrupts_on_five)])
    with pytest.raises(KeyboardInterrupt):
        list(flow.run_many(range(20), executor="processes", workers=1))


SHOP = textwrap.dedent(
    """
    from dataclasses import dataclass

    from choreograph import Coordinator, Step


    @dataclass(frozen=True)
    class Order:
        id: str
        amount: int


    def charge(order: Order) -> int:
        if order.amount > 100:
            raise ValueError("over the limit")
        return order.amount


    orders = Coordinator[Order]([Step("charge", charge)])
    """
)


@pytest.mark.parametrize("executor", ["processes", "async"])
def test_the_command_line_runs_records_on_processes_and_async(tmp_path: Path, executor: str):
    """`choreograph run --executor processes|async`: a durable batch, then the same again, restored."""
    (tmp_path / "shop.py").write_text(SHOP, encoding="utf-8")
    (tmp_path / "orders.csv").write_text("id,amount\nA-1,10\nA-2,250\nA-3,30\n", encoding="utf-8")
    command = [
        sys.executable, "-m", "choreograph", "run", "shop:orders", "orders.csv", "--store", "runs.db", "--key", "id",
        "--executor", executor, "--workers", "2", "--output", "out.jsonl", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    first = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 1, first.stderr  # A-2 failed
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted((line["key"], line["ok"]) for line in map(json.loads, lines)) == [
        ("A-1", True), ("A-2", False), ("A-3", True)
    ]  # fmt: skip
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 1, again.stderr
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    restored = {line["key"]: (line["restored"], line["resumed"]) for line in map(json.loads, lines)}
    assert restored == {"A-1": (True, False), "A-2": (False, True), "A-3": (True, False)}


def test_what_ship_packs_rebuilds_the_same_flow_and_its_reports_come_back(tmp_path: Path):
    """Unpickled here (as a worker does), the shipped job runs the same flow, every option kept; reports round trip."""
    log = tmp_path / "resources.log"
    store = SqliteStore(tmp_path / "runs.db", lease=20.0)
    events: list[Any] = []
    flow = Coordinator[int](
        [
            Parallel("both", Step("double", steps.double), [Step("skip", steps.double, steps.skip_odd)]),
            Step("r", steps.resource_pid),
            Step("checked", steps.double, steps.fails_on_three),
        ],
        store=store,
        key=steps.key_of,
        strict_prechecks=True,
        resources={"db": functools.partial(steps.counted, str(log))},
        listeners=[events.append],
    )
    job = flow._batch(None, None, fresh=False)
    remote = pickle.loads(job.ship())  # noqa: S301 - our own
    assert remote.is_async is False

    ok = job.receive(remote.run(2, 0))
    assert ok.ok
    assert ok.key == "2"
    assert ok.data_bag.get_job_data("double") == 4
    odd = job.receive(remote.run(3, 1))
    assert odd.fatal is not None
    assert type(odd.fatal).__name__ == "PrecheckFailed"  # strict_prechecks travelled
    assert odd.data_bag.get_precheck_data("skip") == 3  # the group's Skip output travelled too
    remote.close()

    assert {info.key for info in store.runs()} == {"2", "3"}  # the rebuilt store is the same file
    assert log.read_text(encoding="utf-8").splitlines() == [f"open {os.getpid()}", f"close {os.getpid()}"]
    assert [type(e).__name__ for e in events].count("RunFinished") == 2
    assert events[-1].result is odd
    store.close()


def test_a_report_of_what_does_not_pickle_keeps_what_does():
    """Unpicklable errors become StoredErrors in the result and in the events; unpicklable outputs fail the run."""
    events: list[Any] = []
    flow = Coordinator[int](
        [
            Step("double", steps.double),
            Step("lock", steps.unpicklable_output),
            Step("raises", steps.raises_unpicklable),
        ],
        listeners=[events.append],
    )
    job = flow._batch(None, None, fresh=False)
    remote = pickle.loads(job.ship())  # noqa: S301 - our own
    result = job.receive(remote.run(5, 0))
    remote.close()

    assert isinstance(result.fatal, JobFailed)  # the run's own fatal stays (as a stand-in)
    assert isinstance(result.fatal.error, StoredError)
    assert result.data_bag.get_job_data("double") == 10
    assert not result.data_bag.has_job_data("lock")
    finished = [e for e in events if isinstance(e, CallbackFinished) and e.error is not None]
    assert [type(e.error) for e in finished] == [StoredError]
