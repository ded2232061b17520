"""`Coordinator.rerun`: a new generation of a key, the steps before one restored, that step and the rest run again."""

import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from choreograph import (
    Context,
    Coordinator,
    Event,
    JobFailed,
    KeyBusy,
    Retry,
    RunCancelled,
    RunResult,
    Skip,
    SqliteStore,
    Step,
    StoreError,
)
from choreograph.typing import Store

ROOT = Path(__file__).resolve().parent.parent


class Flow:
    """
    Steps whose jobs log their calls and return ``"<step><n>"`` (n counts every call of the flow).

    ``fail``/``interrupt`` make a label (``"b.job"``, ``"a.compensate"``) raise, every call, until ``fix``.
    """

    def __init__(self) -> None:
        self.log: list[str] = []
        self.failing: set[str] = set()
        self.interrupting: set[str] = set()
        self.fail_once: set[str] = set()
        self.calls = 0

    def _call(self, label: str) -> str:
        self.log.append(label)
        self.calls += 1
        if label in self.interrupting:
            raise KeyboardInterrupt
        if label in self.failing:
            raise ValueError(label)
        if label in self.fail_once:
            self.fail_once.discard(label)
            raise ValueError(label)
        return f"{label.partition('.')[0]}{self.calls}"

    def job(self, step: str) -> Callable[[], str]:
        return lambda: self._call(f"{step}.job")

    def precheck(self, step: str) -> Callable[[], str]:
        return lambda: self._call(f"{step}.precheck")

    def compensate(self, step: str) -> Callable[[], None]:
        def undo() -> None:
            self._call(f"{step}.compensate")

        return undo

    def take(self) -> list[str]:
        calls, self.log = self.log, []
        return calls


def trace_of(result: RunResult[Any]) -> list[tuple[str, str, str, int, bool]]:
    return [(c.step, c.phase, c.outcome, c.attempts, c.restored) for c in result.trace]


def without_place(event: Event) -> Event:
    """An event as a copy of it must equal it: everything but its id, generation and session."""
    return dataclasses.replace(event, id=0, generation=0, session=0)


def abc(store: Store, flow: Flow, **options: Any) -> Coordinator[Any]:
    return Coordinator(
        [
            Step("a", flow.job("a"), **options),
            Step("b", flow.job("b"), flow.precheck("b"), **options),
            Step("c", flow.job("c"), **options),
        ],
        store=store,
    )


# -- what a rerun restores and runs --------------------------------------------------------


def test_a_rerun_restores_the_steps_before_and_runs_the_rest_in_a_new_generation(store: Store):
    """The steps before `from_step` come back from generation 1; it and the rest run again, in generation 2."""
    flow = Flow()
    coordinator = abc(store, flow)
    assert coordinator.run(None, key="k").ok
    assert flow.take() == ["a.job", "b.precheck", "b.job", "c.job"]
    first = store.events("k")

    result = coordinator.rerun("k", from_step="B")  # step names ignore case

    assert flow.take() == ["b.precheck", "b.job", "c.job"]
    assert result.ok
    assert result.key == "k"
    assert trace_of(result) == [
        ("a", "job", "ok", 1, True),
        ("b", "precheck", "ok", 1, False),
        ("b", "job", "ok", 1, False),
        ("c", "job", "ok", 1, False),
    ]
    assert result.data_bag.job_data == {"a": "a1", "b": "b6", "c": "c7"}
    assert result.data_bag.precheck_data == {"b": "b5"}
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions, info.interruptions) == ("ok", 2, 2, 0)
    assert store.events("k", generation=1) == first  # the older generation is kept as it was
    second = store.events("k", generation=2)
    assert [(e.step, e.phase, e.session, e.output) for e in second] == [
        ("a", "job", 2, '"a1"'),
        ("b", "precheck", 2, '"b5"'),
        ("b", "job", 2, '"b6"'),
        ("c", "job", 2, '"c7"'),
    ]
    assert without_place(second[0]) == without_place(first[0])  # a copy: same output, attempts, time
    assert second[0].id > max(e.id for e in first)
    store.verify()  # the copies belong to the new generation and session


def test_the_reruns_result_is_what_running_the_key_again_returns(store: Store):
    """Once the rerun finished ok, running the key runs nothing and returns the new generation's outputs."""
    flow = Flow()
    coordinator = abc(store, flow)
    coordinator.run(None, key="k")
    rerun = coordinator.rerun("k", from_step="c")
    flow.take()

    again = coordinator.run(None, key="k")

    assert flow.take() == []
    assert again.data_bag.job_data == rerun.data_bag.job_data == {"a": "a1", "b": "b3", "c": "c5"}
    assert [(c.step, c.phase, c.restored) for c in again.trace] == [
        ("a", "job", True),
        ("b", "precheck", True),
        ("b", "job", True),
        ("c", "job", True),
    ]


def test_a_rerun_from_the_first_step_runs_everything_with_the_stored_input(store: Store):
    """Nothing is restored; every callback gets the input stored for the key, and the values given to the rerun."""
    seen: list[tuple[object, object]] = []

    def job(ctx: Context[Any], order: dict[str, int]) -> int:
        seen.append((order, ctx.values.get("db")))
        return order["n"]

    coordinator = Coordinator([Step("only", job)], store=store)
    coordinator.run({"n": 7}, key="k", values={"db": "first"})

    result = coordinator.rerun("k", from_step="only", values={"db": "second"})

    assert seen == [({"n": 7}, "first"), ({"n": 7}, "second")]
    assert result.input == {"n": 7}
    assert trace_of(result) == [("only", "job", "ok", 1, False)]
    assert store.events("k", generation=2)[0].output == "7"


def test_a_rerun_counts_attempts_from_one_for_the_steps_it_runs_again(store: Store):
    """A restored step keeps the attempts it took; a step run again starts at attempt 1 in the new generation."""
    flow = Flow()
    retry = Retry(attempts=3, initial=0.0, jitter=0.0)
    coordinator = Coordinator(
        [Step("a", flow.job("a"), retry=retry), Step("b", flow.job("b"), retry=retry)], store=store
    )
    flow.fail_once |= {"a.job", "b.job"}
    assert trace_of(coordinator.run(None, key="k")) == [("a", "job", "ok", 2, False), ("b", "job", "ok", 2, False)]
    flow.take()
    flow.fail_once.add("b.job")

    result = coordinator.rerun("k", from_step="b")

    assert flow.take() == ["b.job", "b.job"]
    assert trace_of(result) == [("a", "job", "ok", 2, True), ("b", "job", "ok", 2, False)]
    assert [(e.step, e.attempts) for e in store.events("k", generation=2)] == [("a", 2), ("b", 2)]


def test_a_rerun_restores_a_skipped_step_with_its_precheck_output_and_error(store: Store):
    """A step its precheck skipped counts as completed: its output, its error (with its traceback) come back."""

    def not_today() -> None:
        raise Skip("not today", output="later")

    flow = Flow()
    coordinator = Coordinator([Step("a", flow.job("a"), not_today), Step("b", flow.job("b"))], store=store)
    coordinator.run(None, key="k")
    flow.take()
    skipped = store.events("k")[0]

    result = coordinator.rerun("k", from_step="b")

    assert flow.take() == ["b.job"]
    assert trace_of(result) == [
        ("a", "precheck", "failed", 1, True),
        ("a", "job", "skipped", 0, True),
        ("b", "job", "ok", 1, False),
    ]
    assert result.data_bag.precheck_data == {"a": "later"}
    assert [(e.step, e.phase, type(e.error), str(e.error)) for e in result.errors] == [
        ("a", "precheck", Skip, "not today")
    ]
    copy = store.events("k", generation=2)[0]
    assert without_place(copy) == without_place(skipped)
    assert copy.traceback is not None
    assert "in not_today" in copy.traceback


def test_values_and_timeout_apply_to_the_rerun_as_to_a_run(store: Store):
    """An expired timeout stops the rerun at the first step it runs: the restored steps are still restored."""
    flow = Flow()
    coordinator = abc(store, flow)
    coordinator.run(None, key="k")
    flow.take()

    result = coordinator.rerun("k", from_step="b", timeout=0)

    assert flow.take() == []
    assert isinstance(result.fatal, RunCancelled)
    assert trace_of(result) == [("a", "job", "ok", 1, True)]
    with pytest.raises(ValueError, match="timeout"):
        coordinator.rerun("k", from_step="b", timeout=-1)


# -- what a rerun refuses ---------------------------------------------------------------------


def unchanged(store: Store, key: str) -> tuple[object, list[Event]]:
    """The key's row (but its update time) and its events, to compare before and after a refused rerun."""
    info = store.run_info(key)
    assert info is not None
    return dataclasses.replace(info, updated=0.0), store.events(key)


def test_a_rerun_from_an_unknown_step_is_a_value_error_naming_the_steps(store: Store):
    """Nothing runs and nothing changes; a name that is not a str is a TypeError."""
    flow = Flow()
    coordinator = abc(store, flow)
    coordinator.run(None, key="k")
    flow.take()
    before = unchanged(store, "k")

    with pytest.raises(ValueError, match=r"unknown step 'd': the steps are 'a', 'b', 'c'"):
        coordinator.rerun("k", from_step="d")
    with pytest.raises(TypeError, match="from_step must be a step's name, got int"):
        coordinator.rerun("k", from_step=1)  # type: ignore[arg-type]

    assert flow.take() == []
    assert unchanged(store, "k") == before


def test_a_rerun_of_a_key_without_a_run_is_a_key_error(store: Store):
    """The store has nothing of the key: `KeyError`, and nothing is created."""
    coordinator = abc(store, Flow())

    with pytest.raises(KeyError, match="no run of key 'missing'"):
        coordinator.rerun("missing", from_step="a")

    assert store.run_info("missing") is None


def test_a_rerun_needs_a_store():
    """Without a store there is nothing to rerun."""
    with pytest.raises(TypeError, match="needs a durable coordinator"):
        Coordinator([Step("a", lambda: 1)]).rerun("k", from_step="a")


def test_a_rerun_past_a_step_that_did_not_complete_is_refused(store: Store):
    """A step before `from_step` that failed is not restored, nor run: ValueError naming it; rerun from it works."""
    flow = Flow()
    coordinator = abc(store, flow)
    flow.failing.add("b.job")
    assert isinstance(coordinator.run(None, key="k").fatal, JobFailed)
    flow.take()
    before = unchanged(store, "k")

    with pytest.raises(ValueError, match="rerun key") as info:
        coordinator.rerun("k", from_step="c")

    assert str(info.value) == (
        "cannot rerun key 'k' from step 'c': step 'b', before it, did not complete (its job failed with ValueError)"
        " in generation 1; rerun from 'b' or an earlier step"
    )
    assert flow.take() == []
    assert unchanged(store, "k") == before

    flow.failing.clear()
    result = coordinator.rerun("k", from_step="b")

    assert flow.take() == ["b.precheck", "b.job", "c.job"]
    assert trace_of(result)[0] == ("a", "job", "ok", 1, True)
    assert result.ok


def test_a_rerun_past_a_step_that_never_ran_is_refused(store: Store):
    """A step added before `from_step` since the run has nothing to restore: refused, naming it."""
    flow = Flow()
    abc(store, flow).run(None, key="k")
    grown = Coordinator(
        [Step("a", flow.job("a")), Step("new", flow.job("new")), Step("b", flow.job("b")), Step("c", flow.job("c"))],
        store=store,
    )

    with pytest.raises(ValueError, match=r"step 'new', before it, did not complete \(it never ran\) in generation 1"):
        grown.rerun("k", from_step="c")


def test_a_rerun_past_a_step_interrupted_in_its_job_is_refused(store: Store):
    """A step whose precheck passed but whose job never finished (the process stopped) did not complete."""
    flow = Flow()
    coordinator = abc(store, flow)
    flow.interrupting.add("b.job")
    with pytest.raises(KeyboardInterrupt):
        coordinator.run(None, key="k")

    with pytest.raises(ValueError, match=r"step 'b', before it, did not complete \(its job never finished\)"):
        coordinator.rerun("k", from_step="c")


def test_a_key_gone_when_the_rerun_takes_its_lease_is_a_key_error(store: Store, monkeypatch: pytest.MonkeyPatch):
    """The run was pruned after its input was read: `begin` gives the rerun's choice no row, and creates nothing."""
    monkeypatch.setattr(store, "stored_input", lambda key: None)  # as if read just before a prune

    with pytest.raises(KeyError, match="no run of key 'k'"):
        abc(store, Flow()).rerun("k", from_step="a")

    assert store.run_info("k") is None
    assert store.events("k") == []


def test_a_rerun_of_a_key_whose_rollback_is_unfinished_is_refused(store: Store):
    """A failed compensation leaves the key "compensating": a rerun, even from the first step, says to resume it."""
    flow = Flow()
    coordinator = Coordinator(
        [Step("a", flow.job("a"), compensate=flow.compensate("a")), Step("b", flow.job("b"))], store=store
    )
    flow.failing |= {"b.job", "a.compensate"}
    coordinator.run(None, key="k")
    before = unchanged(store, "k")

    with pytest.raises(ValueError, match=r"its rollback is unfinished \(status 'compensating'\); resume it"):
        coordinator.rerun("k", from_step="a")

    assert unchanged(store, "k") == before


def test_a_rerun_never_restores_a_compensated_step(store: Store):
    """After a rollback, a step whose work was undone can't be restored; one without a compensation can."""
    flow = Flow()
    coordinator = Coordinator(
        [
            Step("plain", flow.job("plain")),
            Step("undone", flow.job("undone"), compensate=flow.compensate("undone")),
            Step("fails", flow.job("fails")),
        ],
        store=store,
    )
    flow.failing.add("fails.job")
    coordinator.run(None, key="k")
    assert store.run_info("k").status == "rolled_back"  # type: ignore[union-attr]
    flow.take()

    with pytest.raises(ValueError, match=r"step 'undone', before it, was compensated \(its work undone\)"):
        coordinator.rerun("k", from_step="fails")

    flow.failing.clear()
    result = coordinator.rerun("k", from_step="undone")

    assert flow.take() == ["undone.job", "fails.job"]
    assert trace_of(result)[0] == ("plain", "job", "ok", 1, True)
    assert result.ok


def test_a_failed_rerun_compensates_the_restored_steps_too(store: Store):
    """The restored steps are the new generation's completed work: a fatal error compensates them, as after a resume."""
    flow = Flow()
    coordinator = Coordinator(
        [Step("a", flow.job("a"), compensate=flow.compensate("a")), Step("b", flow.job("b"))], store=store
    )
    coordinator.run(None, key="k")
    flow.take()
    flow.failing.add("b.job")

    result = coordinator.rerun("k", from_step="b")

    assert flow.take() == ["b.job", "a.compensate"]
    assert isinstance(result.fatal, JobFailed)
    assert [(c.step, c.outcome) for c in result.compensations] == [("a", "ok")]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation) == ("rolled_back", 2)
    assert [e.phase for e in store.events("k", generation=1)] == ["job", "job"]  # generation 1 stays as it was


# -- leases and crashes -----------------------------------------------------------------------------


def test_an_interrupted_rerun_resumes_its_new_generation_without_running_the_restored_steps(store: Store):
    """The copies are in the new generation from its start: running the key after an interruption resumes the rerun."""
    flow = Flow()
    coordinator = abc(store, flow)
    coordinator.run(None, key="k")
    flow.take()
    flow.interrupting.add("c.job")

    with pytest.raises(KeyboardInterrupt):
        coordinator.rerun("k", from_step="b")

    assert flow.take() == ["b.precheck", "b.job", "c.job"]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.owner) == ("running", 2, None)
    flow.interrupting.clear()

    result = coordinator.run(None, key="k")

    assert flow.take() == ["c.job"]
    assert trace_of(result) == [
        ("a", "job", "ok", 1, True),
        ("b", "precheck", "ok", 1, True),
        ("b", "job", "ok", 1, True),
        ("c", "job", "ok", 1, False),
    ]
    assert result.data_bag.job_data == {"a": "a1", "b": "b6", "c": "c8"}
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.interruptions) == ("ok", 2, 1)


def test_a_rerun_waits_for_a_key_another_holder_runs_then_reports_key_busy(make_store: Callable[..., Store]):
    """While another run holds the key, a rerun waits (the lease and a second), then gets KeyBusy; later it runs."""
    store = make_store(lease=0.2)
    inside, leave = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow() -> str:
        calls.append("slow")
        if len(calls) == 2:  # the second run: hold the key until told
            inside.set()
            leave.wait(10)
        return "done"

    coordinator = Coordinator([Step("slow", slow)], store=store)
    coordinator.run(None, key="k")
    holder = threading.Thread(target=lambda: coordinator.run(None, key="k", fresh=True))
    holder.start()
    try:
        assert inside.wait(10)
        busy = coordinator.rerun("k", from_step="slow")
    finally:
        leave.set()
        holder.join(10)

    assert isinstance(busy.fatal, KeyBusy)
    assert calls == ["slow", "slow"]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation) == ("ok", 2)
    assert coordinator.rerun("k", from_step="slow").ok
    assert store.run_info("k").generation == 3  # type: ignore[union-attr]


def test_a_rerun_judges_the_key_once_it_holds_the_lease(tmp_path: Path):
    """
    Another process runs the key, its step b not done yet: a rerun from c waits instead of refusing.

    Once that run finished, b has completed: the rerun restores a and b from it and runs c.
    """
    inside, leave = threading.Event(), threading.Event()
    flow = Flow()

    def slow_b() -> str:
        inside.set()
        leave.wait(10)
        return "slow b"

    first, second = SqliteStore(tmp_path / "runs.db"), SqliteStore(tmp_path / "runs.db")  # two holders
    holder_flow = Coordinator([Step("a", flow.job("a")), Step("b", slow_b), Step("c", flow.job("c"))], store=first)
    holder = threading.Thread(target=lambda: holder_flow.run(None, key="k"))
    holder.start()
    try:
        assert inside.wait(10)
        threading.Timer(0.3, leave.set).start()
        result = Coordinator(
            [Step("a", flow.job("a")), Step("b", flow.job("b")), Step("c", flow.job("c"))], store=second
        ).rerun("k", from_step="c")
    finally:
        leave.set()
        holder.join(10)
        first.close()

    assert flow.take() == ["a.job", "c.job", "c.job"]
    assert result.ok
    assert trace_of(result) == [("a", "job", "ok", 1, True), ("b", "job", "ok", 1, True), ("c", "job", "ok", 1, False)]
    assert result.data_bag.job_data == {"a": "a1", "b": "slow b", "c": "c3"}
    assert second.run_info("k").generation == 2  # type: ignore[union-attr]
    second.close()


def test_a_rerun_whose_copy_fails_midway_leaves_the_key_as_it_was(tmp_path: Path):
    """The copies are written with the new generation in one transaction: a failure after some of them undoes it all."""
    flow = Flow()
    store = SqliteStore(tmp_path / "runs.db")
    coordinator = abc(store, flow)
    coordinator.run(None, key="k")
    before = unchanged(store, "k")
    conn = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    conn.execute(
        "CREATE TRIGGER second_copy BEFORE INSERT ON events"
        " WHEN NEW.generation = 2 AND (SELECT count(*) FROM events WHERE generation = 2) = 2"
        " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    )
    flow.take()

    with pytest.raises(StoreError, match="the disk is full"):
        coordinator.rerun("k", from_step="c")  # a's job, b's precheck and job: the third copy fails

    assert flow.take() == []
    assert unchanged(store, "k") == before
    conn.execute("DROP TRIGGER second_copy")
    conn.close()
    assert coordinator.rerun("k", from_step="c").ok
    assert flow.take() == ["c.job"]
    store.close()


CRASHING_RERUN = """
import os, sys
from choreograph import Coordinator, SqliteStore, Step

def job(name):
    def run():
        with open(sys.argv[2], "a") as ledger:
            ledger.write(name + "\\n")
        if name == "b" and sys.argv[3] == "crash":
            os._exit(3)  # killed: no finally, no release
        return name
    return run

flow = Coordinator([Step(n, job(n)) for n in "abc"], store=SqliteStore(sys.argv[1]))
if sys.argv[3] == "run":
    flow.run(None, key="k")
else:
    flow.rerun("k", from_step="b")
"""


def test_a_process_killed_during_a_rerun_leaves_a_new_generation_that_resumes(tmp_path: Path):
    """A process dies in the first step the rerun runs: the next run of the key restores `a` from the copy, runs `b`."""
    script, ledger, path = tmp_path / "flow.py", tmp_path / "ledger.txt", tmp_path / "runs.db"
    script.write_text(textwrap.dedent(CRASHING_RERUN))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def child(mode: str) -> int:
        return subprocess.run([sys.executable, script, path, ledger, mode], env=env, check=False, timeout=60).returncode

    assert child("run") == 0
    assert child("crash") == 3
    assert ledger.read_text().split() == ["a", "b", "c", "b"]
    with SqliteStore(path) as store:
        info = store.run_info("k")
        assert info is not None
        assert (info.status, info.generation) == ("running", 2)
        assert [e.step for e in store.events("k", generation=2)] == ["a"]
    assert child("run") == 0

    assert ledger.read_text().split() == ["a", "b", "c", "b", "b", "c"]
    with SqliteStore(path) as store:
        info = store.run_info("k")
        assert info is not None
        assert (info.status, info.generation, info.interruptions) == ("ok", 2, 1)
        assert [e.step for e in store.events("k", generation=2)] == ["a", "b", "c"]
