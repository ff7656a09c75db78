"""`/metrics` answers only scrapers whose TCP peer address is allowed
(`TRYGG_METRICS_ALLOW`, default loopback) and, for a request a proxy forwarded, only
when the proxy itself is allowed as one (`TRYGG_METRICS_PROXIES`, default none).
Headers never grant access (docs/security.md "Research and metrics")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import fix_api
from tests.fix_api import make_world
from trygg.settings import Settings

pytestmark = pytest.mark.integration

FORWARDING = [{"X-Real-IP": "127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"},
              {"X-Real-IP": "10.1.2.3"}, {"X-Forwarded-For": "10.1.2.3"}]


def with_settings(monkeypatch: pytest.MonkeyPatch, **changes: str) -> None:
    """make_world builds its app with these settings changed."""
    base: Callable[[Path | None], Settings] = fix_api.settings
    monkeypatch.setattr(fix_api, "settings",
                        lambda data_dir=None: base(data_dir).model_copy(update=changes))


def test_loopback_scraper_is_answered_and_a_loopback_proxy_is_not(database: str) -> None:
    """Default settings: a scraper on this machine gets the metrics; a proxy on this
    machine that forwards someone else's request (any forwarding header, X-Real-IP
    alone too) does not."""
    with make_world(database) as w:
        assert w.client.get("/metrics").status_code == 200
        for headers in FORWARDING:
            assert w.client.get("/metrics", headers=headers).status_code == 404, headers


def test_headers_naming_an_allowed_address_do_not_help_a_peer_that_is_not(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only 10.0.0.0/8 may scrape; the test connects from 127.0.0.1 and claims 10.1.2.3."""
    with_settings(monkeypatch, metrics_allow="10.0.0.0/8")
    with make_world(database) as w:
        assert w.client.get("/metrics").status_code == 404
        for headers in FORWARDING:
            assert w.client.get("/metrics", headers=headers).status_code == 404, headers


def test_a_proxy_allowed_as_one_may_forward_scrapes(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with_settings(monkeypatch, metrics_proxies="127.0.0.1")
    with make_world(database) as w:
        assert w.client.get("/metrics", headers={"X-Real-IP": "10.1.2.3"}).status_code == 200
        assert w.client.get("/metrics").status_code == 200
