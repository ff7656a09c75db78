"""PostgreSQL storage: schema and migrations, batch writers (COPY), queries; and the durable
local log (storage/local_log.py) where records wait on this machine's disk for PostgreSQL."""

from storage.alerts_store import AlertStore
from storage.embedded import start_embedded_postgres
from storage.errors import DatabaseUnavailable, MigrationError, StorageError
from storage.events import DeadLetter, EventStore, StatusRow, unique_events
from storage.local_log import LocalLog, LocalLogError
from storage.migrate import migrate
from storage.registry_store import load_registry, load_registry_text, save_registry

__all__ = [
    "AlertStore",
    "DatabaseUnavailable",
    "DeadLetter",
    "EventStore",
    "LocalLog",
    "LocalLogError",
    "MigrationError",
    "StatusRow",
    "StorageError",
    "load_registry",
    "load_registry_text",
    "migrate",
    "save_registry",
    "start_embedded_postgres",
    "unique_events",
]
