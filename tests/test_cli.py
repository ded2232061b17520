"""The `choreograph` command: run batches into stores, inspect them, resume and repair, in real subprocesses."""

import dataclasses
import fcntl
import importlib
import io
import json
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

import pytest
from pydantic import BaseModel

from choreograph import Coordinator, Event, MemoryStore, SqliteStore, Step
from choreograph.cli import main
from choreograph.cli._batch import classify
from choreograph.cli._commands import run_command
from choreograph.cli._records import Converter, RecordError
from choreograph.cli._target import InspectCodec, with_store

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: The flow module the tests run: `cli_flows:orders` (durable by `key=`), `cli_flows:keyless`, and mistakes.
FLOWS = textwrap.dedent(
    '''
    """Orders: validate, charge (declined over 100 unless CLI_TEST_LIMIT_RAISED is set), notify express ones."""

    import os
    import time
    from dataclasses import dataclass
    from decimal import Decimal

    from choreograph import Coordinator, Skip, Step


    @dataclass(frozen=True)
    class Order:
        id: str
        amount: Decimal
        express: bool = False
        note: str | None = None


    class CardDeclined(Exception):
        pass


    def validate(order: Order) -> Decimal:
        if order.amount <= 0:
            raise ValueError(f"amount must be > 0, got {order.amount}")
        return order.amount


    def charge(order: Order) -> str:
        time.sleep(float(os.environ.get("CLI_TEST_SLOW", "0")))
        if order.amount > 100 and not os.environ.get("CLI_TEST_LIMIT_RAISED"):
            raise CardDeclined(f"{order.amount} is over the card's limit")
        return f"charged {order.amount}"


    def only_express(order: Order) -> None:
        if not order.express:
            raise Skip("not express")


    def notify(order: Order) -> str:
        return "sent"


    def steps() -> list[Step]:
        return [Step("validate", validate), Step("charge", charge), Step("notify", notify, only_express)]


    orders = Coordinator[Order](steps(), key=lambda order: order.id)
    keyless = Coordinator[Order]([Step("validate", validate)])
    untyped = Coordinator([Step("echo", lambda record: record)])
    not_a_flow = 42
    '''
)

ORDERS_CSV = """\
id,amount,express,note
A-1,10.50,true,
A-2,250,false,big one
A-3,0,false,
A-4,abc,false,
A-5,20,yes,
"""


@pytest.fixture(scope="module")
def flows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `cli_flows.py` (and modules that fail), importable by the children."""
    folder = tmp_path_factory.mktemp("flows")
    (folder / "cli_flows.py").write_text(FLOWS, encoding="utf-8")
    (folder / "cli_broken.py").write_text("raise RuntimeError('no database configured')\n", encoding="utf-8")
    (folder / "cli_badstep.py").write_text(
        "from choreograph import Coordinator, Step\nflow = Coordinator([Step('', lambda: None)])\n", encoding="utf-8"
    )
    (folder / "cli_needs.py").write_text("import not_installed_anywhere\n", encoding="utf-8")
    (folder / "cli_own.py").write_text(
        "from cli_flows import Order, steps\nfrom choreograph import Coordinator, JsonCodec, SqliteStore\n"
        "flow = Coordinator[Order](steps(), store=SqliteStore('own.db', codec=JsonCodec()), key=lambda o: o.id)\n",
        encoding="utf-8",
    )
    return folder


def env_for(flows_dir: Path, **extra: str) -> dict[str, str]:
    """A child's environment: the package and the flows importable, measured by coverage when the tests are."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(flows_dir)]), **extra}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "CLI_TEST_LIMIT_RAISED", "CLI_TEST_SLOW"):
        if name not in extra:
            env.pop(name, None)
    if "coverage" in sys.modules and sys.modules["coverage"].Coverage.current() is not None:
        env |= {"COVERAGE_PROCESS_START": str(ROOT / "pyproject.toml"), "COVERAGE_FILE": str(ROOT / ".coverage")}
    return env


class Cli:
    """Runs `python -m choreograph ...` in a folder of its own."""

    def __init__(self, folder: Path, flows_dir: Path) -> None:
        self.folder, self.flows_dir = folder, flows_dir

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "choreograph", *args],
            cwd=self.folder,
            env=env_for(self.flows_dir, **env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def write(self, name: str, text: str) -> str:
        (self.folder / name).write_text(text, encoding="utf-8")
        return name


@pytest.fixture
def cli(tmp_path: Path, flows_dir: Path) -> Cli:
    return Cli(tmp_path, flows_dir)


@pytest.fixture
def here(tmp_path: Path, flows_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For in-process runs of the command: the flows importable, the test's folder the current one."""
    monkeypatch.syspath_prepend(str(flows_dir))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def summary(text: str) -> dict[str, int]:
    """The counts of a summary table: runs, ok, restored, resumed, failed, and each failure or skipped step."""
    found = re.findall(r"^\s+(\S.*?)\s+(\d+)\s*$", ANSI.sub("", text), re.MULTILINE)
    return {label: int(count) for label, count in found}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- run -------------------------------------------------------------------------


SPEC_TOML = """\
choreograph = 1
input = "cli_flows:Order"

[[steps]]
step = "validate"
job = "cli_flows:validate"

[[steps]]
parallel = "after"
branches = [
  [{step = "charge", job = "cli_flows:charge"}],
  [{step = "notify", job = "cli_flows:notify", precheck = "cli_flows:only_express"}],
]
"""


def test_a_spec_file_is_a_target(cli: Cli):
    """A TOML spec as TARGET: its input type converts the records, its group runs, `graph` draws it."""
    cli.write("orders.csv", ORDERS_CSV)
    cli.write("flow.toml", SPEC_TOML)
    done = cli("run", "flow.toml", "orders.csv", "--store", "runs.db", "--key", "id", "--output", "-")
    assert done.returncode == 1, done.stderr
    by_key = {line["key"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert by_key["A-1"]["outputs"] == {"validate": "10.50", "charge": "charged 10.50", "notify": "sent"}
    assert by_key["A-2"]["failed_step"] == "charge"
    assert summary(done.stderr)["skipped steps"] == 1
    drawn = cli("graph", "flow.toml")
    assert drawn.returncode == 0, drawn.stderr
    assert 'subgraph g2_after["after"]' in drawn.stdout
    shown = cli("show", "--store", "runs.db", "A-1", "--json")
    timeline = json.loads(shown.stdout)["timeline"]
    assert (timeline[0]["step"], timeline[0]["outcome"]) == ("validate", "ok")
    assert sorted(c["step"] for c in timeline) == ["charge", "notify", "notify", "validate"]  # precheck and job
    assert all(c["started"] >= 0 and c["seconds"] >= 0 for c in timeline)
    text = cli("show", "--store", "runs.db", "A-1").stdout
    assert "timeline (generation 1;" in text
    assert len(re.findall(r"^  (validate|charge|notify) .*\|[ \u2588]{40}\|$", text, re.MULTILINE)) == 4


def test_run_a_batch_with_good_and_failing_records(cli: Cli):
    """A CSV batch: each record converted to the flow's dataclass, the summary, JSON lines, exit 1 for failures."""
    cli.write("orders.csv", ORDERS_CSV)
    done = cli("run", "cli_flows:orders", "orders.csv", "--store", "runs.db", "--output", "out.jsonl")

    assert done.returncode == 1, done.stderr
    counts = summary(done.stderr)
    assert {k: counts[k] for k in ("runs", "ok", "restored", "resumed", "failed")} == {
        "runs": 5,
        "ok": 2,
        "restored": 0,
        "resumed": 0,
        "failed": 3,
    }
    assert counts["charge: cli_flows.CardDeclined"] == 1
    assert counts["validate: ValueError"] == 1
    assert counts["(input): RecordError"] == 1
    assert "skipped steps" not in done.stderr  # are express; stopped before notify
    assert "time" in done.stderr
    assert "runs/s" in done.stderr
    by_key = {line["key"]: line for line in lines(cli.folder / "out.jsonl")}
    assert by_key["A-1"] == {
        "key": "A-1",
        "ok": True,
        "restored": False,
        "resumed": False,
        "input": {"id": "A-1", "amount": "10.50", "express": True, "note": None},
        "outputs": {"validate": "10.50", "charge": "charged 10.50", "notify": "sent"},
        "failed_step": None,
        "error_type": None,
        "error": None,
    }
    assert by_key["A-5"]["input"]["express"] is True  # "yes" is a bool for pydantic
    assert by_key["A-2"]["failed_step"] == "charge"
    assert by_key["A-2"]["error_type"] == "cli_flows.CardDeclined"
    assert by_key["A-2"]["error"] == "250 is over the card's limit"
    unreadable = by_key[None]
    assert unreadable["position"] == 3
    assert unreadable["failed_step"] == "(input)"
    assert "line 5: amount: Input should be a valid decimal" in unreadable["error"]


def test_running_again_restores_finished_keys_and_resumes_the_others(cli: Cli):
    """The second run of a batch restores the two keys that finished and resumes the two that failed."""
    cli.write("orders.csv", ORDERS_CSV)
    cli("run", "cli_flows:orders", "orders.csv", "--store", "runs.db")
    again = cli("run", "cli_flows:orders", "orders.csv", "--store", "runs.db", "--output", "-")

    counts = summary(again.stderr)
    assert (counts["runs"], counts["ok"], counts["restored"], counts["resumed"], counts["failed"]) == (5, 2, 2, 2, 3)
    out = [json.loads(line) for line in again.stdout.splitlines()]
    assert {line["key"]: line["restored"] for line in out if line["key"]} == {
        "A-1": True,
        "A-2": False,
        "A-3": False,
        "A-5": True,
    }
    assert {line["key"] for line in out if line["resumed"]} == {"A-2", "A-3"}

    fresh = cli("run", "cli_flows:orders", "orders.csv", "--store", "runs.db", "--fresh")
    assert (summary(fresh.stderr)["restored"], summary(fresh.stderr)["resumed"]) == (0, 0)


def test_a_flow_without_failures_exits_0_and_counts_skipped_steps(cli: Cli):
    """All ok: exit 0; the jobs skipped by their precheck are counted by step."""
    records = [{"id": f"B-{i}", "amount": 5 + i, "express": i % 2 == 0} for i in range(6)]
    cli.write("orders.json", json.dumps(records))
    done = cli("run", "cli_flows:orders", "orders.json", "--store", "runs.db", "--workers", "2")

    assert done.returncode == 0, done.stderr
    counts = summary(done.stderr)
    assert (counts["runs"], counts["ok"], counts["failed"]) == (6, 6, 0)
    assert counts["skipped steps"] == 3
    assert counts["notify"] == 3


def test_json_lines_on_standard_input_without_a_store(cli: Cli):
    """`-` reads JSON lines from stdin; without a store nothing is durable and keys are null."""
    stdin = '{"id": "C-1", "amount": 3}\n\n{"id": "C-2", "amount": -1}\n{not json}\n'
    done = cli("run", "cli_flows:keyless", "-", "--output", "-", stdin=stdin)

    assert done.returncode == 1
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["key"], line["ok"], line["position"]) for line in out if "position" in line] == [(None, False, 2)]
    assert sorted(line["ok"] for line in out) == [False, False, True]
    assert any("line 4: not JSON" in (line["error"] or "") for line in out)
    assert summary(done.stderr)["runs"] == 3


@pytest.mark.parametrize(
    ("name", "text", "chosen"),
    [
        ("records.ndjson", '{"id": "D-1", "amount": "1"}\n', "auto"),
        ("records.txt", '  [{"id": "D-1", "amount": 1}]', "auto"),
        ("records.txt", '{"id": "D-1", "amount": 1}\n', "auto"),
        ("records.json", '{"id": "D-1", "amount": 1}\n', "auto"),
        ("records.data", "id,amount\nD-1,1\n", "csv"),
        ("records.data", '[{"id": "D-1", "amount": 1}]', "json"),
    ],
)
def test_input_formats(cli: Cli, name: str, text: str, chosen: str):
    """JSON lines, JSON arrays and CSV are told apart by extension or first character, or named with --format."""
    cli.write(name, text)
    done = cli("run", "cli_flows:keyless", name, "--format", chosen, "--output", "-")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["input"]["id"] for line in done.stdout.splitlines()] == ["D-1"]


def test_a_flow_without_an_input_type_gets_the_records_as_read(cli: Cli):
    """`Coordinator()` declares no input type: CSV rows come as dicts of strings, JSON as it is."""
    cli.write("rows.csv", "a,b\n1,\n")
    done = cli("run", "cli_flows:untyped", "rows.csv", "--output", "-")
    assert json.loads(done.stdout)["outputs"] == {"echo": {"a": "1", "b": ""}}


def test_the_key_comes_from_key_field_and_a_store_needs_one(cli: Cli):
    """--key FIELD keys a flow that has no key=; without either, a store is a usage error."""
    cli.write("orders.csv", ORDERS_CSV)
    refused = cli("run", "cli_flows:keyless", "orders.csv", "--store", "runs.db")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "choreograph run: runs in a store need each record's key: give --key FIELD, or Coordinator(key=...) in the flow"
    )

    keyed = cli("run", "cli_flows:keyless", "orders.csv", "--store", "runs.db", "--key", "note", "--output", "-")
    out = [json.loads(line) for line in keyed.stdout.splitlines()]
    # The notes of are empty (None): a key that is not a str or int fails that record alone.
    assert sorted((line["key"], line["ok"]) for line in out if line["key"]) == [("big one", True)]
    assert sum(line["error_type"] == "TypeError" for line in out) == 3
    assert sorted(line["position"] for line in out if line["error_type"] == "TypeError") == [0, 2, 4]


def test_a_field_key_of_a_mapping_record():
    """--key reads a mapping's item, or a record's attribute."""
    from choreograph.cli._target import field_key

    @dataclasses.dataclass
    class Rec:
        id: int

    assert field_key("id")({"id": 3}) == 3
    assert field_key("id")(Rec(4)) == 4


def test_interrupted_run_prints_the_summary_exits_130_and_leaves_the_store_resumable(cli: Cli):
    """SIGINT: no new record is taken, the runs in flight finish, the summary is printed, status 130; then resume."""
    records = "".join(json.dumps({"id": f"S-{i}", "amount": 10}) + "\n" for i in range(40))
    cli.write("slow.jsonl", records)
    child = subprocess.Popen(
        [sys.executable, "-m", "choreograph", "run", "cli_flows:orders", "slow.jsonl", "--store", "runs.db",
         "--workers", "2", "--output", "out.jsonl"],
        cwd=cli.folder, env=env_for(cli.flows_dir, CLI_TEST_SLOW="0.2"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = cli.folder / "out.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)

    assert child.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    counted = summary(stderr)["runs"]
    assert 3 <= counted < 40
    with SqliteStore(cli.folder / "runs.db") as store:
        finished = store.counts()["ok"]
        assert counted <= finished < 40
        assert store.counts()["running"] == 0  # every lease was released

    again = cli("run", "cli_flows:orders", "slow.jsonl", "--store", "runs.db")
    assert again.returncode == 0, again.stderr
    counts = summary(again.stderr)
    assert (counts["runs"], counts["ok"], counts["restored"]) == (40, 40, finished)


def on_terminal(cli: Cli, *args: str) -> tuple[int, str]:
    """Run the command with stderr on a pseudo-terminal 160 columns wide; return its status and what it showed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    child = subprocess.Popen(
        [sys.executable, "-m", "choreograph", *args], cwd=cli.folder,
        env={**env_for(cli.flows_dir), "TERM": "xterm-256color"}, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal (EIO on Linux)
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return child.wait(timeout=30), ANSI.sub("", shown.decode(errors="replace"))


ORDERS_JSON = [{"id": "A-1", "amount": 10}, {"id": "A-2", "amount": 250}, {"id": "A-3", "amount": 0}, {"id": 4}]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("orders.csv", ORDERS_CSV),
        ("orders.jsonl", "".join(json.dumps(r) + "\n" for r in [*ORDERS_JSON, {"id": "A-5", "amount": 1}])),
        ("orders.json", json.dumps([*ORDERS_JSON, {"id": "A-5", "amount": 1}])),
    ],
)
def test_the_bar_is_drawn_on_a_terminal(cli: Cli, name: str, text: str):
    """On a terminal, `run` draws the bar and its counts (the unreadable record a failure); not with --no-progress."""
    cli.write("orders.csv", ORDERS_CSV)
    cli.write(name, text)
    status, shown = on_terminal(cli, "run", "cli_flows:orders", name)
    assert status == 1
    assert "5/5" in shown  # the file's records were counted first
    assert "2 ok 3 failed" in shown
    assert "restored" in shown  # the summary follows

    status, quiet = on_terminal(cli, "run", "cli_flows:orders", "orders.csv", "--no-progress")
    assert status == 1
    assert "5/5" not in quiet
    assert "ok 3 failed" not in quiet


# -- inspection ------------------------------------------------------------------


@pytest.fixture
def batch(cli: Cli) -> Cli:
    """A store holding the ORDERS_CSV batch: A-1 and A-5 ok, A-2 declined at charge, A-3 refused at validate."""
    cli.write("orders.csv", ORDERS_CSV)
    cli("run", "cli_flows:orders", "orders.csv", "--store", "runs.db")
    return cli


def test_runs_lists_and_counts(batch: Cli):
    """`runs` lists runs as a table or JSON, filtered; `--count --json` counts by status and stopped runs by step."""
    table = batch("runs", "--store", "runs.db")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "STATUS", "GEN"]
    assert sorted(row.split()[0] for row in rows) == ["A-1", "A-2", "A-3", "A-5"]

    failed = json.loads(batch("runs", "--store", "runs.db", "--status", "failed", "--json").stdout)
    assert sorted(run["key"] for run in failed) == ["A-2", "A-3"]
    assert {run["key"]: run["failed_step"] for run in failed} == {"A-2": "charge", "A-3": "validate"}
    by_type = json.loads(batch("runs", "--store", "runs.db", "--error-type", "CardDeclined", "--json").stdout)
    assert [run["key"] for run in by_type] == ["A-2"]
    by_step = json.loads(batch("runs", "--store", "runs.db", "--step", "VALIDATE", "--json").stdout)
    assert [run["key"] for run in by_step] == ["A-3"]
    assert len(json.loads(batch("runs", "--store", "runs.db", "--limit", "1", "--json").stdout)) == 1

    counted = batch("runs", "--store", "runs.db", "--count", "--json")
    assert counted.returncode == 0
    assert json.loads(counted.stdout) == {
        "total": 4,
        "by_status": {"running": 0, "ok": 2, "failed": 2, "compensating": 0, "rolled_back": 0, "poisoned": 0},
        "stopped": [
            {"status": "failed", "step": "charge", "error_type": "cli_flows.CardDeclined", "runs": 1},
            {"status": "failed", "step": "validate", "error_type": "ValueError", "runs": 1},
        ],
    }
    text = batch("runs", "--store", "runs.db", "--count").stdout
    assert re.search(r"^failed\s+2$", text, re.MULTILINE)
    assert re.search(r"^total\s+4$", text, re.MULTILINE)
    assert re.search(r"failed\s+charge\s+cli_flows.CardDeclined\s+1", text)
    assert batch("runs", "--store", "runs.db", "--status", "poisoned").stderr.strip() == "no runs"


def test_show_a_key_with_its_events_outputs_and_errors(batch: Cli):
    """`show` prints status, input, events in order, outputs and errors with their tracebacks when stored."""
    shown = batch("show", "--store", "runs.db", "A-2")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert re.search(r"^status\s+failed$", text, re.MULTILINE)
    assert '{"id": "A-2", "amount": "250", "express": false, "note": "big one"}' in text  # the flow isn't imported
    events = text.split("\nevents\n")[1]
    assert events.index("validate") < events.index("charge")
    assert "cli_flows.CardDeclined: 250 is over the card's limit" in text
    assert re.search(r'^  validate:\s+"250"$', text, re.MULTILINE)
    stores_tracebacks = "traceback" in {field.name for field in dataclasses.fields(Event)}
    if stores_tracebacks:  # Event.traceback: the stores of the durable additions
        assert "Traceback (most recent call last)" in text
        assert "raise CardDeclined" in text
    else:
        assert "(no traceback stored)" in text

    data = json.loads(batch("show", "--store", "runs.db", "A-2", "--json").stdout)
    assert data["run"]["status"] == "failed"
    assert data["input"] == {"id": "A-2", "amount": "250", "express": False, "note": "big one"}
    assert [(e["step"], e["phase"], e["outcome"]) for e in data["events"]] == [
        ("validate", "job", "ok"),
        ("charge", "job", "failed"),
    ]
    assert data["outputs"] == {"validate": "250"}
    (error,) = data["errors"]
    assert (error["step"], error["type"], error["message"]) == ("charge", "cli_flows.CardDeclined", error["message"])
    assert error["message"] == "250 is over the card's limit"
    assert (error["traceback"] is not None) is stores_tracebacks

    ok = batch("show", "--store", "runs.db", "A-1").stdout
    assert "errors" not in ok
    assert "notify:" in ok


def test_resume_failed_keys_after_fixing_the_flow(batch: Cli):
    """With the card limit raised, `resume --failed` finishes A-2; A-3 still fails validation: exit 1."""
    done = batch("resume", "cli_flows:orders", "--store", "runs.db", "--failed", CLI_TEST_LIMIT_RAISED="1")

    assert done.returncode == 1, done.stderr
    counts = summary(done.stderr)
    assert (counts["runs"], counts["ok"], counts["resumed"], counts["failed"]) == (2, 1, 2, 1)
    assert counts["validate: ValueError"] == 1
    failed = json.loads(batch("runs", "--store", "runs.db", "--status", "failed", "--json").stdout)
    assert [run["key"] for run in failed] == ["A-3"]

    by_key = batch("resume", "cli_flows:orders", "--store", "runs.db", "A-1", "--no-progress")
    assert by_key.returncode == 0
    assert summary(by_key.stderr)["ok"] == 1


def test_resume_poisoned_keys_starts_them_afresh(cli: Cli, flows_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A poisoned key (interrupted too often) runs again from scratch with `resume --poisoned`."""
    monkeypatch.syspath_prepend(str(flows_dir))
    import cli_flows  # type: ignore[import-not-found]  # written by the fixture

    def interrupted(order: object) -> None:
        raise KeyboardInterrupt

    path = cli.folder / "poison.db"
    with SqliteStore(path, max_interruptions=0) as store:
        crashing = Coordinator[Any]([Step("validate", interrupted)], store=store, key=lambda order: order.id)
        with pytest.raises(KeyboardInterrupt):
            crashing.run(cli_flows.Order("P-1", Decimal(5)))
        assert crashing.run(cli_flows.Order("P-1", Decimal(5))).fatal is not None
        assert store.counts()["poisoned"] == 1

    done = cli("resume", "cli_flows:orders", "--store", "poison.db", "--poisoned")
    assert done.returncode == 0, done.stderr
    assert summary(done.stderr)["ok"] == 1
    with SqliteStore(path) as store:
        info = store.run_info("P-1")
        assert info is not None
        assert (info.status, info.generation) == ("ok", 2)


def test_resume_on_a_terminal_and_with_nothing_to_resume(batch: Cli):
    """`resume` draws its bar on a terminal; with no key to resume it runs nothing and exits 0."""
    status, shown = on_terminal(batch, "resume", "cli_flows:orders", "--store", "runs.db", "--failed")
    assert status == 1
    assert "2/2" in shown
    assert "0 ok 2 failed" in shown

    nothing = batch("resume", "cli_flows:orders", "--store", "runs.db", "--poisoned")
    assert nothing.returncode == 0
    assert summary(nothing.stderr)["runs"] == 0


def test_interrupted_resume_exits_130_with_its_summary(cli: Cli):
    """Ctrl-C during `resume`: the keys in flight finish, the summary is printed, status 130."""
    records = "".join(json.dumps({"id": f"R-{i}", "amount": 500}) + "\n" for i in range(30))
    cli.write("declined.jsonl", records)
    cli("run", "cli_flows:orders", "declined.jsonl", "--store", "runs.db")
    child = subprocess.Popen(
        [sys.executable, "-m", "choreograph", "resume", "cli_flows:orders", "--store", "runs.db", "--failed"],
        cwd=cli.folder, env=env_for(cli.flows_dir, CLI_TEST_SLOW="0.3", CLI_TEST_LIMIT_RAISED="1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    with SqliteStore(cli.folder / "runs.db") as store:
        while time.monotonic() < deadline and store.counts()["ok"] == 0:
            time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)

    assert child.returncode == 130, stderr
    assert "interrupted" in stderr
    assert summary(stderr)["runs"] < 30


def test_a_flow_with_its_own_store(cli: Cli):
    """No --store: the flow's own store; --store naming its file: that store; another file: opened with its codec."""
    cli.write("orders.csv", ORDERS_CSV)
    own = cli("run", "cli_own:flow", "orders.csv")
    assert summary(own.stderr)["ok"] == 2
    same = cli("run", "cli_own:flow", "orders.csv", "--store", str(cli.folder / "own.db"))
    assert summary(same.stderr)["restored"] == 2
    other = cli("run", "cli_own:flow", "orders.csv", "--store", "other.db")
    assert summary(other.stderr)["restored"] == 0
    assert json.loads(cli("runs", "--store", "other.db", "--count", "--json").stdout)["total"] == 4


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 3,000 runs."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    with SqliteStore(path) as store:
        flow = Coordinator[int]([Step("one", lambda x: x)], store=store, key=str)
        assert all(result.ok for result in flow.run_many(range(3000)))
    return path


def test_runs_prints_more_runs_than_it_sizes_its_columns_on(cli: Cli, big_store: Path):
    """The table's columns are sized on the first 1,000 runs; the others follow."""
    done = cli("runs", "--store", str(big_store), "--limit", "1005")
    assert len(done.stdout.splitlines()) == 1006


def test_a_reader_that_goes_away_ends_the_command_quietly(cli: Cli, big_store: Path):
    """`choreograph runs | head -1`: the closed pipe ends the command without a traceback."""
    child = subprocess.Popen(
        [sys.executable, "-m", "choreograph", "runs", "--store", str(big_store), "--json"],
        cwd=cli.folder, env=env_for(cli.flows_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline() == b"[\n"
    child.stdout.close()
    assert child.wait(timeout=60) == 1
    assert child.stderr is not None
    assert b"Traceback" not in child.stderr.read()
    child.stderr.close()


def test_store_verify_and_prune(batch: Cli):
    """`store verify` says a sound store is ok; `store prune` deletes finished runs by status and date."""
    verified = batch("store", "verify", "runs.db")
    assert (verified.returncode, verified.stdout.strip()) == (0, "runs.db: ok")

    kept = batch("store", "prune", "runs.db", "--status", "ok", "--before", "2000-01-01")
    assert kept.stdout.strip() == "deleted 0 ok runs from runs.db"
    pruned = batch("store", "prune", "runs.db", "--status", "ok", "--before", "2999-12-31T00:00:00+00:00")
    assert pruned.stdout.strip() == "deleted 2 ok runs from runs.db"
    one = batch("store", "prune", "runs.db", "--status", "failed")
    assert one.stdout.strip() == "deleted 2 failed runs from runs.db"


def test_store_verify_names_damage(cli: Cli):
    """A store whose rows break choreograph's rules fails `store verify` with status 1, naming the problem."""
    path = cli.folder / "runs.db"
    with SqliteStore(path) as store:
        flow = Coordinator[int]([Step("one", lambda x: x)], store=store, key=str)
        flow.run(1)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET status = 'wobbly'")
    conn.close()
    done = cli("store", "verify", "runs.db")
    assert done.returncode == 1
    assert done.stderr.startswith("choreograph store verify: ")
    assert "1 runs have an unknown status (e.g. key '1')" in done.stderr


@pytest.mark.skipif(not hasattr(Coordinator, "rerun"), reason="rerun lands with the durable branch")
def test_rerun_from_a_step(batch: Cli):
    """`rerun --from charge` makes a new generation of the key: validate restored, charge and notify run again."""
    done = batch("rerun", "cli_flows:orders", "--store", "runs.db", "--from", "charge", "A-1", "A-5")
    assert done.returncode == 0, done.stderr
    counts = summary(done.stderr)
    assert (counts["runs"], counts["ok"]) == (2, 2)
    data = json.loads(batch("show", "--store", "runs.db", "A-1", "--json").stdout)
    assert data["run"]["generation"] == 2
    unknown = batch("rerun", "cli_flows:orders", "--store", "runs.db", "--from", "charge", "Z-9")
    assert unknown.returncode == 2


# -- graph -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "kind"), [([], "mermaid"), (["--format", "mermaid"], "mermaid"), (["--format", "dot"], "dot")]
)
def test_graph_prints_the_flow(here: Path, options: list[str], kind: str):
    """`graph TARGET` prints `coordinator.graph()` on standard output: Mermaid by default, DOT with --format dot."""
    from click.testing import CliRunner

    from choreograph.cli._commands import cli as command

    flows = importlib.import_module("cli_flows")
    done = CliRunner().invoke(command, ["graph", "cli_flows:orders", *options])
    assert done.exit_code == 0, done.output
    assert done.stdout == flows.orders.graph(kind)
    assert done.stdout.startswith("flowchart TD\n" if kind == "mermaid" else 'digraph "flow" {\n')
    assert '["charge"]' in done.stdout or '"s2_charge" [label="charge"' in done.stdout


def test_graph_mistakes_are_usage_errors(here: Path):
    """A TARGET that is not a coordinator, or another format: status 2, one line."""
    from click.testing import CliRunner

    from choreograph.cli._commands import cli as command

    for args, message in [
        (["graph", "cli_flows:not_a_flow"], "is a int, not a choreograph Coordinator"),
        (["graph", "cli_flows:orders", "--format", "svg"], "'svg' is not one of 'mermaid', 'dot'"),
        (["graph"], "Missing argument 'TARGET'"),
    ]:
        done = CliRunner().invoke(command, args)
        assert done.exit_code == 2, args
        assert message in done.output
        assert done.stdout == ""
        assert "Traceback" not in done.output


def test_graph_in_a_subprocess(cli: Cli):
    """`python -m choreograph graph` prints the picture and exits 0."""
    done = cli("graph", "cli_flows:orders", "--format", "dot")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('digraph "flow" {')
    assert done.stdout.endswith("}\n")
    assert done.stderr == ""


# -- mistakes: one line, status 2 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nowhere:flow", "x.csv"], "TARGET 'nowhere:flow': no module named 'nowhere'"),
        (["run", "cli_needs:flow", "x.csv"], "importing cli_needs failed: ModuleNotFoundError"),
        (["run", "cli_broken:flow", "x.csv"], "importing cli_broken failed: RuntimeError: no database configured"),
        (["run", "cli_badstep:flow", "x.csv"], "TARGET 'cli_badstep:flow': StepDefinitionError"),
        (["run", "cli_flows:missing", "x.csv"], "cli_flows has no attribute 'missing'"),
        (["run", "cli_flows:not_a_flow", "x.csv"], "TARGET 'cli_flows:not_a_flow' is a int, not a choreograph"),
        (["run", "cli_flows", "x.csv"], "TARGET must be module:attribute"),
        (["run", "flows/orders.toml", "x.csv"], "TARGET 'flows/orders.toml': no such spec file"),
        (
            ["graph", "bad_spec.toml"],
            "bad_spec.toml': SpecError: steps[0].job: module 'cli_flows' has no attribute 'nope'",
        ),
        (["run", "cli_flows:orders", "x.csv"], "cannot read INPUT 'x.csv'"),
        (["run", "cli_flows:orders", "."], "INPUT '.' is a folder"),
        (["run", "cli_flows:orders", "bad.json"], "INPUT 'bad.json' is not JSON"),
        (["run", "cli_flows:orders", "object.json", "--format", "json"], "is JSON but not an array of records"),
        (["run", "cli_flows:orders", "plain.txt"], "cannot tell the format of INPUT 'plain.txt'"),
        (["run", "cli_flows:orders", "latin.csv"], "cannot read INPUT 'latin.csv'"),
        (["run", "cli_flows:untyped", "ok.csv", "--executor", "processes"], "job <lambda> can't be sent to worker"),
        (["run", "cli_flows:orders", "ok.csv", "--workers", "0"], "Invalid value for '--workers'"),
        (["run", "cli_flows:orders", "ok.csv", "--wrkers", "2"], "No such option '--wrkers'"),
        (
            ["run", "cli_flows:orders", "ok.csv", "--store", "postgresql://127.0.0.1:1/x"],
            "cannot connect to the server",
        ),
        (["run", "cli_flows:orders", "ok.csv", "--store", "."], "STORE '.' is a folder"),
        (["run", "cli_flows:orders", "ok.csv", "--store", "plain.txt"], "store plain.txt: not a SQLite database"),
        (["run", "cli_flows:keyless", "ok.csv", "--key", "id"], "--key names each record's key in a store"),
        (["run", "cli_flows:keyless", "ok.csv", "--fresh"], "--fresh runs finished keys of a store again"),
        (["run", "cli_flows:orders", "ok.csv", "--store", "r.db", "--key", "idd"], "--key 'idd' is not a field"),
        (["run", "cli_flows:orders", "ok.csv", "--output", "nodir/out.jsonl"], "cannot write --output"),
        (["runs", "--store", "none.db"], "no store at 'none.db'"),
        (["show", "--store", "none.db", "A"], "no store at 'none.db'"),
        (["resume", "cli_flows:orders", "--store", "none.db", "--failed"], "no store at 'none.db'"),
        (["resume", "cli_flows:orders", "--store", "none.db"], "name the KEYs to resume"),
        (["store", "prune", "none.db", "--status", "ok", "--before", "soon"], "'soon' is not an ISO date"),
        (["store", "prune", "none.db"], "Missing option '--status'"),
    ],
)
def test_mistakes_are_one_line_and_status_2(
    here: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    """Bad targets, files and options: one line on stderr naming the problem, exit status 2, no traceback."""
    (here / "bad.json").write_text("[{", encoding="utf-8")
    (here / "object.json").write_text('{"id": 1}', encoding="utf-8")
    (here / "plain.txt").write_text("hello\n", encoding="utf-8")
    (here / "ok.csv").write_text("id,amount\nA,1\n", encoding="utf-8")
    (here / "latin.csv").write_bytes("id,amount\n\xe9,1\n".encode("latin-1"))
    (here / "bad_spec.toml").write_text(
        'choreograph = 1\n[[steps]]\nstep = "a"\njob = "cli_flows:nope"\n', encoding="utf-8"
    )

    assert run_command(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_unknown_keys_and_steps_are_usage_errors(batch: Cli):
    """`show` and `resume` of a key the store doesn't have, `rerun --from` a step the flow doesn't have: status 2."""
    assert (
        batch("show", "--store", "runs.db", "Z-9").stderr.strip() == "choreograph show: no run of key 'Z-9' in runs.db"
    )
    assert batch("resume", "cli_flows:orders", "--store", "runs.db", "Z-9").returncode == 2
    wrong = batch("rerun", "cli_flows:orders", "--store", "runs.db", "--from", "ship", "A-1")
    assert wrong.returncode == 2
    assert "--from 'ship' is not a step of cli_flows:orders (its steps: validate, charge, notify)" in wrong.stderr


def test_help_and_version(cli: Cli):
    """`choreograph --help` lists the commands, `run` first; the console script is installed; no arguments: help, 2."""
    script = Path(sys.executable).with_name("choreograph")
    done = subprocess.run(
        [str(script), "--help"], env=env_for(cli.flows_dir), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    commands = re.findall(r"^  (\w+)  ", done.stdout.split("Commands:")[1], re.MULTILINE)
    assert commands == ["run", "runs", "show", "resume", "rerun", "serve", "queues", "graph", "store"]
    assert cli("--version").stdout.startswith("choreograph ")
    bare = cli()
    assert bare.returncode == 2
    assert "Commands:" in bare.stderr


def test_help_imports_neither_rich_nor_pydantic(flows_dir: Path):
    """`--help` loads click only: rich and pydantic come with the commands that use them."""
    code = (
        "import sys\nfrom choreograph.cli._commands import run_command\nrun_command(['run', '--help'])\n"
        "print(sorted(m for m in ('rich', 'pydantic') if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env_for(flows_dir), capture_output=True, text=True, check=True
    )
    assert done.stderr.strip() == "[]"


def test_without_click_main_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Without the extra, `choreograph` says which extra to install, in one line, status 2."""
    monkeypatch.setitem(sys.modules, "click", None)
    monkeypatch.delitem(sys.modules, "choreograph.cli._commands", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 2
    assert "pip install 'choreograph[cli]'" in capsys.readouterr().err


def test_main_lets_other_import_errors_through(monkeypatch: pytest.MonkeyPatch):
    """An ImportError that is not about the extra's libraries is a bug to show, not a missing extra."""
    monkeypatch.setitem(sys.modules, "choreograph.cli._commands", None)
    with pytest.raises(ImportError):
        main(["--help"])


def test_interrupt_outside_a_batch_is_status_130(here: Path, monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C while a command sets up (importing the flow, say) exits with 130."""

    def interrupted(target: str) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr("choreograph.cli._batch.load_target", interrupted)
    assert run_command(["run", "cli_flows:orders", "x.csv"]) == 130


# -- conversion ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price: Decimal | None = None
    gift: bool = False


class LineDict(TypedDict):
    sku: str
    quantity: int


class LineTuple(NamedTuple):
    sku: str
    quantity: int = 1


class LineModel(BaseModel):
    sku: str
    quantity: int


def csv_row(**cells: str) -> object:
    """A CSV row as `Source` reads it."""
    from choreograph.cli._records import _Row

    return _Row(iter(cells.items()), "line 2")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (Line, Line("X", 3, None, False)),
        (LineDict, {"sku": "X", "quantity": 3}),
        (LineTuple, LineTuple("X", 3)),
        (LineModel, LineModel(sku="X", quantity=3)),
    ],
    ids=["dataclass", "TypedDict", "NamedTuple", "pydantic"],
)
def test_csv_strings_become_the_annotated_field_types(target: type, expected: object):
    """Every kind of record type: strings converted by field type, empty cells None or defaulted, extras ignored."""
    converted = Converter(target).convert(csv_row(sku="X", quantity="3", price="", gift="", extra="?"))
    assert converted == expected


def test_json_records_are_validated_too():
    """A JSON record is converted the same way; what doesn't fit is a RecordError naming the fields."""
    converter = Converter(Line)
    assert converter.convert({"sku": "Y", "quantity": "2", "price": "1.5", "gift": "true"}) == Line(
        "Y", 2, Decimal("1.5"), True
    )
    with pytest.raises(RecordError, match=r"record: quantity: Input should be a valid integer"):
        converter.convert({"sku": "Y", "quantity": "many"})
    with pytest.raises(RecordError, match=r"line 2: sku: Field required"):
        converter.convert(csv_row(quantity="2"))


def test_a_scalar_input_type_takes_a_one_column_csv():
    """`Coordinator[int]` and CSV: the one column is converted; two columns are a RecordError."""
    converter = Converter(int)
    assert converter.fields is None
    assert converter.convert(csv_row(n="42")) == 42
    assert converter.convert(7) == 7
    with pytest.raises(RecordError, match="2 columns for an input of type int"):
        converter.convert(csv_row(a="1", b="2"))


def test_files_that_are_not_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A file that isn't UTF-8 text is a usage error, whether its format is told or given; stdin is never counted."""
    from click import UsageError

    from choreograph.cli._records import Source

    for name, chosen in [("latin.txt", "auto"), ("latin.json", "json")]:
        (tmp_path / name).write_bytes("[\xe9]".encode("latin-1")[::-1])
        with pytest.raises(UsageError, match=f"cannot read INPUT '.*{name}'"):
            Source(str(tmp_path / name), chosen)
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"a": 1}\n'))
    stdin = Source("-", "auto")
    assert stdin.count() is None
    assert list(stdin.records()) == [(0, {"a": 1})]
    stdin.close()


def test_csv_oddities(tmp_path: Path):
    """An empty CSV has no records; a line that breaks CSV's rules fails alone; counting such a file gives up."""
    from choreograph.cli._records import Source

    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    empty = Source(str(tmp_path / "empty.csv"), "auto")
    assert list(empty.records()) == []
    empty.close()
    (tmp_path / "huge.csv").write_text("a\n" + "x" * 200_000 + "\nb\n", encoding="utf-8")
    huge = Source(str(tmp_path / "huge.csv"), "auto")
    assert huge.count() is None
    (first, error), (second, row) = huge.records()
    assert (first, second) == (0, 1)
    assert isinstance(error, RecordError)
    assert "not CSV" in str(error)
    assert row == {"a": "b"}
    huge.close()


def test_unreadable_csv_lines_fail_alone(cli: Cli):
    """A CSV line with more fields than the header fails alone; the others run."""
    cli.write("lines.csv", "id,amount\nE-1,1\nE-2,2,extra\n\nE-3,3\n")
    done = cli("run", "cli_flows:keyless", "lines.csv", "--output", "-")
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["ok"] for line in out) == [False, True, True]
    (bad,) = [line for line in out if not line["ok"]]
    assert bad["error"] == "line 3: 3 fields, the header has 2"
    assert bad["position"] == 1


def test_inspection_shows_values_of_unimported_classes_as_plain_json():
    """InspectCodec: dataclasses, named tuples, enums, models, sets, dicts with odd keys as plain JSON."""
    codec = InspectCodec()
    assert codec.decode('{"$namedtuple": "shop:P", "values": [1, {"$set": [2]}]}') == [1, [2]]
    assert codec.decode('{"$pydantic": "shop:M", "data": {"a": {"$dict": [[1, 2]]}}}') == {"a": {"1": 2}}
    assert codec.decode('{"$enum": "shop:C", "value": "red"}') == "red"
    assert codec.decode('{"$decimal": "1.5"}') == Decimal("1.5")  # rebuilt: no class is needed
    assert codec.decode("{not json") == "{not json"


def test_a_failure_without_a_step_of_its_own_is_named_by_the_error_stack():
    """A precheck's ExecutionCanceled is the fatal itself: its step comes from the error stack."""
    from choreograph import ExecutionCanceled
    from choreograph.cli._summary import failure

    def stop() -> None:
        raise ExecutionCanceled("closed for the day")

    result = Coordinator([Step("open", lambda: None, stop)]).run()
    assert failure(result) == ("open", "choreograph._errors.ExecutionCanceled", "closed for the day")


def test_classify_and_with_store():
    """A key restored when it had finished and nothing ran; resumed when it continued; the copy leaves the flow."""
    flow = Coordinator[int]([Step("one", lambda x: x)])
    result = flow.run(1)
    assert classify(result, "ok") == (False, False)  # its calls ran: not restored
    assert classify(result, "failed") == (False, True)
    assert classify(result, None) == (False, False)
    store = MemoryStore()
    durable = with_store(flow, store, str)
    assert durable.store is store
    assert flow.store is None
    assert with_store(durable, store, str) is durable  # already so: no copy
    assert with_store(durable, store, repr) is not durable
