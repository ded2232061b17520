"""Exceptions: their hierarchy, and pickle round trips of them and of a RunResult."""

import pickle

import pytest

import choreograph
from choreograph import (
    CallbackFailure,
    CallbackTimeout,
    ChoreographError,
    CodecError,
    Context,
    Coordinator,
    ExecutionCanceled,
    InputError,
    JobFailed,
    KeyBusy,
    NoDataBagInContext,
    PoisonedRun,
    PrecheckFailed,
    RunCancelled,
    RunResult,
    Skip,
    SpecError,
    Step,
    StepDefinitionError,
    StepError,
    StoredError,
    StoreError,
    UnassignableInput,
    UnassignableOutput,
    UnstorableOutput,
)


class OutOfStock(ExecutionCanceled):
    """A user's ExecutionCanceled carrying its own data."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"out of stock: {sku}")
        self.sku = sku


class PlainCancel(ExecutionCanceled):
    """A user's ExecutionCanceled without its own `__init__`."""


def roundtrip(error):
    """Pickle and unpickle *error*; the copy must be a new object of the same type with the same message."""
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert copy is not error
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    return copy


def same_error(copy, original):
    """Tell whether *copy* looks like *original*: same type and args."""
    return type(copy) is type(original) and copy.args == original.args


# -- pickling ------------------------------------------------------------------


def test_pickle_choreograph_error():
    """ChoreographError keeps its args."""
    copy = roundtrip(ChoreographError("base", 1))
    assert copy.args == ("base", 1)


def test_pickle_step_definition_error():
    """StepDefinitionError keeps step, callback and problem."""
    copy = roundtrip(StepDefinitionError("load", "precheck", "*args is not allowed"))
    assert (copy.step, copy.callback, copy.problem) == ("load", "precheck", "*args is not allowed")


@pytest.mark.parametrize("cls", [UnassignableInput, UnassignableOutput])
def test_pickle_unassignable(cls):
    """UnassignableInput and UnassignableOutput keep step, callback, expected and actual."""
    copy = roundtrip(cls("load", "job", "int", "str"))
    assert (copy.step, copy.callback, copy.expected, copy.actual) == ("load", "job", "int", "str")


def test_pickle_execution_canceled():
    """ExecutionCanceled keeps its reason."""
    copy = roundtrip(ExecutionCanceled("account closed"))
    assert copy.reason == "account closed"


def test_pickle_execution_canceled_subclass():
    """A user's ExecutionCanceled subclass keeps its own attributes and its reason."""
    copy = roundtrip(OutOfStock("SKU-1"))
    assert copy.sku == "SKU-1"
    assert copy.reason == "out of stock: SKU-1"
    plain = roundtrip(PlainCancel("why"))
    assert plain.reason == "why"


def test_pickle_skip_with_output():
    """Skip keeps its reason and output, and still has an output."""
    copy = roundtrip(Skip("cached", output={"rows": [1, 2]}))
    assert copy.reason == "cached"
    assert copy.output == {"rows": [1, 2]}
    assert copy.has_output is True


def test_pickle_skip_with_none_output():
    """Skip with `output=None` still has an output (None) after a round trip."""
    copy = roundtrip(Skip("nothing", output=None))
    assert copy.has_output is True
    assert copy.output is None


def test_pickle_skip_without_output():
    """Skip without an output still has none after a round trip."""
    original = Skip("not today")
    assert original.has_output is False
    copy = roundtrip(original)
    assert copy.reason == "not today"
    assert copy.has_output is False


def test_pickle_job_failed():
    """JobFailed keeps step and error, and restores `__cause__` from `.error`."""
    copy = roundtrip(JobFailed("save", ValueError("disk full")))
    assert copy.step == "save"
    assert same_error(copy.error, ValueError("disk full"))
    assert copy.__cause__ is copy.error


def test_pickle_run_cancelled():
    """RunCancelled keeps timeout and step."""
    copy = roundtrip(RunCancelled(1.5, "load"))
    assert (copy.timeout, copy.step) == (1.5, "load")


def test_pickle_no_data_bag_in_context():
    """NoDataBagInContext survives a round trip."""
    copy = roundtrip(NoDataBagInContext())
    assert isinstance(copy, LookupError)


def test_pickle_callback_failure():
    """CallbackFailure keeps its value."""
    copy = roundtrip(CallbackFailure({"code": 3, "why": "no funds"}))
    assert copy.value == {"code": 3, "why": "no funds"}


@pytest.mark.parametrize("phase", ["precheck", "job"])
def test_pickle_step_error(phase):
    """StepError keeps step, phase and error, and restores `__cause__` from `.error`."""
    copy = roundtrip(StepError("load", phase, KeyError("id")))
    assert (copy.step, copy.phase) == ("load", phase)
    assert same_error(copy.error, KeyError("id"))
    assert copy.__cause__ is copy.error


def test_pickle_step_error_wrapping_choreograph_errors():
    """StepError and JobFailed wrapping choreograph errors keep the inner errors' attributes."""
    step_error = roundtrip(StepError("pay", "job", CallbackFailure("declined")))
    assert isinstance(step_error.error, CallbackFailure)
    assert step_error.error.value == "declined"
    assert step_error.__cause__ is step_error.error
    job_failed = roundtrip(JobFailed("pay", UnassignableOutput("pay", "job", "int", "str")))
    assert (job_failed.error.expected, job_failed.error.actual) == ("int", "str")
    assert job_failed.__cause__ is job_failed.error


def test_pickle_callback_timeout():
    """CallbackTimeout keeps step, phase and timeout."""
    copy = roundtrip(CallbackTimeout("load", "job", 0.25))
    assert (copy.step, copy.phase, copy.timeout) == ("load", "job", 0.25)


def failed_run() -> RunResult:
    """Run: ok step with outputs, failed precheck, skipped step, failed job."""

    def load_check(ctx: Context) -> str:
        return f"checked {ctx.input['id']}"

    def bad_check() -> None:
        raise ValueError("precheck broke")

    def skip_check() -> None:
        raise Skip("already done", output={"cached": True})

    def boom(ctx: Context) -> None:
        raise RuntimeError(f"boom {ctx.input['id']}")

    coordinator = Coordinator()
    coordinator.add_step(Step("Load", lambda ctx: ctx.input["id"] * 10, precheck=load_check))
    coordinator.add_step(Step("Check", lambda: "never", precheck=bad_check))
    coordinator.add_step(Step("Cache", lambda: "never", precheck=skip_check))
    coordinator.add_step(Step("Boom", boom))
    coordinator.add_step(Step("Never", lambda: "never"))
    return coordinator.run({"id": 4})


def test_pickle_run_result():
    """A RunResult keeps input, errors, fatal (with `__cause__`), ok, DataBag contents and trace."""
    original = failed_run()
    assert [(c.step, c.phase, c.outcome) for c in original.trace] == [
        ("Load", "precheck", "ok"),
        ("Load", "job", "ok"),
        ("Check", "precheck", "failed"),
        ("Check", "job", "skipped"),
        ("Cache", "precheck", "failed"),
        ("Cache", "job", "skipped"),
        ("Boom", "job", "failed"),
    ]
    copy = pickle.loads(pickle.dumps(original))  # noqa: S301 - our own data

    assert copy.input == {"id": 4}
    assert copy.ok is False
    assert [(e.step, e.phase, type(e.error), e.error.args) for e in copy.errors] == [
        ("Check", "precheck", ValueError, ("precheck broke",)),
        ("Cache", "precheck", Skip, ("already done",)),
        ("Boom", "job", RuntimeError, ("boom 4",)),
    ]
    assert all(isinstance(e, StepError) and e.__cause__ is e.error for e in copy.errors)
    assert copy.errors[1].error.output == {"cached": True}

    assert isinstance(copy.fatal, JobFailed)
    assert copy.fatal.step == "Boom"
    assert same_error(copy.fatal.error, RuntimeError("boom 4"))
    assert copy.fatal.__cause__ is copy.fatal.error

    bag = copy.data_bag
    assert bag == original.data_bag
    assert dict(bag.job_data) == {"Load": 40}
    assert dict(bag.precheck_data) == {"Load": "checked 4", "Cache": {"cached": True}}
    assert bag.get_job_data("load") == 40
    assert not bag.has_job_data("boom")

    assert [(c.step, c.phase, c.outcome, c.attempts, c.seconds) for c in copy.trace] == [
        (c.step, c.phase, c.outcome, c.attempts, c.seconds) for c in original.trace
    ]
    assert copy.run_id == original.run_id

    with pytest.raises(JobFailed) as excinfo:
        copy.raise_for_fatal()
    assert excinfo.value is copy.fatal
    bag.set_job_data("BOOM", "later")  # the unpickled bag is still a working, case-insensitive bag
    assert bag.get_job_data("boom") == "later"


def test_pickle_run_result_canceled():
    """A RunResult stopped by ExecutionCanceled keeps the fatal, the same object as the last error's `.error`."""

    def stop() -> None:
        raise OutOfStock("SKU-9")

    coordinator = Coordinator()
    coordinator.add_step(Step("Reserve", lambda: None, precheck=stop))
    copy = pickle.loads(pickle.dumps(coordinator.run("order")))  # noqa: S301 - our own data
    assert isinstance(copy.fatal, OutOfStock)
    assert copy.fatal.sku == "SKU-9"
    assert copy.errors[-1].error is copy.fatal
    assert [c.outcome for c in copy.trace] == ["canceled"]


# -- hierarchy -----------------------------------------------------------------

EXCEPTIONS = {
    ChoreographError: (),
    StepDefinitionError: (TypeError,),
    UnassignableInput: (TypeError,),
    UnassignableOutput: (TypeError,),
    ExecutionCanceled: (),
    Skip: (),
    JobFailed: (),
    RunCancelled: (TimeoutError,),
    NoDataBagInContext: (LookupError,),
    CallbackFailure: (),
    StepError: (),
    CallbackTimeout: (TimeoutError,),
    PrecheckFailed: (),
    InputError: (),
    SpecError: (ValueError,),
}


@pytest.mark.parametrize(("cls", "builtins"), EXCEPTIONS.items(), ids=lambda v: getattr(v, "__name__", ""))
def test_hierarchy(cls, builtins):
    """Each exception is a ChoreographError and exactly the builtin errors it stands for."""
    assert issubclass(cls, ChoreographError)
    assert issubclass(cls, Exception)
    for builtin in (TypeError, LookupError, TimeoutError, ValueError):
        assert issubclass(cls, builtin) is (builtin in builtins), builtin


def test_every_public_exception_is_a_choreograph_error():
    """Every exception class exported by the package subclasses ChoreographError (warnings are UserWarnings)."""
    exported = {
        obj
        for obj in (getattr(choreograph, name) for name in choreograph.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    assert set(EXCEPTIONS) <= exported
    errors = {cls for cls in exported if not issubclass(cls, Warning)}
    assert all(issubclass(cls, ChoreographError) for cls in errors)
    assert exported - errors == {choreograph.ListenerWarning}
    assert issubclass(choreograph.ListenerWarning, UserWarning)


@pytest.mark.parametrize(
    ("error", "fields"),
    [
        (
            StoreError("/data/runs.db", "corrupt"),
            {"path": "/data/runs.db", "problem": "corrupt"},
        ),
        (PoisonedRun("k-1", 4), {"key": "k-1", "interruptions": 4}),
        (KeyBusy("k-1", "host:12:ab"), {"key": "k-1", "owner": "host:12:ab"}),
        (
            UnstorableOutput("load", "job", "Socket", "not JSON"),
            {"step": "load", "phase": "job", "type_name": "Socket", "problem": "not JSON"},
        ),
        (CodecError("bad tag"), {"problem": "bad tag"}),
        (StoredError("app.Boom", "it broke"), {"type_name": "app.Boom", "message": "it broke"}),
        (PrecheckFailed("check", KeyError("amout")), {"step": "check"}),
        (InputError(7, TypeError("no")), {"position": 7}),
        (SpecError("steps[1].job", "no attribute 'x'"), {"where": "steps[1].job", "problem": "no attribute 'x'"}),
    ],
)
def test_durable_run_errors_survive_pickling_with_their_fields(error, fields):
    """The durable-run errors keep their attributes, message and class through a pickle round trip."""
    copy = roundtrip(error)
    assert {name: getattr(copy, name) for name in fields} == fields
    assert isinstance(copy, ChoreographError)
    assert (type(copy), str(copy)) == (type(error), str(error))
    if hasattr(error, "error"):  # wrapping errors restore their cause
        assert copy.__cause__ is copy.error
        assert (type(copy.error), copy.error.args) == (type(error.error), error.error.args)


def test_store_error_is_an_oserror_whose_args_are_its_fields():
    """StoreError is an OSError, but OSError's errno/strerror reading of its arguments is undone."""
    error = StoreError("/data/runs.db", "corrupt")
    assert isinstance(error, OSError)
    assert error.args == ("/data/runs.db", "corrupt")
    assert error.errno is None
