"""The API's own documentation: `/docs` (Swagger UI), `/redoc` and `/openapi.json`.

FastAPI's built-in pages had no Content-Security-Policy and loaded whatever version of
Swagger UI a CDN served under `@5`, with an inline script, on Trygg's own origin — where
a script can do anything a signed-in admin can. Here:

- the viewers are served from the package (dashboard/static/vendor/swagger-ui/ and
  redoc/, copied from npm by scripts/vendor, the versions in their VERSION files), so
  the pages work without internet and the policy names no other origin;
- the start-up script is our own static file (dashboard/static/js/docs.js), so the
  policy allows no inline script at all; the page gets the same security headers as
  every other page (dashboard/pages.py `security_headers`);
- with `TRYGG_DOCS_REQUIRE_LOGIN=true` all three need a signed-in user (session cookie
  or bearer token, any role): the pages send others to `/login`, `/openapi.json`
  answers 401.

"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from dashboard.deps import SESSION_COOKIE, AppState, State, credential_of, get_pool
from dashboard.pages import security_headers

router = APIRouter(include_in_schema=False)

VENDOR: Final = "/static/vendor"
SWAGGER_JS: Final = f"{VENDOR}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_CSS: Final = f"{VENDOR}/swagger-ui/swagger-ui.css"
REDOC_JS: Final = f"{VENDOR}/redoc/redoc.standalone.js"

#: No inline script and no other origin; styles inline (both viewers set them from
#: script); Redoc searches in a worker it starts from a blob.
DOCS_CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                   "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; worker-src 'self' blob:; "
                   "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

_HEAD: Final = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Trygg API</title>"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                "<link rel=\"icon\" href=\"/favicon.ico\">")

SWAGGER_PAGE: Final = (
    f"{_HEAD}<link rel=\"stylesheet\" href=\"{SWAGGER_CSS}\">"
    f"<script src=\"{SWAGGER_JS}\" defer></script>"
    "<script src=\"/static/js/docs.js\" defer></script></head>"
    "<body><div id=\"swagger-ui\"></div></body></html>")

REDOC_PAGE: Final = (
    f"{_HEAD}</head>"
    "<body><redoc spec-url=\"/openapi.json\"></redoc>"
    f"<script src=\"{REDOC_JS}\" defer></script></body></html>")


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
