"""The Coordinator's surface: construction, `add_step` and its inspection of callbacks, run arguments, durable keys."""

import asyncio
import functools
import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from returns.result import Result, Success

from choreograph import (
    Coordinator,
    JobFailed,
    SqliteStore,
    Step,
    StepDefinitionError,
    UnassignableInput,
    UnassignableOutput,
)


def ok_job() -> None:
    """Do nothing."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "s.db") as opened:
        yield opened


def refused(coordinator: Coordinator[Any], step: object) -> StepDefinitionError:
    """Add *step*, which must be refused without changing the coordinator, and return the error."""
    before = coordinator.steps
    with pytest.raises(StepDefinitionError) as excinfo:
        coordinator.add_step(step)  # type: ignore[arg-type]
    assert coordinator.steps == before
    return excinfo.value


# -- construction ---------------------------------------------------------------------------


def test_steps_argument_adds_in_order():
    """`Coordinator(steps=...)` adds the steps in the given order, and runs them in that order."""
    seen: list[str] = []
    steps = (Step(name, functools.partial(seen.append, name)) for name in ["load", "check", "save"])
    coordinator = Coordinator(steps)
    assert [s.name for s in coordinator.steps] == ["load", "check", "save"]
    assert coordinator.run().ok
    assert seen == ["load", "check", "save"]


def test_steps_argument_is_validated_like_add_step():
    """A duplicate name among `Coordinator(steps=...)` raises StepDefinitionError."""
    with pytest.raises(StepDefinitionError) as excinfo:
        Coordinator([Step("load", ok_job), Step("LOAD", ok_job)])
    assert excinfo.value.step == "LOAD"


@pytest.mark.parametrize("given", [object(), "runs.db"], ids=["object", "path"])
def test_store_must_implement_the_store_protocol(given: object):
    """`Coordinator(store=...)` refuses anything but a Store (even a path) with TypeError naming the protocol."""
    with pytest.raises(TypeError, match=r"store must implement choreograph\.typing\.Store"):
        Coordinator(store=given)  # type: ignore[arg-type]


def test_key_must_be_callable():
    """`Coordinator(key=3)` raises TypeError: the key is a function deriving a key from an input."""
    with pytest.raises(TypeError, match="key must be a callable"):
        Coordinator(key=3)  # type: ignore[arg-type]


def test_store_property(store: SqliteStore):
    """`coordinator.store` is the store given, or None for a coordinator without one."""
    assert Coordinator().store is None
    assert Coordinator(store=store, key=str).store is store


# -- add_step ---------------------------------------------------------------------------------


def test_add_step_refuses_a_function():
    """Passing the job function itself to `add_step` raises StepDefinitionError for the "step", naming the type."""
    error = refused(Coordinator(), ok_job)
    assert error.callback == "step"
    assert "expected a Step" in error.problem
    assert "function" in error.problem


def test_add_step_refuses_a_non_str_name():
    """A step whose name is not a str raises StepDefinitionError for the "step", naming the name and its type."""
    error = refused(Coordinator(), Step(3, ok_job))  # type: ignore[arg-type]
    assert error.callback == "step"
    assert error.step == "3"
    assert "must be a str, got int" in error.problem


@pytest.mark.parametrize(
    ("timeout", "fragment"),
    [(0, "must be > 0"), (-1, "must be >= 0"), ("1", "number of seconds")],
    ids=["zero", "negative", "str"],
)
def test_bad_step_timeout(timeout: object, fragment: str):
    """`Step(..., timeout=)` must be a number > 0: anything else is a StepDefinitionError of the "step"."""
    error = refused(Coordinator(), Step("s", ok_job, timeout=timeout))  # type: ignore[arg-type]
    assert (error.step, error.callback) == ("s", "step")
    assert fragment in error.problem


def test_callback_without_a_readable_signature():
    """A callable whose signature can't be read (`max`) is a StepDefinitionError "cannot read its signature"."""
    error = refused(Coordinator(), Step("s", max))
    assert (error.step, error.callback) == ("s", "job")
    assert "cannot read its signature" in error.problem


def input_three(x: 3) -> None:  # type: ignore[valid-type]
    """Take an input annotated with something that is not a type."""


def returns_three() -> 3:  # type: ignore[valid-type]
    """Return something annotated with something that is not a type."""


@pytest.mark.parametrize(("job", "what"), [(input_three, "input"), (returns_three, "return")])
def test_annotation_beartype_cannot_check(job: Any, what: str):
    """An annotation that is not a type (`x: 3`, `-> 3`) is a StepDefinitionError saying beartype cannot check it."""
    error = refused(Coordinator(), Step("s", job))
    assert (error.step, error.callback) == ("s", "job")
    assert f"beartype cannot check the {what} annotation 3" in error.problem


def test_none_input_annotation_accepts_only_none():
    """An input annotated `None` accepts None and refuses anything else with UnassignableInput."""

    def job(x: None) -> str:
        return "got None"

    coordinator = Coordinator([Step("s", job)])
    assert coordinator.run().data_bag.get_job_data("s") == "got None"
    refused_run = coordinator.run(0)
    assert isinstance(refused_run.fatal, UnassignableInput)
    assert (refused_run.fatal.expected, refused_run.fatal.actual) == ("None", "int")


def test_bare_result_annotation_does_not_check_the_value():
    """A bare `-> Result` stores any unwrapped success value; `-> Result[int, str]` checks it against `int`."""

    def bare() -> Result:  # type: ignore[type-arg]
        return Success("text")

    def typed() -> Result[int, str]:
        return Success("text")  # type: ignore[arg-type]

    assert Coordinator([Step("s", bare)]).run().data_bag.get_job_data("s") == "text"
    result = Coordinator([Step("s", typed)]).run()
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, UnassignableOutput)
    assert not result.data_bag.has_job_data("s")


# Callbacks of a module of their own, with postponed annotations. It names `Context` only as a
# string marker (it does not import it), so the hints can't all be evaluated at once: each is
# resolved on its own, with the module's globals (where `Record` lives, and nowhere else).
FOREIGN = textwrap.dedent(
    """
    from __future__ import annotations

    import asyncio


    class Record:
        def __init__(self, id: int) -> None:
            self.id = id


    def tagged(prefix: str, ctx: Context, record: Record) -> str:
        return f"{prefix}{ctx.step}:{record.id}"


    class Plain:
        def __call__(self, ctx: Context, record: Record) -> int:
            return record.id + len(ctx.step)


    class Awaiting:
        async def __call__(self, ctx: Context, record: Record) -> int:
            await asyncio.sleep(0)
            return record.id * 10
    """
)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """Import FOREIGN from a file, as a module that is not the tests'."""
    path = tmp_path_factory.mktemp("foreign") / "choreograph_tests_foreign.py"
    path.write_text(FOREIGN)
    spec = importlib.util.spec_from_file_location("choreograph_tests_foreign", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        del sys.modules[spec.name]


def test_partial_resolves_hints_with_the_wrapped_functions_globals(foreign: ModuleType):
    """A partial of a function with string annotations resolves them in the function's module: input checked."""
    coordinator = Coordinator([Step("s", functools.partial(foreign.tagged, "#"))])
    assert coordinator.run(foreign.Record(3)).data_bag.get_job_data("s") == "#s:3"
    result = coordinator.run(3)
    assert isinstance(result.fatal, UnassignableInput)
    assert result.fatal.expected.endswith("Record")


def test_callable_instance_resolves_hints_with_its_classs_module(foreign: ModuleType):
    """A callable instance's string annotations are resolved in its class's module: context passed, input checked."""
    coordinator = Coordinator([Step("step", foreign.Plain())])
    assert coordinator.run(foreign.Record(3)).data_bag.get_job_data("step") == 7
    assert isinstance(coordinator.run("3").fatal, UnassignableInput)


def test_callable_instance_with_async_call_is_awaited(foreign: ModuleType):
    """An instance whose `__call__` is `async def` is awaited, by `run` and `run_async`, and its output checked."""
    coordinator = Coordinator([Step("s", foreign.Awaiting())])
    assert coordinator.run(foreign.Record(3)).data_bag.get_job_data("s") == 30
    assert asyncio.run(coordinator.run_async(foreign.Record(4))).data_bag.get_job_data("s") == 40
    assert isinstance(coordinator.run(3).fatal, UnassignableInput)


# -- run arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", [3, [("db", "conn")]], ids=["int", "pairs"])
def test_values_must_be_a_mapping(values: Any):
    """`values=` that is not a mapping raises TypeError from `run`, `run_async` and (at the call) `run_many`."""
    seen: list[object] = []
    coordinator = Coordinator([Step("s", seen.append)])
    with pytest.raises(TypeError, match="values must be a mapping"):
        coordinator.run(1, values=values)
    with pytest.raises(TypeError, match="values must be a mapping"):
        asyncio.run(coordinator.run_async(1, values=values))
    with pytest.raises(TypeError, match="values must be a mapping"):
        coordinator.run_many([1], values=values)
    assert seen == []


@pytest.mark.parametrize("options", [{"key": "x"}, {"key": 7}, {"fresh": True}], ids=["key", "int-key", "fresh"])
def test_durable_options_need_a_store(options: dict[str, Any]):
    """`key=` and `fresh=` on a coordinator without a store raise TypeError from `run` and `run_async`; nothing runs."""
    seen: list[object] = []
    coordinator = Coordinator([Step("s", seen.append)])
    with pytest.raises(TypeError, match="durable runs"):
        coordinator.run(1, **options)
    with pytest.raises(TypeError, match="durable runs"):
        asyncio.run(coordinator.run_async(1, **options))
    assert seen == []


def test_run_many_fresh_needs_a_store():
    """`run_many(..., fresh=True)` without a store raises TypeError at the call."""
    with pytest.raises(TypeError, match="fresh= is for durable runs"):
        Coordinator([Step("s", ok_job)]).run_many([1], fresh=True)


def test_resume_needs_a_store():
    """`resume(key)` on a coordinator without a store raises TypeError."""
    with pytest.raises(TypeError, match="needs a durable coordinator"):
        Coordinator([Step("s", ok_job)]).resume("k")


@pytest.mark.parametrize("workers", ["2", 2.0, True], ids=["str", "float", "bool"])
def test_run_many_workers_must_be_an_int(workers: Any):
    """`run_many(workers=...)` that is not an int (a bool neither) raises TypeError at the call."""
    with pytest.raises(TypeError, match="workers must be an int"):
        Coordinator([Step("s", ok_job)]).run_many([1], workers=workers)


# -- durable keys -----------------------------------------------------------------------------


BAD_KEYS = [(True, TypeError, "str or an int"), (1.5, TypeError, "str or an int"), ("", ValueError, "not be empty")]


@pytest.mark.parametrize(("key", "error", "fragment"), BAD_KEYS, ids=["bool", "float", "empty"])
def test_bad_durable_key(store: SqliteStore, key: object, error: type[Exception], fragment: str):
    """A durable key given as `key=` that is a bool, a float or empty is refused before anything runs or is stored."""
    seen: list[object] = []
    coordinator = Coordinator([Step("s", seen.append)], store=store)
    with pytest.raises(error, match=fragment):
        coordinator.run(1, key=key)  # type: ignore[arg-type]
    assert seen == []
    assert store.runs() == []


@pytest.mark.parametrize(("key", "error", "fragment"), BAD_KEYS, ids=["bool", "float", "empty"])
def test_bad_derived_key(store: SqliteStore, key: object, error: type[Exception], fragment: str):
    """A key function returning a bool, a float or an empty string is refused as `key=` would be."""
    coordinator = Coordinator([Step("s", ok_job)], store=store, key=lambda _: key)  # type: ignore[arg-type,return-value]
    with pytest.raises(error, match=fragment):
        coordinator.run(1)
    assert store.runs() == []


def test_durable_run_needs_a_key(store: SqliteStore):
    """A durable coordinator without a key function raises TypeError for `run` without `key=`."""
    coordinator = Coordinator([Step("s", ok_job)], store=store)
    with pytest.raises(TypeError, match="needs a key"):
        coordinator.run(1)
    assert store.runs() == []


def test_int_keys_are_strings(store: SqliteStore):
    """An int key is stored as its str: `result.key == "7"`, and running key "7" returns the stored result."""
    seen: list[int] = []

    def double(x: int) -> int:
        seen.append(x)
        return 2 * x

    coordinator = Coordinator([Step("double", double)], store=store)
    first = coordinator.run(3, key=7)
    assert first.key == "7"
    info = store.run_info("7")
    assert info is not None
    assert info.status == "ok"
    again = coordinator.run(3, key="7")
    assert again.key == "7"
    assert again.data_bag.get_job_data("double") == 6
    assert seen == [3]


def test_int_keys_from_the_key_function(store: SqliteStore):
    """A key function returning ints gives each run the key's str."""
    coordinator = Coordinator([Step("s", ok_job)], store=store, key=lambda x: x * 10)
    assert sorted(result.key or "" for result in coordinator.run_many([1, 2])) == ["10", "20"]


def test_durable_run_refuses_a_negative_timeout_before_storing(store: SqliteStore):
    """A durable run with a negative timeout raises ValueError and leaves no run in the store."""
    coordinator = Coordinator([Step("s", ok_job)], store=store, key=str)
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        coordinator.run(1, timeout=-1)
    assert store.run_info("1") is None


@pytest.mark.anyio
async def test_run_async_durable(store: SqliteStore):
    """A durable `run_async` runs and records the key; running it again returns the stored result without calling."""
    seen: list[int] = []

    async def double(x: int) -> int:
        seen.append(x)
        await asyncio.sleep(0)
        return 2 * x

    coordinator = Coordinator([Step("double", double)], store=store, key=str)
    first = await coordinator.run_async(4)
    assert first.ok
    assert first.key == "4"
    assert first.data_bag.get_job_data("double") == 8
    again = await coordinator.run_async(4)
    assert again.ok
    assert again.data_bag.get_job_data("double") == 8
    assert [(c.step, c.outcome, c.restored) for c in again.trace] == [("double", "ok", True)]
    assert seen == [4]
    assert [(e.step, e.phase, e.outcome) for e in store.events("4")] == [("double", "job", "ok")]


# -- container protocol -----------------------------------------------------------------------


def test_contains_ignores_case():
    """`name in coordinator` tells whether a step of that name was added, in any case; non-str are never in."""
    coordinator = Coordinator([Step("Load", ok_job)])
    assert "Load" in coordinator
    assert "LOAD" in coordinator
    assert "load" in coordinator
    assert "save" not in coordinator
    assert 3 not in coordinator


def test_len_counts_steps():
    """`len(coordinator)` is the number of steps added."""
    coordinator = Coordinator()
    assert len(coordinator) == 0
    coordinator.add_step(Step("a", ok_job))
    coordinator.add_step(Step("b", ok_job))
    assert len(coordinator) == 2


def test_repr_names_the_steps_in_order():
    """`repr(coordinator)` names the steps, in execution order."""
    text = repr(Coordinator([Step("Load", ok_job), Step("Save", ok_job)]))
    assert text.startswith("Coordinator(")
    assert "'Load'" in text
    assert "'Save'" in text
    assert text.index("'Load'") < text.index("'Save'")


def test_with_store_makes_a_durable_copy_and_leaves_the_original_alone(tmp_path):
    """`with_store(store, key=...)` gives a durable coordinator with the same steps; the original stays plain."""
    from choreograph import MemoryStore

    events: list[object] = []
    plain = Coordinator[int]([Step("double", lambda x: x * 2)], listeners=[events.append])
    store = MemoryStore()
    durable = plain.with_store(store, key=str)
    assert (durable.store, durable.key, plain.store, plain.key) == (store, str, None, None)
    assert durable.steps == plain.steps
    assert durable.run(4).data_bag.get_job_data("double") == 8
    assert store.run_info("4") is not None
    assert plain.run(5).key is None
    assert len(events) == 8  # both share the listeners: 4 events per run
    again = durable.with_store(MemoryStore())
    assert again.key is str  # the key function is kept when none is given
    with pytest.raises(TypeError, match="store must implement"):
        plain.with_store("runs.db")  # type: ignore[arg-type]


def test_input_type_is_the_declared_type_argument():
    """`input_type` is the `Rec` of `Coordinator[Rec]`, `object` when none was given."""
    assert Coordinator[int]().input_type is int
    assert Coordinator().input_type is object
