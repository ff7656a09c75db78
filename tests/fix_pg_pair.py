"""A PostgreSQL 15 primary and its streaming standby on this machine, for failover tests
(docs/cluster.md "PostgreSQL: a primary and a standby").

`pg_pair` (module-scoped) is a `PgPair`: the primary (initdb, `wal_level=replica`, a
replication role with its own line in pg_hba.conf) holds a migrated database `trygg`; the
standby is made from it with `pg_basebackup -R` and streams from it. Replication is
synchronous (`synchronous_standby_names = '*'`, set on the primary only once the standby
streams): a commit the primary acknowledged is on the standby, so a test may count every
acknowledged write on the promoted server. Its API:

- `conninfo`: the multi-host URL Trygg is given (both servers,
  `target_session_attrs=read-write`: whichever accepts writes);
- `primary_url` / `standby_url`: one server each, for counting and checking;
- `wait_replicated()`: until the standby has replayed everything the primary wrote;
- `kill_primary()`: `kill -9` of the primary's postmaster and its processes, as when its
  machine dies;
- `promote()`: `pg_ctl promote` of the standby, waiting until it accepts writes; returns
  the seconds that took.

One switch per module: after `kill_primary` and `promote` the pair has one server left.
Servers run from /usr/lib/postgresql/15 (skipped without it), as the user the other
private servers run as when the tests run as root (tests/fix_timescale.py `_server_user`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from composition.broker import free_port
from tests.fix_db import migrate_url
from tests.fix_timescale import PG_LIB, _server_user
from tests.helpers import worker_port

PG_BIN = PG_LIB / "bin"
#: the role the standby replicates as (`pg_basebackup -U`, primary_conninfo)
REPLICATION_ROLE = "replicator"


class PgPair:
    def __init__(self) -> None:
        self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="trygg-pgpair-"))
        self._own(self.dir)
        self.primary_data = self.dir / "primary"
        self.standby_data = self.dir / "standby"
        self._run("initdb", "-D", str(self.primary_data), "-U", "postgres", "--auth=trust",
                  "--encoding=utf8", "--no-sync")
        with (self.primary_data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host replication {REPLICATION_ROLE} 127.0.0.1/32 trust\n")
        self.primary_port = worker_port(25460)
        self._start(self.primary_data, self.primary_port, "primary", "-c wal_level=replica",
                    "-c max_wal_senders=4", "-c wal_keep_size=256MB")
        self.standby_port = free_port("127.0.0.1", self.primary_port + 1)

    # -- what a test uses ---------------------------------------------------------------

    @property
    def conninfo(self) -> str:
        return (f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}"
                "/trygg?target_session_attrs=read-write")

    @property
    def primary_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.primary_port}/trygg"

    @property
    def standby_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.standby_port}/trygg"

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed the primary's WAL up to now."""
        with psycopg.connect(self.primary_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby_url, autocommit=True) as conn:
            while True:
                done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {row[0]} in {timeout} s")
                time.sleep(0.02)

    def kill_primary(self) -> None:
        """`kill -9` of the primary's postmaster, then of the processes it started: none
        of the old primary answers any more, as when its machine is gone."""
        pid = int((self.primary_data / "postmaster.pid").read_text().split()[0])
        children = _children(pid)
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in [pid, *children]) and time.monotonic() < deadline:
            time.sleep(0.01)

    def promote(self) -> float:
        """`pg_ctl promote` of the standby, waiting until it is a primary; the seconds it took."""
        started = time.monotonic()
        self._run("pg_ctl", "-D", str(self.standby_data), "-w", "-t", "60", "promote")
        return time.monotonic() - started

    # -- set-up and tear-down -----------------------------------------------------------

    def make_standby(self) -> None:
        """A migrated `trygg` on the primary, the standby from `pg_basebackup -R`, then
        synchronous replication to it."""
        with psycopg.connect(self._url(self.primary_port, "postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {REPLICATION_ROLE} REPLICATION LOGIN")
            conn.execute("CREATE DATABASE trygg")
        migrate_url(self.primary_url)
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", REPLICATION_ROLE,
                  "-D", str(self.standby_data), "-R", "-X", "stream", "-c", "fast", "--no-sync")
        self._start(self.standby_data, self.standby_port, "standby")
        with psycopg.connect(self._url(self.primary_port, "postgres"), autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while not conn.execute("SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'").fetchone():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the standby does not stream: {self._log('standby')}")
                time.sleep(0.05)
            # the primary's own setting (postgresql.auto.conf, made after the base backup):
            # the promoted standby must not wait for a standby of its own
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        self.wait_replicated()

    def destroy(self) -> None:
        for data in (self.standby_data, self.primary_data):
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "-D", str(data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _start(self, data: Path, port: int, name: str, *options: str) -> None:
        settings = ["-c listen_addresses=127.0.0.1", f"-p {port}", f"-k {self.dir}", *options]
        try:
            self._run("pg_ctl", "-D", str(data), "-w", "-l", str(self.dir / f"{name}.log"),
                      "-o", " ".join(settings), "start")
        except subprocess.CalledProcessError:
            raise RuntimeError(f"the {name} did not start: {self._log(name)}") from None

    def _log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / f"{name}.log").read_text()[-2000:]
        return "(no log)"

    def _url(self, port: int, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{dbname}"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(PG_BIN / program), *args], check=True, capture_output=True, user=self.user,
                       timeout=90, cwd=self.dir)

    def _own(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a postmaster's backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # the field after the parenthesised command: state, then the parent's pid
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[PgPair]:
    """A primary with a synchronous streaming standby, `trygg` migrated (module docstring)."""
    if not (PG_BIN / "pg_basebackup").exists():
        pytest.skip(f"no PostgreSQL 15 in {PG_LIB} for a primary and a standby")
    pair = PgPair()
    try:
        pair.make_standby()
        yield pair
    finally:
        pair.destroy()
