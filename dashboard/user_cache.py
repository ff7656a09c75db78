"""Who signed in, as last read from PostgreSQL: so staff can acknowledge and resolve
alarms while the database is down (docs/operators.md "Staff while PostgreSQL is down").

A token's signature and expiry are checked without the database (dashboard/auth.py);
its user's row (role, teams, residents, password fingerprint) and the sign-out list are
not. `lookup` reads them from PostgreSQL at every request, as before, and remembers the
row it read. Only when PostgreSQL cannot be reached does it answer from memory:

- the user's row as this dashboard last read it, if that was at most `max_age_s` ago
  (TRYGG_AUTH_OFFLINE_MAX_S, the token lifetime by default); a user not read here in
  that time gets 503, as before;
- a token signed out on this dashboard (`revoke`) is refused at once, in memory, and
  the sign-out is written to PostgreSQL when it answers again; one signed out on
  another dashboard is known here if it was in trygg.revoked_tokens when this one last
  read that list (at most `REVOKED_REFRESH_S` before the outage).

While the database answers, memory is never used: a change of role, teams or password
applies at the next request. "Cannot be reached" means the pool had no connection
within `POOL_WAIT_S` and a connection of its own, tried at once, failed too (a busy
pool with PostgreSQL up is answered over that connection, at most `PROBES` at a time);
after a failure the database is tried again at most every `RECHECK_S`, and requests in
between answer from memory without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from storage.users_store import UserRow, fetch_revoked, fetch_user_for_token, revoke_token
from trygg.logging import get_logger

log = get_logger(__name__)

#: How long a request waits for a pool connection before it asks PostgreSQL directly.
POOL_WAIT_S: Final = 0.25
#: How long a direct connection may take to answer.
PROBE_S: Final = 0.5
#: Direct connections at a time (a busy pool must not turn into a connection storm).
PROBES: Final = 2
#: After PostgreSQL could not be reached, how long requests answer from memory before
#: one of them tries it again.
RECHECK_S: Final = 1.0
#: How often the sign-out list is read again while the database answers.
REVOKED_REFRESH_S: Final = 60.0
MAX_USERS: Final = 10_000
MAX_REVOKED: Final = 100_000

OFFLINE_CHECKS = Counter("trygg_auth_offline_checks", "Tokens checked from memory while PostgreSQL was "
                         "unreachable, by result (accepted, refused, unknown)", ["result"])


class DatabaseDown(Exception):
    """PostgreSQL could not be reached for a token check."""


class UserCache:
    """Bounded memory of user rows and signed-out token hashes; no I/O (clock injected)."""

    def __init__(self, max_age_s: float, *, max_users: int = MAX_USERS, max_revoked: int = MAX_REVOKED,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.max_age_s = max_age_s
        self._max_users = max_users
        self._max_revoked = max_revoked
        self._clock = clock
        self._wall = wall
        self._users: OrderedDict[str, tuple[UserRow, float]] = OrderedDict()
        self._revoked: dict[str, float] = {}  # token hash → when the token expires (Unix time)
        self._unsaved: dict[str, float] = {}  # signed out here, not yet in PostgreSQL
        self.revoked_read_at: float | None = None
        self.down_since: float | None = None
        self.checked_at = float("-inf")
        self.probes = asyncio.Semaphore(PROBES)
        self._revoke_listeners: list[Callable[[str], None]] = []

    def on_revoke(self, listener: Callable[[str], None]) -> None:
        """Call `listener(token_hash)` whenever a token is known to be signed out (the
        live streams of that token end at once: dashboard/stream_rights.py)."""
        self._revoke_listeners.append(listener)

    # --- what the database said
    def remember(self, user: UserRow) -> None:
        self._users[user.username] = (user, self._clock())
        self._users.move_to_end(user.username)
        while len(self._users) > self._max_users:
            self._users.popitem(last=False)

    def forget(self, username: str) -> None:
        self._users.pop(username, None)

    def known(self, username: str) -> UserRow | None:
        """The user's row if it was read at most `max_age_s` ago."""
        seen = self._users.get(username)
        if seen is None or self._clock() - seen[1] > self.max_age_s:
            return None
        return seen[0]

    def revoke(self, token_hash: str, expires: float, *, unsaved: bool = False) -> None:
        self._revoked[token_hash] = expires
        if unsaved:
            self._unsaved[token_hash] = expires
        for listener in self._revoke_listeners:
            listener(token_hash)
        if len(self._revoked) > self._max_revoked:
            now = self._wall()
            self._revoked = {h: e for h, e in self._revoked.items() if e > now}
            while len(self._revoked) > self._max_revoked:  # the ones expiring first go first
                del self._revoked[min(self._revoked, key=self._revoked.__getitem__)]

    def revoked(self, token_hash: str) -> bool:
        return token_hash in self._revoked

    def read_revoked(self, rows: Iterable[tuple[str, float]]) -> None:
        """The sign-out list as PostgreSQL has it now (plus what it does not have yet)."""
        self._revoked = {**dict(rows), **self._unsaved}
        self.revoked_read_at = self._clock()

    def revoked_stale(self) -> bool:
        return self.revoked_read_at is None or self._clock() - self.revoked_read_at > REVOKED_REFRESH_S

    def unsaved(self) -> dict[str, float]:
        return dict(self._unsaved)

    def saved(self, token_hashes: Iterable[str]) -> None:
        for token_hash in token_hashes:
            self._unsaved.pop(token_hash, None)

    # --- whether the database answers
    def may_try_database(self) -> bool:
        """False for `RECHECK_S` after a failure: answer from memory without waiting."""
        return self.down_since is None or self._clock() - self.checked_at >= RECHECK_S

    def trying(self) -> None:
        """A request tries the database now: others meanwhile need not (while it is down)."""
        self.checked_at = self._clock()

    def database_failed(self) -> None:
        self.checked_at = self._clock()
        if self.down_since is None:
            self.down_since = self.checked_at
            log.warning("database_unreachable_users_checked_from_cache", max_age_s=self.max_age_s)

    def database_answered(self) -> None:
        if self.down_since is not None:
            log.info("database_reachable_again",
                     down_s=round(self._clock() - self.down_since, 1))
        self.down_since = None
        self.checked_at = self._clock()


_UNREACHABLE = (psycopg.OperationalError, PoolTimeout, TooManyRequests, TimeoutError, OSError)


async def lookup(cache: UserCache, pool: AsyncConnectionPool, conninfo: str, username: str,
                 token_hash: str, expires: int) -> tuple[UserRow | None, bool]:
    """The user and whether the token was signed out: from PostgreSQL, else (raises
    nothing) from memory; raises DatabaseDown when neither can answer."""
    if cache.may_try_database():
        cache.trying()
        try:
            user, revoked = await _from_database(cache, pool, conninfo, username, token_hash)
        except _UNREACHABLE:
            cache.database_failed()
        else:
            cache.database_answered()
            if user is None:
                cache.forget(username)
            else:
                cache.remember(user)
            if revoked:
                cache.revoke(token_hash, expires)
            return user, revoked
    user = cache.known(username)
    if user is None:
        OFFLINE_CHECKS.labels("unknown").inc()
        raise DatabaseDown(username)
    revoked = cache.revoked(token_hash)
    OFFLINE_CHECKS.labels("refused" if revoked else "accepted").inc()
    return user, revoked


async def _from_database(cache: UserCache, pool: AsyncConnectionPool, conninfo: str, username: str,
                         token_hash: str) -> tuple[UserRow | None, bool]:
    if cache.down_since is None:  # the pool first; it has no connection while PostgreSQL is down
        try:
            async with pool.connection(timeout=POOL_WAIT_S) as conn:
                return await _read(cache, conn, username, token_hash)
        except (PoolTimeout, TooManyRequests):
            pass  # busy, or PostgreSQL is gone: a connection of our own tells which
    async with asyncio.timeout(PROBE_S), cache.probes:
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        async with conn:
            return await _read(cache, conn, username, token_hash)


async def _read(cache: UserCache, conn: psycopg.AsyncConnection[Any], username: str, token_hash: str
                ) -> tuple[UserRow | None, bool]:
    user, revoked = await fetch_user_for_token(conn, username, token_hash)
    unsaved = cache.unsaved()
    if unsaved:  # sign-outs made while PostgreSQL was away
        for digest, expires in unsaved.items():
            await revoke_token(conn, digest, datetime.fromtimestamp(expires, UTC))
        cache.saved(unsaved)
    if cache.revoked_stale():
        cache.read_revoked(await fetch_revoked(conn, MAX_REVOKED))
    return user, revoked


async def revoke(cache: UserCache, pool: AsyncConnectionPool, token_hash: str, expires: int) -> None:
    """Sign a token out: in memory at once, in PostgreSQL now or when it answers again."""
    cache.revoke(token_hash, expires, unsaved=True)
    if cache.down_since is not None:  # written by the first request that reaches it again
        return
    try:
        async with pool.connection(timeout=POOL_WAIT_S) as conn:
            await revoke_token(conn, token_hash, datetime.fromtimestamp(expires, UTC))
    except _UNREACHABLE:
        log.warning("sign_out_kept_in_memory_until_database_answers")
        return
    cache.saved([token_hash])


__all__ = ["DatabaseDown", "UserCache", "lookup", "revoke"]
