"""axe-core (tests/browser/vendor/axe-core) on the pages no other module owns: the
sign-in page on a desktop and on a phone. Each page's own module runs the same check
(`check_accessible`) on its page in the states it tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext

from tests.browser.support import System, check_accessible, shot, watch

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_login_page_has_no_serious_violations(system: System, new_context: Callable[..., BrowserContext],
                                              device: str) -> None:
    page = new_context(phone=device == "phone").new_page()
    seen = watch(page)
    page.goto(f"{system.base_url}/login")
    check_accessible(page, f"login-{device}")
    shot(page, f"login-{device}")
    seen.check()
