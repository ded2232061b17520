"""
Durable runs: every callback's outcome recorded in a store, and runs resumed by key.

- `protocol`: the `Store` protocol and the records a store keeps (`RunInfo`, `Event`).
- `codec`: how values and errors become text (`JsonCodec`, `PickleCodec`).
- `leases`: lease holders and which keys this process runs.
- `replay`: a run rebuilt from a store's events (what a resumed run restores).
- `recorder`: the run loop's recorder, committing outcomes through a store's session.
- `runner`: taking a key's lease and setting its run up, for plain and async callers.
- `sqlite`, `memory`, `postgres`: the stores.
"""

from .codec import Codec, CodecError, JsonCodec, PickleCodec, StoredError
from .memory import MemoryStore
from .postgres import PostgresStore
from .protocol import Event, RunInfo, Status, Store, StoreSession
from .runner import DurableRunner
from .sqlite import SqliteStore

__all__ = [
    "Codec",
    "CodecError",
    "DurableRunner",
    "Event",
    "JsonCodec",
    "MemoryStore",
    "PickleCodec",
    "PostgresStore",
    "RunInfo",
    "SqliteStore",
    "Status",
    "Store",
    "StoreSession",
    "StoredError",
]
