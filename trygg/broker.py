"""The embedded MQTT broker (amqtt) for `trygg up` when no `TRYGG_MQTT_URL` is given.

It runs in its own thread with its own event loop, so broker work never delays the
rules and alerts. amqtt speaks MQTT 3.1.1 only; Trygg's own clients use 3.1.1 with it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

#: Tried in order from here when the default port is taken.
DEFAULT_PORT = 1883
PORT_TRIES = 50


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", start: int = DEFAULT_PORT) -> int:
    for port in range(start, start + PORT_TRIES):
        if port_is_free(host, port):
            return port
    raise OSError(f"no free port in {start}..{start + PORT_TRIES - 1} on {host}")


class EmbeddedBroker:
    """amqtt on 127.0.0.1:1883, or the next free port."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="trygg-broker", daemon=True)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OSError(f"embedded MQTT broker did not start on {self.host}:{self.port}")
        if self._error is not None:
            raise OSError(f"embedded MQTT broker failed: {self._error}") from self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        from amqtt.broker import Broker  # slow import: only when used

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._broker = Broker(config)
        await self._broker.start()

    def stop(self) -> None:
        if self._broker is None or not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
