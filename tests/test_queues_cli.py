"""The command line's queues: ``choreograph serve`` (in a child process, and in this one) and ``choreograph queues``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from choreograph import SqliteStore
from choreograph.cli._commands import run_command

ROOT = Path(__file__).resolve().parent.parent
PATIENCE = 60.0

FLOW = textwrap.dedent(
    """
    from choreograph import Coordinator, MemoryStore, Step


    def double(x: int) -> int:
        if x < 0:
            raise ValueError(f"{x} is negative")
        return x * 2


    flow = Coordinator[int]([Step("double", double)])
    not_a_flow = 42

    STORE_MEMBERS = (
        "codec lease owner location begin stored_input run_info runs counts verify events decode decode_error"
        " prune close"
    ).split()
    RunsOnly = type("RunsOnly", (), {n: property(lambda self, n=n: getattr(self.inner, n)) for n in STORE_MEMBERS})
    store = RunsOnly()
    store.inner = MemoryStore()
    runs_only = Coordinator[int]([Step("double", double)], store=store)
    """
)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding `queue_flows.py`, importable, and the current folder."""
    (tmp_path / "queue_flows.py").write_text(FLOW, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fill(path: Path, values: dict[str, int]) -> None:
    with SqliteStore(path) as store:
        for key, value in values.items():
            assert store.enqueue("imports", value, key=key)


def wait_for(condition: Callable[[], bool], what: str, child: subprocess.Popen[str] | None = None) -> None:
    give_up = time.monotonic() + PATIENCE
    while not condition():
        if child is not None and child.poll() is not None:
            pytest.fail(f"the command ended ({child.returncode}) before {what}: {child.communicate()[1][-3000:]}")
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def done(path: Path) -> int:
    with SqliteStore(path) as store:
        info = store.queue_info("imports")
        return info["done"] + info["failed"]


def test_serve_in_a_child_process_stops_at_sigterm(here: Path):
    """``choreograph serve``: runs the messages; SIGTERM stops it; it prints what it served and exits 1 (a failure)."""
    fill(here / "q.db", {"a": 1, "b": 2, "neg": -1})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(here)])}
    child = subprocess.Popen(
        [sys.executable, "-m", "choreograph", "serve", "queue_flows:flow", "--queue", "imports", "--store", "q.db",
         "--workers", "2"],
        cwd=here, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: done(here / "q.db") == 3, "the messages served", child)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=PATIENCE)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 1, stderr
    assert "serving queue 'imports' of q.db with 2 workers; Ctrl-C or SIGTERM stops" in stderr
    assert "2 done, 1 failed, 0 given back, 0 taken over by another server" in stderr
    assert "left in the queue: 0 queued, 0 running, 2 done, 1 failed" in stderr
    assert "Traceback" not in stderr
    with SqliteStore(here / "q.db") as store:
        assert store.message_info("neg").error == (  # type: ignore[union-attr]
            "JobFailed: job of step 'double' failed: ValueError: -1 is negative"
        )


def test_serve_in_this_process_stops_at_sigint(here: Path, capsys: pytest.CaptureFixture[str]):
    """Ctrl-C (SIGINT) stops ``serve`` cleanly: exit status 0 when nothing failed; exclusive is reported."""
    fill(here / "q.db", {"a": 1, "b": 2})

    def interrupt() -> None:
        try:
            wait_for(lambda: done(here / "q.db") == 2, "the messages served")
        finally:  # even when that fails: serve() must end for the test to
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt).start()
    status = run_command(["serve", "queue_flows:flow", "--queue", "imports", "--store", "q.db", "--exclusive"])
    err = capsys.readouterr().err
    assert done(here / "q.db") == 2, err
    assert status == 0, err
    assert "with 1 worker alone (exclusive: on standby while another server holds it)" in err
    assert "2 done, 0 failed" in err


def test_serve_mistakes_are_usage_errors(here: Path, capsys: pytest.CaptureFixture[str]):
    """No store, an empty queue name, a TARGET that is no flow, a missing --queue: one line each, status 2."""
    cases = [
        (["serve", "queue_flows:flow", "--queue", "imports"], "serve needs a store: give --store STORE"),
        (["serve", "queue_flows:flow", "--queue", "", "--store", "q.db"], "a queue's name must not be empty"),
        (["serve", "queue_flows:not_a_flow", "--queue", "q", "--store", "q.db"], "is a int, not a choreograph"),
        (["serve", "queue_flows:flow", "--store", "q.db"], "Missing option '--queue'"),
        (["serve", "queue_flows:flow", "--queue", "q", "--store", "q.db", "--workers", "0"], "--workers"),
        (["serve", "queue_flows:runs_only", "--queue", "q"], "serve: the store :memory: has no queues (RunsOnly)"),
    ]
    for args, expected in cases:
        assert run_command(args) == 2, args
        err = capsys.readouterr().err
        assert expected in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def test_queues_counts_each_queue(here: Path, capsys: pytest.CaptureFixture[str]):
    """``choreograph queues``: a table of every queue (or those named), or JSON; a store without queues says so."""
    with SqliteStore(here / "q.db") as store:
        store.enqueue("imports", 1, key="a")
        store.enqueue("imports", 2, key="b", delay=3600)
        store.enqueue("exports", 3, key="c")
        store.claim("exports", "server", limit=1)
        store.settle("c", "server", "failed", "ValueError: no")
    assert run_command(["queues", "--store", "q.db"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "queue      queued   running      done    failed",
        "exports         0         0         0         1",
        "imports         2         0         0         0",
    ]
    assert run_command(["queues", "--store", "q.db", "imports", "empty", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "imports": {"queued": 2, "running": 0, "done": 0, "failed": 0},
        "empty": {"queued": 0, "running": 0, "done": 0, "failed": 0},
    }
    SqliteStore(here / "none.db").close()
    assert run_command(["queues", "--store", "none.db"]) == 0
    assert capsys.readouterr().out == "none.db: no queues\n"
    assert run_command(["queues", "--store", "missing.db"]) == 2
    assert "no store at 'missing.db'" in capsys.readouterr().err
