"""argon2 off the event loop, in a bounded worker (docs/security.md "Sign-in").

One argon2id check takes about 0.15 s of CPU and 64 MiB of memory. `trygg up` serves
the dashboard on the same event loop that hands alarms to staff, and a flood of
sign-ins used to put six checks at a time (asyncio's default thread pool), each in four
threads of its own (the hash's lanes), on a two-core machine: the alarm path's latency
went from 1.3 ms to 17 ms and the process from 103 to 488 MiB.

Here the checks run in `threads` worker threads (1 by default):

- each check computes all its lanes in the worker thread itself
  (`dashboard.auth.verify_password`), so it takes one core, never all of them;
- the worker runs at the lowest CPU priority (nice 19), so the alarm path, at normal
  priority, takes the CPU whenever it has work;
- after each check the thread rests `rest` times as long as the check took (2 by
  default) before it takes the next: under a flood argon2 gets at most a third of one
  core (its memory traffic slows the rest of the host too). A lone sign-in never waits
  for a rest; a line of them is served at about 2 a second;
- at most `max_waiting` checks wait for a thread; one more is refused at once
  (`HashingBusy`, answered 503 with `Retry-After`) instead of queueing without bound,
  so a flood costs one hash at a time and a few bytes per refused request.

argon2-cffi releases the GIL while it hashes, so a thread suffices. bench/login_flood
measures all this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from dashboard.auth import hash_password, verify_password

T = TypeVar("T")

#: CPU priority of the hashing threads (19: the lowest).
HASH_NICE = 19


class HashingBusy(Exception):
    """Every worker is busy and the waiting line is full."""


def _lower_priority() -> None:
    """Run in each worker thread when it starts: on Linux the nice value belongs to the
    thread, and threads it starts (argon2's lanes) inherit it. Not SCHED_IDLE: on a host
    kept busy by other work that would stop sign-ins altogether; nice 19 still leaves
    them a small share."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


class PasswordWorker:
    """A few low-priority threads for argon2 with a bounded waiting line."""

    def __init__(self, threads: int = 1, max_waiting: int = 16, rest: float = 2.0) -> None:
        self.threads = threads
        self.max_waiting = max_waiting
        self.rest = rest
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="trygg-argon2",
                                        initializer=_lower_priority)
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished (running or waiting)
        self._rest_until = 0.0
        self.refused = 0

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def full(self) -> bool:
        """No room for one more check now (a cheap look before any other work is done)."""
        return self._pending >= self.threads + self.max_waiting

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._pending >= self.threads + self.max_waiting:
                self.refused += 1
                raise HashingBusy
            self._pending += 1
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        # Released when the hash is done, even if the request was cancelled meanwhile:
        # the thread is busy until then.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _rested(self, fn: Callable[..., T], *args: object) -> T:
        """`fn` in the worker thread, then a rest of `rest` times as long as it took,
        which the caller does not wait for (the next check in the line does): under a
        flood argon2 gets at most 1 / (1 + rest) of the thread's time."""
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._rest_until = time.perf_counter() + self.rest * (time.perf_counter() - started)

    def _after_rest(self, fn: Callable[..., T], *args: object) -> T:
        pause = self._rest_until - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        return self._rested(fn, *args)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """`dashboard.auth.verify_password` in a worker; `HashingBusy` if the line is full."""
        return await self._run(self._after_rest, verify_password, password_hash, password)

    async def hash(self, password: str) -> str:
        return await self._run(self._after_rest, hash_password, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["HASH_NICE", "HashingBusy", "PasswordWorker"]
