"""
Durable runs on SQLite: the run history, leases, and what a resumed run restores.

One file holds every run of a flow, by idempotency key: a ``runs`` row per key
(its status, input, lease and fatal error) and an ``events`` row per finished
callback (outcome, output, error, attempts, timing). An event is committed
before the next callback starts, so after a crash the file tells exactly which
callbacks completed. The file runs in WAL mode; several processes may share it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal, Self

from .._core.callbacks import type_name
from .._errors import StoreError
from .codec import Codec, CodecError, JsonCodec
from .leases import is_alive, new_owner
from .protocol import Begun, Ending, Event, NewEvent, Row, RunInfo, Status, begin_row

#: Marks a choreograph store in the SQLite header (``PRAGMA application_id``): "Chor".
APPLICATION_ID: Final = 0x43686F72
SCHEMA_VERSION: Final = 2
_SQLITE_HEADER: Final = b"SQLite format 3\x00"

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

_MIGRATIONS: Final[dict[int, str]] = {0: _SCHEMA_V1, 1: _SCHEMA_V2}

_RUN_INFO: Final = (
    "key, status, generation, sessions, interruptions, failed_step, error_type, error_message, owner, created, updated"
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
        StoreError: The file is not a choreograph store, is corrupt, or was
            written by a newer choreograph. The file is left untouched.

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
        """Check the file is ours (or empty) before writing anything to it."""
        try:
            with Path(self.path).open("rb") as file:
                header = file.read(len(_SQLITE_HEADER))
        except FileNotFoundError:
            header = b""
        except OSError as exc:
            raise StoreError(self.path, f"cannot read: {exc}") from exc
        if header and header != _SQLITE_HEADER:
            raise StoreError(self.path, "not a SQLite database (its header is wrong); nothing was changed")
        conn = self._connect()
        try:
            self._check(conn)
            self._configure(conn)
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                self._migrate(conn)
            conn.execute("SELECT count(*) FROM runs").fetchone()  # fails early on a damaged file
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(self.path, f"corrupt or unreadable ({exc})") from exc
        self._adopt(conn)

    def _check(self, conn: sqlite3.Connection) -> None:
        """Raise `StoreError` unless the file is a choreograph store this version reads, or empty."""
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"not a SQLite database, or corrupt ({exc})") from exc
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            problem = "not a choreograph store (an SQLite file of another application); nothing was changed"
            raise StoreError(self.path, problem)
        if version > SCHEMA_VERSION:
            problem = f"schema version {version} is newer than this choreograph supports ({SCHEMA_VERSION})"
            raise StoreError(self.path, problem)

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
        self._local.pid = os.getpid()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to the file (each thread gets its own)."""
        if self._closed:
            raise StoreError(self.path, "the store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():  # a new thread, or a forked child
            conn = self._connect()
            try:
                self._configure(conn)
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise StoreError(self.path, f"corrupt or unreadable ({exc})") from exc
            self._adopt(conn)
        return conn

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction, taking the write lock at once (no deadlock on upgrade)."""
        conn = conn if conn is not None else self.connection()
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
        self._closed = True
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

    def begin(self, key: str, input: str, *, fresh: bool) -> Begun | str:  # noqa: A002
        """
        Take the lease of *key*, storing its encoded *input* (see `Store.begin`).

        Returns:
            The holder, while another live process runs the key; else what the run starts from.
        """
        now = time.time()
        conn = self.connection()
        try:
            # A new key (the common case): one statement, one transaction.
            created = conn.execute(
                "INSERT OR IGNORE INTO runs (key, status, generation, sessions, input, owner, lease_until, created,"
                " updated) VALUES (?, 'running', 1, 1, ?, ?, ?, ?, ?)",
                (key, input, self.owner, now + self.lease, now, now),
            ).rowcount
            if created:
                return Begun(status="running", generation=1, session=1, recorder=SqliteSession(self, conn, key, 1, 1))
            with self._write(conn):
                found = conn.execute(
                    "SELECT status, generation, sessions, interruptions, owner, lease_until, fatal"
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
                if new is not None:
                    self._write_row(conn, key, input, new, now, created=row is None)
                if outcome.status == "poisoned":
                    return Begun(
                        status="poisoned",
                        generation=outcome.generation,
                        session=outcome.sessions,
                        interruptions=outcome.interruptions,
                    )
                events = self.events(key, generation=outcome.generation)
                result = None
                if outcome.status == "ok":
                    stored = conn.execute("SELECT result FROM runs WHERE key = ?", (key,)).fetchone()[0]
                    result = tuple(json.loads(stored)) if stored else None
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot begin key {key!r}: {exc}") from exc
        recorder = None
        if outcome.status != "ok":
            recorder = SqliteSession(self, conn, key, outcome.generation, outcome.sessions)
        return Begun(
            status=outcome.status,
            generation=outcome.generation,
            session=outcome.sessions,
            interruptions=outcome.interruptions,
            fatal=outcome.fatal,
            events=events,
            result=result,
            recorder=recorder,
        )

    def _write_row(
        self, conn: sqlite3.Connection, key: str, encoded_input: str, row: Row, now: float, *, created: bool
    ) -> None:
        if created:
            conn.execute(
                "INSERT INTO runs (key, status, generation, sessions, input, owner, lease_until, created,"
                " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, row.status, row.generation, row.sessions, encoded_input, row.owner, row.lease_until, now, now),
            )
        elif row.status == "poisoned":
            conn.execute(
                "UPDATE runs SET status = 'poisoned', interruptions = ?, owner = NULL,"
                " lease_until = NULL, updated = ? WHERE key = ?",
                (row.interruptions, now, key),
            )
        else:
            conn.execute(
                "UPDATE runs SET status = ?, generation = ?, sessions = ?, interruptions = ?, input = ?,"
                " fatal = ?, owner = ?, lease_until = ?, updated = ? WHERE key = ?",
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
    ) -> list[RunInfo]:
        """
        List runs, most recently updated first.

        Args:
            status: Only runs with this status.
            step: Only runs stopped by this step (ignoring case).
            error_type: Only runs whose error is of this class: its name, or
                ``module.QualName``.
            limit: At most this many.

        .. versionadded:: 0.1.0
        """
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
        sql = f"SELECT {_RUN_INFO} FROM runs"  # noqa: S608 - a constant list of columns
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated DESC, key"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._run_info(row) for row in self._read(sql, tuple(params))]

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
        )

    def events(self, key: str, *, generation: int | None = None) -> list[Event]:
        """
        Return the recorded callbacks of *key*, in the order they finished.

        Args:
            key: The run's key.
            generation: Only this generation (default: all of them).

        .. versionadded:: 0.1.0
        """
        sql = (
            "SELECT key, generation, session, step, phase, outcome, output, error, error_type, attempts, seconds, at,"
            " id FROM events WHERE key = ?"
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
            )
            for r in self._read(sql + " ORDER BY id", params)
        ]

    def decode(self, text: str) -> object:
        """
        Decode an `Event.output` with this store's codec.

        .. versionadded:: 0.1.0
        """
        return self.codec.decode(text)

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
        condition = " AND ".join(where)
        try:
            with self._write() as conn:
                conn.execute(f"DELETE FROM events WHERE key IN (SELECT key FROM runs WHERE {condition})", params)  # noqa: S608
                return conn.execute(f"DELETE FROM runs WHERE {condition}", params).rowcount  # noqa: S608
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot prune: {exc}") from exc


class SqliteSession:
    """Records one run of one key through this thread's connection (a `StoreSession`)."""

    __slots__ = ("_conn", "_renew_at", "generation", "key", "session", "store")

    _INSERT: Final = (
        "INSERT INTO events (key, generation, session, step, phase, outcome, output, error, error_type,"
        " attempts, seconds, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection, key: str, generation: int, session: int) -> None:
        self.store, self._conn, self.key, self.generation, self.session = store, conn, key, generation, session
        self._renew_at = time.monotonic() + store.lease / 3

    def record(self, event: NewEvent) -> int:
        """Commit one callback's outcome (one transaction), renewing the lease when due; return its id."""
        conn = self._conn
        try:
            cursor = conn.execute(
                self._INSERT,
                (
                    self.key,
                    self.generation,
                    self.session,
                    event.step,
                    event.phase,
                    event.outcome,
                    event.output,
                    event.error,
                    event.error_type,
                    event.attempts,
                    event.seconds,
                    time.time(),
                ),
            )
            if time.monotonic() >= self._renew_at:
                self._renew(conn)
        except sqlite3.DatabaseError as exc:
            problem = f"cannot record {event.phase} of step {event.step!r}: {exc}"
            raise StoreError(self.store.path, problem) from exc
        return cursor.lastrowid or 0

    def _renew(self, conn: sqlite3.Connection) -> None:
        lease = self.store.lease
        updated = conn.execute(
            "UPDATE runs SET lease_until = ? WHERE key = ? AND owner = ?",
            (time.time() + lease, self.key, self.store.owner),
        ).rowcount
        if not updated:
            raise StoreError(self.store.path, f"lost the lease of key {self.key!r} to another process")
        self._renew_at = time.monotonic() + lease / 3

    def rolling_back(self, fatal: str) -> None:
        """Mark the run as rolling back, before the first compensation starts."""
        try:
            self._conn.execute(
                "UPDATE runs SET status = 'compensating', fatal = ?, updated = ? WHERE key = ? AND owner = ?",
                (fatal, time.time(), self.key, self.store.owner),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot record the rollback of key {self.key!r}: {exc}") from exc

    def finish(self, ending: Ending) -> None:
        """Record how the run ended, and release the key."""
        result = None if ending.result is None else json.dumps(ending.result)
        try:
            self._conn.execute(
                "UPDATE runs SET status = ?, fatal = ?, failed_step = ?, error_type = ?, error_message = ?,"
                " result = ?, owner = NULL, lease_until = NULL, updated = ? WHERE key = ? AND owner = ?",
                (
                    ending.status,
                    ending.fatal,
                    ending.failed_step,
                    ending.error_type,
                    ending.error_message,
                    result,
                    time.time(),
                    self.key,
                    self.store.owner,
                ),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot finish key {self.key!r}: {exc}") from exc

    def release(self) -> None:
        """Give the key up without finishing (the run was interrupted)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute(
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
