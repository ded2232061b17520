"""How a `RunResult` shows itself and refuses changes: its repr, and the messages of its frozen guard."""

import pickle

import pytest

from choreograph import Coordinator, JobFailed, Step


def fail() -> None:
    raise ValueError("declined")


def skip_check() -> None:
    raise LookupError("no stock")


def test_the_repr_of_an_ok_run_says_ok_and_counts_errors():
    """An ok run reads ``<RunResult run_id=N ok errors=E>``, precheck errors counted."""
    result = Coordinator([Step("a", lambda: 1), Step("b", lambda: 2, skip_check)]).run()
    assert result.ok
    assert repr(result) == f"<RunResult run_id={result.run_id} ok errors=1>"


def test_the_repr_of_a_failed_run_shows_its_fatal():
    """A failed run reads ``<RunResult run_id=N fatal=... errors=E>`` with the fatal's repr."""
    result = Coordinator([Step("pay", fail)]).run()
    assert isinstance(result.fatal, JobFailed)
    assert repr(result) == f"<RunResult run_id={result.run_id} fatal=JobFailed('pay', ValueError('declined')) errors=1>"


def test_a_pickled_result_has_the_same_repr():
    """A result that went through pickle shows the same repr."""
    result = Coordinator([Step("pay", fail)]).run()
    twin = pickle.loads(pickle.dumps(result))  # noqa: S301 - our own data
    assert repr(twin) == repr(result)


def test_setting_an_attribute_says_the_result_is_frozen():
    """Assigning any attribute raises `AttributeError` naming the attribute."""
    result = Coordinator([Step("a", lambda: 1)]).run()
    with pytest.raises(AttributeError) as excinfo:
        result.ok = False  # type: ignore[misc]
    assert str(excinfo.value) == "RunResult is frozen: cannot set 'ok'"
    assert result.ok


def test_deleting_an_attribute_says_the_result_is_frozen():
    """Deleting any attribute raises `AttributeError` naming the attribute, and the result keeps it."""
    result = Coordinator([Step("a", lambda: 1)]).run()
    with pytest.raises(AttributeError) as excinfo:
        del result.fatal  # type: ignore[misc]
    assert str(excinfo.value) == "RunResult is frozen: cannot delete 'fatal'"
    with pytest.raises(AttributeError, match="cannot delete '_run'"):
        del result._run
    assert result.fatal is None
    assert result.data_bag.get_job_data("a") == 1
