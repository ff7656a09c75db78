"""Where and as whom a connection reaches the MQTT broker."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from mqtt.tls import tls_context


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how one of Trygg's connections reaches the broker.

    Each connection logs in as an account of its own, `<username>-<role>` (`account`),
    and uses that username as its client id (`client_id`): a broker with
    `use_username_as_clientid` (deploy/mosquitto/mosquitto.conf) makes it so anyway, and
    then no device can take over one of Trygg's sessions. Without a username (the
    embedded demo broker, anonymous test brokers) the client id is the one given.
    `tls`: an `ssl.SSLContext` (mqtt.tls_context) for mqtts://.
    `shared_login` (TRYGG_MQTT_ACCOUNTS=single): every connection logs in as the one user
    with the client ids of old, for a broker that cannot have more accounts; there a
    device can take over Trygg's session (docs/operators.md "MQTT accounts").
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, compare=False)
    shared_login: bool = False

    @classmethod
    def from_url(cls, url: str, tls: ssl.SSLContext | None = None, *, shared_login: bool = False) -> BrokerAddress:
        """mqtt://[user:password@]host[:1883], or mqtts:// (TLS, port 8883 unless given;
        `tls` or else the system's CAs)."""
        parts = urlsplit(url)
        secure = parts.scheme == "mqtts"
        if secure and tls is None:
            tls = tls_context()
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if secure else 1883),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            tls if secure else None,
            shared_login,
        )

    def account(self, role: str) -> BrokerAddress:
        """The address of the connection playing `role`: user `<username>-<role>`, same
        password (docs/operators.md "MQTT accounts"); unchanged without a username."""
        if self.username is None or self.shared_login:
            return self
        return replace(self, username=f"{self.username}-{role}")

    def client_id(self, anonymous: str) -> str:
        """The client id to connect with: the username, or `anonymous` without one (or
        with a shared login)."""
        return anonymous if self.shared_login or self.username is None else self.username

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"
