"""Prometheus metrics of the processors stage (updated by `ProcessorStage`, not the rules)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

HANDLED = Counter("trygg_processor_handled", "Events and status messages run through the rules", ["item"])
RULE_ERRORS = Counter("trygg_processor_rule_errors", "Items or timers whose rules raised an exception")
INTENTS = Counter("trygg_processor_intents", "Alert intents handed to the alerts stage", ["kind", "action"])
TIMERS_ARMED = Gauge("trygg_processor_timers", "Timers armed (heartbeats, doors, inactivity)")
BACKLOG = Gauge("trygg_processor_backlog", "Items queued for the rules, not yet handled")
#: one item in this many is timed for HANDLE_SECONDS (timing each costs the loop more
#: than the rules of a heartbeat do)
HANDLE_SAMPLE: Final = 16
HANDLE_SECONDS = Histogram(
    "trygg_processor_handle_seconds",
    f"Time to run one item through its resident's rules (one item in {HANDLE_SAMPLE} is timed)",
    buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005),
)
