"""
Run a flow's records on a Dask cluster, durably: ``run_many(orders, executor=DaskExecutor(client))``.

The script starts a ``LocalCluster`` of two worker processes; on a real cluster, connect the client to
its scheduler instead, ``Client("tcp://scheduler:8786")``, with choreograph, this module and the same
package versions installed on every worker. The callbacks travel by reference: they are top-level
functions of this module, which the workers import (so its own work sits under ``__main__``). The
store is a SQLite file that every worker opens from its path: fine on one machine; a cluster of many
needs a store they all reach (a database server).

The second batch finds the first one's runs in the store: the orders that were charged are not
charged again, and the one that failed is run again.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

from distributed import Client, LocalCluster

from choreograph import Context, Coordinator, SqliteStore, Step
from choreograph.executors import DaskExecutor


@dataclass(frozen=True)
class Order:
    """A customer's order: its number and amount."""

    id: int
    amount: int


def order_key(order: Order) -> str:
    return f"order-{order.id}"


def check(order: Order) -> int:
    if order.amount <= 0:
        raise ValueError(f"order {order.id}: the amount must be positive, got {order.amount}")
    return order.amount


def charge(ctx: Context[Order], order: Order) -> str:
    limit = int(str(ctx.values["limit"]))
    if order.amount > limit:
        raise ValueError(f"order {order.id}: {order.amount} is over the limit of {limit}")
    return f"charged {order.amount} for order {order.id}"


def batches(flow: Coordinator[Order], client: Client) -> None:
    """Two batches on the cluster: the second resumes what the first left."""
    orders = [Order(i, 10 * i + 5) for i in range(40)]
    executor = DaskExecutor(client)
    first = list(flow.run_many(orders, executor=executor, values={"limit": 300}, ordered=True))
    failed = [result.input.id for result in first if not result.ok]
    print(f"first batch: {len(first) - len(failed)} orders charged, over the limit: {failed}")

    again = list(flow.run_many(orders, executor=executor, values={"limit": 500}, ordered=True))
    restored = [result.input.id for result in again if all(call.restored for call in result.trace)]
    print(f"second batch: {sum(result.ok for result in again)} ok, {len(restored)} restored from the store")
    print(again[39].data_bag.get_job_data("charge"))
    if failed != list(range(30, 40)) or restored != list(range(30)) or not all(result.ok for result in again):
        raise SystemExit("the batches did not go as described")
    if [call.restored for call in again[30].trace] != [True, False]:  # checked by the first batch, charged now
        raise SystemExit("order 30 was not resumed where it stopped")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "orders.db")
        flow = Coordinator[Order]([Step("check", check), Step("charge", charge)], store=store, key=order_key)
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
        try:
            with Client(cluster) as client:  # a real cluster: Client("tcp://scheduler:8786")
                batches(flow, client)
        finally:
            cluster.close()
            store.close()


if __name__ == "__main__":  # the workers import this module: only the script runs the batches
    main()
