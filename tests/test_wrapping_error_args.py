"""
``args``, ``repr``, copies and pickles of the errors added with 0.2.0 that wrap another error.

Like every choreograph exception (see tests/test_error_args.py), `InputError`
and `PrecheckFailed` pass their raw fields to ``Exception.__init__``: ``args``
is exactly those fields, ``repr`` shows how to rebuild the error, and a copy or
a pickle round trip calls the constructor with them again. The errors are built
inside each test, so that every test builds them with the code under test.
"""

import copy
import pickle

import pytest

from choreograph import InputError, PrecheckFailed


def make_input_error() -> InputError:
    return InputError(3, KeyError("id"))


def make_precheck_failed() -> PrecheckFailed:
    return PrecheckFailed("check", ValueError("amount"))


CASES = [
    (make_input_error, (3, "KeyError('id')"), "InputError(3, KeyError('id'))", {"position": 3}),
    (
        make_precheck_failed,
        ("check", "ValueError('amount')"),
        "PrecheckFailed('check', ValueError('amount'))",
        {"step": "check"},
    ),
]
IDS = ["InputError", "PrecheckFailed"]


@pytest.mark.parametrize(("make", "args", "expected_repr", "fields"), CASES, ids=IDS)
def test_args_are_the_raw_fields_and_repr_shows_them(make, args, expected_repr, fields):
    """``args`` holds the field and the wrapped error, in order; ``repr`` shows both."""
    error = make()
    assert (error.args[0], repr(error.args[1])) == args
    assert len(error.args) == 2
    assert error.args[1] is error.error is error.__cause__
    assert repr(error) == expected_repr


@pytest.mark.parametrize(("make", "args", "expected_repr", "fields"), CASES, ids=IDS)
def test_copies_and_pickles_rebuild_the_error(make, args, expected_repr, fields):
    """A shallow copy and a pickle round trip give the same args, repr, message, fields, and cause."""
    error = make()
    for twin in (copy.copy(error), pickle.loads(pickle.dumps(error))):  # noqa: S301 - our own data
        assert type(twin) is type(error)
        assert (twin.args[0], repr(twin.args[1])) == args
        assert repr(twin) == expected_repr
        assert str(twin) == str(error)
        assert {name: getattr(twin, name) for name in fields} == fields
        assert twin.__cause__ is twin.error
        assert repr(twin.error) == repr(error.error)
