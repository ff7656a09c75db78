"""The NATS server configuration of one node of Trygg's cluster (docs/cluster.md "The NATS cluster").

What Trygg needs of each node: JetStream, the MQTT listener with its streams replicated
on three nodes, the routes to the other nodes, and the account mapping that gives each
device message its partition (`cluster/layout.py device_mapping`). `scripts/cluster`
and the tests write their nodes' files with `node_config`; deploy/nats/ holds the same
for docker-compose.cluster.yml.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cluster.layout import DEVICE_PARTITIONS, device_mapping

#: how long a node's MQTT listener waits for JetStream to store a QoS 1 PUBLISH before it
#: closes the client's connection unacknowledged (the client connects again and sends it
#: again). The server's default is 5 s, waited in the client's read loop: after the death
#: of the node leading `$MQTT_msgs`, a device's first alarm waited two such timeouts
#: (10.15 s in the fault drill, over its 10 s budget) while the others elected a leader.
MQTT_JS_API_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Node:
    name: str
    host: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    monitor_port: int = 0


def node_config(node: Node, nodes: list[Node], store_dir: Path, *, prefix: str = "trygg/v1",
                cluster_name: str = "trygg", partitions: int = DEVICE_PARTITIONS, replicas: int = 3) -> str:
    """The configuration file of `node` in a cluster of `nodes`."""
    source, destination = device_mapping(prefix, partitions)
    routes = ", ".join(json.dumps(f"nats-route://{n.host}:{n.cluster_port}") for n in nodes if n != node)
    monitor = f"http: {json.dumps(f'{node.host}:{node.monitor_port}')}\n" if node.monitor_port else ""
    return (
        f"server_name: {json.dumps(node.name)}\n"
        f"listen: {json.dumps(f'{node.host}:{node.client_port}')}\n"
        f"{monitor}"
        f"jetstream {{ store_dir: {json.dumps(str(store_dir))} }}\n"
        f"cluster {{\n  name: {json.dumps(cluster_name)}\n"
        f"  listen: {json.dumps(f'{node.host}:{node.cluster_port}')}\n"
        f"  routes: [{routes}]\n}}\n"
        f"mqtt {{\n  listen: {json.dumps(f'{node.host}:{node.mqtt_port}')}\n"
        f"  stream_replicas: {replicas}\n"
        f"  js_api_timeout: {json.dumps(f'{MQTT_JS_API_TIMEOUT_S:g}s')}\n}}\n"
        f"mappings = {{ {json.dumps(source)}: {json.dumps(destination)} }}\n"
    )
