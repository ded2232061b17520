"""The `choreograph` command on a PostgreSQL store: ``--store postgresql://...#schema``, in process."""

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from choreograph import PostgresStore
from choreograph.cli._commands import run_command

FLOWS = textwrap.dedent(
    '''
    """Doubles: a record's ``n`` doubled, failing on 3."""

    from choreograph import Coordinator, Step


    def double(record: dict) -> int:
        if record["n"] == 3:
            raise ValueError("three is refused")
        return record["n"] * 2


    flow = Coordinator([Step("double", double)], key=lambda record: record["id"])
    '''
)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the flow module (importable) and a batch of records; the current folder."""
    (tmp_path / "pg_cli_flows.py").write_text(FLOWS, encoding="utf-8")
    records = [{"id": f"R-{n}", "n": n} for n in range(1, 5)]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_run_inspect_and_verify_a_postgres_store(
    here: Path, postgres_url: str, pg_schema: Callable[[], str], capsys: pytest.CaptureFixture[str]
):
    """`run` creates the schema named by the URL's fragment; `runs`, `show` and `store verify` read it."""
    location = f"{postgres_url}#{pg_schema()}"
    assert run_command(["run", "pg_cli_flows:flow", "records.jsonl", "--store", location, "--output", "out.jsonl"]) == 1
    capsys.readouterr()
    outputs = {line["key"]: line for line in map(json.loads, (here / "out.jsonl").read_text().splitlines())}
    assert {key: line["outputs"] for key, line in outputs.items()} == {
        "R-1": {"double": 2},
        "R-2": {"double": 4},
        "R-3": {},
        "R-4": {"double": 8},
    }
    assert outputs["R-3"]["error"] == "three is refused"

    assert run_command(["runs", "--store", location, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {run["key"]: run["status"] for run in listed} == {"R-1": "ok", "R-2": "ok", "R-3": "failed", "R-4": "ok"}

    assert run_command(["show", "--store", location, "R-3"]) == 0
    shown = capsys.readouterr().out
    assert "ValueError" in shown
    assert "three is refused" in shown

    assert run_command(["store", "verify", location]) == 0
    capsys.readouterr()

    url, _, schema = location.partition("#")
    with PostgresStore(url, schema=schema) as store:
        assert store.counts()["failed"] == 1


def test_reading_a_schema_without_a_store_is_a_usage_error_and_creates_nothing(
    here: Path, postgres_url: str, pg_schema: Callable[[], str], capsys: pytest.CaptureFixture[str]
):
    schema = pg_schema()
    assert run_command(["runs", "--store", f"{postgres_url}#{schema}"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"choreograph runs: store {postgres_url}#{schema}: no choreograph store in schema {schema!r}"
        " (create=False); nothing was created"
    )
    with pytest.raises(Exception, match="create=False"):
        PostgresStore(postgres_url, schema=schema, create=False)


def test_an_unreachable_server_is_one_line_naming_it(here: Path, capsys: pytest.CaptureFixture[str]):
    assert run_command(["runs", "--store", "postgres://someone:pw@127.0.0.1:1/runs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("choreograph runs: store postgresql://someone@127.0.0.1:1/runs#choreograph: cannot connect")
    assert len(err.strip().splitlines()) == 1
    assert ":pw@" not in err
