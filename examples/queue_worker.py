"""
A durable queue: producer processes put invoices on it, a server runs each one as a durable run.

The producers are this script again (``queue_worker.py produce STORE FIRST COUNT``), in processes of
their own; the server serves the queue with two workers until every invoice is settled, then stops.
An invoice enqueued twice is stored once; one that fails stays failed, with its error, until it is
queued again.

Run: ``python examples/queue_worker.py``
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from choreograph import Coordinator, SqliteStore, Step

QUEUE = "invoices"


@dataclass(frozen=True)
class Invoice:
    """An invoice to book: its number is its key."""

    number: str
    cents: int


def check(invoice: Invoice) -> int:
    if invoice.cents <= 0:
        raise ValueError(f"invoice {invoice.number} has no amount")
    return invoice.cents


def book(invoice: Invoice) -> str:
    return f"booked {invoice.number} for {invoice.cents / 100:.2f}"


def produce(path: str, first: int, count: int) -> None:
    """Enqueue invoices ``first`` to ``first + count - 1``; a big one goes first (priority 1)."""
    with SqliteStore(path) as store:
        for n in range(first, first + count):
            invoice = Invoice(f"INV-{n}", 2500 * n)
            store.enqueue(QUEUE, invoice, key=invoice.number, priority=1 if invoice.cents > 20_000 else 0)


def stop_when_settled(store: SqliteStore, total: int, stop: threading.Event) -> None:
    while not stop.is_set():
        info = store.queue_info(QUEUE)
        if info["done"] + info["failed"] >= total:
            stop.set()
        time.sleep(0.05)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="choreograph-queue-") as folder:
        path = str(Path(folder) / "queue.db")
        producers = [
            subprocess.Popen([sys.executable, __file__, "produce", path, str(first), "6"])  # noqa: S603 - this script
            for first in (0, 6)
        ]
        for producer in producers:
            if producer.wait(timeout=60) != 0:
                sys.exit(f"a producer failed ({producer.returncode})")
        with SqliteStore(path) as store:
            again = store.enqueue(QUEUE, Invoice("INV-3", 7500), key="INV-3")
            print(f"INV-3 enqueued again: {again} (queued already: stored once)")
            flow = Coordinator[Invoice]([Step("check", check), Step("book", book)], store=store)
            stop = threading.Event()
            threading.Thread(target=stop_when_settled, args=(store, 12, stop), daemon=True).start()
            served = flow.serve(QUEUE, workers=2, stop=stop)
            print(f"served: {served.done} done, {served.failed} failed in {served.seconds:.2f}s")
            print(f"queue: {dict(store.queue_info(QUEUE))}")
            failed = store.message_info("INV-0")
            print(f"INV-0: {failed.status if failed else None}, {failed.error if failed else None}")
            booked = flow.run(Invoice("INV-11", 27_500), key="INV-11")  # done: its stored result, nothing runs
            print(booked.data_bag.get_job_data("book"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        produce(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
