"""
Entities survive SIGKILL: the state and the acknowledgement of a message commit together, or not at all.

A server process (tests/_entity_crash_worker.py) is killed at random moments
while this process keeps sending; then one runs until nothing is due. Every
message must be in its entity's state exactly once, in send order, although
the ledger (what the handlers really did) shows some handled twice: those a
kill caught between the handler's side effect and the commit.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from choreograph import Entities, PostgresStore, SqliteStore

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "_entity_crash_worker.py"
IDS = [f"e{i}" for i in range(8)]
PER_ID = 50
KILLS = 6


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


@pytest.fixture(params=["sqlite", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store: a SQLite file, or a ``postgresql://...#schema`` URL (a fresh schema)."""
    if request.param == "postgres":
        return f"{request.getfixturevalue('postgres_url')}#{request.getfixturevalue('pg_schema')()}"
    return str(tmp_path / "store.db")


def _open(spec: str) -> SqliteStore | PostgresStore:
    if spec.startswith("postgresql://"):
        url, _, schema = spec.partition("#")
        return PostgresStore(url, schema=schema)
    return SqliteStore(spec)


def _start(store: str, ledger: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(WORKER), str(store), str(ledger)], cwd=ROOT, env=_env(), stdout=out, stderr=out
        )


def _ledger(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=30)
    try:
        return [tuple(row) for row in conn.execute("SELECT entity, n, pid FROM ledger ORDER BY id")]
    except sqlite3.OperationalError:  # the table is not made yet
        return []
    finally:
        conn.close()


def test_sigkill_at_random_moments_loses_no_message_and_applies_none_twice(tmp_path: Path, store_spec: str):
    store_path, ledger_path, log = store_spec, tmp_path / "ledger.db", tmp_path / "worker.log"
    rng = random.Random(11)
    sent = dict.fromkeys(IDS, 0)
    killed: list[int] = []
    with _open(store_path) as store:
        kind = Entities[list[int]]("tally", store=store)

        def send_some(count: int) -> None:
            for _ in range(count):
                name = rng.choice([n for n in IDS if sent[n] < PER_ID] or IDS)
                if sent[name] < PER_ID:
                    kind.send(name, sent[name])
                    sent[name] += 1

        send_some(len(IDS) * PER_ID // 2)
        for _ in range(KILLS):
            proc = _start(store_path, ledger_path, log)
            before = len(_ledger(ledger_path))
            deadline = time.monotonic() + 60
            while len(_ledger(ledger_path)) < before + rng.randint(5, 40) and proc.poll() is None:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.005)
            send_some(len(IDS) * PER_ID // (2 * KILLS) + 1)
            proc.kill()
            proc.wait(30)
            if proc.returncode != 0:
                killed.append(proc.pid)
        send_some(len(IDS) * PER_ID)
        final = _start(store_path, ledger_path, log)
        assert final.wait(120) == 0, log.read_text()

        assert all(count == PER_ID for count in sent.values())
        for name in IDS:
            assert kind.state(name) == list(range(PER_ID)), name
            info = kind.info(name)
            assert info is not None
            assert (info.pending, info.failed, info.owner) == (0, None, None)
        assert list(store.runs(status="failed")) == []
        store.verify()

    handled = Counter((entity, n) for entity, n, _ in _ledger(ledger_path))
    assert set(handled) == {
        (name, n) for name in IDS for n in range(PER_ID)
    }  # every message's side effect: at least once
    assert len(killed) >= KILLS // 2  # most kills caught a server at work
    twice = [pair for pair, times in handled.items() if times > 1]
    assert len(twice) <= len(killed) * 4  # at most one per worker thread per kill
