"""Jittered exponential backoff: the one delay policy for every retry in Trygg (broker
reconnects, database retries, webhook attempts, simulated devices).

Each failure waits a random share (`jitter`, half to all by default) of the current
delay, and the delay doubles up to `max_s`, so many clients that lost the same broker
at the same moment do not all come back in the same instant. A success calls `reset`.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """`next()` is how long to wait before the next attempt; `reset()` after a success."""

    __slots__ = ("_delay", "_factor", "_first", "_jitter", "_max", "_uniform")

    def __init__(self, first_s: float, max_s: float, *, factor: float = 2.0,
                 jitter: tuple[float, float] = (0.5, 1.0),
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"backoff needs 0 < first_s <= max_s, got {first_s} and {max_s}")
        self._first = first_s
        self._max = max_s
        self._factor = factor
        self._jitter = jitter
        self._uniform = uniform
        self._delay = first_s

    @property
    def delay(self) -> float:
        """The un-jittered delay the next failure starts from."""
        return self._delay

    def next(self) -> float:
        """The seconds to wait now; the delay after it grows by `factor`, up to `max_s`."""
        wait = self._delay * self._uniform(*self._jitter)
        self._delay = min(self._delay * self._factor, self._max)
        return wait

    def reset(self) -> None:
        self._delay = self._first
