"""Small helpers shared by integration tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from psycopg_pool import ConnectionPool

from storage import Pool
from trygg.registry import Registry, parse_registry

T = TypeVar("T")

REGISTRY_YAML = """
teams:
  - {id: east, name: "Hjemmetjenesten Øst", escalate_to: alarm-centre}
  - {id: alarm-centre, name: "Trygghetsalarmsentralen"}
residents:
  - id: r-1
    name: "Kari Nordmann"
    team: east
    devices:
      - {id: d-1-alarm, kind: alarm_unit}
      - {id: d-1-fall, kind: fall_sensor}
      - {id: d-1-smoke, kind: smoke_detector}
      - {id: d-1-door, kind: door_sensor}
      - {id: d-1-motion, kind: motion_sensor}
      - {id: d-1-gps, kind: gps_tracker}
    location_basis: {kind: vedtak, valid_until: "2099-12-31"}
  - id: r-2
    name: "Ola Nordmann"
    team: east
    devices:
      - {id: d-2-alarm, kind: alarm_unit}
      - {id: d-2-phone, kind: phone}
"""


def no_database() -> Pool:
    """A pool that is never opened: every connection asked of it fails at once, as with
    PostgreSQL down (for units that must not reach a database)."""
    pool: Pool = ConnectionPool("postgresql://127.0.0.1:9/none", open=False)
    return pool


def small_registry(extra_devices: int = 0) -> Registry:
    """The small registry of the tests, optionally with `extra_devices` alarm units."""
    text = REGISTRY_YAML
    if extra_devices:
        text += "  - id: r-load\n    name: Load\n    team: east\n    devices:\n"
        text += "".join(f"      - {{id: load-{i}, kind: alarm_unit}}\n" for i in range(extra_devices))
    return parse_registry(text)


def event(event_id: str, kind: str = "heartbeat", data: dict[str, object] | None = None,
          ts: datetime | None = None) -> bytes:
    doc: dict[str, object] = {"id": event_id, "ts": (ts or datetime.now(UTC)).isoformat(),
                              "type": kind}
    if data is not None:
        doc["data"] = data
    return json.dumps(doc).encode()


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0,
             interval: float = 0.1) -> T:
    """Poll `probe` until `done(value)`; returns the last value (the assert is the caller's)."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = probe()
    return value
