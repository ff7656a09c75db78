"""dashboard/pages.py without a browser: which hosts the pages' CSP allows images from."""

from __future__ import annotations

import pytest

from dashboard.pages import tile_source


@pytest.mark.parametrize(("url", "source"), [
    ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
    ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "https://*.tile.example.org"),
    ("http://127.0.0.1:8080/tiles/{z}/{x}/{y}.png", "http://127.0.0.1:8080"),
    ("/tiles/{z}/{x}/{y}.png", None),  # our own origin: 'self' already allows it
    ("javascript:alert(1)", None),
    ("https://evil.example'; script-src *;/{z}.png", None),
    ("", None),
])
def test_the_tile_host_becomes_one_csp_source(url: str, source: str | None) -> None:
    assert tile_source(url) == source
