"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from psycopg_pool import ConnectionPool

from composition.broker import free_port
from storage import Pool
from tests.registry_documents import small_registry_yaml
from trygg.alert import Alert
from trygg.contract import AlertKind, AlertState, Priority
from trygg.registry import Registry, parse_registry, validate_registry

T = TypeVar("T")

#: The small registry (tests/registry_documents.py): team east with r-1 and r-2.
REGISTRY_YAML = small_registry_yaml()
#: How far apart the port ranges of the pytest-xdist workers begin (`worker_port`).
WORKER_PORT_SPAN = 100


def worker_port(start: int) -> int:
    """A free port on 127.0.0.1 in this pytest-xdist worker's own range: from `start` for
    the first worker (and a run without workers), `start + 100` for the second, ... Two
    workers scanning from the same port would both find it free and race to bind it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return free_port("127.0.0.1", start + WORKER_PORT_SPAN * int(worker.removeprefix("gw") or 0))


def no_database() -> Pool:
    """A pool that is never opened: every connection asked of it fails at once, as with
    PostgreSQL down (for units that must not reach a database)."""
    pool: Pool = ConnectionPool("postgresql://127.0.0.1:9/none", open=False)
    return pool


def small_registry(extra_devices: int = 0) -> Registry:
    """The small registry of the tests, optionally with `extra_devices` alarm units."""
    return parse_registry(small_registry_yaml(extra_devices))


def one_resident(*devices: dict[str, Any], **resident: Any) -> Registry:
    """A registry of one team, `east`, and one resident, `r-17` of east, with `devices`
    ({"id": ..., "kind": ...}) and any other resident fields given."""
    return validate_registry({
        "teams": [{"id": "east", "name": "Øst"}],
        "residents": [{"id": "r-17", "name": "Kari Nordmann", "team": "east", "devices": list(devices),
                       **resident}],
    })


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


def alert_doc(alert_id: str, resident_id: str, team_id: str, kind: str = "fall", priority: str = "high",
              state: str = "open", teams: list[str] | None = None) -> Alert:
    """An alert as the rules raise it (with `teams`: as it is after escalating)."""
    now = datetime.now(UTC)
    ref = {"device_id": f"d-{resident_id[2:]}-alarm", "event_id": "e-1", "type": "fall.detected",
           "ts": now.isoformat(), "received_at": now.isoformat()}
    return Alert(alert_id=alert_id, resident_id=resident_id, team_id=team_id, kind=AlertKind(kind),
                 priority=Priority(priority), state=AlertState(state), opened_at=now, updated_at=now,
                 trigger=ref, last_event=ref, teams=tuple(teams or [team_id]), escalated_at=now,
                 escalation_level=len(teams or [team_id]) - 1)
