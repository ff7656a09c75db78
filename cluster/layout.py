"""What Trygg keeps on the NATS cluster, and the subjects between its instances (docs/cluster.md).

The way of an event:

1. A device publishes over MQTT to `{prefix}/devices/{id}/events` (or `/status`) on any
   node. NATS turns the topic into a subject (`/` → `.`, a `.` in the id → `//`, so
   `a.b` and `a/b` stay distinct) and the account's mapping (`cluster/natsconf.py`) adds
   the device's partition: `trygg.dev.{p}.{device}.{events|status}`. For QoS 1 the server
   stores the message in its MQTT stream `$MQTT_msgs` (replicated) *before* it sends the
   PUBACK: an acknowledged event is in the cluster.
2. `$MQTT_msgs` keeps a message while a consumer is interested in it. One durable
   consumer per device partition, `trygg-ingest-{p}`, is that interest; the instance
   owning partition `ingest.{p}` validates, hands the event on and stores it, and only
   then acknowledges it.
3. A valid event goes on, re-keyed by resident, to the stream `TRYGG_RESIDENTS` under
   `trygg.res.{rp}` (rp = `resident_partition(resident_id)`), with a message id that
   makes a re-send a duplicate the stream drops.
4. The instance owning partition `rules.{rp}` reads it through the durable consumer
   `trygg-rules-{rp}`: rules, alerts, escalation, delivery.
5. Each change of an alert is put on `TRYGG_ALERTS` under `trygg.alert.{rp}.{alert}`
   (the last one of each alert kept): the next owner of the partition restores from it,
   and every instance's dashboard follows it.
6. Staff actions go to the owner as requests on `trygg.cmd.{rp}`.

Partition counts are part of the layout: changing one re-partitions the devices (the
mapping) and the residents; it is a cluster-wide change made with every instance stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from trygg.backoff import Backoff
from trygg.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

DEVICE_PARTITIONS: Final = 16
RESIDENT_PARTITIONS: Final = 16

#: the server's own stream of QoS 1 MQTT messages (made at the first MQTT connection)
MQTT_STREAM: Final = "$MQTT_msgs"
MQTT_STREAM_PREFIX: Final = "$MQTT.msgs."
#: where the account mapping puts device messages (cluster/natsconf.py)
DEVICE_SUBJECTS: Final = "trygg.dev"
RESIDENTS_STREAM: Final = "TRYGG_RESIDENTS"
ALERTS_STREAM: Final = "TRYGG_ALERTS"
OWNERS_BUCKET: Final = "trygg_owners"

#: how long a resident partition's events are kept: a new owner replays from its last
#: rule-state snapshot, saved every few seconds; two days cover a snapshot store down a weekend
RESIDENTS_MAX_AGE_S: Final = 2 * 24 * 3600.0
#: a re-sent event (the ingest owner died after publishing, before acknowledging) is
#: dropped by the stream within this window; after it the rules' own guard (deterministic
#: alert ids) still holds
DUPLICATE_WINDOW_S: Final = 600.0
#: closed alerts stay on TRYGG_ALERTS this long (the last state of each alert)
ALERTS_MAX_AGE_S: Final = 2 * 24 * 3600.0
#: a message not acknowledged within this long is delivered again: its owner died (kill -9,
#: a lost machine) and the new owner gets it a few seconds after taking the lease; an owner
#: that still holds a message (PostgreSQL down) marks it in progress every third of this
ACK_WAIT_S: Final = 6.0
#: how long `settled` tries a step while the cluster does not answer
SETTLE_S: Final = 60.0
#: messages a partition may hold unacknowledged, e.g. while PostgreSQL is down (the stream
#: is then the spool); 16 partitions × 50,000 ≈ 2.7 minutes of 5,000 events/s
MAX_ACK_PENDING: Final = 50_000


def subject_token(text: str) -> str:
    """`text` as one subject token the way NATS's MQTT makes it: `.` → `//`."""
    return text.replace(".", "//")


def token_text(token: str) -> str:
    return token.replace("//", ".")


def mqtt_subject(prefix: str) -> str:
    """The NATS subject of the MQTT topic prefix (`trygg/v1` → `trygg.v1`)."""
    return ".".join(subject_token(level) for level in prefix.split("/"))


def device_mapping(prefix: str, partitions: int = DEVICE_PARTITIONS) -> tuple[str, str]:
    """The account mapping (source, destination) that partitions device messages."""
    return (f"{mqtt_subject(prefix)}.devices.*.*",
            f"{DEVICE_SUBJECTS}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}")


def ingest_consumer(partition: int) -> str:
    return f"trygg-ingest-{partition}"


def ingest_filter(partition: int) -> str:
    return f"{MQTT_STREAM_PREFIX}{DEVICE_SUBJECTS}.{partition}.>"


def device_from_subject(subject: str) -> tuple[str, str]:
    """(device id, `events` | `status`) of a message on `$MQTT_msgs`; ValueError if not a device's."""
    parts = subject.removeprefix(MQTT_STREAM_PREFIX).split(".")
    head = DEVICE_SUBJECTS.split(".")
    if len(parts) != len(head) + 3 or parts[: len(head)] != head:
        raise ValueError(f"not a device subject: {subject!r}")
    return token_text(parts[-2]), parts[-1]


def resident_partition(resident_id: str, partitions: int = RESIDENT_PARTITIONS) -> int:
    """The partition of a resident: the same on every instance and after every restart."""
    return zlib.crc32(resident_id.encode()) % partitions


def resident_subject(partition: int) -> str:
    return f"trygg.res.{partition}"


def rules_consumer(partition: int) -> str:
    return f"trygg-rules-{partition}"


def alert_subject(partition: int, alert_id: str) -> str:
    return f"trygg.alert.{partition}.{subject_token(alert_id)}"


def alerts_filter(partition: int | None = None) -> str:
    return "trygg.alert.>" if partition is None else f"trygg.alert.{partition}.*"


def command_subject(partition: int) -> str:
    return f"trygg.cmd.{partition}"


def ingest_lease(partition: int) -> str:
    return f"ingest.{partition}"


def rules_lease(partition: int) -> str:
    return f"rules.{partition}"


@dataclass(frozen=True)
class Layout:
    """How many replicas the streams and consumers have (3: one node may die)."""

    replicas: int = 3
    device_partitions: int = DEVICE_PARTITIONS
    resident_partitions: int = RESIDENT_PARTITIONS


async def ensure_layout(js: JetStreamContext, layout: Layout, mqtt: tuple[str, int], *,
                        wait_s: float = 30.0) -> None:
    """Make the streams and durable consumers if they are missing (every instance calls
    it at start; what exists is left as it is). The MQTT stream is made by the server at
    the first MQTT connection: one is opened to `mqtt` (host, port) to be sure."""
    await _add_stream(js, StreamConfig(
        name=RESIDENTS_STREAM, subjects=["trygg.res.*"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, num_replicas=layout.replicas, max_age=RESIDENTS_MAX_AGE_S,
        duplicate_window=DUPLICATE_WINDOW_S, discard=DiscardPolicy.OLD))
    await _add_stream(js, StreamConfig(
        name=ALERTS_STREAM, subjects=["trygg.alert.*.*"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, num_replicas=layout.replicas, max_age=ALERTS_MAX_AGE_S,
        max_msgs_per_subject=1, discard=DiscardPolicy.OLD))
    for p in range(layout.resident_partitions):
        await _add_consumer(js, RESIDENTS_STREAM, ConsumerConfig(
            durable_name=rules_consumer(p), filter_subject=resident_subject(p), ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT_S, max_deliver=-1,
            max_ack_pending=MAX_ACK_PENDING, num_replicas=layout.replicas))
    await _mqtt_stream(js, mqtt, wait_s)
    for p in range(layout.device_partitions):
        await _add_consumer(js, MQTT_STREAM, ConsumerConfig(
            durable_name=ingest_consumer(p), filter_subject=ingest_filter(p), ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT_S, max_deliver=-1,
            max_ack_pending=MAX_ACK_PENDING, num_replicas=layout.replicas))


async def _add_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("cluster_stream_made", stream=config.name, replicas=config.num_replicas)


async def _add_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    assert config.durable_name is not None
    try:
        await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        await js.add_consumer(stream, config)


async def _mqtt_stream(js: JetStreamContext, mqtt: tuple[str, int], wait_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    touched = False
    while True:
        try:
            await js.stream_info(MQTT_STREAM)
            return
        except NotFoundError:
            pass
        if not touched:
            await asyncio.to_thread(touch_mqtt, *mqtt)
            touched = True
        if loop.time() > deadline:
            raise RuntimeError(f"the NATS cluster made no {MQTT_STREAM} stream: "
                               f"is MQTT enabled on {mqtt[0]}:{mqtt[1]}?")
        await asyncio.sleep(0.2)


def touch_mqtt(host: str, port: int, timeout_s: float = 5.0) -> None:
    """One MQTT 3.1.1 CONNECT (clean session) and DISCONNECT: the server makes its MQTT
    streams for the account at the first connection."""
    client_id = b"trygg-layout"
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = sock.recv(4)
        if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"the MQTT listener at {host}:{port} refused the connection ({connack!r})")
        sock.sendall(b"\xe0\x00")


async def fetch_ready(sub: JetStreamContext.PullSubscription, batch: int, wait_s: float) -> list[Msg]:
    """The consumer's next messages as soon as there are any: the first to arrive within
    `wait_s` (TimeoutError if none), with up to `batch` in all of those ready behind it.

    Not `sub.fetch(batch)` alone: a pull request for `batch` that finds nothing waiting
    holds the first message that arrives until `batch` have come or `wait_s` is over —
    an alarm on a quiet partition waited up to the whole `wait_s`. A request for one
    returns with it; the rest, counted by its `num_pending`, are there at once."""
    msgs = await sub.fetch(1, timeout=wait_s)
    pending = msgs[-1].metadata.num_pending or 0
    if pending and batch > 1:
        with contextlib.suppress(TimeoutError):
            msgs += await sub.fetch(min(batch - 1, pending), timeout=wait_s)
    return msgs


#: while a stream or consumer on the alarm path has no leader (its node died: the
#: server's Raft waits 4-9 s before the others elect one), it is asked again at least
#: this often, so that alarms go on within a fraction of a second of the election
ELECTION_RETRY_S: Final = 0.25


def election_backoff() -> Backoff:
    """The retry delays of a step on the alarm path: from 50 ms up to `ELECTION_RETRY_S`."""
    return Backoff(0.05, ELECTION_RETRY_S)


def cancel_not_lost() -> None:
    """Raise CancelledError if this task was asked to stop. Call it at the top of every
    loop that awaits the NATS client. On Python 3.11 a cancellation can be lost:
    `asyncio.wait_for` (inside nats-py's fetch and requests) returns a result that
    arrived together with the cancel, and the loop would go on for ever beside the
    partition's next owner; the task's count of cancel requests still tells."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def settled(what: str, step: Callable[[], Awaitable[T]], within_s: float = SETTLE_S, *,
                  attempt_s: float | None = None, backoff: Backoff | None = None) -> T:
    """`await step()` (making the layout, opening a bucket, starting to read a stream),
    tried again while the NATS cluster does not answer: a node just started or died, its
    streams electing leaders (an instance once ended at start on "nats: timeout"); its
    error after `within_s`. `attempt_s` bounds each attempt: a request that went to a
    node as it died is not waited out for the client's whole timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    backoff = backoff or Backoff(0.5, 5.0)
    while True:
        cancel_not_lost()
        try:
            if attempt_s is None:
                return await step()
            async with asyncio.timeout(attempt_s):
                return await step()
        except (nats.errors.Error, TimeoutError) as exc:
            if loop.time() > deadline:
                raise
            log.warning("cluster_not_answering_retrying", step=what, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(backoff.next())
