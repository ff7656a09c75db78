"""PostgreSQL storage: schema and migrations, batch writers (COPY), queries."""

from storage.alerts_store import AlertRecord, AlertStore, TransitionRecord
from storage.embedded import start_embedded_postgres
from storage.errors import DatabaseUnavailable, MigrationError, StorageError
from storage.events import DeadLetter, EventStore, StatusRow, unique_events
from storage.migrate import migrate
from storage.registry_store import load_registry, load_registry_text, save_registry

__all__ = [
    "AlertRecord",
    "AlertStore",
    "DatabaseUnavailable",
    "DeadLetter",
    "EventStore",
    "MigrationError",
    "StatusRow",
    "StorageError",
    "TransitionRecord",
    "load_registry",
    "load_registry_text",
    "migrate",
    "save_registry",
    "start_embedded_postgres",
    "unique_events",
]
