"""
What every exception shows besides its named fields: ``args``, ``repr``, defaults, notes, messages.

Each exception passes its raw fields to ``Exception.__init__``, so ``args`` (and
so ``repr``, ``copy.copy`` and a pickle round trip) holds exactly those fields.
Notes added to an error (``add_note``, as pytest and hypothesis do) travel with
it through pickling like its fields. Errors are built inside each test, so that
every test builds them with the code under test.
"""

import copy
import pickle
from collections.abc import Callable

import pytest

from choreograph import (
    CallbackFailure,
    CallbackTimeout,
    ChoreographError,
    ExecutionCanceled,
    JobFailed,
    KeyBusy,
    NoDataBagInContext,
    PoisonedRun,
    RunCancelled,
    Skip,
    StepDefinitionError,
    StepError,
    StoreError,
    UnassignableInput,
    UnassignableOutput,
    UnstorableOutput,
    get_data_bag,
)

CAUSE = KeyError("id")

#: (how to build the error, its expected args, its expected repr)
CASES: list[tuple[Callable[[], ChoreographError], tuple[object, ...], str]] = [
    (
        lambda: StepDefinitionError("load", "job", "must be callable"),
        ("load", "job", "must be callable"),
        "StepDefinitionError('load', 'job', 'must be callable')",
    ),
    (
        lambda: UnassignableInput("load", "precheck", "int", "str"),
        ("load", "precheck", "int", "str"),
        "UnassignableInput('load', 'precheck', 'int', 'str')",
    ),
    (
        lambda: UnassignableOutput("load", "job", "list[int]", "dict"),
        ("load", "job", "list[int]", "dict"),
        "UnassignableOutput('load', 'job', 'list[int]', 'dict')",
    ),
    (lambda: ExecutionCanceled("closed"), ("closed",), "ExecutionCanceled('closed')"),
    (lambda: Skip("not today"), ("not today",), "Skip('not today')"),
    (lambda: JobFailed("book", CAUSE), ("book", CAUSE), "JobFailed('book', KeyError('id'))"),
    (lambda: RunCancelled(1.5, "book"), (1.5, "book"), "RunCancelled(1.5, 'book')"),
    (lambda: CallbackFailure({"code": 7}), ({"code": 7},), "CallbackFailure({'code': 7})"),
    (lambda: StepError("book", "job", CAUSE), ("book", "job", CAUSE), "StepError('book', 'job', KeyError('id'))"),
    (
        lambda: CallbackTimeout("book", "compensate", 2.0),
        ("book", "compensate", 2.0),
        "CallbackTimeout('book', 'compensate', 2.0)",
    ),
    (
        lambda: StoreError("/data/runs.db", "corrupt"),
        ("/data/runs.db", "corrupt"),
        "StoreError('/data/runs.db', 'corrupt')",
    ),
    (lambda: PoisonedRun("k-1", 4), ("k-1", 4), "PoisonedRun('k-1', 4)"),
    (lambda: KeyBusy("k-1", "host:12:ab"), ("k-1", "host:12:ab"), "KeyBusy('k-1', 'host:12:ab')"),
    (
        lambda: UnstorableOutput("load", "precheck", "Socket", "not JSON"),
        ("load", "precheck", "Socket", "not JSON"),
        "UnstorableOutput('load', 'precheck', 'Socket', 'not JSON')",
    ),
]
IDS = [expected_repr.partition("(")[0] for _, _, expected_repr in CASES]


@pytest.mark.parametrize(("make", "args", "expected_repr"), CASES, ids=IDS)
def test_args_are_the_raw_fields_and_repr_shows_them(make, args, expected_repr):
    """``error.args`` is exactly the constructor's fields, in order, so ``repr`` shows how to rebuild the error."""
    error = make()
    assert error.args == args
    assert repr(error) == expected_repr


@pytest.mark.parametrize(("make", "args", "expected_repr"), CASES, ids=IDS)
def test_copies_and_pickles_keep_args_message_and_fields(make, args, expected_repr):
    """A shallow copy and a pickle round trip rebuild the error with the same args, message and attributes."""
    error = make()
    for twin in (copy.copy(error), pickle.loads(pickle.dumps(error))):  # noqa: S301 - our own data
        assert type(twin) is type(error)
        assert repr(twin.args) == repr(args)  # the wrapped error is a copy too: compared by repr
        assert str(twin) == str(error)
        assert repr(twin) == expected_repr
        assert {k: v for k, v in vars(twin).items() if k != "error"} == {
            k: v for k, v in vars(error).items() if k != "error"
        }


@pytest.mark.parametrize(
    "make",
    [
        lambda: JobFailed("book", ValueError("declined")),
        lambda: StepError("book", "job", ValueError("declined")),
        lambda: RunCancelled(0.5, "book"),
        lambda: CallbackTimeout("book", "job", 0.5),
        lambda: StoreError("/data/runs.db", "corrupt"),
    ],
    ids=["JobFailed", "StepError", "RunCancelled", "CallbackTimeout", "StoreError"],
)
def test_notes_survive_pickling(make):
    """Notes added with ``add_note`` come back from a pickle round trip, next to the error's own fields."""
    error = make()
    error.add_note("while importing invoice 42")
    twin = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert twin.__notes__ == ["while importing invoice 42"]
    assert repr(twin.args) == repr(error.args)
    assert str(twin) == str(error)


def test_a_wrapped_errors_cause_is_restored_with_its_notes():
    """A pickled `JobFailed` with notes still has its original error as ``.error`` and ``__cause__``."""
    error = JobFailed("book", ValueError("declined"))
    error.add_note("retry later")
    twin = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert isinstance(twin.error, ValueError)
    assert twin.__cause__ is twin.error
    assert twin.__notes__ == ["retry later"]


def test_execution_canceled_without_a_reason():
    """``ExecutionCanceled()`` has an empty reason and is shown by its class name."""
    error = ExecutionCanceled()
    assert error.reason == ""
    assert error.args == ("",)
    assert str(error) == "ExecutionCanceled"


def test_skip_without_an_output_says_so():
    """``Skip()`` has an empty reason, no output (shown as ``MISSING``), and reads as "skipped"."""
    skip = Skip()
    assert skip.reason == ""
    assert not skip.has_output
    assert repr(skip.output) == "MISSING"
    assert str(skip) == "skipped"


def test_get_data_bag_outside_a_run_explains_itself():
    """Outside a run, `get_data_bag` raises `NoDataBagInContext`, a `LookupError` whose message names the call."""
    with pytest.raises(NoDataBagInContext) as excinfo:
        get_data_bag()
    assert isinstance(excinfo.value, LookupError)
    assert str(excinfo.value) == "get_data_bag() was called outside a run"
