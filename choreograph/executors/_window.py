"""
The window every executor keeps: how many inputs may be taken and not yet yielded.

It starts at two inputs per worker, so that the first results come after
few inputs, and grows by one per result yielded, up to `GROWTH` more, so
that a long stream of short runs doesn't wait on the consumer's every
result; memory stays bounded whatever the stream.
"""

from typing import Final

#: How far the window grows beyond its start.
GROWTH: Final = 1024


def start(workers: int) -> int:
    """
    The window of *workers* workers before any result was yielded.

    >>> start(4)
    8
    """
    return 2 * workers


def full(taken: int, yielded: int, window: int) -> bool:
    """
    Whether *taken* inputs, *yielded* results out, fill a window that started at *window*.

    >>> full(4, 0, 4), full(4, 1, 4), full(1028 + 2000, 2000, 4)
    (True, False, True)
    """
    return taken - yielded >= window + min(yielded, GROWTH)
