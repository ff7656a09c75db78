"""Rows of `trygg.users`: the dashboard's look-up at every request (async) and
`trygg users add` (sync).

Roles, teams and resident links also come from the registry document
(`save_registry` upserts them; the admin page edits users through that document); the
password hash only ever comes from `upsert_user` or a one-time link
(storage/admin_store.py `use_link`). `list_users` never reads the hash, only whether
there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


@dataclass(frozen=True, slots=True)
class UserRow:
    username: str
    role: str
    teams: tuple[str, ...]
    residents: tuple[str, ...]
    password_hash: str | None


_SELECT = "SELECT username, role, teams, residents, password_hash FROM trygg.users WHERE username = %s"


def _row(row: tuple[Any, ...] | None) -> UserRow | None:
    if row is None:
        return None
    return UserRow(row[0], row[1], tuple(row[2] or ()), tuple(row[3] or ()), row[4])


async def fetch_user(conn: psycopg.AsyncConnection[Any], username: str) -> UserRow | None:
    cur = await conn.execute(_SELECT, (username,))
    return _row(await cur.fetchone())


async def fetch_user_for_token(conn: psycopg.AsyncConnection[Any], username: str, token_hash: str
                               ) -> tuple[UserRow | None, bool]:
    """The user, and whether this token (by its SHA-256) was signed out."""
    cur = await conn.execute(
        "SELECT u.username, u.role, u.teams, u.residents, u.password_hash,"
        " EXISTS (SELECT 1 FROM trygg.revoked_tokens t WHERE t.token_hash = %s)"
        " FROM trygg.users u WHERE u.username = %s",
        (token_hash, username),
    )
    row = await cur.fetchone()
    if row is None:
        return None, False
    return _row(row[:5]), bool(row[5])


async def fetch_users_and_revoked(conn: psycopg.AsyncConnection[Any], usernames: Sequence[str],
                                  token_hashes: Sequence[str]) -> tuple[dict[str, UserRow], set[str]]:
    """Many users and which of these tokens were signed out, in one round trip: what
    the open live streams are re-checked against (dashboard/stream_rights.py)."""
    cur = await conn.execute(
        "SELECT username, role, teams, residents, password_hash, false FROM trygg.users WHERE username = ANY(%s)"
        " UNION ALL SELECT token_hash, '', NULL, NULL, NULL, true FROM trygg.revoked_tokens"
        " WHERE token_hash = ANY(%s)", (list(usernames), list(token_hashes)))
    users: dict[str, UserRow] = {}
    revoked: set[str] = set()
    for row in await cur.fetchall():
        if row[5]:
            revoked.add(row[0])
        else:
            user = _row(row[:5])
            assert user is not None
            users[user.username] = user
    return users, revoked


async def fetch_revoked(conn: psycopg.AsyncConnection[Any], limit: int) -> list[tuple[str, float]]:
    """Signed-out tokens that have not expired yet: (SHA-256, expiry as Unix time),
    those expiring last first (kept in memory for when the database is down)."""
    cur = await conn.execute(
        "SELECT token_hash, extract(epoch FROM expires_at)::float8 FROM trygg.revoked_tokens"
        " WHERE expires_at > now() ORDER BY expires_at DESC LIMIT %s", (limit,))
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def revoke_token(conn: psycopg.AsyncConnection[Any], token_hash: str, expires_at: datetime) -> None:
    """Sign a token out for good; forget the ones that have expired anyway."""
    await conn.execute("DELETE FROM trygg.revoked_tokens WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO trygg.revoked_tokens (token_hash, expires_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (token_hash, expires_at),
    )


@dataclass(frozen=True, slots=True)
class UserListed:
    """A user as the admin page lists it: no password hash, only whether one is set."""

    username: str
    role: str
    teams: tuple[str, ...]
    residents: tuple[str, ...]
    has_password: bool
    created_at: datetime
    updated_at: datetime


async def list_users(conn: psycopg.AsyncConnection[Any]) -> list[UserListed]:
    cur = await conn.execute(
        "SELECT username, role, teams, residents, password_hash IS NOT NULL, created_at, updated_at"
        " FROM trygg.users ORDER BY username")
    return [UserListed(r[0], r[1], tuple(r[2] or ()), tuple(r[3] or ()), bool(r[4]), r[5], r[6])
            for r in await cur.fetchall()]


def get_user(conn: psycopg.Connection[Any], username: str) -> UserRow | None:
    return _row(conn.execute(_SELECT, (username,)).fetchone())


def upsert_user(conn: psycopg.Connection[Any], username: str, role: str, teams: Sequence[str],
                residents: Sequence[str], password_hash: str | None) -> bool:
    """Create or update a user; `password_hash` None keeps the stored one. True if created."""
    row = conn.execute(
        "INSERT INTO trygg.users (username, role, teams, residents, password_hash)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (username) DO UPDATE SET role = excluded.role, teams = excluded.teams,"
        " residents = excluded.residents,"
        " password_hash = coalesce(excluded.password_hash, trygg.users.password_hash),"
        " updated_at = now()"
        " RETURNING (xmax = 0)",
        (username, role, list(teams), list(residents), password_hash),
    ).fetchone()
    return bool(row and row[0])


def registry_ids(conn: psycopg.Connection[Any]) -> tuple[set[str], set[str]]:
    """The team ids and resident ids of the registry now loaded."""
    teams = {r[0] for r in conn.execute("SELECT id FROM trygg.teams")}
    residents = {r[0] for r in conn.execute("SELECT id FROM trygg.residents")}
    return teams, residents


__all__ = ["UserListed", "UserRow", "fetch_revoked", "fetch_user", "fetch_user_for_token",
           "fetch_users_and_revoked", "get_user", "list_users", "registry_ids",
           "revoke_token", "upsert_user"]
