"""The registry for administrators: read it, replace it (YAML or JSON), with the same
validation and limits as `trygg registry load`.

A PUT reads the body up to `TRYGG_REGISTRY_MAX_MB`, then hands it to a child process
that checks its nesting and aliases, parses, validates and saves it
(dashboard/registry_upload.py): nothing of that runs on the event loop or holds this
process's GIL, which the alarm path shares in `trygg up`. A document beyond a limit is
413 or 422 with the limit named; one upload at a time (409 meanwhile)."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from dashboard import audit
from dashboard.authz import Action, require
from dashboard.deps import Audit, CurrentUser, Pool, State
from dashboard.errors import ApiError, Unavailable, responses
from dashboard.registry_upload import DatabaseUnreachable, UploadBusy, replace_registry
from dashboard.research import sync_pseudonyms
from trygg.isolated import JobFailed, JobTimeout
from trygg.registry import Registry, RegistryError, RegistryLimitError, dump_registry
from trygg.registry_limits import MIB, DocumentLimits, LimitExceeded, check_size

router = APIRouter(prefix="/api/registry", tags=["registry"])

YAML_TYPES: Final = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
ACCEPTED_TYPES: Final = ("application/json", "text/plain", *YAML_TYPES)


class Busy(ApiError):
    status = 409


class UnsupportedType(ApiError):
    status = 415


class LoadedOut(BaseModel):
    teams: int
    residents: int
    devices: int
    users: int


class RegistryErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class RegistryErrorsOut(BaseModel):
    """422: `errors` lists `path: message` lines as `trygg registry load` prints them."""

    detail: list[RegistryErrorItem]
    errors: list[str]


_DOCUMENT_SCHEMA: Final = {
    "type": "object",
    "description": "The registry document of docs/contract.md §3 (teams, residents, users), as JSON or YAML",
    "additionalProperties": True,
}


@router.get("", responses={
    200: {"description": "The registry document as last loaded (JSON, or YAML with Accept: application/yaml)",
          "content": {"application/json": {"schema": _DOCUMENT_SCHEMA},
                      "application/yaml": {"schema": {"type": "string"}}}},
    **responses(401, 403)}, summary="The registry document")
async def get_registry(request: Request, who: CurrentUser, pool: Pool, audit_log: Audit) -> Response:
    require(who, Action.REGISTRY)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT document FROM trygg.registry WHERE id = 1")
        row = await cur.fetchone()
        document: dict[str, Any] = row[0] if row else dump_registry(Registry())
    ids = [r.get("id") for r in document.get("residents", []) if isinstance(r, dict)]
    await audit_log.record(who, [i for i in ids if isinstance(i, str)], audit.action_of(request))
    if any(t in request.headers.get("accept", "") for t in YAML_TYPES):
        text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
        return Response(text, media_type="application/yaml", headers={"Cache-Control": "no-store"})
    return JSONResponse(document, headers={"Cache-Control": "no-store"})


async def _read_body(request: Request, limits: DocumentLimits) -> bytes:
    """The body, refused (RegistryLimitError, 413) as soon as it passes the size limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        _size_limit(int(declared), limits)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        _size_limit(size, limits)
        chunks.append(chunk)
    return b"".join(chunks)


def _size_limit(size: int, limits: DocumentLimits) -> None:
    try:
        check_size(size, limits)
    except LimitExceeded as exc:
        raise RegistryLimitError(exc.limit, exc.message, exc.status) from None


def _refused(exc: RegistryError) -> JSONResponse:
    """422 (or the limit's 413) with every error line, as `trygg registry load` prints them."""
    out = RegistryErrorsOut(
        detail=[RegistryErrorItem(loc=["body", line.split(": ", 1)[0]], msg=line.split(": ", 1)[-1],
                                  type="registry") for line in exc.errors],
        errors=list(exc.errors))
    status = exc.status if isinstance(exc, RegistryLimitError) else 422
    return JSONResponse(out.model_dump(), status_code=status)


@router.put("", response_model=LoadedOut, responses={
    422: {"model": RegistryErrorsOut, "description": "The document does not validate, or is nested too deep "
          "or uses too many YAML aliases; nothing was changed"},
    413: {"model": RegistryErrorsOut, "description": "The document is larger than TRYGG_REGISTRY_MAX_MB, "
          "or too large to load within the upload's time or memory limit; nothing was changed"},
    409: {"description": "Another registry upload is being processed"},
    415: {"description": "Not JSON or YAML"},
    **responses(401, 403, 503)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": _DOCUMENT_SCHEMA},
        "application/yaml": {"schema": {"type": "string"}}}}},
    summary="Replace the registry as a whole, in one transaction, after the whole document validated")
async def put_registry(request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, state: State) -> Any:
    require(who, Action.REGISTRY)
    media = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    if media and media not in ACCEPTED_TYPES:
        raise UnsupportedType("send the registry as application/json or application/yaml")
    limits = DocumentLimits(max_bytes=state.settings.registry_max_mb * MIB)
    try:
        body = await _read_body(request, limits)
        loaded = await asyncio.to_thread(replace_registry, body, state.conninfo, who.username, limits)
    except RegistryError as exc:
        return _refused(exc)
    except JobTimeout as exc:
        return _refused(RegistryLimitError("time", f"took longer than the limit of {exc.timeout_s:g} s "
                                                   "to load and save", 413))
    except JobFailed as exc:
        return _refused(RegistryLimitError("memory", f"could not be loaded: {exc}", 413))
    except UploadBusy as exc:
        raise Busy(str(exc)) from None
    except DatabaseUnreachable:
        raise Unavailable("the database is unavailable; the registry was not changed") from None
    await audit_log.record(who, [None], audit.action_of(request))
    async with pool.connection() as conn:
        await sync_pseudonyms(conn, state.pseudonym_key)
    return LoadedOut(teams=loaded.teams, residents=loaded.residents, devices=loaded.devices, users=loaded.users)


__all__ = ["router"]
