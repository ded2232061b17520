"""
The fields of choreograph's log records, which come from the run's events: run id, key, step, attempts.

Logging is a consumer of `choreograph.events`; each record carries the fields
of the event it logs in ``record["extra"]``.
"""

from typing import Any

from choreograph import Coordinator, MemoryStore, Retry, Step


def ours(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["name"].split(".")[0] == "choreograph"]


def by_message(records: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
    return [r for r in ours(records) if r["message"].startswith(start)]


def test_a_durable_runs_start_and_finish_records_carry_its_key(log_records):
    """A durable run's "started" and "finished" records carry its key and run id."""
    store = MemoryStore()
    coordinator = Coordinator([Step("a", lambda: 1)], store=store, key=str)
    result = coordinator.run(None, key="order-7")
    assert result.ok
    (started,) = by_message(log_records, f"run {result.run_id} started")
    (finished,) = by_message(log_records, f"run {result.run_id} finished ok")
    assert (started["extra"]["key"], started["extra"]["run_id"]) == ("order-7", result.run_id)
    assert (finished["extra"]["key"], finished["extra"]["run_id"]) == ("order-7", result.run_id)


def test_a_plain_runs_records_have_no_key(log_records):
    """A run without a store logs ``key=None``."""
    result = Coordinator([Step("a", lambda: 1)]).run()
    (started,) = by_message(log_records, f"run {result.run_id} started")
    assert started["extra"]["key"] is None


def test_a_failed_durable_runs_stop_record_carries_its_key(log_records):
    """A durable run stopped by a job failure logs its stop at WARNING with its key."""

    def fail() -> None:
        raise ValueError("declined")

    coordinator = Coordinator([Step("pay", fail)], store=MemoryStore(), key=str)
    result = coordinator.run(None, key="order-8")
    (stopped,) = by_message(log_records, f"run {result.run_id} stopped")
    assert stopped["level"].name == "WARNING"
    assert stopped["extra"]["key"] == "order-8"


def test_retried_attempts_are_logged_with_the_run_id_and_the_attempt(log_records):
    """Each retry attempt's "starting" record carries the run id, the step, the phase and the attempt number."""
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("busy")
        return "done"

    result = Coordinator([Step("fetch", flaky, retry=Retry(attempts=3, initial=0.0, jitter=0.0))]).run()
    assert result.ok
    retries = by_message(log_records, "step fetch job attempt")
    assert [
        (r["extra"]["run_id"], r["extra"]["step"], r["extra"]["phase"], r["extra"]["attempt"]) for r in retries
    ] == [(result.run_id, "fetch", "job", 2), (result.run_id, "fetch", "job", 3)]


def test_a_failed_job_is_logged_with_the_attempts_it_made(log_records):
    """The ERROR record of a job that failed after its retries says how many attempts it made."""

    def fail() -> None:
        raise OSError("down")

    result = Coordinator([Step("fetch", fail, retry=Retry(attempts=2, initial=0.0, jitter=0.0))]).run()
    assert not result.ok
    (failed,) = by_message(log_records, "step fetch job failed")
    assert failed["level"].name == "ERROR"
    assert (failed["extra"]["attempts"], failed["extra"]["run_id"]) == (2, result.run_id)
