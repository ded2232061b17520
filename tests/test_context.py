"""The Context handed to callbacks."""

import operator
from collections.abc import Mapping

import pytest

from choreograph import Context, Coordinator, Skip, Step, StepError


def test_input_is_the_runs_input():
    """`ctx.input` is the very object passed to `run`, in prechecks and jobs."""
    seen = []
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda ctx: seen.append(ctx.input), precheck=lambda ctx: seen.append(ctx.input)))
    value = {"id": 1}
    coordinator.run(value)
    assert len(seen) == 2
    assert all(item is value for item in seen)


def test_values_are_the_runs_values():
    """`ctx.values` is a mapping equal to the `values=` passed to the run."""
    seen = []
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda ctx: seen.append(ctx.values)))
    connection = object()
    coordinator.run(values={"db": connection, "limit": 3})
    [values] = seen
    assert isinstance(values, Mapping)
    assert dict(values) == {"db": connection, "limit": 3}
    assert values["db"] is connection


def test_values_default_to_empty():
    """Without `values=`, `ctx.values` is an empty mapping."""
    seen = []
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda ctx: seen.append(ctx.values)))
    coordinator.run()
    [values] = seen
    assert isinstance(values, Mapping)
    assert dict(values) == {}


def test_values_are_read_only():
    """Assigning or deleting an item of `ctx.values` raises TypeError, and changes nothing."""
    errors = []

    def job(ctx: Context) -> None:
        for mutate in (
            lambda: operator.setitem(ctx.values, "limit", 4),
            lambda: operator.setitem(ctx.values, "new", 1),
            lambda: operator.delitem(ctx.values, "limit"),
        ):
            with pytest.raises(TypeError):
                mutate()
        errors.append(dict(ctx.values))

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job))
    result = coordinator.run(values={"limit": 3})
    assert result.fatal is None
    assert errors == [{"limit": 3}]


def test_values_item_assignment_syntax():
    """`ctx.values[key] = value` raises TypeError inside a callback (the job fails with it)."""

    def job(ctx: Context) -> None:
        ctx.values["limit"] = 4  # type: ignore[index]

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job))
    result = coordinator.run(values={"limit": 3})
    assert not result.ok
    [error] = result.errors
    assert isinstance(error.error, TypeError)


def test_values_are_a_snapshot():
    """Mutating the dict passed as `values=` during the run does not change `ctx.values`."""
    values = {"limit": 3}
    seen = []

    def first() -> None:
        values["limit"] = 99
        values["new"] = True
        del values["limit"]

    def second(ctx: Context) -> None:
        seen.append(dict(ctx.values))

    coordinator = Coordinator()
    coordinator.add_step(Step("first", first))
    coordinator.add_step(Step("second", second))
    coordinator.run(values=values)
    assert seen == [{"limit": 3}]


def test_values_are_per_run():
    """Each run sees the `values=` passed to it."""
    seen = []
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda ctx: seen.append(dict(ctx.values))))
    coordinator.run(values={"run": 1})
    coordinator.run(values={"run": 2})
    assert seen == [{"run": 1}, {"run": 2}]


def test_data_bag_is_the_runs_bag():
    """`ctx.data_bag` is the run's DataBag, holding earlier outputs."""
    seen = []

    def second(ctx: Context) -> None:
        seen.append((ctx.data_bag, ctx.data_bag.get_job_data("first")))

    coordinator = Coordinator()
    coordinator.add_step(Step("first", lambda: "out"))
    coordinator.add_step(Step("second", second))
    result = coordinator.run()
    [(bag, earlier)] = seen
    assert bag is result.data_bag
    assert earlier == "out"


def test_errors_so_far_in_order():
    """`ctx.errors` is a tuple of the StepErrors pushed so far, oldest first."""
    failure = ValueError("bad precheck")
    skip = Skip("not now")
    seen = []

    def failing_precheck(ctx: Context) -> None:
        seen.append(ctx.errors)
        raise failure

    def skipping_precheck(ctx: Context) -> None:
        seen.append(ctx.errors)
        raise skip

    def job(ctx: Context) -> None:
        seen.append(ctx.errors)

    coordinator = Coordinator()
    coordinator.add_step(Step("a", job, failing_precheck))
    coordinator.add_step(Step("b", job, skipping_precheck))
    coordinator.add_step(Step("c", job))
    result = coordinator.run()
    assert result.fatal is None
    first, second, third = seen
    assert first == ()
    assert isinstance(first, tuple)
    assert len(second) == 1
    assert isinstance(third, tuple)
    assert [(e.step, e.phase, e.error) for e in third] == [("a", "precheck", failure), ("b", "precheck", skip)]
    assert all(isinstance(e, StepError) for e in third)
    assert third == result.errors


def test_errors_snapshot_does_not_grow():
    """A tuple read from `ctx.errors` earlier keeps its length when later errors are pushed."""
    seen = []

    def precheck(ctx: Context) -> None:
        seen.append(ctx.errors)
        raise ValueError(ctx.step)

    coordinator = Coordinator()
    coordinator.add_step(Step("a", lambda: None, precheck))
    coordinator.add_step(Step("b", lambda: None, precheck))
    result = coordinator.run()
    assert len(result.errors) == 2
    assert seen[0] == ()
    assert len(seen[1]) == 1


def test_step_and_phase():
    """`ctx.step` is the current step's name as defined, `ctx.phase` the current callback."""
    seen = []

    def precheck(ctx: Context) -> None:
        seen.append((ctx.step, ctx.phase))

    def job(ctx: Context) -> None:
        seen.append((ctx.step, ctx.phase))

    coordinator = Coordinator()
    coordinator.add_step(Step("Load", job, precheck))
    coordinator.add_step(Step("save", job))
    coordinator.run()
    assert seen == [("Load", "precheck"), ("Load", "job"), ("save", "job")]


def test_attempt_fatal_and_key_in_a_plain_run():
    """In a plain run, `ctx.attempt` is 1, `ctx.fatal` is None and `ctx.key` is None."""
    seen = []

    def callback(ctx: Context) -> None:
        seen.append((ctx.phase, ctx.attempt, ctx.fatal, ctx.key))

    coordinator = Coordinator()
    coordinator.add_step(Step("s", callback, callback))
    coordinator.run()
    assert seen == [("precheck", 1, None, None), ("job", 1, None, None)]


def test_logger_is_bound_with_run_id_and_step(log_records):
    """`ctx.logger` records carry the run id and the current step's name in `extra`."""
    run_ids = []

    def job(ctx: Context) -> None:
        run_ids.append(ctx.run_id)
        ctx.logger.info("hello from {where}", where=ctx.step)

    def precheck(ctx: Context) -> None:
        ctx.logger.warning("checking")

    coordinator = Coordinator()
    coordinator.add_step(Step("Load", job, precheck))
    coordinator.add_step(Step("save", job))
    result = coordinator.run()
    assert result.fatal is None
    mine = [r for r in log_records if r["message"] in {"hello from Load", "hello from save", "checking"}]
    assert [(r["message"], r["extra"]["step"], r["extra"]["run_id"]) for r in mine] == [
        ("checking", "Load", run_ids[0]),
        ("hello from Load", "Load", run_ids[0]),
        ("hello from save", "save", run_ids[0]),
    ]


def test_logger_of_different_runs(log_records):
    """Loggers of two runs are bound with their own run ids."""
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda ctx: ctx.logger.info("mark")))
    first, second = coordinator.run(), coordinator.run()
    marks = [r["extra"]["run_id"] for r in log_records if r["message"] == "mark"]
    assert marks == [first.run_id, second.run_id]


def test_run_id():
    """`ctx.run_id` is the same in every callback of a run, equals `result.run_id`, and differs between runs."""
    seen = []
    coordinator = Coordinator()
    coordinator.add_step(Step("a", lambda ctx: seen.append(ctx.run_id), precheck=lambda ctx: seen.append(ctx.run_id)))
    coordinator.add_step(Step("b", lambda ctx: seen.append(ctx.run_id)))
    first = coordinator.run()
    second = coordinator.run()
    assert len(seen) == 6
    assert seen[:3] == [first.run_id] * 3
    assert seen[3:] == [second.run_id] * 3
    assert first.run_id != second.run_id


def test_each_run_has_its_own_context():
    """Two runs hand their callbacks distinct contexts, each with its own input."""
    seen = []
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda ctx: seen.append((ctx, ctx.input))))
    coordinator.run("one")
    coordinator.run("two")
    [(first, first_input), (second, second_input)] = seen
    assert first is not second
    assert (first_input, second_input) == ("one", "two")
    assert first.input == "one"
