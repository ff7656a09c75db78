"""The gateway's settings, as one typed group (built from `Settings` by the composition
root; tests build it directly)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.dead_letters import DeadLetterLimits
from mqtt import Protocol

if TYPE_CHECKING:
    from trygg.settings import Settings


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How one gateway receives and makes durable (docs/ingest.md).

    `client_id` names the persistent session; `receive_maximum` is the in-flight window
    the broker may fill before acknowledgements; `writers` durability loops (shards of
    devices), each batching up to `batch_max` events or `batch_wait_s`, with a queue of
    `queue_max` messages shared out among them; `retry_s` between database attempts.
    """

    spool_dir: Path
    prefix: str = "trygg/v1"
    client_id: str = "trygg"
    protocol: Protocol = Protocol.V5
    writers: int = 2
    receive_maximum: int = 10_000
    batch_max: int = 2000
    batch_wait_s: float = 0.005
    queue_max: int = 20_000
    retry_s: float = 2.0
    dead_letter_limits: DeadLetterLimits | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, client_id: str, protocol: Protocol) -> GatewayConfig:
        """`client_id` and `protocol` depend on the broker resolved (its account, and
        the embedded broker speaks 3.1.1 only)."""
        return cls(
            spool_dir=settings.spool_dir,
            prefix=settings.mqtt_prefix,
            client_id=client_id,
            protocol=protocol,
            writers=settings.ingest_writers,
            receive_maximum=settings.mqtt_receive_maximum,
            batch_max=settings.ingest_batch_max,
            batch_wait_s=settings.ingest_batch_wait_ms / 1000,
            queue_max=settings.ingest_queue_max,
            retry_s=settings.db_retry_s,
        )
