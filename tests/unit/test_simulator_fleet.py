"""The fleet simulator: deterministic for a seed, and every message valid for the gateway."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from simulators import Fleet, Network, SimMessage, build_residents
from simulators.geo import in_safe_zone
from trygg.contract import (
    MAX_FUTURE,
    MAX_PAST,
    SOURCE_KINDS,
    DeviceKind,
    EventType,
    parse_event,
    parse_status,
    parse_topic,
)
from trygg.registry import Registry

PREFIX = "trygg/v1"
# Local midnight in Oslo, so "a day" is one whole simulated day.
MIDNIGHT = datetime(2026, 11, 19, 23, 0, tzinfo=UTC)


def digest(messages: list[SimMessage]) -> str:
    h = hashlib.sha256()
    for m in messages:
        h.update(f"{m.at_ms} {m.topic(PREFIX)} ".encode() + m.payload + b"\n")
    return h.hexdigest()


def stream(seed: int, residents: int, hours: float, start: datetime = MIDNIGHT) -> list[SimMessage]:
    return list(Fleet(seed, residents, start).messages(until=start + timedelta(hours=hours)))


@pytest.fixture(scope="module")
def day_of_50() -> tuple[Registry, list[SimMessage]]:
    fleet = Fleet(7, 50, MIDNIGHT)
    messages = list(fleet.messages(until=MIDNIGHT + timedelta(days=1)))
    return fleet.registry(), messages


def test_same_seed_gives_the_same_stream() -> None:
    assert digest(stream(3, 8, 12)) == digest(stream(3, 8, 12))


def test_a_different_seed_gives_a_different_stream() -> None:
    assert digest(stream(3, 8, 12)) != digest(stream(4, 8, 12))


def test_a_resident_behaves_the_same_in_a_small_and_a_large_fleet() -> None:
    def of_first_two(messages: list[SimMessage]) -> list[SimMessage]:
        ids = {d.id for r in build_residents(5, 2) for d in r.devices}
        return [m for m in messages if m.device_id in ids]

    assert digest(of_first_two(stream(5, 2, 6))) == digest(of_first_two(stream(5, 12, 6)))


def test_the_start_time_only_cuts_the_stream_and_tags_the_ids() -> None:
    late_start = MIDNIGHT + timedelta(hours=10)
    early = [m for m in stream(9, 4, 24) if m.ts_ms >= late_start.timestamp() * 1000]
    late = stream(9, 4, 14, start=late_start)

    def strip(ms: list[SimMessage]) -> list[tuple[int, str, str]]:
        return [(m.at_ms, m.device_id, json.loads(m.payload)["ts"]) for m in ms]

    assert strip(early) == strip(late)


def test_a_day_of_50_residents_is_valid_for_the_gateway(
    day_of_50: tuple[Registry, list[SimMessage]],
) -> None:
    registry, messages = day_of_50
    devices = registry.device_index()
    failures: list[str] = []
    for msg in messages:
        received = msg.at()
        topic = parse_topic(msg.topic(PREFIX), PREFIX)
        if topic.device_id not in devices:
            failures.append(f"{msg.device_id}: not in the registry")
            continue
        kind = devices[topic.device_id][1].device_kind
        if topic.channel == "status":
            parse_status(msg.payload)
            continue
        try:
            event = parse_event(topic.device_id, msg.payload, received)
        except ValueError as exc:
            failures.append(f"{msg.payload!r}: {exc}")
            continue
        if kind not in SOURCE_KINDS[event.type]:
            failures.append(f"{msg.device_id} ({kind}) sent {event.type}")
        if not received - MAX_PAST <= event.ts <= received + MAX_FUTURE:
            failures.append(f"{msg.payload!r}: ts outside the accepted window")
    assert failures == []
    assert len(messages) > 50_000


def test_the_stream_is_in_publication_order_and_covers_a_day(
    day_of_50: tuple[Registry, list[SimMessage]],
) -> None:
    _, messages = day_of_50
    at = [m.at_ms for m in messages]
    assert at == sorted(at)
    assert at[0] >= MIDNIGHT.timestamp() * 1000
    assert at[-1] <= (MIDNIGHT + timedelta(days=1)).timestamp() * 1000


def test_a_day_has_every_kind_of_daily_life(day_of_50: tuple[Registry, list[SimMessage]]) -> None:
    _, messages = day_of_50
    types = Counter(m.type for m in messages)
    for needed in ("heartbeat", "motion", "location", "door.opened", "door.closed",
                   "door.unlocked", "door.locked", "alarm.button", "alarm.cancel",
                   "battery.low"):
        assert types[needed] > 0, needed
    rooms = {json.loads(m.payload)["data"]["room"] for m in messages if m.type == "motion"}
    assert {"bedroom", "kitchen", "bathroom"} <= rooms


def test_event_ids_are_unique_per_device_except_re_sends(
    day_of_50: tuple[Registry, list[SimMessage]],
) -> None:
    _, messages = day_of_50
    seen: dict[tuple[str, str], bytes] = {}
    resent = 0
    for m in messages:
        if m.channel != "events":
            continue
        key = (m.device_id, json.loads(m.payload)["id"])
        if key in seen:
            assert m.duplicate and seen[key] == m.payload  # the same message again
            resent += 1
        else:
            assert not m.duplicate
            seen[key] = m.payload
    assert resent > 0


def test_the_network_delivers_some_messages_late(
    day_of_50: tuple[Registry, list[SimMessage]],
) -> None:
    _, messages = day_of_50
    late = [m for m in messages if m.late]
    assert late
    assert all(timedelta(0) < timedelta(milliseconds=m.at_ms - m.ts_ms) <= timedelta(hours=2)
               for m in late)


def test_silent_devices_go_offline_come_back_and_send_what_they_kept() -> None:
    fleet = Fleet(11, 6, MIDNIGHT, network=Network(duplicate_p=0, late_p=0, silence_scale=30))
    by_device: dict[str, list[SimMessage]] = defaultdict(list)
    for m in fleet.messages(until=MIDNIGHT + timedelta(days=1)):
        by_device[m.device_id].append(m)
    went_offline = 0
    for messages in by_device.values():
        states = [m for m in messages if m.channel == "status"]
        assert [m.payload for m in states] == [b"offline", b"online"] * (len(states) // 2)
        for off, on in zip(states[::2], states[1::2], strict=True):
            went_offline += 1
            during = [m for m in messages if off.at_ms <= m.ts_ms < on.at_ms and m.channel == "events"]
            assert all(m.type != "heartbeat" for m in during)  # silent: no heartbeats
            assert all(m.at_ms >= on.at_ms for m in during)  # the rest arrives late
    assert went_offline > 0


def test_walks_leave_the_safe_zones_and_come_back() -> None:
    fleet = Fleet(2, 12, MIDNIGHT, incident_rate=1.0)
    wearers = {d.id: r for r in fleet.residents for d in r.locators()}
    inside = Counter[bool]()
    last: dict[str, bool] = {}
    for m in fleet.messages(until=MIDNIGHT + timedelta(days=3)):
        if m.device_id in wearers and m.type == "location":
            data = json.loads(m.payload)["data"]
            state = in_safe_zone(wearers[m.device_id], data["lat"], data["lon"])
            inside[state] += 1
            last[m.device_id] = state
    assert inside[True] > 0 and inside[False] > 0
    assert all(last.values())  # everybody is home again at the end


def test_the_local_time_of_day_drives_the_rhythm(
    day_of_50: tuple[Registry, list[SimMessage]],
) -> None:
    _, messages = day_of_50
    hours = Counter(
        int(json.loads(m.payload)["ts"][11:13]) for m in messages if m.type == "motion"
    )
    night = sum(hours[h] for h in (1, 2, 3, 4))
    day = sum(hours[h] for h in (10, 11, 12, 13))
    assert day > 5 * night


def test_every_profile_and_every_device_kind_is_in_a_small_fleet() -> None:
    residents = build_residents(1, 6)
    assert len({r.profile.name for r in residents}) == 6
    assert {d.kind for r in residents for d in r.devices} == set(DeviceKind)


def test_incident_rate_zero_means_no_alarms() -> None:
    fleet = Fleet(4, 8, MIDNIGHT, incident_rate=0.0)
    types = {m.type for m in fleet.messages(until=MIDNIGHT + timedelta(days=1))}
    assert not types & {EventType.ALARM_BUTTON, EventType.FALL_DETECTED, EventType.SMOKE_DETECTED,
                        EventType.ALARM_AUTO}


def test_doors_and_locks_never_contradict_themselves(
    day_of_50: tuple[Registry, list[SimMessage]],
) -> None:
    """By device time, a door opens then closes, a lock unlocks then locks, in turn."""
    _, messages = day_of_50
    turns = {"door.opened": "door.closed", "door.closed": "door.opened",
             "door.unlocked": "door.locked", "door.locked": "door.unlocked"}
    by_device: dict[str, list[SimMessage]] = defaultdict(list)
    for m in messages:
        if m.type in turns and not m.duplicate:
            by_device[m.device_id].append(m)
    assert by_device
    for device_id, seq in by_device.items():
        seq.sort(key=lambda m: m.ts_ms)
        for a, b in itertools.pairwise(seq):
            assert turns[a.type] == b.type, (device_id, a.payload, b.payload)
