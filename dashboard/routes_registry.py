"""The registry for administrators: read it, replace it (YAML or JSON), with the same
validation as `trygg registry load`."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import psycopg
import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from dashboard import audit
from dashboard.authz import Action, require
from dashboard.deps import Audit, CurrentUser, Pool, State
from dashboard.errors import ApiError, responses
from dashboard.research import sync_pseudonyms
from storage.registry_store import save_registry
from trygg.registry import Registry, RegistryError, dump_registry, parse_registry

router = APIRouter(prefix="/api/registry", tags=["registry"])

#: The largest registry document accepted (100,000 residents with 5 devices fit).
MAX_DOCUMENT: Final = 64 * 1024 * 1024
YAML_TYPES: Final = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
ACCEPTED_TYPES: Final = ("application/json", "text/plain", *YAML_TYPES)


class TooLarge(ApiError):
    status = 413


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
    "description": "The registry document of DESIGN.md §3 (teams, residents, users), as JSON or YAML",
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


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_DOCUMENT:
        raise TooLarge(f"the document is larger than {MAX_DOCUMENT // (1024 * 1024)} MiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DOCUMENT:
            raise TooLarge(f"the document is larger than {MAX_DOCUMENT // (1024 * 1024)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _save(conninfo: str, reg: Registry, actor: str) -> None:
    with psycopg.connect(conninfo) as conn:
        save_registry(conn, reg, actor=actor)


@router.put("", response_model=LoadedOut, responses={
    422: {"model": RegistryErrorsOut, "description": "The document does not validate; nothing was changed"},
    413: {"description": "The document is too large"}, 415: {"description": "Not JSON or YAML"},
    **responses(401, 403)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": _DOCUMENT_SCHEMA},
        "application/yaml": {"schema": {"type": "string"}}}}},
    summary="Replace the registry as a whole, in one transaction, after the whole document validated")
async def put_registry(request: Request, who: CurrentUser, pool: Pool, audit_log: Audit, state: State) -> Any:
    require(who, Action.REGISTRY)
    media = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    if media and media not in ACCEPTED_TYPES:
        raise UnsupportedType("send the registry as application/json or application/yaml")
    body = await _read_body(request)
    try:
        reg = await asyncio.to_thread(parse_registry, body)
    except RegistryError as exc:
        out = RegistryErrorsOut(
            detail=[RegistryErrorItem(loc=["body", line.split(": ", 1)[0]], msg=line.split(": ", 1)[-1],
                                      type="registry") for line in exc.errors],
            errors=list(exc.errors))
        return JSONResponse(out.model_dump(), status_code=422)
    try:
        await asyncio.to_thread(_save, state.conninfo, reg, who.username)
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        line = f"(document): PostgreSQL refused it ({str(exc).strip().splitlines()[0]})"
        out = RegistryErrorsOut(detail=[RegistryErrorItem(loc=["body"], msg=line, type="registry")],
                                errors=[line])
        return JSONResponse(out.model_dump(), status_code=422)
    await audit_log.record(who, [None], audit.action_of(request))
    async with pool.connection() as conn:
        await sync_pseudonyms(conn, state.pseudonym_key)
    return LoadedOut(teams=len(reg.teams), residents=len(reg.residents),
                     devices=sum(len(r.devices) for r in reg.residents), users=len(reg.users))


__all__ = ["router"]
