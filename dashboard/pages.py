"""The web pages: the staff console (`/`), the relatives' view (`/relatives`), the
research page (`/research`) and sign-in (`/login`).

Each page is a static HTML shell from dashboard/static/ with no resident data in it:
the page's script reads everything from the API with the session cookie, so every read
is authorized and audited by the API routes alone. A page asked for without a valid
session redirects to `/login`; a page of another role redirects to the caller's own
(`/` for staff, operators and admins, `/relatives`, `/research`).

The one setting a page needs, the map tile URL (`TRYGG_MAP_TILES_URL`), is put in a
`<meta name="trygg-map-tiles">` tag, and the Content-Security-Policy allows images from
that host only.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dashboard.authz import Principal
from dashboard.deps import SESSION_COOKIE, AppState, State, get_pool, principal_of
from dashboard.routes_auth import HOME
from trygg.contract import Role

router = APIRouter(include_in_schema=False)

STATIC_DIR: Final = Path(__file__).parent / "static"

#: Which roles each page is for.
CARE: Final = frozenset({Role.STAFF, Role.OPERATOR, Role.ADMIN})

PAGE_ROLES: Final[dict[str, frozenset[Role]]] = {
    "/": CARE,
    "/shift": CARE,
    "/devices": CARE,
    "/residents": CARE,
    "/admin": frozenset({Role.ADMIN}),
    "/relatives": frozenset({Role.RELATIVE}),
    "/research": frozenset({Role.RESEARCHER}),
}

_TILES_MARK: Final = "{{map_tiles_url}}"


@functools.cache
def _shell(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def tile_source(url: str) -> str | None:
    """The CSP source of a tile URL template (`{s}` subdomains become `*`), or None for a
    URL on our own origin (relative) or one that cannot be used."""
    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = parts.netloc.replace("{s}", "*")
    if any(c in host for c in "{} ;'\""):
        return None
    return f"{parts.scheme}://{host}"


def security_headers(csp: str) -> dict[str, str]:
    """The headers of every HTML page Trygg serves (also /docs and /redoc)."""
    return {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


def _headers(tiles_url: str) -> dict[str, str]:
    img = "'self' data:"
    source = tile_source(tiles_url)
    if source:
        img += f" {source}"
    return security_headers(
        f"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src {img}; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")


def _page(name: str, state: AppState) -> HTMLResponse:
    tiles = state.settings.map_tiles_url
    body = _shell(name).replace(_TILES_MARK, html.escape(tiles, quote=True))
    return HTMLResponse(body, headers=_headers(tiles))


async def _caller(request: Request, state: AppState) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await principal_of(state, get_pool(state), token, "session")


def _to_login() -> Response:
    return RedirectResponse("/login", status_code=303, headers={"Cache-Control": "no-store"})


async def _serve(path: str, name: str, request: Request, state: AppState) -> Response:
    who = await _caller(request, state)
    if who is None:
        return _to_login()
    if who.role not in PAGE_ROLES[path]:
        return RedirectResponse(HOME.get(who.role.value, "/"), status_code=303,
                                headers={"Cache-Control": "no-store"})
    return _page(name, state)


@router.get("/", response_class=HTMLResponse)
async def console(request: Request, state: State) -> Response:
    """The staff console: live alerts, acknowledge and resolve, resident panel, map."""
    return await _serve("/", "console.html", request, state)


@router.get("/relatives", response_class=HTMLResponse)
async def relatives(request: Request, state: State) -> Response:
    """A relative's calm view of their own person."""
    return await _serve("/relatives", "relatives.html", request, state)


@router.get("/research", response_class=HTMLResponse)
async def research(request: Request, state: State) -> Response:
    """Counts per bucket and type, response times, exports."""
    return await _serve("/research", "research.html", request, state)


@router.get("/shift", response_class=HTMLResponse)
async def shift(request: Request, state: State) -> Response:
    """The shift: what happened in the last 8/12/24 hours per team, and its CSV."""
    return await _serve("/shift", "shift.html", request, state)


@router.get("/devices", response_class=HTMLResponse)
async def devices(request: Request, state: State) -> Response:
    """A team's devices that need a visit: offline, low battery, never heard."""
    return await _serve("/devices", "devices.html", request, state)


@router.get("/residents/{resident_id}", response_class=HTMLResponse)
async def resident_card(request: Request, state: State) -> Response:
    """One resident's card on a page of its own (the console shows the same card in its
    panel); the page's script asks the API, which decides who may see it (404)."""
    return await _serve("/residents", "resident.html", request, state)


@router.get("/admin", response_class=HTMLResponse)
async def admin(request: Request, state: State) -> Response:
    """Residents, devices, users, consents and the audit log, for administrators."""
    return await _serve("/admin", "admin.html", request, state)


@router.get("/password", response_class=HTMLResponse)
async def password_page(state: State) -> Response:
    """Setting one's password through a one-time link (the token is in the URL's
    fragment, never sent to the server with the page request)."""
    return _page("password.html", state)


#: Files a browser asks for at the site's root: the web app manifest, the service
#: worker (its scope is the path it is served from, so it must be `/sw.js`), the icon.
ROOT_FILES: Final[dict[str, str]] = {
    "/manifest.webmanifest": "application/manifest+json",
    "/sw.js": "text/javascript",
    "/favicon.ico": "image/x-icon",
}


def _root_file(path: str) -> Response:
    file = STATIC_DIR / path.lstrip("/")
    if not file.is_file():
        return Response(status_code=404)
    return Response(file.read_bytes(), media_type=ROOT_FILES[path],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@router.get("/manifest.webmanifest")
async def manifest() -> Response:
    return _root_file("/manifest.webmanifest")


@router.get("/sw.js")
async def service_worker() -> Response:
    return _root_file("/sw.js")


@router.get("/favicon.ico")
async def favicon() -> Response:
    return _root_file("/favicon.ico")


@router.get("/login", response_class=HTMLResponse)
async def login_page(state: State) -> Response:
    """The sign-in form; it posts to `POST /login` (dashboard/routes_auth.py)."""
    return _page("login.html", state)


__all__ = ["PAGE_ROLES", "router", "security_headers", "tile_source"]
