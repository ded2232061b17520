"""Step definitions: which callback forms `add_step` accepts, and how they are called."""

import functools
import importlib.util
import inspect
import math
import pickle
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from returns.result import Result, Success

from choreograph import (
    ChoreographError,
    Context,
    Coordinator,
    JobFailed,
    Retry,
    Skip,
    Step,
    StepDefinitionError,
    UnassignableInput,
    UnassignableOutput,
)

T = typing.TypeVar("T")
InputT = typing.TypeVar("InputT")


def _load_future_callbacks() -> ModuleType:
    """Import tests/_future_callbacks.py (tests/ is not a package, nor on sys.path)."""
    name = "choreograph_tests_future_callbacks"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_future_callbacks.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


future = _load_future_callbacks()


def ok_job() -> None:
    """Do nothing."""


def run_one(job: Callable[..., object], input: object = None, *, precheck: Callable[..., object] | None = None):  # noqa: A002
    """Run a one-step coordinator (step "s") and return its result, which must be ok."""
    coordinator = Coordinator()
    coordinator.add_step(Step("s", job, precheck))
    result = coordinator.run(input)
    assert result.fatal is None, result.fatal
    assert result.errors == ()
    return result


def add_bad(step: Step, coordinator: Coordinator | None = None) -> StepDefinitionError:
    """Add *step*, which must be refused, and return the error."""
    coordinator = Coordinator() if coordinator is None else coordinator
    before = coordinator.steps
    with pytest.raises(StepDefinitionError) as excinfo:
        coordinator.add_step(step)
    assert coordinator.steps == before  # a refused step is not added
    return excinfo.value


def check_error(error: StepDefinitionError, step: str, callback: str, *fragments: str) -> None:
    """Check the attributes of *error*, and that its message names the step, the callback and the problem."""
    assert isinstance(error, TypeError)
    assert isinstance(error, ChoreographError)
    assert error.step == step
    assert error.callback == callback
    message = str(error)
    assert repr(step) in message
    assert callback in message
    assert error.problem
    assert error.problem in message
    for fragment in fragments:
        assert fragment.lower() in error.problem.lower()


# -- definition errors ---------------------------------------------------------


def test_empty_name():
    """An empty step name is a definition error."""
    error = add_bad(Step("", ok_job))
    check_error(error, "", "step", "empty")


def test_whitespace_only_name():
    """A name made of whitespace only counts as empty."""
    error = add_bad(Step("  \t ", ok_job))
    check_error(error, "  \t ", "step", "empty")


@pytest.mark.parametrize(("taken", "again"), [("Load", "load"), ("load", "Load"), ("lOaD", "LoAd")])
def test_duplicate_name_ignores_case(taken, again):
    """A name already taken in another case is a definition error naming both spellings."""
    coordinator = Coordinator()
    first = coordinator.add_step(Step(taken, ok_job))
    error = add_bad(Step(again, ok_job), coordinator)
    check_error(error, again, "step", repr(taken))
    assert coordinator.steps == (first,)


def test_duplicate_name_same_case():
    """The exact same name twice is a definition error."""
    coordinator = Coordinator()
    coordinator.add_step(Step("load", ok_job))
    error = add_bad(Step("load", ok_job), coordinator)
    check_error(error, "load", "step")


def test_job_none():
    """A step without a job is a definition error about the job."""
    error = add_bad(Step("s", None))  # type: ignore[arg-type]
    check_error(error, "s", "job", "required")


def test_job_not_callable():
    """A job that is not callable is a definition error naming the wrong type."""
    error = add_bad(Step("s", 42))  # type: ignore[arg-type]
    check_error(error, "s", "job", "callable", "int")


def test_precheck_not_callable():
    """A precheck that is not callable is a definition error about the precheck."""
    error = add_bad(Step("s", ok_job, "yes"))  # type: ignore[arg-type]
    check_error(error, "s", "precheck", "callable", "str")


def test_var_positional():
    """A callback taking *args is a definition error naming the parameter."""

    def job(*args):
        return args

    check_error(add_bad(Step("s", job)), "s", "job", "*args")


def test_var_keyword():
    """A callback taking **kwargs is a definition error naming the parameter."""

    def job(x, **kwargs):
        return x, kwargs

    check_error(add_bad(Step("s", job)), "s", "job", "**kwargs")


def test_required_keyword_only():
    """A keyword-only parameter without a default is a definition error naming it."""

    def job(x, *, mode):
        return x, mode

    check_error(add_bad(Step("s", job)), "s", "job", "mode")


def test_two_inputs_without_defaults():
    """Two non-context parameters without defaults are a definition error naming them."""

    def job(first, second):
        return first, second

    check_error(add_bad(Step("s", job)), "s", "job", "first", "second")


def test_two_inputs_after_context():
    """A context parameter followed by two parameters without defaults is a definition error."""

    def job(ctx: Context, first: int, second: int) -> int:
        return first + second

    check_error(add_bad(Step("s", job)), "s", "job", "first", "second")


def test_annotated_context_not_first():
    """A parameter annotated Context that is not the first is a definition error naming it."""

    def job(x: int, ctx: Context) -> int:
        return x

    check_error(add_bad(Step("s", job)), "s", "job", "ctx", "first")


def test_unannotated_context_not_first():
    """An unannotated `ctx` parameter that is not the first is a definition error naming it."""

    def job(x, ctx):
        return x

    check_error(add_bad(Step("s", job)), "s", "job", "ctx", "first")


def test_unresolvable_string_annotation():
    """A string annotation that cannot be resolved is a definition error naming it."""

    def job(x: "NoSuchType") -> None:  # noqa: F821
        del x

    check_error(add_bad(Step("s", job)), "s", "job", "NoSuchType")


def test_unresolvable_return_annotation():
    """An unresolvable return annotation is a definition error naming it."""

    def job(x: int) -> "NoSuchResult":  # noqa: F821
        return x

    check_error(add_bad(Step("s", job)), "s", "job", "NoSuchResult")


def test_unresolvable_annotation_of_a_defaulted_parameter():
    """An unresolvable hint is a definition error even on a parameter that is never passed."""

    def job(x: int, extra: "NoSuchExtra" = None) -> None:  # noqa: F821
        del x, extra

    check_error(add_bad(Step("s", job)), "s", "job", "NoSuchExtra")


def test_precheck_problem_names_the_precheck():
    """A bad precheck is reported as the precheck's problem, not the job's."""

    def precheck(*values):
        return values

    check_error(add_bad(Step("s", ok_job, precheck)), "s", "precheck", "*values")


def test_bad_job_with_good_precheck_adds_nothing():
    """A step refused for its job leaves the coordinator's steps unchanged, and its name free."""
    coordinator = Coordinator()

    def bad(a, b):
        return a, b

    add_bad(Step("s", bad, precheck=ok_job), coordinator)
    step = coordinator.add_step(Step("S", ok_job))
    assert coordinator.steps == (step,)


def test_decorator_reports_definition_errors():
    """The decorator form raises the same StepDefinitionError when decorating a bad job."""
    coordinator = Coordinator()
    with pytest.raises(StepDefinitionError) as excinfo:

        @coordinator.step("s")
        def job(*args):
            return args

    check_error(excinfo.value, "s", "job", "*args")
    assert coordinator.steps == ()


# -- accepted forms --------------------------------------------------------------


def test_no_parameters():
    """A callback without parameters is called with nothing, and its output is stored."""
    calls = []

    def precheck():
        calls.append("precheck")
        return "p"

    def job():
        calls.append("job")
        return "j"

    result = run_one(job, "in", precheck=precheck)
    assert calls == ["precheck", "job"]
    assert result.data_bag.get_precheck_data("s") == "p"
    assert result.data_bag.get_job_data("s") == "j"


@pytest.mark.parametrize("name", ["ctx", "context"])
def test_unannotated_context_by_name(name):
    """An unannotated single parameter named ctx or context receives the Context."""
    seen = []
    namespace = {"seen": seen}
    exec(f"def job({name}):\n    seen.append({name})\n", namespace)  # noqa: S102
    run_one(namespace["job"], "in")
    [ctx] = seen
    assert isinstance(ctx, Context)
    assert ctx.input == "in"


def test_annotated_context_any_name():
    """A parameter annotated Context receives the Context whatever its name."""
    seen = []

    def job(c: Context) -> None:
        seen.append((c, c.input, c.step))

    run_one(job, 7)
    [(ctx, value, step)] = seen
    assert isinstance(ctx, Context)
    assert (value, step) == (7, "s")


def test_string_context_annotation():
    """A parameter annotated with the string "Context" receives the Context."""
    seen = []

    def job(c: "Context") -> None:
        seen.append(c)

    run_one(job, 7)
    [ctx] = seen
    assert isinstance(ctx, Context)
    assert ctx.input == 7


class Order:
    """An input type, made available to callbacks compiled in their own namespace."""


def test_string_context_marker_without_import():
    """The string "Context" is recognised where Context is not defined; other hints use the module's globals."""
    namespace: dict[str, object] = {"Order": Order}
    exec(  # noqa: S102
        "seen = []\ndef job(c: 'Context', x: 'Order') -> None:\n    seen.append((c, x))\n",
        namespace,
    )
    order = Order()
    run_one(namespace["job"], order)  # type: ignore[arg-type]
    [(ctx, value)] = namespace["seen"]  # type: ignore[misc]
    assert isinstance(ctx, Context)
    assert value is order

    coordinator = Coordinator()
    coordinator.add_step(Step("s", namespace["job"]))  # type: ignore[arg-type]
    result = coordinator.run("not an order")
    assert isinstance(result.fatal, UnassignableInput)
    assert "Order" in result.fatal.expected
    assert len(namespace["seen"]) == 1  # type: ignore[arg-type]


def test_forward_reference_context_annotation():
    """A parameter annotated with a forward reference to Context receives the Context."""
    seen = []

    def job(c: typing.ForwardRef("Context"), x: int) -> None:  # type: ignore[valid-type]
        seen.append((c, x))

    run_one(job, 3)
    [(ctx, value)] = seen
    assert isinstance(ctx, Context)
    assert value == 3


def test_generic_context_annotation():
    """A parameter annotated Context[int] receives the Context, and the next one the input."""
    seen = []

    def job(c: Context[int], x: int) -> None:
        seen.append((c, x))

    run_one(job, 5)
    [(ctx, value)] = seen
    assert isinstance(ctx, Context)
    assert value == 5


def test_future_annotations_module():
    """Callbacks of a module with postponed annotations get the context and the input."""
    record = future.Record(4)
    coordinator = Coordinator()
    coordinator.add_step(
        Step("Load", future.job_with_context_and_record, precheck=future.precheck_with_generic_context)
    )
    coordinator.add_step(Step("echo", future.job_with_input_only))
    result = coordinator.run(record)
    assert result.fatal is None
    assert result.data_bag.get_precheck_data("load") == 4
    assert result.data_bag.get_job_data("load") == "Load:4"
    assert result.data_bag.get_job_data("echo") is record


def test_future_annotations_are_resolved_for_checks():
    """A postponed hint naming a type of its module is resolved, so the input is checked against it."""
    coordinator = Coordinator()
    coordinator.add_step(Step("echo", future.job_with_input_only))
    result = coordinator.run({"id": 4})
    assert isinstance(result.fatal, UnassignableInput)
    assert "Record" in result.fatal.expected
    assert not result.data_bag.has_job_data("echo")


def test_future_annotations_none_return():
    """A postponed `-> None` return annotation still means the callback has no output."""
    result = run_one(future.job_without_output, future.Record(1))
    assert not result.data_bag.has_job_data("s")


def test_input_only():
    """A single unannotated parameter that is not named ctx/context receives the input."""
    seen = []

    def job(x):
        seen.append(x)

    value = object()
    run_one(job, value)
    assert seen == [value]


def test_context_then_input():
    """`(ctx, x)` receives the Context and then the input."""
    seen = []

    def job(ctx, x):
        seen.append((ctx, x))

    run_one(job, "in")
    [(ctx, value)] = seen
    assert isinstance(ctx, Context)
    assert value == "in"


def test_annotation_wins_over_name():
    """`ctx: int` is an input parameter: it receives the input, checked against int."""
    seen = []

    def job(ctx: int) -> None:
        seen.append(ctx)

    run_one(job, 12)
    assert seen == [12]

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job))
    result = coordinator.run("not an int")
    assert isinstance(result.fatal, UnassignableInput)
    assert seen == [12]


def test_single_parameter_with_default_is_the_input():
    """A single non-context parameter with a default receives the input, not its default."""
    seen = []

    def job(x=5):
        seen.append(x)

    run_one(job, 9)
    run_one(job, None)
    assert seen == [9, None]


def test_context_and_input_with_default():
    """`(ctx, x=default)` receives the input as x."""
    seen = []

    def job(ctx: Context, x: int = 0) -> None:
        seen.append((ctx.step, x))

    run_one(job, 3)
    assert seen == [("s", 3)]


def test_extra_parameters_with_defaults_are_not_passed():
    """Parameters after the input keep their defaults."""
    seen = []

    def job(ctx, x, y=3, z="z"):
        seen.append((isinstance(ctx, Context), x, y, z))

    def precheck(x, y=4):
        seen.append((x, y))

    run_one(job, "in", precheck=precheck)
    assert seen == [("in", 4), (True, "in", 3, "z")]


def test_keyword_only_with_default():
    """Keyword-only parameters with defaults are allowed, and keep their defaults."""
    seen = []

    def job(x, *, flag=True, label="l"):
        seen.append((x, flag, label))

    run_one(job, 1)
    assert seen == [(1, True, "l")]


def test_lambdas():
    """Lambdas are callbacks like any other: `lambda ctx: ...` gets the context, `lambda x: ...` the input."""
    result = run_one(lambda x: x * 2, 21, precheck=lambda ctx: ctx.step)
    assert result.data_bag.get_job_data("s") == 42
    assert result.data_bag.get_precheck_data("s") == "s"


def test_functools_partial():
    """A functools.partial is called with what its remaining parameters take."""
    seen = []

    def job(prefix: str, ctx: Context, x: int) -> str:
        seen.append(ctx)
        return f"{prefix}{x}"

    def precheck(prefix, x):
        return prefix + str(x)

    result = run_one(functools.partial(job, "#"), 4, precheck=functools.partial(precheck, "p"))
    assert result.data_bag.get_job_data("s") == "#4"
    assert result.data_bag.get_precheck_data("s") == "p4"
    assert isinstance(seen[0], Context)


def test_functools_partial_is_type_checked():
    """The input hint of a partial's remaining parameter is checked."""

    def job(prefix: str, x: int) -> str:
        return f"{prefix}{x}"

    coordinator = Coordinator()
    coordinator.add_step(Step("s", functools.partial(job, "#")))
    result = coordinator.run("four")
    assert isinstance(result.fatal, UnassignableInput)


class Service:
    """Holds callbacks as methods."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def job(self, ctx: Context, x: int) -> int:
        assert isinstance(ctx, Context)
        return x * self.factor

    def precheck(self, x):
        return x + self.factor

    async def ajob(self, x: int) -> int:
        return x - self.factor


def test_bound_methods():
    """Bound methods are called without self: plain and async ones."""
    service = Service(10)
    result = run_one(service.job, 2, precheck=service.precheck)
    assert result.data_bag.get_job_data("s") == 20
    assert result.data_bag.get_precheck_data("s") == 12
    assert run_one(service.ajob, 2).data_bag.get_job_data("s") == -8


class Multiply:
    """A callable class instance taking the context and the input."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, ctx: Context, x: int) -> int:
        return x * self.factor + len(ctx.step)


class AsyncCheck:
    """A callable class instance with an async `__call__` taking the input."""

    async def __call__(self, x: int) -> str:
        return f"checked {x}"


def test_callable_instances():
    """Instances of classes with `__call__` (plain or async) are callbacks."""
    result = run_one(Multiply(3), 2, precheck=AsyncCheck())
    assert result.data_bag.get_job_data("s") == 7
    assert result.data_bag.get_precheck_data("s") == "checked 2"


def test_callable_instance_is_type_checked():
    """The input annotation of `__call__` is checked."""
    coordinator = Coordinator()
    coordinator.add_step(Step("s", Multiply(3)))
    result = coordinator.run("two")
    assert isinstance(result.fatal, UnassignableInput)


def test_async_callbacks():
    """`async def` callbacks are awaited by `run`, and mix with plain ones."""
    seen = []

    async def precheck(ctx: Context) -> str:
        seen.append(("precheck", ctx.step))
        return "p"

    async def job(ctx, x):
        seen.append(("job", x))
        return x + 1

    def plain(x: int) -> int:
        seen.append(("plain", x))
        return x * 2

    coordinator = Coordinator()
    coordinator.add_step(Step("a", job, precheck))
    coordinator.add_step(Step("b", plain))
    coordinator.add_step(Step("c", functools.partial(job, None)))
    result = coordinator.run(1)
    assert result.fatal is None
    assert seen == [("precheck", "a"), ("job", 1), ("plain", 1), ("job", 1)]
    assert result.data_bag.get_precheck_data("a") == "p"
    assert result.data_bag.get_job_data("a") == 2
    assert result.data_bag.get_job_data("b") == 2
    assert result.data_bag.get_job_data("c") == 2


def test_callbacks_are_inspected_once():
    """Changing a callback's annotations or signature after `add_step` does not change how it is called."""

    def job(x: int) -> int:
        return x * 2

    coordinator = Coordinator()
    coordinator.add_step(Step("s", job))
    job.__annotations__ = {"x": str, "return": str}
    job.__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    result = coordinator.run(4)
    assert result.fatal is None
    assert result.data_bag.get_job_data("s") == 8


# -- outputs --------------------------------------------------------------------


def test_none_return_annotation_stores_nothing():
    """A callback annotated `-> None` has no output: what it returns is ignored."""

    def job(x) -> None:
        return x

    result = run_one(job, 5)
    assert not result.data_bag.has_job_data("s")


def test_unannotated_return_stores_none():
    """An unannotated callback's return value is stored even when it is None."""

    def job(x):
        del x

    result = run_one(job, 5)
    assert result.data_bag.has_job_data("s")
    assert result.data_bag.get_job_data("s", "missing") is None


# -- coordinator ---------------------------------------------------------------


def test_add_step_returns_the_step():
    """`add_step` returns the very step it was given."""
    step = Step("s", ok_job)
    assert Coordinator().add_step(step) is step


def test_steps_tuple_in_execution_order():
    """`steps` is a tuple of the added steps in the order they run."""
    order = []
    coordinator = Coordinator()
    names = ["third", "first", "second"]
    added = [coordinator.add_step(Step(name, functools.partial(order.append, name))) for name in names]
    assert isinstance(coordinator.steps, tuple)
    assert coordinator.steps == tuple(added)
    result = coordinator.run()
    assert result.fatal is None
    assert order == names
    assert [call.step for call in result.trace] == names


def test_decorator_registers_the_job_and_returns_it():
    """`@coordinator.step(name, precheck=fn)` adds a step with the function as job, and returns it unchanged."""
    coordinator = Coordinator()

    def check(x: int) -> bool:
        return x > 0

    def job(ctx: Context, x: int) -> str:
        return f"{ctx.step}={x}"

    decorated = coordinator.step("Compute", precheck=check)(job)
    assert decorated is job
    [step] = coordinator.steps
    assert step.name == "Compute"
    assert step.job is job
    assert step.precheck is check
    result = coordinator.run(3)
    assert result.fatal is None
    assert result.data_bag.get_precheck_data("compute") is True
    assert result.data_bag.get_job_data("compute") == "Compute=3"


def test_decorator_syntax():
    """The decorator works with `@` syntax, and the decorated name is still the plain function."""
    coordinator = Coordinator()

    @coordinator.step("double")
    def double(x: int) -> int:
        return x * 2

    assert double(4) == 8
    assert coordinator.steps[0].job is double
    assert coordinator.steps[0].precheck is None
    assert coordinator.run(5).data_bag.get_job_data("double") == 10


def test_a_type_annotation_checks_for_classes():
    """An input annotated `type` accepts classes and refuses instances (a metaclass-bound check)."""
    from choreograph import Coordinator, Step, UnassignableInput

    def job(kind: type) -> str:
        return kind.__name__

    coordinator = Coordinator([Step("name", job)])
    assert coordinator.run(int).data_bag.get_job_data("name") == "int"
    assert isinstance(coordinator.run(3).fatal, UnassignableInput)


# -- hardening: definitions refused at add_step, and careless forms ------------


def refused_exactly(step: Step, callback: str, problem: str, coordinator: Coordinator | None = None) -> None:
    """Add *step*, which must be refused with exactly these fields, the message built from them."""
    error = add_bad(step, coordinator)
    check_error(error, step.name, callback)
    assert error.problem == problem
    assert str(error) == f"step {step.name!r}, {callback}: {problem}"


def test_a_retry_class_instead_of_an_instance_is_refused():
    """`retry=Retry` (the class) is refused at add_step, saying to write `Retry()`: it used to fail inside `run`."""
    refused_exactly(
        Step("s", ok_job, retry=Retry),  # type: ignore[arg-type]
        "step",
        "retry must be a retry policy, not the class Retry: write retry=Retry()",
    )


def test_a_tenacity_class_instead_of_an_instance_is_refused():
    """A tenacity `Retrying` class is refused the same way."""
    tenacity = pytest.importorskip("tenacity")
    refused_exactly(
        Step("s", ok_job, retry=tenacity.Retrying),
        "step",
        "retry must be a retry policy, not the class Retrying: write retry=Retrying()",
    )


def _generator(x):
    yield x


async def _async_generator(x):
    yield x


class _GeneratorCall:
    def __call__(self, x):
        yield x


_GENERATOR = (
    "is a generator function (it yields): calling it only makes a generator, without running its body;"
    " return the values instead (a list, say)"
)
_ASYNC_GENERATOR = (
    "is an async generator function (it yields): calling it only makes an async generator, without running its body;"
    " return the values instead (a list, say)"
)


@pytest.mark.parametrize(
    ("step", "callback", "problem"),
    [
        (Step("s", _generator), "job", _GENERATOR),
        (Step("s", _async_generator), "job", _ASYNC_GENERATOR),
        (Step("s", functools.partial(_generator)), "job", _GENERATOR),
        (Step("s", _GeneratorCall()), "job", _GENERATOR),
        (Step("s", ok_job, _generator), "precheck", _GENERATOR),
        (Step("s", ok_job, compensate=_async_generator), "compensate", _ASYNC_GENERATOR),
    ],
    ids=["generator", "async-generator", "partial", "callable-instance", "precheck", "compensate"],
)
def test_generator_callbacks_are_refused(step, callback, problem):
    """A (async) generator function would "succeed" without running its body: refused, in every role and wrapping."""
    refused_exactly(step, callback, problem)


@pytest.mark.parametrize("timeout", [-1, -0.5, math.nan, "1", True])
def test_retry_timeout_must_be_a_number_of_seconds(timeout):
    """`Retry(timeout=)` refuses negative numbers, NaN and non-numbers with a ValueError naming the value."""
    with pytest.raises(ValueError, match=r"^Retry\(timeout=\.\.\.\) must be None or a number of seconds >= 0") as info:
        Retry(timeout=timeout)
    assert str(info.value).endswith(f"got {timeout!r}")


def test_retry_timeout_infinity_means_no_limit():
    """`Retry(timeout=math.inf)` is accepted, and never gives up for time, as `None`; `0` gives up at once."""
    error = OSError("down")
    assert Retry(attempts=5, jitter=0, timeout=math.inf).delay(error, 1, 1e12) == pytest.approx(0.1)
    assert Retry(attempts=5, jitter=0, timeout=None).delay(error, 1, 1e12) == pytest.approx(0.1)
    assert Retry(attempts=5, timeout=0).delay(error, 1, 0.0) is None


def test_retry_prechecks_must_be_a_bool():
    """`Retry(prechecks="yes")` is a TypeError: a truthy string is not a decision."""
    with pytest.raises(TypeError, match=r"^Retry\(prechecks=\.\.\.\) must be a bool, got 'yes'$"):
        Retry(prechecks="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("flag", "kind"), [("yes", "str"), (1, "int"), (None, "None")])
def test_compensate_failed_must_be_a_bool(flag, kind):
    """`compensate_failed="yes"` (or 1, None) is refused at add_step."""
    refused_exactly(
        Step("s", ok_job, compensate=ok_job, compensate_failed=flag),
        "step",
        f"compensate_failed must be a bool, got {kind}",
    )


class Receipt:
    """A class used as a job: its `__init__` says `-> None`, yet the instance is the output."""

    def __init__(self, rec: int) -> None:
        self.rec = rec


@dataclass(frozen=True)
class Parcel:
    """A dataclass used as a job, taking the input."""

    weight: int


@dataclass(frozen=True)
class Box(typing.Generic[T]):
    """A generic class used, parametrized, as a job."""

    item: T


def test_a_class_used_as_job_stores_its_instance():
    """A class as job: the output is the instance (not nothing, as its `__init__`'s `-> None` used to say)."""
    coordinator = Coordinator([Step("receipt", Receipt), Step("parcel", Parcel), Step("box", Box[int])])
    result = coordinator.run(7)
    assert result.ok, result.fatal
    receipt = result.data_bag.get_job_data("receipt")
    assert isinstance(receipt, Receipt)
    assert receipt.rec == 7
    assert result.data_bag.get_job_data("parcel") == Parcel(7)
    assert result.data_bag.get_job_data("box") == Box(7)


def test_a_class_used_as_job_or_precheck_through_a_partial_stores_its_instance():
    """A partial of a class, and a class as precheck, give instances too."""

    @dataclass(frozen=True)
    class Label:
        prefix: str
        number: int

    result = run_one(functools.partial(Label, "L"), 3, precheck=Parcel)
    assert result.data_bag.get_job_data("s") == Label("L", 3)
    assert result.data_bag.get_precheck_data("s") == Parcel(3)


def test_a_class_used_as_job_has_its_input_checked_against_init():
    """The input is checked against `__init__`'s parameter, as for any callback."""
    result = Coordinator([Step("receipt", Receipt)]).run("seven")
    assert isinstance(result.fatal, UnassignableInput)
    assert (result.fatal.expected, result.fatal.actual) == ("int", "str")


def test_a_class_whose_new_returns_something_else_fails_its_output_check():
    """The output type of a class used as job is the class: a `__new__` returning another type fails the check."""

    class Odd:
        def __new__(cls, x: int) -> typing.Self:
            return x  # type: ignore[return-value]

    result = Coordinator([Step("odd", Odd)]).run(1)
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, UnassignableOutput)
    assert result.fatal.error.actual == "int"
    assert result.fatal.error.expected.endswith("Odd")


def _raises(x: int) -> typing.NoReturn:
    raise LookupError(x)


def _never(x: int) -> typing.Never:
    raise LookupError(x)


async def _async_raises(x: int) -> typing.NoReturn:
    raise LookupError(x)


@pytest.mark.parametrize("job", [_raises, _never, _async_raises], ids=["NoReturn", "Never", "async-NoReturn"])
def test_a_job_that_never_returns_is_accepted(job):
    """`-> NoReturn` / `-> Never` jobs are accepted (they used to be refused); their error fails the run as usual."""
    result = Coordinator([Step("s", job)]).run(4)
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, LookupError)
    assert not result.data_bag.has_job_data("s")


def test_a_never_returning_precheck_that_raises_skips_the_job():
    """A `-> NoReturn` precheck that raises `Skip` skips its job, as any precheck."""

    def skip_all(x: int) -> typing.NoReturn:
        raise Skip("never run this")

    result = Coordinator([Step("s", ok_job, skip_all)]).run(1)
    assert result.ok
    assert [(call.phase, call.outcome) for call in result.trace] == [("precheck", "failed"), ("job", "skipped")]


@pytest.mark.parametrize(
    ("annotation", "expected"), [("NoReturn", "NoReturn"), ("Never", "Never"), ("Result[Never, str]", "Never")]
)
def test_a_never_returning_callback_that_returns_fails_its_output_check(annotation, expected):
    """A callback annotated never to return that returns anyway fails with `UnassignableOutput` (also as strings)."""
    namespace = {"Success": Success, "Result": Result, "Never": typing.Never, "NoReturn": typing.NoReturn}
    exec(f"def job(x: int) -> {annotation!r}:\n    return Success(x) if 'Result' in {annotation!r} else x\n", namespace)  # noqa: S102
    result = Coordinator([Step("s", namespace["job"])]).run(4)  # type: ignore[arg-type]
    assert isinstance(result.fatal, JobFailed)
    error = result.fatal.error
    assert isinstance(error, UnassignableOutput)
    assert (error.step, error.callback, error.expected, error.actual) == ("s", "job", expected, "int")
    assert not result.data_bag.has_job_data("s")


# Context[X] against a coordinator's declared input type.


class Base:
    """An input type."""


class Derived(Base):
    """A narrower input type."""


class Other:
    """An unrelated type."""


def wants_other(ctx: Context[Other]) -> None:
    del ctx


def wants_base(ctx: Context[Base]) -> None:
    del ctx


def wants_derived(ctx: Context[Derived]) -> None:
    del ctx


def ok_context(ctx: Context) -> None:
    del ctx


def _context_problem(wanted: str, given: str) -> str:
    return f"its context parameter 'ctx' is annotated Context[{wanted}], but the coordinator's input is {given}"


_OTHER, _BASE, _DERIVED = (f"{__name__}.{name}" for name in ("Other", "Base", "Derived"))


def test_a_context_of_another_type_is_refused_in_the_constructor():
    """`Coordinator[Derived]([a step taking Context[Other]])` is refused while constructing, before `__init__` ends."""
    with pytest.raises(StepDefinitionError) as info:
        Coordinator[Derived]([Step("s", wants_other)])
    assert (info.value.step, info.value.callback) == ("s", "job")
    assert info.value.problem == _context_problem(_OTHER, _DERIVED)


@pytest.mark.parametrize("role", ["precheck", "job", "compensate"])
def test_a_context_of_another_type_is_refused_by_add_step(role):
    """`add_step` refuses a `Context[Other]` precheck, job or compensation on a `Coordinator[Derived]`."""
    callbacks = {"job": ok_job} | {role: wants_other}
    step = Step("s", callbacks["job"], callbacks.get("precheck"), compensate=callbacks.get("compensate"))
    refused_exactly(step, role, _context_problem(_OTHER, _DERIVED), Coordinator[Derived]())


def test_a_context_of_another_type_is_refused_by_the_decorator():
    """The decorator form refuses it too."""
    coordinator = Coordinator[Derived]()
    with pytest.raises(StepDefinitionError) as info:
        coordinator.step("s")(wants_other)
    assert info.value.problem == _context_problem(_OTHER, _DERIVED)


def test_a_context_of_a_narrower_type_is_refused():
    """`Context[Derived]` on a `Coordinator[Base]`: a Base input need not be a Derived."""
    refused_exactly(Step("s", wants_derived), "job", _context_problem(_DERIVED, _BASE), Coordinator[Base]())


def test_a_string_context_annotation_is_checked():
    """`ctx: "Context[Other]"` is resolved, then checked like the real thing."""
    namespace = {"Other": Other, "Context": Context}
    exec("def job(ctx: 'Context[Other]') -> None: ...", namespace)  # noqa: S102
    refused_exactly(Step("s", namespace["job"]), "job", _context_problem(_OTHER, _BASE), Coordinator[Base]())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("declared", "callback"),
    [
        (Derived, wants_base),  # a Derived is a Base
        (Base, wants_base),
        (typing.Any, wants_other),  # Any, object and no argument: the input type is not known
        (object, wants_other),
        (int, lambda ctx: None),  # an unannotated context
        (int, ok_context),  # a bare `Context`
    ],
)
def test_a_context_that_accepts_the_input_or_an_unknown_input_type_is_fine(declared, callback):
    """Accepted: a wider `Context[X]`, and anything when the coordinator's input type is Any, object or absent."""
    assert len(Coordinator[declared]([Step("s", callback)])) == 1
    assert len(Coordinator([Step("s", callback)])) == 1


@typing.runtime_checkable
class Named(typing.Protocol):
    """A protocol with a data member: `issubclass` refuses it."""

    name: str


class Movie(typing.TypedDict):
    """A TypedDict: `issubclass` refuses it."""

    name: str


def _context_of(hint: object) -> Callable[..., None]:
    def job(ctx: Context[hint]) -> None:  # type: ignore[valid-type]
        del ctx

    return job


@pytest.mark.parametrize(
    ("declared", "wanted", "ok"),
    [
        (Derived | None, Base | None, True),
        (Derived, Base | None, True),
        (Derived | None, Base, False),  # the input may be None
        (Derived | Other, Base, False),
        (int, float, True),  # the numeric tower, as type checkers read `float`
        (list[int], list[str], True),  # generics compare by their origins
        (list[int], typing.Sequence[int], True),
        (dict[str, int], list[int], False),
        (typing.Literal["a"], str, True),  # not comparable: accepted
        (int, typing.Literal[1], True),
        (typing.Annotated[Derived, "meta"], Base, True),
        (Derived, Named, True),  # issubclass can't tell (a protocol with data members): accepted
        (Movie, Named, True),
        (Base, typing.TypeVar("T"), True),
    ],
)
def test_how_a_context_type_is_compared_with_the_input_type(declared, wanted, ok):
    """Unions member by member, classes by issubclass, generics by origin; what can't be compared is accepted."""
    step = Step("s", _context_of(wanted))
    if ok:
        Coordinator[declared]([step])
    else:
        with pytest.raises(StepDefinitionError, match="its context parameter 'ctx' is annotated Context"):
            Coordinator[declared]([step])


class DerivedFlow(Coordinator[Derived]):
    """A coordinator subclass that fixes its input type."""


class AnyFlow(Coordinator[InputT], typing.Generic[InputT]):  # type: ignore[misc]
    """A generic coordinator subclass, with an extra base."""


class ListFlow(Coordinator[list[InputT]]):  # type: ignore[misc]
    """A generic subclass whose input is a list of its argument."""


class PlainFlow(DerivedFlow):
    """A subclass of a subclass."""


class Audited:
    """A mixin."""


class AuditedFlow(Audited, Coordinator[Derived]):
    """A coordinator subclass with a mixin first."""


def test_subclasses_declare_their_input_type_through_their_bases():
    """`class F(Coordinator[Derived])`, its subclasses and `G[Derived]()` check contexts; a generic `G()` does not."""
    for make in (DerivedFlow, PlainFlow, AuditedFlow, AnyFlow[Derived]):
        with pytest.raises(StepDefinitionError) as info:
            make([Step("s", wants_other)])
        assert info.value.problem == _context_problem(_OTHER, _DERIVED)
    assert len(AnyFlow([Step("s", wants_other)])) == 1
    with pytest.raises(StepDefinitionError) as info:
        ListFlow[int]([Step("s", _context_of(dict[str, int]))])
    assert info.value.problem == _context_problem("dict[str, int]", "list[int]")
    assert len(ListFlow[int]([Step("s", _context_of(list[int]))])) == 1


def test_a_coordinator_made_while_another_is_constructed_has_its_own_input_type():
    """The type argument goes to the coordinator being made, not to one made while its steps are read."""
    inner: list[Coordinator] = []

    def steps():
        inner.append(Coordinator([Step("inner", wants_other)]))  # no type argument: nothing to check
        yield Step("outer", wants_base)

    outer = Coordinator[Derived](steps())
    assert len(outer) == 1
    assert len(inner[0]) == 1
    assert Coordinator().add_step(Step("s", wants_other))  # and nothing lingers after


def test_the_alias_of_a_coordinator_behaves_as_typing_s():
    """`Coordinator[Rec]` keeps typing's behaviour: origin, args, equality, `__orig_class__`, pickling, substitution."""
    alias = Coordinator[Derived]
    assert typing.get_origin(alias) is Coordinator
    assert typing.get_args(alias) == (Derived,)
    assert alias == Coordinator[Derived]
    assert pickle.loads(pickle.dumps(alias)) == alias  # noqa: S301 - our own bytes
    assert alias().__orig_class__ == alias  # type: ignore[attr-defined]
    assert typing.get_args(AnyFlow[InputT][Derived]) == (Derived,)  # type: ignore[misc]


# Careless forms: each works, or is refused with a clear message.


class Tools:
    """Callbacks as methods of every kind."""

    @staticmethod
    def triple(x: int) -> int:
        return x * 3

    @staticmethod
    async def quadruple(x: int) -> int:
        return x * 4

    @classmethod
    def make(cls, x: int) -> int:
        return x

    def method(self, x: int) -> int:
        return x


def test_staticmethod_objects_are_callbacks():
    """A staticmethod object (`Step("s", f)` inside the class body) works, and an async one is awaited."""
    result = Coordinator([Step("a", vars(Tools)["triple"]), Step("b", vars(Tools)["quadruple"])]).run(2)
    assert result.ok, result.fatal
    assert result.data_bag.job_data == {"a": 6, "b": 8}


def test_a_classmethod_object_is_refused_with_a_hint():
    """A classmethod object is not callable: the message says to pass `Class.method`."""
    refused_exactly(
        Step("s", vars(Tools)["make"]),
        "job",
        "must be callable, got classmethod (a classmethod object: pass Class.method)",
    )


def test_a_method_taken_from_its_class_is_refused_with_a_hint():
    """`Tools.method` (not bound) takes `self` and the input: the message suggests a bound method."""
    refused_exactly(
        Step("s", Tools.method),
        "job",
        "takes more than one input parameter ('self', 'x'); extra parameters need defaults"
        " (a method taken from its class? 'self' is not passed: use a bound method)",
    )


def test_a_called_callback_is_refused_with_a_hint():
    """Passing what a call returned (a coroutine, a generator) says to pass the function itself."""
    coroutine = Tools.quadruple(1)
    try:
        refused_exactly(
            Step("s", coroutine),  # type: ignore[arg-type]
            "job",
            "must be callable, got coroutine (the result of a call: pass the function itself)",
        )
    finally:
        coroutine.close()


def test_a_lambda_with_star_args_is_refused():
    """`lambda *args: ...` is refused, saying what a callback is passed."""
    refused_exactly(
        Step("s", lambda *args: args),
        "job",
        "*args is not allowed (a callback is passed the context and the input, those it names)",
    )


def test_a_callable_class_used_as_job_makes_an_instance():
    """A class with `__call__` passed itself (not an instance) is a class used as a job: the instance is stored."""

    class Counter:
        def __call__(self, x: int) -> int:
            return x

    result = Coordinator([Step("s", Counter)]).run()
    assert isinstance(result.data_bag.get_job_data("s"), Counter)


def test_a_step_named_none_is_refused():
    """`Step(name=None)` is refused, naming the type."""
    error = add_bad(Step(None, ok_job))  # type: ignore[arg-type]
    assert (error.step, error.callback, error.problem) == ("None", "step", "the name must be a str, got None")


def test_a_class_of_a_module_with_postponed_annotations_is_resolved_in_its_module():
    """A class of a postponed-annotations module, used as a job, takes the context and an input checked as it says."""
    module = ModuleType("choreograph_tests_postponed_class")
    sys.modules[module.__name__] = module
    try:
        source = (
            "from __future__ import annotations\n"
            "from dataclasses import dataclass\n"
            "class Amount:\n"
            "    def __init__(self, cents: int) -> None:\n"
            "        self.cents = cents\n"
            "class Entry:\n"
            "    def __init__(self, ctx: Context, amount: Amount) -> None:\n"
            "        self.step, self.cents = ctx.step, amount.cents\n"
        )
        exec(source, module.__dict__)  # noqa: S102 - "Context" is resolved as the marker, "Amount" from the module
        coordinator = Coordinator([Step("entry", module.Entry)])
        entry = coordinator.run(module.Amount(5)).data_bag.get_job_data("entry")
        assert (type(entry), entry.step, entry.cents) == (module.Entry, "entry", 5)
        assert isinstance(coordinator.run(5).fatal, UnassignableInput)
    finally:
        del sys.modules[module.__name__]
