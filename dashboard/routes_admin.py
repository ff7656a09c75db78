"""The admin page's API (`/api/admin`, administrators only; docs/admin.md).

Residents and their devices, users and their teams or residents: every edit is a change
to the registry document, validated exactly like `PUT /api/registry` and saved the same
way, in a child process (dashboard/admin_edits.py), so the running stages pick it up
within a few seconds. Each answer carries the registry's `version`; each edit sends the
version it was made on, and a stale one is refused with 409. Invalid input is 422 with
the paths of the fields (`loc`) under the edited object. Every change is written to
the change log (`GET /api/admin/changes`) with who and when.

Passwords are never shown and never set here: `POST /api/admin/users/{username}/password-link`
makes a one-time link with which the user sets their own (dashboard/routes_auth.py).
"""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from psycopg import errors as pg_errors
from pydantic import BaseModel, Field

from dashboard import audit
from dashboard.admin_edits import Applied, Edit, EditError, run_edit, stale, version_of
from dashboard.authz import Action, Principal, require
from dashboard.deps import ID_PATTERN, Audit, CurrentUser, Pool, State, UtcTime, bad_parameter, get_pool
from dashboard.errors import Conflict, NotFound, Unavailable, responses
from dashboard.registry_upload import UPLOAD_TIMEOUT_S
from dashboard.routes_auth import password_link_url
from storage.admin_store import (
    changes,
    create_password_link_async,
    open_links,
    registry_resident,
    registry_usernames,
    registry_version,
    resident_page,
)
from storage.users_store import list_users
from trygg.isolated import JobFailed, JobTimeout, run_isolated
from trygg.registry_limits import MIB, DocumentLimits


async def _administrators_only(who: CurrentUser) -> None:
    """Every route here: 403 for any role but admin, before its input is read."""
    require(who, Action.ADMIN)


router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(_administrators_only)])

USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
ResidentId = Annotated[str, Path(pattern=ID_PATTERN)]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN)]
Username = Annotated[str, Path(pattern=USERNAME_PATTERN)]

_one_at_a_time = threading.Lock()


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class EditErrorsOut(BaseModel):
    """422: each `loc` is `["body", <object>, <field>, ...]`, the field of the form."""

    detail: list[FieldError]


EDIT_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "The registry changed since `version` was read: read it again and redo the edit"},
    422: {"model": EditErrorsOut, "description": "The edit does not validate; nothing was changed"},
    **responses(401, 403, 503),
}


class Versioned(BaseModel):
    version: str = Field(max_length=64, description="the registry's version this edit was made on")


class ResidentIn(Versioned):
    resident: dict[str, Any] = Field(description="the resident's registry fields (docs/contract.md#3-registry-file)"
                                     "; `id` only when adding, `devices` are ignored")


class DeviceFields(BaseModel):
    id: str | None = Field(default=None, max_length=200)
    kind: str = Field(max_length=64)
    heartbeat_s: float | None = None


class DeviceIn(Versioned):
    device: DeviceFields


class MoveIn(Versioned):
    resident_id: str = Field(max_length=200, description="the resident the device now belongs to")


class UserFields(BaseModel):
    username: str | None = Field(default=None, max_length=200)
    role: str = Field(max_length=64)
    teams: list[Annotated[str, Field(max_length=200)]] = Field(default=[], max_length=1000)
    residents: list[Annotated[str, Field(max_length=200)]] = Field(default=[], max_length=1000)


class UserIn(Versioned):
    user: UserFields


class EditOut(BaseModel):
    version: str
    result: dict[str, Any] | None = None


class ResidentRowOut(BaseModel):
    id: str
    name: str
    team: str
    team_name: str
    devices: int


class ResidentPageOut(BaseModel):
    version: str
    total: int
    residents: list[ResidentRowOut]


class ResidentOut(BaseModel):
    version: str
    resident: dict[str, Any]


class UserOut(BaseModel):
    username: str
    role: str
    teams: list[str]
    residents: list[str]
    has_password: bool
    in_registry: bool
    link_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UsersOut(BaseModel):
    version: str
    users: list[UserOut]


class LinkOut(BaseModel):
    url: str
    expires_at: datetime


class ChangeOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_kind: str
    target_id: str
    summary: dict[str, Any]


# --- running an edit ------------------------------------------------------------------


def _run(conninfo: str, actor: str, version: str, edit: Edit, limits: DocumentLimits) -> Applied:
    with _one_at_a_time:
        return run_isolated(run_edit, conninfo, actor, version, edit, limits, timeout_s=UPLOAD_TIMEOUT_S,
                            name="admin edit")


async def _edit(request: Request, who: Principal, state: State, audit_log: Audit, version: str, edit: Edit,
                section: str, residents: list[str | None]) -> EditOut:
    """Run `edit`; its errors as 404, 409, 422 (fields under `section`) or 503. A stale
    version is refused here at once; the child checks it again under the lock."""
    async with get_pool(state).connection() as conn:
        current = version_of(await registry_version(conn))
    if version != current:
        raise Conflict(stale(current).message)
    limits = DocumentLimits(max_bytes=state.settings.registry_max_mb * MIB)
    try:
        applied = await asyncio.to_thread(_run, state.conninfo, who.username, version, edit, limits)
    except EditError as exc:
        if exc.status == 422:  # answered like any invalid request (dashboard/app.py)
            raise RequestValidationError([{"loc": ["body", section, *loc], "msg": msg, "type": "registry"}
                                          for loc, msg in exc.errors]) from None
        if exc.status == 404:
            raise NotFound() from None
        if exc.status == 409:
            raise Conflict(exc.message) from None
        raise Unavailable(exc.message) from None
    except (JobTimeout, JobFailed) as exc:
        raise Unavailable(f"the change could not be saved ({exc}); nothing was changed") from None
    await audit_log.record(who, residents, audit.action_of(request))
    return EditOut(version=applied.version, result=applied.result)


def _id(value: Any, name: str, pattern: str = ID_PATTERN) -> str:
    """An id from a form's body, or 422 naming its field."""
    if not isinstance(value, str) or not re.match(pattern, value):
        raise bad_parameter(name, "must be 1-64 of letters, digits, _ . -" + (" @" if "@" in pattern else ""),
                            where="body")
    return value


# --- residents and devices --------------------------------------------------------------


@router.get("/residents", response_model=ResidentPageOut, responses=responses(401, 403, 503),
            summary="Residents of the registry, by name: search by name or id, filter by team, paged")
async def residents(
    request: Request, who: CurrentUser, pool: Pool, audit_log: Audit,
    q: Annotated[str | None, Query(max_length=100, description="part of the name or id")] = None,
    team: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ResidentPageOut:
    if q is not None and "\x00" in q:
        raise bad_parameter("q", "must not contain NUL")
    async with pool.connection() as conn:
        version, total, rows = await resident_page(conn, q, team, limit, offset)
    await audit_log.record(who, [r["id"] for r in rows], audit.action_of(request))
    return ResidentPageOut(version=version_of(version), total=total,
                           residents=[ResidentRowOut.model_validate(r) for r in rows])


@router.get("/residents/{resident_id}", response_model=ResidentOut, responses=responses(401, 403, 404, 503),
            summary="One resident as the registry holds it: every field, with devices")
async def resident(request: Request, resident_id: ResidentId, who: CurrentUser, pool: Pool,
                   audit_log: Audit) -> ResidentOut:
    async with pool.connection() as conn:
        version, found = await registry_resident(conn, resident_id)
    if found is None:
        raise NotFound()
    await audit_log.record(who, [resident_id], audit.action_of(request))
    return ResidentOut(version=version_of(version), resident=found)


@router.post("/residents", status_code=201, response_model=EditOut, responses=EDIT_ERRORS,
             summary="Add a resident (without devices: add those after)")
async def add_resident(request: Request, body: ResidentIn, who: CurrentUser, state: State,
                       audit_log: Audit) -> EditOut:
    resident_id = _id(body.resident.get("id"), "resident.id")
    edit = Edit("resident.create", resident_id, body.resident)
    return await _edit(request, who, state, audit_log, body.version, edit, "resident", [resident_id])


@router.put("/residents/{resident_id}", response_model=EditOut, responses={**EDIT_ERRORS, **responses(404)},
            summary="Change a resident's registry fields (card, consents, location basis, night, settings, zones)")
async def change_resident(request: Request, resident_id: ResidentId, body: ResidentIn, who: CurrentUser,
                          state: State, audit_log: Audit) -> EditOut:
    edit = Edit("resident.update", resident_id, body.resident)
    return await _edit(request, who, state, audit_log, body.version, edit, "resident", [resident_id])


@router.post("/residents/{resident_id}/retire", response_model=EditOut,
             responses={**EDIT_ERRORS, **responses(404)},
             summary="Retire a resident: removed from the registry with its devices; history, alerts and "
                     "audit rows are kept")
async def retire_resident(request: Request, resident_id: ResidentId, body: Versioned, who: CurrentUser,
                          state: State, audit_log: Audit) -> EditOut:
    edit = Edit("resident.retire", resident_id)
    return await _edit(request, who, state, audit_log, body.version, edit, "resident", [resident_id])


@router.post("/residents/{resident_id}/devices", status_code=201, response_model=EditOut,
             responses={**EDIT_ERRORS, **responses(404)}, summary="Add a device to a resident")
async def add_device(request: Request, resident_id: ResidentId, body: DeviceIn, who: CurrentUser,
                     state: State, audit_log: Audit) -> EditOut:
    device_id = _id(body.device.id, "device.id")
    fields = body.device.model_dump(exclude={"id"}, exclude_none=True)
    edit = Edit("device.add", device_id, {**fields, "resident_id": resident_id})
    return await _edit(request, who, state, audit_log, body.version, edit, "device", [resident_id])


@router.put("/devices/{device_id}", response_model=EditOut, responses={**EDIT_ERRORS, **responses(404)},
            summary="Change a device's kind or heartbeat interval")
async def change_device(request: Request, device_id: DeviceId, body: DeviceIn, who: CurrentUser, state: State,
                        audit_log: Audit) -> EditOut:
    edit = Edit("device.update", device_id, body.device.model_dump(exclude={"id"}, exclude_none=True))
    return await _edit(request, who, state, audit_log, body.version, edit, "device", [None])


@router.post("/devices/{device_id}/move", response_model=EditOut, responses={**EDIT_ERRORS, **responses(404)},
             summary="Move a device to another resident")
async def move_device(request: Request, device_id: DeviceId, body: MoveIn, who: CurrentUser, state: State,
                      audit_log: Audit) -> EditOut:
    edit = Edit("device.move", device_id, {"resident_id": body.resident_id})
    return await _edit(request, who, state, audit_log, body.version, edit, "device", [body.resident_id[:64]])


@router.post("/devices/{device_id}/remove", response_model=EditOut, responses={**EDIT_ERRORS, **responses(404)},
             summary="Remove a device from the registry (its stored events are kept)")
async def remove_device(request: Request, device_id: DeviceId, body: Versioned, who: CurrentUser, state: State,
                        audit_log: Audit) -> EditOut:
    edit = Edit("device.remove", device_id)
    return await _edit(request, who, state, audit_log, body.version, edit, "device", [None])


# --- users --------------------------------------------------------------------------------


@router.get("/users", response_model=UsersOut, responses=responses(401, 403, 503),
            summary="Every user with role, teams and residents; never a password or its hash")
async def users(request: Request, who: CurrentUser, pool: Pool, audit_log: Audit) -> UsersOut:
    async with pool.connection() as conn:
        version = await registry_version(conn)
        rows = await list_users(conn)
        named = await registry_usernames(conn)
        links = await open_links(conn)
    await audit_log.record(who, [None], audit.action_of(request))
    return UsersOut(version=version_of(version), users=[
        UserOut(username=u.username, role=u.role, teams=list(u.teams), residents=list(u.residents),
                has_password=u.has_password, in_registry=u.username in named,
                link_expires_at=links.get(u.username), created_at=u.created_at, updated_at=u.updated_at)
        for u in rows])


@router.post("/users", status_code=201, response_model=EditOut, responses=EDIT_ERRORS,
             summary="Add a user (no password: send them a one-time link)")
async def add_user(request: Request, body: UserIn, who: CurrentUser, state: State, audit_log: Audit) -> EditOut:
    username = _id(body.user.username, "user.username", USERNAME_PATTERN)
    edit = Edit("user.create", username, body.user.model_dump(exclude={"username"}))
    return await _edit(request, who, state, audit_log, body.version, edit, "user", [None])


@router.put("/users/{username}", response_model=EditOut, responses={**EDIT_ERRORS, **responses(404)},
            summary="Change a user's role, teams or residents")
async def change_user(request: Request, username: Username, body: UserIn, who: CurrentUser, state: State,
                      audit_log: Audit) -> EditOut:
    if username == who.username and body.user.role != who.role.value:
        raise bad_parameter("user.role", "you cannot change your own role (ask another administrator)",
                            where="body")
    edit = Edit("user.update", username, body.user.model_dump(exclude={"username"}))
    return await _edit(request, who, state, audit_log, body.version, edit, "user", [None])


@router.post("/users/{username}/password-link", status_code=201, response_model=LinkOut,
             responses=responses(401, 403, 404, 503),
             summary="A one-time link for the user to set their own password (valid 24 h; replaces an "
                     "open one; shown once)")
async def password_link(request: Request, username: Username, who: CurrentUser, pool: Pool,
                        audit_log: Audit) -> LinkOut:
    try:
        async with pool.connection() as conn:
            token, expires_at = await create_password_link_async(conn, username, who.username)
    except pg_errors.ForeignKeyViolation:
        raise NotFound() from None
    await audit_log.record(who, [None], audit.action_of(request))
    return LinkOut(url=password_link_url(str(request.base_url), token), expires_at=expires_at)


# --- the change log -------------------------------------------------------------------------


@router.get("/changes", response_model=list[ChangeOut], responses=responses(401, 403, 503),
            summary="What administrators changed, newest first; page on with `before` = the last id")
async def change_log(
    request: Request, who: CurrentUser, pool: Pool, audit_log: Audit,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    target_kind: Annotated[str | None, Query(pattern="^(resident|device|user)$")] = None,
    target_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")] = None,
    action: Annotated[str | None, Query(pattern=r"^[a-z_.]{1,64}$")] = None,
    since: Annotated[UtcTime | None, Query()] = None,
    until: Annotated[UtcTime | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ChangeOut]:
    if since is not None and until is not None and since >= until:
        raise bad_parameter("until", "must be later than since")
    if actor is not None and "\x00" in actor:
        raise bad_parameter("actor", "must not contain NUL")
    async with pool.connection() as conn:
        rows = await changes(conn, actor=actor, target_kind=target_kind, target_id=target_id, action=action,
                             since=since, until=until, before=before, limit=limit)
    await audit_log.record(who, [None], audit.action_of(request))
    return [ChangeOut.model_validate(r) for r in rows]


__all__ = ["router"]
