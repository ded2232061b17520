"""The public surface: `__all__`, docstrings and `__version__`."""

import importlib.metadata

import pytest

import choreograph

CONTRACT = {
    "Coordinator",
    "Step",
    "Context",
    "DataBag",
    "RunResult",
    "Call",
    "get_data_bag",
    "ChoreographError",
    "StepDefinitionError",
    "UnassignableInput",
    "UnassignableOutput",
    "ExecutionCanceled",
    "Skip",
    "JobFailed",
    "RunCancelled",
    "NoDataBagInContext",
    "CallbackFailure",
    "StepError",
    "Entities",
    "EntityContext",
}


def test_all_has_the_contract_names():
    """`__all__` lists every name of the API contract, once each."""
    assert set(choreograph.__all__) >= CONTRACT
    assert len(choreograph.__all__) == len(set(choreograph.__all__))


@pytest.mark.parametrize("name", choreograph.__all__)
def test_public_name_exists_and_is_documented(name):
    """Every name in `__all__` exists and has its own docstring."""
    obj = getattr(choreograph, name)
    doc = obj.__doc__
    assert isinstance(doc, str)
    assert doc.strip()


def test_module_docstring():
    """The package has a docstring."""
    assert choreograph.__doc__
    assert choreograph.__doc__.strip()


def test_version():
    """`__version__` is the installed distribution's version, a non-empty string."""
    version = choreograph.__version__
    assert isinstance(version, str)
    assert version
    assert version == importlib.metadata.version("choreograph")


def test_unknown_attribute():
    """An unknown attribute of the package raises AttributeError."""
    with pytest.raises(AttributeError, match="Nope"):
        _ = choreograph.Nope  # type: ignore[attr-defined]
    assert not hasattr(choreograph, "Nope")


def test_unknown_import():
    """Importing an unknown name from the package raises ImportError."""
    with pytest.raises(ImportError):
        from choreograph import Nope  # type: ignore[attr-defined]  # noqa: F401


def test_the_typing_module_exports_what_it_lists():
    """choreograph.typing exports every name in its __all__, for users' annotations."""
    import choreograph.typing as public_typing

    assert public_typing.__all__
    for name in public_typing.__all__:
        assert getattr(public_typing, name) is not None
    outcome: public_typing.Outcome = "ok"
    assert outcome == "ok"
