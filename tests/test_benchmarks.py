"""The benchmarks still run (their numbers are read by people, not asserted here)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: The benchmarks with a ``--backend``: each also runs on PostgreSQL.
BACKENDS = ("entities.py", "queues.py")
RUNS = [
    *((p.name, ()) for p in sorted((ROOT / "benchmarks").glob("*.py"))),
    *((script, ("--backend", "postgres")) for script in BACKENDS),
]


@pytest.mark.parametrize(("script", "options"), RUNS, ids=[" ".join((s, *o)) for s, o in RUNS])
def test_a_benchmark_runs_in_quick_mode_and_reports_a_ratio(
    script: str, options: tuple[str, ...], request: pytest.FixtureRequest
):
    """Each benchmark runs with --quick (on each of its backends), exits 0 and prints the ratio it exists to measure."""
    if script == "postgres.py" or "postgres" in options:
        request.getfixturevalue("postgres_url")  # without a server: skipped, or failed on CI, as the store's tests
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratio" in done.stdout
    assert "target" in done.stdout
