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
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Self

from ._bag import DataBag
from ._codec import Codec, CodecError, JsonCodec, error_message
from ._errors import MISSING, ChoreographError, Phase, StepError, StoreError, UnstorableOutput
from ._result import Finished, Outcome, RawCall
from ._step import type_name

#: Marks a choreograph store in the SQLite header (``PRAGMA application_id``): "Chor".
APPLICATION_ID: Final = 0x43686F72
SCHEMA_VERSION: Final = 2
_SQLITE_HEADER: Final = b"SQLite format 3\x00"

Status = Literal["running", "ok", "failed", "compensating", "rolled_back", "poisoned"]

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

_HOST: Final = socket.gethostname()
_RUN_INFO: Final = (
    "key, status, generation, sessions, interruptions, failed_step, error_type, error_message, owner, created, updated"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """
    One durable run, as the store knows it.

    Attributes:
        key: The idempotency key.
        status: ``"running"``, ``"ok"``, ``"failed"``, ``"compensating"``
            (rolling back, or a compensation failed), ``"rolled_back"`` or
            ``"poisoned"``.
        generation: Bumped each time the key starts from scratch.
        sessions: How many times a run of this key started.
        interruptions: Runs of this key that ended without finishing (a crash).
        failed_step: The step whose failure stopped the run, if any.
        error_type: The class of the run's fatal error (for `JobFailed`, of
            the job's error), if any.
        error: The fatal error's message, if any.
        owner: Who holds the lease while the run is going on.
        created: When the key was first run (seconds since the epoch).
        updated: When its row last changed.

    .. versionadded:: 0.1.0
    """

    key: str
    status: Status
    generation: int
    sessions: int
    interruptions: int
    failed_step: str | None
    error_type: str | None
    error: str | None
    owner: str | None
    created: float
    updated: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """
    One callback's recorded outcome.

    Attributes:
        id: Its number in the store: events are numbered in the order they were recorded.
        key: The run's idempotency key.
        generation: The generation of the run it belongs to.
        session: Which start of the run recorded it, from 1.
        step: The step's name.
        phase: ``"precheck"``, ``"job"`` or ``"compensate"``.
        outcome: As in `Call.outcome`.
        output: The encoded output, if one was stored (see `SqliteStore.decode`).
        error: The encoded error, if any.
        error_type: The error's class, if any.
        attempts: Calls made, retries included.
        seconds: Wall time.
        at: When it was recorded (seconds since the epoch).

    .. versionadded:: 0.1.0
    """

    id: int
    key: str
    generation: int
    session: int
    step: str
    phase: Phase
    outcome: Outcome
    output: str | None
    error: str | None
    error_type: str | None
    attempts: int
    seconds: float
    at: float


class RestoredStep:
    """A step that completed in an earlier session: what the run gets back."""

    __slots__ = ("calls", "errors", "job_ok", "job_output", "precheck_output")

    def __init__(self) -> None:
        from ._engine import NOTHING  # noqa: PLC0415 - _engine imports this module's users

        self.calls: tuple[RawCall, ...] = ()
        self.precheck_output: object = NOTHING
        self.job_output: object = NOTHING
        self.errors: tuple[StepError, ...] = ()
        self.job_ok = False


@dataclass(slots=True)
class Resumption:
    """What a run of a key starts from."""

    generation: int
    session: int
    status: Status
    restored: dict[str, RestoredStep]
    #: The latest event of each callback, by (case-folded step, phase): what a restored trace entry shows.
    latest_ids: dict[tuple[str, str], int]
    attempts: dict[tuple[str, Phase], int]
    compensated: frozenset[str]
    fatal: ChoreographError | None
    input: object
    interruptions: int


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
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._active: set[str] = set()  # keys this store object is running now, in any thread
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

    def _owner_alive(self, owner: str) -> bool:
        """Whether the holder of a lease may still be running (checked only on this machine)."""
        host, _, rest = owner.partition(":")
        pid_text, _, _ = rest.partition(":")
        if host != _HOST or owner == self.owner or not pid_text.isdigit():
            return owner != self.owner
        pid = int(pid_text)
        if pid == os.getpid():
            return True  # another store object of this process: trust its lease
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def begin(self, key: str, input: object, *, fresh: bool) -> Resumption | str:  # noqa: A002
        """
        Take the lease of *key* and tell how its run starts.

        Returns:
            The owner holding the lease, when another live process runs the key;
            else what the run starts from.
        """
        try:
            encoded_input = self.codec.encode(input)
        except CodecError as exc:
            raise TypeError(f"the input of key {key!r} can't be stored: {exc}") from exc
        with self._lock:
            if key in self._active:  # another thread of this process runs it: wait like for a process
                return self.owner
            self._active.add(key)
        try:
            begun = self._begin(key, input, encoded_input, fresh=fresh)
        except BaseException:
            self.done(key)
            raise
        if isinstance(begun, str) or begun.status in ("ok", "poisoned"):
            self.done(key)
        return begun

    def done(self, key: str) -> None:
        """This process no longer runs *key*."""
        with self._lock:
            self._active.discard(key)

    def _begin(self, key: str, input: object, encoded_input: str, *, fresh: bool) -> Resumption | str:  # noqa: A002, C901
        now = time.time()
        conn = self.connection()
        try:
            # A new key (the common case): one statement, one transaction.
            created = conn.execute(
                "INSERT OR IGNORE INTO runs (key, status, generation, sessions, input, owner, lease_until, created,"
                " updated) VALUES (?, 'running', 1, 1, ?, ?, ?, ?, ?)",
                (key, encoded_input, self.owner, now + self.lease, now, now),
            ).rowcount
            if created:
                return Resumption(1, 1, "running", {}, {}, {}, frozenset(), None, input, 0)
            with self._write(conn):
                row = conn.execute(
                    "SELECT status, generation, sessions, interruptions, owner, lease_until, fatal"
                    " FROM runs WHERE key = ?",
                    (key,),
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO runs (key, status, generation, sessions, input, owner, lease_until, created,"
                        " updated) VALUES (?, 'running', 1, 1, ?, ?, ?, ?, ?)",
                        (key, encoded_input, self.owner, now + self.lease, now, now),
                    )
                    return Resumption(1, 1, "running", {}, {}, {}, frozenset(), None, input, 0)
                status, generation, sessions, interruptions, owner, lease_until, fatal = row
                if owner is not None and owner != self.owner and lease_until > now and self._owner_alive(owner):
                    return str(owner)
                if status == "running":
                    interruptions += 1
                    if interruptions > self.max_interruptions and not fresh:
                        conn.execute(
                            "UPDATE runs SET status = 'poisoned', interruptions = ?, owner = NULL,"
                            " lease_until = NULL, updated = ? WHERE key = ?",
                            (interruptions, now, key),
                        )
                        status = "poisoned"
                if status in ("ok", "poisoned") and not fresh:
                    return Resumption(generation, sessions, status, {}, {}, {}, frozenset(), None, input, interruptions)
                if fresh or status in ("ok", "poisoned", "rolled_back"):
                    generation, interruptions, fatal = generation + 1, 0, None
                    status = "running"
                elif status != "compensating":
                    status = "running"
                sessions += 1
                conn.execute(
                    "UPDATE runs SET status = ?, generation = ?, sessions = ?, interruptions = ?, input = ?,"
                    " fatal = ?, owner = ?, lease_until = ?, updated = ? WHERE key = ?",
                    (
                        status,
                        generation,
                        sessions,
                        interruptions,
                        encoded_input,
                        fatal,
                        self.owner,
                        now + self.lease,
                        now,
                        key,
                    ),
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot begin key {key!r}: {exc}") from exc
        try:
            resumption = self._resumption(conn, key, generation, sessions, status, input, interruptions)
        except BaseException:
            self._release(conn, key)  # the run won't start: don't leave the key leased
            raise
        if fatal is not None:
            decoded = self.codec.decode_error(fatal)
            resumption.fatal = decoded if isinstance(decoded, ChoreographError) else None
        return resumption

    def _resumption(
        self,
        conn: sqlite3.Connection,
        key: str,
        generation: int,
        session: int,
        status: Status,
        input: object,  # noqa: A002
        interruptions: int,
    ) -> Resumption:
        """Read a generation's events: what completed, what it output, attempts so far."""
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        attempts: dict[tuple[str, Phase], int] = {}
        compensated: set[str] = set()
        names: dict[str, str] = {}
        try:
            rows = conn.execute(
                "SELECT step, phase, outcome, output, error, attempts, seconds, id FROM events"
                " WHERE key = ? AND generation = ? ORDER BY id",
                (key, generation),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.path, f"cannot read the events of key {key!r}: {exc}") from exc
        for row in rows:
            step, phase = row[0], row[1]
            folded = step.casefold()
            names[folded] = step
            latest[folded, phase] = row
            attempts[folded, phase] = max(attempts.get((folded, phase), 0), row[5])  # events hold running totals
            if phase == "compensate" and row[2] == "ok":
                compensated.add(folded)
        restored: dict[str, RestoredStep] = {}
        for folded, name in names.items():
            pre, job = latest.get((folded, "precheck")), latest.get((folded, "job"))
            if job is None or (job[2] != "ok" and not (job[2] == "skipped" and pre is not None)):
                continue
            restored[folded] = self._restored_step(key, name, pre, job)
        latest_ids = {where: row[7] for where, row in latest.items()}
        return Resumption(
            generation,
            session,
            status,
            restored,
            latest_ids,
            attempts,
            frozenset(compensated),
            None,
            input,
            interruptions,
        )

    def _restored_step(self, key: str, name: str, pre: tuple[Any, ...] | None, job: tuple[Any, ...]) -> RestoredStep:
        step = RestoredStep()
        calls: list[RawCall] = []
        if pre is not None:
            calls.append((name, "precheck", pre[2], pre[6], pre[5], True))
            if pre[3] is not None:
                step.precheck_output = self._decode(key, name, pre[3])
            if pre[4] is not None:
                step.errors = (StepError(name, "precheck", self.codec.decode_error(pre[4])),)
        calls.append((name, "job", job[2], job[6], job[5], True))
        if job[2] == "ok":
            step.job_ok = True
            if job[3] is not None:
                step.job_output = self._decode(key, name, job[3])
        step.calls = tuple(calls)
        return step

    def _decode(self, key: str, step: str, text: str) -> object:
        try:
            return self.codec.decode(text)
        except CodecError as exc:
            raise StoreError(self.path, f"cannot restore the output of step {step!r} of key {key!r}: {exc}") from exc

    def _release(self, conn: sqlite3.Connection, key: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute(
                "UPDATE runs SET owner = NULL, lease_until = NULL WHERE key = ? AND owner = ?", (key, self.owner)
            )

    def session(self, key: str, resumption: Resumption) -> StoreSession:
        """The recorder of one run of *key*."""
        return StoreSession(self, key, resumption)

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
        return self._decode(key, "(input)", row[0][0])

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


class StoreSession:
    """Records one run of one key: the coordinator's recorder for durable runs."""

    __slots__ = ("_conn", "_encoded", "_ids", "_latest", "_renew_at", "_sql", "generation", "key", "session", "store")

    def __init__(self, store: SqliteStore, key: str, resumption: Resumption) -> None:
        self.store = store
        self.key = key
        self.generation = resumption.generation
        self.session = resumption.session
        self._conn = store.connection()
        self._encoded: tuple[object, str] | None = None
        self._ids: list[int] = []  # this session's events, in order
        self._latest = resumption.latest_ids
        self._renew_at = time.monotonic() + store.lease / 3
        self._sql = (
            "INSERT INTO events (key, generation, session, step, phase, outcome, output, error, error_type,"
            " attempts, seconds, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def check_output(self, step: str, phase: Phase, value: object) -> Exception | None:
        """Encode *value* now, so that an unstorable output fails its own callback."""
        try:
            self._encoded = (value, self.store.codec.encode(value))
        except CodecError as exc:
            self._encoded = None
            return UnstorableOutput(step, phase, type_name(value), exc.problem)
        return None

    def record(
        self,
        step: str,
        phase: Phase,
        outcome: Outcome,
        output: object,
        error: BaseException | None,
        attempts: int,
        seconds: float,
    ) -> None:
        """Commit one callback's outcome (one transaction); *output* is MISSING when none was stored."""
        encoded = None
        if output is not MISSING:
            cached = self._encoded  # check_output encoded it already
            encoded = cached[1] if cached is not None and cached[0] is output else self.store.codec.encode(output)
        self._encoded = None
        error_text = error_type = None
        if error is not None:
            error_text = self.store.codec.encode_error(error)
            error_type = _error_type(error)
        conn = self._conn
        try:
            cursor = conn.execute(
                self._sql,
                (
                    self.key,
                    self.generation,
                    self.session,
                    step,
                    phase,
                    outcome,
                    encoded,
                    error_text,
                    error_type,
                    attempts,
                    seconds,
                    time.time(),
                ),
            )
            self._ids.append(cursor.lastrowid or 0)
            if time.monotonic() >= self._renew_at:
                self._renew(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot record {phase} of step {step!r}: {exc}") from exc

    def _renew(self, conn: sqlite3.Connection) -> None:
        lease = self.store.lease
        updated = conn.execute(
            "UPDATE runs SET lease_until = ? WHERE key = ? AND owner = ?",
            (time.time() + lease, self.key, self.store.owner),
        ).rowcount
        if not updated:
            raise StoreError(self.store.path, f"lost the lease of key {self.key!r} to another process")
        self._renew_at = time.monotonic() + lease / 3

    def rolling_back(self, fatal: ChoreographError) -> None:
        """Mark the run as rolling back, before the first compensation starts."""
        try:
            self._conn.execute(
                "UPDATE runs SET status = 'compensating', fatal = ?, updated = ? WHERE key = ? AND owner = ?",
                (self.store.codec.encode_error(fatal), time.time(), self.key, self.store.owner),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot record the rollback of key {self.key!r}: {exc}") from exc

    def finish(
        self, status: Status, fatal: ChoreographError | None, stopped_at: str | None, trace: Sequence[RawCall]
    ) -> None:
        """
        Record how the run ended, and release the key.

        Args:
            status: How the run ended.
            fatal: Its fatal error, if any.
            stopped_at: The step where a fatal error stopped it.
            trace: Its trace: the result of an ``ok`` run is kept as the ids of
                the events its entries show, in order.
        """
        fatal_text = error_type = message = result = None
        if fatal is not None:
            fatal_text = self.store.codec.encode_error(fatal)
            error_type = _error_type(getattr(fatal, "error", None) or fatal)
            message = error_message(fatal)
        if status == "ok":
            new = iter(self._ids)
            latest = self._latest
            ids = [latest[call[0].casefold(), call[1]] if call[5] else next(new) for call in trace]
            result = json.dumps(ids)
        try:
            self._conn.execute(
                "UPDATE runs SET status = ?, fatal = ?, failed_step = ?, error_type = ?, error_message = ?,"
                " result = ?, owner = NULL, lease_until = NULL, updated = ? WHERE key = ? AND owner = ?",
                (status, fatal_text, stopped_at, error_type, message, result, time.time(), self.key, self.store.owner),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.store.path, f"cannot finish key {self.key!r}: {exc}") from exc
        finally:
            self.store.done(self.key)

    def release(self) -> None:
        """Give the key up without finishing (the run was interrupted)."""
        try:
            self.store._release(self._conn, self.key)  # noqa: SLF001
        finally:
            self.store.done(self.key)


def _close_all(connections: list[sqlite3.Connection], lock: threading.Lock) -> None:
    with lock:
        closing = list(connections)
        connections.clear()
    for conn in closing:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def _error_type(error: BaseException | None) -> str | None:
    if error is None:
        return None
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class Replay:
    """Callbacks' outcomes read back from the store: the DataBag, errors and trace they make."""

    def __init__(self, store: SqliteStore, key: str, events: Sequence[Event]) -> None:
        self.bag = DataBag()
        self.errors: list[StepError] = []
        self.calls: list[RawCall] = []
        self.compensation_errors: list[StepError] = []
        for event in events:
            if event.output is not None and event.phase != "compensate":
                value = store._decode(key, event.step, event.output)  # noqa: SLF001
                (self.bag.set_job_data if event.phase == "job" else self.bag.set_precheck_data)(event.step, value)
            if event.error is not None:
                error = StepError(event.step, event.phase, store.codec.decode_error(event.error))
                (self.compensation_errors if event.phase == "compensate" else self.errors).append(error)
            self.calls.append((event.step, event.phase, event.outcome, event.seconds, event.attempts, True))

    @classmethod
    def latest(cls, store: SqliteStore, key: str, generation: int) -> Replay:
        """Each callback's latest outcome in *generation* (earlier ones were superseded by a resume)."""
        events = store.events(key, generation=generation)
        last = {(event.step.casefold(), event.phase): index for index, event in enumerate(events)}
        return cls(store, key, [e for i, e in enumerate(events) if last[e.step.casefold(), e.phase] == i])


def stored_result(store: SqliteStore, key: str, resumption: Resumption) -> Finished:
    """A finished run of *key*, as its finishing session returned it, read back from the store: nothing runs."""
    rows = store._read("SELECT result FROM runs WHERE key = ?", (key,))  # noqa: SLF001
    if rows and rows[0][0]:
        by_id = {event.id: event for event in store.events(key, generation=resumption.generation)}
        replay = Replay(store, key, [by_id[i] for i in json.loads(rows[0][0]) if i in by_id])
    else:  # finished before schema version 2 recorded results
        replay = Replay.latest(store, key, resumption.generation)
    return Finished(
        resumption.input,
        tuple(replay.errors),
        resumption.fatal,
        replay.bag,
        0,
        key,
        tuple(replay.compensation_errors),
        tuple(replay.calls),
    )
