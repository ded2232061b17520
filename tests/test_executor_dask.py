"""`DaskExecutor`: runs on the workers of a Dask cluster (`distributed.LocalCluster` here), shipped by reference."""

import functools
import importlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from distributed import Client, KilledWorker, LocalCluster

from choreograph import (
    Coordinator,
    InputError,
    JobFailed,
    MemoryStore,
    Parallel,
    RunResult,
    SqliteStore,
    Step,
)
from choreograph.events import CallbackFinished, Emitted, RunFinished, RunStarted
from choreograph.executors import DaskExecutor

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # workers import the callbacks by reference: from a module on sys.path
    sys.path.insert(0, str(TESTS))

import _dask_steps as dsteps  # noqa: E402
import _process_steps as steps  # noqa: E402


class Source:
    """An input iterable that counts how many items were pulled from it (and can raise at one)."""

    def __init__(self, items: Iterator[int], *, interrupt_at: int | None = None, pause: float = 0.0) -> None:
        self.items = items
        self.pulled = 0
        self.interrupt_at = interrupt_at
        self.pause = pause

    def __iter__(self) -> Iterator[int]:
        for item in self.items:
            if item == self.interrupt_at:
                time.sleep(self.pause)
                raise KeyboardInterrupt
            self.pulled += 1
            yield item


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """An in-process cluster: 2 workers of 2 threads (quick to start; its workers share this process)."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as made,
    ):
        yield made


@pytest.fixture(scope="module")
def processes() -> Iterator[Client]:
    """A cluster of 2 worker processes of 1 thread each: the callbacks travel by reference."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as made,
    ):
        yield made


def batch_keys(client: Client) -> list[str]:
    """The keys of choreograph's tasks the client holds futures of."""
    return [key for key in client.futures if str(key).startswith("choreograph-")]


def scheduler_keys(client: Client) -> list[str]:
    """The keys of choreograph's tasks the scheduler still has, once it took the client's releases (within 1 s)."""

    def held(dask_scheduler: Any) -> list[str]:
        return [key for key in dask_scheduler.tasks if str(key).startswith("choreograph-")]

    deadline = time.monotonic() + 1
    while (keys := client.run_on_scheduler(held)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return keys


def batch_plugins(client: Client) -> list[str]:
    """The batches' plugins left on the workers."""

    def names(dask_worker: Any) -> list[str]:
        return [name for name in dask_worker.plugins if name.startswith("choreograph-")]

    return sorted(name for found in client.run(names).values() for name in found)


@pytest.fixture(autouse=True)
def nothing_left_held(client: Client) -> Iterator[None]:
    """Every test leaves no future of a batch held, and no batch's plugin on the workers."""
    yield
    assert batch_keys(client) == []
    assert scheduler_keys(client) == []
    assert batch_plugins(client) == []


# -- outputs, errors, ordering -----------------------------------------------------------


def test_runs_happen_on_the_workers_and_results_come_back(client: Client):
    """Each record runs on a Dask worker's thread; its outputs, trace and errors come back with the result."""
    flow = Coordinator[int](
        [Step("double", steps.double), Step("where", dsteps.thread_name), Step("fails", steps.fails_on_three)]
    )
    results = {r.input: r for r in flow.run_many(range(20), executor=DaskExecutor(client))}

    assert sorted(results) == list(range(20))
    assert {x: r.data_bag.get_job_data("double") for x, r in results.items()} == {x: 2 * x for x in range(20)}
    assert all("Dask-Default-Threads" in str(r.data_bag.get_job_data("where")) for r in results.values())
    assert [x for x, r in results.items() if not r.ok] == [3]
    fatal = results[3].fatal
    assert isinstance(fatal, JobFailed)
    assert fatal.step == "fails"
    assert isinstance(fatal.error, ValueError)
    assert fatal.error.args == (3,)
    assert [(c.step, c.outcome) for c in results[3].trace] == [("double", "ok"), ("where", "ok"), ("fails", "failed")]


def test_results_come_as_they_complete_or_in_input_order_when_asked(client: Client):
    """A slow first record: without ordered, the others come before it; with ordered=True, it comes first."""
    flow = Coordinator[int]([Step("slow", dsteps.slow_first)])
    executor = DaskExecutor(client, chunksize=1)
    unordered = [r.input for r in flow.run_many(range(8), executor=executor)]
    assert sorted(unordered) == list(range(8))
    assert unordered[0] != 0
    ordered = [r.input for r in flow.run_many(range(8), executor=executor, ordered=True)]
    assert ordered == list(range(8))


def test_chunks_of_several_records_keep_each_records_result(client: Client):
    """Records travel in chunks: each still gets its own result, in order when asked."""
    flow = Coordinator[int]([Step("double", steps.double), Step("fails", steps.fails_on_three)])
    results = list(flow.run_many(range(250), executor=DaskExecutor(client, chunksize=16), ordered=True))

    assert [r.input for r in results] == list(range(250))
    assert [r.data_bag.get_job_data("double") for r in results] == [2 * x for x in range(250)]
    assert [r.ok for r in results].count(False) == 1
    assert not results[3].ok


def test_an_input_that_does_not_pickle_fails_alone(client: Client):
    """A record that can't be sent gets a failed result (InputError naming its position); the batch goes on."""
    flow = Coordinator[object]([Step("s", steps.double)])
    records: list[object] = [1, threading.Lock(), 3]
    results = sorted(flow.run_many(records, executor=DaskExecutor(client)), key=lambda r: records.index(r.input))

    assert [r.ok for r in results] == [True, False, True]
    fatal = results[1].fatal
    assert isinstance(fatal, InputError)
    assert fatal.position == 1
    assert isinstance(fatal.error, TypeError)
    assert results[1].input is records[1]


def test_an_input_the_workers_cant_unpickle_fails_alone(client: Client):
    """Its unpickling raises on the worker (an error that doesn't pickle either): InputError with its text."""
    flow = Coordinator[object]([Step("s", steps.double)])
    records: list[object] = [1, dsteps.Unreadable(), 3]
    results = sorted(flow.run_many(records, executor=DaskExecutor(client)), key=lambda r: records.index(r.input))

    assert [r.ok for r in results] == [True, False, True]
    fatal = results[1].fatal
    assert isinstance(fatal, InputError)
    assert fatal.position == 1
    assert isinstance(fatal.error, RuntimeError)
    assert "LockedError: 7 (on a Dask worker)" in str(fatal.error)


def test_records_a_worker_did_not_run_are_sent_again(client: Client):
    """A worker that loses the batch's recipe mid-chunk: the rest of that chunk runs again, each record once."""
    dsteps.STARTED.clear()
    dsteps.ENDED.clear()
    flow = Coordinator[int]([Step("drops", dsteps.drops_recipe)])
    results = list(flow.run_many(range(8), executor=DaskExecutor(client, chunksize=4, window=1), ordered=True))

    assert [r.input for r in results] == list(range(8))
    assert all(r.ok for r in results)
    assert sorted(dsteps.STARTED) == sorted(dsteps.ENDED) == list(range(8))  # each once: 2 and 3 after a resend


def test_async_flows_and_groups_run_on_the_workers(client: Client):
    flow = Coordinator[int](
        [Parallel("both", Step("waits", steps.waits), Step("double", steps.double)), Step("where", dsteps.thread_name)]
    )
    results = list(flow.run_many(range(8), executor=DaskExecutor(client), ordered=True))
    assert [r.data_bag.get_job_data("waits") for r in results] == list(range(8))
    assert [r.data_bag.get_job_data("double") for r in results] == [2 * x for x in range(8)]
    assert all("Dask-Default-Threads" in str(r.data_bag.get_job_data("where")) for r in results)


def test_keyboard_interrupt_in_a_callback_reaches_the_caller(client: Client):
    flow = Coordinator[int]([Step("i", steps.interrupts_on_five)])
    with pytest.raises(KeyboardInterrupt):
        list(flow.run_many(range(20), executor=DaskExecutor(client, chunksize=1)))


# -- listeners --------------------------------------------------------------------------


def test_the_workers_events_reach_the_callers_listeners_before_the_result(client: Client):
    """Each run's events are replayed in the calling thread, in order, before its result is yielded."""
    events: list[Any] = []
    seen: list[tuple[str, int]] = []
    caller = threading.get_ident()

    def listener(event: Any) -> None:
        assert threading.get_ident() == caller
        events.append(event)
        if isinstance(event, RunFinished):
            seen.append(("finished", event.result.input))

    flow = Coordinator[int]([Step("emits", steps.emits), Step("fails", steps.fails_on_three)], listeners=[listener])
    for result in flow.run_many(range(6), executor=DaskExecutor(client)):
        assert ("finished", result.input) in seen  # its events came first
        finished = next(e for e in events if isinstance(e, RunFinished) and e.result.input == result.input)
        assert finished.result is result

    runs = [e for e in events if isinstance(e, RunStarted)]
    assert sorted(e.input for e in runs) == list(range(6))
    emitted = [e for e in events if isinstance(e, Emitted)]
    assert sorted(e.payload["x"] for e in emitted) == list(range(6))
    assert all(e.payload["pid"] == os.getpid() for e in emitted)  # in-process workers
    failed = [e for e in events if isinstance(e, CallbackFinished) and e.error is not None]
    assert [(e.step, type(e.error), e.error.args) for e in failed] == [("fails", ValueError, (3,))]


# -- the window, laziness, closing --------------------------------------------------------


@pytest.fixture
def held(client: Client) -> Iterator[dsteps.HeldTasks]:
    """A scheduler plugin counting the batch's tasks the scheduler holds at once."""
    client.register_plugin(dsteps.HeldTasks(), name="held-tasks")
    cluster = client.cluster
    assert cluster is not None
    plugin = cluster.scheduler.plugins["held-tasks"]  # in-process: the scheduler's own instance
    assert isinstance(plugin, dsteps.HeldTasks)
    yield plugin
    client.unregister_scheduler_plugin("held-tasks")


def test_the_scheduler_never_holds_more_tasks_than_the_window(client: Client, held: dsteps.HeldTasks):
    """60 records, one per task, a window of 3: the scheduler held 3 of the batch's tasks at once, never more."""
    source = Source(iter(range(60)))
    flow = Coordinator[int]([Step("nap", dsteps.naps)])
    results = list(flow.run_many(source, executor=DaskExecutor(client, window=3, chunksize=1), values={"nap": 0.005}))

    assert sorted(r.input for r in results) == list(range(60))
    assert held.seen == 60
    assert held.most == 3


def test_the_default_window_is_twice_the_clusters_threads(client: Client, held: dsteps.HeldTasks):
    threads = sum(client.nthreads().values())
    flow = Coordinator[int]([Step("nap", dsteps.naps)])
    results = list(flow.run_many(range(40), executor=DaskExecutor(client, chunksize=1), values={"nap": 0.005}))

    assert len(results) == 40
    assert held.most == 2 * threads


def test_inputs_are_taken_lazily_within_the_window(client: Client):
    """While results are taken one by one, the records pulled stay within the window's records."""
    source = Source(iter(range(1_000_000)))
    flow = Coordinator[int]([Step("double", steps.double)])
    results = flow.run_many(source, executor=DaskExecutor(client, window=4, chunksize=5))
    for taken, _ in enumerate(results, 1):
        assert source.pulled <= taken + 4 * 5
        if taken == 50:
            break
    results.close()
    assert source.pulled <= 50 + 4 * 5


def test_ordered_results_wait_within_a_bounded_window(client: Client):
    """A slow first record with ordered=True: the others are taken up to the window's bound, then the taking waits."""
    source = Source(iter(range(1_000_000)))
    flow = Coordinator[int]([Step("slow", dsteps.slow)])
    results = flow.run_many(source, executor=DaskExecutor(client, window=2, chunksize=1), ordered=True)
    first = next(results)
    assert first.input == 0
    assert source.pulled <= 2 + 1 + 2  # the window's records, the one yielded, and its growth
    results.close()


def test_closing_mid_stream_stops_taking_lets_runs_in_flight_finish_and_releases_every_future(client: Client):
    """Close after 3 results: no more input is taken, what had started ends, nothing else starts, no future is held."""
    dsteps.STARTED.clear()
    dsteps.ENDED.clear()
    source = Source(iter(range(1_000)))
    flow = Coordinator[int]([Step("slow", dsteps.slow)])
    results = flow.run_many(source, executor=DaskExecutor(client, window=4, chunksize=1))
    got = [next(results).input for _ in range(3)]
    pulled = source.pulled
    results.close()

    assert source.pulled == pulled <= 3 + 4
    started = list(dsteps.STARTED)
    assert sorted(dsteps.ENDED) == sorted(started)  # the runs in flight finished before close returned
    assert set(got) <= set(started)
    time.sleep(0.3)
    assert started == dsteps.STARTED  # nothing started after
    assert batch_keys(client) == []


def test_an_interruption_in_the_calling_thread_stops_the_batch_after_the_runs_in_flight(client: Client):
    """KeyboardInterrupt while taking inputs: raised once what had started ended; nothing else starts."""
    dsteps.STARTED.clear()
    dsteps.ENDED.clear()
    source = Source(iter(range(1_000)), interrupt_at=6)
    flow = Coordinator[int]([Step("slow", dsteps.slow)])
    done: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        done.extend(r.input for r in flow.run_many(source, executor=DaskExecutor(client, window=4, chunksize=1)))

    started = list(dsteps.STARTED)
    assert sorted(dsteps.ENDED) == sorted(started)
    assert set(started) <= set(range(6))
    time.sleep(0.3)
    assert started == dsteps.STARTED
    assert batch_keys(client) == []


def test_ctrl_c_while_waiting_for_results_stops_the_batch_after_the_runs_in_flight(client: Client):
    """SIGINT while the calling thread waits: KeyboardInterrupt once what had started ended; nothing else starts."""
    dsteps.STARTED.clear()
    dsteps.ENDED.clear()
    flow = Coordinator[int]([Step("slow", dsteps.slow)])
    results = flow.run_many(range(100), executor=DaskExecutor(client, window=4, chunksize=1))  # 5 s of runs
    interrupt = threading.Timer(0.5, signal.raise_signal, (signal.SIGINT,))
    interrupt.start()
    done: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        done.extend(result.input for result in results)
    interrupt.join()

    started = list(dsteps.STARTED)
    assert 4 <= len(started) < 100
    assert sorted(dsteps.ENDED) == sorted(started)
    assert set(done) < set(started)
    time.sleep(0.3)
    assert started == dsteps.STARTED
    assert batch_keys(client) == []


def test_a_chunk_stops_after_the_run_in_flight_when_the_batch_stops(client: Client):
    """A chunk of 50 slow records is running when the batch stops: its current record finishes, the rest never run."""
    dsteps.STARTED.clear()
    dsteps.ENDED.clear()
    source = Source(iter(range(1_000)), interrupt_at=60, pause=0.5)  # the second chunk's taking is interrupted
    flow = Coordinator[int]([Step("slow", dsteps.slow)])
    with pytest.raises(KeyboardInterrupt):
        list(flow.run_many(source, executor=DaskExecutor(client, window=2, chunksize=50)))

    started = list(dsteps.STARTED)
    assert 1 <= len(started) < 10
    assert sorted(dsteps.ENDED) == sorted(started)
    time.sleep(0.3)
    assert started == dsteps.STARTED


# -- shipping ----------------------------------------------------------------------------


def test_each_worker_thread_rebuilds_the_flow_once_not_once_per_task(client: Client):
    """40 tasks of one record: the recipe is unpickled once per worker thread at most, not once per task."""
    dsteps.REBUILT.clear()
    flow = Coordinator[int]([Step("double", steps.double)])
    values = {"rebuilt": dsteps.Rebuilt()}
    results = list(flow.run_many(range(40), executor=DaskExecutor(client, chunksize=1), values=values))

    assert len(results) == 40
    threads = sum(client.nthreads().values())
    assert 1 <= len(dsteps.REBUILT) <= threads  # each worker's setup, and each thread but the one that took it


def test_what_cant_be_shipped_is_named_before_any_input_is_taken(client: Client):
    source = Source(iter(range(10)))
    flow = Coordinator[int]([Step("double", steps.double), Step("local", lambda x: x)])
    with pytest.raises(TypeError, match="can't be sent to worker processes") as raised:
        flow.run_many(source, executor=DaskExecutor(client))
    assert "step 'local', job" in str(raised.value)
    assert "<lambda> can't be sent" in str(raised.value)
    assert "module" in str(raised.value)  # what to do instead
    assert source.pulled == 0


def test_a_memory_store_is_refused_before_any_input_is_taken(client: Client):
    source = Source(iter(range(10)))
    flow = Coordinator[int]([Step("s", steps.double)], store=MemoryStore(), key=steps.key_of)
    with pytest.raises(TypeError, match=r"MemoryStore .* can't share it"):
        flow.run_many(source, executor=DaskExecutor(client))
    assert source.pulled == 0


def test_not_a_coordinators_run_is_refused(client: Client):
    class Job:
        is_async = False

        def run(self, item: int, position: int) -> RunResult[int]:
            raise NotImplementedError

    with pytest.raises(TypeError, match="DaskExecutor runs a coordinator's runs"):
        DaskExecutor(client).map(Job(), iter([1]), ordered=False)  # type: ignore[arg-type]


def test_the_options_are_checked(client: Client):
    with pytest.raises(TypeError, match=r"client must be a distributed\.Client, got str"):
        DaskExecutor("tcp://scheduler:8786")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        DaskExecutor(client, window=0)
    with pytest.raises(TypeError, match="chunksize must be an int, got str"):
        DaskExecutor(client, chunksize="8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chunksize must be an int, got bool"):
        DaskExecutor(client, chunksize=True)
    flow = Coordinator[int]([Step("s", steps.double)])
    with pytest.raises(TypeError, match="workers= is for an executor given by name"):
        flow.run_many([1], executor=DaskExecutor(client), workers=2)
    assert repr(DaskExecutor(client, window=3)).endswith("window=3, chunksize=None)")


def test_a_client_in_its_asynchronous_use_is_refused(client: Client):
    """In the client's own event loop (where it is asynchronous), a DaskExecutor can't be made of it."""
    raised: list[BaseException] = []
    done = threading.Event()

    def make() -> None:
        try:
            DaskExecutor(client)
        except TypeError as exc:
            raised.append(exc)
        finally:
            done.set()

    client.loop.add_callback(make)
    assert done.wait(10)
    assert [str(error) for error in raised] == [
        "DaskExecutor needs a synchronous distributed.Client, used outside its event loop (run_many is not a coroutine)"
    ]


def test_without_distributed_the_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "choreograph.executors.dask")
    with pytest.raises(ImportError, match=r"choreograph\[dask\]"):
        importlib.import_module("choreograph.executors.dask")
    monkeypatch.undo()
    assert importlib.import_module("choreograph.executors.dask").DaskExecutor is DaskExecutor


# -- in worker processes -----------------------------------------------------------------


def test_runs_happen_in_worker_processes_by_reference(processes: Client):
    """The callbacks travel by reference: each record runs in one of the worker processes, not this one."""
    flow = Coordinator[int]([Step("double", steps.double), Step("pid", steps.pid)])
    results = list(flow.run_many(range(30), executor=DaskExecutor(processes), ordered=True))

    assert [r.data_bag.get_job_data("double") for r in results] == [2 * x for x in range(30)]
    pids = {r.data_bag.get_job_data("pid") for r in results}
    workers = set(processes.run(os.getpid).values())
    assert pids <= workers
    assert os.getpid() not in pids


def test_a_flow_the_workers_cant_rebuild_stops_the_batch_before_any_input(processes: Client):
    """A callback whose module only this process has: the workers' error, raised before any input is taken."""
    module = types.ModuleType("choreograph_caller_only")
    exec("def work(x):\n    return x\n", module.__dict__)  # noqa: S102 - a module made here on purpose
    sys.modules[module.__name__] = module
    try:
        source = Source(iter(range(10)))
        results = Coordinator[int]([Step("work", module.work)]).run_many(source, executor=DaskExecutor(processes))
        with pytest.raises(ModuleNotFoundError, match="choreograph_caller_only") as raised:
            next(results)
        assert any("rebuilt the flow" in note for note in raised.value.__notes__)
        assert source.pulled == 0
    finally:
        del sys.modules[module.__name__]
    assert batch_plugins(processes) == []  # the batch's plugin went, from the workers that couldn't set it up too


def test_a_report_that_cant_be_unpickled_here_fails_its_record(processes: Client):
    """An output of a class only the workers can import: that record fails with the error; the others go on."""
    flow = Coordinator[int]([Step("only", steps.worker_only)])
    (result,) = flow.run_many([1], executor=DaskExecutor(processes))
    assert isinstance(result.fatal, InputError)
    assert isinstance(result.fatal.error, ModuleNotFoundError)
    assert result.input == 1


def test_each_worker_makes_its_resources_once_and_closes_them_when_the_batch_ends(processes: Client, tmp_path: Path):
    """A resource per worker process (one thread each), made on first use, closed at the batch's end."""
    log = tmp_path / "resources.log"
    flow = Coordinator[int](
        [Step("r", steps.resource_pid)], resources={"db": functools.partial(steps.counted, str(log))}
    )
    results = list(flow.run_many(range(40), executor=DaskExecutor(processes, chunksize=2)))

    lines = log.read_text(encoding="utf-8").splitlines()
    opened = [line.split()[1] for line in lines if line.startswith("open")]
    closed = [line.split()[1] for line in lines if line.startswith("close")]
    assert sorted(opened) == sorted(closed)  # each closed when the batch ended
    assert len(opened) == len(set(opened)) <= 2  # once per worker
    workers = {str(pid) for pid in processes.run(os.getpid).values()}
    assert {str(r.data_bag.get_job_data("r")) for r in results} == set(opened) <= workers


def test_durable_runs_open_the_store_on_each_worker_and_resume_across_batches(processes: Client, tmp_path: Path):
    """Each worker opens the SqliteStore from its path; the next batch restores what finished and resumes the rest."""
    marker = tmp_path / "marker"
    store = SqliteStore(tmp_path / "runs.db", lease=30.0)
    flow = Coordinator[int](
        [Step("pid", steps.pid), Step("fails", dsteps.fails_first), Step("d", steps.double)],
        store=store,
        key=steps.key_of,
    )
    values = {"marker": str(marker)}
    first = {r.input: r for r in flow.run_many(range(6), executor=DaskExecutor(processes), values=values)}

    assert sorted(x for x, r in first.items() if not r.ok) == [1, 3, 5]
    assert {info.key: info.status for info in store.runs()} == {
        "0": "ok",
        "1": "failed",
        "2": "ok",
        "3": "failed",
        "4": "ok",
        "5": "failed",
    }
    workers = set(processes.run(os.getpid).values())
    assert {r.data_bag.get_job_data("pid") for r in first.values()} <= workers
    marker.touch()
    again = {r.input: r for r in flow.run_many(range(6), executor=DaskExecutor(processes), values=values)}

    assert all(r.ok for r in again.values())
    assert all(call.restored for x in (0, 2, 4) for call in again[x].trace)
    for x in (1, 3, 5):  # resumed: the step that was ok is restored, the failed one ran again
        assert [(c.step, c.restored) for c in again[x].trace] == [("pid", True), ("fails", False), ("d", False)]
        assert again[x].data_bag.get_job_data("fails") == 10 * x
        assert again[x].data_bag.get_job_data("pid") == first[x].data_bag.get_job_data("pid")
    assert {info.status for info in store.runs()} == {"ok"}
    (resumed,) = flow.run_many([3])  # and the calling process's own executor sees the same runs
    assert all(call.restored for call in resumed.trace)
    store.close()


GROUP_INTERRUPTED = textwrap.dedent(
    r"""
    import os, sys
    sys.path.insert(0, {tests!r})
    import _process_steps as steps
    from distributed import Client, LocalCluster
    from choreograph import Coordinator, Step
    from choreograph.executors import DaskExecutor

    if __name__ == "__main__":
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            flow = Coordinator[int]([Step("announce", steps.announce)])
            try:
                for result in flow.run_many(range(100), executor=DaskExecutor(client, chunksize=1)):
                    pass
            except KeyboardInterrupt:
                os.write(1, b"interrupted\n")
    """
)


def test_ctrl_c_to_the_process_group_of_a_local_cluster_stops_the_batch(tmp_path: Path):
    """Ctrl-C in a terminal reaches the worker processes too, which die: the batch still stops, and raises."""
    script = tmp_path / "interrupted.py"
    script.write_text(GROUP_INTERRUPTED.format(tests=str(TESTS)), encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )
    try:
        assert child.stdout is not None
        while not (line := child.stdout.readline()).startswith("start"):
            assert line, "the batch never started"
        os.killpg(child.pid, signal.SIGINT)
        # Usually 4 to 13 s; once, on CI, over 30 s: a worker dying of the SIGINT can stay listed as
        # processing a chunk until the scheduler removes it, and the batch waits for what workers hold.
        rest, _ = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        child.stdout.close()  # type: ignore[union-attr]  # a timeout left it open: not a later test's warning
    assert "interrupted" in rest.splitlines()
    assert child.returncode == 0


def test_a_worker_that_dies_fails_only_its_record_and_the_batch_goes_on():
    """os._exit in a callback: that record gets InputError(KilledWorker); the others of its chunk run elsewhere."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as made,
    ):
        flow = Coordinator[int]([Step("dies", steps.dies_on_three)])
        results = {r.input: r for r in flow.run_many(range(12), executor=DaskExecutor(made, chunksize=4))}

        assert sorted(results) == list(range(12))
        fatal = results[3].fatal
        assert isinstance(fatal, InputError)
        assert fatal.position == 3
        assert isinstance(fatal.error, KilledWorker)
        assert all(results[x].ok for x in results if x != 3)
        assert batch_keys(made) == []


def test_a_worker_leaving_mid_batch_runs_nothing_twice_with_a_durable_coordinator(tmp_path: Path):
    """
    A worker retired while it runs a chunk: Dask runs that chunk again on another worker.

    Its current record finishes first; with a store, the records that finished on the worker
    that left are not run again: every step ran once, and each record has one result.
    """
    dsteps.STARTED.clear()
    dsteps.ENDED.clear()
    store = SqliteStore(tmp_path / "runs.db")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as made,
    ):
        flow = Coordinator[int]([Step("slow", dsteps.slow)], store=store, key=steps.key_of)
        results = flow.run_many(range(12), executor=DaskExecutor(made, chunksize=6, window=2))
        leaving = threading.Timer(0.3, lambda: made.retire_workers([next(iter(made.nthreads()))]))
        leaving.start()
        inputs = sorted(r.input for r in results if r.ok)
        leaving.join()

        assert inputs == list(range(12))
        assert sorted(dsteps.STARTED) == sorted(dsteps.ENDED) == list(range(12))  # each record's step ran once
        assert len(made.nthreads()) == 1
        assert batch_keys(made) == []
    assert {info.status for info in store.runs()} == {"ok"}
    store.close()
