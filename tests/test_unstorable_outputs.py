"""An output the store's codec can't encode fails its own callback, with the step, phase and type named."""

from typing import Any

from returns.result import Result, Success

from choreograph import Coordinator, JobFailed, Step, UnstorableOutput


class Opaque:
    """A value no JSON codec can store."""


def unannotated():  # type: ignore[no-untyped-def]  # the codec, not an annotation, refuses its output
    return Opaque()


def annotated() -> Opaque:
    return Opaque()


def in_a_container() -> Result[Opaque, str]:
    return Success(Opaque())


def test_each_form_of_an_unstorable_job_output_fails_that_job_naming_it(make_store: Any):
    """Unannotated, annotated or inside `Success`: the job fails with `UnstorableOutput(step, 'job', type)`."""
    for job in (unannotated, annotated, in_a_container):
        flow = Coordinator([Step("keep", job), Step("after", lambda: 1)], store=make_store(), key=str)
        result = flow.run(1)
        fatal = result.fatal
        assert isinstance(fatal, JobFailed), job
        error = fatal.error
        assert isinstance(error, UnstorableOutput), job
        assert (error.step, error.phase, error.type_name) == ("keep", "job", f"{__name__}.Opaque"), job
        assert [(c.step, c.phase, c.outcome) for c in result.trace] == [("keep", "job", "failed")], job
        assert not result.data_bag.has_job_data("keep")


def test_an_unstorable_precheck_output_in_a_container_fails_the_precheck(make_store: Any):
    """A precheck returning `Success(unstorable)` fails as a precheck: its job is skipped, the run goes on."""
    flow = Coordinator([Step("s", lambda: 1, precheck=in_a_container)], store=make_store(), key=str)
    result = flow.run(1)
    assert result.ok
    (entry,) = result.errors
    assert isinstance(entry.error, UnstorableOutput)
    assert (entry.error.step, entry.error.phase) == ("s", "precheck")
    assert [(c.phase, c.outcome) for c in result.trace] == [("precheck", "failed"), ("job", "skipped")]
