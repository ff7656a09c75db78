"""Composition of the stages for `trygg up` and the single-stage commands.

Resolves the broker and the database (embedded when no URL is given), opens the pool
every storage call takes (storage/__init__.py), applies migrations, loads the registry
(with a local copy for starts while PostgreSQL is down) and keeps it fresh when `trygg
registry load` changes it from another process.

Before any of that, `trygg up` takes its data directory (`hold_data_dir`: one `trygg up`
per directory, or two would share one embedded PostgreSQL and one spool) and checks that
binds the dashboard's address (`bind_http`), so that either problem is one line at
start, not a failure after "Trygg is running".
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from composition.broker import EmbeddedBroker, port_is_free
from gateway import Gateway, GatewayConfig
from mqtt import BrokerAddress, Protocol, tls_context
from storage import Pool, load_registry_text, migrate, start_embedded_postgres
from storage.pool import RECONNECT_S
from trygg.errors import SettingsError, TryggError
from trygg.logging import get_logger
from trygg.pipeline import NO_EMERGENCIES, EmergencyState, EventSink, discard
from trygg.registry import Registry, validate_registry_json
from trygg.settings import Settings
from trygg.watchdog import WatchedThread

log = get_logger(__name__)

#: In the data directory: held (flock) by the `trygg up` using it, with its pid and start.
LOCK_FILE = "trygg.lock"
#: In the data directory: the embedded broker's port of the last start, tried first.
BROKER_PORT_FILE = "broker-port"

REGISTRY_POLL_S = 2.0
#: how long a caller waits for a connection of the pool before PostgreSQL counts as down
POOL_TIMEOUT_S = 3.0
#: connections of a stage's pool besides those its gateway writers hold: the alert
#: writer's, and one each for start-up loads, the registry watcher and snapshots
POOL_SPARE = 4


class DataDirInUse(TryggError):
    """Another process holds the data directory (`hold_data_dir`)."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(f"the data directory {data_dir} is in use by {holder}; stop that one first, "
                         "or give this one another TRYGG_DATA_DIR")
        self.data_dir = data_dir
        self.holder = holder


def hold_data_dir(data_dir: Path) -> int:
    """Take `data_dir` for this process: an exclusive `flock` on its lock file, held until
    the process ends (the returned descriptor is never closed). The kernel drops it with
    the process, however it ends, so `kill -9` leaves no stale lock. The file says who
    holds it (pid and since when), for the one refused."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        os.close(fd)
        named = (f"process {holder[0]} (since {holder[1]} {holder[2]} UTC)" if len(holder) == 3
                 else "another process")
        raise DataDirInUse(data_dir, named) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}\n".encode(), 0)
    return fd


def bind_http(settings: Settings) -> socket.socket | None:
    """The dashboard's address, bound and listening now (as uvicorn binds it) and handed
    to uvicorn later, so a taken address stops `trygg up` before anything starts and
    nothing can take it in between (a browser that connects meanwhile waits). Port 0
    (any free port): None, uvicorn binds it."""
    if settings.http_port == 0:
        return None
    host, port = settings.http_host, settings.http_port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)  # held: connections wait in the backlog until the dashboard serves
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        reason = ("the address is in use by another program" if exc.errno == errno.EADDRINUSE
                  else exc.strerror or str(exc))
        raise TryggError(f"cannot listen on {host}:{port} (TRYGG_HTTP_HOST, TRYGG_HTTP_PORT): {reason}") from None
    sock.set_inheritable(False)
    return sock


def open_pool(conninfo: str, size: int = POOL_SPARE, *, name: str = "trygg", min_size: int | None = None) -> Pool:
    """The pool of a process's stages, opened: its `size` connections are made in the
    background (so the writers find theirs ready; `min_size`: only that many, the rest
    when asked for), and PostgreSQL being down at start is
    not an error here but at the first call that needs it."""
    pool: Pool = ConnectionPool(
        conninfo, min_size=size if min_size is None else min_size, max_size=size, open=False, name=name,
        timeout=POOL_TIMEOUT_S,
        reconnect_timeout=RECONNECT_S, check=ConnectionPool.check_connection,
        kwargs={"connect_timeout": int(POOL_TIMEOUT_S)},
    )
    pool.open(wait=False)
    return pool


def open_database(settings: Settings, size: int = POOL_SPARE, *, min_size: int | None = None) -> Pool:
    """`resolve_database`, `open_pool` and the migrations not yet applied. A database
    that cannot be reached is a `psycopg.OperationalError` saying why (the pool only
    says that it got no connection in time)."""
    conninfo = resolve_database(settings)
    pool = open_pool(conninfo, size, min_size=min_size)
    try:
        applied = apply_migrations(pool, conninfo, settings)
    except BaseException:
        pool.close()
        raise
    if applied:
        log.info("migrations_applied", migrations=applied)
    return pool


def apply_migrations(pool: Pool, conninfo: str, settings: Settings) -> list[str]:
    """`storage.migrate` (the engine per TRYGG_TIMESCALEDB); when the pool gets no
    connection in time, one connection of its own raises the reason (refused, unknown
    host, bad password) for the operator."""
    try:
        return migrate(pool, settings.timescaledb)
    except PoolTimeout:
        with psycopg.connect(conninfo, connect_timeout=int(POOL_TIMEOUT_S)):
            pass
        raise


def resolve_database(settings: Settings) -> str:
    """The database URL, starting the embedded PostgreSQL when none is set."""
    if settings.database_url:
        return settings.database_url
    conninfo = start_embedded_postgres(settings.data_dir)
    log.info("embedded_postgresql", data_dir=str(settings.data_dir / "postgres"))
    return conninfo


@dataclass
class Broker:
    address: BrokerAddress
    protocol: Protocol
    embedded: EmbeddedBroker | None = None
    #: the embedded broker's port of the last start, when it was taken this time
    port_moved_from: int | None = None

    @property
    def url(self) -> str:
        return str(self.address)


def broker_tls(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for an mqtts:// URL (None for mqtt://); a CA, certificate or key
    file that cannot be used is a SettingsError naming its variable."""
    if not settings.mqtt_url or urlsplit(settings.mqtt_url).scheme != "mqtts":
        return None
    try:
        tls_context(settings.mqtt_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError("TRYGG_MQTT_CA_FILE", f"cannot use {settings.mqtt_ca_file}: {_reason(exc)}") from None
    try:
        return tls_context(settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError("TRYGG_MQTT_CERT_FILE", f"cannot use {settings.mqtt_cert_file} and its key: "
                            f"{_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"not a usable PEM file ({exc.reason or exc})"
    return exc.strerror or str(exc)


def resolve_broker(settings: Settings) -> Broker:
    """The broker to use, starting the embedded demo broker (amqtt) when none is set."""
    if settings.mqtt_url:
        protocol = Protocol.parse(settings.mqtt_protocol)
        address = BrokerAddress.from_url(settings.mqtt_url, broker_tls(settings),
                                         shared_login=settings.mqtt_accounts == "single")
        return Broker(address, protocol)
    remembered = _remembered_port(settings.data_dir / BROKER_PORT_FILE)
    port = remembered if remembered is not None and port_is_free("127.0.0.1", remembered) else None
    embedded = EmbeddedBroker(port=port, password_file=settings.demo_broker_passwords, prefix=settings.mqtt_prefix)
    embedded.start()
    moved = remembered if remembered is not None and remembered != embedded.port else None
    if moved is not None:
        log.warning("embedded_broker_port_taken", remembered=moved, port=embedded.port)
    if embedded.port != remembered:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / BROKER_PORT_FILE).write_text(f"{embedded.port}\n", encoding="ascii")
    address = BrokerAddress(embedded.host, embedded.port, embedded.username, embedded.password)
    return Broker(address, Protocol.V311, embedded, moved)


def _remembered_port(path: Path) -> int | None:
    """The port in `path` (written by `resolve_broker`), or None when there is none."""
    try:
        port = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def _cache_path(settings: Settings) -> Path:
    return settings.data_dir / "registry.json"


def open_registry(pool: Pool, settings: Settings) -> Registry:
    """The registry from PostgreSQL, else the local copy of the last one seen.

    The document is kept as the database's text in the local copy, not re-serialised:
    with 100,000 residents a second full copy in memory would cost hundreds of MiB.
    """
    cache = _cache_path(settings)
    try:
        with pool.connection() as conn:
            text = load_registry_text(conn)
    except psycopg.OperationalError as exc:
        if cache.exists():
            log.warning("registry_from_local_copy",
                        error=str(exc).strip())
            return validate_registry_json(cache.read_bytes())
        raise
    if text is None:
        return Registry()
    reg = validate_registry_json(text)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(cache)
    return reg


class RegistryWatcher:
    """Polls `trygg.registry.loaded_at` and calls back with each new registry."""

    def __init__(self, pool: Pool, settings: Settings,
                 on_change: Callable[[Registry], None]) -> None:
        self._pool = pool
        self._settings = settings
        self._on_change = on_change
        self._seen: datetime | None = None
        self._stop = threading.Event()
        self._thread = WatchedThread(self._run, "trygg-registry", self._stop.is_set)

    def start(self) -> None:
        self._seen = self._loaded_at()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loaded_at(self) -> datetime | None:
        try:
            with self._pool.connection() as conn:
                row = conn.execute("SELECT loaded_at FROM trygg.registry WHERE id = 1").fetchone()
        except psycopg.Error:
            return self._seen
        return row[0] if row else None

    def _run(self) -> None:
        while not self._stop.wait(REGISTRY_POLL_S):
            loaded = self._loaded_at()
            if loaded is not None and loaded != self._seen:
                self._seen = loaded
                try:
                    reg = open_registry(self._pool, self._settings)
                except psycopg.Error:
                    continue
                except Exception:  # a registry this version cannot read: keep the one running
                    log.exception("reloaded_registry_not_usable")
                    continue
                log.info("registry_reloaded", residents=len(reg.residents))
                self._on_change(reg)


@dataclass
class Ingest:
    """A running gateway with what it needs, ready to be stopped in order."""

    gateway: Gateway
    watcher: RegistryWatcher
    broker: Broker
    pool: Pool
    listeners: list[Callable[[Registry], None]] = field(default_factory=list)

    def stop_gateway(self) -> None:
        """Drain, acknowledge and disconnect; the broker (if embedded) keeps running."""
        self.watcher.stop()
        self.gateway.stop()

    def stop(self) -> None:
        self.stop_gateway()
        if self.broker.embedded is not None:
            self.broker.embedded.stop()


def start_ingest(
    settings: Settings,
    pool: Pool,
    sink: EventSink = discard,
    broker: Broker | None = None,
    emergencies: EmergencyState = NO_EMERGENCIES,
    registry: Registry | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Ingest:
    """Registry, broker and gateway, started in that order, on a migrated database.

    With `loop` (not this thread's) the gateway receives on it, else on a loop of its own.
    """
    if registry is None:
        registry = open_registry(pool, settings)
    broker = broker or resolve_broker(settings)
    account = broker.address.account("gateway")  # trygg-gateway: the session is its own
    config = GatewayConfig.from_settings(settings, client_id=account.client_id(f"{settings.mqtt_client_id}-gateway"),
                                         protocol=broker.protocol)
    gateway = Gateway(account, pool, registry, config, sink=sink, emergencies=emergencies, loop=loop)
    listeners: list[Callable[[Registry], None]] = []

    def on_change(reg: Registry) -> None:
        gateway.set_registry(reg)
        for listener in listeners:
            listener(reg)

    ingest = Ingest(gateway, RegistryWatcher(pool, settings, on_change), broker, pool, listeners)
    gateway.start()
    ingest.watcher.start()
    log.info("gateway_running", broker=broker.url, residents=len(registry.residents),
             devices=sum(len(r.devices) for r in registry.residents))
    return ingest
