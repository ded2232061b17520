"""The docs' examples run, and the API reference names every public object."""

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

import choreograph

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
QUICKSTART = "docs/guide/quickstart.md"

# Every page with ```python blocks, and how many it has at least: a page that loses its
# examples (a broken fence, a section moved away) fails here instead of passing vacuously.
EXAMPLES = {
    "README.md": 1,
    "docs/index.md": 1,
    "docs/guide/quickstart.md": 1,
    "docs/guide/callbacks.md": 11,
    "docs/guide/run-many.md": 2,
    "docs/guide/async.md": 2,
    "docs/guide/retries.md": 4,
    "docs/guide/logging.md": 2,
    "docs/guide/otel.md": 3,
    "docs/guide/testing.md": 2,
    "docs/guide/durable.md": 2,
    "docs/guide/queues.md": 1,
    "docs/guide/entities.md": 1,
    "docs/architecture.md": 1,
    "docs/guide/listeners.md": 1,
    "docs/guide/parallel.md": 1,
    "docs/guide/pictures.md": 2,
    "docs/guide/executors.md": 5,
    "docs/guide/dask.md": 2,
    "docs/guide/postgres.md": 1,
}

FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
REFERENCE = re.compile(r"^::: (choreograph(?:\.\w+)*)$", re.MULTILINE)


def pages() -> list[str]:
    """Return the README and every Markdown page of the docs, as paths from the root."""
    found = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return [path.relative_to(ROOT).as_posix() for path in found]


def python_blocks(page: str) -> list[str]:
    return FENCE.findall((ROOT / page).read_text(encoding="utf-8"))


def test_every_page_with_python_blocks_is_run():
    """The pages with ```python blocks are exactly those listed in EXAMPLES, so all of them run."""
    assert {page for page in pages() if python_blocks(page)} == set(EXAMPLES)
    assert sum(len(python_blocks(page)) for page in EXAMPLES) >= 25


@pytest.mark.parametrize("page", sorted(EXAMPLES))
def test_the_python_blocks_of_a_page_run_in_order(page: str, tmp_path: Path, request: pytest.FixtureRequest):
    """A page's blocks run in order, in one namespace, in a fresh interpreter and folder."""
    server: dict[str, str] = {}
    if (
        page == "docs/guide/postgres.md"
    ):  # on the test server (or skipped, as the store's tests), in a schema dropped after
        server = {"DATABASE_URL": request.getfixturevalue("postgres_url")}
        server["CHOREOGRAPH_SCHEMA"] = request.getfixturevalue("pg_schema")()
    blocks = python_blocks(page)
    assert len(blocks) >= EXAMPLES[page]
    # Set-up blocks import from `quickstart`, the quick start's code saved as the guide says.
    (tmp_path / "quickstart.py").write_text("\n\n".join(python_blocks(QUICKSTART)), encoding="utf-8")
    # One module namespace, as a reader pasting the blocks in order would have; the
    # blocks' dataclasses must be importable by name (stores look classes up), so the
    # module is registered.
    runner = textwrap.dedent(
        """
        import sys, types
        blocks = {blocks!r}
        module = types.ModuleType("docs_page")
        sys.modules["docs_page"] = module
        for index, block in enumerate(blocks, 1):
            exec(compile(block, f"<{page} block {{index}}>", "exec"), module.__dict__)
        """
    ).format(blocks=blocks, page=page)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **server}
    done = subprocess.run(
        [sys.executable, "-c", runner], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


def reference_targets() -> list[str]:
    return [
        target
        for path in sorted((DOCS / "reference").glob("*.md"))
        for target in REFERENCE.findall(path.read_text(encoding="utf-8"))
    ]


def test_the_api_reference_documents_every_public_name():
    """Every name of `choreograph.__all__` has a `::: choreograph.Name` block, and so has each public subpackage."""
    targets = reference_targets()
    missing = {f"choreograph.{name}" for name in choreograph.__all__} - set(targets)
    assert not missing
    assert {"choreograph.typing", "choreograph.events", "choreograph.executors", "choreograph.otel"} <= set(targets)


def test_the_api_reference_names_public_objects_only():
    """Reference blocks name public objects, once each, so the docs survive moves of private modules."""
    targets = reference_targets()
    public = {f"choreograph.{name}" for name in choreograph.__all__}
    public |= {"choreograph.typing", "choreograph.events", "choreograph.executors", "choreograph.otel"}
    assert set(targets) <= public
    assert len(targets) == len(set(targets))
    for path in [ROOT / "mkdocs.yml", *DOCS.rglob("*.md")]:
        assert not re.search(r"choreograph\._(?!_)", path.read_text(encoding="utf-8")), path


def load_griffe_extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location("griffe_docstrings", DOCS / "griffe_docstrings.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_griffe_extension_fences_doctests_and_renders_version_directives():
    """`>>>` examples become fenced code, `.. versionadded::` a sentence; fences and `Examples:` stay as they are."""
    rewrite = load_griffe_extension().rewrite
    docstring = textwrap.dedent(
        """
        Summary.

        >>> 1 + 1
        2

        Args:
            x: A value.
                >>> x
            ```python
            >>> kept
            ```

        Examples:
            >>> kept_too

        .. versionadded:: 0.1.0
        .. deprecated:: 0.3.0 Use `other`."""
    ).strip()
    assert rewrite(docstring).splitlines() == [
        "Summary.",
        "",
        "```pycon",
        ">>> 1 + 1",
        "2",
        "```",
        "",
        "Args:",
        "    x: A value.",
        "        ```pycon",
        "        >>> x",
        "        ```",
        "    ```python",
        "    >>> kept",
        "    ```",
        "",
        "Examples:",
        "    >>> kept_too",
        "",
        "*Added in version 0.1.0.*",
        "*Deprecated since version 0.3.0.* Use `other`.",
    ]


def test_the_guide_lists_every_field_of_call():
    """The testing guide names every field of `Call`, so readers know what a trace entry holds."""
    from dataclasses import fields

    from choreograph import Call

    text = (DOCS / "guide" / "testing.md").read_text(encoding="utf-8")
    listed = f"Call({', '.join(field.name for field in fields(Call))})"
    assert listed in text
