"""
The process-wide registries kept per store object (`Doorbell`, `ActiveKeys`) under the garbage collector.

Each drops a store's entry when the store is collected, through a finalizer.
The collector runs finalizers in whatever thread happens to allocate, which
may be one inside the registry holding its lock: a finalizer that took that
lock deadlocked the thread and, the lock never coming free, every later
``serve`` of the process (seen on CI: a serve test hung the whole suite).
"""

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from choreograph.durable.leases import ActiveKeys
from choreograph.durable.queues import Doorbell


class CyclicStore:
    """A stand-in for a store that only the cycle collector frees (it refers to itself)."""

    def __init__(self) -> None:
        self.me = self


@contextmanager
def collecting_at_every_allocation() -> Iterator[None]:
    """Run the cycle collector at (nearly) every allocation, as a busy process may at any one."""
    before = gc.get_threshold()
    gc.set_threshold(1)
    try:
        yield
    finally:
        gc.set_threshold(*before)


#: How to register a store with a registry, and how many stores it has entries for.
Registry = tuple[Callable[[object], object], Callable[[], int]]


def doorbell_register() -> Registry:
    bell = Doorbell()
    return (lambda store: bell.listen(store, "q", threading.Event())), lambda: len(bell._waiting)


def active_keys_register() -> Registry:
    keys = ActiveKeys()
    return (lambda store: keys.claim(store, "k")), lambda: len(keys._keys)


@pytest.mark.parametrize("registry", [doorbell_register, active_keys_register], ids=["doorbell", "active-keys"])
def test_a_store_collected_while_another_registers_does_not_deadlock(
    registry: Callable[[], Registry],
) -> None:
    register, entries = registry()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(100):
                register(CyclicStore())  # garbage at once: collected at the next registration's allocations
                with collecting_at_every_allocation():
                    register(CyclicStore())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=churn, daemon=True)  # daemon: a deadlocked one must not hold up the suite
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "registering a store deadlocked while another store was collected"
    assert not errors
    gc.collect()
    assert entries() == 0  # every store's entry went with it


@pytest.mark.parametrize("registry", [doorbell_register, active_keys_register], ids=["doorbell", "active-keys"])
def test_a_live_store_keeps_its_entry(registry: Callable[[], Registry]) -> None:
    register, entries = registry()
    store = CyclicStore()
    register(store)
    gc.collect()
    assert entries() == 1
    del store
    gc.collect()
    assert entries() == 0
