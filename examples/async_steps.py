"""
Mix ``async def`` callbacks with plain ones, and run records concurrently.

Inside an event loop, ``await coordinator.run_async(record)`` runs one record
without blocking the loop, so ``asyncio.gather`` runs several at once: the
records below each wait 50 ms on a fake service, and all of them together
take about as long as one. `get_data_bag` works in async callbacks too. Each
step is a handle on its output: ``bag.job(SCORE)`` is an ``int``, as
``fetch_score`` says, for mypy and pyright alike.

Run it with ``python examples/async_steps.py``.
"""

import asyncio
import time

from choreograph import Context, Coordinator, Step, get_data_bag

FAKE_SCORES = {"ada": 91, "grace": 78, "linus": 64, "margaret": 88}


async def fetch_score(user: str) -> int:
    await asyncio.sleep(0.05)  # stands for a call to a remote scoring service
    return FAKE_SCORES[user]


SCORE = Step("fetch_score", fetch_score)  # a Step[int]: `async def ... -> int`


def tier(ctx: Context[str]) -> str:
    return "gold" if ctx.data_bag.job(SCORE) >= 85 else "standard"


TIER = Step("tier", tier)


async def notify(user: str) -> str:
    bag = get_data_bag()  # the DataBag of the run that awaits this callback
    await asyncio.sleep(0.01)  # stands for sending an e-mail
    return f"told {user} about their {bag.job(TIER)} tier"


NOTIFY = Step("notify", notify)


def build() -> Coordinator[str]:
    return Coordinator[str]([SCORE, TIER, NOTIFY])


async def run_all(coordinator: Coordinator[str], users: list[str]) -> None:
    started = time.perf_counter()
    results = await asyncio.gather(*(coordinator.run_async(user) for user in users))
    elapsed = time.perf_counter() - started
    for result in results:
        print(f"{result.input:<9} score {result.data_bag.job(SCORE)}: {result.data_bag.job(NOTIFY)}")
    one_record = 0.06  # what a single record waits for
    how = "concurrently" if elapsed < one_record * len(users) / 2 else "one after the other"
    print(f"{len(results)} records ran {how} in {elapsed:.2f} s, all ok: {all(result.ok for result in results)}")


def main() -> None:
    asyncio.run(run_all(build(), list(FAKE_SCORES)))


if __name__ == "__main__":
    main()
