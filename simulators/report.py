"""Counting what a run sent, and showing it with rich: live on a terminal, a table at the end."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from simulators.wire import SimMessage, from_ms

P = ParamSpec("P")


@dataclass(slots=True)
class RunStats:
    """What one simulator run published."""

    mode: str = "fleet"
    by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    late: int = 0
    published: int = 0  # MQTT publications, status announcements included
    acked: int = 0
    sim_start_ms: int | None = None
    sim_now_ms: int | None = None
    max_lag_s: float = 0.0  # how far publishing fell behind the simulated clock
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def add(self, msg: SimMessage, lag_s: float = 0.0) -> None:
        self.by_type[msg.type] += 1
        if msg.duplicate:
            self.duplicates += 1
        elif msg.late:
            self.late += 1
        self.sim_now_ms = msg.at_ms
        if self.sim_start_ms is None:
            self.sim_start_ms = msg.at_ms
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s

    @property
    def sent(self) -> int:
        return sum(self.by_type.values())

    @property
    def events(self) -> int:
        return sum(n for kind, n in self.by_type.items() if not kind.startswith("status."))

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return max(end - self.started, 1e-9)

    @property
    def rate(self) -> float:
        """Messages per real second."""
        return self.sent / self.elapsed

    def finish(self) -> RunStats:
        self.finished = time.monotonic()
        return self


ProgressFn = Callable[[RunStats], None]


def summary_table(stats: RunStats, title: str | None = None) -> Table:
    """Messages per type, then totals and the rate."""
    table = Table(title=title or f"trygg simulate ({stats.mode})", title_justify="left")
    table.add_column("type")
    table.add_column("sent", justify="right")
    for kind, count in sorted(stats.by_type.items()):
        table.add_row(kind, f"{count:,}")
    table.add_section()
    table.add_row("total", f"{stats.sent:,}")
    if stats.published > stats.sent:
        table.add_row("status announcements", f"{stats.published - stats.sent:,}")
    table.add_row("acknowledged (PUBACK)", f"{stats.acked:,}")
    table.add_row("duplicates (same id re-sent)", f"{stats.duplicates:,}")
    table.add_row("late (ts in the past)", f"{stats.late:,}")
    table.add_row("real seconds", f"{stats.elapsed:,.1f}")
    table.add_row("rate (messages/s)", f"{stats.rate:,.0f}")
    if stats.sim_start_ms is not None and stats.sim_now_ms is not None:
        span_h = (stats.sim_now_ms - stats.sim_start_ms) / 3_600_000
        table.add_row("simulated", f"{from_ms(stats.sim_start_ms).isoformat(timespec='seconds')}"
                      f" + {span_h:,.1f} h")
        table.add_row("max publish lag (s)", f"{stats.max_lag_s:,.2f}")
    return table


def _live_view(stats: RunStats) -> Group:
    line = Text.assemble(
        (f"{stats.sent:,} sent", "bold"), f"  {stats.rate:,.0f}/s  ",
        f"{stats.elapsed:,.0f} s",
    )
    if stats.sim_now_ms is not None:
        line.append(f"  simulated {from_ms(stats.sim_now_ms).isoformat(timespec='seconds')}")
    top = Table.grid(padding=(0, 2))
    for kind, count in stats.by_type.most_common(8):
        top.add_row(kind, f"{count:,}")
    return Group(line, top)


@contextmanager
def progress(console: Console, stats: RunStats) -> Iterator[ProgressFn]:
    """A callback that refreshes a live display on a terminal, and does nothing otherwise."""
    if not console.is_terminal:
        yield lambda s: None
        return
    with Live(_live_view(stats), console=console, refresh_per_second=4, transient=True) as live:
        yield lambda s: live.update(_live_view(s))


__all__ = ["ProgressFn", "RunStats", "blocking", "progress", "summary_table"]


def blocking(play: Callable[P, Coroutine[Any, Any, RunStats]]) -> Callable[P, RunStats]:
    """The coroutine `play_…` as a call that runs it on a loop of its own, in this thread
    (for the command line and tests; on a loop one already has, await `play_…`)."""

    @functools.wraps(play)
    def run(*args: P.args, **kwargs: P.kwargs) -> RunStats:
        return asyncio.run(play(*args, **kwargs))

    return run
