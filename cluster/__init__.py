"""Trygg as a cluster on NATS JetStream (docs/cluster.md).

This package is the transport layer of the cluster mode, beside `storage/` and `mqtt/`:
it imports only the kernel (and nats-py). It knows the layout on the NATS cluster
(streams, consumers, subjects, partitions: `cluster/layout.py`), the leases that give
each partition one owner (`cluster/leases.py`) and the NATS server's configuration
(`cluster/natsconf.py`). The composition root runs the partitions' work with them.
"""

from cluster.layout import (
    ALERTS_STREAM,
    DEVICE_PARTITIONS,
    RESIDENT_PARTITIONS,
    RESIDENTS_STREAM,
    Layout,
    command_subject,
    device_from_subject,
    ensure_layout,
    ingest_consumer,
    resident_partition,
    resident_subject,
    rules_consumer,
)
from cluster.leases import Leases

__all__ = [
    "ALERTS_STREAM",
    "DEVICE_PARTITIONS",
    "RESIDENTS_STREAM",
    "RESIDENT_PARTITIONS",
    "Layout",
    "Leases",
    "command_subject",
    "device_from_subject",
    "ensure_layout",
    "ingest_consumer",
    "resident_partition",
    "resident_subject",
    "rules_consumer",
]
