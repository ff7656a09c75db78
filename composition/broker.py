"""The embedded demo broker (amqtt) for `trygg up` when no `TRYGG_MQTT_URL` is given.

Its port is the one of the last start when that is free (remembered in the data
directory by composition/runtime.py), else 1883 or the next free one after it.

A demo, not a production broker (docs/security.md "Broker and devices"): it listens on
127.0.0.1 only (any other address is refused), speaks MQTT 3.1.1 without TLS, and by
default lets anyone on this machine connect without a password, publish on any topic
(a retained alert included) and read every topic. Production runs Mosquitto with
deploy/mosquitto/.

With `password_file` (TRYGG_DEMO_BROKER_PASSWORDS: `username:argon2-hash` lines, amqtt's
FileAuthPlugin format) only those users log in, as in deploy/mosquitto/acl: a device
(any user not named `staff-*`) may publish only its own events and status, a handheld
`staff-<team>` may only read its team's alerts, and only Trygg may publish alerts. Trygg
logs in as `trygg-<role>` with a password made for this run. A client's id must equal
its username, so no client can take over another's session (Mosquitto's
`use_username_as_clientid` refuses nothing, it replaces the id; amqtt cannot).

It runs in its own thread with its own event loop, so broker work never delays the
rules and alerts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

#: Tried in order from here when the default port is taken.
DEFAULT_PORT = 1883
PORT_TRIES = 50
#: The accounts Trygg's connections log in with (gateway.BrokerAddress.account).
TRYGG_USER = "trygg"
TRYGG_ROLES = ("gateway", "gateway-watch", "alerts", "processors", "processors-out", "alerts-in", "alerts-out")


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on `port` now. With SO_REUSEADDR, as asyncio's and
    uvicorn's servers bind: a port whose last connections are still in TIME_WAIT is free
    to them (and to the embedded broker restarting on its port), one listened on is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    """amqtt on 127.0.0.1:1883, or the next free port (see the module doc)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *,
                 password_file: Path | None = None, prefix: str = "trygg/v1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the embedded demo broker listens on loopback only, not {host}")
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._password_file = password_file
        self._prefix = prefix
        #: Trygg's login when a password file is used (user `trygg`, roles derived)
        self.username: str | None = None
        self.password: str | None = None
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

    def _plugins(self, folder: Path) -> dict[str, Any]:
        if self._password_file is None:
            return {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
        from pwdlib.hashers.argon2 import Argon2Hasher

        lines = [line.strip() for line in self._password_file.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        users = [line.split(":", 1)[0] for line in lines]
        reserved = [u for u in users if u == TRYGG_USER or u.startswith(f"{TRYGG_USER}-")]
        if reserved:
            raise ValueError(f"{self._password_file}: {reserved[0]} is one of Trygg's own accounts")
        self.username, self.password = TRYGG_USER, secrets.token_urlsafe(24)
        digest = Argon2Hasher().hash(self.password)  # one hash: every role has this password
        merged = folder / "passwd"
        fd = os.open(merged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(f"{line}\n" for line in lines)
            out.writelines(f"{TRYGG_USER}-{role}:{digest}\n" for role in TRYGG_ROLES)
        from composition.broker_access import access_lists

        publish, subscribe = access_lists(users, self._prefix, TRYGG_USER)
        return {
            "composition.broker_access.SameIdAuthPlugin": {"password_file": str(merged)},
            "composition.broker_access.DemoAclPlugin": {"publish_acl": publish, "subscribe_acl": subscribe},
        }

    async def _start(self) -> None:
        with tempfile.TemporaryDirectory(prefix="trygg-broker-") as folder:  # read at start, then gone
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": self._plugins(Path(folder)),
            }
            self._broker = _broker_class()(config)
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
            if not self._thread.is_alive():
                self._loop.close()


def _broker_class() -> type[Any]:
    """amqtt's Broker, with retained messages sent only for the client's own
    subscriptions. amqtt sends, at every connect, the retained messages matching ANY
    client's subscriptions: a handheld subscribing to its team's alerts first got every
    device's retained status (the gateway subscribes to those). Slow import: only when used."""
    from amqtt.broker import Broker

    class OwnRetained(Broker):  # type: ignore[misc]
        async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                              session: Any) -> None:
            holders = self._subscriptions.get(subscription[0], [])
            if any(held.client_id == session.client_id for held, _ in holders):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return OwnRetained
