"""
The command line's grammar, with click: each command parses its options and calls the module that does the work.

Only click is imported here; a command imports what it needs when it runs,
so ``choreograph --help`` starts fast. Every error the user can fix is one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..durable.runlist import STATUSES

_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_STORE_HELP = "a SQLite file (or a postgresql:// URL, with choreograph[postgres])"


class _InOrder(click.Group):
    """A group that lists its commands in the order they were added (``run`` first), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: ARG002 - click's signature
        return list(self.commands)


@click.group(cls=_InOrder, context_settings=_SETTINGS)
@click.version_option(package_name="choreograph", message="%(prog)s %(version)s")
def cli() -> None:
    """
    Run choreograph flows over batches of records, and inspect or repair their stores.

    TARGET is module:attribute naming a Coordinator (importable from the current folder or PYTHONPATH).

    Exit status: 0 everything ok, 1 some runs failed, 2 a usage or definition error, 130 interrupted.
    """


@cli.command(context_settings=_SETTINGS)
@click.argument("target")
@click.argument("input_location", metavar="INPUT")
@click.option("--store", metavar="STORE", help=f"Make the runs durable in STORE: {_STORE_HELP}, created when missing.")
@click.option(
    "--key", "key_field", metavar="FIELD", help="The field holding each record's key [default: the flow's key=]."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Workers running records [default: threads cpus + 4 (at most 32); processes one per CPU; async 100].",
)
@click.option(
    "--executor",
    type=click.Choice(["threads", "processes", "async", "dask"]),
    default="threads",
    show_default=True,
    help="Where runs run: threads, worker processes, tasks on one event loop, or a Dask cluster (--scheduler).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="With --executor dask: the Dask scheduler's address (tcp://host:8786); needs choreograph[dask].",
)
@click.option("--fresh", is_flag=True, help="Run keys that finished ok again, from scratch.")
@click.option("--output", metavar="FILE", help="Write one JSON line per run to FILE ('-': standard output).")
@click.option(
    "--format",
    "chosen_format",
    type=click.Choice(["auto", "jsonl", "json", "csv"]),
    default="auto",
    show_default=True,
    help="INPUT's format; auto tells by the extension, then by the first character.",
)
@click.option("--no-progress", is_flag=True, help="Draw no progress bar (it is drawn only on a terminal anyway).")
def run(
    target: str,
    input_location: str,
    store: str | None,
    key_field: str | None,
    workers: int | None,
    executor: str,
    scheduler: str | None,
    fresh: bool,  # noqa: FBT001 - click passes flags by name
    output: str | None,
    chosen_format: str,
    no_progress: bool,  # noqa: FBT001
) -> int:
    """
    Run every record of INPUT through TARGET.

    INPUT is a file of JSON lines, a JSON array or CSV, or '-' for JSON lines on standard input.
    Each record becomes the flow's input type (CSV strings are converted to the annotated field types).

    With a store, keys that finished ok are restored and the others resume where they stopped.
    Ctrl-C stops taking records, lets the runs in flight finish and prints the summary.
    """
    from ._batch import run_records  # noqa: PLC0415 - imported when the command runs

    return run_records(
        target=target,
        source_location=input_location,
        store_location=store,
        key_field=key_field,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        fresh=fresh,
        output=output,
        chosen_format=chosen_format,
        progress=not no_progress,
    )


@cli.command(context_settings=_SETTINGS)
@click.option("--store", required=True, metavar="STORE", help=f"The store: {_STORE_HELP}.")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--step", metavar="STEP", help="Only runs stopped by this step.")
@click.option("--error-type", metavar="TYPE", help="Only runs whose error is of this class (Name or module.Name).")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N runs.")
@click.option("--count", is_flag=True, help="Count the runs by status, and the stopped ones by step and error type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs(
    store: str,
    status: Any,
    step: str | None,
    error_type: str | None,
    limit: int | None,
    count: bool,  # noqa: FBT001
    as_json: bool,  # noqa: FBT001
) -> int:
    """List the runs of a store, most recently updated first, or count them."""
    from ._inspect import list_runs  # noqa: PLC0415

    return list_runs(
        store_location=store,
        status=status,
        step=step,
        error_type=error_type,
        limit=limit,
        count=count,
        as_json=as_json,
    )


@cli.command(context_settings=_SETTINGS)
@click.option("--store", required=True, metavar="STORE", help=f"The store: {_STORE_HELP}.")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(store: str, key: str, as_json: bool) -> int:  # noqa: FBT001
    """Show one key: status, input, events in order, outputs, and errors with their tracebacks."""
    from ._inspect import show_key  # noqa: PLC0415

    return show_key(store_location=store, key=key, as_json=as_json)


@cli.command(context_settings=_SETTINGS)
@click.argument("target")
@click.option("--store", required=True, metavar="STORE", help=f"The store: {_STORE_HELP}.")
@click.option("--failed", is_flag=True, help="Every key whose run failed.")
@click.option("--poisoned", is_flag=True, help="Every poisoned key (it starts from scratch).")
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@click.option("--no-progress", is_flag=True, help="Draw no progress bar.")
def resume(target: str, store: str, failed: bool, poisoned: bool, keys: tuple[str, ...], no_progress: bool) -> int:  # noqa: FBT001
    """Run keys of a store again with their stored inputs: completed steps are restored, the rest runs."""
    from ._batch import resume_keys  # noqa: PLC0415

    return resume_keys(
        target=target, store_location=store, keys=keys, failed=failed, poisoned=poisoned, progress=not no_progress
    )


@cli.command(context_settings=_SETTINGS)
@click.argument("target")
@click.option("--store", required=True, metavar="STORE", help=f"The store: {_STORE_HELP}.")
@click.option("--from", "from_step", required=True, metavar="STEP", help="The first step to run again.")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.option("--no-progress", is_flag=True, help="Draw no progress bar.")
def rerun(target: str, store: str, from_step: str, keys: tuple[str, ...], no_progress: bool) -> int:  # noqa: FBT001
    """Run keys again as a new generation: the steps before STEP are restored, STEP and the rest run again."""
    from ._batch import rerun_keys  # noqa: PLC0415

    return rerun_keys(target=target, store_location=store, from_step=from_step, keys=keys, progress=not no_progress)


@cli.command(context_settings=_SETTINGS)
@click.argument("target")
@click.option("--queue", required=True, metavar="NAME", help="The queue to serve.")
@click.option("--store", metavar="STORE", help=f"The store holding the queue: {_STORE_HELP} [default: the flow's own].")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, metavar="N", help="Messages run at once."
)
@click.option("--exclusive", is_flag=True, help="Be the queue's only server; wait on standby while another one is.")
def serve(target: str, queue: str, store: str | None, workers: int, exclusive: bool) -> int:  # noqa: FBT001
    """
    Serve a durable queue: run each message through TARGET as a durable run keyed by the message's key.

    Messages are taken by priority, then by the time they became due. Ctrl-C or SIGTERM stops taking messages,
    lets the runs in flight finish, and prints what was served. Exit status 1 when some messages failed.
    """
    from ._queues import serve_queue  # noqa: PLC0415

    return serve_queue(target=target, queue=queue, store_location=store, workers=workers, exclusive=exclusive)


@cli.command(context_settings=_SETTINGS)
@click.option("--store", required=True, metavar="STORE", help=f"The store: {_STORE_HELP}.")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queues(store: str, names: tuple[str, ...], as_json: bool) -> int:  # noqa: FBT001
    """Count each queue's messages by status: queued (delayed ones too), running, done, failed."""
    from ._queues import list_queues  # noqa: PLC0415

    return list_queues(store_location=store, names=names, as_json=as_json)


@cli.command(context_settings=_SETTINGS)
@click.argument("target")
@click.option(
    "--format",
    "kind",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="A Mermaid flowchart, or Graphviz DOT (render it with: dot -Tsvg).",
)
def graph(target: str, kind: str) -> int:
    """Print TARGET's flow as a picture: its steps, prechecks, compensations and parallel groups."""
    from ._target import load_target  # noqa: PLC0415

    click.echo(load_target(target).graph(kind), nl=False)
    return 0


@cli.group(context_settings=_SETTINGS)
def store() -> None:
    """Check or clean a store."""


@store.command(context_settings=_SETTINGS)
@click.argument("location", metavar="STORE")
def verify(location: str) -> int:
    """Check the whole store: exit 0 when it is sound, 1 naming what is wrong."""
    from ._inspect import verify_store  # noqa: PLC0415

    return verify_store(store_location=location)


@store.command(context_settings=_SETTINGS)
@click.argument("location", metavar="STORE")
@click.option("--status", type=click.Choice(STATUSES), required=True, help="Delete the runs with this status.")
@click.option("--before", metavar="ISO-DATE", help="Only runs last updated before this date (or date and time).")
def prune(location: str, status: Any, before: str | None) -> int:
    """Delete finished runs and their events (runs going on are never deleted)."""
    from ._inspect import prune_store  # noqa: PLC0415

    return prune_store(store_location=location, status=status, before=before)


def run_command(args: Sequence[str] | None) -> int:
    """
    Run the command line; return its exit status (errors the user can fix are one line on stderr).

    A closed standard output (``choreograph runs | head``) is click's to handle: it exits with 1, quietly.
    """
    try:
        returned = cli.main(args=args, prog_name="choreograph", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        return 2
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "choreograph"
        click.echo(f"{where}: {' '.join(exc.format_message().split())}", err=True)
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return 130
    return returned if isinstance(returned, int) else 0
