"""
The names a DataBag shows (snapshots, iteration) and the messages of its `KeyError`s.

A bag shows each step under the name it was first stored with, for precheck
and job data alike, and a missing entry's `KeyError` says which table and
which step it was looked up in.
"""

import pickle

import pytest

from choreograph import Coordinator, DataBag, Step, get_data_bag


def test_a_precheck_only_entry_keeps_the_name_it_was_stored_with():
    """A step that only has precheck data is shown under its first spelling, in snapshots and iteration."""
    bag = DataBag()
    bag.set_precheck_data("Load", "checked")
    bag.set_precheck_data("LOAD", "checked again")
    assert dict(bag.precheck_data) == {"Load": "checked again"}
    assert list(bag) == ["Load"]


def test_a_name_first_stored_as_precheck_data_names_the_job_data_too():
    """The first spelling stored, precheck or job, names both tables' entries of that step."""
    bag = DataBag()
    bag.set_precheck_data("Ship", 1)
    bag.set_job_data("SHIP", 2)
    assert dict(bag.job_data) == {"Ship": 2}
    assert dict(bag.precheck_data) == {"Ship": 1}


def test_an_empty_name_is_a_name_like_any_other():
    """A bag accepts the empty string as a step name and shows it as such."""
    bag = DataBag()
    bag.set_job_data("", 1)
    bag.set_precheck_data("", 2)
    assert dict(bag.job_data) == {"": 1}
    assert dict(bag.precheck_data) == {"": 2}
    assert list(bag) == [""]
    assert bag.get_job_data("") == 1


def test_names_survive_pickling():
    """A pickled run bag shows the same names, its steps' and those stored from callbacks."""
    coordinator = Coordinator([Step("Load", lambda: 1)])

    def keep() -> None:
        get_data_bag().set_precheck_data("Extra", "x")

    coordinator.add_step(Step("Keep", keep))
    bag = coordinator.run().data_bag
    twin = pickle.loads(pickle.dumps(bag))  # noqa: S301 - our own data
    assert list(bag) == ["Load", "Extra"]  # the run's steps in run order, then the others
    assert sorted(twin) == ["Extra", "Load"]
    assert dict(twin.job_data) == {"Load": 1}
    assert dict(twin.precheck_data) == {"Extra": "x"}


@pytest.mark.parametrize(
    ("getter", "message"),
    [("get_job_data", "no job data for step 'Missing'"), ("get_precheck_data", "no precheck data for step 'Missing'")],
)
def test_a_missing_entry_names_the_table_and_the_step(getter, message):
    """Without a default, a missing entry raises `KeyError` with a message naming the table and the step."""
    bag = DataBag()
    bag.set_job_data("other", 1)
    bag.set_precheck_data("other", 1)
    with pytest.raises(KeyError) as excinfo:
        getattr(bag, getter)("Missing")
    assert excinfo.value.args == (message,)
    assert excinfo.value.__suppress_context__  # the lookup's own KeyError is not chained


def test_a_run_bag_missing_entry_names_the_step_as_asked():
    """A run's bag reports a missing entry with the name as it was asked for."""

    def load() -> None:
        """Store nothing: no output."""

    result = Coordinator([Step("load", load)]).run()
    with pytest.raises(KeyError) as excinfo:
        result.data_bag.get_job_data("LOAD")
    assert excinfo.value.args == ("no job data for step 'LOAD'",)
