"""Settings from `TRYGG_*` environment variables or a `.env` file (pydantic-settings).

One `Settings` is built in `main` (the CLI) and passed down; nothing reads the
environment anywhere else.
"""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trygg.errors import SettingsError

#: Secrets that are fine for `--demo` and refused anywhere else.
DEMO_SECRET = "trygg-demo-secret-change-me"

#: days of features a resident's insights state keeps: the baseline, its guard and room for
#: days not usable (processors/insights/baseline.py; here so that settings need no numpy)
INSIGHTS_HISTORY_DAYS: Final = 70


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRYGG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    mqtt_url: str | None = Field(
        default=None, description="mqtt://[user:pass@]host:port or mqtts:// (TLS) of the broker; none = "
        "the embedded demo broker. Each connection logs in as <user>-<role> with this password "
        "(docs/operators.md \"MQTT accounts\")"
    )
    mqtt_accounts: Literal["per-connection", "single"] = Field(
        default="per-connection", description="per-connection: each connection logs in as <user>-<role>; single: "
        "all as <user> (a broker that cannot bind client ids to usernames; unsafe, docs/operators.md)")
    # TLS (mqtts:// only; docs/operators.md "TLS").
    mqtt_ca_file: Path | None = Field(
        default=None, description="PEM file of the CA(s) the broker's certificate must chain to; none = the "
        "system's CAs")
    mqtt_cert_file: Path | None = Field(default=None, description="PEM client certificate, if the broker asks")
    mqtt_key_file: Path | None = Field(default=None, description="its private key, unless in mqtt_cert_file")
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        default="5", description="MQTT version Trygg's own clients speak (embedded broker: 3.1.1)"
    )
    mqtt_prefix: str = Field(default="trygg/v1", pattern=r"^[A-Za-z0-9_./-]+[A-Za-z0-9_-]$")
    mqtt_client_id: str = Field(default="trygg", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    demo_broker_passwords: Path | None = Field(
        default=None, description="embedded demo broker only: a file of `username:argon2-hash` lines; with it "
        "only those users log in, each device publishing under its own id (composition/broker.py)")
    database_url: str | None = Field(
        default=None, description="postgresql:// URL, or key=value pairs; a primary and its standby: "
        "postgresql://user@host1:5432,host2:5432/trygg?target_session_attrs=read-write (docs/cluster.md); "
        "none = embedded PostgreSQL in data_dir"
    )
    data_dir: Path = Path(".trygg")
    # The cluster mode (`trygg up --cluster`, docs/cluster.md): several instances on a NATS
    # JetStream cluster. Devices and handhelds use the NATS nodes' MQTT listeners.
    cluster_nats_urls: str | None = Field(
        default=None, description="nats://host:4222 of the NATS nodes, comma-separated; set: the cluster mode")
    cluster_mqtt_urls: str | None = Field(
        default=None, description="mqtt://host:1883 of the NATS nodes' MQTT listeners, comma-separated "
        "(alerts are published there, retained); none = the NATS hosts on port 1883")
    cluster_instance: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,48}$",
        description="this instance's name in the cluster; none = host name and process id")
    cluster_replicas: int = Field(default=3, ge=1, le=5, description="replicas of Trygg's streams and consumers")
    cluster_lease_s: float = Field(default=5.0, ge=1.0, le=60.0,
                                   description="an instance's partitions pass on this long after it stopped renewing")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535, description="0: any free port (printed)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    pseudonym_key: SecretStr = SecretStr(DEMO_SECRET)
    session_secret: SecretStr = SecretStr(DEMO_SECRET)

    # Ingest tuning (docs/contract.md#5-delivery-guarantees, #9-performance-budgets).
    ingest_writers: int = Field(default=2, ge=1, le=16, description="parallel database writers")
    ingest_batch_max: int = Field(default=2000, ge=1, le=100_000)
    ingest_batch_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    ingest_queue_max: int = Field(default=20_000, ge=100, le=1_000_000)
    mqtt_receive_maximum: int = Field(default=10_000, ge=20, le=65_535)
    db_retry_s: float = Field(default=2.0, gt=0, le=600)

    # Limits of shared resources (docs/operators.md "Limits").
    registry_max_mb: int = Field(default=64, ge=1, le=1024,
                                 description="largest registry document (PUT /api/registry, trygg registry load)")
    auth_offline_max_s: int = Field(default=12 * 3600, ge=0, le=7 * 24 * 3600,
                                    description="while PostgreSQL is down, sign-ins checked at most this long "
                                                "ago stay valid; 0: none")

    # Sign-in (docs/security.md "Sign-in"): backoff per account and per client address,
    # argon2 in a bounded low-priority worker, the proxies whose X-Forwarded-* are believed.
    login_account_free: int = Field(default=5, ge=1, le=1000,
                                    description="failed sign-ins per account before it must wait")
    login_account_leak_s: float = Field(default=300, gt=0, le=86_400,
                                        description="an account's failure is forgotten after this long")
    login_address_free: int = Field(default=20, ge=1, le=100_000,
                                    description="failed sign-ins per client address before it must wait")
    login_address_leak_s: float = Field(default=30, gt=0, le=86_400,
                                        description="an address's failure is forgotten after this long")
    login_backoff_max_s: float = Field(default=900, ge=1, le=86_400,
                                       description="longest wait (1 s, doubling per failure, up to this)")
    login_throttle_keys: int = Field(default=20_000, ge=100, le=10_000_000,
                                     description="accounts and addresses remembered (each; bounds memory)")
    login_hash_threads: int = Field(default=1, ge=1, le=8, description="threads checking passwords (argon2)")
    login_hash_queue: int = Field(default=16, ge=0, le=10_000,
                                  description="sign-ins waiting for a thread; more are refused with 503")
    login_hash_rest: float = Field(default=2.0, ge=0, le=20,
                                   description="after each password check its thread rests this many times "
                                               "as long as the check took (argon2's share of CPU under a flood)")
    trusted_proxies: str = Field(default="", description="comma-separated addresses or networks of reverse "
                                 "proxies whose X-Forwarded-For/-Proto are believed; empty: none")

    # Rules (docs/rules.md): an `offline` status (Last Will) raises device_offline only
    # if the device is still offline this long after it; 0 raises at once.
    offline_debounce_s: float = Field(default=60, ge=0, le=3600)

    # Escalation timeouts in seconds (docs/contract.md#4-rules-and-alerts); shortened in tests.
    escalate_critical_s: float = Field(default=30, gt=0)
    escalate_high_s: float = Field(default=60, gt=0)
    escalate_medium_s: float = Field(default=300, gt=0)

    map_tiles_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    docs_require_login: bool = Field(default=False, description="/docs, /redoc and /openapi.json only for "
                                                                 "signed-in users (docs/security.md)")

    # Research (docs/research.md "What is guaranteed"): the finest time a researcher sees
    # (never finer than the hour), the smallest group shown (never under 5), and the
    # research pool, apart from the staff pool so research never starves staff
    # (docs/security.md "Research and metrics").
    research_time_grain: Literal["hour", "day", "week", "month"] = "hour"
    research_min_group: int = Field(default=5, ge=5, le=10_000)
    research_pool_size: int = Field(default=2, ge=1, le=50, description="connections for research queries")
    research_pool_max_waiting: int = Field(default=8, ge=1, le=1000,
                                           description="research requests queued for a connection; more: 503")
    research_pool_wait_s: float = Field(default=2.0, gt=0, le=60,
                                        description="how long a research request waits for a connection")
    research_statement_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    research_idle_timeout_s: float = Field(default=60.0, gt=0, le=3600,
                                           description="an export whose client stops reading this long is ended")

    # Retention per class (docs/storage.md "Retention"): a time partition is dropped once
    # its upper bound is older than now − keep. The minimums are floors the database
    # enforces as well (migration 0013): a typo cannot empty a table.
    retain_events_days: int = Field(default=1827, ge=31, le=36_525,
                                    description="safety events (every type but heartbeat); 5 years")
    retain_heartbeats_days: int = Field(default=14, ge=2, le=3660, description="raw heartbeats")
    retain_device_hourly_days: int = Field(default=90, ge=2, le=36_525,
                                           description="per-device hourly rollup of heartbeats and battery")
    retain_device_daily_days: int = Field(default=1827, ge=31, le=36_525,
                                          description="per-device daily rollup of heartbeats and battery")
    retain_dead_letters_days: int = Field(default=90, ge=7, le=36_525, description="dead letters")
    maintenance_interval_s: float = Field(default=60, ge=1, le=86_400,
                                          description="`trygg up` runs maintenance this often "
                                                      "(partitions ahead, retention, rollups)")

    # Early signs of decline (docs/insights.md, docs/operators.md "Insights"): the daily job
    # inside `trygg up`, and the baseline and change detection (trygg.insights.Params; the
    # reasoning behind each default is in docs/insights.md).
    insights_enabled: bool = Field(default=True, description="compute daily features and notices in `trygg up`")
    insights_interval_s: float = Field(default=900, ge=1, le=86_400,
                                       description="the daily job looks for days to compute this often")
    insights_cpu_share: float = Field(default=0.5, gt=0, le=1,
                                      description="share of one core the daily job's process may use (it "
                                                  "rests after each batch)")
    insights_batch: int = Field(default=5000, ge=1, le=5000, description="residents computed together")
    insights_baseline_days: int = Field(default=42, ge=7, le=INSIGHTS_HISTORY_DAYS - 1,
                                        description="usable days in a baseline")
    insights_min_days: int = Field(default=14, ge=3, le=INSIGHTS_HISTORY_DAYS - 1,
                                   description="usable days before any notice")
    insights_z_clip: float = Field(default=2.0, gt=0, le=10,
                                   description="a day's distance from the usual, in spreads, counts at most this much")
    insights_slow_k: float = Field(default=0.2, ge=0, le=5,
                                   description="allowance of the CUSUM for slow declines, in spreads a day")
    insights_slow_h: float = Field(default=13.0, gt=0, le=100, description="limit of the CUSUM for slow declines")
    insights_fast_k: float = Field(default=1.0, ge=0, le=5,
                                   description="allowance of the CUSUM for sudden declines, in spreads a day")
    insights_fast_h: float = Field(default=3.5, gt=0, le=100, description="limit of the CUSUM for sudden declines")
    insights_cooldown_days: int = Field(default=14, ge=0, le=365,
                                        description="days before the same feature may raise a notice again")
    insights_max_unheard_hours: int = Field(default=3, ge=0, le=24,
                                            description="a day with more hours of a sensor unheard is not used")
    insights_away_hours: float = Field(default=16.0, gt=0, le=24,
                                       description="out of home this long: the day counts as away")
    insights_window_days: int = Field(default=14, ge=1, le=56, description="a notice's \"last N days\" mean")
    insights_guard_days: int = Field(default=14, ge=0, le=28,
                                     description="the newest days left out of the baseline")

    # /metrics (docs/security.md "Research and metrics"): judged by the TCP peer only.
    metrics_allow: str = Field(default="127.0.0.1,::1",
                               description="IPs/CIDRs (comma-separated) that may scrape /metrics directly")
    metrics_proxies: str = Field(default="", description="IPs/CIDRs of proxies allowed to forward scrapes")

    # Storage engine (docs/storage.md "TimescaleDB"): auto uses TimescaleDB when the server
    # has it and preloads it, and stops with one line when it has it but does not preload it.
    timescaledb: Literal["auto", "on", "off"] = Field(
        default="auto", description="auto: TimescaleDB when available and preloaded (stop if available but "
        "not preloaded); on: TimescaleDB or stop; off: plain PostgreSQL partitions")

    @field_validator("metrics_allow", "metrics_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        networks(value)
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("has a bad port") from None
        return value

    @field_validator("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file", "demo_broker_passwords", mode="before")
    @classmethod
    def _no_file(cls, value: object) -> object:
        return None if value == "" else value  # `TRYGG_MQTT_CA_FILE=` in a .env: none

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        secure = self.mqtt_url is not None and urlsplit(self.mqtt_url).scheme == "mqtts"
        for name in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
            if getattr(self, name) is not None and not secure:
                raise ValueError(f"TRYGG_{name.upper()} is set but TRYGG_MQTT_URL is not mqtts://")
        if self.mqtt_key_file is not None and self.mqtt_cert_file is None:
            raise ValueError("TRYGG_MQTT_KEY_FILE is set without TRYGG_MQTT_CERT_FILE")
        return self

    @model_validator(mode="after")
    def _insights(self) -> Settings:
        if self.insights_min_days > self.insights_baseline_days:
            raise ValueError(f"TRYGG_INSIGHTS_MIN_DAYS ({self.insights_min_days}) is more than "
                             f"TRYGG_INSIGHTS_BASELINE_DAYS ({self.insights_baseline_days})")
        if self.insights_baseline_days + self.insights_guard_days > INSIGHTS_HISTORY_DAYS - 1:
            raise ValueError(f"TRYGG_INSIGHTS_BASELINE_DAYS + TRYGG_INSIGHTS_GUARD_DAYS is more than the "
                             f"{INSIGHTS_HISTORY_DAYS - 1} days before the newest that a resident's state keeps")
        for which, k in (("SLOW", self.insights_slow_k), ("FAST", self.insights_fast_k)):
            if k >= self.insights_z_clip:  # a day adds at most z_clip - k to the sum
                raise ValueError(f"TRYGG_INSIGHTS_{which}_K ({k:g}) is not below TRYGG_INSIGHTS_Z_CLIP "
                                 f"({self.insights_z_clip:g}): its sum could never reach its limit")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        import ipaddress

        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or a network (like 10.0.0.5 or 172.16.0.0/12)") from None
        return ",".join(v.strip() for v in value.split(",") if v.strip())

    @property
    def trusted_proxy_list(self) -> list[str]:
        """`trusted_proxies` as a list (for uvicorn's `forwarded_allow_ips`)."""
        return [v for v in self.trusted_proxies.split(",") if v]

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        check_conninfo(value)
        return value

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def require_real_secrets(self) -> None:
        """Refuse demo secrets outside `--demo` (docs/contract.md#8-running-it)."""
        for name in ("pseudonym_key", "session_secret"):
            secret: SecretStr = getattr(self, name)
            if secret.get_secret_value() == DEMO_SECRET:
                raise SettingsError(f"TRYGG_{name.upper()}", "is left at its default; set a secret")
            if len(secret.get_secret_value()) < 16:
                raise SettingsError(f"TRYGG_{name.upper()}", "must be at least 16 characters")


@functools.cache
def networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`"127.0.0.1, 10.0.0.0/8"` as networks; a bad entry raises ValueError naming it."""
    out = []
    for part in value.replace(" ", "").split(","):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR") from None
    return tuple(out)


#: libpq's `target_session_attrs`; `read-write` picks the primary of a primary and standby
#: (docs/cluster.md "PostgreSQL: a primary and a standby").
SESSION_ATTRS = frozenset({"any", "read-write", "read-only", "primary", "standby", "prefer-standby"})
_CONNINFO_SHAPE = ("must look like postgresql://user@host:5432/dbname, or with a standby "
                   "postgresql://user@host1:5432,host2:5432/dbname?target_session_attrs=read-write")


def check_conninfo(value: str) -> None:
    """Raise ValueError, with one line saying what is wrong, unless `value` is a libpq
    connection string psycopg can connect with: a postgresql:// URL or key=value pairs,
    one host or several (`host=a,b port=5432,5433`; a URL's `host1:5432,host2:5433`), each
    port a number, as many ports as hosts (or one for all), a known target_session_attrs,
    and with several hosts one that picks the server taking writes (read-write, primary)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(value)
    except Exception:
        raise ValueError(_CONNINFO_SHAPE) from None
    if "://" in value and urlsplit(value).scheme not in ("postgresql", "postgres"):
        raise ValueError(_CONNINFO_SHAPE)
    hosts = max(len(str(params.get(key) or "").split(",")) for key in ("host", "hostaddr"))
    ports = str(params.get("port") or "").split(",")
    if len(ports) not in (1, hosts):
        raise ValueError(f"has {len(ports)} ports for {hosts} hosts: give one port, or one per host")
    for port in ports:
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"has a bad port {port!r}")
    attrs = params.get("target_session_attrs")
    if attrs is not None and attrs not in SESSION_ATTRS:
        raise ValueError(f"has target_session_attrs={attrs!r}; use one of {', '.join(sorted(SESSION_ATTRS))}")
    if hosts > 1 and attrs not in ("read-write", "primary"):
        # libpq would take the first server that answers: a standby refuses every write
        raise ValueError(f"has {hosts} hosts: add target_session_attrs=read-write, so that Trygg "
                         "connects to the one that takes writes")


def load_settings(**overrides: object) -> Settings:
    """Build Settings; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check of several settings: its message names them
            raise SettingsError("settings", msg) from None
        field = str(err["loc"][0])
        if field in _HOLD_SECRETS:  # never echo a password
            raise SettingsError(f"TRYGG_{field.upper()}", msg) from None
        raise SettingsError(f"TRYGG_{field.upper()}", f"{msg} (got {err.get('input')!r})") from None


#: Settings whose value may hold a password (URLs with user:password@).
_HOLD_SECRETS = frozenset({"mqtt_url", "database_url", "pseudonym_key", "session_secret"})
