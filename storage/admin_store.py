"""The admin page's tables (migration 0016, docs/admin.md): the change log
`trygg.admin_changes` and the one-time password links `trygg.password_links`.

The change log is written in the same transaction as the change it records (the
registry edit's child process, dashboard/admin_edits.py; a password link with the link).
A password link's token is random and shown once; only its SHA-256 is stored, a user
has at most one open link (a new one replaces it), and a link is deleted when it is used.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

#: How long a password link stays valid unless the caller says otherwise.
LINK_TTL: Final = timedelta(hours=24)

_CHANGE = ("INSERT INTO trygg.admin_changes (actor, action, target_kind, target_id, summary)"
           " VALUES (%s, %s, %s, %s, %s)")

_EXPIRED = "DELETE FROM trygg.password_links WHERE expires_at <= now()"
_LINK = ("INSERT INTO trygg.password_links (username, token_hash, created_by, expires_at)"
         " VALUES (%s, %s, %s, now() + %s)"
         " ON CONFLICT (username) DO UPDATE SET token_hash = excluded.token_hash,"
         " created_at = now(), created_by = excluded.created_by, expires_at = excluded.expires_at"
         " RETURNING expires_at")


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change log: `action` (e.g. `resident.create`) on `target_kind`
    `target_id`, with a `summary` that holds no secrets (docs/admin.md)."""

    action: str
    target_kind: str
    target_id: str
    summary: dict[str, Any]


def record_change(conn: psycopg.Connection[Any], actor: str, change: Change) -> None:
    conn.execute(_CHANGE, (actor, change.action, change.target_kind, change.target_id, Jsonb(change.summary)))


async def record_change_async(conn: psycopg.AsyncConnection[Any], actor: str, change: Change) -> None:
    await conn.execute(_CHANGE, (actor, change.action, change.target_kind, change.target_id,
                                 Jsonb(change.summary)))


async def changes(conn: psycopg.AsyncConnection[Any], *, actor: str | None, target_kind: str | None,
                  target_id: str | None, action: str | None, since: datetime | None, until: datetime | None,
                  before: int | None, limit: int) -> list[dict[str, Any]]:
    """Change log rows, newest first; `before`: only rows with a smaller id (paging)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, at, actor, action, target_kind, target_id, summary FROM trygg.admin_changes"
            " WHERE (%(actor)s::text IS NULL OR actor = %(actor)s::text)"
            " AND (%(kind)s::text IS NULL OR target_kind = %(kind)s::text)"
            " AND (%(target)s::text IS NULL OR target_id = %(target)s::text)"
            " AND (%(action)s::text IS NULL OR action = %(action)s::text)"
            " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)"
            " AND (%(until)s::timestamptz IS NULL OR at < %(until)s::timestamptz)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"actor": actor, "kind": target_kind, "target": target_id, "action": action, "since": since,
             "until": until, "before": before, "limit": limit})
        return list(await cur.fetchall())


def link_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, link_token_hash(token)


def create_password_link(conn: psycopg.Connection[Any], username: str, created_by: str,
                         ttl: timedelta = LINK_TTL) -> tuple[str, datetime]:
    """A new link for `username` (replacing an open one), recorded in the change log:
    (the token, shown once; when it expires). The user must exist (ForeignKeyViolation)."""
    token, digest = _new_token()
    with conn.transaction():
        conn.execute(_EXPIRED)
        row = conn.execute(_LINK, (username, digest, created_by, ttl)).fetchone()
        assert row is not None
        record_change(conn, created_by, _link_change(username, row[0]))
    return token, row[0]


async def create_password_link_async(conn: psycopg.AsyncConnection[Any], username: str, created_by: str,
                                     ttl: timedelta = LINK_TTL) -> tuple[str, datetime]:
    """`create_password_link` for the dashboard."""
    token, digest = _new_token()
    async with conn.transaction():
        await conn.execute(_EXPIRED)
        cur = await conn.execute(_LINK, (username, digest, created_by, ttl))
        row = await cur.fetchone()
        assert row is not None
        await record_change_async(conn, created_by, _link_change(username, row[0]))
    return token, row[0]


def _link_change(username: str, expires_at: datetime) -> Change:
    return Change("user.password_link", "user", username, {"expires_at": expires_at.isoformat()})


async def open_link(conn: psycopg.AsyncConnection[Any], token: str) -> tuple[str, datetime] | None:
    """(username, expires_at) of an open, unexpired link, or None."""
    cur = await conn.execute("SELECT username, expires_at FROM trygg.password_links"
                             " WHERE token_hash = %s AND expires_at > now()", (link_token_hash(token),))
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1])


async def use_link(conn: psycopg.AsyncConnection[Any], token: str, password_hash: str) -> str | None:
    """Set the password of the link's user and delete the link, in one transaction; the
    username, or None when the link is unknown, used, replaced or expired. Expired links
    are deleted on the way (and whenever a link is made)."""
    async with conn.transaction():
        await conn.execute(_EXPIRED)
        cur = await conn.execute("DELETE FROM trygg.password_links WHERE token_hash = %s RETURNING username",
                                 (link_token_hash(token),))
        row = await cur.fetchone()
        if row is None:
            return None
        username = str(row[0])
        await conn.execute("UPDATE trygg.users SET password_hash = %s, updated_at = now() WHERE username = %s",
                           (password_hash, username))
        await record_change_async(conn, username, Change("user.password_set", "user", username, {}))
    return username


async def open_links(conn: psycopg.AsyncConnection[Any]) -> dict[str, datetime]:
    """Username → when its open link expires."""
    cur = await conn.execute("SELECT username, expires_at FROM trygg.password_links WHERE expires_at > now()")
    return {row[0]: row[1] for row in await cur.fetchall()}




# --- reads of the registry for the admin page ----------------------------------------


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def registry_version(conn: psycopg.AsyncConnection[Any]) -> datetime | None:
    """`loaded_at` of the registry (the admin page's version of it), None if none was loaded."""
    cur = await conn.execute("SELECT loaded_at FROM trygg.registry WHERE id = 1")
    row = await cur.fetchone()
    return None if row is None else row[0]


async def resident_page(conn: psycopg.AsyncConnection[Any], query: str | None, team: str | None, limit: int,
                        offset: int) -> tuple[datetime | None, int, list[dict[str, Any]]]:
    """(registry version, how many match, one page of them: id, name, team, team_name,
    devices) by name then id; `query` matches id or name, ignoring case."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT (SELECT loaded_at FROM trygg.registry WHERE id = 1) AS version, count(*) OVER () AS total,"
            " r.id, r.name, r.team_id AS team, t.name AS team_name,"
            " (SELECT count(*) FROM trygg.devices d WHERE d.resident_id = r.id) AS devices"
            " FROM trygg.residents r JOIN trygg.teams t ON t.id = r.team_id"
            " WHERE (%(q)s::text IS NULL OR r.id ILIKE %(q)s::text OR r.name ILIKE %(q)s::text)"
            " AND (%(team)s::text IS NULL OR r.team_id = %(team)s::text)"
            " ORDER BY r.name, r.id LIMIT %(limit)s OFFSET %(offset)s",
            {"q": None if not query else _like(query), "team": team, "limit": limit, "offset": offset})
        rows = list(await cur.fetchall())
    if not rows:
        return await registry_version(conn), 0, []
    version, total = rows[0]["version"], rows[0]["total"]
    return version, int(total), [{k: v for k, v in r.items() if k not in ("version", "total")} for r in rows]


async def registry_resident(conn: psycopg.AsyncConnection[Any], resident_id: str
                            ) -> tuple[datetime | None, dict[str, Any] | None]:
    """(registry version, the resident as the registry document holds it, or None)."""
    cur = await conn.execute(
        "SELECT loaded_at, (SELECT r FROM jsonb_array_elements(document->'residents') r"
        " WHERE r->>'id' = %s LIMIT 1) FROM trygg.registry WHERE id = 1", (resident_id,))
    row = await cur.fetchone()
    return (None, None) if row is None else (row[0], row[1])


async def registry_usernames(conn: psycopg.AsyncConnection[Any]) -> frozenset[str]:
    """The users the registry document names."""
    cur = await conn.execute("SELECT u->>'username' FROM trygg.registry,"
                             " jsonb_array_elements(coalesce(document->'users', '[]')) u WHERE id = 1")
    return frozenset(str(r[0]) for r in await cur.fetchall())


__all__ = ["LINK_TTL", "Change", "changes", "create_password_link", "create_password_link_async",
           "link_token_hash", "open_link", "open_links", "record_change", "record_change_async",
           "registry_resident", "registry_usernames", "registry_version", "resident_page", "use_link"]
