"""Gateway fixtures: gateways on the test's own topic prefix, against the test's
Mosquitto and database, stopped at the end of the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import Gateway, GatewayConfig
from tests.fix_db import PoolOf, scalar
from tests.fix_mqtt import MosquittoInstance
from tests.helpers import small_registry
from trygg.pipeline import NO_EMERGENCIES, EmergencyState, EventSink, discard
from trygg.registry import Registry

StartGateway = Callable[..., Gateway]


@pytest.fixture
def start_gateway(mosquitto: MosquittoInstance, database: str, prefix: str, pool_of: PoolOf,
                  tmp_path: Path) -> Iterator[StartGateway]:
    """`start_gateway(registry=None, conninfo=database, sink=..., emergencies=..., **config)`: a
    started Gateway on a pool of `conninfo` (`config`: GatewayConfig fields).
    All share one client id (one persistent session) and one spool directory, as
    restarts of one Trygg do; each is stopped at the end if the test did not."""
    running: list[Gateway] = []

    def start(registry: Registry | None = None, conninfo: str = database, sink: EventSink = discard,
              emergencies: EmergencyState = NO_EMERGENCIES, **config: Any) -> Gateway:
        options = {"prefix": prefix, "client_id": f"gw-{prefix.split('/')[0]}", "retry_s": 0.5, **config}
        gw = Gateway(mosquitto.address, pool_of(conninfo), registry or small_registry(),
                     GatewayConfig(tmp_path / "spool", **options), sink=sink, emergencies=emergencies)
        gw.start()
        running.append(gw)
        return gw

    yield start
    for gw in running:
        gw.stop()


def count(url: str, query: str = "SELECT count(*) FROM trygg.events", *args: object) -> int:
    """A count from the database (0 for NULL)."""
    return int(str(scalar(url, query, *args) or 0))
