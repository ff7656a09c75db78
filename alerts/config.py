"""`AlertConfig`: what the alerts stage is told by the settings (the broker account it
publishes with, the journal it stores in, its escalation timeouts). The database pool is
not a setting: the composition root opens it and passes it to `AlertStage`."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alerts.escalation import Timeouts
from alerts.fanout import SUBSCRIBER_LIMIT
from mqtt import Protocol

if TYPE_CHECKING:
    from mqtt import BrokerAddress
    from trygg.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertConfig:
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    protocol: Protocol = Protocol.V5
    prefix: str = "trygg/v1"
    client_id: str = "trygg-alerts"
    #: further brokers with the same account, tried in turn when the one connected to is
    #: lost (the MQTT listeners of the other nodes of a NATS cluster)
    failover: tuple[BrokerAddress, ...] = ()
    #: where the alert journal lives (when the stage is given a database pool)
    journal_dir: Path | None = None
    escalate_critical_s: float = 30.0
    escalate_high_s: float = 60.0
    escalate_medium_s: float = 300.0
    #: between attempts to reach PostgreSQL
    retry_s: float = 2.0
    #: changes an in-process subscriber may have waiting before it is dropped
    subscriber_limit: int = SUBSCRIBER_LIMIT

    @classmethod
    def from_settings(cls, settings: Settings, broker: BrokerAddress, *,
                      protocol: Protocol | None = None) -> AlertConfig:
        account = broker.account("alerts")  # a login of its own (docs/operators.md "MQTT accounts")
        return cls(
            broker_host=account.host, broker_port=account.port,
            username=account.username, password=account.password, tls=account.tls,
            protocol=protocol if protocol is not None else Protocol.parse(settings.mqtt_protocol),
            prefix=settings.mqtt_prefix, client_id=account.client_id(f"{settings.mqtt_client_id}-alerts"),
            journal_dir=settings.data_dir / "alerts",
            escalate_critical_s=settings.escalate_critical_s, escalate_high_s=settings.escalate_high_s,
            escalate_medium_s=settings.escalate_medium_s, retry_s=settings.db_retry_s,
        )

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(self.escalate_critical_s, self.escalate_high_s, self.escalate_medium_s, None)


__all__ = ["AlertConfig"]
