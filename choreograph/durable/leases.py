"""
Lease holders: their names, whether one is still alive, and which keys this process is running.

A holder is named ``host:pid:random``. A lease whose holder is a dead process
of this machine can be taken over at once; on other machines only its expiry
tells (see `Store.lease`).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import weakref
from typing import Final

HOST: Final = socket.gethostname()


def new_owner() -> str:
    """
    A fresh holder name for a store object of this process.

    >>> new_owner().count(":")
    2
    """
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_alive(holder: str, me: str) -> bool:
    """
    Whether *holder* may still be running (checked only on this machine): never *me* itself.

    >>> is_alive("elsewhere:1:abcd", "here:2:ef01"), is_alive("here:2:ef01", "here:2:ef01")
    (True, False)
    """
    host, _, rest = holder.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != HOST or holder == me or not pid_text.isdigit():
        return holder != me
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # another store object of this process: trust its lease
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ActiveKeys:
    """
    The keys each store object is running now, in any thread of this process.

    A store's lease can't tell two threads of one holder apart; this can: a
    second thread of the same store waits as for another process. Stores
    are told apart by identity; a store's entry goes when the store does.
    A claim is one ``dict.setdefault`` and a release one ``dict.pop``, each
    atomic: only a store's first claim takes the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[int, dict[str, object]] = {}

    def claim(self, store: object, key: str) -> bool:
        """Mark *key* as run through *store*; False if it already is."""
        keys = self._keys.get(id(store))
        if keys is None:
            with self._lock:
                keys = self._keys.get(id(store))
                if keys is None:
                    self._keys[id(store)] = keys = {}
                    weakref.finalize(store, self._forget, id(store))
        mine = object()
        return keys.setdefault(key, mine) is mine

    def release(self, store: object, key: str) -> None:
        """*key* is no longer run through *store*."""
        keys = self._keys.get(id(store))
        if keys is not None:
            keys.pop(key, None)

    def _forget(self, store_id: int) -> None:
        # A finalizer: it may run inside `claim` holding the lock (the collector runs it in whatever thread
        # allocates), so it must not take the lock; a dict's pop is atomic (see `Doorbell._drop`).
        self._keys.pop(store_id, None)


#: The keys this process's store objects run now (see `ActiveKeys`).
ACTIVE: Final = ActiveKeys()
