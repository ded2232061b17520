"""
Print the mutation score of each mutated module, and overall, from mutmut's last run.

Reads ``mutmut results --all true`` (one line per mutant: ``name: status``), so
run it from the project's root after ``mutmut run``. The score is

    killed / (killed + survived + timeout + suspicious + segfault + no tests)

- killed: a test failed with the mutant (mutmut's "caught by type check" counts too);
- survived: every test that runs the mutated function passed;
- timeout, suspicious, segfault: the tests hung, ran far slower than usual, or
  crashed; not a clean kill, so they count against the score;
- no tests: no selected test runs the mutated function, so nothing could kill it;
- not checked, skipped, interrupted: left out of both sides (the run didn't judge them).

Usage: ``python tools/mutation_score.py [--fail-under PERCENT] [--survivors]``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

#: A line of ``mutmut results``: ``    choreograph._core.bag.xǁDataBagǁ_put__mutmut_3: survived``.
_LINE = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+?)\s*$")
#: The mangled function part of a mutant's name (``x_func`` or ``xǁClassǁmethod``) starts the module's tail.
_FUNCTION = re.compile(r"\.x[_ǁ]")

KILLED = ("killed", "caught by type check")
UNDETECTED = ("survived", "timeout", "suspicious", "segfault", "no tests")
COLUMNS = ("killed", *UNDETECTED)


def module_of(mutant: str) -> str:
    """
    Return the module a mutant's name belongs to.

    >>> module_of("choreograph._core.bag.xǁDataBagǁ_put__mutmut_3")
    'choreograph._core.bag'
    >>> module_of("choreograph._errors.x_helper__mutmut_1")
    'choreograph._errors'
    """
    match = _FUNCTION.search(mutant)
    return mutant[: match.start()] if match else mutant.rpartition(".")[0]


def read_results(mutmut: str) -> dict[str, str]:
    """Every mutant's status, by name, as ``mutmut results --all true`` prints them."""
    completed = subprocess.run([mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True)  # noqa: S603 - our own venv's mutmut
    statuses: dict[str, str] = {}
    for line in completed.stdout.splitlines():
        match = _LINE.match(line)
        if match:
            statuses[match["name"]] = match["status"]
    return statuses


def tally(statuses: dict[str, str]) -> dict[str, Counter[str]]:
    """
    Count the statuses per module (killed statuses counted as ``killed``).

    >>> tally({"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "caught by type check", "m.x_g__mutmut_1": "survived"})
    {'m': Counter({'killed': 2, 'survived': 1})}
    """
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in sorted(statuses.items()):
        counts[module_of(name)]["killed" if status in KILLED else status] += 1
    return dict(counts)


def score(counts: Counter[str]) -> float | None:
    """
    The share of judged mutants that were killed, in percent (None when none was judged).

    >>> score(Counter(killed=19, survived=1, skipped=4))
    95.0
    >>> score(Counter(skipped=2)) is None
    True
    """
    judged = sum(counts[column] for column in COLUMNS)
    return None if judged == 0 else 100.0 * counts["killed"] / judged


def table(counts: dict[str, Counter[str]]) -> list[str]:
    """The table `main` prints: one row per module, then the total."""
    total: Counter[str] = Counter()
    for module_counts in counts.values():
        total.update(module_counts)
    width = max([len("module"), len("total"), *map(len, counts)])
    header = f"{'module':<{width}}  " + "  ".join(f"{c:>9}" for c in COLUMNS) + "      score"
    rows = [header, "-" * len(header)]
    for module, module_counts in [*sorted(counts.items()), ("total", total)]:
        if module == "total":
            rows.append("-" * len(header))
        value = score(module_counts)
        shown = "        -" if value is None else f"{value:8.1f}%"
        rows.append(f"{module:<{width}}  " + "  ".join(f"{module_counts[c]:>9}" for c in COLUMNS) + f"  {shown}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table; return 1 if a module scores under ``--fail-under``."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fail-under", type=float, default=None, help="fail if a module scores under this percent")
    parser.add_argument("--survivors", action="store_true", help="also list the mutants that were not killed")
    args = parser.parse_args(argv)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    statuses = read_results(mutmut)
    if not statuses:
        print("no mutmut results: run `mutmut run` first (or `make mutation`)")
        return 1
    counts = tally(statuses)
    print("\n".join(table(counts)))
    print("score = killed / (killed + survived + timeout + suspicious + segfault + no tests)")
    if args.survivors:
        print()
        for name, status in sorted(statuses.items()):
            if status not in KILLED and status in UNDETECTED:
                print(f"{status:>10}  {name}")
    if args.fail_under is not None:
        low = [m for m, c in counts.items() if (value := score(c)) is not None and value < args.fail_under]
        if low:
            print(f"under {args.fail_under:g}%: {', '.join(sorted(low))}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
