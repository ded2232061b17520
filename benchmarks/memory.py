"""
The calling process's memory over 1,000,000 inputs through each executor: it must stay flat.

Each executor (``"threads"``, ``"processes"``, ``"async"``) runs a lazy stream of records (a
generator of small dicts: nothing holds them all) through a one-step flow, and the results are
taken as they come and dropped, as a long batch is consumed. The resident set size (RSS) of the
calling process is read after 10% of the records and after all of them; the ratio is the second
over the first. Target: <= 1.10 for each executor (whatever a batch keeps per record would grow
it by tens of megabytes here). The async flow's step is ``async def``, the others' plain.

Run: ``python benchmarks/memory.py [--records N] [--quick] [--strict]`` (``--quick``: 20,000
records; ``--strict``: exit 1 when a target is missed). Reads ``/proc/self/statm`` (Linux); elsewhere
the peak RSS, which can only show growth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from choreograph import Coordinator, Step

TARGET = 1.10
EXECUTORS = ("threads", "processes", "async")
_STATM = Path("/proc/self/statm")


def total(record: dict[str, int]) -> int:
    return record["id"] + record["amount"]


async def total_later(record: dict[str, int]) -> int:
    await asyncio.sleep(0)
    return record["id"] + record["amount"]


def records(count: int) -> Iterator[dict[str, int]]:
    for index in range(count):
        yield {"id": index, "amount": index % 97}


def rss() -> int:
    """The calling process's resident set size, in bytes (its peak where /proc is missing)."""
    if _STATM.exists():
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # pragma: no cover - not Linux
    return peak if sys.platform == "darwin" else peak * 1024  # pragma: no cover - bytes on macOS, KiB elsewhere


def measure(executor: str, count: int) -> float:
    step = Step("total", total_later if executor == "async" else total)
    flow = Coordinator[dict[str, int]]([step])
    checkpoint = max(1, count // 10)
    started = time.perf_counter()
    early = ok = 0
    for done, result in enumerate(flow.run_many(records(count), executor=executor), 1):
        ok += result.ok
        if done == checkpoint:
            early = rss()
    seconds = time.perf_counter() - started
    late = rss()
    if ok != count:
        msg = f"{executor}: {ok} of {count} runs ok"
        raise AssertionError(msg)
    ratio = late / early
    mib = 1024 * 1024
    print(
        f"{executor:9} {count:>9,} records in {seconds:6.1f} s ({count / seconds:8,.0f}/s)   RSS after"
        f" {checkpoint:,}: {early / mib:6.1f} MiB, after {count:,}: {late / mib:6.1f} MiB:"
        f" ratio {ratio:.3f} (target <= {TARGET})"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per executor")
    parser.add_argument("--quick", action="store_true", help="20,000 records per executor")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--executor", choices=EXECUTORS, action="append", help="only these (default: all)")
    options = parser.parse_args()
    count = 20_000 if options.quick else options.records
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; results taken as they come, none kept")
    ratios = [measure(executor, count) for executor in options.executor or EXECUTORS]
    met = all(ratio <= TARGET for ratio in ratios)
    print(f"targets: RSS after all records <= {TARGET}x RSS after 10%: {'met' if met else 'MISSED'}")
    return 1 if options.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
