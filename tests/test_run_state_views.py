"""
What the run's state shows through its views: the context's members and messages, and the state's sentinels.
"""

from typing import Any

import pytest

from choreograph import Context, Coordinator, JobFailed, Step
from choreograph._core.state import NOTHING


def test_nothing_stored_shows_as_nothing() -> None:
    assert repr(NOTHING) == "NOTHING"


@pytest.mark.parametrize("kind", ["", 3, None])
def test_emit_without_a_kind_says_what_it_needs_and_what_it_got(kind: object) -> None:
    def bad(ctx: Context[Any]) -> None:
        ctx.emit(kind)  # type: ignore[arg-type]  # wrong on purpose

    result = Coordinator([Step("s", bad)]).run()
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, TypeError)
    assert str(result.fatal.error) == f"emit() needs a kind, a non-empty str; got {kind!r}"
