"""
What a callback reads from its context, whichever way the run is started.

A run takes one of several internal paths: `run()` with nothing else, `run()`
with ``values=`` (set up like a listened-to run, then the fast path), `run()`
with ``timeout=`` (the general loop from the start) and `run_async`. Callbacks
must see the same input, step, phase, run id and DataBag on every path.
"""

import asyncio
from typing import Any

import pytest

from choreograph import Context, Coordinator, RunResult, Step, get_data_bag

WAYS = ["run", "run-values", "run-timeout", "run_async"]


@pytest.fixture(autouse=True)
def logging_state_cached() -> None:
    """
    Run a trivial flow first, so that plain `run()` calls take the fast path.

    Whether choreograph's logging is on is known cheaply only once loguru was
    asked (see `choreograph._logging.is_enabled`); until then a run also
    goes through the logging listener, on the general loop.
    """
    Coordinator([Step("warm-up", lambda: None)]).run()


def run_way(coordinator: Coordinator[Any], way: str, input: object = None) -> RunResult[Any]:  # noqa: A002
    if way == "run":
        return coordinator.run(input)
    if way == "run-values":
        return coordinator.run(input, values={"region": "eu"})
    if way == "run-timeout":
        return coordinator.run(input, timeout=60)
    return asyncio.run(coordinator.run_async(input, timeout=60))


@pytest.mark.parametrize("way", WAYS)
def test_each_callback_reads_its_own_step_and_phase(way: str):
    """`ctx.step` and `ctx.phase` are those of the callback reading them, for every callback of the run."""
    seen: list[tuple[str, str]] = []

    def note(ctx: Context) -> None:
        seen.append((ctx.step, ctx.phase))

    coordinator = Coordinator(
        [Step("Load", note, note), Step("Check", note), Step("Save", note, note)],
    )
    result = run_way(coordinator, way)
    assert result.ok
    assert seen == [
        ("Load", "precheck"),
        ("Load", "job"),
        ("Check", "job"),
        ("Save", "precheck"),
        ("Save", "job"),
    ]


@pytest.mark.parametrize("way", WAYS)
def test_callbacks_get_the_runs_input(way: str):
    """Every callback that takes an input gets the very object passed to the run, as does `ctx.input`."""
    record = {"id": 7}
    got: list[object] = []

    def take(value: dict[str, int]) -> int:
        got.append(value)
        return value["id"]

    def read(ctx: Context, value: object) -> None:
        got.extend([ctx.input, value])

    # "read" first: its input is not checked, so the fast path passes it the input it was given.
    result = run_way(Coordinator([Step("read", read), Step("take", take, take)]), way, record)
    assert result.ok
    assert result.data_bag.get_job_data("take") == 7
    assert result.data_bag.get_precheck_data("take") == 7
    assert len(got) == 4
    assert all(item is record for item in got)


@pytest.mark.parametrize("way", WAYS)
def test_get_data_bag_is_the_runs_bag(way: str):
    """Inside a callback, `get_data_bag()` is the run's DataBag, with the outputs stored so far."""
    bags: list[object] = []

    def read() -> int:
        bag = get_data_bag()
        bags.append(bag)
        return bag.get_job_data("first") + 1  # type: ignore[operator]

    result = run_way(Coordinator([Step("first", lambda: 1), Step("second", read)]), way)
    assert result.ok
    assert bags == [result.data_bag]
    assert bags[0] is result.data_bag
    assert result.data_bag.get_job_data("second") == 2


@pytest.mark.parametrize("way", WAYS)
def test_run_ids_are_distinct_ints_that_callbacks_see(way: str):
    """Every run gets a new int id; its callbacks read it as `ctx.run_id`, the result as `result.run_id`."""
    ids: list[int] = []

    def note(ctx: Context) -> None:
        ids.append(ctx.run_id)

    coordinator = Coordinator([Step("only", note)])
    first, second = run_way(coordinator, way), run_way(coordinator, way)
    assert ids == [first.run_id, second.run_id]
    assert all(type(run_id) is int for run_id in ids)
    assert first.run_id != second.run_id


@pytest.mark.parametrize("way", WAYS)
def test_a_context_kept_after_the_run_names_the_last_callback(way: str):
    """A context kept past its run still reads the step and phase of the run's last callback."""
    kept: list[Context] = []

    def keep(ctx: Context) -> None:
        kept.append(ctx)

    coordinator = Coordinator([Step("first", keep), Step("last", lambda: 1, lambda: True)])
    result = run_way(coordinator, way)
    assert result.ok
    (ctx,) = kept
    assert (ctx.step, ctx.phase) == ("last", "job")
    assert repr(ctx) == f"<Context run_id={result.run_id} step='last' phase=job>"


def test_a_context_cannot_be_made_by_hand():
    """`Context()` raises `TypeError`, saying that the coordinator makes one per run."""
    with pytest.raises(TypeError) as excinfo:
        Context()
    assert str(excinfo.value) == "a Context is made by the coordinator for each run; run the flow to get one"
