"""The DataBag: outputs by step name, and `get_data_bag` inside callbacks."""

import contextlib
import dataclasses
import pickle
import threading
import typing
from collections.abc import Mapping

import pytest

from choreograph import (
    ChoreographError,
    Context,
    Coordinator,
    DataBag,
    NoDataBagInContext,
    Skip,
    Step,
    get_data_bag,
)

T = typing.TypeVar("T")


@pytest.fixture
def bag() -> DataBag:
    """Return an empty DataBag."""
    return DataBag()


def test_job_data_round_trip(bag):
    """`set_job_data` stores a value that `get_job_data` returns and `has_job_data` reports."""
    value = object()
    assert not bag.has_job_data("load")
    bag.set_job_data("load", value)
    assert bag.has_job_data("load")
    assert bag.get_job_data("load") is value


def test_precheck_data_round_trip(bag):
    """`set_precheck_data` stores a value that `get_precheck_data` returns and `has_precheck_data` reports."""
    value = object()
    assert not bag.has_precheck_data("load")
    bag.set_precheck_data("load", value)
    assert bag.has_precheck_data("load")
    assert bag.get_precheck_data("load") is value


def test_job_and_precheck_data_are_separate(bag):
    """A step's job data and precheck data are stored apart."""
    bag.set_job_data("load", "job")
    assert not bag.has_precheck_data("load")
    with pytest.raises(KeyError):
        bag.get_precheck_data("load")
    bag.set_precheck_data("load", "precheck")
    assert bag.get_job_data("load") == "job"
    assert bag.get_precheck_data("load") == "precheck"


def test_set_overwrites(bag):
    """Setting a step's data again replaces the value."""
    bag.set_job_data("load", 1)
    bag.set_job_data("load", 2)
    assert bag.get_job_data("load") == 2


@pytest.mark.parametrize("lookup", ["Load", "load", "LOAD", "lOaD"])
def test_names_ignore_case(bag, lookup):
    """Step names are case-insensitive for every method."""
    bag.set_job_data("Load", "job")
    bag.set_precheck_data("LoAd", "precheck")
    assert bag.has_job_data(lookup)
    assert bag.has_precheck_data(lookup)
    assert bag.get_job_data(lookup) == "job"
    assert bag.get_precheck_data(lookup) == "precheck"


def test_set_in_another_case_overwrites(bag):
    """Setting data under another case of the same name replaces the value (one entry)."""
    bag.set_job_data("Load", 1)
    bag.set_job_data("LOAD", 2)
    assert bag.get_job_data("load") == 2
    assert len(bag.job_data) == 1


def test_names_are_distinct(bag):
    """Different names do not share data."""
    bag.set_job_data("load", 1)
    assert not bag.has_job_data("loads")
    assert not bag.has_job_data("lo")


@pytest.mark.parametrize("getter", ["get_job_data", "get_precheck_data"])
def test_missing_without_default_raises_key_error(bag, getter):
    """Getting data that was never stored, without a default, raises KeyError."""
    with pytest.raises(KeyError):
        getattr(bag, getter)("nothing")


@pytest.mark.parametrize("getter", ["get_job_data", "get_precheck_data"])
@pytest.mark.parametrize("default", [0, "", "fallback", None])
def test_missing_with_default(bag, getter, default):
    """Getting data that was never stored returns the default, None included, positional or by keyword."""
    assert getattr(bag, getter)("nothing", default) is default
    assert getattr(bag, getter)("nothing", default=default) is default


def test_stored_value_wins_over_default(bag):
    """A stored value, even None or a falsy one, is returned instead of the default."""
    bag.set_job_data("none", None)
    bag.set_precheck_data("zero", 0)
    assert bag.get_job_data("none", "default") is None
    assert bag.get_precheck_data("zero", "default") == 0
    assert bag.has_job_data("none")


def test_threads_setting_distinct_keys(bag):
    """Many threads storing distinct names at once lose nothing."""
    threads_count, per_thread = 16, 250
    barrier = threading.Barrier(threads_count)
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            for item in range(per_thread):
                name = f"Step-{index}-{item}"
                bag.set_job_data(name, (index, item))
                bag.set_precheck_data(name.upper(), item)
                assert bag.get_job_data(name.lower()) == (index, item)
                assert bag.has_precheck_data(name)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(bag.job_data) == threads_count * per_thread
    assert len(bag.precheck_data) == threads_count * per_thread
    for index in range(threads_count):
        for item in range(per_thread):
            assert bag.get_job_data(f"step-{index}-{item}") == (index, item)
            assert bag.get_precheck_data(f"STEP-{index}-{item}") == item


def test_data_snapshots_by_name(bag):
    """`job_data` and `precheck_data` are mappings of the stored values by step name."""
    bag.set_job_data("load", 1)
    bag.set_job_data("save", 2)
    bag.set_precheck_data("load", "checked")
    assert isinstance(bag.job_data, Mapping)
    assert isinstance(bag.precheck_data, Mapping)
    assert dict(bag.job_data) == {"load": 1, "save": 2}
    assert dict(bag.precheck_data) == {"load": "checked"}


def test_data_snapshots_do_not_follow_the_bag(bag):
    """A snapshot taken earlier does not change when the bag does."""
    bag.set_job_data("load", 1)
    jobs, prechecks = bag.job_data, bag.precheck_data
    bag.set_job_data("load", 2)
    bag.set_job_data("save", 3)
    bag.set_precheck_data("load", 4)
    assert dict(jobs) == {"load": 1}
    assert dict(prechecks) == {}


def test_data_snapshots_are_not_the_bag(bag):
    """Changing a snapshot, where it allows that, does not change the bag."""
    bag.set_job_data("load", 1)
    snapshot = bag.job_data
    with contextlib.suppress(TypeError):
        snapshot["load"] = 2  # type: ignore[index]
        snapshot["other"] = 3  # type: ignore[index]
    assert bag.get_job_data("load") == 1
    assert not bag.has_job_data("other")


def test_len_iter_and_eq(bag):
    """`len` and iteration count the steps that stored anything; bags with equal contents are equal."""
    assert len(bag) == 0
    assert list(bag) == []
    bag.set_job_data("Load", 1)
    bag.set_precheck_data("load", 2)
    bag.set_precheck_data("Check", 3)
    assert len(bag) == 2
    assert sorted(name.casefold() for name in bag) == ["check", "load"]
    other = DataBag()
    other.set_job_data("load", 1)
    other.set_precheck_data("load", 2)
    assert bag != other
    other.set_precheck_data("check", 3)
    assert bag == other
    other.set_job_data("load", 5)
    assert bag != other


def test_run_snapshots_use_step_names():
    """After a run, the snapshots are keyed by the steps' names as defined, whatever case is used to store."""

    def check() -> str:
        raise Skip("not today", output="skipped")

    def stash(ctx: Context) -> None:
        ctx.data_bag.set_job_data("EXTRA", "side")

    coordinator = Coordinator()
    coordinator.add_step(Step("Load", lambda: 1, precheck=lambda: "ok"))
    coordinator.add_step(Step("Maybe", lambda: 2, precheck=check))
    coordinator.add_step(Step("Stash", stash))
    result = coordinator.run()
    assert result.fatal is None
    assert dict(result.data_bag.precheck_data) == {"Load": "ok", "Maybe": "skipped"}
    assert dict(result.data_bag.job_data) == {"Load": 1, "EXTRA": "side"}


def test_callbacks_read_earlier_outputs():
    """A later callback reads the outputs of earlier steps through the bag, in any case."""
    seen = []

    def later(ctx: Context) -> None:
        bag = get_data_bag()
        seen.append((bag.get_job_data("FIRST"), bag.get_precheck_data("first"), ctx.data_bag.has_job_data("later")))

    coordinator = Coordinator()
    coordinator.add_step(Step("First", lambda: "job", precheck=lambda: "pre"))
    coordinator.add_step(Step("Later", later))
    coordinator.run()
    assert seen == [("job", "pre", False)]


def test_get_data_bag_in_plain_callbacks():
    """`get_data_bag()` in a precheck and a job returns the run's bag: `ctx.data_bag` and `result.data_bag`."""
    seen = []

    def precheck(ctx: Context) -> None:
        seen.append((get_data_bag(), ctx.data_bag))

    def job(ctx: Context) -> None:
        seen.append((get_data_bag(), ctx.data_bag))

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job, precheck))
    result = coordinator.run()
    assert len(seen) == 2
    for from_function, from_context in seen:
        assert from_function is result.data_bag
        assert from_context is result.data_bag


def test_get_data_bag_in_async_callbacks():
    """`get_data_bag()` in `async def` callbacks returns the run's bag."""
    seen = []

    async def precheck() -> None:
        seen.append(get_data_bag())

    async def job(ctx: Context) -> None:
        seen.append(get_data_bag())
        get_data_bag().set_precheck_data("note", ctx.step)

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job, precheck))
    result = coordinator.run()
    assert result.fatal is None
    assert len(seen) == 2
    assert all(bag is result.data_bag for bag in seen)
    assert result.data_bag.get_precheck_data("note") == "s"


@pytest.mark.anyio
async def test_get_data_bag_in_run_async():
    """`get_data_bag()` in callbacks run by `run_async` returns that run's bag."""
    seen = []

    async def job() -> None:
        seen.append(get_data_bag())

    def plain() -> None:
        seen.append(get_data_bag())

    coordinator = Coordinator()
    coordinator.add_step(Step("a", job))
    coordinator.add_step(Step("b", plain))
    result = await coordinator.run_async()
    assert len(seen) == 2
    assert all(bag is result.data_bag for bag in seen)


@pytest.mark.anyio
async def test_get_data_bag_with_run_inside_an_event_loop():
    """`get_data_bag()` works in async callbacks of a `run` called from inside a running event loop."""
    seen = []

    async def job() -> None:
        seen.append(get_data_bag())

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job))
    result = coordinator.run()
    assert result.fatal is None
    assert len(seen) == 1
    assert seen[0] is result.data_bag


def test_get_data_bag_in_nested_runs():
    """A run started inside a callback has its own bag; the outer callback gets its own back afterwards."""
    seen = {}
    inner = Coordinator()
    inner.add_step(Step("inner", lambda: seen.setdefault("inner", get_data_bag())))

    def outer_job() -> None:
        seen["before"] = get_data_bag()
        seen["inner_result"] = inner.run().data_bag
        seen["after"] = get_data_bag()

    outer = Coordinator()
    outer.add_step(Step("outer", outer_job))
    result = outer.run()
    assert result.fatal is None
    assert seen["before"] is result.data_bag
    assert seen["after"] is result.data_bag
    assert seen["inner"] is seen["inner_result"]
    assert seen["inner"] is not result.data_bag


def test_get_data_bag_in_run_many():
    """In `run_many`, each run's callbacks get that run's bag."""

    def job(x: int) -> tuple[int, int]:
        get_data_bag().set_precheck_data("mark", x)
        return x, id(get_data_bag())

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job))
    results = list(coordinator.run_many(range(20), workers=4))
    assert len(results) == 20
    for result in results:
        value, bag_id = result.data_bag.get_job_data("s")
        assert value == result.input
        assert bag_id == id(result.data_bag)
        assert result.data_bag.get_precheck_data("mark") == result.input


def test_each_run_has_its_own_bag():
    """Two runs of one coordinator get distinct bags."""
    coordinator = Coordinator()
    coordinator.add_step(Step("s", lambda x: x))
    first, second = coordinator.run(1), coordinator.run(2)
    assert first.data_bag is not second.data_bag
    assert first.data_bag.get_job_data("s") == 1
    assert second.data_bag.get_job_data("s") == 2


def test_get_data_bag_outside_a_run():
    """Outside a run, `get_data_bag()` raises NoDataBagInContext, a LookupError and a ChoreographError."""
    with pytest.raises(NoDataBagInContext) as excinfo:
        get_data_bag()
    assert isinstance(excinfo.value, LookupError)
    assert isinstance(excinfo.value, ChoreographError)


def test_get_data_bag_outside_after_runs():
    """After a run, ok or failed, `get_data_bag()` outside a run raises again."""

    def boom() -> None:
        raise RuntimeError

    def job() -> None:
        get_data_bag()

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job))
    assert coordinator.run().ok
    with pytest.raises(NoDataBagInContext):
        get_data_bag()

    failing = Coordinator()
    failing.add_step(Step("s", boom))
    assert not failing.run().ok
    with pytest.raises(NoDataBagInContext):
        get_data_bag()


def test_iterating_a_run_bag_follows_the_run_order():
    """A run's DataBag lists its steps in run order, whatever table their outputs are in."""
    from choreograph import Coordinator, Step

    result = Coordinator([Step("a", lambda: 1), Step("b", lambda: 2, precheck=lambda: "p")]).run()
    result.data_bag.set_job_data("Extra", 3)
    assert list(result.data_bag) == ["a", "b", "Extra"]


# -- typed reads: bag.job(step), bag.precheck(step) ------------------------------


def test_job_reads_a_step_s_output_by_its_handle():
    """`bag.job(step)` returns what the step's job stored; `add_step` returns the very step to read with."""
    flow = Coordinator[int]()
    double = flow.add_step(Step("Double", lambda x: x * 2))
    shown = flow.add_step(Step("show", lambda ctx: f"{ctx.data_bag.job(double)}!", lambda: "checked"))
    result = flow.run(21)
    assert result.ok, result.fatal
    assert result.data_bag.job(double) == 42
    assert result.data_bag.job(shown) == "42!"
    assert result.data_bag.precheck(shown) == "checked"


def test_job_and_precheck_look_the_step_up_by_name_ignoring_case(bag):
    """The handle stands for its name: any step of that name, in any case, as `get_job_data`."""
    bag.set_job_data("LOAD", 1)
    bag.set_precheck_data("Load", 2)
    step = Step("load", lambda: 1)
    assert (bag.job(step), bag.precheck(step)) == (1, 2)
    assert (bag.job(Step("LoAd", lambda: 1)), bag.precheck(Step("lOAD", lambda: 1))) == (1, 2)


def test_job_and_precheck_raise_key_error_or_return_the_default(bag):
    """Nothing stored: `KeyError` naming the step, or the default (positional or keyword), even `None`."""
    step = Step("load", lambda: 1)
    with pytest.raises(KeyError, match="no job data for step 'load'"):
        bag.job(step)
    with pytest.raises(KeyError, match="no precheck data for step 'load'"):
        bag.precheck(step)
    assert bag.job(step, None) is None
    assert bag.job(step, default="none") == "none"
    assert bag.precheck(step, 0) == 0
    bag.set_job_data("load", None)
    assert bag.job(step, "default") is None  # a stored None wins


def test_a_skipped_job_has_no_output_but_its_precheck_may():
    """A job skipped by `Skip(output=...)` has no job output; the precheck's output is read with `precheck`."""

    def seen(x: int) -> None:
        raise Skip("seen", output=f"row {x}")

    flow = Coordinator[int]()
    step = flow.add_step(Step("insert", lambda x: x, seen))
    bag = flow.run(3).data_bag
    assert bag.job(step, "skipped") == "skipped"
    assert bag.precheck(step) == "row 3"


@pytest.mark.parametrize(("read", "by_name"), [("job", "get_job_data"), ("precheck", "get_precheck_data")])
def test_job_and_precheck_take_a_step_not_a_name(bag, read, by_name):
    """A name (or anything but a Step) is a TypeError; for a name, the message points to the by-name method."""
    bag.set_job_data("load", 1)
    with pytest.raises(TypeError, match=rf"^expected a Step, got str \(for a step's name, use {by_name}\('load'\)\)$"):
        getattr(bag, read)("load")
    with pytest.raises(TypeError, match=r"^expected a Step, got int$"):
        getattr(bag, read)(3)


def test_step_is_subscriptable_at_run_time():
    """`Step[int]` is a typing alias of `Step`, and calling it makes a plain (frozen) Step."""
    alias = Step[int]
    assert typing.get_origin(alias) is Step
    assert typing.get_args(alias) == (int,)
    step = alias("count", len)
    assert type(step) is Step
    assert step == Step("count", len)
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.name = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(step)) == step  # noqa: S301 - our own bytes
    assert typing.get_args(Step[list[T]][str]) == (list[str],)


def test_step_keeps_its_fields_and_positional_order():
    """Generic or not, `Step` has the same fields in the same order: name, job, precheck, then keyword options."""
    fields = [(field.name, field.kw_only) for field in dataclasses.fields(Step)]
    assert fields == [
        ("name", False),
        ("job", False),
        ("precheck", False),
        ("retry", True),
        ("compensate", True),
        ("compensate_failed", True),
        ("timeout", True),
    ]
    assert Step("a", len, bool) == Step(name="a", job=len, precheck=bool)
