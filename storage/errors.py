"""Errors of the storage package."""

from __future__ import annotations


class StorageError(Exception):
    """Base of storage errors."""


class DatabaseUnavailable(StorageError):
    """PostgreSQL cannot be reached (or the connection broke); the caller may retry."""


class MigrationError(StorageError):
    """A migration file failed; `version` names it."""

    def __init__(self, version: int, message: str) -> None:
        super().__init__(f"migration {version:04d}: {message}")
        self.version = version
