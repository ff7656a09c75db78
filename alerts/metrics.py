"""Prometheus metrics of the alerts stage."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RAISED = Counter("trygg_alerts_raised", "Alerts opened", ["kind"])
ATTACHED = Counter("trygg_alerts_attached", "Triggers attached to an unresolved alert (flood control)", ["kind"])
TRANSITIONS = Counter("trygg_alert_transitions", "Lifecycle transitions recorded", ["to_state"])
ESCALATIONS = Counter("trygg_alert_escalations", "Escalation steps: to the next team, or a reminder at the end",
                      ["step"])
PUBLISH_SECONDS = Histogram(
    "trygg_alert_publish_seconds",
    "From an intent (or timer, or staff action) received to the MQTT publish call returned",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
DELIVERIES_FAILED = Counter("trygg_alert_deliveries_failed", "Alert deliveries that failed or were given up",
                            ["channel"])
ACTIVE = Gauge("trygg_alerts_active", "Alerts open or acknowledged")
BROKER_UP = Gauge("trygg_alerts_broker_up", "1 while the alert publisher is connected to the broker")
DATABASE_UP = Gauge("trygg_alerts_database_up", "1 while alert rows are written to PostgreSQL")
PERSIST_BACKLOG = Gauge("trygg_alerts_persist_backlog", "Alert changes not yet committed to PostgreSQL")
SUBSCRIBERS = Gauge("trygg_alerts_subscribers", "In-process subscribers (dashboard SSE streams)")
WRITER_ERRORS = Counter("trygg_alerts_writer_errors",
                        "Unexpected errors the alert writer survived (logged; its rows were tried again)")
