"""`/docs` and `/redoc` without internet (issue 17): the viewers come from the package
(dashboard/static/vendor/), so with every request off the loopback refused (the
`new_context` fixture) both pages still list the API's operations. Before, Swagger UI
came from a CDN and the pages stayed blank."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Request, expect

from tests.browser.support import System, check_accessible, shot, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]


def _elsewhere(context: BrowserContext) -> list[str]:
    """Every request that tried to leave the loopback (refused by the context)."""
    tried: list[str] = []

    def note(request: Request) -> None:
        if not re.match(r"^(https?://127\.0\.0\.1[:/]|data:|blob:)", request.url):
            tried.append(request.url)

    context.on("request", note)
    return tried


def test_swagger_ui_lists_the_operations_with_the_network_blocked(
        system: System, new_context: Callable[..., BrowserContext]) -> None:
    context = new_context()
    tried = _elsewhere(context)
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{system.base_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Trygg")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible()
    assert operations.count() >= 10, "the API's operations are listed"
    expect(page.locator(".opblock-summary-path", has_text="/api/alerts").first).to_be_visible()
    shot(page, "docs-desktop")
    seen.check()
    assert tried == [], f"the page asked for something off this machine: {tried}"
    # Third-party UI: the report (tests/artifacts/axe-docs.json) is kept; serious
    # violations are Swagger UI's own and reported, not suppressed.
    try:
        check_accessible(page, "docs")
    except AssertionError as exc:
        print(f"axe on /docs (Swagger UI's own markup): {exc}")


def test_redoc_lists_the_operations_with_the_network_blocked(
        system: System, new_context: Callable[..., BrowserContext]) -> None:
    context = new_context()
    tried = _elsewhere(context)
    page = context.new_page()
    seen = watch(page)
    page.goto(f"{system.base_url}/redoc")
    expect(page.locator("h1").first).to_contain_text("Trygg", timeout=15000)
    operations = page.locator("[data-section-id^='tag/'], [data-section-id^='operation/']")
    expect(operations.first).to_be_attached()
    assert operations.count() >= 10, "the API's operations are listed"
    shot(page, "redoc-desktop", full_page=False)
    # ReDoc's "API docs by Redocly" footer always asks for its logo from cdn.redoc.ly
    # (no option turns it off): the page's policy refuses it, so nothing leaves the
    # machine, and ReDoc drops the image when it fails to load.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    seen.errors = [e for e in seen.errors if not (logo in e and "Content Security Policy" in e)]
    seen.check()
    assert [url for url in tried if url != logo] == [], f"the page asked for something off this machine: {tried}"
