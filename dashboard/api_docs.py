"""The API's own documentation: `/docs` (Swagger UI), `/redoc` and `/openapi.json`.

FastAPI's built-in pages had no Content-Security-Policy and loaded whatever version of
Swagger UI a CDN served under `@5`, with an inline script, on Trygg's own origin — where
a script can do anything a signed-in admin can. Here:

- the viewers are pinned to one version on jsDelivr and loaded with Subresource
  Integrity (the SHA-384 of the file npm publishes, which jsDelivr serves unchanged):
  a changed file is refused by the browser, not run;
- the start-up script is our own static file (dashboard/static/js/docs.js), so the
  policy allows no inline script at all; the page gets the same security headers as
  every other page (dashboard/pages.py `security_headers`);
- with `TRYGG_DOCS_REQUIRE_LOGIN=true` all three need a signed-in user (session cookie
  or bearer token, any role): the pages send others to `/login`, `/openapi.json`
  answers 401.

No internet at the browser: the pages stay blank; `/openapi.json` still works.
"""

from __future__ import annotations

import html
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dashboard.deps import SESSION_COOKIE, AppState, State, credential_of, get_pool
from dashboard.pages import security_headers

router = APIRouter(include_in_schema=False)

CDN: Final = "https://cdn.jsdelivr.net"
SWAGGER_JS: Final = (f"{CDN}/npm/swagger-ui-dist@5.32.0/swagger-ui-bundle.js",
                     "sha384-7xcoc6ZKDFF7Ek627QTC3Bg/K+5Y36NJ8MWAE43D2m6+3Sh9XO3tdsfHhrS8gNIQ")
SWAGGER_CSS: Final = (f"{CDN}/npm/swagger-ui-dist@5.32.0/swagger-ui.css",
                      "sha384-3nuX7df3EaAoiqLBeyS1Ola0Gpg9ryJKVtarubwfnA1cOH8AWHUdbPSIvEqPZ9VH")
REDOC_JS: Final = (f"{CDN}/npm/redoc@2.5.1/bundles/redoc.standalone.js",
                   "sha384-up2uPEo+8XzxuLXKGY4DOk79DbbRclvlcx22QZ60aPWQf8LW69XJ8BWzLFewC05H")

#: No inline script; styles inline (both viewers set them from script); Redoc searches
#: in a worker it starts from a blob.
DOCS_CSP: Final = (f"default-src 'self'; script-src 'self' {CDN}; style-src 'self' 'unsafe-inline' {CDN}; "
                   "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; worker-src 'self' blob:; "
                   "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _asset(tag: str, url_and_hash: tuple[str, str]) -> str:
    url, digest = (html.escape(part, quote=True) for part in url_and_hash)
    if tag == "link":
        return f'<link rel="stylesheet" href="{url}" integrity="{digest}" crossorigin="anonymous">'
    return f'<script src="{url}" integrity="{digest}" crossorigin="anonymous" defer></script>'


SWAGGER_PAGE: Final = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Trygg API</title>"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    f"{_asset('link', SWAGGER_CSS)}{_asset('script', SWAGGER_JS)}"
    "<script src=\"/static/js/docs.js\" defer></script></head>"
    "<body><div id=\"swagger-ui\"></div></body></html>")

REDOC_PAGE: Final = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Trygg API</title>"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>"
    "<body><redoc spec-url=\"/openapi.json\"></redoc>"
    f"{_asset('script', REDOC_JS)}</body></html>")


async def _signed_in(request: Request, state: AppState) -> bool:
    """Whether the request carries a valid bearer token or session cookie."""
    pool = get_pool(state)
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and await credential_of(state, pool, auth[7:].strip(), "api"):
        return True
    cookie = request.cookies.get(SESSION_COOKIE)
    return bool(cookie and await credential_of(state, pool, cookie, "session"))


async def _page(body: str, request: Request, state: AppState) -> Response:
    if state.settings.docs_require_login and not await _signed_in(request, state):
        return RedirectResponse("/login", status_code=303, headers={"Cache-Control": "no-store"})
    return HTMLResponse(body, headers=security_headers(DOCS_CSP))


@router.get("/docs", response_class=HTMLResponse)
async def swagger(request: Request, state: State) -> Response:
    """Swagger UI: try the API with a bearer token ("Authorize")."""
    return await _page(SWAGGER_PAGE, request, state)


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request, state: State) -> Response:
    """The same schema as one long page."""
    return await _page(REDOC_PAGE, request, state)


@router.get("/openapi.json")
async def openapi(request: Request, state: State) -> Response:
    """The OpenAPI schema of the whole API."""
    if state.settings.docs_require_login and not await _signed_in(request, state):
        return JSONResponse({"detail": "sign in: a valid bearer token or session cookie is needed"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return JSONResponse(request.app.openapi(), headers={"X-Content-Type-Options": "nosniff"})


__all__ = ["DOCS_CSP", "router"]
