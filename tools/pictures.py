"""
Draw the pictures of docs/guide/pictures.md again, from the code on that page.

    python tools/pictures.py          # rewrite the pictures in the page
    python tools/pictures.py --check  # exit 1 if a picture in the page is out of date

The page's ```python blocks run in order, in one namespace, as a reader would
run them; then each block between ``<!-- picture: NAME -->`` and
``<!-- /picture -->`` is replaced by the picture NAME (see `pictures`). The
timeline is drawn from the page's failed run with fixed times (`TIMES`), so
the page stays the same from one run to the next; `tests/test_pictures.py`
fails when the page's pictures differ from what this script draws.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from choreograph import Coordinator, RunResult
from choreograph._core.result import Finished, RawCall

ROOT: Final = Path(__file__).resolve().parent.parent
PAGE: Final = ROOT / "docs" / "guide" / "pictures.md"
COMMAND: Final = "python tools/pictures.py"

_PYTHON: Final = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_PICTURE: Final = re.compile(
    r"^(<!-- picture: (?P<name>[\w-]+) -->\n)(?:(?!<!-- /picture -->).*\n)*(<!-- /picture -->)$", re.MULTILINE
)

#: When each callback of the page's failed run started and how long it took, in seconds: round
#: numbers that keep the run's shape (the checks side by side, ``book``'s two attempts and the
#: wait between them, then the compensations in reverse order of completion).
TIMES: Final[dict[tuple[str, str], tuple[float, float]]] = {
    ("validate", "precheck"): (0.000, 0.0002),
    ("validate", "job"): (0.001, 0.004),
    ("reserve", "job"): (0.006, 0.018),
    ("credit", "job"): (0.006, 0.046),
    ("book", "job"): (0.053, 0.031),
    ("credit", "compensate"): (0.085, 0.007),
    ("reserve", "compensate"): (0.093, 0.003),
}


def run_page(text: str) -> dict[str, Any]:
    """Run the ```python blocks of *text* in order, in one new module's namespace, and return it."""
    module = types.ModuleType("pictures_page")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        for index, block in enumerate(_PYTHON.findall(text), 1):
            exec(compile(block, f"<{PAGE.name} block {index}>", "exec"), module.__dict__)  # noqa: S102 - the page's own code
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


def fixed(result: RunResult[Any]) -> RunResult[Any]:
    """
    *result* with the times of `TIMES`: the same calls, outcomes and attempts, in the order they finished.

    Raises:
        LookupError: The run's calls are not those `TIMES` has times for.
    """
    calls = result.trace
    if sorted((call.step, call.phase) for call in calls) != sorted(TIMES):
        msg = f"the page's failed run made other calls than TIMES in {__file__} expects: {calls}"
        raise LookupError(msg)
    raw: list[RawCall] = []
    for call in calls:
        started, seconds = TIMES[call.step, call.phase]
        raw.append((call.step, call.phase, call.outcome, seconds, call.attempts, call.restored, started))
    raw.sort(key=lambda entry: entry[6] + entry[3])
    run = Finished(
        result.input, result.errors, result.fatal, result.data_bag, 1, None, result.compensation_errors, tuple(raw)
    )
    return RunResult(run)


def pictures(namespace: dict[str, Any]) -> dict[str, str]:
    """The page's pictures by name, each a fenced block: drawn from its ``orders`` flow and its ``failed`` run."""
    orders: Coordinator[Any] = namespace["orders"]
    failed: RunResult[Any] = namespace["failed"]
    return {
        "orders": _fence("mermaid", orders.graph()),
        "orders-dot": _fence("dot", orders.graph("dot")),
        "failed-timeline": _fence("mermaid", fixed(failed).timeline()),
    }


def _fence(language: str, text: str) -> str:
    return f"```{language}\n{text}```\n"


def render(text: str) -> str:
    """
    *text* (the page) with its pictures drawn again.

    Raises:
        LookupError: The page's picture markers are not one pair for each picture of `pictures`.
    """
    drawn = pictures(run_page(text))
    marked = [found["name"] for found in _PICTURE.finditer(text)]
    if sorted(marked) != sorted(drawn):
        msg = f"{PAGE.name} marks the pictures {marked}; {__file__} draws {sorted(drawn)}"
        raise LookupError(msg)
    return _PICTURE.sub(lambda found: found[1] + drawn[found["name"]] + found[3], text)


def main(args: Sequence[str]) -> int:
    """Rewrite the page's pictures, or (``--check``) tell whether they are up to date."""
    text = PAGE.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in args:
        if new != text:
            print(f"{PAGE.relative_to(ROOT)}: the pictures are out of date; run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        PAGE.write_text(new, encoding="utf-8")
        print(f"{PAGE.relative_to(ROOT)}: pictures drawn again")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
