"""Logging: off by default, and records carrying the run id and the step when enabled."""

import json
import subprocess
import sys
import textwrap

from loguru import logger

import choreograph
from choreograph import Context, Coordinator, Skip, Step

SCRIPT = textwrap.dedent(
    """
    import json
    from loguru import logger
    import choreograph
    from choreograph import Coordinator, Skip, Step

    logger.remove()
    names = []
    logger.add(lambda message: names.append(message.record["name"]), level="TRACE")

    def skip():
        raise Skip("not today")

    def boom():
        raise RuntimeError("boom")

    coordinator = Coordinator()
    coordinator.add_step(Step("maybe", lambda: None, precheck=skip))
    coordinator.add_step(Step("boom", boom))

    def count():
        return sum(1 for name in names if name.split(".")[0] == "choreograph")

    coordinator.run()
    logger.info("user record")
    disabled = count()
    user = names.count("__main__")
    logger.enable("choreograph")
    coordinator.run()
    print(json.dumps({"disabled": disabled, "user": user, "enabled": count(), "file": choreograph.__file__}))
    """
)


def choreograph_records(records):
    """Keep the records logged by choreograph itself."""
    return [r for r in records if r["name"].split(".")[0] == "choreograph"]


def test_disabled_by_default(tmp_path):
    """In a fresh process, importing choreograph leaves its logging off until `logger.enable("choreograph")`."""
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60, cwd=tmp_path
    )
    counts = json.loads(completed.stdout)
    assert counts["file"] == choreograph.__file__  # the package under test, not another copy
    assert counts["disabled"] == 0
    assert counts["user"] == 1  # the sink works, and user code still logs
    assert counts["enabled"] > 0


def test_disabled_sink_receives_nothing():
    """Without enabling choreograph, a sink gets no record from a run, even one that skips and fails."""
    records = []
    sink_id = logger.add(lambda message: records.append(message.record), level="TRACE")
    try:

        def skip() -> None:
            raise Skip("no")

        def boom() -> None:
            raise RuntimeError("boom")

        coordinator = Coordinator()
        coordinator.add_step(Step("maybe", lambda ctx: ctx.logger.info("from the callback"), precheck=skip))
        coordinator.add_step(Step("boom", boom))
        result = coordinator.run()
    finally:
        logger.remove(sink_id)
    assert not result.ok
    assert choreograph_records(records) == []


def test_run_start_and_end(log_records):
    """An enabled run logs an INFO record before its first callback and one after its last, with its run id."""

    def job(ctx: Context) -> None:
        logger.info("inside the job")

    coordinator = Coordinator()
    coordinator.add_step(Step("only", job))
    result = coordinator.run()
    assert result.ok
    messages = [r["message"] for r in log_records]
    marker = messages.index("inside the job")
    ours = [(index, r) for index, r in enumerate(log_records) if r["name"].split(".")[0] == "choreograph"]
    start = [r for index, r in ours if index < marker and r["level"].name == "INFO"]
    end = [r for index, r in ours if index > marker and r["level"].name == "INFO"]
    assert start
    assert end
    assert all(r["extra"].get("run_id") == result.run_id for r in (start[0], end[-1]))


def test_failed_run_logs_its_end(log_records):
    """A run stopped by a failed job logs the failure at ERROR, then its end at WARNING, with its run id."""

    def boom() -> None:
        logger.info("inside the job")
        raise RuntimeError("boom")

    coordinator = Coordinator()
    coordinator.add_step(Step("boom", boom))
    result = coordinator.run()
    assert not result.ok
    marker = [r["message"] for r in log_records].index("inside the job")
    after = [(r["level"].name, r["extra"].get("run_id")) for r in choreograph_records(log_records[marker + 1 :])]
    assert after == [("ERROR", result.run_id), ("WARNING", result.run_id)]


def test_skipped_step_and_failed_job(log_records):
    """A skipped step and a failed job are logged with their step's name and the run id in `extra`."""

    def skip() -> None:
        raise Skip("not today")

    def failing_check() -> None:
        raise ValueError("bad")

    def boom() -> None:
        raise RuntimeError("boom")

    coordinator = Coordinator()
    coordinator.add_step(Step("Fine", lambda: 1))
    coordinator.add_step(Step("Maybe", lambda: None, precheck=skip))
    coordinator.add_step(Step("Checked", lambda: None, precheck=failing_check))
    coordinator.add_step(Step("Boom", boom))
    result = coordinator.run()
    assert not result.ok
    ours = choreograph_records(log_records)
    assert all(r["extra"].get("run_id") == result.run_id for r in ours if "run_id" in r["extra"])
    steps = {r["extra"].get("step") for r in ours if r["extra"].get("run_id") == result.run_id}
    assert {"Maybe", "Checked", "Boom"} <= steps


def test_runs_are_told_apart(log_records):
    """Records of two runs carry their own run ids."""
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda: None))
    first, second = coordinator.run(), coordinator.run()
    ids = {r["extra"].get("run_id") for r in choreograph_records(log_records)}
    assert {first.run_id, second.run_id} <= ids


GUIDE_SNIPPET = """
from loguru import logger
from choreograph import Coordinator, Skip, Step

def skip() -> None:
    raise Skip("already there")

flow = Coordinator([Step("a", lambda: 1, precheck=skip), Step("b", lambda: 2)])
logger.enable("choreograph")
try:
    first = flow.run()
finally:
    logger.disable("choreograph")
second = flow.run()
print(first.run_id, second.run_id)
"""


def test_the_guides_way_prints_each_record_once_and_turns_logging_off_again():
    """As the logging guide shows: each record once on stderr (loguru's default sink), nothing after disabling."""
    done = subprocess.run([sys.executable, "-c", GUIDE_SNIPPET], capture_output=True, text=True, check=True)
    first, second = done.stdout.split()
    lines = [line for line in done.stderr.splitlines() if "choreograph" in line]
    assert [line.split(" - ", 1)[1] for line in lines] == [
        f"run {first} started",
        "step a skipped by its precheck: already there",
        "step a job skipped by its precheck",
        f"run {first} finished ok",
    ]
    assert [line.split("|")[1].strip() for line in lines] == ["INFO", "DEBUG", "DEBUG", "INFO"]
    assert f"run {second}" not in done.stderr
