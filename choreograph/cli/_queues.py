"""
``serve`` and ``queues``: serving a durable queue from the command line, and counting its messages.

``serve`` runs `Coordinator.serve` in the main thread, so SIGINT (Ctrl-C) and
SIGTERM stop it cleanly: it takes nothing new, lets the runs in flight
finish, prints what it served and exits (0, or 1 when messages failed).
``queues`` reads a store without importing any flow.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .._coordinator import Coordinator
from ..durable.protocol import QueueStore, Store
from ..durable.queues import MESSAGE_STATUSES, check_queue
from ._target import flow_store, inspect_store, load_target, with_store


def _queue_store(store: Store, command: str) -> QueueStore:
    if not isinstance(store, QueueStore):
        raise click.UsageError(f"{command}: the store {store.location} has no queues ({type(store).__name__})")
    return store


def serve_queue(*, target: str, queue: str, store_location: str | None, workers: int, exclusive: bool) -> int:
    """``choreograph serve``: serve QUEUE with TARGET until SIGINT or SIGTERM; return the exit status."""
    try:
        check_queue(queue)
    except ValueError as exc:
        raise click.UsageError(f"--queue: {exc}") from exc
    flow: Coordinator[Any] = load_target(target)
    store = flow_store(flow, store_location, create=True)
    if store is None:
        raise click.UsageError("serve needs a store: give --store STORE, or Coordinator(store=...) in the flow")
    served_store = _queue_store(store, "serve")
    flow = with_store(flow, served_store, flow.key)
    alone = " alone (exclusive: on standby while another server holds it)" if exclusive else ""
    click.echo(
        f"serving queue {queue!r} of {served_store.location} with {workers} worker{'s' if workers != 1 else ''}"
        f"{alone}; Ctrl-C or SIGTERM stops",
        err=True,
    )
    try:
        served = flow.serve(queue, workers=workers, exclusive=exclusive)
    finally:
        flow.close()
    click.echo(
        f"served queue {queue!r} for {served.seconds:.1f}s: {served.done} done, {served.failed} failed,"
        f" {served.returned} given back, {served.lost} taken over by another server",
        err=True,
    )
    info = served_store.queue_info(queue)
    click.echo("left in the queue: " + ", ".join(f"{n} {status}" for status, n in info.items()), err=True)
    return 1 if served.failed else 0


def list_queues(*, store_location: str, names: tuple[str, ...], as_json: bool) -> int:
    """``choreograph queues``: each queue's messages by status (every queue of the store, or the ones named)."""
    store = _queue_store(inspect_store(store_location), "queues")
    chosen = list(names) or store.queues()
    counted = {name: dict(store.queue_info(name)) for name in chosen}
    if as_json:
        click.echo(json.dumps(counted, ensure_ascii=False, indent=2))
        return 0
    if not counted:
        click.echo(f"{store.location}: no queues")
        return 0
    width = max(len("queue"), *(len(name) for name in counted))
    click.echo(f"{'queue':<{width}}" + "".join(f"  {status:>8}" for status in MESSAGE_STATUSES))
    for name, by_status in counted.items():
        click.echo(f"{name:<{width}}" + "".join(f"  {by_status[status]:>8}" for status in MESSAGE_STATUSES))
    return 0


__all__ = ["list_queues", "serve_queue"]
