"""`choreograph run --executor dask --scheduler ADDRESS`: a batch on a Dask cluster (in-process here)."""

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import LocalCluster

from choreograph import SqliteStore
from choreograph.cli._commands import run_command

FLOWS = textwrap.dedent(
    """
    from dataclasses import dataclass

    from choreograph import Coordinator, Step


    @dataclass(frozen=True)
    class Order:
        id: str
        amount: int


    def charge(order: Order) -> str:
        if order.amount > 100:
            raise ValueError(f"{order.amount} is over the limit")
        return f"charged {order.amount}"


    orders = Coordinator[Order]([Step("charge", charge)])
    unshippable = Coordinator[Order]([Step("charge", lambda order: order.amount)])
    """
)

ORDERS = "".join(json.dumps({"id": f"A-{n}", "amount": 40 * n}) + "\n" for n in range(6))


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of an in-process cluster's scheduler (its workers import the flows from this process)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cli_dask_flows.py").write_text(FLOWS, encoding="utf-8")
    (tmp_path / "orders.jsonl").write_text(ORDERS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_batch_runs_on_the_cluster_and_resumes_there(here: Path, scheduler: str, capsys: pytest.CaptureFixture[str]):
    """Records through the cluster into a store: failures counted, outputs written; a second run restores the rest."""
    args = ["run", "cli_dask_flows:orders", "orders.jsonl", "--store", "runs.db", "--key", "id", "--no-progress"]
    dask = ["--executor", "dask", "--scheduler", scheduler]
    assert run_command([*args, *dask, "--output", "out.jsonl"]) == 1  # some runs failed
    lines = [json.loads(line) for line in (here / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(line["key"] for line in lines) == [f"A-{n}" for n in range(6)]
    assert sorted(line["key"] for line in lines if not line["ok"]) == ["A-3", "A-4", "A-5"]
    printed = " ".join(capsys.readouterr().err.split())  # the summary
    assert "runs 6" in printed
    assert "charge: ValueError 3" in printed

    store = SqliteStore(here / "runs.db")
    try:
        assert {info.key: info.status for info in store.runs()} == {
            "A-0": "ok",
            "A-1": "ok",
            "A-2": "ok",
            "A-3": "failed",
            "A-4": "failed",
            "A-5": "failed",
        }
    finally:
        store.close()
    assert run_command([*args, *dask, "--output", "again.jsonl"]) == 1
    again = [json.loads(line) for line in (here / "again.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(line["key"] for line in again if line["restored"]) == ["A-0", "A-1", "A-2"]


def test_what_cant_be_sent_to_the_cluster_is_a_usage_error(
    here: Path, scheduler: str, capsys: pytest.CaptureFixture[str]
):
    code = run_command(
        ["run", "cli_dask_flows:unshippable", "orders.jsonl", "--executor", "dask", "--scheduler", scheduler]
    )
    assert code == 2
    assert "--executor dask: step 'charge', job <lambda> can't be sent to worker processes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "dask"], "--executor dask needs --scheduler ADDRESS"),
        (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler is for --executor dask"),
        (
            ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"],
            "--workers is for threads, processes and async",
        ),
    ],
    ids=["no-scheduler", "scheduler-without-dask", "workers"],
)
def test_the_options_go_together(here: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str):
    assert run_command(["run", "cli_dask_flows:orders", "orders.jsonl", *extra]) == 2
    assert message in capsys.readouterr().err
