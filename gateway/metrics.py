"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("trygg_gateway_received", "MQTT messages received", ["channel"])
STORED = Counter("trygg_gateway_stored", "Events committed to PostgreSQL for the first time")
DUPLICATES = Counter("trygg_gateway_duplicates", "Re-sent events recognised and stored once")
DEAD_LETTERS = Counter("trygg_gateway_dead_letters", "Messages dead-lettered", ["reason"])
SPOOLED = Counter("trygg_gateway_spooled", "Records fsync'ed to the local spool")
REPLAYED = Counter("trygg_gateway_replayed", "Spooled records replayed into PostgreSQL")
SPOOL_PENDING = Gauge("trygg_gateway_spool_pending_bytes", "Bytes in the spool not yet replayed")
QUEUE_DEPTH = Gauge("trygg_gateway_queue_depth", "Messages received but not yet durable")
DB_UP = Gauge("trygg_gateway_database_up", "1 while PostgreSQL accepts writes")
BACKPRESSURE = Counter(
    "trygg_gateway_backpressure", "Times receiving paused because the durable writers were full")
BROKER_UP = Gauge("trygg_gateway_broker_up", "1 while connected to the MQTT broker")
BATCH_SECONDS = Histogram(
    "trygg_gateway_batch_seconds",
    "Time to make one batch durable",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LOCATIONS_DISCARDED = Counter(
    "trygg_gateway_locations_discarded",
    "Positions neither stored nor used: no valid location basis and no open alarm/fall alert",
)
ALARM_WATCH = Gauge(
    "trygg_gateway_alarm_watch_open",
    "1 while acknowledgements are stalled and the alarm watch hands alarms on from a second connection",
)
ALARM_WATCH_HANDED_ON = Counter(
    "trygg_gateway_alarm_watch_handed_on", "Urgent events the alarm watch handed to the rules first")
DEAD_LETTERS_HELD_BACK = Counter(
    "trygg_gateway_dead_letters_held_back",
    "Dead letters over the rate limits: counted, not stored whole, summarised per source",
    ["reason"],
)
DEAD_LETTER_SUMMARIES = Counter(
    "trygg_gateway_dead_letter_summaries",
    "Rows that summarise the dead letters a source had held back in an interval",
)
WRITER_ERRORS = Counter(
    "trygg_gateway_writer_errors",
    "Unexpected errors a durable writer survived (logged; the batch it held was tried again)",
)
HANDOFF_ERRORS = Counter(
    "trygg_gateway_handoff_errors",
    "Valid events the rules or alert stage failed on (logged; the event is still stored)")
