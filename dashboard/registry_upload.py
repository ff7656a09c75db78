"""Replace the registry from an uploaded document, in a child process (PUT /api/registry).

Parsing, validating and saving a registry of a large municipality is seconds of work
that holds the GIL in long stretches; in `trygg up` the dashboard shares its process
with the alarm path. So the whole job runs in a child of its own (trygg/isolated.py):
the document's limits are checked before it is parsed (trygg/registry_limits.py), it is
validated as a whole, and saved in one transaction; the parent only gets the counts.
The stages see the new registry through their registry watcher, as after `trygg
registry load`.

`replace_registry` raises `RegistryError` (`RegistryLimitError` beyond a limit, 413 or
422), `DatabaseUnreachable` (503), `JobTimeout` after `timeout_s`, or `JobFailed` if the
child died (e.g. out of its memory cap).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from trygg.errors import TryggError
from trygg.isolated import MEMORY_BYTES, run_isolated
from trygg.registry import RegistryError, RegistryLimitError, parse_registry
from trygg.registry_limits import DocumentLimits

#: The longest an upload may take, parsing and saving (a 45 MiB YAML registry of
#: 100,000 residents takes about a minute on one core).
UPLOAD_TIMEOUT_S: Final = 300.0

_one_at_a_time = threading.Lock()


class UploadBusy(TryggError):
    """Another upload is being processed in this process."""


class DatabaseUnreachable(TryggError):
    """The registry was valid but PostgreSQL could not be reached to save it."""


@dataclass(frozen=True, slots=True)
class Loaded:
    teams: int
    residents: int
    devices: int
    users: int


def replace_registry(text: bytes, conninfo: str, actor: str, limits: DocumentLimits,
                     timeout_s: float = UPLOAD_TIMEOUT_S) -> Loaded:
    """Parse, validate and save `text` in a child process; blocks the calling thread.
    One upload at a time: a second one meanwhile raises `UploadBusy` at once."""
    if not _one_at_a_time.acquire(blocking=False):
        raise UploadBusy("another registry upload is being processed; try again when it is done")
    try:
        return run_isolated(_parse_and_save, text, conninfo, actor, limits, timeout_s=timeout_s,
                            name="registry upload")
    finally:
        _one_at_a_time.release()


def _parse_and_save(text: bytes, conninfo: str, actor: str, limits: DocumentLimits) -> Loaded:
    """In the child: what `trygg registry load` does, with the errors made to pickle."""
    import psycopg

    from storage.registry_store import save_registry

    try:
        reg = parse_registry(text, limits)
    except MemoryError:
        raise RegistryLimitError("memory", "needs more memory to load than the upload's limit of "
                                 f"{MEMORY_BYTES // 1024**3} GiB", 413) from None
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            save_registry(conn, reg, actor=actor)
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        first = (str(exc).strip().splitlines() or ["refused"])[0]
        raise RegistryError([f"(document): PostgreSQL refused it ({first})"]) from None
    except psycopg.Error as exc:
        raise DatabaseUnreachable(str(exc).strip()[:500]) from None
    return Loaded(len(reg.teams), len(reg.residents), sum(len(r.devices) for r in reg.residents),
                  len(reg.users))


__all__ = ["UPLOAD_TIMEOUT_S", "DatabaseUnreachable", "Loaded", "UploadBusy", "replace_registry"]
