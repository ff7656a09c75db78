"""Small readers and writers for rule state as JSON (`Processor.export_state`).

Times are ISO 8601 UTC strings with microseconds, sources ``[device_id, event_id]``.
Readers raise `StateError` naming the path of the bad value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from processors.errors import StateError
from processors.localtime import isoformat_utc, parse_iso

Source = tuple[str, str]
T = TypeVar("T")


def dump_time(value: datetime | None) -> str | None:
    return None if value is None else isoformat_utc(value, "microseconds")


def dump_source(value: Source | None) -> list[str] | None:
    return None if value is None else [value[0], value[1]]


def obj(doc: Any, path: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise StateError(path, "must be an object")
    return doc


def opt_time(doc: dict[str, Any], key: str, path: str) -> datetime | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateError(f"{path}.{key}", "must be an ISO 8601 time")
    try:
        return parse_iso(value)
    except ValueError:
        raise StateError(f"{path}.{key}", f"{value!r} is not an ISO 8601 time") from None


def req_time(doc: dict[str, Any], key: str, path: str) -> datetime:
    return _required(opt_time(doc, key, path), key, path)


def opt_source(doc: dict[str, Any], key: str, path: str) -> Source | None:
    value = doc.get(key)
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise StateError(f"{path}.{key}", "must be [device_id, event_id]")
    return (value[0], value[1])


def req_source(doc: dict[str, Any], key: str, path: str) -> Source:
    return _required(opt_source(doc, key, path), key, path)


def _required(value: T | None, key: str, path: str) -> T:
    if value is None:
        raise StateError(f"{path}.{key}", "is required")
    return value


def opt_number(doc: dict[str, Any], key: str, path: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateError(f"{path}.{key}", "must be a number")
    return float(value)


def opt_int(doc: dict[str, Any], key: str, path: str) -> int:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StateError(f"{path}.{key}", "must be a non-negative integer")
    return value


def flag(doc: dict[str, Any], key: str, path: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise StateError(f"{path}.{key}", "must be true or false")
    return value


def strings(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StateError(path, "must be a list of strings")
    return value
