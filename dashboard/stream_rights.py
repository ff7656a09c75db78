"""Live streams keep only the rights their user has now.

A request is checked once, but a console's stream (`GET /api/alerts/stream`) stays open
for hours: a staff member moved from east to west kept receiving east's alarms, and a
signed-out session or a token issued before a password change kept its stream. So every
open stream is checked again, all of them together:

- every `INTERVAL_S` one query over a connection of this watch's own (never waiting
  behind the API's pool) reads the rows of the streams' users and which of their
  tokens were signed out (storage/users_store.py `fetch_users_and_revoked`) — that
  catches `trygg users add`, a registry load and a sign-out on another dashboard,
  whichever process made them;
- a sign-out on this dashboard (dashboard/user_cache.py `revoke`) ends the session's
  streams at once, without waiting for the next query.

A stream whose token no longer stands for anyone (signed out, password changed, user
removed) ends with `expired`; one whose user's role, teams or residents changed ends
with `reset`, and the console reconnects (300 ms later) with its new rights and lists
again. While PostgreSQL cannot be reached the streams go on as their requests would
(docs/operators.md "Staff while PostgreSQL is down"); sign-outs here still apply.

This runs beside the alarm path, never in it: streams are written from the alert
stage's own call (dashboard/alert_stream.py); a check is one query and a comparison per
stream on the event loop (measured: bench/stream_rights.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import psycopg
from prometheus_client import Counter, Histogram

from dashboard.authz import Principal
from dashboard.user_cache import UserCache
from storage.users_store import UserRow, fetch_users_and_revoked
from trygg.logging import get_logger

if TYPE_CHECKING:
    from dashboard.auth import TokenClaims
    from dashboard.deps import Credential

log = get_logger(__name__)

#: How often open streams are checked against PostgreSQL.
INTERVAL_S: Final = 0.5
#: How long the check's own connection may take to open, and a check to answer.
CONNECT_S: Final = 2.0
QUERY_S: Final = 2.0

SIGNED_OUT: Final = "you were signed out, or your password changed; sign in again"
RIGHTS_CHANGED: Final = "your role, teams or residents changed: list again and reconnect"

ENDED = Counter("trygg_stream_rights_ended", "Live streams ended because their user's rights changed, by why",
                ["why"])
CHECK_SECONDS = Histogram("trygg_stream_rights_check_seconds", "One re-check of all open live streams",
                          buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0))

PrincipalFrom = Callable[[UserRow | None, bool, "TokenClaims"], Principal | None]


class Watched(Protocol):
    """An open stream, as the watch sees it."""

    @property
    def who(self) -> Principal: ...

    @property
    def credential(self) -> Credential: ...

    def end(self, last: str, detail: str) -> None:
        """Close with `last` (`expired` or `reset`) and `detail`, as soon as it can."""
        ...


def verdict(who: Principal, now: Principal | None) -> tuple[str, str] | None:
    """How a stream opened as `who` must end, given who its token stands for now."""
    if now is None:
        return "expired", SIGNED_OUT
    if (now.role, now.teams, now.residents) != (who.role, who.teams, who.residents):
        return "reset", RIGHTS_CHANGED
    return None


class RightsWatch:
    """The open streams of one dashboard and the task that checks them."""

    def __init__(self, users: UserCache, conninfo: str, principal_from: PrincipalFrom,
                 interval_s: float = INTERVAL_S) -> None:
        self._users = users
        self._conninfo = conninfo
        self._principal_from = principal_from
        self.interval_s = interval_s
        self._streams: set[Watched] = set()
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._failing = False
        users.on_revoke(self._signed_out)

    def watch(self, stream: Watched) -> None:
        """Check `stream` from now on (started on the event loop, in the stream's task)."""
        self._streams.add(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard.stream-rights")

    def unwatch(self, stream: Watched) -> None:
        self._streams.discard(stream)

    @property
    def watching(self) -> int:
        return len(self._streams)

    def _signed_out(self, token_hash: str) -> None:
        """A token signed out on this dashboard: its streams end now."""
        for stream in [s for s in self._streams if s.credential.token_hash == token_hash]:
            self._end(stream, "expired", SIGNED_OUT, "signed_out")

    def _end(self, stream: Watched, last: str, detail: str, why: str) -> None:
        self._streams.discard(stream)
        ENDED.labels(why).inc()
        log.info("live_stream_ended", why=why, kind=stream.credential.kind)
        stream.end(last, detail)

    async def _run(self) -> None:
        """Check, sleep, check … until cancelled. An error is logged and the next round
        tries again: a check that stopped would leave streams with stale rights."""
        while True:
            started = time.monotonic()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live_stream_rights_check_failed")
                await self._close_connection()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def check(self) -> None:
        """One round: every open stream against its user's row as PostgreSQL has it now."""
        streams = list(self._streams)
        if not streams:
            await self._close_connection()
            return
        started = time.perf_counter()
        usernames = sorted({s.credential.claims.username for s in streams})
        hashes = sorted({s.credential.token_hash for s in streams})
        try:
            conn = await self._connection()
            async with asyncio.timeout(QUERY_S):
                rows, revoked = await fetch_users_and_revoked(conn, usernames, hashes)
        except (psycopg.OperationalError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning("live_streams_unchecked_database_unreachable", error=str(exc).strip()[:200])
            self._failing = True
            await self._close_connection()
            return
        self._failing = False
        for name in usernames:
            if name in rows:
                self._users.remember(rows[name])
            else:
                self._users.forget(name)
        for stream in streams:
            if stream not in self._streams:
                continue  # closed meanwhile
            claims = stream.credential.claims
            gone = stream.credential.token_hash in revoked or self._users.revoked(stream.credential.token_hash)
            ending = verdict(stream.who, self._principal_from(rows.get(claims.username), gone, claims))
            if ending is not None:
                self._end(stream, *ending, why="signed_out" if ending[0] == "expired" else "rights")
        CHECK_SECONDS.observe(time.perf_counter() - started)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            async with asyncio.timeout(CONNECT_S):
                self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        return self._conn

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Stop checking (the app's lifespan, at shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_connection()


__all__ = ["RIGHTS_CHANGED", "SIGNED_OUT", "RightsWatch", "Watched", "verdict"]
