"""
Resources: ``Coordinator(resources={"db": factory})``, made once per worker on first use, closed when the worker ends.

A worker is what runs runs one after another: a thread of `ThreadExecutor`,
the event loop of `AsyncExecutor`, a process of `ProcessExecutor`, or the
thread calling ``run``. `Resources` keeps the factories and each thread's
current `WorkerResources` (what ``ctx.resources`` shows a run); a run is given
its worker's when it starts, in the thread that drives it, so that the
callbacks of its parallel branches, on other threads, use the same ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Final

from .._core.callbacks import type_name

#: A resource's factory: returns the resource, or a context manager whose ``__enter__`` returns it.
Factory = Callable[[], object]

_MISSING: Final = object()


def check_factories(resources: object) -> dict[str, Factory]:
    """
    Check ``Coordinator(resources=...)``: a mapping of non-empty names to callables.

    >>> sorted(check_factories({"db": dict}))
    ['db']
    """
    if not isinstance(resources, Mapping):
        msg = f"resources must be a mapping of names to factories, got {type_name(resources)}"
        raise TypeError(msg)
    checked: dict[str, Factory] = {}
    for name, factory in resources.items():
        if not isinstance(name, str) or not name:
            msg = f"a resource's name must be a non-empty str, got {name!r}"
            raise TypeError(msg)
        if not callable(factory):
            msg = f"resource {name!r}: the factory must be a callable taking no argument, got {type_name(factory)}"
            raise TypeError(msg)
        checked[name] = factory
    return checked


class WorkerResources(Mapping[str, object]):
    """
    One worker's resources, made on first use (``ctx.resources``): a read-only mapping.

    Reading a name calls its factory the first time; a factory that raises
    fails the callback that asked (nothing is kept: the next read calls it
    again). A context manager is entered, and exited by `close`, in reverse
    order of creation; a name read after that is made again. Thread-safe:
    the callbacks of parallel branches read their run's worker's resources
    from other threads.
    """

    __slots__ = ("_factories", "_lock", "_made", "_stack", "thread")

    def __init__(self, factories: Mapping[str, Factory]) -> None:
        self._factories = factories
        self._made: dict[str, object] = {}
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self.thread = threading.current_thread()  # the worker's

    def __getitem__(self, name: str) -> object:
        made = self._made.get(name, _MISSING)
        if made is not _MISSING:
            return made
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(repr(known) for known in self._factories) or "none"
            msg = f"no resource named {name!r}; the coordinator's resources: {known}"
            raise KeyError(msg)
        with self._lock:
            made = self._made.get(name, _MISSING)
            if made is _MISSING:
                made = factory()
                if hasattr(type(made), "__enter__") and hasattr(type(made), "__exit__"):
                    made = self._stack.enter_context(made)  # type: ignore[arg-type]  # a context manager
                self._made[name] = made
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    # One worker's, compared by identity: a Mapping's `==` would read (so make) every resource.
    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<resources {list(self._factories)!r}, made {list(self._made)!r}>"

    def close(self) -> None:
        """Exit the context managers made so far, the last made first; made again if read afterwards."""
        with self._lock:
            stack, self._stack, self._made = self._stack, ExitStack(), {}
        stack.close()


class Resources:
    """A coordinator's resource factories, and the resources of each worker that used them."""

    def __init__(self, factories: Mapping[str, Factory]) -> None:
        self.factories = factories
        self._local = threading.local()
        self._open: list[WorkerResources] = []
        self._lock = threading.Lock()

    def here(self) -> WorkerResources:
        """The resources of the worker running in this thread (the thread itself, outside a worker)."""
        current: WorkerResources | None = getattr(self._local, "current", None)
        if current is None:
            current = self._local.current = self._new()
        return current

    def _new(self) -> WorkerResources:
        made = WorkerResources(self.factories)
        with self._lock:
            self._open.append(made)
        return made

    @contextmanager
    def worker(self) -> Iterator[None]:
        """A worker's life in this thread: its runs get resources of their own, closed when it ends."""
        previous: WorkerResources | None = getattr(self._local, "current", None)
        own = self._local.current = self._new()
        try:
            yield
        finally:
            self._local.current = previous
            with self._lock:
                if own in self._open:
                    self._open.remove(own)
            own.close()

    def close(self) -> None:
        """Close every worker's resources (``Coordinator.close``); they are made again if used afterwards."""
        with self._lock:
            opened = list(self._open)
            # Those of threads that ended are forgotten (their thread-local is gone with them).
            self._open = [made for made in opened if made.thread.is_alive()]
        with ExitStack() as stack:  # every one is closed, even when one raises
            for made in opened:
                stack.callback(made.close)
