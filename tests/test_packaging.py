"""The wheel: MIT licence metadata, runtime dependencies only, `py.typed`, and a light `import choreograph`."""

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = {"beartype", "loguru", "returns", "typing-extensions"}
OPTIONAL = ["tenacity", "pydantic", "rich", "click", "cyclopts", "dask", "distributed", "psycopg", "opentelemetry"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from the working tree (hatchling from the dev tools, no download)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("choreograph-*.whl")
    return built


def test_the_wheel_declares_the_mit_licence_and_only_the_runtime_dependencies(wheel: Path):
    """METADATA says MIT, ships the licence file, and requires only beartype, loguru, returns, typing-extensions."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["License-Expression"] == "MIT"
    assert any(name.endswith("licenses/LICENSE") for name in names)
    required = metadata.get_all("Requires-Dist") or []
    unconditional = {
        line.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        for line in required
        if "extra ==" not in line
    }
    assert unconditional == RUNTIME
    assert "choreograph/py.typed" in names
    assert not any(name.startswith(("tests/", "benchmarks/", "examples/", "docs/")) for name in names)


def test_the_wheel_ships_the_spec_schema(wheel: Path):
    """`choreograph/spec.schema.json`, the JSON Schema of flow specs, is in the wheel as the package has it."""
    with zipfile.ZipFile(wheel) as archive:
        assert "choreograph/spec.schema.json" in archive.namelist()
        shipped = archive.read("choreograph/spec.schema.json")
    assert shipped == (ROOT / "choreograph" / "spec.schema.json").read_bytes()


def test_importing_choreograph_imports_no_optional_dependency():
    """`import choreograph` (and its public subpackages) loads none of the optional libraries."""
    code = (
        "import sys, choreograph, choreograph.events, choreograph.executors, choreograph.typing;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
