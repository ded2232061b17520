"""
Griffe extension: render the reST leftovers of the package's Google-style docstrings.

mkdocstrings reads docstrings as Markdown, where a `>>>` example is a block quote and a
`.. versionadded::` directive plain text. Before they are rendered, this extension:

- fences `>>>` examples as `pycon` code blocks (not those of an `Examples:` section,
  which griffe parses itself);
- turns `.. versionadded:: 0.1.0` (and `versionchanged`, `deprecated`) into a sentence;
- gives an attribute without a docstring its Sphinx-style `#:` comment, if it has one
  (the aliases of `choreograph.typing`).

Loaded by `mkdocs.yml` (`extensions:` of the python handler); `tests/test_docs.py`
checks `rewrite`.
"""
# ruff: noqa: INP001  # a file of the docs, loaded by path, not a package

import re
from pathlib import Path

import griffe

_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<kind>versionadded|versionchanged|deprecated):: (?P<rest>.+)$")
_LABELS = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}
_EXAMPLES_SECTION = re.compile(r"^Examples?:\s*$")


def _directive(line: str) -> str:
    match = _DIRECTIVE.match(line)
    if match is None:
        return line
    version, _, text = match["rest"].partition(" ")
    sentence = f"*{_LABELS[match['kind']]} {version}.*"
    return f"{match['indent']}{sentence} {text.strip()}".rstrip()


def rewrite(docstring: str) -> str:
    """
    Return *docstring* with its `>>>` examples fenced and its version directives as sentences.

    Args:
        docstring: A docstring's text, dedented.

    Returns:
        The text to render as Markdown.
    """
    out: list[str] = []
    in_fence = in_doctest = in_examples = False
    indent = ""  # of the doctest being fenced
    for line in docstring.splitlines():
        stripped = line.strip()
        if in_doctest and (not stripped or not line.startswith(indent)):  # a blank line or a dedent ends it
            out.append(f"{indent}```")
            in_doctest = False
        if not in_fence and not in_doctest and line[:1].strip():  # a top-level line
            in_examples = bool(_EXAMPLES_SECTION.match(line))
        if stripped.startswith("```"):
            in_fence = not in_fence
        elif stripped.startswith(">>>") and not (in_fence or in_doctest or in_examples):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            in_doctest = True
        out.append(line if in_fence or in_doctest else _directive(line))
    if in_doctest:
        out.append(f"{indent}```")
    return "\n".join(out)


def _comment_above(obj: griffe.Object) -> str | None:
    """Return the `#:` comment lines right above *obj*'s first line, if any."""
    path = obj.filepath
    if obj.lineno is None or not isinstance(path, Path) or path not in obj.lines_collection:
        return None
    lines = obj.lines_collection[path]
    comment: list[str] = []
    index = obj.lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        comment.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    return "\n".join(comment) or None


class ReSTLeftovers(griffe.Extension):
    """Rewrite each object's docstring as it is loaded (see the module's docstring)."""

    def on_instance(self, *, obj: griffe.Object, **_: object) -> None:
        """Rewrite *obj*'s docstring, or give an attribute its `#:` comment."""
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
        elif obj.is_attribute and (comment := _comment_above(obj)) is not None:
            obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj)
