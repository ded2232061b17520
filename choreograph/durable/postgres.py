"""
Durable runs on PostgreSQL: `SqliteStore`'s semantics for many processes on many machines.

A store is one schema of a database (``choreograph`` by default): a ``runs``
row per key, an ``events`` row per finished callback, and ``store_version``,
which marks the schema as choreograph's and holds its version; durable queues
(``messages``, ``queue_servers``: schema version 2) and durable entities
(``entities``, ``entity_messages``: version 3) live next to them. Opening a store
creates the schema when it is missing and migrates an older one, under an
advisory lock, so that processes opening it at once don't race.

Every statement goes through a pooled connection (``psycopg_pool``) in
autocommit mode: an event is one ``INSERT``, committed when `record` returns.
A new key's lease is one ``INSERT ... ON CONFLICT DO NOTHING``; any other
`begin` reads the key's row ``FOR UPDATE``, so that two processes can't both
take it. The writes of runs (new leases, events, finishes) that threads make
while another batch of them is being committed are committed together, in the
next batch: one transaction, sent in one round trip (`_GroupCommit`).

Leases are timed on the server's clock, so machines whose clocks disagree
still agree on when a lease expires; so are the times the store records
(``created``, ``updated``, `Event.at`).

psycopg is imported when the first store is made: ``choreograph`` itself
does not need it (extra ``choreograph[postgres]``).

Extending the store (a queue's tables, say): a new table comes with a
migration (the next entry of `MIGRATIONS`, and `SCHEMA_VERSION` raised;
`verify` then expects it); its statements go in `_Statements`, over ``{s}``;
a single write that must be committed before returning goes through
``store._commits.run``, and a transaction (``SELECT ... FOR UPDATE SKIP
LOCKED``, say) through ``with store.connection() as conn, conn.transaction()``.
"""

# Every statement is built from constants and the schema's quoted name, once; values are always bound.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from types import ModuleType
from typing import Any, Final, Self

from .._core.callbacks import type_name
from .._core.result import Outcome
from .._errors import Phase, StoreError
from .codec import Codec, CodecError, JsonCodec
from .leases import is_alive, new_owner
from .protocol import (
    TRACE_CONTEXT_LIMIT,
    Begun,
    Ending,
    EntityCommit,
    EntityInfo,
    EntityItem,
    EntityMessage,
    EntityRow,
    Event,
    Message,
    MessageInfo,
    MessageStatus,
    NewEvent,
    Restore,
    Row,
    RunInfo,
    Settled,
    Status,
    admit,
    begin_row,
    entity_ready,
    may_hold,
)
from .queues import (
    DOORBELL,
    MESSAGE_INFO_COLUMNS,
    MESSAGE_STATUSES,
    check_limit,
    check_queue,
    checked_message,
    message_info_of,
    run_is_live,
)
from .runlist import STATUSES, RunList, checked_limit, describe

#: The version of the schema this choreograph writes (its own numbering, apart from SQLite's).
SCHEMA_VERSION: Final = 3
#: Marks a schema as choreograph's: its ``store_version`` table has a row of this application.
APPLICATION: Final = "choreograph"
#: Runs read per query when iterating `PostgresStore.runs`.
_PAGE: Final = 1000
#: The longest schema name PostgreSQL keeps (NAMEDATALEN - 1 bytes): a longer one would be cut.
_NAME_LIMIT: Final = 63

#: The server's clock, in seconds since the epoch: leases and recorded times are read from it.
_NOW: Final = "extract(epoch FROM clock_timestamp())::float8"
#: The server's clock when the statement started: one time for every use in a statement (a message's
#: ``due`` and ``enqueued``, a claim's due messages and its lease), where ``_NOW`` reads the clock at each.
_TS: Final = "extract(epoch FROM statement_timestamp())::float8"

# The schema, as statements over ``{s}`` (the quoted schema name). Keys and steps compare as
# bytes (COLLATE "C"): runs list in the same order as in every other store, and an ASCII-only
# case folding finds a step as SQLite's NOCASE does.
_SCHEMA_V1: Final = """
CREATE TABLE {s}.store_version (
    application text PRIMARY KEY,
    version integer NOT NULL
);
CREATE TABLE {s}.runs (
    key text COLLATE "C" PRIMARY KEY,
    status text NOT NULL,
    generation integer NOT NULL,
    sessions integer NOT NULL,
    interruptions integer NOT NULL DEFAULT 0,
    input text,
    fatal text,
    failed_step text COLLATE "C",
    error_type text COLLATE "C",
    error_message text,
    result text,
    owner text,
    lease_until double precision,
    created double precision NOT NULL,
    updated double precision NOT NULL,
    trace_context text
);
CREATE INDEX runs_by_updated ON {s}.runs (updated DESC, key);
CREATE INDEX runs_by_status ON {s}.runs (status, updated);
CREATE TABLE {s}.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text COLLATE "C" NOT NULL,
    generation integer NOT NULL,
    session integer NOT NULL,
    step text NOT NULL,
    phase text NOT NULL,
    outcome text NOT NULL,
    output text,
    error text,
    error_type text,
    attempts integer NOT NULL,
    seconds double precision NOT NULL,
    at double precision NOT NULL,
    traceback text
);
CREATE INDEX events_by_run ON {s}.events (key, generation, id)
"""

# Version 2: durable queues (SQLite's version 6). A message per key (keys are one namespace, shared
# with the runs), claimed by priority, then due time, then the order it was stored in (``seq``), on the
# index ``messages_ready``; the claims of a server, renewed together (``messages_by_owner``); a
# queue's exclusive server. Times are the server's clock.
_SCHEMA_QUEUES: Final = """
CREATE TABLE {s}.messages (
    key text COLLATE "C" PRIMARY KEY,
    queue text COLLATE "C" NOT NULL,
    status text NOT NULL,
    payload text NOT NULL,
    priority integer NOT NULL,
    due double precision NOT NULL,
    enqueued double precision NOT NULL,
    updated double precision NOT NULL,
    deliveries integer NOT NULL DEFAULT 0,
    owner text,
    lease_until double precision,
    error text,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX messages_ready ON {s}.messages (queue, status, priority DESC, due, seq);
CREATE INDEX messages_by_owner ON {s}.messages (owner) WHERE owner IS NOT NULL;
CREATE TABLE {s}.queue_servers (
    queue text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    lease_until double precision NOT NULL,
    since double precision NOT NULL
)
"""

# Version 3: durable entities (SQLite's version 7): a row per entity (its state, timer, boot flag,
# failure and claim, and when it is next due, on an index) and the messages queued for them, numbered
# in the order they were stored (an identity: a number is never reused, as it names a durable run).
_SCHEMA_ENTITIES: Final = """
CREATE TABLE {s}.entities (
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    state text,
    version integer NOT NULL DEFAULT 0,
    timer double precision,
    boot boolean NOT NULL DEFAULT false,
    starts integer NOT NULL DEFAULT 0,
    failed text,
    failed_item text,
    owner text,
    lease_until double precision,
    ready double precision,
    created double precision NOT NULL,
    updated double precision NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX entities_by_ready ON {s}.entities (kind, ready, id) WHERE ready IS NOT NULL;
CREATE TABLE {s}.entity_messages (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    message text NOT NULL,
    sent double precision NOT NULL
);
CREATE INDEX entity_messages_by_entity ON {s}.entity_messages (kind, id, seq)
"""

#: Migrations from version N to N + 1, applied in order in one transaction (0: a new schema).
#: A later version adds its statements here and raises `SCHEMA_VERSION`.
MIGRATIONS: Final[dict[int, str]] = {0: _SCHEMA_V1, 1: _SCHEMA_QUEUES, 2: _SCHEMA_ENTITIES}

#: ``Begun(...)`` without its generated ``__new__``, for a new key: one is made per run.
_new_begun = tuple.__new__

_RUN_INFO: Final = (
    "key, status, generation, sessions, interruptions, failed_step, error_type, error_message, owner, created, updated,"
    " trace_context"
)
_EVENT: Final = (
    "id, key, generation, session, step, phase, outcome, output, error, error_type, attempts, seconds, at, traceback"
)

_psycopg: ModuleType | None = None
_pool_module: ModuleType | None = None


def _modules() -> tuple[ModuleType, ModuleType]:
    """Return psycopg and psycopg_pool, imported at the first use; an `ImportError` naming the extra without them."""
    global _psycopg, _pool_module  # imported once, when the first store is made
    if _psycopg is None or _pool_module is None:
        try:
            import psycopg  # noqa: PLC0415 - an optional dependency, imported only when used
            import psycopg_pool  # noqa: PLC0415
        except ImportError as exc:
            msg = (
                "PostgresStore needs psycopg 3 and psycopg-pool: install the extra with"
                " pip install 'choreograph[postgres]'"
            )
            raise ImportError(msg, name=exc.name) from exc
        _psycopg, _pool_module = psycopg, psycopg_pool
    return _psycopg, _pool_module


def quote(name: str) -> str:
    """
    *name* as a quoted SQL identifier.

    >>> print(quote('choreograph'), quote('a"b'))
    "choreograph" "a""b"
    """
    return '"' + name.replace('"', '""') + '"'


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (libpq's span several, with tabs)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _redacted(conninfo: str) -> str:
    """
    A connection string without its password, for a message about a string that can't be parsed.

    >>> _redacted("postgresql://me:secret@db/app"), _redacted("host=db password=secret")
    ('postgresql://me@db/app', 'host=db password=***')
    """
    text = re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1@", conninfo)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)


def _display(params: dict[str, Any], schema: str) -> str:
    """
    The store's place as a URL without a password, its fragment naming the schema.

    >>> _display({"user": "app", "host": "db", "port": "5433", "dbname": "runs"}, "choreograph")
    'postgresql://app@db:5433/runs#choreograph'
    >>> _display({"host": "/var/run/postgresql", "dbname": "runs"}, "batch")
    'postgresql:///runs?host=/var/run/postgresql#batch'
    """
    user = params.get("user")
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = params.get("port")
    query = ""
    if host.startswith("/"):  # a Unix socket's folder
        host, query = "", f"?host={host}"
    where = f"{user}@" if user else ""
    where += host + (f":{port}" if port and host else "")
    return f"postgresql://{where}/{params.get('dbname') or ''}{query}#{schema}"


def _lock_id(schema: str) -> int:
    """The advisory lock that serializes creating and migrating *schema* (a signed 64-bit number)."""
    digest = hashlib.sha256(f"choreograph schema {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStore:
    """
    A durable store in a PostgreSQL schema: pass it as ``Coordinator(store=...)``.

    The same semantics, inspection and guarantees as `SqliteStore`, for any
    number of processes on any number of machines sharing the schema: a key
    is run by one holder at a time, a key whose lease expired (or whose
    holder on this machine is dead) is taken over, and an event is committed
    before the next callback starts. It has durable queues
    (`choreograph.typing.QueueStore`: `enqueue`, ``Coordinator.serve``) and
    durable entities (`choreograph.typing.EntityStore`) too, their claims
    taken ``FOR UPDATE SKIP LOCKED``. Needs the extra ``choreograph[postgres]``
    (psycopg 3 and psycopg-pool).

    Args:
        conninfo: Where the server is: a ``postgresql://`` URL or a libpq
            ``key=value`` string (a password is better kept in ``PGPASSWORD``
            or ``~/.pgpass`` than here).
        schema: The schema holding the store's tables; created when missing
            (with its tables), migrated when an older choreograph made it.
            Stores in different schemas of one database don't see each other.
        codec: How outputs, inputs and errors are written (default:
            `JsonCodec`; `PickleCodec` only as an explicit opt-in).
        lease: Seconds a process holds a key it is running without renewing
            it (renewed as the run records events), on the server's clock.
        max_interruptions: A key interrupted more often is marked
            ``"poisoned"`` and no longer run (until run with ``fresh=True``).
        max_connections: The most connections the store opens to the server
            (a pool: one connection serves one statement at a time, so many
            threads share a few).
        timeout: Seconds to wait for a connection, from the server or from
            the pool when every one is in use, before raising `StoreError`.
        create: Create the schema and its tables when they are missing;
            ``False`` raises `StoreError` instead (to read a store that
            must exist, as ``choreograph runs`` does).

    Raises:
        ImportError: psycopg or psycopg-pool is not installed.
        StoreError: The server can't be reached (or refuses the
            connection), the schema holds tables that aren't choreograph's,
            or was written by a newer choreograph. Nothing is changed then.
        ValueError: An option is out of range (an empty schema name, a
            lease <= 0, ...).

    .. versionadded:: 0.5.0
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "choreograph",
        codec: Codec | None = None,
        lease: float = 60.0,
        max_interruptions: int = 3,
        max_connections: int = 10,
        timeout: float = 30.0,
        create: bool = True,
    ) -> None:
        self._check_options(conninfo, schema, codec, lease, max_interruptions, max_connections, timeout)
        psycopg, pool_module = _modules()
        self.conninfo = conninfo
        self.schema = schema
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.lease = float(lease)
        self.max_interruptions = max_interruptions
        self.max_connections = max_connections
        self.timeout = float(timeout)
        self.owner = new_owner()
        self._closed = False
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise StoreError(_redacted(conninfo), f"invalid connection string: {_one_line(exc)}") from exc
        self._location = _display(params, schema)
        self._sql = _Statements(quote(schema))
        self._errors = (psycopg.Error, pool_module.PoolTimeout, pool_module.PoolClosed)
        extra: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(2, math.ceil(self.timeout))  # libpq's is whole seconds, >= 2
        if "application_name" not in params:
            extra["application_name"] = "choreograph"
        self._open(psycopg, extra, create=create)
        self._pool = pool_module.ConnectionPool(
            conninfo,
            kwargs=extra,
            min_size=1,
            max_size=max_connections,
            timeout=self.timeout,
            open=False,
            name=f"choreograph {self._location}",
            num_workers=2,
        )
        self._pool.open(wait=False)
        self._commits = _GroupCommit(self._pool, self._error, lambda: self._closed, self._location)
        # The pool is closed by `close()`, or when the store is garbage collected.
        self._finalizer = weakref.finalize(self, _close_pool, self._pool)

    @staticmethod
    def _check_options(
        conninfo: object,
        schema: object,
        codec: object,
        lease: object,
        max_interruptions: object,
        max_connections: object,
        timeout: object,
    ) -> None:
        """Refuse options out of range, before anything is imported or connected."""
        if not isinstance(conninfo, str):
            msg = f"conninfo must be a str (a postgresql:// URL or key=value pairs), got {type_name(conninfo)}"
            raise TypeError(msg)
        if not isinstance(schema, str):
            msg = f"schema must be a str, got {type_name(schema)}"
            raise TypeError(msg)
        if not schema or "\x00" in schema or len(schema.encode()) > _NAME_LIMIT or schema.startswith("pg_"):
            msg = f"schema must be a name of 1 to 63 bytes, without NUL, not starting with 'pg_'; got {schema!r}"
            raise ValueError(msg)
        if codec is not None and not isinstance(codec, Codec):
            msg = f"codec must implement choreograph.Codec, got {type_name(codec)}"
            raise TypeError(msg)
        for name, seconds in (("lease", lease), ("timeout", timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
                msg = f"{name} must be > 0 seconds, got {seconds!r}"
                raise ValueError(msg)
        for name, number, least in (
            ("max_interruptions", max_interruptions, 0),
            ("max_connections", max_connections, 1),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < least:
                msg = f"{name} must be an int >= {least}, got {number!r}"
                raise ValueError(msg)

    # -- the schema ----------------------------------------------------------------

    def _open(self, psycopg: ModuleType, extra: dict[str, Any], *, create: bool) -> None:
        """Connect once, and check (or create, or migrate) the schema before any run uses it."""
        try:
            conn = psycopg.connect(self.conninfo, **extra)
        except psycopg.Error as exc:
            raise StoreError(self._location, f"cannot connect to the server: {_one_line(exc)}") from exc
        try:
            with conn.transaction():
                # Opening processes take turns: one creates or migrates, the others then find it done.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(self.schema),))
                version = self._version(conn, create=create)
                while version < SCHEMA_VERSION:
                    self._migrate(conn, version)
                    version += 1
        except StoreError:
            raise
        except psycopg.Error as exc:
            raise StoreError(self._location, f"cannot open the store's schema: {_one_line(exc)}") from exc
        finally:
            conn.close()

    def _version(self, conn: Any, *, create: bool) -> int:
        """
        The schema's version (0 when it has no tables yet).

        Raises:
            StoreError: The schema isn't choreograph's, or is newer, or is missing and not to be created.
        """
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname",
                (self.schema,),
            )
        ]
        if not tables:
            if not create:
                problem = f"no choreograph store in schema {self.schema!r} (create=False); nothing was created"
                raise StoreError(self._location, problem)
            return 0
        found = None
        if "store_version" in tables:
            try:
                with conn.transaction():  # a savepoint: a table of that name but another shape fails here
                    found = conn.execute(
                        self._sql.format("SELECT version FROM {s}.store_version WHERE application = %s"),
                        (APPLICATION,),
                    ).fetchone()
            except _modules()[0].Error:
                found = None
        if found is None or not isinstance(found[0], int):
            shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")  # noqa: PLR2004
            problem = (
                f"schema {self.schema!r} holds tables that aren't a choreograph store's ({shown});"
                " choose another schema. Nothing was changed"
            )
            raise StoreError(self._location, problem)
        version: int = found[0]
        if version > SCHEMA_VERSION:
            problem = (
                f"schema version {version} is newer than this choreograph supports ({SCHEMA_VERSION});"
                " nothing was changed"
            )
            raise StoreError(self._location, problem)
        return version

    def _migrate(self, conn: Any, version: int) -> None:
        """Bring the schema from *version* to the next, in the opening transaction."""
        missing = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None
        if version == 0 and missing:  # an empty schema made beforehand needs no CREATE on the database
            conn.execute(f"CREATE SCHEMA {self._sql.schema}")
        for statement in filter(str.strip, MIGRATIONS[version].split(";")):
            conn.execute(self._sql.format(statement))
        conn.execute(
            self._sql.format(
                "INSERT INTO {s}.store_version (application, version) VALUES (%s, %s)"
                " ON CONFLICT (application) DO UPDATE SET version = excluded.version"
            ),
            (APPLICATION, version + 1),
        )

    # -- connections ---------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, doing: str = "use the store") -> Iterator[Any]:
        """
        A pooled connection (autocommit mode) for the block; errors become a `StoreError` saying what was being done.

        For stores and tools built on this one: ``with store.connection() as conn, conn.transaction(): ...``.

        Raises:
            StoreError: The store is closed, no connection could be had in
                time, or a statement failed: the message names *doing*.

        .. versionadded:: 0.5.0
        """
        if self._closed:
            raise StoreError(self._location, "the store is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._errors as exc:
            raise self._error(doing, exc) from exc

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        """The `StoreError` for a failed database call: a closed pool and a wait for a connection are told apart."""
        _, pool_module = _modules()
        if isinstance(exc, pool_module.PoolClosed) or self._closed:
            return StoreError(self._location, "the store is closed")
        if isinstance(exc, pool_module.PoolTimeout):
            problem = (
                f"cannot {doing}: no connection within {self.timeout:g} s (all {self.max_connections} of the"
                f" store's connections in use, or the server unreachable: {_one_line(exc)})"
            )
            return StoreError(self._location, problem)
        return StoreError(self._location, f"cannot {doing}: {_one_line(exc)}")

    def close(self) -> None:
        """Close the store's connections; the store can't be used afterwards."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._location!r}, codec={self.codec.name!r})"

    def __reduce__(self) -> Any:
        msg = (
            f"a PostgresStore can't be pickled (it holds open connections): open one in each process with"
            f" PostgresStore(conninfo, schema={self.schema!r}, ...); a Coordinator ships its store's"
            " configuration to worker processes itself"
        )
        raise TypeError(msg)

    @property
    def location(self) -> str:
        """The server, database and schema as a URL without a password (``postgresql://user@host:port/db#schema``)."""
        return self._location

    # -- runs: begin, record, finish -------------------------------------------------

    def begin(self, key: str, input: str, *, fresh: bool, restore: Restore | None = None) -> Begun | str:  # noqa: A002
        """
        Take the lease of *key*, storing its encoded *input* (see `Store.begin`, also for *restore*).

        A new key is one statement; a key with a row is read ``FOR UPDATE``
        and written back in one transaction.

        Returns:
            The holder, while another live process runs the key; else what the run starts from.
        """
        if restore is None:  # a new key (the common case): one statement
            params = (key, input, self.owner, self.lease)
            created, _ = self._commits.run(key, self._sql.insert_new, params, f"begin key {key!r}")
            if created:  # Begun("running", 1, 1, recorder=...), without its generated __new__
                return _new_begun(Begun, ("running", 1, 1, 0, None, (), None, PostgresSession(self, key, 1, 1), None))
        with self.connection(f"begin key {key!r}") as conn:
            while True:
                try:
                    with conn.transaction():
                        return self._begin_row(conn, key, input, fresh=fresh, restore=restore)
                except _Raced:  # another process created the key in between: read its row now
                    continue

    def _begin_row(self, conn: Any, key: str, input: str, *, fresh: bool, restore: Restore | None) -> Begun | str:  # noqa: A002
        """`begin` for a key that has a row (or a rerun's): in a transaction, the row locked."""
        sql = self._sql
        found = conn.execute(sql.lock_row, (key,)).fetchone()
        row = None if found is None else Row(*found[:8])
        new, outcome = begin_row(
            row,
            owner=self.owner,
            now=time.time() if found is None else found[9],  # a lease's expiry is on the server's clock
            lease=self.lease,
            max_interruptions=self.max_interruptions,
            fresh=fresh,
            alive=lambda holder: is_alive(holder, self.owner),
        )
        if isinstance(outcome, str):
            return outcome
        if restore is not None:
            chosen = restore(row, [] if row is None else self._events(conn, key, row.generation))
            for number in chosen:
                conn.execute(sql.copy_event, (outcome.generation, outcome.sessions, number, key))
        if new is not None:
            self._write_row(conn, key, input, new, created=row is None)
        if outcome.status == "poisoned":
            return Begun(
                status="poisoned",
                generation=outcome.generation,
                session=outcome.sessions,
                interruptions=outcome.interruptions,
            )
        result = None
        if outcome.status == "ok" and found is not None and found[8]:
            result = tuple(json.loads(found[8]))
        return Begun(
            status=outcome.status,
            generation=outcome.generation,
            session=outcome.sessions,
            interruptions=outcome.interruptions,
            fatal=outcome.fatal,
            events=self._events(conn, key, outcome.generation),
            result=result,
            recorder=None
            if outcome.status == "ok"
            else PostgresSession(self, key, outcome.generation, outcome.sessions),
            trace_context=outcome.trace_context,
        )

    def _write_row(self, conn: Any, key: str, encoded_input: str, row: Row, *, created: bool) -> None:
        sql = self._sql
        if created:
            params = (key, row.status, row.generation, row.sessions, encoded_input, row.owner, self.lease)
            if not conn.execute(sql.insert_row, params).rowcount:
                raise _Raced
        elif row.status == "poisoned":
            conn.execute(sql.poison, (row.interruptions, key))
        else:
            conn.execute(
                sql.update_row,
                (
                    row.status,
                    row.generation,
                    row.sessions,
                    row.interruptions,
                    encoded_input,
                    row.fatal,
                    row.owner,
                    self.lease,
                    row.trace_context,
                    key,
                ),
            )

    def stored_input(self, key: str) -> object:
        """
        Return the input last run for *key*.

        Raises:
            KeyError: The store has no run of *key*.
        """
        rows = self._read("SELECT input FROM {s}.runs WHERE key = %s", (key,))
        if not rows:
            msg = f"no run of key {key!r} in {self._location}"
            raise KeyError(msg)
        try:
            return self.codec.decode(rows[0][0])
        except CodecError as exc:
            raise StoreError(self._location, f"cannot restore the input of key {key!r}: {exc}") from exc

    # -- inspection -----------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self.connection("read") as conn:
            rows: list[Any] = conn.execute(self._sql.format(sql), params).fetchall()
            return rows

    def runs(
        self,
        *,
        status: Status | None = None,
        step: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
    ) -> Sequence[RunInfo]:
        """
        List runs, most recently updated first (then by key), lazily: as `SqliteStore.runs`.

        Iterating reads 1,000 runs per query (keyset pages on an index), so
        a loop over every run holds one page at a time; ``len()`` counts
        with one query; an index or a slice reads only those runs.

        Args:
            status: Only runs with this status.
            step: Only runs stopped by this step (ignoring ASCII case).
            error_type: Only runs whose error is of this class: its name, or
                ``module.QualName``.
            limit: At most this many.

        Raises:
            StoreError: The store is closed.
            ValueError: *limit* is negative or not an int.
        """
        chosen = checked_limit(limit)
        where, params = _filters(status, step, error_type)
        if self._closed:
            raise StoreError(self._location, "the store is closed")
        return RunList(
            iterate=lambda n: self._pages(where, params, n),
            read=lambda offset, n: self._runs_at(where, params, offset, n),
            count=lambda: self._read(f"SELECT count(*) FROM {{s}}.runs{where}", params)[0][0],
            limit=chosen,
            label=describe(self._location, status=status, step=step, error_type=error_type, limit=limit),
        )

    def _pages(self, where: str, params: tuple[object, ...], n: int | None) -> Iterator[RunInfo]:
        """Up to *n* runs, a page per query: each page starts after the last run of the one before (keyset)."""
        select = f"SELECT {_RUN_INFO} FROM {{s}}.runs"
        rows = self._read(f"{select}{where} ORDER BY updated DESC, key LIMIT %s", (*params, _size(n)))
        after = f"{select}{where}{' AND' if where else ' WHERE'} updated <= %s AND (updated < %s OR key > %s)"
        while rows:
            yield from map(_run_info, rows)
            if n is not None:
                n -= len(rows)
            if len(rows) < _PAGE or n == 0:
                return
            last_key, last_updated = rows[-1][0], rows[-1][10]
            page = (*params, last_updated, last_updated, last_key, _size(n))
            rows = self._read(f"{after} ORDER BY updated DESC, key LIMIT %s", page)

    def _runs_at(self, where: str, params: tuple[object, ...], offset: int, n: int) -> list[RunInfo]:
        sql = f"SELECT {_RUN_INFO} FROM {{s}}.runs{where} ORDER BY updated DESC, key LIMIT %s OFFSET %s"
        return [_run_info(row) for row in self._read(sql, (*params, n, offset))]

    def counts(
        self, *, status: Status | None = None, step: str | None = None, error_type: str | None = None
    ) -> dict[Status, int]:
        """
        Count runs by status, with the filters of `runs` (one query).

        Returns:
            Every status, in a fixed order (``running``, ``ok``, ``failed``,
            ``compensating``, ``rolled_back``, ``poisoned``), with its number
            of runs: 0 for a status no run has.
        """
        where, params = _filters(status, step, error_type)
        found = self._read(f"SELECT status, count(*) FROM {{s}}.runs{where} GROUP BY status", params)
        counted: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        counted.update(found)
        return counted

    def run_info(self, key: str) -> RunInfo | None:
        """Return what the store knows of *key*, or None."""
        rows = self._read(f"SELECT {_RUN_INFO} FROM {{s}}.runs WHERE key = %s", (key,))
        return _run_info(rows[0]) if rows else None

    def events(self, key: str, *, generation: int | None = None) -> list[Event]:
        """
        Return the recorded callbacks of *key*, in the order they were recorded.

        Args:
            key: The run's key.
            generation: Only this generation (default: all of them).
        """
        with self.connection("read") as conn:
            return self._events(conn, key, generation)

    def _events(self, conn: Any, key: str, generation: int | None) -> list[Event]:
        if generation is None:
            rows = conn.execute(self._sql.events, (key,)).fetchall()
        else:
            rows = conn.execute(self._sql.generation_events, (key, generation)).fetchall()
        return [
            Event(
                id=r[0],
                key=r[1],
                generation=r[2],
                session=r[3],
                step=r[4],
                phase=r[5],
                outcome=r[6],
                output=r[7],
                error=r[8],
                error_type=r[9],
                attempts=r[10],
                seconds=r[11],
                at=r[12],
                traceback=r[13],
            )
            for r in rows
        ]

    def decode(self, text: str) -> object:
        """
        Decode an `Event.output` (or a stored input) with this store's codec.

        Raises:
            CodecError: *text* can't be decoded.
        """
        return self.codec.decode(text)

    def decode_error(self, text: str) -> BaseException:
        """Decode an `Event.error`: the exception, or a `StoredError` when its class can't be rebuilt; never raises."""
        return self.codec.decode_error(text)

    # -- integrity -------------------------------------------------------------------

    def verify(self) -> None:
        """
        Check the store: its schema against this choreograph's, then choreograph's rules over the rows.

        In one read-only snapshot; changes nothing. The schema's version
        row is this choreograph's; every table, column and index of the
        schema is there, as declared (compared with the schema built afresh
        in a temporary schema that is rolled back); every event belongs to a
        run, and to one of its generations and sessions so far; every status
        is known (a run's, a message's); a run has a lease holder exactly
        when it has a lease expiry, a message a claim exactly when it is
        running, an entity a claim holder exactly when it has a lease expiry;
        every entity message belongs to an entity row. The server's own integrity (pages, checksums) is the
        server's to check: ``amcheck``, ``pg_checksums``.

        Raises:
            StoreError: Naming every problem found (each rule with an example key).
        """
        with self.connection("verify the store") as conn:
            expected = self._expected_catalog(conn)
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                problems = self._schema_problems(conn, expected) or self._row_problems(conn)
        if problems:
            raise StoreError(self._location, "; ".join(problems))

    @staticmethod
    def _expected_catalog(conn: Any) -> dict[str, list[tuple[object, ...]]]:
        """The catalog of the schema the migrations build, built as temporary tables and rolled back at once."""
        statements = _Statements("pg_temp")  # the session's own temporary schema: nothing another one sees
        conn.execute("BEGIN")
        try:
            for version in range(SCHEMA_VERSION):
                for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                    conn.execute(statements.format(statement))
            (temporary,) = conn.execute("SELECT pg_my_temp_schema()::regnamespace::text").fetchone()
            return _catalog(conn, temporary)
        finally:
            conn.execute("ROLLBACK")

    def _schema_problems(self, conn: Any, expected: dict[str, list[tuple[object, ...]]]) -> list[str]:
        problems: list[str] = []
        found = _catalog(conn, self.schema)
        for name, columns in expected.items():
            if name not in found:
                problems.append(f"{name} is missing")
            elif name.startswith("table"):
                have = {column[0]: column for column in found[name]}
                for column in columns:
                    if column[0] not in have:
                        problems.append(f"{name} has no column {column[0]}")
                    elif have[column[0]] != column:
                        problems.append(f"{name}: column {column[0]} is {have[column[0]][1:]}, expected {column[1:]}")
            elif found[name] != columns:
                problems.append(f"{name} is not on the expected columns")
        if "table store_version" in found:
            rows = conn.execute(self._sql.format("SELECT application, version FROM {s}.store_version")).fetchall()
            if (APPLICATION, SCHEMA_VERSION) not in rows:
                problems.append(f"store_version holds {rows}, expected [({APPLICATION!r}, {SCHEMA_VERSION})]")
        return problems

    def _row_problems(self, conn: Any) -> list[str]:
        problems: list[str] = []
        for sql, message in _ROW_RULES:
            count, example = conn.execute(self._sql.format(sql)).fetchone()
            if count:
                problems.append(message.format(count, example))
        return problems

    def prune(self, *, status: Status | None = None, before: float | None = None, keys: list[str] | None = None) -> int:
        """
        Delete finished runs and their events; return how many runs were deleted.

        Runs that are going on (a live lease) are never deleted: the rows are
        deleted first, each as it is found free (a `begin` taking one waits,
        and then finds no row), then the events of exactly those keys, in the
        same transaction.

        Args:
            status: Only runs with this status.
            before: Only runs last updated before this time (seconds since the epoch).
            keys: Only these keys.
        """
        where = [f"(owner IS NULL OR lease_until < {_NOW})"]
        params: list[object] = []
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if before is not None:
            where.append("updated < %s")
            params.append(before)
        if keys is not None:
            where.append("key = ANY(%s)")
            params.append(list(keys))
        sql = self._sql
        with self.connection("prune") as conn, conn.transaction():
            deleted = [
                key
                for (key,) in conn.execute(
                    sql.format(f"DELETE FROM {{s}}.runs WHERE {' AND '.join(where)} RETURNING key"), params
                )
            ]
            if deleted:
                conn.execute(sql.format("DELETE FROM {s}.events WHERE key = ANY(%s)"), (deleted,))
                conn.execute(  # a pruned run's finished message goes with it: the key can be queued again
                    sql.format("DELETE FROM {s}.messages WHERE key = ANY(%s) AND status IN ('done', 'failed')"),
                    (deleted,),
                )
        return len(deleted)

    # -- queues (see `QueueStore`): times on the server's clock -----------------------

    def enqueue(
        self,
        queue: str,
        record: object,
        *,
        key: str | int,
        delay: float | timedelta | None = None,
        priority: int = 0,
    ) -> bool:
        """
        Store a message for *key* on *queue*, unless the key is queued, running or done.

        A new key takes one statement (through the group commit); a key the
        store knows (a message or a run) is decided in one transaction by
        `admit`, its message row locked. The message is due *delay* seconds
        from now on the server's clock. See `QueueStore.enqueue` for the
        arguments and the rules.

        Returns:
            Whether the message was stored.

        Raises:
            TypeError: A wrong type, or a record the codec can't encode (nothing is stored).
            ValueError: An empty name or key, a bad delay or priority (nothing is stored).
            StoreError: The store can't be written (a key or queue name with NUL, say).

        .. versionadded:: 0.5.0
        """
        name, text, payload, rank, seconds = checked_message(
            self.codec, queue, record, key=key, delay=delay, priority=priority
        )
        sql, doing = self._sql, f"enqueue key {text!r}"
        stored, _ = self._commits.run(text, sql.enqueue_new, (text, name, payload, rank, seconds, text), doing)
        if not stored:  # the key has a message or a run
            with self.connection(doing) as conn, conn.transaction():
                found = conn.execute(sql.lock_message, (text,)).fetchone()
                run = conn.execute(sql.run_lease, (text,)).fetchone()
                now = found[1] if found is not None else conn.execute(sql.now).fetchone()[0]
                live = run is not None and run_is_live(run[0], run[1], run[2], me=self.owner, now=now)
                if not admit(found and found[0], run and run[0], run_live=live):
                    return False
                if found is None:
                    if not conn.execute(sql.enqueue, (text, name, payload, rank, seconds)).rowcount:
                        return False  # another process queued the key in between
                else:
                    conn.execute(sql.enqueue_again, (name, payload, rank, seconds, text))
        DOORBELL.ring(self, name)
        return True

    def queue_info(self, queue: str) -> dict[MessageStatus, int]:
        """
        Count *queue*'s messages by status (one query; see `QueueStore.queue_info`).

        Returns:
            ``queued`` (delayed ones and expired claims included), ``running``, ``done`` and ``failed``, 0 where none.

        .. versionadded:: 0.5.0
        """
        found = self._read(
            f"SELECT CASE WHEN status = 'running' AND lease_until < {_NOW} THEN 'queued' ELSE status END, count(*)"
            " FROM {s}.messages WHERE queue = %s GROUP BY 1",
            (check_queue(queue),),
        )
        counted: dict[MessageStatus, int] = dict.fromkeys(MESSAGE_STATUSES, 0)
        counted.update(found)
        return counted

    def queues(self) -> list[str]:
        """
        Return the names of the queues that have messages, sorted.

        .. versionadded:: 0.5.0
        """
        return [row[0] for row in self._read("SELECT DISTINCT queue FROM {s}.messages ORDER BY queue")]

    def message_info(self, key: str) -> MessageInfo | None:
        """
        Return what the store knows of *key*'s message, or None.

        .. versionadded:: 0.5.0
        """
        rows = self._read(f"SELECT {MESSAGE_INFO_COLUMNS} FROM {{s}}.messages WHERE key = %s", (key,))
        return message_info_of(rows[0]) if rows else None

    def claim(self, queue: str, owner: str, *, limit: int) -> list[Message]:
        """
        Claim up to *limit* due messages of *queue* for *owner*, by priority then due time (see `QueueStore.claim`).

        One statement: the due messages are chosen ``FOR UPDATE SKIP LOCKED``
        (so that servers claiming at once neither wait on each other's rows
        nor take one message twice) and marked running in the same
        statement, their lease on the server's clock.

        .. versionadded:: 0.5.0
        """
        name, count = check_queue(queue), check_limit(limit)
        if count == 0:
            return []
        with self.connection(f"claim messages of queue {name!r}") as conn:
            rows = conn.execute(self._sql.claim, (name, count, owner, self.lease)).fetchall()
        rows.sort(key=lambda row: (-row[3], row[4], row[7]))  # RETURNING keeps no order: the queue's
        return [
            Message(key=k, queue=name, payload=p, priority=r, due=d, enqueued=e, deliveries=n)
            for k, _, p, r, d, e, n, _ in rows
        ]

    def renew_claims(self, owner: str) -> int:
        """
        Extend *owner*'s claims by the lease (one statement); return how many it holds.

        .. versionadded:: 0.5.0
        """
        with self.connection(f"renew the claims of {owner}") as conn:
            held: int = conn.execute(self._sql.renew_claims, (self.lease, owner)).rowcount
        return held

    def settle(self, key: str, owner: str, status: Settled, error: str | None = None) -> bool:
        r"""
        Mark *key*'s message done or failed, if *owner* holds it (one statement; see `QueueStore.settle`).

        PostgreSQL's text can't hold NUL: an *error* with NUL is stored with the text ``\\x00`` in its place.

        .. versionadded:: 0.5.0
        """
        if error is not None and "\x00" in error:
            error = error.replace("\x00", "\\x00")
        changed, _ = self._commits.run(
            key, self._sql.settle, (status, error, key, owner), f"settle the message of key {key!r}"
        )
        return bool(changed)

    def give_back(self, key: str, owner: str, *, delay: float) -> bool:
        """
        Put *key*'s message back on its queue, due in *delay* seconds (the server's clock), if *owner* holds it.

        .. versionadded:: 0.5.0
        """
        changed, _ = self._commits.run(
            key, self._sql.give_back, (max(0.0, delay), key, owner), f"give back the message of key {key!r}"
        )
        return bool(changed)

    def recover(self, queue: str) -> int:
        """
        Queue again the messages of *queue* whose claim expired or whose claimant died (see `QueueStore.recover`).

        Reads the claimants first: when every claim is live (the usual case)
        nothing is written. Then, in one transaction, a live claimant's
        expired claims, and a dead one's all.

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        doing = f"recover the messages of queue {name!r}"
        with self.connection(doing) as conn:
            holders = conn.execute(self._sql.claimants, (name,)).fetchall()
            dead = {holder: not is_alive(holder, self.owner) for holder, _ in holders}
            lost = [holder for holder, expired in holders if expired or dead[holder]]
            if not lost:
                return 0
            recovered = 0
            with conn.transaction():
                for holder in lost:
                    recovered += conn.execute(self._sql.recover, (name, holder, dead[holder])).rowcount
        return recovered

    def hold_queue(self, queue: str, owner: str) -> str | None:
        """
        Take or renew *queue*'s exclusive lease for *owner*; None when it holds it, else the holder.

        The queue's row is read ``FOR UPDATE`` (a missing one is inserted, a
        process inserting it at once waited for), decided by `may_hold` on
        the server's clock, and written, in one transaction.

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        sql = self._sql
        with self.connection(f"take the lease of queue {name!r}") as conn, conn.transaction():
            found = conn.execute(sql.lock_queue, (name,)).fetchone()
            if found is None:
                if conn.execute(sql.insert_queue, (name, owner, self.lease)).rowcount:
                    return None
                found = conn.execute(sql.lock_queue, (name,)).fetchone()  # inserted meanwhile, and committed
            holder, until, now = found
            if not may_hold(holder, until, owner=owner, now=now, alive=lambda h: is_alive(h, self.owner)):
                return str(holder)
            conn.execute(sql.update_queue, (owner, owner, self.lease, name))
        return None

    def leave_queue(self, queue: str, owner: str) -> None:
        """
        Give up *queue*'s exclusive lease, if *owner* holds it.

        .. versionadded:: 0.5.0
        """
        self._commits.run(queue, self._sql.leave_queue, (queue, owner), f"leave queue {queue!r}")

    # -- entities (see `EntityStore`): each method one transaction, the entity's row locked -------

    @staticmethod
    def _entity_doing(what: str, kind: str, id: str) -> str:  # noqa: A002
        """What an entity method does, for its `StoreError`: ``commit entity k 'a'``."""
        return f"{what} entity {kind} {id!r}"

    def entity_send(self, kind: str, id: str, message: str) -> int:  # noqa: A002
        """
        Queue an encoded message for an entity (see `EntityStore.entity_send`); its seq.

        One statement (through the group commit): the entity's row is
        inserted or updated first, and so locked, then the message numbered,
        so that an entity's messages are numbered in the order they commit.
        """
        doing = self._entity_doing("send a message to", kind, id)
        _, row = self._commits.run(f"{kind}\x00{id}", self._sql.entity_send, (kind, id, kind, id, message), doing)
        seq: int = row[0]  # an INSERT ... RETURNING gives its row
        return seq

    def _entity_head(self, conn: Any, kind: str, id: str) -> EntityMessage | None:  # noqa: A002
        found = conn.execute(self._sql.entity_head, (kind, id)).fetchone()
        return None if found is None else EntityMessage(*found)

    def entity_claim(self, kind: str, limit: int, *, reap: bool = False) -> list[EntityRow]:
        """
        Claim up to *limit* due entities of *kind* (see `EntityStore.entity_claim`).

        In one transaction: with *reap*, the claims of dead processes of this
        machine are freed; the due entities are chosen ``FOR UPDATE SKIP
        LOCKED`` and claimed in one statement, on the server's clock; then
        their first messages are read.
        """
        sql = self._sql
        if limit <= 0:
            return []
        with self.connection(f"claim entities of kind {kind}") as conn, conn.transaction():
            if reap:  # free the claims of dead processes of this machine
                for (holder,) in conn.execute(sql.entity_holders, (kind, self.owner)).fetchall():
                    if not is_alive(holder, self.owner):
                        conn.execute(sql.entity_free, (kind, holder))
            rows = conn.execute(sql.entity_claim, (kind, limit, self.owner, self.lease, kind)).fetchall()
            rows.sort(key=lambda row: (row[6], row[0]))  # oldest ready first, as they were chosen
            heads: dict[str, EntityMessage] = {}
            if rows:
                for id_, seq, message, sent in conn.execute(sql.entity_heads, (kind, [row[0] for row in rows])):
                    heads[id_] = EntityMessage(seq, message, sent)
        return [
            EntityRow(kind, id_, state, version, timer, boot, starts, heads.get(id_))
            for id_, state, version, timer, boot, starts, _ in rows
        ]

    def entity_commit(self, kind: str, id: str, commit: EntityCommit) -> EntityRow | None:  # noqa: A002
        """Commit a handling (see `EntityStore.entity_commit`): the next row while the claim is kept."""
        item, seq, state, timer, release = commit
        sql = self._sql
        with self.connection(self._entity_doing("commit", kind, id)) as conn, conn.transaction():
            found = conn.execute(sql.entity_lock_held, (kind, id, self.owner)).fetchone()
            if found is None:
                msg = f"lost the claim of entity {kind} {id!r} to another server"
                raise StoreError(self._location, msg)
            if item == "message":
                conn.execute(sql.entity_ack, (seq, kind, id))
            boot = bool(found[0]) and item != "boot"
            version = found[1] + 1
            now = found[2]
            head = self._entity_head(conn, kind, id)
            if state is None and head is None and timer is None and not boot:
                conn.execute(sql.entity_delete, (kind, id))
                return None
            ready = entity_ready(boot, None if head is None else head.sent, timer)
            keep = not release and ready is not None and ready <= now
            conn.execute(
                sql.entity_update,
                (
                    state,
                    version,
                    timer,
                    boot,
                    1 if keep else 0,
                    ready,
                    self.owner if keep else None,
                    keep,
                    self.lease,
                    kind,
                    id,
                ),
            )
        return EntityRow(kind, id, state, version, timer, boot, 1, head) if keep else None

    def entity_fail(self, kind: str, id: str, key: str, item: EntityItem, *, interrupted: bool = False) -> None:  # noqa: A002
        """Block the entity behind its failed item and release it (see `EntityStore.entity_fail`): one statement."""
        doing = self._entity_doing("mark the failure of", kind, id)
        params = (key, item, interrupted, kind, id, self.owner)
        changed, _ = self._commits.run(f"{kind}\x00{id}", self._sql.entity_fail, params, doing)
        if not changed:
            msg = f"lost the claim of entity {kind} {id!r} to another server"
            raise StoreError(self._location, msg)

    def entity_release(self, kind: str, id: str, *, started: bool) -> None:  # noqa: A002
        """Release this store's claim of the entity (see `EntityStore.entity_release`): one statement."""
        params = (started, kind, id, self.owner)
        self._commits.run(f"{kind}\x00{id}", self._sql.entity_release, params, self._entity_doing("release", kind, id))

    def entity_renew(self, kind: str, ids: Sequence[str]) -> list[str]:
        """Renew this store's claims of *ids* (one statement); return those it lost."""
        if not ids:
            return []
        with self.connection(f"renew the claims of entities of kind {kind}") as conn:
            held = {row[0] for row in conn.execute(self._sql.entity_renew, (self.lease, kind, list(ids), self.owner))}
        return [id_ for id_ in ids if id_ not in held]

    def _entity_unblock(self, conn: Any, kind: str, id: str, boot: bool, timer: float | None) -> None:  # noqa: A002, FBT001
        head = self._entity_head(conn, kind, id)
        ready = entity_ready(boot, None if head is None else head.sent, timer)
        conn.execute(self._sql.entity_unblock, (ready, kind, id))

    def entity_start(self, kind: str, *, boot: bool) -> int:
        """Unblock the failed entities of *kind*; with *boot*, make every live one's boot due (one transaction)."""
        sql = self._sql
        with self.connection(f"start serving entities of kind {kind}") as conn, conn.transaction():
            failed = conn.execute(sql.entity_failed, (kind,)).fetchall()
            for id_, flag, timer in failed:
                head = self._entity_head(conn, kind, id_)
                ready = entity_ready(bool(flag), None if head is None else head.sent, timer)
                conn.execute(sql.entity_restart, (ready, kind, id_))
            if boot:
                conn.execute(sql.entity_boot_all, (kind,))
        return len(failed)

    def entity_retry(self, kind: str, id: str) -> bool:  # noqa: A002
        """Unblock the entity (see `EntityStore.entity_retry`)."""
        with self.connection(self._entity_doing("retry", kind, id)) as conn, conn.transaction():
            found = conn.execute(self._sql.entity_lock_failed, (kind, id)).fetchone()
            if found is None:
                return False
            self._entity_unblock(conn, kind, id, bool(found[1]), found[2])
        return True

    def entity_drop(self, kind: str, id: str) -> bool:  # noqa: A002
        """Discard the entity's failed item and unblock it (see `EntityStore.entity_drop`)."""
        sql = self._sql
        with self.connection(self._entity_doing("drop the failed item of", kind, id)) as conn, conn.transaction():
            found = conn.execute(sql.entity_lock_failed, (kind, id)).fetchone()
            if found is None:
                return False
            item, boot, timer, state, owner = found
            if item == "message":
                conn.execute(sql.entity_drop_head, (kind, id, kind, id))
            elif item == "timer":
                timer = None
                conn.execute(sql.entity_no_timer, (kind, id))
            elif item == "boot":
                boot = False
                conn.execute(sql.entity_no_boot, (kind, id))
            if (
                state is None
                and timer is None
                and not boot
                and owner is None
                and self._entity_head(conn, kind, id) is None
            ):
                conn.execute(sql.entity_delete, (kind, id))
            else:
                self._entity_unblock(conn, kind, id, bool(boot), timer)
        return True

    def entity_info(self, kind: str, id: str) -> EntityInfo | None:  # noqa: A002
        """What the store knows of the entity, or None."""
        rows = self._read(
            "SELECT state, version, timer, boot, failed, failed_item, owner, starts, updated,"
            " (SELECT count(*) FROM {s}.entity_messages AS m WHERE m.kind = e.kind AND m.id = e.id)"
            " FROM {s}.entities AS e WHERE kind = %s AND id = %s",
            (kind, id),
        )
        if not rows:
            return None
        state, version, timer, boot, failed, failed_item, owner, starts, updated, pending = rows[0]
        return EntityInfo(
            kind=kind,
            id=id,
            state=state,
            version=version,
            timer=timer,
            boot=bool(boot),
            pending=pending,
            failed=failed,
            failed_item=failed_item,
            owner=owner,
            starts=starts,
            updated=updated,
        )

    def entity_ids(self, kind: str) -> list[str]:
        """The ids of *kind* with a row, sorted."""
        return [row[0] for row in self._read("SELECT id FROM {s}.entities WHERE kind = %s ORDER BY id", (kind,))]


class _Raced(Exception):  # not an error: a signal to read the row again
    """Another process created the key between `begin`'s read and its insert."""


class _Statements:
    """The store's statements, for one schema (quoted once, when the store is made)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        f = self.format
        columns = "key, generation, session, step, phase, outcome, output, error, error_type, attempts, seconds, at"
        self.insert_new = f(
            "INSERT INTO {s}.runs (key, status, generation, sessions, input, owner, lease_until, created, updated)"
            f" VALUES (%s, 'running', 1, 1, %s, %s, {_NOW} + %s, {_NOW}, {_NOW}) ON CONFLICT (key) DO NOTHING"
        )
        self.insert_row = f(
            "INSERT INTO {s}.runs (key, status, generation, sessions, input, owner, lease_until, created, updated)"
            f" VALUES (%s, %s, %s, %s, %s, %s, {_NOW} + %s, {_NOW}, {_NOW}) ON CONFLICT (key) DO NOTHING"
        )
        self.lock_row = f(
            "SELECT status, generation, sessions, interruptions, owner, lease_until, fatal, trace_context, result,"
            f" {_NOW} FROM {{s}}.runs WHERE key = %s FOR UPDATE"
        )
        self.poison = f(
            "UPDATE {s}.runs SET status = 'poisoned', interruptions = %s, owner = NULL, lease_until = NULL,"
            f" updated = {_NOW} WHERE key = %s"
        )
        self.update_row = f(
            "UPDATE {s}.runs SET status = %s, generation = %s, sessions = %s, interruptions = %s, input = %s,"
            f" fatal = %s, owner = %s, lease_until = {_NOW} + %s, updated = {_NOW}, trace_context = %s WHERE key = %s"
        )
        self.copy_event = f(
            f"INSERT INTO {{s}}.events ({columns}, traceback) SELECT key, %s, %s, step, phase, outcome, output,"
            " error, error_type, attempts, seconds, at, traceback FROM {s}.events WHERE id = %s AND key = %s"
        )
        self.events = f(f"SELECT {_EVENT} FROM {{s}}.events WHERE key = %s ORDER BY id")
        self.generation_events = f(f"SELECT {_EVENT} FROM {{s}}.events WHERE key = %s AND generation = %s ORDER BY id")
        self.record = f(
            f"INSERT INTO {{s}}.events ({columns}, traceback)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW}, %s) RETURNING id"
        )
        self.record_ok = f(
            "INSERT INTO {s}.events (key, generation, session, step, phase, outcome, output, attempts, seconds, at)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW}) RETURNING id"
        )
        # An event and the lease's renewal in one statement: no row (and no event) once the lease is lost.
        self.record_renewing = f(
            "WITH held AS (UPDATE {s}.runs SET lease_until = "
            f"{_NOW} + %s WHERE key = %s AND owner = %s RETURNING key)"
            f" INSERT INTO {{s}}.events ({columns}, traceback)"
            f" SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW}, %s FROM held RETURNING id"
        )
        self.rolling_back = f(
            f"UPDATE {{s}}.runs SET status = 'compensating', fatal = %s, updated = {_NOW} WHERE key = %s AND owner = %s"
        )
        self.finish = f(
            "UPDATE {s}.runs SET status = %s, fatal = %s, failed_step = %s, error_type = %s, error_message = %s,"
            f" result = %s, owner = NULL, lease_until = NULL, updated = {_NOW} WHERE key = %s AND owner = %s"
        )
        self.trace_context = f(
            "UPDATE {s}.runs SET trace_context = %s WHERE key = %s AND owner = %s AND generation = %s"
            " AND trace_context IS NULL"
        )
        self.release = f("UPDATE {s}.runs SET owner = NULL, lease_until = NULL WHERE key = %s AND owner = %s")
        self._queues()
        self._entities()

    def _queues(self) -> None:
        f = self.format
        self.now = f"SELECT {_TS}"
        self.enqueue_new = f(
            "INSERT INTO {s}.messages (key, queue, status, payload, priority, due, enqueued, updated)"
            f" SELECT %s, %s, 'queued', %s, %s, {_TS} + %s, {_TS}, {_TS}"
            " WHERE NOT EXISTS (SELECT 1 FROM {s}.runs WHERE key = %s) ON CONFLICT (key) DO NOTHING"
        )
        self.enqueue = f(
            "INSERT INTO {s}.messages (key, queue, status, payload, priority, due, enqueued, updated)"
            f" VALUES (%s, %s, 'queued', %s, %s, {_TS} + %s, {_TS}, {_TS}) ON CONFLICT (key) DO NOTHING"
        )
        self.enqueue_again = f(  # a finished message queued again: its deliveries stay
            f"UPDATE {{s}}.messages SET queue = %s, status = 'queued', payload = %s, priority = %s, due = {_TS} + %s,"
            f" enqueued = {_TS}, updated = {_TS}, owner = NULL, lease_until = NULL, error = NULL WHERE key = %s"
        )
        self.lock_message = f(f"SELECT status, {_TS} FROM {{s}}.messages WHERE key = %s FOR UPDATE")
        self.run_lease = f("SELECT status, owner, lease_until FROM {s}.runs WHERE key = %s")
        self.claim = f(
            "WITH due AS (SELECT key FROM {s}.messages WHERE queue = %s AND status = 'queued'"
            f" AND due <= {_TS} ORDER BY priority DESC, due, seq LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" UPDATE {{s}}.messages AS m SET status = 'running', owner = %s, lease_until = {_TS} + %s,"
            f" deliveries = m.deliveries + 1, updated = {_TS} FROM due WHERE m.key = due.key"
            " RETURNING m.key, m.queue, m.payload, m.priority, m.due, m.enqueued, m.deliveries, m.seq"
        )
        self.renew_claims = f(
            f"UPDATE {{s}}.messages SET lease_until = {_TS} + %s WHERE owner = %s AND status = 'running'"
        )
        self.settle = f(
            f"UPDATE {{s}}.messages SET status = %s, error = %s, owner = NULL, lease_until = NULL, updated = {_TS}"
            " WHERE key = %s AND owner = %s AND status = 'running'"
        )
        self.give_back = f(
            f"UPDATE {{s}}.messages SET status = 'queued', due = {_TS} + %s, owner = NULL, lease_until = NULL,"
            f" updated = {_TS} WHERE key = %s AND owner = %s AND status = 'running'"
        )
        self.claimants = f(
            f"SELECT owner, min(lease_until) < {_TS} FROM {{s}}.messages WHERE queue = %s AND status = 'running'"
            " GROUP BY owner"
        )
        self.recover = f(  # a live holder's claims only as they expired; a dead one's all
            f"UPDATE {{s}}.messages SET status = 'queued', owner = NULL, lease_until = NULL, updated = {_TS}"
            f" WHERE queue = %s AND status = 'running' AND owner = %s AND (lease_until < {_TS} OR %s)"
        )
        self.lock_queue = f(f"SELECT owner, lease_until, {_TS} FROM {{s}}.queue_servers WHERE queue = %s FOR UPDATE")
        self.insert_queue = f(
            f"INSERT INTO {{s}}.queue_servers (queue, owner, lease_until, since) VALUES (%s, %s, {_TS} + %s, {_TS})"
            " ON CONFLICT (queue) DO NOTHING"
        )
        self.update_queue = f(
            f"UPDATE {{s}}.queue_servers SET since = CASE WHEN owner = %s THEN since ELSE {_TS} END, owner = %s,"
            f" lease_until = {_TS} + %s WHERE queue = %s"
        )
        self.leave_queue = f("DELETE FROM {s}.queue_servers WHERE queue = %s AND owner = %s")

    def _entities(self) -> None:
        f = self.format
        self.entity_send = f(
            "WITH e AS (INSERT INTO {s}.entities AS e (kind, id, ready, created, updated)"
            f" VALUES (%s, %s, {_TS}, {_TS}, {_TS}) ON CONFLICT (kind, id) DO UPDATE SET updated = excluded.updated,"
            " ready = CASE WHEN e.failed IS NOT NULL THEN NULL"
            " WHEN e.ready IS NULL OR e.ready > excluded.ready THEN excluded.ready ELSE e.ready END"
            " RETURNING e.updated)"
            " INSERT INTO {s}.entity_messages (kind, id, message, sent) SELECT %s, %s, %s, updated FROM e"
            " RETURNING seq"
        )
        self.entity_head = f(
            "SELECT seq, message, sent FROM {s}.entity_messages WHERE kind = %s AND id = %s ORDER BY seq LIMIT 1"
        )
        self.entity_heads = f(
            "SELECT DISTINCT ON (id) id, seq, message, sent FROM {s}.entity_messages"
            " WHERE kind = %s AND id = ANY(%s) ORDER BY id, seq"
        )
        self.entity_holders = f(
            "SELECT DISTINCT owner FROM {s}.entities WHERE kind = %s AND owner IS NOT NULL AND owner != %s"
            f" AND lease_until >= {_TS}"
        )
        self.entity_free = f("UPDATE {s}.entities SET owner = NULL, lease_until = NULL WHERE kind = %s AND owner = %s")
        self.entity_claim = f(
            f"WITH due AS (SELECT id FROM {{s}}.entities WHERE kind = %s AND ready <= {_TS}"
            f" AND (owner IS NULL OR lease_until < {_TS}) ORDER BY ready, id LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" UPDATE {{s}}.entities AS e SET owner = %s, lease_until = {_TS} + %s, starts = e.starts + 1"
            " FROM due WHERE e.kind = %s AND e.id = due.id"
            " RETURNING e.id, e.state, e.version, e.timer, e.boot, e.starts, e.ready"
        )
        self.entity_lock_held = f(
            f"SELECT boot, version, {_TS} FROM {{s}}.entities WHERE kind = %s AND id = %s AND owner = %s FOR UPDATE"
        )
        self.entity_ack = f("DELETE FROM {s}.entity_messages WHERE seq = %s AND kind = %s AND id = %s")
        self.entity_delete = f("DELETE FROM {s}.entities WHERE kind = %s AND id = %s")
        self.entity_update = f(
            "UPDATE {s}.entities SET state = %s, version = %s, timer = %s, boot = %s, starts = %s, ready = %s,"
            f" owner = %s, lease_until = CASE WHEN %s THEN {_TS} + %s END, updated = {_TS}"
            " WHERE kind = %s AND id = %s"
        )
        self.entity_fail = f(
            "UPDATE {s}.entities SET failed = %s, failed_item = %s, ready = NULL, owner = NULL, lease_until = NULL,"
            f" starts = CASE WHEN %s THEN starts ELSE 0 END, updated = {_TS}"
            " WHERE kind = %s AND id = %s AND owner = %s"
        )
        self.entity_release = f(
            "UPDATE {s}.entities SET owner = NULL, lease_until = NULL,"
            " starts = CASE WHEN %s THEN starts ELSE greatest(starts - 1, 0) END"
            " WHERE kind = %s AND id = %s AND owner = %s"
        )
        self.entity_renew = f(
            f"UPDATE {{s}}.entities SET lease_until = {_TS} + %s WHERE kind = %s AND id = ANY(%s) AND owner = %s"
            " RETURNING id"
        )
        self.entity_unblock = f(
            f"UPDATE {{s}}.entities SET failed = NULL, failed_item = NULL, starts = 0, ready = %s, updated = {_TS}"
            " WHERE kind = %s AND id = %s"
        )
        self.entity_failed = f(
            "SELECT id, boot, timer FROM {s}.entities WHERE kind = %s AND failed IS NOT NULL ORDER BY id FOR UPDATE"
        )
        self.entity_restart = f(
            "UPDATE {s}.entities SET failed = NULL, failed_item = NULL, ready = %s WHERE kind = %s AND id = %s"
        )
        self.entity_boot_all = f("UPDATE {s}.entities SET boot = true, ready = 0 WHERE kind = %s AND state IS NOT NULL")
        self.entity_lock_failed = f(
            "SELECT failed_item, boot, timer, state, owner FROM {s}.entities"
            " WHERE kind = %s AND id = %s AND failed IS NOT NULL FOR UPDATE"
        )
        self.entity_drop_head = f(
            "DELETE FROM {s}.entity_messages WHERE seq = (SELECT min(seq) FROM {s}.entity_messages"
            " WHERE kind = %s AND id = %s) AND kind = %s AND id = %s"
        )
        self.entity_no_timer = f("UPDATE {s}.entities SET timer = NULL WHERE kind = %s AND id = %s")
        self.entity_no_boot = f("UPDATE {s}.entities SET boot = false WHERE kind = %s AND id = %s")

    def format(self, template: str) -> str:
        """*template* with ``{s}`` replaced by the quoted schema."""
        return template.replace("{s}", self.schema)


class _Write:
    """One statement waiting in a `_GroupCommit`: what it is, and, once committed, its outcome."""

    __slots__ = ("committed", "done", "error", "key", "lead", "params", "row", "rowcount", "sql")

    def __init__(self, key: str, sql: str, params: tuple[object, ...]) -> None:
        self.key, self.sql, self.params = key, sql, params
        self.done = threading.Event()
        self.lead = False  # set by the leader that hands over: this write's thread leads the next batch
        self.rowcount = 0
        self.row: tuple[Any, ...] | None = None
        self.committed = False
        self.error: BaseException | None = None

    def ran(self, cursor: Any) -> None:
        """Keep what the statement gave: its row count and its first row."""
        self.rowcount, self.row = cursor.rowcount, cursor.fetchone() if cursor.description else None
        self.committed = True


class _GroupCommit:
    """
    The store's writes of runs, committed together when several threads write at once (group commit).

    A thread that writes while no batch is being committed commits its
    statement alone, as one autocommit statement. Statements that arrive
    while a batch is being committed wait, and the next batch takes all of
    them: one transaction, sent in one round trip (pipeline mode), one
    commit. Each write returns only once its batch committed, so an event is
    still committed before its run's next callback starts; a batch that fails
    on a statement (not on the connection) is committed again one statement
    at a time, so that one run's bad statement fails that run only.
    """

    def __init__(
        self, pool: Any, error: Callable[[str, BaseException], StoreError], closed: Callable[[], bool], location: str
    ) -> None:
        self._pool, self._error, self._closed, self._location = pool, error, closed, location
        self._lock = threading.Lock()
        self._waiting: list[_Write] = []
        self._busy = False  # a batch is being committed

    def run(self, key: str, sql: str, params: tuple[object, ...], doing: str) -> tuple[int, Any]:
        """Commit *sql* with *params*, a write of *key*'s run; return its row count and first row (None without one)."""
        if self._closed():
            raise StoreError(self._location, "the store is closed")
        write = _Write(key, sql, params)
        with self._lock:
            self._waiting.append(write)
            lead = not self._busy
            self._busy = True
        if not lead:
            try:
                write.done.wait()
            except BaseException:
                self._abandon(write)  # interrupted (Ctrl-C): this write is not committed, and leads nothing
                raise
            lead = write.lead
        if lead:
            self._lead()
        if write.error is not None:
            raise self._error(doing, write.error) from write.error
        return write.rowcount, write.row

    def _abandon(self, write: _Write) -> None:
        """Take a write that is still waiting out of the queue; hand the lead on if it was given it."""
        with self._lock:
            if write not in self._waiting:
                return  # a batch being committed holds it
            self._waiting.remove(write)
            if write.lead:
                self._hand_over()

    def _hand_over(self) -> None:
        """Under the lock: the first waiting write leads the next batch; with none, no batch is going on."""
        if self._waiting:
            following = self._waiting[0]
            following.lead = True
            following.done.set()
        else:
            self._busy = False

    def _lead(self) -> None:
        """Commit what waits, then hand over to the first write that arrived meanwhile (or stand down)."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            self._commit(batch)
        finally:
            for write in batch:
                write.done.set()
            with self._lock:
                self._hand_over()

    def _commit(self, batch: list[_Write]) -> None:
        psycopg, _ = _modules()
        try:
            with self._pool.connection() as conn:
                if len(batch) == 1:
                    self._one(conn, batch[0])
                    return
                # In the order of their keys: every batch takes its rows' locks in one order, so two
                # processes' batches can't deadlock each other.
                ordered = sorted(batch, key=lambda write: write.key)
                try:
                    with conn.pipeline(), conn.transaction():
                        cursors = [conn.execute(write.sql, write.params) for write in ordered]
                    for write, cursor in zip(ordered, cursors, strict=True):
                        write.ran(cursor)
                except psycopg.OperationalError as exc:
                    if not (exc.sqlstate or "").startswith("40"):
                        raise  # the connection broke: whether it committed can't be told, so nothing is tried again
                    self._one_by_one(conn, batch)  # the server rolled it back (class 40: a deadlock with a prune, say)
                except psycopg.Error:  # a statement failed, and the transaction with it: nothing was committed
                    self._one_by_one(conn, batch)
        except Exception as exc:  # noqa: BLE001 - handed to each waiting write, which raises it as a StoreError
            for write in batch:
                if not write.committed and write.error is None:
                    write.error = exc

    @classmethod
    def _one_by_one(cls, conn: Any, batch: list[_Write]) -> None:
        """Commit each write of a batch that was rolled back on its own, so that a failure fails its write only."""
        psycopg, _ = _modules()
        for write in batch:
            try:
                cls._one(conn, write)
            except psycopg.Error as exc:
                write.error = exc

    @staticmethod
    def _one(conn: Any, write: _Write) -> None:
        write.ran(conn.execute(write.sql, write.params))


class PostgresSession:
    """
    Records one run of one key (a `StoreSession`): each call takes a pooled connection for its one statement.

    .. versionadded:: 0.5.0
    """

    __slots__ = ("_commit", "_renew_at", "_sql", "generation", "key", "session", "store")

    def __init__(self, store: PostgresStore, key: str, generation: int, session: int) -> None:
        self._sql, self._commit = store._sql, store._commits.run  # noqa: SLF001 - the store's own session
        self.store = store
        self.key, self.generation, self.session = key, generation, session
        self._renew_at = time.time() + store.lease / 3

    def record(self, event: NewEvent) -> int:
        """Commit one callback's outcome (one statement), renewing the lease when due; return its id."""
        step, phase, outcome, output, error, error_type, attempts, seconds, traceback = event
        if traceback is not None and "\x00" in traceback:  # PostgreSQL's text can't hold NUL: shown as \x00
            traceback = traceback.replace("\x00", "\\x00")
        fields = (self.key, self.generation, self.session, step, phase, outcome, output, error, error_type)
        return self._insert(step, phase, (*fields, attempts, seconds, traceback), self._sql.record)

    def _record_ok(
        self, step: str, phase: Phase, outcome: Outcome, output: str | None, attempts: int, seconds: float
    ) -> int:
        """`record` of an event without an error, given as its fields (see `DurableRecorder`): most events."""
        if time.time() >= self._renew_at:
            fields = (self.key, self.generation, self.session, step, phase, outcome, output, None, None)
            return self._insert(step, phase, (*fields, attempts, seconds, None), self._sql.record)
        params = (self.key, self.generation, self.session, step, phase, outcome, output, attempts, seconds)
        _, row = self._commit(self.key, self._sql.record_ok, params, f"record {phase} of step {step!r}")
        number: int = row[0]  # an INSERT ... RETURNING gives its row
        return number

    def _insert(self, step: str, phase: Phase, params: tuple[object, ...], sql: str) -> int:
        store = self.store
        doing = f"record {phase} of step {step!r}"
        if time.time() >= self._renew_at:
            renewing = (store.lease, self.key, store.owner, *params)
            _, row = self._commit(self.key, self._sql.record_renewing, renewing, doing)
            if row is None:
                raise StoreError(store.location, f"lost the lease of key {self.key!r} to another process")
            self._renew_at = time.time() + store.lease / 3
        else:
            _, row = self._commit(self.key, sql, params, doing)
        number: int = row[0]  # an INSERT ... RETURNING gives its row
        return number

    def rolling_back(self, fatal: str) -> None:
        """Mark the run as rolling back, before the first compensation starts."""
        store = self.store
        doing = f"record the rollback of key {self.key!r}"
        self._commit(self.key, self._sql.rolling_back, (fatal, self.key, store.owner), doing)

    def finish(self, ending: Ending) -> None:
        """Record how the run ended, and release the key."""
        status, fatal, failed_step, error_type, message, ids = ending
        result = None if ids is None else str(list(ids))  # a list of ints prints as its JSON
        if message is not None and "\x00" in message:  # PostgreSQL's text can't hold NUL: shown as \x00
            message = message.replace("\x00", "\\x00")
        store = self.store
        params = (status, fatal, failed_step, error_type, message, result, self.key, store.owner)
        self._commit(self.key, self._sql.finish, params, f"finish key {self.key!r}")

    def set_trace_context(self, context: str) -> None:
        """Store the generation's trace context, unless it has one (not a change of the run: ``updated`` stays)."""
        store = self.store
        with store.connection(f"store the trace context of key {self.key!r}") as conn:
            conn.execute(
                self._sql.trace_context, (context[:TRACE_CONTEXT_LIMIT], self.key, store.owner, self.generation)
            )

    def release(self) -> None:
        """Give the key up without finishing (the run was interrupted)."""
        with contextlib.suppress(StoreError), self.store.connection("release") as conn:
            conn.execute(self._sql.release, (self.key, self.store.owner))


def _close_pool(pool: Any) -> None:
    with contextlib.suppress(Exception):
        pool.close(timeout=5.0)


# -- queries ----------------------------------------------------------------------------


def _run_info(row: tuple[Any, ...]) -> RunInfo:
    return RunInfo(
        key=row[0],
        status=row[1],
        generation=row[2],
        sessions=row[3],
        interruptions=row[4],
        failed_step=row[5],
        error_type=row[6],
        error=row[7],
        owner=row[8],
        created=row[9],
        updated=row[10],
        trace_context=row[11],
    )


def _filters(status: Status | None, step: str | None, error_type: str | None) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause (or "") and its parameters for the filters of `PostgresStore.runs`, as SQLite's."""
    where: list[str] = []
    params: list[object] = []
    if status is not None:
        where.append("status = %s")
        params.append(status)
    if step is not None:
        where.append('lower(failed_step) = lower(%s COLLATE "C")')  # ASCII case folding, as SQLite's NOCASE
        params.append(step)
    if error_type is not None:
        where.append('(error_type = %s OR lower(error_type) LIKE lower(%s COLLATE "C"))')  # SQLite's LIKE
        params += [error_type, f"%.{error_type}"]
    return (" WHERE " + " AND ".join(where) if where else ""), tuple(params)


def _size(n: int | None) -> int:
    return _PAGE if n is None else min(_PAGE, n)


# -- verify ------------------------------------------------------------------------------


def _catalog(conn: Any, schema: str) -> dict[str, list[tuple[object, ...]]]:
    """Every table's columns (name, type, nullable, collation, identity) and every index's definition, in *schema*."""
    found: dict[str, list[tuple[object, ...]]] = {}
    for table, *column in conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, coalesce(collation_name, ''), is_identity"
        " FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (schema,),
    ):
        found.setdefault(f"table {table}", []).append(tuple(column))
    for name, definition in conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY indexname", (schema,)
    ):
        # Its definition without the schema's name: "CREATE INDEX name ON runs USING btree (key)".
        found[f"index {name}"] = [(re.sub(r" ON (?:ONLY )?\S+?\.", " ON ", definition),)]
    return found


#: Choreograph's own rules over the rows: (query giving the number of rows breaking it and an example, what it says).
_ROW_RULES: Final = (
    (
        (
            "SELECT count(*), min(key) FROM {s}.events AS e WHERE NOT EXISTS (SELECT 1 FROM {s}.runs AS r"
            " WHERE r.key = e.key)"
        ),
        "{} events have no runs row (e.g. key {!r})",
    ),
    (
        (
            "SELECT count(*), min(e.key) FROM {s}.events AS e JOIN {s}.runs AS r ON r.key = e.key"
            " WHERE e.generation > r.generation OR e.session > r.sessions OR e.generation < 1 OR e.session < 1"
        ),
        "{} events belong to a generation or session their run never had (e.g. key {!r})",
    ),
    (
        f"SELECT count(*), min(key) FROM {{s}}.runs WHERE status NOT IN ({', '.join(map(repr, STATUSES))})",
        "{} runs have an unknown status (e.g. key {!r})",
    ),
    (
        "SELECT count(*), min(key) FROM {s}.runs WHERE (owner IS NULL) != (lease_until IS NULL)",
        "{} runs have a lease holder without a lease expiry, or the other way round (e.g. key {!r})",
    ),
    (
        f"SELECT count(*), min(key) FROM {{s}}.messages WHERE status NOT IN ({', '.join(map(repr, MESSAGE_STATUSES))})",
        "{} messages have an unknown status (e.g. key {!r})",
    ),
    (
        (
            "SELECT count(*), min(key) FROM {s}.messages WHERE (status = 'running') != (owner IS NOT NULL"
            " AND lease_until IS NOT NULL) OR (owner IS NULL) != (lease_until IS NULL)"
        ),
        "{} messages are running without a claim, or claimed without running (e.g. key {!r})",
    ),
    (
        (
            "SELECT count(*), min(kind || ' ' || id) FROM {s}.entity_messages AS m WHERE NOT EXISTS"
            " (SELECT 1 FROM {s}.entities AS e WHERE e.kind = m.kind AND e.id = m.id)"
        ),
        "{} entity messages have no entities row (e.g. entity {!r})",
    ),
    (
        "SELECT count(*), min(kind || ' ' || id) FROM {s}.entities WHERE (owner IS NULL) != (lease_until IS NULL)",
        "{} entities have a claim holder without a lease expiry, or the other way round (e.g. entity {!r})",
    ),
)
