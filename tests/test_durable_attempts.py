"""
Attempt counts of durable runs across sessions: jobs, prechecks and compensations.

`Call.attempts` and `Event.attempts` are running totals within a generation: a
callback that used 3 attempts in one session starts at attempt 4 in the next,
and a retry policy's `attempts` bounds the total, not each session's share.
"""

from typing import Any

from choreograph import Context, Coordinator, JobFailed, Retry, RunResult, Step, StepError
from choreograph.typing import Store

NO_WAIT = Retry(attempts=3, initial=0, jitter=0)


def fields(result: RunResult[Any]) -> list[tuple[str, str, str, int, bool]]:
    return [(c.step, c.phase, c.outcome, c.attempts, c.restored) for c in result.trace]


def events_of(store: Store, key: str) -> list[tuple[int, int, str, str, str, int]]:
    return [(e.generation, e.session, e.step, e.phase, e.outcome, e.attempts) for e in store.events(key)]


class Switch:
    """A callback that fails while `broken`, recording `ctx.attempt` of every call."""

    def __init__(self, output: object = None, *, broken: bool = True) -> None:
        self.output, self.broken = output, broken
        self.attempts: list[int] = []

    def __call__(self, ctx: Context) -> object:
        self.attempts.append(ctx.attempt)
        if self.broken:
            raise OSError(f"down at attempt {ctx.attempt}")
        return self.output

    def take(self) -> list[int]:
        seen, self.attempts = self.attempts, []
        return seen


def declined() -> None:
    raise ValueError("declined")


def rollback_flow(store: Store, undo: Switch) -> Coordinator[Any]:
    return Coordinator(
        [Step("reserve", lambda: "R", compensate=undo, retry=NO_WAIT), Step("charge", declined)],
        store=store,
        key=str,
    )


def test_a_compensation_fixed_after_a_failed_rollback_continues_the_attempt_count(store: Store):
    """
    A compensation failing all 3 attempts leaves the key "compensating";
    fixed, the next run calls it once, at attempt 4.

    The result then shows the forward trace restored from session 1, the compensation ok with 4 attempts,
    no compensation errors, the same fatal, and the key "rolled_back".
    """
    undo = Switch()
    coordinator = rollback_flow(store, undo)

    first = coordinator.run(None, key="k")

    assert undo.take() == [1, 2, 3]
    assert fields(first) == [
        ("reserve", "job", "ok", 1, False),
        ("charge", "job", "failed", 1, False),
        ("reserve", "compensate", "failed", 3, False),
    ]
    assert first.compensations == (first.trace[2],)
    (failed,) = first.compensation_errors
    assert type(failed) is StepError
    assert (failed.step, failed.phase, type(failed.error), str(failed.error)) == (
        "reserve",
        "compensate",
        OSError,
        "down at attempt 3",
    )
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions, info.failed_step) == ("compensating", 1, 1, "charge")

    undo.broken = False
    second = coordinator.run(None, key="k")

    assert undo.take() == [4]
    assert fields(second) == [
        ("reserve", "job", "ok", 1, True),
        ("charge", "job", "failed", 1, True),
        ("reserve", "compensate", "ok", 4, False),
    ]
    assert [c.seconds for c in second.trace[:2]] == [c.seconds for c in first.trace[:2]]  # as recorded
    assert [(c.step, c.outcome, c.attempts, c.restored) for c in second.compensations] == [("reserve", "ok", 4, False)]
    assert 0 <= second.compensations[0].seconds < 1
    assert second.compensation_errors == ()
    assert [(e.step, e.phase, type(e.error), str(e.error)) for e in second.errors] == [
        ("charge", "job", ValueError, "declined")
    ]
    assert isinstance(second.fatal, JobFailed)
    assert second.fatal.step == "charge"
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("rolled_back", 1, 2)
    assert events_of(store, "k") == [
        (1, 1, "reserve", "job", "ok", 1),
        (1, 1, "charge", "job", "failed", 1),
        (1, 1, "reserve", "compensate", "failed", 3),
        (1, 2, "reserve", "compensate", "ok", 4),
    ]


def test_a_compensation_still_failing_gets_one_attempt_per_session_once_its_policy_is_spent(store: Store):
    """With its 3 attempts used up in session 1, a compensation still failing is called once per session (4, then 5)."""
    undo = Switch()
    coordinator = rollback_flow(store, undo)

    coordinator.run(None, key="k")
    assert undo.take() == [1, 2, 3]
    second = coordinator.run(None, key="k")
    third = coordinator.run(None, key="k")

    assert undo.take() == [4, 5]
    assert [(c.outcome, c.attempts, c.restored) for c in second.compensations] == [("failed", 4, False)]
    assert [(c.outcome, c.attempts, c.restored) for c in third.compensations] == [("failed", 5, False)]
    assert [str(e.error) for e in third.compensation_errors] == ["down at attempt 5"]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("compensating", 1, 3)


def test_a_new_generation_after_a_rollback_counts_attempts_from_one(store: Store):
    """Once rolled back, running the key again starts a new generation: every callback is back to attempt 1."""
    undo = Switch()
    coordinator = rollback_flow(store, undo)
    coordinator.run(None, key="k")
    undo.broken = False
    coordinator.run(None, key="k")
    undo.take()

    third = coordinator.run(None, key="k")

    assert undo.take() == [1]
    assert fields(third) == [
        ("reserve", "job", "ok", 1, False),
        ("charge", "job", "failed", 1, False),
        ("reserve", "compensate", "ok", 1, False),
    ]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("rolled_back", 2, 3)


def test_a_job_retried_to_exhaustion_resumes_at_the_next_attempt_with_its_precheck_run_again(store: Store):
    """
    A job failing its 3 attempts fails the key; fixed, the next run restores the earlier step and runs the
    failed step again from its precheck: the precheck at attempt 2 and the job at attempt 4, both not restored.
    A third run of the ok key runs nothing and returns that trace, restored.
    """
    check = Switch("checked", broken=False)
    job = Switch("done")
    coordinator = Coordinator(
        [Step("a", lambda: "A"), Step("b", job, check, retry=NO_WAIT), Step("c", lambda: "C")], store=store, key=str
    )

    first = coordinator.run(None, key="k")

    assert (check.take(), job.take()) == ([1], [1, 2, 3])
    assert fields(first) == [
        ("a", "job", "ok", 1, False),
        ("b", "precheck", "ok", 1, False),
        ("b", "job", "failed", 3, False),
    ]
    assert isinstance(first.fatal, JobFailed)
    assert str(first.fatal.error) == "down at attempt 3"
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.failed_step) == ("failed", "b")

    job.broken = False
    second = coordinator.run(None, key="k")

    assert (check.take(), job.take()) == ([2], [4])
    assert fields(second) == [
        ("a", "job", "ok", 1, True),
        ("b", "precheck", "ok", 2, False),
        ("b", "job", "ok", 4, False),
        ("c", "job", "ok", 1, False),
    ]
    assert second.trace[0].seconds == first.trace[0].seconds
    assert second.ok
    assert second.errors == ()
    assert second.data_bag.get_job_data("b") == "done"
    assert events_of(store, "k") == [
        (1, 1, "a", "job", "ok", 1),
        (1, 1, "b", "precheck", "ok", 1),
        (1, 1, "b", "job", "failed", 3),
        (1, 2, "b", "precheck", "ok", 2),
        (1, 2, "b", "job", "ok", 4),
        (1, 2, "c", "job", "ok", 1),
    ]

    third = coordinator.run(None, key="k")

    assert (check.take(), job.take()) == ([], [])
    assert [(c.step, c.phase, c.outcome, c.attempts) for c in third.trace] == [
        (c.step, c.phase, c.outcome, c.attempts) for c in second.trace
    ]
    assert all(c.restored for c in third.trace)
    assert [c.seconds for c in third.trace] == [c.seconds for c in second.trace]
