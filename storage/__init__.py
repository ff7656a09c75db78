"""PostgreSQL storage: schema and migrations, batch writers (COPY), queries; and the durable
local log (storage/local_log.py) where records wait on this machine's disk for PostgreSQL.

The calling convention (docs/storage.md "Connections"): storage never opens a connection
from a URL. The composition root opens the pools and passes them in:

- Functions and stores of the stages take a `Pool` (a `psycopg_pool.ConnectionPool`):
  `migrate`, `storage.rule_state`, `EventStore`, `AlertStore`. A store borrows one
  connection and keeps it while it works (not one per batch); a broken one goes back to
  the pool, which replaces it.
- Functions take an open connection, borrowed from a pool by the caller, only where the
  caller runs several statements on one connection:
  `save_registry` / `load_registry` / `load_registry_text` (the registry is replaced in
  one transaction, also from the isolated process of a registry upload, which holds one
  connection and no pool); the synchronous `storage.users_store` functions (`trygg users
  add` checks the ids and writes on one connection); and the dashboard's async queries
  (`residents_store`, `research_store`, `audit_store`, `users_store`,
  `alert_history_store`: one request's reads on a connection of the dashboard's staff or
  research pool; the research export's server-side cursor lives in one transaction).
- `start_embedded_postgres` connects by itself: it creates the database a pool connects to.

The names below are imported when first used, not with the package, so that a child
process running one job here (a registry upload, an admin edit: trygg/isolated.py) starts
its job without importing the embedded server, the local log and the writers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported now: `storage.migrate` is also the name of its module, and a module imported
# later would stand in the package's namespace where the function should.
from storage.migrate import migrate

if TYPE_CHECKING:
    from storage.alerts_store import AlertStore
    from storage.embedded import start_embedded_postgres
    from storage.errors import DatabaseUnavailable, MigrationError, StorageError
    from storage.events import DeadLetter, EventStore, StatusRow, unique_events
    from storage.local_log import LocalLog, LocalLogError
    from storage.pool import Pool, conninfo_of
    from storage.registry_store import load_registry, load_registry_text, save_registry

_HOMES = {
    "AlertStore": "storage.alerts_store",
    "start_embedded_postgres": "storage.embedded",
    "DatabaseUnavailable": "storage.errors",
    "MigrationError": "storage.errors",
    "StorageError": "storage.errors",
    "DeadLetter": "storage.events",
    "EventStore": "storage.events",
    "StatusRow": "storage.events",
    "unique_events": "storage.events",
    "LocalLog": "storage.local_log",
    "LocalLogError": "storage.local_log",
    "Pool": "storage.pool",
    "conninfo_of": "storage.pool",
    "load_registry": "storage.registry_store",
    "load_registry_text": "storage.registry_store",
    "save_registry": "storage.registry_store",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "AlertStore",
    "DatabaseUnavailable",
    "DeadLetter",
    "EventStore",
    "LocalLog",
    "LocalLogError",
    "MigrationError",
    "Pool",
    "StatusRow",
    "StorageError",
    "conninfo_of",
    "load_registry",
    "load_registry_text",
    "migrate",
    "save_registry",
    "start_embedded_postgres",
    "unique_events",
]
