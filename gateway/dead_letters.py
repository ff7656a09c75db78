"""Dead letters, bounded: every bad message is counted, most are stored whole, and a flood
is summarised instead of stored (docs/ingest.md, "Dead-letter limits").

Any account that may publish on an events topic can send bad messages as fast as the
broker takes them: 20,000 in 1.9 s once became 20,000 rows, 5,000 of 16 KiB 81 MiB
(issue 13). So each source (the device id in the topic, or `bad_topic` for a topic
without a valid one) has a token bucket (a few a second, a small burst), and all sources
share a budget of rows and of payload bytes a second. A dead letter over any of these is
held back: counted in the metrics by reason and in its source's summary, which becomes
one dead-letter row per source and interval (reason `rate_limited`; the detail says how
many were held back and why, the payload is the first bytes of the last one). Nothing is
dropped silently.

The map of sources is bounded as well (an attacker can invent device ids): the least
recently seen source is forgotten first, and what it held back moves into the summary of
all forgotten sources, so a count is never lost with its source.

Sans-I/O: the clock is injected (monotonic seconds); the gateway stores what `record`
returns and, when `next_due` says so, the rows of `summaries`.
"""

from __future__ import annotations

import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from gateway import metrics
from storage import DeadLetter
from trygg.contract import MAX_PAYLOAD_BYTES, Reason, valid_id

#: the source of a dead letter whose topic holds no valid device id
BAD_TOPIC_SOURCE: Final = "bad_topic"
#: the summary of what sources forgotten by the bounded map held back
OTHER_SOURCES: Final = "other_sources"
#: a detail is a human explanation; an exception's text can be long
MAX_DETAIL: Final = 1000

_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    """How many dead letters are stored whole; the rest is summarised (defaults documented
    in docs/ingest.md)."""

    source_rate: float = 2.0  # dead letters a second, per source
    source_burst: float = 20.0
    total_rate: float = 50.0  # rows a second, all sources together
    total_burst: float = 500.0
    bytes_rate: float = 256 * 1024  # stored payload bytes a second, all sources together
    bytes_burst: float = 2 * 1024 * 1024
    max_sources: int = 1024  # sources remembered at once (and summaries an interval, at most, + 1)
    summary_interval_s: float = 60.0
    sample_bytes: int = 256  # payload kept in a summary: the start of the last one held back

    def __post_init__(self) -> None:
        if self.bytes_burst < MAX_PAYLOAD_BYTES or min(self.source_burst, self.total_burst) < 1:
            raise ValueError("dead-letter bursts must admit one whole dead letter")
        if self.max_sources < 1 or self.summary_interval_s <= 0:
            raise ValueError("dead-letter limits need max_sources >= 1 and a positive interval")


class _Bucket:
    """A token bucket: `rate` tokens a second up to `burst`, starting full."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def refill(self, now: float) -> float:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
        return self.tokens


@dataclass(slots=True)
class _Source:
    bucket: _Bucket
    held: Counter[str] = field(default_factory=Counter)  # reason -> dead letters held back
    held_bytes: int = 0
    since: float = 0.0  # when the first of `held` came (clock seconds)
    topic: str | bytes = ""  # of the last one held back
    sample: bytes = b""  # the start of the last one held back
    sources: int = 1  # for OTHER_SOURCES: how many forgotten sources it stands for


def storable(text: str | bytes) -> str:
    """Text PostgreSQL can store: a topic that is not UTF-8 as its repr, NUL and lone
    surrogates escaped (COPY would fail on them, and the batch with them)."""
    if isinstance(text, bytes):
        return repr(text)
    if _UNSTORABLE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def describe(exc: BaseException) -> str:
    """`Type: text` of an exception, even one whose `str` fails."""
    try:
        text = str(exc)
    except Exception:
        text = "(its text could not be made)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DeadLetters:
    """Counts every dead letter, keeps those within the limits as rows (`record`) and
    summarises the rest per source (`summaries`). Used from one thread (the gateway's
    receiving loop)."""

    def __init__(self, prefix: str, limits: DeadLetterLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._head = prefix + "/devices/"
        self.limits = limits = limits or DeadLetterLimits()
        self._clock = clock
        now = clock()
        self._rows = _Bucket(limits.total_rate, limits.total_burst, now)
        self._bytes = _Bucket(limits.bytes_rate, limits.bytes_burst, now)
        self._sources: OrderedDict[str, _Source] = OrderedDict()  # least recently seen first
        self._pending: OrderedDict[str, _Source] = OrderedDict()  # holding back, oldest `since` first
        self._other: _Source | None = None  # what forgotten sources held back

    def source_of(self, topic: str | bytes) -> str:
        """The device id of a device topic, else `bad_topic` (one source for all such
        topics: a topic an attacker invents must not make a source of its own)."""
        if isinstance(topic, str) and topic.startswith(self._head):
            device = topic[len(self._head) :].partition("/")[0]
            if valid_id(device):
                return device
        return BAD_TOPIC_SOURCE

    def record(self, topic: str | bytes, payload: bytes, reason: str, detail: str,
               received_at: datetime) -> DeadLetter | None:
        """Count one dead letter; the row to store, or None when it is held back for its
        source's summary (count it as handled: it is acknowledged like any other)."""
        metrics.DEAD_LETTERS.labels(reason).inc()
        now = self._clock()
        name = self.source_of(topic)
        source = self._sources.get(name)
        if source is None:
            source = self._sources[name] = _Source(
                _Bucket(self.limits.source_rate, self.limits.source_burst, now))
            if len(self._sources) > self.limits.max_sources:
                self._forget(*self._sources.popitem(last=False))
        else:
            self._sources.move_to_end(name)
        size = min(len(payload), MAX_PAYLOAD_BYTES)
        if (source.bucket.refill(now) >= 1 and self._rows.refill(now) >= 1
                and self._bytes.refill(now) >= size):
            source.bucket.tokens -= 1
            self._rows.tokens -= 1
            self._bytes.tokens -= size
            return DeadLetter(received_at, storable(topic), payload, reason, storable(detail[:MAX_DETAIL]))
        metrics.DEAD_LETTERS_HELD_BACK.labels(reason).inc()
        if not source.held:
            source.since = now
            self._pending[name] = source
        source.held[reason] += 1
        source.held_bytes += len(payload)
        source.topic = topic  # made storable when summarised
        source.sample = payload[: self.limits.sample_bytes]
        return None

    def next_due(self) -> float | None:
        """Seconds until the next summary is due (0 when one is), None when nothing is
        held back."""
        if not self._pending and self._other is None:  # the usual case, after every read
            return None
        first = next(iter(self._pending.values()), None)
        starts = [s.since for s in (first, self._other) if s is not None]
        return max(0.0, min(starts) + self.limits.summary_interval_s - self._clock())

    def summaries(self, received_at: datetime, *, every: bool = False) -> list[DeadLetter]:
        """The summary rows that are due (with `every`, all of them: when stopping). A
        summary due within the next second is written with them, so that sources that
        started holding back together are summarised together."""
        now = self._clock()
        interval = self.limits.summary_interval_s
        horizon = now + min(1.0, interval / 10) - interval  # summarise what started before this
        rows: list[DeadLetter] = []
        while self._pending:
            name, source = next(iter(self._pending.items()))
            if not every and source.since > horizon:
                break
            del self._pending[name]
            rows.append(self._summary(name, source, now, received_at))
        other = self._other
        if other is not None and (every or other.since <= horizon):
            self._other = None
            rows.append(self._summary(OTHER_SOURCES, other, now, received_at))
        return rows

    # -- internals ----------------------------------------------------------------------

    def _forget(self, name: str, source: _Source) -> None:
        """The map is full: `source` (the least recently seen) goes; its held-back
        dead letters move into the summary of forgotten sources."""
        if not source.held:
            return
        del self._pending[name]
        other = self._other
        if other is None:
            self._other = other = _Source(source.bucket, since=source.since, sources=0)
        other.held.update(source.held)
        other.held_bytes += source.held_bytes
        other.since = min(other.since, source.since)
        other.topic, other.sample = source.topic, source.sample
        other.sources += 1

    def _summary(self, name: str, source: _Source, now: float, received_at: datetime) -> DeadLetter:
        total = sum(source.held.values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in source.held.most_common())
        whom = (f"{source.sources} sources forgotten by the dead-letter limits" if name == OTHER_SOURCES
                else f"source {name}")
        detail = (f"{total} dead letter{'s' if total != 1 else ''} held back by the rate limit in"
                  f" {max(now - source.since, 0):.0f} s from {whom} ({reasons}; {source.held_bytes} bytes);"
                  f" the payload is the first {len(source.sample)} bytes of the last one")
        metrics.DEAD_LETTER_SUMMARIES.inc()
        row = DeadLetter(received_at, storable(source.topic), source.sample, Reason.RATE_LIMITED.value, detail)
        source.held = Counter()
        source.held_bytes = 0
        source.sample = b""
        return row


__all__ = ["BAD_TOPIC_SOURCE", "OTHER_SOURCES", "DeadLetterLimits", "DeadLetters", "describe", "storable"]
