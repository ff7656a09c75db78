"""Prometheus metrics of the MQTT client."""

from prometheus_client import Counter

RECEIVE_ERRORS = Counter(
    "trygg_mqtt_receive_errors",
    "Unexpected errors handling packets an MQTT connection received; the connection was kept",
)
