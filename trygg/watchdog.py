"""Parts that must not end: when one does, the process exits so a supervisor restarts it.

A thread that ends by an exception nobody expected, or a loop that returns, would leave
Trygg alive but deaf: still answering `/healthz`, no longer storing events or raising
alerts. Each part that must run for as long as the process does is started through
this module: a `WatchedThread`, or an asyncio task passed to `watch_task`. When one ends
without having been asked to, it logs the part's name and ends the process at once with
`EXIT_CODE` — no clean shutdown, since the rest may be waiting on the part that is gone.
systemd's `Restart=always` (deploy/systemd/trygg.service), compose's `restart:`, or the
operator's supervisor starts it again; the broker keeps what was not acknowledged, the
local log what was not yet stored (docs/operators.md "When Trygg exits by itself").

Being asked to end is the owner's to say (`stopping`); a task that is cancelled was
asked to end by whoever cancelled it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

from trygg.logging import get_logger

log = get_logger(__name__)

#: The exit status when a part ended (EX_SOFTWARE): not 0, so every supervisor restarts.
EXIT_CODE: Final = 70

#: How the process ends; replaced only by the watchdog's own unit tests.
exit_process: Callable[[int], None] = os._exit


def part_ended(name: str, error: BaseException | None = None) -> None:
    """Log which part ended (and why, when it raised) and end the process."""
    log.critical("part_that_must_not_end_has_ended",
                 part=name, error=None if error is None else f"{type(error).__name__}: {error}",
                 exit_code=EXIT_CODE)
    sys.stderr.flush()
    exit_process(EXIT_CODE)


class WatchedThread:
    """A daemon thread running `target`, which must not return or raise until the owner
    asked it to (`stopping()` true); if it does, the process ends."""

    def __init__(self, target: Callable[[], None], name: str, stopping: Callable[[], bool]) -> None:
        self._target = target
        self._stopping = stopping
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def name(self) -> str:
        return self._thread.name

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._target()
        except BaseException as exc:
            error = exc
        if not self._stopping():
            part_ended(self.name, error)
        elif error is not None:
            log.error("thread_ended_by_error_while_stopping", thread=self.name,
                      error=f"{type(error).__name__}: {error}")

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()


def watch_task(task: asyncio.Task[Any], stopping: Callable[[], bool]) -> asyncio.Task[Any]:
    """End the process if `task` returns or raises before `stopping()`; returns `task`.
    A cancelled task was stopped on purpose."""

    def done(task: asyncio.Task[Any]) -> None:
        if task.cancelled() or stopping():
            return
        part_ended(task.get_name(), task.exception())

    task.add_done_callback(done)
    return task


__all__ = ["EXIT_CODE", "WatchedThread", "part_ended", "watch_task"]
