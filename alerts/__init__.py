"""Alert lifecycle, flood control, escalation timers, and delivery to staff (MQTT, SSE,
webhooks), with alert rows stored in the background (docs/contract.md#3-mqtt-contract, #4-rules-and-alerts,
#5-delivery-guarantees).

`AlertStage` is the stage; `AlertService` its pure, synchronous core.
"""

from alerts.config import AlertConfig
from alerts.errors import AlertError, AlertNotFound, IllegalTransition, StageNotReady, SubscriptionDropped
from alerts.escalation import EscalationTimers, Timeouts, next_team
from alerts.fanout import DROPPED, AlertHub, Subscription
from alerts.journal import Journal
from alerts.model import (
    PER_DEVICE_KINDS,
    RESIDENT,
    SYSTEM,
    UNASSIGNED_TEAM,
    Alert,
    Change,
    ChangeReason,
    Transition,
    alert_id_for,
    flood_key,
)
from alerts.persistence import AlertWriter
from alerts.publisher import AlertPublisher
from alerts.service import AlertService
from alerts.stage import AlertClosed, AlertStage
from alerts.webhooks import WebhookSender

__all__ = [
    "DROPPED",
    "PER_DEVICE_KINDS",
    "RESIDENT",
    "SYSTEM",
    "UNASSIGNED_TEAM",
    "Alert",
    "AlertClosed",
    "AlertConfig",
    "AlertError",
    "AlertHub",
    "AlertNotFound",
    "AlertPublisher",
    "AlertService",
    "AlertStage",
    "AlertWriter",
    "Change",
    "ChangeReason",
    "EscalationTimers",
    "IllegalTransition",
    "Journal",
    "StageNotReady",
    "Subscription",
    "SubscriptionDropped",
    "Timeouts",
    "Transition",
    "WebhookSender",
    "alert_id_for",
    "flood_key",
    "next_team",
]
