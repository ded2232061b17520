"""The state of the tally entities of tests/test_entities_crash.py, in a module both processes import."""

from __future__ import annotations

import dataclasses

from choreograph import Entities, SqliteStore


@dataclasses.dataclass
class Tally:
    """The message numbers an entity handled, in order."""

    seen: list[int]


def tallies(store: SqliteStore) -> Entities[Tally]:
    """The tally kind, without handlers: what the test sends with and reads from."""
    return Entities[Tally]("tally", store=store)
