"""The pool every synchronous storage call takes (the calling convention: storage/__init__.py).

Opened by the composition root (composition/runtime.py `open_pool`), never here.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import psycopg
from psycopg_pool import ConnectionPool

#: How long a pool goes on trying to replace a lost connection (its delays grow: 1, 2, 4 s,
#: ...) before it gives the attempt up; the next caller who finds no connection begins
#: anew at once. Short, so that after an outage, or a switch to a promoted standby, every
#: pool connects again within seconds of the server taking connections, however long it
#: took (psycopg_pool's default of 5 minutes would keep a pool waiting for the next
#: attempt up to as long again as the outage; docs/cluster.md "PostgreSQL: a primary and
#: a standby").
RECONNECT_S: Final = 10.0

#: A pool of synchronous connections; rows are tuples.
Pool: TypeAlias = ConnectionPool[psycopg.Connection[tuple[Any, ...]]]


def conninfo_of(pool: Pool) -> str:
    """The URL the pool connects to: for what keeps connections of its own (see
    storage/__init__.py)."""
    conninfo = pool.conninfo
    return conninfo if isinstance(conninfo, str) else conninfo()


__all__ = ["RECONNECT_S", "Pool", "conninfo_of"]
