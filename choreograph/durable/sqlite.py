"""
Durable runs on SQLite: the run history, leases, and what a resumed run restores.

One file holds every run of a flow, by idempotency key: a ``runs`` row per key
(its status, input, lease and fatal error) and an ``events`` row per finished
callback (outcome, output, error, attempts, timing). An event is committed
before the next callback starts, so after a crash the file tells exactly which
callbacks completed. The file runs in WAL mode; several processes may share it.

A process writes through one connection (`choreograph.durable._commits.Writer`):
threads that write at the same time wait in line instead of in SQLite's busy
handler, and the writes that queue up while one commits are committed together.
Reads go through a connection per thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal, Self

from .._core.callbacks import type_name
from .._core.result import Outcome
from .._errors import Phase, StoreError
from ._commits import LoopBatch, Writer
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

#: Marks a choreograph store in the SQLite header (``PRAGMA application_id``): "Chor".
APPLICATION_ID: Final = 0x43686F72
SCHEMA_VERSION: Final = 7
_SQLITE_HEADER: Final = b"SQLite format 3\x00"
#: Runs read per query when iterating `SqliteStore.runs`.
_PAGE: Final = 1000

_SCHEMA_V1: Final = """
CREATE TABLE runs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    generation INTEGER NOT NULL,
    sessions INTEGER NOT NULL,
    interruptions INTEGER NOT NULL DEFAULT 0,
    input TEXT,
    fatal TEXT,
    failed_step TEXT,
    error_type TEXT,
    owner TEXT,
    lease_until REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX runs_by_status ON runs (status, updated);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    session INTEGER NOT NULL,
    step TEXT NOT NULL,
    phase TEXT NOT NULL,
    outcome TEXT NOT NULL,
    output TEXT,
    error TEXT,
    error_type TEXT,
    attempts INTEGER NOT NULL,
    seconds REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX events_by_run ON events (key, generation, id);
"""

#: Migrations from version N to N + 1, applied in order in one transaction.
# Version 2: a finished run's result as the finishing session saw it (the ids of
# its trace's events, in order), and its fatal error's message as printed then.
_SCHEMA_V2: Final = """
ALTER TABLE runs ADD COLUMN result TEXT;
ALTER TABLE runs ADD COLUMN error_message TEXT
"""

# Version 3: runs in the order `runs()` lists them, so that it reads them a page at a time.
_SCHEMA_V3: Final = """
CREATE INDEX runs_by_updated ON runs (updated DESC, key)
"""

# Version 4: the formatted traceback of a failed callback's error (`Event.traceback`).
_SCHEMA_V4: Final = """
ALTER TABLE events ADD COLUMN traceback TEXT
"""

# Version 5: the trace context a generation's first traced session stored (`Begun.trace_context`).
_SCHEMA_V5: Final = """
ALTER TABLE runs ADD COLUMN trace_context TEXT
"""

# Version 6: durable queues. A message per key (keys are one namespace, shared with
# the runs), claimed by priority then due time (`messages_ready`); the claims of a
# server, renewed together (`messages_by_owner`); a queue's exclusive server.
_SCHEMA_V6: Final = """
CREATE TABLE messages (
    key TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    priority INTEGER NOT NULL,
    due REAL NOT NULL,
    enqueued REAL NOT NULL,
    updated REAL NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until REAL,
    error TEXT
);
CREATE INDEX messages_ready ON messages (queue, status, priority DESC, due);
CREATE INDEX messages_by_owner ON messages (owner) WHERE owner IS NOT NULL;
CREATE TABLE queue_servers (
    queue TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    lease_until REAL NOT NULL,
    since REAL NOT NULL
) WITHOUT ROWID
"""

# Version 7: durable entities (`choreograph.Entities`): a row per entity (its state, timer, boot flag,
# failure and claim, and when it is next due, on an index) and the messages queued for them, numbered
# in the order they were stored (AUTOINCREMENT: a number is never reused, as it names a durable run).
_SCHEMA_ENTITIES: Final = """
CREATE TABLE entities (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    timer REAL,
    boot INTEGER NOT NULL DEFAULT 0,
    starts INTEGER NOT NULL DEFAULT 0,
    failed TEXT,
    failed_item TEXT,
    owner TEXT,
    lease_until REAL,
    ready REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX entities_by_ready ON entities (kind, ready) WHERE ready IS NOT NULL;
CREATE TABLE entity_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    message TEXT NOT NULL,
    sent REAL NOT NULL
);
CREATE INDEX entity_messages_by_entity ON entity_messages (kind, id, seq)
"""

_MIGRATIONS: Final[dict[int, str]] = {
    0: _SCHEMA_V1,
    1: _SCHEMA_V2,
    2: _SCHEMA_V3,
    3: _SCHEMA_V4,
    4: _SCHEMA_V5,
    5: _SCHEMA_V6,
    6: _SCHEMA_ENTITIES,
}

#: ``Begun(...)`` without its generated ``__new__``, for a new key: one is made per run.
_new_begun = tuple.__new__

_RUN_INFO: Final = (
    "key, status, generation, sessions, interruptions, failed_step, error_type, error_message, owner, created, updated,"
    " trace_context"
)


class SqliteStore:
    """
    A durable store in one SQLite file: pass it as ``Coordinator(store=...)``.

    Args:
        path: The file; created when missing. Several processes may share it.
        codec: How outputs, inputs and errors are written (default:
            `JsonCodec`; `PickleCodec` only as an explicit opt-in).
        lease: Seconds a process holds a key it is running without renewing
            it (renewed as the run records events). A key whose lease expired,
            or whose holder on this machine is dead, can be taken over.
        max_interruptions: A key interrupted more often is marked
            ``"poisoned"`` and no longer run (until run with ``fresh=True``).
        synchronous: SQLite's ``synchronous`` pragma: ``"NORMAL"`` (default)
            survives a crash of the process, ``"FULL"`` also a power loss.
        busy_timeout: Seconds to wait for another process's write lock.

    Raises:
        StoreError: The file is not a choreograph store, is truncated (its
            size disagrees with its header) or corrupt, or was written by a
            newer choreograph. The file is left untouched: nothing is
            written to it or created beside it. Damage deep inside the file
            is found by `verify`, not on opening.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        lease: float = 60.0,
        max_interruptions: int = 3,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = str(Path(path))
        chosen: object = codec if codec is not None else JsonCodec()
        if not isinstance(chosen, Codec):
            msg = f"codec must implement choreograph.Codec, got {type_name(codec)}"
            raise TypeError(msg)
        self.codec: Codec = chosen
        if lease <= 0:
            msg = f"lease must be > 0 seconds, got {lease!r}"
            raise ValueError(msg)
        limit: object = max_interruptions
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            msg = f"max_interruptions must be an int >= 0, got {max_interruptions!r}"
            raise ValueError(msg)
        if synchronous not in ("NORMAL", "FULL"):
            msg = f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
            raise ValueError(msg)
        self.lease = float(lease)
        self.max_interruptions = max_interruptions
        self._synchronous = synchronous
        self._busy = float(busy_timeout)
        self.owner = new_owner()
        self._local = threading.local()
        self._writer: Writer | None = None
        self._writer_pid = 0
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        # Connections are closed by `close()`, or when the store is garbage collected.
        self._finalizer = weakref.finalize(self, _close_all, self._connections, self._lock)
        self._open()  # validate (and create or migrate) now, not at the first run

    # -- connections ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(self.path, f"cannot open: {exc}") from exc
        return conn

    def _open(self) -> None:
        """
        Check the file is ours (or empty) and sound before writing anything to it.

        First its bytes (header and size), then what only SQLite can tell,
        through a connection that can't write: a read-write one would create
        ``-wal`` and ``-shm`` files beside a file in WAL mode, and closing
        last, checkpoint a WAL into it.
        """
        try:
            state = _FileState.read(self.path)
        except OSError as exc:
            raise StoreError(self.path, f"cannot read: {exc}") from exc
        if state is not None and state.size:
            problem = state.problem()
            if problem is not None:
                raise StoreError(self.path, f"{problem}; nothing was changed")
            self._check_read_only(wal=state.wal)
        conn = self._connect()
        try:
            self._check(conn)  # again, now that the file is open for writing: it may have changed since
            self._configure(conn)
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                self._migrate(conn)
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(self.path, f"corrupt or unreadable ({exc})") from exc
        self._adopt(conn)

    def _check_read_only(self, *, wal: bool) -> None:
        """
        `_check`, and a read of the runs table, through a connection that can't write.

        Without a WAL holding frames, the file alone is the database: it is
        read as immutable, which creates no file beside it. With one, pages
        may be newer in the WAL: a read-only connection reads them (using the
        ``-shm`` index the WAL's writer left, or making one), and can't
        checkpoint them into the file.
        """
        uri = Path(self.path).absolute().as_uri() + ("?mode=ro" if wal else "?immutable=1")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self._busy, isolation_level=None)
        except sqlite3.Error as exc:  # pragma: no cover - a file just read, gone or locked away in between
            raise StoreError(self.path, f"cannot open: {exc}") from exc
        try:
            if self._check(conn):
                conn.execute("SELECT count(*) FROM runs").fetchone()
        except (StoreError, sqlite3.DatabaseError) as exc:
            if not wal and _has_frames(self.path):  # pragma: no cover - another process began writing just now
                self._check_read_only(wal=True)
                return
            if isinstance(exc, StoreError):
                raise
            raise StoreError(self.path, f"corrupt or unreadable ({exc}); nothing was changed") from exc
        finally:
            conn.close()

    def _check(self, conn: sqlite3.Connection) -> int:
        """Raise `StoreError` unless the file is a choreograph store this version reads, or empty; count its schema."""
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables: int = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"not a SQLite database, or corrupt ({exc}); nothing was changed") from exc
        problem = _owner_problem(app_id, version, has_schema=bool(tables))
        if problem is not None:
            raise StoreError(self.path, f"{problem}; nothing was changed")
        return tables

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy * 1000)}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the write lock
            while version < SCHEMA_VERSION:
                # One statement at a time: executescript() would commit the transaction.
                for statement in filter(str.strip, _MIGRATIONS[version].split(";")):
                    conn.execute(statement)
                version += 1
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={version}")

    def _adopt(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        self._local.cursor = conn.cursor()  # this thread's writes of runs and events, each read at once
        self._local.pid = os.getpid()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the file (each thread gets its own)."""
        if self._closed:
            raise StoreError(self.path, "the store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # a new thread, or a forked child
            conn = self._configured()
            self._adopt(conn)
        return conn

    def _configured(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            self._configure(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(self.path, f"corrupt or unreadable ({exc})") from exc
        return conn

    def writer(self) -> Writer:
        """This process's writer: every write of runs and events goes through its one connection."""
        writer = self._writer
        if writer is None or self._writer_pid != os.getpid():  # the first write, or a forked child's
            with self._lock:
                if self._closed:
                    raise StoreError(self.path, "the store is closed")
                writer = self._writer
                if writer is None or self._writer_pid != os.getpid():
                    conn = self._configured()
                    self._connections.append(conn)
                    writer = self._writer = Writer(conn)
                    self._writer_pid = os.getpid()
        return writer

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """
        A write transaction, taking the write lock at once (no deadlock on upgrade).

        Through the writer's connection (`Writer.transaction`: its rules hold
        in the block), unless given another connection (the one that opens the store).
        """
        if conn is None:
            try:
                with self.writer().transaction() as writing:
                    yield writing
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreError(self.path, f"cannot write: {exc}") from exc
                raise
            return
        for attempt in range(8):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == 7:  # noqa: PLR2004
                    raise StoreError(self.path, f"cannot write: {exc}") from exc
                time.sleep(0.01 * 2**attempt)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection; the store can't be used afterwards."""
        with self._lock:
            self._closed = True
            self._writer = None
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r}, codec={self.codec.name!r})"

    # -- runs: begin, record, finish -------------------------------------------

    @property
    def location(self) -> str:
        """The file, for messages."""
        return self.path

    @property
    def synchronous(self) -> Literal["NORMAL", "FULL"]:
        """
        SQLite's ``synchronous`` setting this store opens its connections with.

        .. versionadded:: 0.4.0
        """
        return self._synchronous

    @property
    def busy_timeout(self) -> float:
        """
        Seconds a connection waits for another writer's lock.

        .. versionadded:: 0.4.0
        """
        return self._busy

    def begin(self, key: str, input: str, *, fresh: bool, restore: Restore | None = None) -> Begun | str:  # noqa: A002
        """
        Take the lease of *key*, storing its encoded *input* (see `Store.begin`, also for *restore*).

        Returns:
            The holder, while another live process runs the key; else what the run starts from.
        """
        now = time.time()
        writer = self.writer()
        try:
            if restore is None:  # a new key (the common case): one statement, one transaction
                created = writer.change(_BEGIN_NEW, (key, input, self.owner, now + self.lease, now, now))
                if created:  # Begun("running", 1, 1, recorder=...), without its generated __new__
                    return _new_begun(
                        Begun, ("running", 1, 1, 0, None, (), None, SqliteSession(self, writer, key, 1, 1), None)
                    )
            begun: Begun | str = writer.write(self._begin_row, key, input, fresh, restore, now, transaction=True)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot begin key {key!r}: {exc}") from exc
        if isinstance(begun, str) or begun.status in ("ok", "poisoned"):
            return begun
        return begun._replace(recorder=SqliteSession(self, writer, key, begun.generation, begun.session))

    def begin_later(self, key: str, input: str, *, fresh: bool) -> asyncio.Future[Begun | str]:  # noqa: A002
        """
        `begin` on the running event loop's batch (see `SqliteSession.record_later`): a future of what it returns.

        The begin is one write of the batch, committed with the other runs'
        writes; its errors are `begin`'s (`StoreError`), raised by the future.
        """
        writer = self.writer()
        return writer.on_loop().add(self._begin_on, writer, key, input, fresh, time.time(), transaction=True)

    def _begin_on(
        self,
        cursor: sqlite3.Cursor,
        writer: Writer,
        key: str,
        input: str,  # noqa: A002
        fresh: bool,  # noqa: FBT001
        now: float,
    ) -> Begun | str:
        """`begin_later`'s write: a new key's row, else `_begin_row`, in the batch's transaction."""
        try:
            if cursor.execute(_BEGIN_NEW, (key, input, self.owner, now + self.lease, now, now)).rowcount:
                return _new_begun(
                    Begun, ("running", 1, 1, 0, None, (), None, SqliteSession(self, writer, key, 1, 1), None)
                )
            begun: Begun | str = self._begin_row(cursor, key, input, fresh, None, now)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot begin key {key!r}: {exc}") from exc
        if isinstance(begun, str) or begun.status in ("ok", "poisoned"):
            return begun
        return begun._replace(recorder=SqliteSession(self, writer, key, begun.generation, begun.session))

    def _begin_row(
        self,
        cursor: sqlite3.Cursor,
        key: str,
        input: str,  # noqa: A002
        fresh: bool,  # noqa: FBT001
        restore: Restore | None,
        now: float,
    ) -> Begun | str:
        """`begin` of a key the store may have (a write of the writer's: its recorder is added by `begin`)."""
        found = cursor.execute(
            "SELECT status, generation, sessions, interruptions, owner, lease_until, fatal, trace_context"
            " FROM runs WHERE key = ?",
            (key,),
        ).fetchone()
        row = None if found is None else Row(*found)
        new, outcome = begin_row(
            row,
            owner=self.owner,
            now=now,
            lease=self.lease,
            max_interruptions=self.max_interruptions,
            fresh=fresh,
            alive=lambda holder: is_alive(holder, self.owner),
        )
        if isinstance(outcome, str):
            return outcome
        if restore is not None:
            self._restore(cursor, key, row, outcome, restore)
        if new is not None:
            self._write_row(cursor, key, input, new, now, created=row is None)
        if outcome.status == "poisoned":
            return Begun(
                status="poisoned",
                generation=outcome.generation,
                session=outcome.sessions,
                interruptions=outcome.interruptions,
            )
        result = None
        if outcome.status == "ok":
            stored = cursor.execute("SELECT result FROM runs WHERE key = ?", (key,)).fetchone()[0]
            result = tuple(json.loads(stored)) if stored else None
        return Begun(
            status=outcome.status,
            generation=outcome.generation,
            session=outcome.sessions,
            interruptions=outcome.interruptions,
            fatal=outcome.fatal,
            events=self._events(cursor, key, outcome.generation),
            result=result,
            trace_context=outcome.trace_context,
        )

    def _restore(self, cursor: sqlite3.Cursor, key: str, row: Row | None, started: Row, restore: Restore) -> None:
        """Copy the events a rerun chooses into the generation *started*, in `begin`'s transaction."""
        chosen = restore(row, [] if row is None else self._events(cursor, key, row.generation))
        cursor.executemany(
            "INSERT INTO events (key, generation, session, step, phase, outcome, output, error, error_type,"
            " attempts, seconds, at, traceback) SELECT key, ?, ?, step, phase, outcome, output, error,"
            " error_type, attempts, seconds, at, traceback FROM events WHERE id = ? AND key = ?",
            [(started.generation, started.sessions, number, key) for number in chosen],
        )

    def _write_row(
        self, cursor: sqlite3.Cursor, key: str, encoded_input: str, row: Row, now: float, *, created: bool
    ) -> None:
        if created:
            cursor.execute(
                "INSERT INTO runs (key, status, generation, sessions, input, owner, lease_until, created,"
                " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, row.status, row.generation, row.sessions, encoded_input, row.owner, row.lease_until, now, now),
            )
        elif row.status == "poisoned":
            cursor.execute(
                "UPDATE runs SET status = 'poisoned', interruptions = ?, owner = NULL,"
                " lease_until = NULL, updated = ? WHERE key = ?",
                (row.interruptions, now, key),
            )
        else:
            cursor.execute(
                "UPDATE runs SET status = ?, generation = ?, sessions = ?, interruptions = ?, input = ?,"
                " fatal = ?, owner = ?, lease_until = ?, updated = ?, trace_context = ? WHERE key = ?",
                (
                    row.status,
                    row.generation,
                    row.sessions,
                    row.interruptions,
                    encoded_input,
                    row.fatal,
                    row.owner,
                    row.lease_until,
                    now,
                    row.trace_context,
                    key,
                ),
            )

    def _decode(self, key: str, text: str) -> object:
        try:
            return self.codec.decode(text)
        except CodecError as exc:
            raise StoreError(self.path, f"cannot restore the input of key {key!r}: {exc}") from exc

    def stored_input(self, key: str) -> object:
        """
        Return the input last run for *key*.

        Raises:
            KeyError: The store has no run of *key*.

        .. versionadded:: 0.1.0
        """
        row = self._read("SELECT input FROM runs WHERE key = ?", (key,))
        if not row:
            msg = f"no run of key {key!r} in {self.path}"
            raise KeyError(msg)
        return self._decode(key, row[0][0])

    # -- inspection -------------------------------------------------------------

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        try:
            return self.connection().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot read: {exc}") from exc

    def runs(
        self,
        *,
        status: Status | None = None,
        step: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
    ) -> Sequence[RunInfo]:
        """
        List runs, most recently updated first (then by key), lazily.

        The result is a read-only sequence that reads the store as it is
        used. Iterating it reads 1,000 runs per query (each page starts after
        the last run of the one before, on an index), so a loop over every run
        holds one page in memory however many runs there are; ``len()``
        counts them with one query; an index or a slice reads only those
        runs. Every use reads the store again (take ``list(...)`` for a
        snapshot); a run updated while a loop goes on may be left out of it
        (it moved ahead of the loop), and no run comes twice. It compares
        equal to a list of the same runs.

        Args:
            status: Only runs with this status.
            step: Only runs stopped by this step (ignoring case).
            error_type: Only runs whose error is of this class: its name, or
                ``module.QualName``.
            limit: At most this many.

        Raises:
            StoreError: The store is closed.
            ValueError: *limit* is negative or not an int.

        .. versionchanged:: 0.2.0 Returns a lazy sequence instead of a list.

        .. versionadded:: 0.1.0
        """
        chosen = checked_limit(limit)
        where, params = _filters(status, step, error_type)
        self.connection()  # a closed store fails here, not at the first read
        return RunList(
            iterate=lambda n: self._pages(where, params, n),
            read=lambda offset, n: self._runs_at(where, params, offset, n),
            count=lambda: self._read(f"SELECT count(*) FROM runs{where}", params)[0][0],  # noqa: S608 - constant filters
            limit=chosen,
            label=describe(self.path, status=status, step=step, error_type=error_type, limit=limit),
        )

    def _pages(self, where: str, params: tuple[object, ...], n: int | None) -> Iterator[RunInfo]:
        """Up to *n* runs, a page per query: each page starts after the last run of the one before (keyset)."""
        select = f"SELECT {_RUN_INFO} FROM runs"  # noqa: S608 - a constant list of columns
        rows = self._read(f"{select}{where} ORDER BY updated DESC, key LIMIT ?", (*params, _size(n)))
        after = f"{select}{where}{' AND' if where else ' WHERE'} updated <= ? AND (updated < ? OR key > ?)"
        while rows:
            yield from map(self._run_info, rows)
            if n is not None:
                n -= len(rows)
            if len(rows) < _PAGE or n == 0:
                return
            last_key, last_updated = rows[-1][0], rows[-1][10]
            page = (*params, last_updated, last_updated, last_key, _size(n))
            rows = self._read(f"{after} ORDER BY updated DESC, key LIMIT ?", page)

    def _runs_at(self, where: str, params: tuple[object, ...], offset: int, n: int) -> list[RunInfo]:
        sql = f"SELECT {_RUN_INFO} FROM runs{where} ORDER BY updated DESC, key LIMIT ? OFFSET ?"  # noqa: S608
        return [self._run_info(row) for row in self._read(sql, (*params, n, offset))]

    def counts(
        self, *, status: Status | None = None, step: str | None = None, error_type: str | None = None
    ) -> dict[Status, int]:
        """
        Count runs by status, with the filters of `runs` (one query).

        Returns:
            Every status, in a fixed order (``running``, ``ok``, ``failed``,
            ``compensating``, ``rolled_back``, ``poisoned``), with its number
            of runs: 0 for a status no run has, so the shape never changes.

        Raises:
            StoreError: The store is closed or can't be read.

        .. versionadded:: 0.2.0
        """
        where, params = _filters(status, step, error_type)
        found = self._read(f"SELECT status, count(*) FROM runs{where} GROUP BY status", params)  # noqa: S608
        counted: dict[Status, int] = dict.fromkeys(STATUSES, 0)
        counted.update(found)
        return counted

    def run_info(self, key: str) -> RunInfo | None:
        """
        Return what the store knows of *key*, or None.

        .. versionadded:: 0.1.0
        """
        rows = self._read(f"SELECT {_RUN_INFO} FROM runs WHERE key = ?", (key,))  # noqa: S608 - constant columns
        return self._run_info(rows[0]) if rows else None

    def _run_info(self, row: tuple[Any, ...]) -> RunInfo:
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

    def events(self, key: str, *, generation: int | None = None) -> list[Event]:
        """
        Return the recorded callbacks of *key*, in the order they finished.

        Args:
            key: The run's key.
            generation: Only this generation (default: all of them).

        .. versionadded:: 0.1.0
        """
        try:
            return self._events(self.connection().cursor(), key, generation)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot read: {exc}") from exc

    @staticmethod
    def _events(cursor: sqlite3.Cursor, key: str, generation: int | None) -> list[Event]:
        sql = (
            "SELECT key, generation, session, step, phase, outcome, output, error, error_type, attempts, seconds, at,"
            " id, traceback FROM events WHERE key = ?"
        )
        params: tuple[object, ...] = (key,)
        if generation is not None:
            sql += " AND generation = ?"
            params = (key, generation)
        return [
            Event(
                id=r[12],
                key=r[0],
                generation=r[1],
                session=r[2],
                step=r[3],
                phase=r[4],
                outcome=r[5],
                output=r[6],
                error=r[7],
                error_type=r[8],
                attempts=r[9],
                seconds=r[10],
                at=r[11],
                traceback=r[13],
            )
            for r in cursor.execute(sql + " ORDER BY id", params).fetchall()
        ]

    def decode(self, text: str) -> object:
        """
        Decode an `Event.output` (or a stored input) with this store's codec.

        Not for `Event.error`: that is an error record, which `decode_error` rebuilds.

        Raises:
            CodecError: *text* can't be decoded.

        .. versionadded:: 0.1.0
        """
        return self.codec.decode(text)

    def decode_error(self, text: str) -> BaseException:
        """
        Decode an `Event.error`: the exception, or a `StoredError` when its class can't be rebuilt.

        Builtin and choreograph exceptions come back as themselves, with their
        arguments; others as `StoredError` (``.type_name``, ``.message``).
        Never raises, and never runs code from the store (with `JsonCodec`).

        .. versionadded:: 0.2.0
        """
        return self.codec.decode_error(text)

    # -- entities (see `EntityStore`): every method one transaction, its SQL here -------------

    def _entity_error(self, what: str, kind: str, id: str, exc: sqlite3.DatabaseError) -> StoreError:  # noqa: A002
        return StoreError(self.path, f"cannot {what} entity {kind} {id!r}: {exc}")

    def entity_send(self, kind: str, id: str, message: str) -> int:  # noqa: A002
        """Queue an encoded message for an entity (see `EntityStore.entity_send`); its seq."""
        now = time.time()
        try:
            with self._write() as conn:
                seq = conn.execute(
                    "INSERT INTO entity_messages (kind, id, message, sent) VALUES (?, ?, ?, ?)",
                    (kind, id, message, now),
                ).lastrowid
                conn.execute(
                    "INSERT INTO entities (kind, id, ready, created, updated) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (kind, id) DO UPDATE SET updated = excluded.updated,"
                    " ready = CASE WHEN failed IS NOT NULL THEN NULL"
                    " WHEN ready IS NULL OR ready > excluded.ready THEN excluded.ready ELSE ready END",
                    (kind, id, now, now, now),
                )
        except sqlite3.DatabaseError as exc:
            raise self._entity_error("send a message to", kind, id, exc) from exc
        return seq or 0

    @staticmethod
    def _entity_head(conn: sqlite3.Connection, kind: str, id: str) -> EntityMessage | None:  # noqa: A002
        found = conn.execute(
            "SELECT seq, message, sent FROM entity_messages WHERE kind = ? AND id = ? ORDER BY seq LIMIT 1", (kind, id)
        ).fetchone()
        return None if found is None else EntityMessage(*found)

    def entity_claim(self, kind: str, limit: int, *, reap: bool = False) -> list[EntityRow]:
        """Claim up to *limit* due entities of *kind* (see `EntityStore.entity_claim`)."""
        now = time.time()
        claimed: list[EntityRow] = []
        try:
            with self._write() as conn:
                if reap:  # free the claims of dead processes of this machine
                    held = conn.execute(
                        "SELECT DISTINCT owner FROM entities WHERE kind = ? AND owner IS NOT NULL AND owner != ?"
                        " AND lease_until >= ?",
                        (kind, self.owner, now),
                    ).fetchall()
                    for (holder,) in held:
                        if not is_alive(holder, self.owner):
                            conn.execute(
                                "UPDATE entities SET owner = NULL, lease_until = NULL WHERE kind = ? AND owner = ?",
                                (kind, holder),
                            )
                due = conn.execute(
                    "SELECT id FROM entities WHERE kind = ? AND ready <= ? AND (owner IS NULL OR lease_until < ?)"
                    " ORDER BY ready, id LIMIT ?",
                    (kind, now, now, max(limit, 0)),
                ).fetchall()
                for (id_,) in due:
                    state, version, timer, boot, starts = conn.execute(
                        "UPDATE entities SET owner = ?, lease_until = ?, starts = starts + 1 WHERE kind = ? AND id = ?"
                        " RETURNING state, version, timer, boot, starts",
                        (self.owner, now + self.lease, kind, id_),
                    ).fetchone()
                    head = self._entity_head(conn, kind, id_)
                    claimed.append(EntityRow(kind, id_, state, version, timer, bool(boot), starts, head))
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot claim entities of kind {kind}: {exc}") from exc
        return claimed

    def entity_commit(self, kind: str, id: str, commit: EntityCommit) -> EntityRow | None:  # noqa: A002
        """Commit a handling (see `EntityStore.entity_commit`): the next row while the claim is kept."""
        item, seq, state, timer, release = commit
        now = time.time()
        try:
            with self._write() as conn:
                found = conn.execute(
                    "SELECT boot, version FROM entities WHERE kind = ? AND id = ? AND owner = ?", (kind, id, self.owner)
                ).fetchone()
                if found is None:
                    msg = f"lost the claim of entity {kind} {id!r} to another server"
                    raise StoreError(self.path, msg)
                if item == "message":
                    conn.execute("DELETE FROM entity_messages WHERE seq = ? AND kind = ? AND id = ?", (seq, kind, id))
                boot = bool(found[0]) and item != "boot"
                version = found[1] + 1
                head = self._entity_head(conn, kind, id)
                if state is None and head is None and timer is None and not boot:
                    conn.execute("DELETE FROM entities WHERE kind = ? AND id = ?", (kind, id))
                    return None
                ready = entity_ready(boot, None if head is None else head.sent, timer)
                keep = not release and ready is not None and ready <= now
                conn.execute(
                    "UPDATE entities SET state = ?, version = ?, timer = ?, boot = ?, starts = ?, ready = ?, owner = ?,"
                    " lease_until = ?, updated = ? WHERE kind = ? AND id = ?",
                    (
                        state,
                        version,
                        timer,
                        int(boot),
                        1 if keep else 0,
                        ready,
                        self.owner if keep else None,
                        now + self.lease if keep else None,
                        now,
                        kind,
                        id,
                    ),
                )
        except sqlite3.DatabaseError as exc:
            raise self._entity_error("commit", kind, id, exc) from exc
        return EntityRow(kind, id, state, version, timer, boot, 1, head) if keep else None

    def entity_fail(self, kind: str, id: str, key: str, item: EntityItem, *, interrupted: bool = False) -> None:  # noqa: A002
        """Block the entity behind its failed item and release it (see `EntityStore.entity_fail`)."""
        try:
            with self._write() as conn:
                updated = conn.execute(
                    "UPDATE entities SET failed = ?, failed_item = ?, ready = NULL, owner = NULL, lease_until = NULL,"
                    " starts = CASE WHEN ? THEN starts ELSE 0 END, updated = ? WHERE kind = ? AND id = ? AND owner = ?",
                    (key, item, interrupted, time.time(), kind, id, self.owner),
                ).rowcount
                if not updated:
                    msg = f"lost the claim of entity {kind} {id!r} to another server"
                    raise StoreError(self.path, msg)
        except sqlite3.DatabaseError as exc:
            raise self._entity_error("mark the failure of", kind, id, exc) from exc

    def entity_release(self, kind: str, id: str, *, started: bool) -> None:  # noqa: A002
        """Release this store's claim of the entity (see `EntityStore.entity_release`)."""
        try:
            with self._write() as conn:
                conn.execute(
                    "UPDATE entities SET owner = NULL, lease_until = NULL,"
                    " starts = CASE WHEN ? THEN starts ELSE max(starts - 1, 0) END"
                    " WHERE kind = ? AND id = ? AND owner = ?",
                    (started, kind, id, self.owner),
                )
        except sqlite3.DatabaseError as exc:
            raise self._entity_error("release", kind, id, exc) from exc

    def entity_renew(self, kind: str, ids: Sequence[str]) -> list[str]:
        """Renew this store's claims of *ids*; return those it lost."""
        until = time.time() + self.lease
        lost: list[str] = []
        try:
            with self._write() as conn:
                renew = "UPDATE entities SET lease_until = ? WHERE kind = ? AND id = ? AND owner = ?"
                lost.extend(id_ for id_ in ids if not conn.execute(renew, (until, kind, id_, self.owner)).rowcount)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot renew the claims of entities of kind {kind}: {exc}") from exc
        return lost

    def _entity_unblock(self, conn: sqlite3.Connection, kind: str, id: str, boot: bool, timer: float | None) -> None:  # noqa: A002, FBT001
        head = self._entity_head(conn, kind, id)
        ready = entity_ready(boot, None if head is None else head.sent, timer)
        conn.execute(
            "UPDATE entities SET failed = NULL, failed_item = NULL, starts = 0, ready = ?, updated = ?"
            " WHERE kind = ? AND id = ?",
            (ready, time.time(), kind, id),
        )

    def entity_start(self, kind: str, *, boot: bool) -> int:
        """Unblock the failed entities of *kind*; with *boot*, make every live one's boot due."""
        try:
            with self._write() as conn:
                failed = conn.execute(
                    "SELECT id, boot, timer FROM entities WHERE kind = ? AND failed IS NOT NULL", (kind,)
                ).fetchall()
                for id_, flag, timer in failed:
                    conn.execute(
                        "UPDATE entities SET failed = NULL, failed_item = NULL WHERE kind = ? AND id = ?", (kind, id_)
                    )
                    head = self._entity_head(conn, kind, id_)
                    ready = entity_ready(bool(flag), None if head is None else head.sent, timer)
                    conn.execute("UPDATE entities SET ready = ? WHERE kind = ? AND id = ?", (ready, kind, id_))
                if boot:
                    conn.execute(
                        "UPDATE entities SET boot = 1, ready = 0 WHERE kind = ? AND state IS NOT NULL", (kind,)
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot start serving entities of kind {kind}: {exc}") from exc
        return len(failed)

    def entity_retry(self, kind: str, id: str) -> bool:  # noqa: A002
        """Unblock the entity (see `EntityStore.entity_retry`)."""
        try:
            with self._write() as conn:
                found = conn.execute(
                    "SELECT boot, timer FROM entities WHERE kind = ? AND id = ? AND failed IS NOT NULL", (kind, id)
                ).fetchone()
                if found is None:
                    return False
                self._entity_unblock(conn, kind, id, bool(found[0]), found[1])
        except sqlite3.DatabaseError as exc:
            raise self._entity_error("retry", kind, id, exc) from exc
        return True

    def entity_drop(self, kind: str, id: str) -> bool:  # noqa: A002
        """Discard the entity's failed item and unblock it (see `EntityStore.entity_drop`)."""
        try:
            with self._write() as conn:
                found = conn.execute(
                    "SELECT failed_item, boot, timer, state, owner FROM entities"
                    " WHERE kind = ? AND id = ? AND failed IS NOT NULL",
                    (kind, id),
                ).fetchone()
                if found is None:
                    return False
                item, boot, timer, state, owner = found
                if item == "message":
                    conn.execute(
                        "DELETE FROM entity_messages WHERE seq = (SELECT min(seq) FROM entity_messages"
                        " WHERE kind = ? AND id = ?)",
                        (kind, id),
                    )
                elif item == "timer":
                    timer = None
                    conn.execute("UPDATE entities SET timer = NULL WHERE kind = ? AND id = ?", (kind, id))
                elif item == "boot":
                    boot = 0
                    conn.execute("UPDATE entities SET boot = 0 WHERE kind = ? AND id = ?", (kind, id))
                if (
                    state is None
                    and timer is None
                    and not boot
                    and owner is None
                    and self._entity_head(conn, kind, id) is None
                ):
                    conn.execute("DELETE FROM entities WHERE kind = ? AND id = ?", (kind, id))
                else:
                    self._entity_unblock(conn, kind, id, bool(boot), timer)
        except sqlite3.DatabaseError as exc:
            raise self._entity_error("drop the failed item of", kind, id, exc) from exc
        return True

    def entity_info(self, kind: str, id: str) -> EntityInfo | None:  # noqa: A002
        """What the store knows of the entity, or None."""
        rows = self._read(
            "SELECT state, version, timer, boot, failed, failed_item, owner, starts, updated,"
            " (SELECT count(*) FROM entity_messages AS m WHERE m.kind = e.kind AND m.id = e.id)"
            " FROM entities AS e WHERE kind = ? AND id = ?",
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
        return [row[0] for row in self._read("SELECT id FROM entities WHERE kind = ? ORDER BY id", (kind,))]

    # -- integrity ---------------------------------------------------------------

    def verify(self) -> None:
        """
        Check the whole store: SQLite's ``PRAGMA integrity_check``, then choreograph's own rules.

        Reads every page of the file, in one read transaction (about 0.4 s
        for a 50 MB store); changes nothing. Choreograph's rules: the file's size
        agrees with its header; its application id and schema version are
        this choreograph's; every table, column and index of the schema is
        there, as declared; every event belongs to a run, and to one of its
        generations and sessions so far; every status is known; a run has a
        lease holder exactly when it has a lease expiry.

        Returns:
            None: the store is sound.

        Raises:
            StoreError: Naming what is wrong: SQLite's first findings, or every
                rule broken (each with an example key).

        .. versionadded:: 0.2.0
        """
        conn = self.connection()
        try:
            state = _FileState.read(self.path)
        except OSError as exc:
            raise StoreError(self.path, f"cannot read: {exc}") from exc
        problem = "the file is gone" if state is None else state.problem()
        if problem is not None:
            raise StoreError(self.path, problem)
        try:
            conn.execute("BEGIN")  # one snapshot for every check
            try:
                problems = _integrity_problems(conn) or _schema_problems(conn) or _row_problems(conn)
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"corrupt ({exc})") from exc
        if problems:
            raise StoreError(self.path, "; ".join(problems))

    def prune(
        self,
        *,
        status: Status | None = None,
        before: float | None = None,
        keys: list[str] | None = None,
    ) -> int:
        """
        Delete finished runs and their events; return how many runs were deleted.

        Runs that are going on (``"running"`` with a live lease) are never deleted.

        Args:
            status: Only runs with this status.
            before: Only runs last updated before this time (seconds since the epoch).
            keys: Only these keys.

        .. versionadded:: 0.1.0
        """
        where: list[str] = ["(owner IS NULL OR lease_until < ?)"]
        params: list[object] = [time.time()]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if before is not None:
            where.append("updated < ?")
            params.append(before)
        if keys is not None:
            where.append(f"key IN ({','.join('?' * len(keys))})")
            params += keys
        try:
            pruned: int = self.writer().write(_prune, " AND ".join(where), params, transaction=True)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot prune: {exc}") from exc
        return pruned

    # -- queues ---------------------------------------------------------------------

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

        A new key takes one statement; a key the store knows (a message or a
        run) is decided in one transaction by `admit`. See
        `QueueStore.enqueue` for the arguments and the rules.

        Returns:
            Whether the message was stored.

        Raises:
            TypeError: A wrong type, or a record the codec can't encode (nothing is stored).
            ValueError: An empty name or key, a bad delay or priority (nothing is stored).
            StoreError: The store can't be written.

        .. versionadded:: 0.5.0
        """
        name, text, payload, rank, seconds = checked_message(
            self.codec, queue, record, key=key, delay=delay, priority=priority
        )
        now = time.time()
        fields = (text, name, payload, rank, now + seconds, now, now)
        try:
            if not self.writer().change(_ENQUEUE_NEW, (*fields, text)):  # the key has a message or a run
                with self._write() as conn:
                    found = conn.execute("SELECT status FROM messages WHERE key = ?", (text,)).fetchone()
                    run = conn.execute("SELECT status, owner, lease_until FROM runs WHERE key = ?", (text,)).fetchone()
                    live = run is not None and run_is_live(*run, me=self.owner, now=now)
                    if not admit(found and found[0], run and run[0], run_live=live):
                        return False
                    if found is None:
                        conn.execute(_ENQUEUE, fields)
                    else:
                        conn.execute(_ENQUEUE_AGAIN, (name, payload, rank, now + seconds, now, now, text))
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot enqueue key {text!r}: {exc}") from exc
        DOORBELL.ring(self, name)
        return True

    def queue_info(self, queue: str) -> dict[MessageStatus, int]:
        """
        Count *queue*'s messages by status (one query; see `QueueStore.queue_info`).

        Returns:
            ``queued`` (delayed ones included), ``running``, ``done`` and ``failed``, 0 where none.

        .. versionadded:: 0.5.0
        """
        found = self._read(
            "SELECT CASE WHEN status = 'running' AND lease_until < ? THEN 'queued' ELSE status END, count(*)"
            " FROM messages WHERE queue = ? GROUP BY 1",
            (time.time(), check_queue(queue)),
        )
        counted: dict[MessageStatus, int] = dict.fromkeys(MESSAGE_STATUSES, 0)
        counted.update(found)
        return counted

    def queues(self) -> list[str]:
        """
        Return the names of the queues that have messages, sorted.

        .. versionadded:: 0.5.0
        """
        return [row[0] for row in self._read("SELECT DISTINCT queue FROM messages ORDER BY queue")]

    def message_info(self, key: str) -> MessageInfo | None:
        """
        Return what the store knows of *key*'s message, or None.

        .. versionadded:: 0.5.0
        """
        rows = self._read(f"SELECT {MESSAGE_INFO_COLUMNS} FROM messages WHERE key = ?", (key,))  # noqa: S608 - constant columns
        return message_info_of(rows[0]) if rows else None

    def claim(self, queue: str, owner: str, *, limit: int) -> list[Message]:
        """
        Claim up to *limit* due messages of *queue* for *owner*, by priority then due time (see `QueueStore.claim`).

        A look without the write lock first: a server polling an empty
        queue never holds up the store's writers. Then, in one write
        transaction, the same choice again and the claims.

        .. versionadded:: 0.5.0
        """
        name, count = check_queue(queue), check_limit(limit)
        now = time.time()
        try:
            if not self.connection().execute(_DUE, (name, now, 1)).fetchall():  # fetchall ends the statement's read
                return []
            with self._write() as conn:
                rows = conn.execute(_DUE, (name, now, count)).fetchall()
                if not rows:  # pragma: no cover - another server took them between the look and the lock
                    return []
                marks = ",".join("?" * len(rows))
                conn.execute(
                    f"{_CLAIM} ({marks})",
                    (owner, now + self.lease, now, *(row[0] for row in rows)),
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot claim messages of queue {name!r}: {exc}") from exc
        return [
            Message(key=k, queue=name, payload=p, priority=r, due=d, enqueued=e, deliveries=n + 1)
            for _, k, p, r, d, e, n in rows
        ]

    def renew_claims(self, owner: str) -> int:
        """
        Extend *owner*'s claims by the lease (one statement); return how many it holds.

        .. versionadded:: 0.5.0
        """
        return self._change(
            "UPDATE messages SET lease_until = ? WHERE owner = ? AND status = 'running'",
            (time.time() + self.lease, owner),
            f"renew the claims of {owner}",
        )

    def settle(self, key: str, owner: str, status: Settled, error: str | None = None) -> bool:
        """
        Mark *key*'s message done or failed, if *owner* holds it (one statement; see `QueueStore.settle`).

        .. versionadded:: 0.5.0
        """
        return bool(
            self._change(
                "UPDATE messages SET status = ?, error = ?, owner = NULL, lease_until = NULL, updated = ?"
                " WHERE key = ? AND owner = ? AND status = 'running'",
                (status, error, time.time(), key, owner),
                f"settle the message of key {key!r}",
            )
        )

    def give_back(self, key: str, owner: str, *, delay: float) -> bool:
        """
        Put *key*'s message back on its queue, due in *delay* seconds, if *owner* holds it.

        .. versionadded:: 0.5.0
        """
        now = time.time()
        return bool(
            self._change(
                "UPDATE messages SET status = 'queued', due = ?, owner = NULL, lease_until = NULL, updated = ?"
                " WHERE key = ? AND owner = ? AND status = 'running'",
                (now + max(0.0, delay), now, key, owner),
                f"give back the message of key {key!r}",
            )
        )

    def recover(self, queue: str) -> int:
        """
        Queue again the messages of *queue* whose claim expired or whose claimant died (see `QueueStore.recover`).

        Reads the claimants first, without the write lock: when every claim is
        live (the usual case) nothing is written.

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        now = time.time()
        holders = self._read(
            "SELECT owner, min(lease_until) FROM messages WHERE queue = ? AND status = 'running' GROUP BY owner",
            (name,),
        )
        dead = {owner: not is_alive(owner, self.owner) for owner, _ in holders}
        lost = [owner for owner, until in holders if until < now or dead[owner]]
        if not lost:
            return 0
        recovered = 0
        try:
            with self._write() as conn:
                for owner in lost:  # a live holder's claims only as they expired; a dead one's all
                    recovered += conn.execute(
                        "UPDATE messages SET status = 'queued', owner = NULL, lease_until = NULL, updated = ?"
                        " WHERE queue = ? AND status = 'running' AND owner = ? AND (lease_until < ? OR ?)",
                        (now, name, owner, now, dead[owner]),
                    ).rowcount
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot recover the messages of queue {name!r}: {exc}") from exc
        return recovered

    def hold_queue(self, queue: str, owner: str) -> str | None:
        """
        Take or renew *queue*'s exclusive lease for *owner*; None when it holds it, else the holder.

        .. versionadded:: 0.5.0
        """
        name = check_queue(queue)
        now = time.time()
        try:
            with self._write() as conn:
                found = conn.execute("SELECT owner, lease_until, since FROM queue_servers WHERE queue = ?", (name,))
                holder, until, since = found.fetchone() or (None, None, now)
                if not may_hold(holder, until, owner=owner, now=now, alive=lambda h: is_alive(h, self.owner)):
                    return holder
                conn.execute(
                    "INSERT OR REPLACE INTO queue_servers (queue, owner, lease_until, since) VALUES (?, ?, ?, ?)",
                    (name, owner, now + self.lease, since if holder == owner else now),
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot take the lease of queue {name!r}: {exc}") from exc
        return None

    def leave_queue(self, queue: str, owner: str) -> None:
        """
        Give up *queue*'s exclusive lease, if *owner* holds it.

        .. versionadded:: 0.5.0
        """
        self._change(
            "DELETE FROM queue_servers WHERE queue = ? AND owner = ?", (queue, owner), f"leave queue {queue!r}"
        )

    def _change(self, sql: str, params: tuple[object, ...], what: str) -> int:
        """Run one writing statement (a transaction of its own); return how many rows it changed."""
        try:
            return self.writer().change(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot {what}: {exc}") from exc


def _prune(cursor: sqlite3.Cursor, condition: str, params: list[object]) -> int:
    cursor.execute(f"DELETE FROM events WHERE key IN (SELECT key FROM runs WHERE {condition})", params)  # noqa: S608
    cursor.execute(  # a pruned run's finished message goes with it: the key can be queued again
        f"DELETE FROM messages WHERE status IN ('done', 'failed') AND key IN (SELECT key FROM runs WHERE {condition})",  # noqa: S608
        params,
    )
    return cursor.execute(f"DELETE FROM runs WHERE {condition}", params).rowcount  # noqa: S608


def _insert_renewing(cursor: sqlite3.Cursor, sql: str, params: tuple[object, ...], renewal: tuple[object, ...]) -> int:
    """A write of one event and the renewal of its run's lease: the event's id."""
    number = cursor.execute(sql, params).lastrowid
    if not cursor.execute(_RENEW, renewal).rowcount:
        raise _LostLease
    return number or 0


def _event_write(
    cursor: sqlite3.Cursor,
    sql: str,
    params: tuple[object, ...],
    renewal: tuple[object, ...] | None,
    path: str,
    step: str,
    phase: str,
) -> int:
    """`SqliteSession.record_later`'s write: one event (and its lease's renewal when due); its errors as `record`'s."""
    try:
        if renewal is None:
            return cursor.execute(sql, params).lastrowid or 0
        return _insert_renewing(cursor, sql, params, renewal)
    except _LostLease:
        raise StoreError(path, f"lost the lease of key {renewal[1]!r} to another process") from None  # type: ignore[index]
    except sqlite3.DatabaseError as exc:
        raise StoreError(path, f"cannot record {phase} of step {step!r}: {exc}") from exc


class _LostLease(Exception):
    """Renewing a run's lease found the run no longer this store's (another process took it over)."""


#: A message for a key the store knows nothing of (no message, no run): one statement.
_ENQUEUE_NEW: Final = (
    "INSERT OR IGNORE INTO messages (key, queue, status, payload, priority, due, enqueued, updated)"
    " SELECT ?, ?, 'queued', ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM runs WHERE key = ?)"
)
_ENQUEUE: Final = (
    "INSERT INTO messages (key, queue, status, payload, priority, due, enqueued, updated)"
    " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)"
)
#: A finished message queued again: its deliveries stay.
_ENQUEUE_AGAIN: Final = (
    "UPDATE messages SET queue = ?, status = 'queued', payload = ?, priority = ?, due = ?, enqueued = ?,"
    " updated = ?, owner = NULL, lease_until = NULL, error = NULL WHERE key = ?"
)
#: Claims of the messages whose rowids follow, in parentheses.
_CLAIM: Final = (
    "UPDATE messages SET status = 'running', owner = ?, lease_until = ?, deliveries = deliveries + 1, updated = ?"
    " WHERE rowid IN"
)
#: A queue's due messages in the order they are claimed (on the index messages_ready).
_DUE: Final = (
    "SELECT rowid, key, payload, priority, due, enqueued, deliveries FROM messages"
    " WHERE queue = ? AND status = 'queued' AND due <= ? ORDER BY priority DESC, due, rowid LIMIT ?"
)

_INSERT: Final = (
    "INSERT INTO events (key, generation, session, step, phase, outcome, output, error, error_type,"
    " attempts, seconds, at, traceback) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: A callback's event without an error, with and without an output (the other columns stay NULL).
_INSERT_OUTPUT: Final = (
    "INSERT INTO events (key, generation, session, step, phase, outcome, output, attempts, seconds, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_BARE: Final = (
    "INSERT INTO events (key, generation, session, step, phase, outcome, attempts, seconds, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_BEGIN_NEW: Final = (
    "INSERT OR IGNORE INTO runs (key, status, generation, sessions, input, owner, lease_until, created,"
    " updated) VALUES (?, 'running', 1, 1, ?, ?, ?, ?, ?)"
)
_RENEW: Final = "UPDATE runs SET lease_until = ? WHERE key = ? AND owner = ?"

_FINISH: Final = (
    "UPDATE runs SET status = ?, fatal = ?, failed_step = ?, error_type = ?, error_message = ?,"
    " result = ?, owner = NULL, lease_until = NULL, updated = ? WHERE key = ? AND owner = ?"
)
_FINISH_OK: Final = (
    "UPDATE runs SET status = ?, fatal = NULL, failed_step = NULL, error_type = NULL, error_message = NULL,"
    " result = ?, owner = NULL, lease_until = NULL, updated = ? WHERE key = ? AND owner = ?"
)


class SqliteSession:
    """Records one run of one key through the store's writer (a `StoreSession`)."""

    __slots__ = ("_change", "_head", "_insert_row", "_renew_at", "_writer", "generation", "key", "session", "store")

    def __init__(self, store: SqliteStore, writer: Writer, key: str, generation: int, session: int) -> None:
        self.store, self._writer = store, writer
        self._insert_row, self._change = writer.insert, writer.change
        self.key, self.generation, self.session = key, generation, session
        self._head = (key, generation, session)
        self._renew_at = time.time() + store.lease / 3  # on the wall clock, as the lease's expiry is

    def record(self, event: NewEvent) -> int:
        """Commit one callback's outcome (one transaction), renewing the lease when due; return its id."""
        step, phase, outcome, output, error, error_type, attempts, seconds, traceback = event
        if error is None and error_type is None and traceback is None:
            return self._record_ok(step, phase, outcome, output, attempts, seconds)
        key, generation, session = self._head
        now = time.time()
        params = (key, generation, session, step, phase, outcome, output, error, error_type, attempts, seconds, now)
        return self._insert(step, phase, now, _INSERT, (*params, traceback))

    def _record_ok(
        self, step: str, phase: Phase, outcome: Outcome, output: str | None, attempts: int, seconds: float
    ) -> int:
        """
        `record` of an event without an error, given as its fields (see `DurableRecorder`): most events.

        Only the columns that have a value are bound: binding None costs the
        sqlite3 module more than any other value (it looks for an adapter).
        """
        key, generation, session = self._head
        now = time.time()
        params: tuple[object, ...]
        if output is None:
            sql, params = _INSERT_BARE, (key, generation, session, step, phase, outcome, attempts, seconds, now)
        else:
            sql, params = (
                _INSERT_OUTPUT,
                (key, generation, session, step, phase, outcome, output, attempts, seconds, now),
            )
        if now >= self._renew_at:
            return self._insert(step, phase, now, sql, params)
        try:
            return self._insert_row(sql, params)  # `_insert`, inlined: most events
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot record {phase} of step {step!r}: {exc}") from exc

    def _insert(self, step: str, phase: Phase, now: float, sql: str, params: tuple[object, ...]) -> int:
        """Commit an event, renewing the lease when due."""
        try:
            if now < self._renew_at:
                return self._insert_row(sql, params)
            renewal = (now + self.store.lease, self.key, self.store.owner)
            number: int = self._writer.write(_insert_renewing, sql, params, renewal)
        except _LostLease:
            raise StoreError(self.store.path, f"lost the lease of key {self.key!r} to another process") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot record {phase} of step {step!r}: {exc}") from exc
        self._renew_at = time.time() + self.store.lease / 3
        return number

    def loop_batch(self) -> LoopBatch:
        """The batch of the running event loop's writes through the store's writer (see `record_later`)."""
        return self._writer.on_loop()

    def record_later(self, event: NewEvent, batch: LoopBatch) -> asyncio.Future[int]:
        """
        `record` on *batch*: the event is committed with the other writes of the loop; a future of its id.

        Its errors are `record`'s (`StoreError`), raised by the future.
        """
        step, phase, outcome, output, error, error_type, attempts, seconds, traceback = event
        key, generation, session = self._head
        now = time.time()
        sql: str
        params: tuple[object, ...]
        if error is not None or error_type is not None or traceback is not None:
            sql = _INSERT
            params = (key, generation, session, step, phase, outcome, output, error, error_type, attempts, seconds)
            params = (*params, now, traceback)
        elif output is None:
            sql, params = _INSERT_BARE, (key, generation, session, step, phase, outcome, attempts, seconds, now)
        else:
            sql = _INSERT_OUTPUT
            params = (key, generation, session, step, phase, outcome, output, attempts, seconds, now)
        renewal = None
        if now >= self._renew_at:
            renewal = (now + self.store.lease, self.key, self.store.owner)
            self._renew_at = now + self.store.lease / 3
        return batch.add(_event_write, sql, params, renewal, self.store.path, step, phase)

    def finish_later(self, ending: Ending, batch: LoopBatch) -> asyncio.Future[None]:
        """`finish` on *batch* (see `record_later`): a future of None once committed."""
        return batch.add(self._finish_on, ending)

    def _finish_on(self, cursor: sqlite3.Cursor, ending: Ending) -> None:
        """`finish_later`'s write, on the batch's cursor; its errors as `finish`'s."""
        sql, params = self._ending(ending)
        try:
            cursor.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot finish key {self.key!r}: {exc}") from exc

    def rolling_back(self, fatal: str) -> None:
        """Mark the run as rolling back, before the first compensation starts."""
        try:
            self._change(
                "UPDATE runs SET status = 'compensating', fatal = ?, updated = ? WHERE key = ? AND owner = ?",
                (fatal, time.time(), self.key, self.store.owner),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot record the rollback of key {self.key!r}: {exc}") from exc

    def finish(self, ending: Ending) -> None:
        """Record how the run ended, and release the key."""
        sql, params = self._ending(ending)
        try:
            self._change(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot finish key {self.key!r}: {exc}") from exc

    def _ending(self, ending: Ending) -> tuple[str, tuple[object, ...]]:
        """The statement that finishes the run as *ending* says, and its parameters."""
        status, fatal, failed_step, error_type, message, ids = ending
        # The event ids as JSON: a list of ints prints as its JSON, without json.dumps's three calls.
        result = None if ids is None else str(list(ids))
        now = time.time()
        if result is not None and fatal is None and failed_step is None and error_type is None and message is None:
            return _FINISH_OK, (status, result, now, self.key, self.store.owner)  # bind no None
        return _FINISH, (status, fatal, failed_step, error_type, message, result, now, self.key, self.store.owner)

    def set_trace_context(self, context: str) -> None:
        """Store the generation's trace context, unless it has one (not a change of the run: ``updated`` stays)."""
        try:
            self._change(
                "UPDATE runs SET trace_context = ? WHERE key = ? AND owner = ? AND generation = ?"
                " AND trace_context IS NULL",
                (context[:TRACE_CONTEXT_LIMIT], self.key, self.store.owner, self.generation),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot store the trace context of key {self.key!r}: {exc}") from exc

    def release(self) -> None:
        """Give the key up without finishing (the run was interrupted)."""
        with contextlib.suppress(sqlite3.Error):
            self._change(
                "UPDATE runs SET owner = NULL, lease_until = NULL WHERE key = ? AND owner = ?",
                (self.key, self.store.owner),
            )


def _close_all(connections: list[sqlite3.Connection], lock: threading.Lock) -> None:
    with lock:
        closing = list(connections)
        connections.clear()
    for conn in closing:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


# -- the file, as its bytes tell ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FileState:
    """What a store file's bytes say, read without SQLite (which would create files beside it)."""

    size: int
    header: bytes  # the database header: its first 100 bytes
    wal: bool  # a WAL file with frames beside it: the file's header may be out of date until a checkpoint

    @classmethod
    def read(cls, path: str) -> _FileState | None:
        """Read *path*'s header and size; None when there is no file."""
        before = _has_frames(path)  # and after: another process may checkpoint and close in between
        try:
            with Path(path).open("rb") as file:
                header = file.read(100)
                size = os.fstat(file.fileno()).st_size
        except FileNotFoundError:
            return None
        return cls(size, header, before or _has_frames(path))

    def _u32(self, offset: int) -> int:
        return int.from_bytes(self.header[offset : offset + 4], "big")

    def problem(self) -> str | None:
        """
        What makes the (non-empty) file unusable, as far as its bytes tell; None if nothing does.

        The SQLite header gives the page size (offset 16; 1 means 65536) and,
        when the "version-valid-for" number (offset 92) equals the change
        counter (offset 24), the database's size in pages (offset 28): the
        file must be exactly that long. While a WAL holds frames, pages
        reach the file at checkpoints, and a checkpoint cut short leaves the
        header ahead of the file's length, so the file then only has to be
        whole pages; the WAL's own frames are checked by SQLite.
        """
        if self.header[:16] != _SQLITE_HEADER:
            return "not a SQLite database (its header is wrong)"
        if self.size < 100:  # noqa: PLR2004 - the size of a SQLite header
            return f"truncated: {self.size} bytes, shorter than a SQLite header"
        raw = int.from_bytes(self.header[16:18], "big")
        page_size = 65536 if raw == 1 else raw
        if not 512 <= page_size <= 65536 or page_size & (page_size - 1):  # noqa: PLR2004 - SQLite's limits
            return f"corrupt: its header gives an impossible page size ({raw})"
        pages = self._u32(28)
        if pages and self._u32(24) == self._u32(92) and not self.wal and self.size != pages * page_size:
            return (
                f"truncated or damaged: its header says {pages} pages of {page_size} bytes"
                f" ({pages * page_size} bytes), the file has {self.size} bytes"
            )
        if self.size % page_size:
            return f"truncated or damaged: {self.size} bytes is not a whole number of {page_size}-byte pages"
        return None


def _has_frames(path: str) -> bool:
    """Whether *path* has a WAL file beside it with at least one frame (after its 32-byte header)."""
    try:
        return os.stat(f"{path}-wal").st_size > 32  # noqa: PLR2004, PTH116 - a WAL header's size; a plain stat
    except OSError:
        return False


def _owner_problem(app_id: int, version: int, *, has_schema: bool) -> str | None:
    """Why a SQLite file with this application id, user version and schema is no store of ours, or None."""
    if app_id != APPLICATION_ID and (app_id != 0 or has_schema):
        return "not a choreograph store (an SQLite file of another application)"
    if version > SCHEMA_VERSION:
        return f"schema version {version} is newer than this choreograph supports ({SCHEMA_VERSION})"
    return None


# -- queries --------------------------------------------------------------------------


def _filters(status: Status | None, step: str | None, error_type: str | None) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause (or "") and its parameters for the filters of `SqliteStore.runs`."""
    where: list[str] = []
    params: list[object] = []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if step is not None:
        where.append("failed_step = ? COLLATE NOCASE")
        params.append(step)
    if error_type is not None:
        where.append("(error_type = ? OR error_type LIKE ?)")
        params += [error_type, f"%.{error_type}"]
    return (" WHERE " + " AND ".join(where) if where else ""), tuple(params)


def _size(n: int | None) -> int:
    return _PAGE if n is None else min(_PAGE, n)


# -- verify -----------------------------------------------------------------------------


def _integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """SQLite's findings: ``integrity_check``, or ``quick_check`` when the damage stops it, then the error."""
    try:
        rows = conn.execute("PRAGMA integrity_check(100)").fetchall()
    except sqlite3.DatabaseError:  # a damaged page it had to follow; quick_check walks pages without that
        try:
            rows = conn.execute("PRAGMA quick_check(100)").fetchall()
        except sqlite3.DatabaseError as exc:  # damage that stops quick_check too: its error is the finding
            return [f"SQLite's integrity check failed: {exc}"]
    found = [line for row in rows for line in row[0].splitlines() if not line.startswith("*** ")]
    if found == ["ok"]:
        return []
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""  # noqa: PLR2004 - enough to name the damage
    return [f"SQLite's integrity check failed: {'; '.join(found[:3])}{more}"]


@functools.cache
def _expected_schema() -> dict[str, list[tuple[object, ...]]]:
    """Every table's columns (name, type, not null, primary key) and index's columns, from the migrations."""
    conn = sqlite3.connect(":memory:")
    try:
        for version in range(SCHEMA_VERSION):
            for statement in filter(str.strip, _MIGRATIONS[version].split(";")):
                conn.execute(statement)
        return _schema(conn)
    finally:
        conn.close()


def _schema(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    found: dict[str, list[tuple[object, ...]]] = {}
    for kind, name in conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%'"
    ):
        pragma = "table_info" if kind == "table" else "index_xinfo"
        rows = conn.execute(f"PRAGMA {pragma}({name!r})").fetchall()
        # A table's columns as (name, type, not null, primary key); an index's as (name, descending, collation, key).
        found[f"{kind} {name}"] = [(r[1], r[2].upper(), r[3], r[5]) if kind == "table" else r[2:] for r in rows]
    return found


def _schema_problems(conn: sqlite3.Connection) -> list[str]:
    problems: list[str] = []
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id != APPLICATION_ID:
        problems.append(f"application id {app_id:#x} is not choreograph's ({APPLICATION_ID:#x})")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
    found = _schema(conn)
    for name, columns in _expected_schema().items():
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
    return problems


#: Choreograph's own rules over the rows: (query giving the number of rows breaking it and an example, what it says).
_ROW_RULES: Final = (
    (
        "SELECT count(*), min(key) FROM events WHERE key NOT IN (SELECT key FROM runs)",
        "{} events have no runs row (e.g. key {!r})",
    ),
    (
        (
            "SELECT count(*), min(e.key) FROM events AS e JOIN runs AS r ON r.key = e.key"
            " WHERE e.generation > r.generation OR e.session > r.sessions OR e.generation < 1 OR e.session < 1"
        ),
        "{} events belong to a generation or session their run never had (e.g. key {!r})",
    ),
    (
        f"SELECT count(*), min(key) FROM runs WHERE status NOT IN ({', '.join(map(repr, STATUSES))})",  # noqa: S608
        "{} runs have an unknown status (e.g. key {!r})",
    ),
    (
        "SELECT count(*), min(key) FROM runs WHERE (owner IS NULL) != (lease_until IS NULL)",
        "{} runs have a lease holder without a lease expiry, or the other way round (e.g. key {!r})",
    ),
    (
        f"SELECT count(*), min(key) FROM messages WHERE status NOT IN ({', '.join(map(repr, MESSAGE_STATUSES))})",  # noqa: S608
        "{} messages have an unknown status (e.g. key {!r})",
    ),
    (
        (
            "SELECT count(*), min(key) FROM messages WHERE (status = 'running') != (owner IS NOT NULL"
            " AND lease_until IS NOT NULL) OR (owner IS NULL) != (lease_until IS NULL)"
        ),
        "{} messages are running without a claim, or claimed without running (e.g. key {!r})",
    ),
    (
        (
            "SELECT count(*), min(kind || ' ' || id) FROM entity_messages AS m WHERE NOT EXISTS"
            " (SELECT 1 FROM entities AS e WHERE e.kind = m.kind AND e.id = m.id)"
        ),
        "{} entity messages have no entities row (e.g. entity {!r})",
    ),
    (
        "SELECT count(*), min(kind || ' ' || id) FROM entities WHERE (owner IS NULL) != (lease_until IS NULL)",
        "{} entities have a claim holder without a lease expiry, or the other way round (e.g. entity {!r})",
    ),
)


def _row_problems(conn: sqlite3.Connection) -> list[str]:
    problems: list[str] = []
    for sql, message in _ROW_RULES:
        count, example = conn.execute(sql).fetchone()
        if count:
            problems.append(message.format(count, example))
    return problems
