"""The pool every synchronous storage call takes (the calling convention: storage/__init__.py).

Opened by the composition root (composition/runtime.py `open_pool`), never here.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import psycopg
from psycopg_pool import ConnectionPool

#: A pool of synchronous connections; rows are tuples.
Pool: TypeAlias = ConnectionPool[psycopg.Connection[tuple[Any, ...]]]


def conninfo_of(pool: Pool) -> str:
    """The URL the pool connects to: for what keeps connections of its own (see
    storage/__init__.py)."""
    conninfo = pool.conninfo
    return conninfo if isinstance(conninfo, str) else conninfo()


__all__ = ["Pool", "conninfo_of"]
