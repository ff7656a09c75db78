"""Browser tests: the real system driven by Debian's Chromium through Playwright
(tests/browser/support.py). Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, USERS, System, make_system, running_system
from tests.fix_db import create_database, drop_database
from tests.fix_mqtt import MosquittoInstance
from tests.helpers import worker_port


@pytest.fixture(scope="session")
def system(mosquitto: MosquittoInstance, pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[System]:
    """One `trygg up` shared by the tests that leave it running (dashboard on port 0)."""
    with running_system(mosquitto, pg_admin_url, tmp_path_factory.mktemp("trygg-browser")) as running:
        yield running


@pytest.fixture
def own_system(mosquitto: MosquittoInstance, pg_admin_url: str, tmp_path: Path) -> Iterator[System]:
    """A `trygg up` of this test alone, on a fixed port, so that it can be stopped and
    started again at the same address."""
    database = create_database(pg_admin_url)
    running = make_system(mosquitto, database, tmp_path)
    try:
        running.start_with_users([u for u in USERS if u[0] == "ola"], port=worker_port(28000))
        yield running
    finally:
        running.stop()
        drop_database(pg_admin_url, database)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module: Playwright's sync API keeps an event loop running on the main thread
    while it is open, which would break `asyncio.run` in every test after the browser's."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (never a downloaded browser)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


#: The desktop the tests use, and the staff's handheld (CSS pixels).
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Fresh browser profiles (no cookies) that reach only the loopback: map tiles from
    the internet fail at once, as on a machine without internet. `make(phone=True)` is
    a touch phone of 390×844."""
    made: list[BrowserContext] = []

    def make(*, phone: bool = False) -> BrowserContext:
        ctx = browser.new_context(viewport=PHONE if phone else DESKTOP, locale="nb-NO",
                                  timezone_id="Europe/Oslo", is_mobile=phone, has_touch=phone)
        ctx.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
        ctx.set_default_timeout(5000)
        made.append(ctx)
        return ctx

    try:
        yield make
    finally:
        for ctx in made:
            ctx.close()


@pytest.fixture
def context(new_context: Callable[..., BrowserContext]) -> BrowserContext:
    return new_context()


@pytest.fixture
def phone(new_context: Callable[..., BrowserContext]) -> BrowserContext:
    """A browser profile on a phone's screen (390×844, touch)."""
    return new_context(phone=True)
