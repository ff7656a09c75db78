"""Errors of the storage package."""

from __future__ import annotations

from trygg.errors import TryggError


class StorageError(Exception):
    """Base of storage errors."""


class DatabaseUnavailable(StorageError):
    """PostgreSQL cannot be reached (or the connection broke); the caller may retry."""


class MigrationError(StorageError):
    """A migration file failed; `version` names it."""

    def __init__(self, version: int, message: str) -> None:
        super().__init__(f"migration {version:04d}: {message}")
        self.version = version


class EngineError(StorageError, TryggError):
    """The PostgreSQL server cannot hold Trygg's schema as `TRYGG_TIMESCALEDB` asks
    (TimescaleDB available but not preloaded, asked for but missing, ...); no migration
    ran. The message is one line saying what to set (storage/timescale.py). A TryggError:
    the CLI prints it as one line."""
