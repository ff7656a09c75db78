"""The dead-letter limits (gateway/dead_letters.py), with an injected clock: a flood from
one source or from many becomes a bounded number of rows plus one summary per source and
interval, and every held-back dead letter is counted, none dropped silently."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from gateway.dead_letters import (
    BAD_TOPIC_SOURCE,
    OTHER_SOURCES,
    DeadLetterLimits,
    DeadLetters,
    describe,
    storable,
)
from storage import DeadLetter

PREFIX = "t/trygg/v1"
AT = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def topic(device: str) -> str:
    return f"{PREFIX}/devices/{device}/events"


def held(row: DeadLetter) -> int:
    found = re.match(r"(\d+) dead letters? held back", row.detail)
    assert found is not None, row.detail
    return int(found.group(1))


def send(letters: DeadLetters, device: str, n: int, reason: str = "bad_json",
         payload: bytes = b"{oops") -> list[DeadLetter]:
    rows = [letters.record(topic(device), payload, reason, "detail", AT) for _ in range(n)]
    return [r for r in rows if r is not None]


def test_a_source_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    letters = DeadLetters(PREFIX, DeadLetterLimits(source_rate=2, source_burst=20), clock)
    assert len(send(letters, "d-1", 100)) == 20
    clock.now += 1.0
    assert len(send(letters, "d-1", 100)) == 2
    clock.now += 0.25
    assert len(send(letters, "d-1", 100)) == 0
    clock.now += 0.25
    assert len(send(letters, "d-1", 100)) == 1
    assert len(send(letters, "d-2", 5)) == 5, "another source has a bucket of its own"


def test_held_back_dead_letters_are_summarised_once_per_source_and_interval() -> None:
    clock = Clock()
    letters = DeadLetters(PREFIX, DeadLetterLimits(source_burst=20, summary_interval_s=60), clock)
    stored = send(letters, "d-1", 15_000, "unknown_device", b"x" * 1000)
    stored += send(letters, "d-1", 5_000, "bad_json", b"y" * 1000)
    assert len(stored) == 20
    assert letters.next_due() == 60
    clock.now += 30
    assert letters.summaries(AT) == []
    assert letters.next_due() == 30
    clock.now += 30
    [summary] = letters.summaries(AT)
    assert summary.reason == "rate_limited"
    assert summary.topic == topic("d-1")
    assert summary.payload == b"y" * 256, "the start of the last one held back"
    assert held(summary) + len(stored) == 20_000
    assert "unknown_device 14980" in summary.detail and "bad_json 5000" in summary.detail
    assert letters.next_due() is None, "nothing held back any more"
    assert letters.summaries(AT, every=True) == []


def test_summaries_due_within_a_second_are_written_together_and_all_when_stopping() -> None:
    clock = Clock()
    letters = DeadLetters(PREFIX, DeadLetterLimits(source_burst=1, summary_interval_s=60), clock)
    send(letters, "d-1", 3)
    clock.now += 0.5
    send(letters, "d-2", 3)
    clock.now += 10
    send(letters, "d-3", 3)
    clock.now += 49.5  # d-1 due now, d-2 in half a second, d-3 in 10.5
    assert sorted(row.topic for row in letters.summaries(AT)) == [topic("d-1"), topic("d-2")]
    assert letters.next_due() == pytest.approx(10.5)
    assert [row.topic for row in letters.summaries(AT, every=True)] == [topic("d-3")]


def test_the_global_budget_of_rows_and_bytes_holds_whatever_the_number_of_sources() -> None:
    clock = Clock()
    letters = DeadLetters(PREFIX, DeadLetterLimits(total_rate=50, total_burst=500,
                                                   bytes_rate=256 * 1024, bytes_burst=2 * 1024 * 1024), clock)
    rows = [letters.record(topic(f"d-{i}"), b"{", "unknown_device", "d", AT) for i in range(3000)]
    assert sum(r is not None for r in rows) == 500
    clock.now += 1
    rows = [letters.record(topic(f"e-{i}"), b"{", "unknown_device", "d", AT) for i in range(3000)]
    assert sum(r is not None for r in rows) == 50
    # Bytes: 2 MiB of burst is 128 payloads of 16 KiB, then 16 a second.
    clock.now += 3600
    big = b"x" * 16 * 1024
    rows = [letters.record(topic(f"f-{i}"), big, "too_large", "d", AT) for i in range(1000)]
    assert sum(r is not None for r in rows) == 128
    clock.now += 1
    rows = [letters.record(topic(f"g-{i}"), big, "too_large", "d", AT) for i in range(1000)]
    assert sum(r is not None for r in rows) == 16


def test_the_map_of_sources_is_bounded_and_forgotten_sources_keep_their_counts() -> None:
    clock = Clock()
    letters = DeadLetters(PREFIX, DeadLetterLimits(source_burst=1, total_burst=1_000_000, total_rate=1,
                                                   max_sources=100), clock)
    sent, stored = 0, 0
    for i in range(10_000):  # an attacker inventing device ids, 3 messages each
        stored += len(send(letters, f"x-{i}", 3))
        sent += 3
    assert len(letters._sources) == 100
    clock.now += 60
    rows = letters.summaries(AT)
    assert len(rows) == 101, "one per remembered source and one for all forgotten ones"
    assert sum(held(r) for r in rows) + stored == sent
    [other] = [r for r in rows if "forgotten" in r.detail]
    assert "9900 sources" in other.detail
    assert OTHER_SOURCES == "other_sources"


def test_sources_are_devices_and_topics_without_one_share_a_source() -> None:
    letters = DeadLetters(PREFIX, clock=Clock())
    assert letters.source_of(topic("d-17")) == "d-17"
    assert letters.source_of(f"{PREFIX}/devices/d 17/events") == BAD_TOPIC_SOURCE
    assert letters.source_of(f"{PREFIX}/devices/{'x' * 100}/events") == BAD_TOPIC_SOURCE
    assert letters.source_of(b"\xff\xfe") == BAD_TOPIC_SOURCE
    assert letters.source_of("elsewhere/devices/d-1/events") == BAD_TOPIC_SOURCE


def test_every_dead_letter_is_counted_by_reason_held_back_or_not() -> None:
    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"reason": "not_object"}) or 0.0

    counted, held_back = value("trygg_gateway_dead_letters_total"), value("trygg_gateway_dead_letters_held_back_total")
    letters = DeadLetters(PREFIX, DeadLetterLimits(source_burst=20), Clock())
    assert len(send(letters, "d-1", 1000, "not_object")) == 20
    assert value("trygg_gateway_dead_letters_total") == counted + 1000
    assert value("trygg_gateway_dead_letters_held_back_total") == held_back + 980


def test_what_is_stored_is_text_postgresql_takes() -> None:
    letters = DeadLetters(PREFIX, clock=Clock())
    row = letters.record(b"t/\xff", b"\x00\xff", "bad_topic", "type '\ud800' and \x00", AT)
    assert row is not None
    assert row.topic == "b't/\\xff'"
    assert row.detail == "type '\\ud800' and \\x00"
    assert row.payload == b"\x00\xff", "the payload is bytea: kept as it came"
    assert storable("stue æ") == "stue æ"
    assert len(letters.record(topic("d-1"), b"", "internal_error", "x" * 10_000, AT).detail) == 1000  # type: ignore[union-attr]


def test_an_exception_is_described_even_when_its_text_fails() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    assert describe(KeyError("k")) == "KeyError: 'k'"
    assert describe(RecursionError()) == "RecursionError"
    assert describe(Broken()) == "Broken: (its text could not be made)"


def test_limits_that_could_never_store_a_whole_dead_letter_are_refused() -> None:
    with pytest.raises(ValueError):
        DeadLetterLimits(bytes_burst=1000)
    with pytest.raises(ValueError):
        DeadLetterLimits(source_burst=0.5)
